//! Stale removal: rows that went `stale` (the provider no longer lists them) and stayed so
//! for `AUTO_DELETE_STALE_GRACE_HOURS` are removed, as the Python service's daily job did.
//!
//! Rule: each removal is conditional on the row still being stale since then, so a sync
//! that finds the sandbox back at the provider (stale → available) always wins.

use std::time::Duration;

use super::JobError;
use crate::domain::time::EpochSecs;
use crate::metrics::Metrics;
use crate::store::LifecycleStore;

/// Removes rows stale for longer than `grace`; how many.
pub async fn run_once(
    store: &dyn LifecycleStore,
    metrics: &Metrics,
    grace: Duration,
    now: EpochSecs,
) -> Result<u64, JobError> {
    let stale_since = now - i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    let result = store.delete_stale(stale_since, now).await;
    let outcome = if result.is_ok() { "success" } else { "error" };
    metrics
        .jobs
        .auto_delete_stale_total
        .with_label_values(&[outcome])
        .inc();
    let deleted = result?;
    metrics.jobs.auto_delete_stale_deleted_total.inc_by(deleted);
    Ok(deleted)
}
