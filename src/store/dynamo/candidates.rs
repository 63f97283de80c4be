//! Candidate sandboxes for allocation, shared by all concurrent requests of this instance.
//!
//! Rule: one `StatusNameIndex` query at a time per name prefix fills a shuffled queue, and
//! each candidate is handed to one local request only, so this instance's requests never
//! race each other and a burst of hundreds costs one read per page, not one per request.
//! Each refill reads a window starting at a random name, and the page is shuffled, so the
//! instances of a fleet mostly draw different candidates instead of all taking the head.
//! A candidate is only a hint (the index is eventually consistent); the conditional claim
//! decides. The prefixes come from callers (`X-Sandbox-Name-Prefix`), so the pool keeps at
//! most `DDB_CANDIDATE_PREFIXES` queues: a new prefix beyond that evicts the queue used
//! least recently that no request is using, and when every queue is in use the request
//! gets a queue of its own for the moment. Invented prefixes so never grow memory, and
//! an evicted prefix only costs one refill the next time it is asked for.
//!
//! A queue that runs low is refilled ahead, in the background: a refill is three reads in
//! a row, and a class start that found the queue empty would wait for all three, every
//! page. Only a request that finds the queue empty waits for a refill. A read ahead takes
//! no turn of the admission queue (one at a time per prefix, like any refill).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use rand::seq::SliceRandom;

use super::DynamoStore;
use super::calls::{Budget, Calls};
use super::error::DynamoError;
use super::item::{AttributeValuesExt, SANDBOX_PREFIX, s};
use super::schema::STATUS_NAME_INDEX;
use crate::domain::SandboxStatus;
use crate::store::StoreError;

/// Candidates fetched per refill: one cheap keys-only page; small enough that the random
/// windows of a fleet's instances rarely overlap.
const PAGE_SIZE: i32 = 100;
/// Candidates fetched per refill of a reservation's queue.
const RESERVED_PAGE_SIZE: i32 = 1000;
/// A queue holding fewer candidates than this after a take is refilled in the background.
const REFILL_AHEAD_BELOW: usize = 50;
/// How long a handed-out candidate is kept out of refills: far longer than a claim takes,
/// and than the index needs to show it (GSIs are eventually consistent).
const HANDED_OUT_MEMORY: Duration = Duration::from_secs(30);
/// How long a request that finds every match handed out to other local requests waits for
/// one of them to come back (a claim refused at a token's cap gives its candidate back)
/// before it answers that none is available.
const HANDED_BACK_WAIT: Duration = Duration::from_secs(2);
/// The first pause of that wait; each next one doubles, up to a tenth of a second.
const HANDED_BACK_PAUSE: Duration = Duration::from_millis(5);

/// Per-prefix queues of candidate sandbox ids, at most `max_prefixes` of them.
pub(super) struct CandidatePool {
    queues: Mutex<HashMap<String, Arc<PrefixQueue>>>,
    max_prefixes: usize,
    /// Stamps each queue's last use, so the least recently used one can be told.
    uses: AtomicU64,
}

#[derive(Default)]
struct PrefixQueue {
    /// The pool's use counter when this queue was last asked for.
    last_used: AtomicU64,
    ids: Mutex<Vec<String>>,
    /// Candidates handed to a local request recently. Until its claim shows in the index
    /// they still look available, and a refill must not hand them out a second time.
    handed_out: Mutex<HashMap<String, Instant>>,
    /// Held while a refill query runs, so concurrent requests wait for it instead of repeating it.
    refill: Arc<tokio::sync::Mutex<()>>,
}

impl PrefixQueue {
    fn pop(&self) -> Option<String> {
        self.pop_counted().map(|(id, _)| id)
    }

    /// The next candidate and how many are left after it.
    fn pop_counted(&self) -> Option<(String, usize)> {
        let (id, left) = {
            let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
            let id = ids.pop()?;
            (id, ids.len())
        };
        self.handed_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), Instant::now());
        Some((id, left))
    }

    /// Adds fresh candidates (shuffled), leaving out those still being claimed by local
    /// requests and those already queued (a refill ahead may read some of them again).
    /// Returns how many were left out because a local request holds them.
    fn refill_with(&self, mut fetched: Vec<String>) -> usize {
        fetched.shuffle(&mut rand::rng());
        let mut handed_out = self
            .handed_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        handed_out.retain(|_, at| at.elapsed() < HANDED_OUT_MEMORY);
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        let queued: std::collections::HashSet<String> = ids.iter().cloned().collect();
        let (held, fetched): (Vec<String>, Vec<String>) = fetched
            .into_iter()
            .partition(|id| handed_out.contains_key(id));
        let fresh: Vec<String> = fetched
            .into_iter()
            .filter(|id| !queued.contains(id))
            .collect();
        // Fresh candidates go under the ones already queued: those are handed out first.
        ids.splice(0..0, fresh);
        held.len()
    }

    /// Takes back a candidate that was not used.
    fn unpop(&self, id: String) {
        self.handed_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }
}

impl CandidatePool {
    /// A pool of at most `max_prefixes` (at least one) prefix queues.
    pub(super) fn new(max_prefixes: usize) -> Self {
        Self {
            queues: Mutex::default(),
            max_prefixes: max_prefixes.max(1),
            uses: AtomicU64::new(0),
        }
    }

    /// How many prefix queues the pool holds now.
    pub(super) fn prefixes(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn queue(&self, prefix: &str) -> Arc<PrefixQueue> {
        let stamp = self.uses.fetch_add(1, Ordering::Relaxed);
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(prefix) {
            queue.last_used.store(stamp, Ordering::Relaxed);
            return Arc::clone(queue);
        }
        if queues.len() >= self.max_prefixes {
            // The least recently used queue no request holds (the map's is its only handle).
            let idle = queues
                .iter()
                .filter(|(_, queue)| Arc::strong_count(queue) == 1)
                .min_by_key(|(_, queue)| queue.last_used.load(Ordering::Relaxed))
                .map(|(evicted, _)| evicted.clone());
            match idle {
                Some(evicted) => {
                    queues.remove(&evicted);
                }
                None => return Arc::new(PrefixQueue::default()),
            }
        }
        let queue = Arc::new(PrefixQueue::default());
        queue.last_used.store(stamp, Ordering::Relaxed);
        queues.insert(prefix.to_owned(), Arc::clone(&queue));
        queue
    }

    /// The next candidate whose name starts with `prefix`, or `None` when the index holds
    /// no available match at all.
    pub(super) async fn take(
        &self,
        store: &DynamoStore,
        budget: &Budget,
        prefix: &str,
    ) -> Result<Option<String>, StoreError> {
        let calls = Arc::clone(&store.calls);
        let table = store.table.clone();
        let owned_prefix = prefix.to_owned();
        let ahead = store.calls.budget();
        let read = move |budget: Budget| {
            let (calls, table, prefix) = (Arc::clone(&calls), table.clone(), owned_prefix.clone());
            async move { fetch(&calls, &table, &budget, &prefix).await }
        };
        self.take_ahead(prefix, (*budget, ahead), read).await
    }

    /// [`Self::take_refilled_by`], refilling a queue that runs low in the background with
    /// what `read` reads within the second budget.
    async fn take_ahead<F, Fut>(
        &self,
        prefix: &str,
        (budget, ahead): (Budget, Budget),
        read: F,
    ) -> Result<Option<String>, StoreError>
    where
        F: Fn(Budget) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<String>, StoreError>> + Send + 'static,
    {
        let queue = self.queue(prefix);
        if let Some((id, left)) = queue.pop_counted() {
            if left < REFILL_AHEAD_BELOW
                && let Ok(refilling) = Arc::clone(&queue.refill).try_lock_owned()
            {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move {
                    // A failed read ahead is only a missed head start: the request that
                    // finds the queue empty reads again, and reports what it meets.
                    if let Ok(fetched) = read(ahead).await {
                        queue.refill_with(fetched);
                    }
                    drop(refilling);
                });
            }
            return Ok(Some(id));
        }
        Self::pop_refilled(&queue, || read(budget)).await
    }

    /// [`Self::take`], refilling an empty queue with what `fetch` reads.
    async fn take_refilled_by<F, Fut>(
        &self,
        prefix: &str,
        fetch: F,
    ) -> Result<Option<String>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Vec<String>, StoreError>>,
    {
        let queue = self.queue(prefix);
        if let Some(id) = queue.pop() {
            return Ok(Some(id));
        }
        Self::pop_refilled(&queue, fetch).await
    }

    /// The next candidate of `queue`, refilled first with what `fetch` reads unless a
    /// refill that was running meanwhile left some.
    ///
    /// A read whose every match is handed out to a local request does not mean the pool is
    /// empty: a claim refused at a token's cap gives its candidate back a moment later.
    /// So the request waits for that, up to [`HANDED_BACK_WAIT`], before it answers that
    /// none is available (50 students under a cap of 10 on a pool of 30 would otherwise
    /// see a 409 while 20 rows are free).
    async fn pop_refilled<F, Fut>(
        queue: &PrefixQueue,
        fetch: F,
    ) -> Result<Option<String>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Vec<String>, StoreError>>,
    {
        let started = Instant::now();
        let mut pause = HANDED_BACK_PAUSE;
        loop {
            {
                let _refilling = queue.refill.lock().await;
                // Whoever held the lock before us may have refilled already.
                if let Some(id) = queue.pop() {
                    return Ok(Some(id));
                }
                let held_here = queue.refill_with(fetch().await?);
                if let Some(id) = queue.pop() {
                    return Ok(Some(id));
                }
                if held_here == 0 || started.elapsed() >= HANDED_BACK_WAIT {
                    return Ok(None);
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The next row set aside for `reservation` (this pool then holds one queue per
    /// reservation), or `None` when it holds none.
    pub(super) async fn take_reserved(
        &self,
        store: &DynamoStore,
        budget: &Budget,
        reservation: &str,
    ) -> Result<Option<String>, StoreError> {
        // A reservation's rows share one `TrackIndex` key and sort alike, so there is no
        // random window to start at: a bigger page, shuffled, keeps a fleet's instances
        // from all claiming the same first rows.
        self.take_refilled_by(reservation, || {
            store.reserved_ids(budget, reservation, Some(RESERVED_PAGE_SIZE))
        })
        .await
    }

    /// Forgets that `ids` were handed out: they are back in the pool (a reservation
    /// returned them), so the next refill may offer them at once.
    pub(super) fn forget_handed_out(&self, ids: &[String]) {
        let queues: Vec<Arc<PrefixQueue>> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for queue in queues {
            let mut handed_out = queue
                .handed_out
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for id in ids {
                handed_out.remove(id);
            }
        }
    }

    /// Returns an unused candidate (the request turned out to be a replay).
    pub(super) fn give_back(&self, prefix: &str, id: String) {
        self.queue(prefix).unpop(id);
    }
}

/// The lowest string that starts with `prefix`: DynamoDB refuses an empty key value, so
/// "no prefix" starts just above the empty string.
pub(super) fn prefix_start(prefix: &str) -> &str {
    if prefix.is_empty() { "\u{1}" } else { prefix }
}

/// The highest string that still starts with `prefix` (names are printable ASCII, so any
/// continuation sorts below `~`-padding; `\u{10FFFF}` is above every UTF-8 continuation).
pub(super) fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

/// One page of available sandbox ids whose name starts with `prefix`, starting at a random
/// name between the first and the last match, wrapping to the start when the slice after
/// the pivot is short. Instances of a fleet so read mostly different slices of a big pool.
async fn fetch(
    calls: &Calls,
    table: &str,
    budget: &Budget,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let index = (calls, table);
    // No first match, no match: a prefix with none costs one read, not two.
    let Some(first) = edge_name(index, budget, prefix, true).await? else {
        return Ok(Vec::new());
    };
    let Some(last) = edge_name(index, budget, prefix, false).await? else {
        return Ok(Vec::new());
    };
    let pivot = random_between(&first, &last);
    let mut ids = window(index, budget, &pivot, &prefix_end(prefix), PAGE_SIZE).await?;
    let short = PAGE_SIZE - i32::try_from(ids.len()).unwrap_or(PAGE_SIZE);
    if short > 0 && pivot.as_str() > first.as_str() {
        ids.extend(window(index, budget, &first, &pivot, short).await?);
        ids.sort_unstable();
        ids.dedup();
    }
    Ok(ids)
}

/// A query of available names in `[from, to]` on `StatusNameIndex`.
fn available_names(client: &Client, table: &str, from: &str, to: &str) -> QueryFluentBuilder {
    client
        .query()
        .table_name(table)
        .index_name(STATUS_NAME_INDEX)
        .key_condition_expression("#s = :available AND #n BETWEEN :from AND :to")
        .expression_attribute_names("#s", "status")
        .expression_attribute_names("#n", "name")
        .expression_attribute_values(":available", s(SandboxStatus::Available.as_str()))
        .expression_attribute_values(":from", s(from))
        .expression_attribute_values(":to", s(to))
}

/// The first (or last) available name starting with `prefix`.
async fn edge_name(
    (calls, table): (&Calls, &str),
    budget: &Budget,
    prefix: &str,
    ascending: bool,
) -> Result<Option<String>, StoreError> {
    let query = available_names(
        &calls.client,
        table,
        prefix_start(prefix),
        &prefix_end(prefix),
    )
    .scan_index_forward(ascending)
    .limit(1);
    let page = calls
        .send(budget, || calls.wire.send(&query))
        .await
        .map_err(DynamoError::into_store_error)?;
    Ok(page
        .items()
        .first()
        .and_then(|item| item.text("name").map(str::to_owned)))
}

/// Up to `limit` available ids with names in `[from, to]`.
async fn window(
    (calls, table): (&Calls, &str),
    budget: &Budget,
    from: &str,
    to: &str,
    limit: i32,
) -> Result<Vec<String>, StoreError> {
    let query = available_names(&calls.client, table, from, to).limit(limit);
    let page = calls
        .send(budget, || calls.wire.send(&query))
        .await
        .map_err(DynamoError::into_store_error)?;
    Ok(page
        .items()
        .iter()
        .filter_map(|item| {
            item.text("PK")?
                .strip_prefix(SANDBOX_PREFIX)
                .map(str::to_owned)
        })
        .collect())
}

/// A random name in `[low, high]` shaped like them: their common prefix, a random
/// character between the first ones where they differ, then at each later position a
/// random character of the same kind as theirs there (a digit for a digit, a letter for a
/// letter; anything else kept). So `bench-0000000`..`bench-0019999` splits at any of
/// 20,000 names, not at `bench-000` or `bench-001` only: picking among the first differing
/// characters alone would send every refill of a numbered pool, and every instance of a
/// fleet, to a handful of windows, where it would find the candidates it already holds.
pub(super) fn random_between(low: &str, high: &str) -> String {
    if low >= high || !low.is_ascii() || !high.is_ascii() {
        return low.to_owned();
    }
    let (low_bytes, high_bytes) = (low.as_bytes(), high.as_bytes());
    let common = low_bytes
        .iter()
        .zip(high_bytes)
        .take_while(|(a, b)| a == b)
        .count();
    let floor = low_bytes.get(common).copied().unwrap_or(b' ');
    let ceiling = high_bytes.get(common).copied().unwrap_or(b'~');
    if floor > ceiling {
        // `low` ends where `high` goes on with a control character (a Python-era name).
        return low.to_owned();
    }
    let mut pivot = high_bytes[..common].to_vec();
    pivot.push(rand::random_range(floor..=ceiling));
    for position in common + 1..low_bytes.len().max(high_bytes.len()) {
        let shape = low_bytes.get(position).or(high_bytes.get(position));
        pivot.push(shape.map_or(b' ', |&shape| random_like(shape)));
    }
    let pivot = String::from_utf8(pivot).unwrap_or_else(|_| low.to_owned());
    if pivot.as_str() < low {
        low.to_owned()
    } else if pivot.as_str() > high {
        high.to_owned()
    } else {
        pivot
    }
}

/// A random ASCII character of the same kind as `shape`: a digit, a lower-case or an
/// upper-case letter; any other character is kept (separators such as `-`).
fn random_like(shape: u8) -> u8 {
    match shape {
        b'0'..=b'9' => rand::random_range(b'0'..=b'9'),
        b'a'..=b'z' => rand::random_range(b'a'..=b'z'),
        b'A'..=b'Z' => rand::random_range(b'A'..=b'Z'),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::{CandidatePool, random_between};
    use crate::store::StoreError;

    /// What a refill of `prefix` reads from a pool whose only names are `lab-a-0`..`49`
    /// and `lab-b-0`..`49` (ids as names), less those already `claimed`.
    async fn index(
        prefix: String,
        claimed: &std::sync::Mutex<std::collections::HashSet<String>>,
    ) -> Result<Vec<String>, StoreError> {
        let claimed = claimed.lock().unwrap();
        Ok(["lab-a-", "lab-b-"]
            .iter()
            .filter(|real| real.starts_with(prefix.as_str()))
            .flat_map(|real| (0..50).map(move |n| format!("{real}{n}")))
            .filter(|id| !claimed.contains(id))
            .collect())
    }

    #[tokio::test]
    async fn fifty_thousand_invented_prefixes_keep_the_pool_bounded_and_real_ones_served() {
        let pool = CandidatePool::new(64);
        let claimed = std::sync::Mutex::default();
        for n in 0..50_000 {
            let prefix = match n % 1_000 {
                0 => "lab-a-".to_owned(),
                500 => "lab-b-".to_owned(),
                _ => format!("invented-{n}-"),
            };
            let fetch = || index(prefix.clone(), &claimed);
            let candidate = pool.take_refilled_by(&prefix, fetch).await.unwrap();
            assert!(pool.prefixes() <= 64, "{} queues", pool.prefixes());
            match candidate {
                Some(id) => {
                    assert!(id.starts_with(&prefix), "{prefix}: {id}");
                    assert!(claimed.lock().unwrap().insert(id), "handed out twice");
                }
                None => assert!(prefix.starts_with("invented-"), "{prefix} went unserved"),
            }
        }
        assert_eq!(
            claimed.into_inner().unwrap().len(),
            100,
            "every real request was served"
        );
    }

    #[tokio::test]
    async fn a_queue_running_low_is_refilled_ahead_so_only_the_first_take_waits_for_a_read() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        use std::time::{Duration, Instant};

        use crate::store::dynamo::calls::Budget;

        let now = Instant::now();
        let (request, ahead) = (
            Budget::until(now + Duration::from_secs(10)),
            Budget::until(now + Duration::from_secs(20)),
        );
        let pool = CandidatePool::new(4);
        let pages = Arc::new(AtomicUsize::new(0));
        let waited = Arc::new(Mutex::new(Vec::new()));
        let read = {
            let (pages, waited) = (Arc::clone(&pages), Arc::clone(&waited));
            move |budget: Budget| {
                let page = pages.fetch_add(1, Ordering::SeqCst);
                if budget.deadline() == request.deadline() {
                    waited.lock().unwrap().push(page);
                }
                // Each read finds 100 new names (and, like a random window, 20 it found
                // before, which must not be handed out twice).
                let ids: Vec<String> = (page * 100 - page.min(1) * 20..(page + 1) * 100)
                    .map(|n| format!("lab-{n}"))
                    .collect();
                async move { Ok(ids) }
            }
        };
        let mut taken = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let read = read.clone();
            let id = pool
                .take_ahead("lab-", (request, ahead), read)
                .await
                .unwrap()
                .expect("a candidate");
            assert!(taken.insert(id.clone()), "{id} handed out twice");
            // Let a refill started in the background finish, as time between arrivals does.
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *waited.lock().unwrap(),
            vec![0],
            "only the first take waited"
        );
        assert!(pages.load(Ordering::SeqCst) >= 10);
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound_evicting_the_least_recently_used_idle_queue() {
        let pool = CandidatePool::new(3);
        for prefix in ["a", "b", "c"] {
            pool.queue(prefix);
        }
        pool.queue("a"); // "b" is now the least recently used
        let held_c = pool.queue("c");
        pool.queue("d");
        assert_eq!(pool.prefixes(), 3);
        let kept: std::collections::HashSet<String> =
            pool.queues.lock().unwrap().keys().cloned().collect();
        assert_eq!(kept, ["a", "c", "d"].map(String::from).into());
        // Every queue in use: a newcomer gets a queue of its own, the bound holds.
        let held: Vec<_> = ["a", "d"].map(|prefix| pool.queue(prefix)).into();
        let own = pool.queue("e");
        assert_eq!(pool.prefixes(), 3);
        assert_eq!(own.refill_with(vec!["x".into()]), 0);
        assert_eq!(own.pop().as_deref(), Some("x"));
        drop((held, held_c));
        for n in 0..10_000 {
            pool.queue(&format!("invented-{n}"));
        }
        assert_eq!(pool.prefixes(), 3);
    }

    /// A take that finds every match handed out to a local request waits for one to come
    /// back (a claim refused at a token's cap gives it back), and answers none only when
    /// nothing does within the wait.
    #[tokio::test]
    async fn a_take_that_finds_every_match_handed_out_waits_for_one_given_back() {
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        let pool = Arc::new(CandidatePool::new(4));
        // The index still shows both rows as available while their claims are in flight.
        let index = || async { Ok(vec!["a".to_owned(), "b".to_owned()]) };
        let first = pool.take_refilled_by("p", index).await.unwrap().unwrap();
        let second = pool.take_refilled_by("p", index).await.unwrap().unwrap();
        assert_ne!(first, second);
        let giver = {
            let (pool, first) = (Arc::clone(&pool), first.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                pool.give_back("p", first);
            })
        };
        let third = pool.take_refilled_by("p", index).await.unwrap();
        assert_eq!(third, Some(first), "the candidate given back");
        giver.await.unwrap();
        // Both claimed now, and the index not showing it yet: none, after the wait.
        let started = Instant::now();
        assert_eq!(pool.take_refilled_by("p", index).await.unwrap(), None);
        assert!(started.elapsed() >= super::HANDED_BACK_WAIT);
    }

    #[test]
    fn pivots_fall_between_the_bounds() {
        for _ in 0..200 {
            let pivot = random_between("lab-0001", "lab-0999");
            assert!(
                pivot.as_str() >= "lab-0001" && pivot.as_str() <= "lab-0999",
                "{pivot}"
            );
        }
        assert_eq!(random_between("same", "same"), "same");
        let spread: std::collections::HashSet<String> =
            (0..200).map(|_| random_between("a-000", "a-900")).collect();
        assert!(spread.len() > 3, "pivots are random: {spread:?}");
        assert_eq!(random_between("b", "a"), "b", "bounds the wrong way round");
        assert_eq!(random_between("lab-é", "lab-z"), "lab-é", "not ASCII");
        assert_eq!(
            random_between("lab", "lab\t1"),
            "lab",
            "a control character"
        );
    }

    /// A numbered pool whose first and last names share all but the last five digits is
    /// split anywhere in it, so refills (and a fleet's instances) read different windows.
    #[test]
    fn pivots_spread_over_a_numbered_pool() {
        let (low, high) = ("bench-0000000", "bench-0019999");
        let mut tenths = [0_u32; 10];
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let pivot = random_between(low, high);
            assert!(pivot.as_str() >= low && pivot.as_str() <= high, "{pivot}");
            assert_eq!(pivot.len(), low.len(), "{pivot}");
            let number: usize = pivot["bench-".len()..].parse().expect("digits");
            tenths[number / 2_000] += 1;
            distinct.insert(pivot);
        }
        assert!(distinct.len() > 1_500, "{} distinct pivots", distinct.len());
        // Each tenth of the pool expects 200 of the 2,000 pivots.
        assert!(
            tenths.iter().all(|&n| (120..=280).contains(&n)),
            "{tenths:?}"
        );
        // Letters and separators keep their shape too.
        let pivot = random_between("lab-aa-1", "lab-zz-9");
        assert!(
            pivot.starts_with("lab-") && pivot.as_bytes()[6] == b'-',
            "{pivot}"
        );
    }
}
