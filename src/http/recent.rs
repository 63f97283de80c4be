//! Answers of the open ops routes, read from the store at most once per period.
//!
//! Rule: however often (and however many at once) `/metrics` or `/readyz` is called, the
//! store is asked at most once per period per instance: concurrent callers wait for the
//! one read in progress and share its answer, a failure included, so nobody who can reach
//! the listener can turn these routes into read load on the table allocations need. The
//! dashboard's analytics reads are shared the same way ([`Recent::try_get`], successes
//! only), so their cost does not grow with open tabs.

use std::future::Future;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The last answer and when it was taken.
pub struct Recent<T> {
    max_age: Duration,
    /// The last answer: a fresh one is read without waiting (the allocation route reads
    /// the cordons here on every request).
    last: RwLock<Option<(Instant, T)>>,
    /// Held while the store is read, so concurrent callers share that one read.
    reading: Mutex<()>,
}

impl<T: Clone> Recent<T> {
    /// Answers are reused for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            last: RwLock::new(None),
            reading: Mutex::new(()),
        }
    }

    /// The last answer, or a new one from `read` when the last is older than the period.
    pub async fn get<F, Fut>(&self, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let kept: Result<T, std::convert::Infallible> =
            self.try_get(|| async { Ok(read().await) }).await;
        match kept {
            Ok(answer) => answer,
            Err(never) => match never {},
        }
    }

    /// Forgets the last answer: the next caller reads afresh (after a write here). A read
    /// in progress finishes first, so its older answer is not kept after this.
    pub async fn forget(&self) {
        let _reading = self.reading.lock().await;
        *self.last.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// As [`Self::get`], but only a successful read is kept: a failure is answered to
    /// the caller that met it, and the next caller reads again.
    pub async fn try_get<E, F, Fut>(&self, read: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(answer) = self.fresh() {
            return Ok(answer);
        }
        let _reading = self.reading.lock().await;
        // Another caller may have read while this one waited.
        if let Some(answer) = self.fresh() {
            return Ok(answer);
        }
        let answer = read().await?;
        *self.last.write().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), answer.clone()));
        Ok(answer)
    }

    /// The last answer, if it is younger than the period.
    fn fresh(&self) -> Option<T> {
        let last = self.last.read().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(taken, _)| taken.elapsed() < self.max_age)
            .map(|(_, answer)| answer.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::PoolStats;

    #[tokio::test(start_paused = true)]
    async fn the_store_is_counted_once_per_period_however_often_it_is_asked() {
        let cache = Recent::new(Duration::from_secs(5));
        let counts = AtomicU32::new(0);
        // 101 scrapes, one every 100 ms for 10 s: counted at 0 s, 5 s and 10 s.
        for _ in 0..=100 {
            cache
                .get(|| async {
                    counts.fetch_add(1, Ordering::SeqCst);
                    Some(PoolStats::default())
                })
                .await;
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(counts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_scrapes_share_one_count_and_a_failure_is_cached_too() {
        let cache: Arc<Recent<Option<PoolStats>>> = Arc::new(Recent::new(Duration::from_secs(5)));
        let counts = Arc::new(AtomicU32::new(0));
        let scrapes = (0..50).map(|_| {
            let (cache, counts) = (Arc::clone(&cache), Arc::clone(&counts));
            tokio::spawn(async move {
                cache
                    .get(|| async {
                        counts.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        None
                    })
                    .await
            })
        });
        for scrape in futures::future::join_all(scrapes).await {
            assert_eq!(scrape.unwrap(), None);
        }
        assert_eq!(counts.load(Ordering::SeqCst), 1);
    }
}
