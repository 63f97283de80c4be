//! Allocation on a shared table: at most two single-item conditional writes on the happy
//! path, no transaction, correct across any number of instances.
//!
//! The allocation key (student, `Idempotency-Key`) has its own item, `ALLOC#<key>`, whose
//! `sandbox_id` names the one sandbox the key may claim. The protocol:
//!
//! 1. Take a candidate from the shared pool and `PutItem` the key item pointing at it,
//!    conditional on the key item not existing. (Write 1.)
//! 2. Claim that sandbox: `UpdateItem` to `allocated`, conditional on `status = available`.
//!    (Write 2.) Done: 201.
//!
//! If the key item already exists, read it and its sandbox (both consistently):
//! - the sandbox is `allocated` to this key → replay, 200;
//! - the sandbox is still `available` (its claimer is mid-flight or died) → claim it for
//!   this key ourselves; a racing twin doing the same loses the condition and then sees
//!   the sandbox held by the key → 200;
//! - anything else (taken by another key, released, gone) → re-point the key item to a new
//!   candidate, conditional on it still naming the dead sandbox, then claim that.
//!
//! Why one key never gets two sandboxes: a claim only ever targets the sandbox the key item
//! names, and the key item only moves away from a sandbox once that sandbox is seen not
//! available — and a sandbox never becomes available again, so a late claim of the old one
//! always fails its condition.
//!
//! Who answers 201: the key item records the request that last pointed it at a sandbox
//! (`request_id`, a fresh id per allocation call). That request answers 201 when the
//! claim lands — however many attempts it took, even when the answer to its own write was
//! lost and a retry found the write already applied — and every other request for the same
//! key answers 200. A write whose condition fails is read back (the failed write returns
//! the item, or a consistent read does) before anything is decided.
//!
//! A request that gives up with 503 (its deadline ran out, or the table went down) after
//! sending writes may have made the allocation without being able to say so. Its id is
//! remembered here for [`ABANDONED_MEMORY`]; the next request for the same key on this
//! instance adopts the allocation and answers 201, since the student was never told.
//!
//! Lost races are retried until the operation's deadline: `K_CANDIDATES` claims back to
//! back, then a short jittered pause so a fleet's instances fall out of step, and again.
//! 409 comes only from a fresh index read that finds no available match.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

mod key_item;

use super::DynamoStore;
use super::calls::{Budget, backoff};
use super::error::{DynamoError, internal};
use super::item::{returned_row, row_found_by_update};
use super::reservations::unread_reserved;
use super::update::unread_available;
use crate::domain::lifecycle;
use crate::domain::{Sandbox, SandboxStatus};
use crate::store::{Allocation, AllocationRequest, Outcome, Refusal, StoreError};

/// How long the id of a request that answered 503 is remembered for adoption.
const ABANDONED_MEMORY: Duration = Duration::from_secs(600);

/// Ids of requests that answered 503 and may have left an allocation behind.
#[derive(Default)]
pub(super) struct Abandoned(Mutex<HashMap<String, Instant>>);

impl Abandoned {
    /// Remembers `request_id` as given up.
    pub(super) fn remember(&self, request_id: String) {
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        ids.retain(|_, at| at.elapsed() < ABANDONED_MEMORY);
        ids.insert(request_id, Instant::now());
    }

    /// Whether `request_id` gave up; the first caller to ask takes it over.
    fn adopt(&self, request_id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(request_id)
            .is_some_and(|at| at.elapsed() < ABANDONED_MEMORY)
    }
}

/// What one step of the protocol concluded: the allocation, or `None` to read the key
/// item again and continue.
type Step = Option<Allocation>;

/// One allocation call's view of its race.
struct Race<'a> {
    request: &'a AllocationRequest,
    /// The encoded allocation key.
    key: String,
    /// This call's id, recorded on the key item it points.
    me: String,
    prefix: &'a str,
    /// The reservation this call still draws on: its rows are the candidates until it has
    /// none, then the pool's are (one more candidate source, no extra write).
    drawing: Option<&'a str>,
    /// Candidates lost to other keys, all told.
    conflicts: u32,
    /// Candidates lost since the last pause.
    lost_in_a_row: usize,
    /// Pauses taken so far (the backoff grows with them).
    pauses: u32,
    /// A claim found the lab token at its cap: the race ends refused.
    capped: bool,
}

impl Race<'_> {
    fn done(&self, sandbox: Sandbox, mine: bool) -> Allocation {
        Allocation {
            sandbox,
            newly_allocated: mine,
            conflicts: self.conflicts,
        }
    }

    fn lost(&mut self) {
        self.conflicts += 1;
        self.lost_in_a_row += 1;
    }

    /// The candidate `id` as the claim must assume it: set aside for the reservation the
    /// call draws on, or available.
    fn assumed(&self, id: &str) -> Result<Sandbox, StoreError> {
        match self.drawing {
            Some(reservation) => unread_reserved(id, reservation),
            None => unread_available(id),
        }
    }
}

/// Why a race for a sandbox stopped without one.
enum Stop {
    /// The pool has no match: the request is refused.
    NoneAvailable,
    /// The request's lab token holds its cap: refused.
    QuotaExceeded,
    /// The store failed.
    Failed(StoreError),
}

impl From<StoreError> for Stop {
    fn from(err: StoreError) -> Self {
        Self::Failed(err)
    }
}

impl DynamoStore {
    /// Runs the protocol for `request` until it has an answer or `budget` runs out.
    pub(super) async fn allocate_within(
        &self,
        budget: &Budget,
        request: &AllocationRequest,
    ) -> Outcome<Allocation> {
        let me = uuid::Uuid::new_v4().simple().to_string();
        match self.race(budget, request, me.clone()).await {
            Ok(allocation) => Ok(Ok(allocation)),
            Err(Stop::NoneAvailable) => Ok(Err(Refusal::NoneAvailable)),
            Err(Stop::QuotaExceeded) => Ok(Err(Refusal::QuotaExceeded)),
            Err(Stop::Failed(err)) => {
                if let StoreError::Unavailable(_) = &err {
                    self.abandoned.remember(me);
                }
                Err(err)
            }
        }
    }

    /// See [`crate::store::AllocationStore::held_by`]: the Python service's allocation for the key,
    /// else the sandbox the key item names if it is allocated to this key; nothing is
    /// written.
    pub(super) async fn held_by_within(
        &self,
        budget: &Budget,
        request: &AllocationRequest,
    ) -> Result<Option<Sandbox>, StoreError> {
        if let Some(row) = self.foreign_allocation(budget, request).await? {
            return Ok(Some(row));
        }
        let Some(current) = self.read_key(budget, &request.key.encoded()).await? else {
            return Ok(None);
        };
        Ok(self
            .row(budget, &current.sandbox_id)
            .await?
            .filter(|row| row.status == SandboxStatus::Allocated && request.key.holds(row)))
    }

    async fn race(
        &self,
        budget: &Budget,
        request: &AllocationRequest,
        me: String,
    ) -> Result<Allocation, Stop> {
        // A student the Python service served keeps that sandbox (see `foreign.rs`).
        if let Some(row) = self.foreign_allocation(budget, request).await? {
            return Ok(Allocation {
                sandbox: row,
                newly_allocated: false,
                conflicts: 0,
            });
        }
        let mut race = Race {
            request,
            key: request.key.encoded(),
            me,
            prefix: request.name_prefix.as_ref().map_or("", |p| p.as_str()),
            drawing: request.reservation.as_deref(),
            conflicts: 0,
            lost_in_a_row: 0,
            pauses: 0,
            capped: false,
        };
        if let Some(candidate) = self.next_candidate(budget, &mut race).await? {
            match self.create_key(budget, &race, &candidate).await {
                Ok(()) => {
                    if let Some(done) = self.claim_for_own_key(budget, &mut race, candidate).await?
                    {
                        return Ok(done);
                    }
                }
                // The key exists: most likely a replay. The candidate stays unused.
                Err(DynamoError::Conflict) => self.give_back(&race, candidate),
                Err(DynamoError::Store(err)) => {
                    self.give_back(&race, candidate);
                    return Err(err.into());
                }
            }
        }
        loop {
            if race.capped {
                return Err(Stop::QuotaExceeded);
            }
            if race.lost_in_a_row >= self.k_candidates {
                // A fleet's instances keep colliding: step out of each other's way.
                let pause = backoff(self.calls.patience(), race.pauses);
                race.pauses += 1;
                race.lost_in_a_row = 0;
                if Instant::now() + pause >= budget.deadline() {
                    return Err(self
                        .calls
                        .deadline_exceeded(budget, "racing for a sandbox")
                        .into());
                }
                tokio::time::sleep(pause).await;
            }
            if budget.expired() {
                return Err(self
                    .calls
                    .deadline_exceeded(budget, "racing for a sandbox")
                    .into());
            }
            if let Some(done) = self.follow_key(budget, &mut race).await? {
                return Ok(done);
            }
        }
    }

    /// The fast path after creating the key item: claim its sandbox; when another key took
    /// it first (a failed claim reports the row, so we know it is not held by this key),
    /// re-point and claim the next candidate without re-reading. Gives up to the slow path
    /// if a twin moves the key meanwhile.
    async fn claim_for_own_key(
        &self,
        budget: &Budget,
        race: &mut Race<'_>,
        mut pointer: String,
    ) -> Result<Step, StoreError> {
        while race.lost_in_a_row < self.k_candidates && !budget.expired() {
            let assumed = race.assumed(&pointer)?;
            if let Some(done) = self.claim(budget, race, assumed, true).await? {
                return Ok(Some(done));
            }
            if race.capped {
                return Ok(None);
            }
            let Some(next) = self.next_candidate(budget, race).await? else {
                return Ok(None);
            };
            match self.repoint_key(budget, race, &pointer, &next).await {
                Ok(()) => pointer = next,
                Err(DynamoError::Conflict) => {
                    self.give_back(race, next);
                    return Ok(None);
                }
                Err(DynamoError::Store(err)) => return Err(err),
            }
        }
        Ok(None)
    }

    /// One round of the slow path: read the key item and act on what its sandbox is.
    async fn follow_key(&self, budget: &Budget, race: &mut Race<'_>) -> Result<Step, Stop> {
        let Some(current) = self.read_key(budget, &race.key).await? else {
            // No key item (never made, or freed by a mark just now): start one.
            let candidate = self.candidate_or_empty(budget, race).await?;
            return match self.create_key(budget, race, &candidate).await {
                Ok(()) => {
                    let assumed = race.assumed(&candidate)?;
                    Ok(self.claim(budget, race, assumed, true).await?)
                }
                Err(DynamoError::Conflict) => {
                    self.give_back(race, candidate);
                    Ok(None)
                }
                Err(DynamoError::Store(err)) => Err(err.into()),
            };
        };
        let mine = current.made_by(&race.me)
            || current
                .request_id
                .as_deref()
                .is_some_and(|id| self.abandoned.adopt(id));
        let row = self.row(budget, &current.sandbox_id).await?;
        match row {
            Some(row) if row.status == SandboxStatus::Allocated && race.request.key.holds(&row) => {
                Ok(Some(race.done(row, mine)))
            }
            // Still free for this call (its claimer is in flight or died): claim it as read.
            Some(row) if lifecycle::allocate(&row, &race.request.grant()).is_some() => {
                Ok(self.claim(budget, race, row, mine).await?)
            }
            _ => {
                let candidate = self.candidate_or_empty(budget, race).await?;
                match self
                    .repoint_key(budget, race, &current.sandbox_id, &candidate)
                    .await
                {
                    Ok(()) => {
                        let assumed = race.assumed(&candidate)?;
                        Ok(self.claim(budget, race, assumed, true).await?)
                    }
                    Err(DynamoError::Conflict) => {
                        self.give_back(race, candidate);
                        Ok(None)
                    }
                    Err(DynamoError::Store(err)) => Err(err.into()),
                }
            }
        }
    }

    /// The next candidate: from the reservation the call draws on while it has rows,
    /// then from the pool; `None` when neither has one.
    async fn next_candidate(
        &self,
        budget: &Budget,
        race: &mut Race<'_>,
    ) -> Result<Option<String>, StoreError> {
        if let Some(reservation) = race.drawing {
            if let Some(id) = self
                .reserved_candidates
                .take_reserved(self, budget, reservation)
                .await?
            {
                return Ok(Some(id));
            }
            race.drawing = None;
        }
        self.candidates.take(self, budget, race.prefix).await
    }

    /// Returns an unused candidate to the queue it came from.
    fn give_back(&self, race: &Race<'_>, id: String) {
        match race.drawing {
            Some(reservation) => self.reserved_candidates.give_back(reservation, id),
            None => self.candidates.give_back(race.prefix, id),
        }
    }

    /// A candidate for a key that needs a (new) sandbox; none means the pool has no match: 409.
    async fn candidate_or_empty(
        &self,
        budget: &Budget,
        race: &mut Race<'_>,
    ) -> Result<String, Stop> {
        self.next_candidate(budget, race)
            .await?
            .ok_or(Stop::NoneAvailable)
    }

    /// Write 2: the candidate (`before`: as read, or as the claim must assume it) →
    /// `allocated` for this key, or a conflict to retry on. `mine`: the key item names this
    /// sandbox because this call pointed it there (201, not 200).
    async fn claim(
        &self,
        budget: &Budget,
        race: &mut Race<'_>,
        before: Sandbox,
        mine: bool,
    ) -> Result<Step, StoreError> {
        let request = race.request;
        let id = before.sandbox_id.as_str();
        // A claim that has not read the row derives its update from the domain's decision
        // on the row as it must assume it (see `update::unread_available`).
        let unread = before.clone();
        let change = lifecycle::allocate(&unread, &request.grant())
            .ok_or_else(|| internal("a candidate is assumed free to allocate"))?;
        if let Some(token) = &request.token {
            return self
                .claim_counted(budget, race, (&unread, &change), token, mine)
                .await;
        }
        let update = self
            .apply_change(&unread, &change)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let (sent, returned) = self
            .calls
            .send_keeping(
                budget,
                || self.calls.wire.send(&update),
                row_found_by_update,
            )
            .await;
        match sent {
            Ok(output) => {
                let sandbox = returned_row(output.attributes)?;
                Ok(Some(race.done(sandbox, mine)))
            }
            Err(DynamoError::Conflict) => {
                // Not available any more: maybe because a twin request — or our own earlier
                // attempt, sent again — already claimed it for this very key. Only a row
                // held by another key is a lost race; ours must never be abandoned.
                let current = match returned {
                    Some(Ok(row)) => Some(row),
                    _ => self.row(budget, id).await?,
                };
                if let Some(row) = current
                    && row.status == SandboxStatus::Allocated
                    && request.key.holds(&row)
                {
                    return Ok(Some(race.done(row, mine)));
                }
                race.lost();
                Ok(None)
            }
            Err(DynamoError::Store(err)) => Err(err),
        }
    }
}

impl DynamoStore {
    /// [`Self::claim`] under a lab token: the claim and the token's slot in one
    /// transaction. At the token's cap the candidate goes back to the pool and the race ends
    /// refused; a lost row is handled as any claim's.
    async fn claim_counted(
        &self,
        budget: &Budget,
        race: &mut Race<'_>,
        (unread, change): (&Sandbox, &lifecycle::Change),
        token: &crate::store::TokenGrant,
        mine: bool,
    ) -> Result<Step, StoreError> {
        let id = change.row.sandbox_id.as_str();
        let (sent, refused) = self.claim_under_token(budget, unread, change, token).await;
        match sent {
            // The transaction returns nothing: read the row it made.
            Ok(()) => match self.row(budget, id).await? {
                Some(row) => Ok(Some(race.done(row, mine))),
                None => Err(internal(format!("claimed row {id} is gone"))),
            },
            Err(DynamoError::Conflict) => match refused {
                Some(super::tokens::ClaimRefused::Cap) => {
                    self.give_back(race, id.to_owned());
                    race.capped = true;
                    // Refused: the key item this call pointed must not make the key's next
                    // call, once a slot is free, look like a replay of it.
                    self.drop_refused_key(budget, race, id).await;
                    Ok(None)
                }
                found => {
                    let current = match found {
                        Some(super::tokens::ClaimRefused::Row(Some(row))) => Some(*row),
                        _ => self.row(budget, id).await?,
                    };
                    if let Some(row) = current
                        && row.status == SandboxStatus::Allocated
                        && race.request.key.holds(&row)
                    {
                        return Ok(Some(race.done(row, mine)));
                    }
                    race.lost();
                    Ok(None)
                }
            },
            Err(DynamoError::Store(err)) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::Grant;
    use crate::store::dynamo::update::row_update;

    #[test]
    fn the_claim_writes_exactly_what_an_allocation_changes_and_clears_an_old_track() {
        let attributes = |lab| {
            let grant = Grant {
                token_id: None,
                reservation: None,
                holder: "stu",
                idempotency_key: "stu",
                lab,
                lab_duration_hours: 48,
                now: crate::domain::time::EpochSecs::new(1_000),
            };
            let unread = unread_available("42").unwrap();
            let update = row_update(
                &unread,
                &lifecycle::allocate(&unread, &grant).unwrap(),
                true,
            );
            let remove = update
                .expression
                .split_once(" REMOVE ")
                .map_or("", |(_, r)| r);
            let named = |clauses: Vec<&str>| {
                let mut names: Vec<String> =
                    clauses.iter().map(|p| update.names[*p].clone()).collect();
                names.sort();
                names
            };
            let (plain, announced) = crate::store::dynamo::update::set_clauses(&update);
            assert_eq!(announced, ["outbox", "outbox_at", "pending_events"]);
            let mut set: Vec<String> = plain.into_iter().map(|(name, _)| name).collect();
            set.sort();
            let remove = named(remove.split(", ").filter(|p| !p.is_empty()).collect());
            (set, remove, update.condition.clone())
        };
        let owned = [
            "allocated_at",
            "allocated_by",
            "allocated_to_track",
            "idempotency_key",
            "lab_duration_hours",
            "status",
            "updated_at",
        ];
        let (set, remove, condition) = attributes(None);
        assert_eq!(set, owned);
        assert_eq!(remove, ["track_name"], "an earlier lab's name is cleared");
        assert!(condition.ends_with("= :expect_status"), "{condition}");
        let (set, remove, _) = attributes(Some("lab-a"));
        let mut with_lab = owned.to_vec();
        with_lab.push("track_name");
        with_lab.sort_unstable();
        assert_eq!(
            (set, remove),
            (with_lab.iter().map(|s| s.to_string()).collect(), vec![])
        );
    }
}
