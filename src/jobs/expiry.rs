//! Auto-expiry: allocations whose lab ended more than `GRACE_PERIOD_MINUTES` ago are
//! released to `pending_deletion`, so forgotten sandboxes are reclaimed.
//!
//! Rule: each release is conditional on the allocation being unchanged, so a student's own
//! mark racing the job is harmless (it simply wins).

use super::JobError;
use crate::domain::LabPolicy;
use crate::domain::time::EpochSecs;
use crate::metrics::Metrics;
use crate::store::LifecycleStore;

/// Releases ended allocations now; how many.
pub async fn run_once(
    store: &dyn LifecycleStore,
    metrics: &Metrics,
    lab: LabPolicy,
    now: EpochSecs,
) -> Result<u64, JobError> {
    let result = store.expire_allocations(now, lab).await;
    let outcome = if result.is_ok() { "success" } else { "error" };
    metrics
        .jobs
        .expiry_total
        .with_label_values(&[outcome])
        .inc();
    let expired = result?;
    for row in &expired {
        tracing::info!(sandbox.id = %row.sandbox_id, "allocation expired");
    }
    let count = expired.len() as u64;
    metrics.jobs.expiry_orphaned_total.inc_by(count);
    Ok(count)
}
