//! The pool counts `/metrics` reports, read from the store at most once per refresh period.
//!
//! Rule: however often (and however many at once) `/metrics` is scraped, the store is
//! counted at most once per `METRICS_POOL_REFRESH_SEC` per instance: concurrent scrapes
//! wait for the one refresh in progress and share its answer, a failed count included, so
//! a scraper cannot turn into read load on the table that allocations need.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::store::PoolStats;

/// The last count and when it was taken.
pub struct PoolCache {
    max_age: Duration,
    last: Mutex<Option<(Instant, Option<PoolStats>)>>,
}

impl PoolCache {
    /// A cache whose counts are reused for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            last: Mutex::new(None),
        }
    }

    /// The counts, from `count` when the last ones are older than the refresh period
    /// (`None`: the store could not count them).
    pub async fn get<F, Fut>(&self, count: F) -> Option<PoolStats>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<PoolStats>>,
    {
        let mut last = self.last.lock().await;
        if let Some((taken, stats)) = *last
            && taken.elapsed() < self.max_age
        {
            return stats;
        }
        let stats = count().await;
        *last = Some((Instant::now(), stats));
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_store_is_counted_once_per_period_however_often_it_is_asked() {
        let cache = PoolCache::new(Duration::from_secs(5));
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
        let cache = Arc::new(PoolCache::new(Duration::from_secs(5)));
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
