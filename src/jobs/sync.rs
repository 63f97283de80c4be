//! Provider sync: the provider's active sandboxes become available, vanished ones stale.
//!
//! Rule: only a complete, believable listing is applied — a failed listing, or one that
//! would mark more of the pool stale than `SYNC_MAX_STALE_FRACTION` allows (unless an
//! admin forces it), changes nothing, so neither a provider outage nor a glitch that
//! answers an empty list can empty the pool.

use std::time::Instant;

use super::{Fence, JobError};
use crate::domain::lifecycle::SyncRules;
use crate::domain::time::EpochSecs;
use crate::metrics::Metrics;
use crate::provider::ProviderClient;
use crate::store::{LifecycleStore, SyncSummary};

/// Lists the provider and applies the listing: what the store changed, and how many
/// provider rows had no usable id or name.
pub async fn run_once(
    provider: &dyn ProviderClient,
    store: &dyn LifecycleStore,
    metrics: &Metrics,
    fence: &Fence,
    rules: SyncRules,
    now: EpochSecs,
) -> Result<(SyncSummary, u64), JobError> {
    let started = Instant::now();
    let result = async {
        let listing = provider.list_sandboxes().await?;
        let skipped = listing.skipped;
        // The listing may have taken long: a run that lost its lease meanwhile writes nothing.
        fence.check()?;
        let summary = store.sync_provider(listing.sandboxes, rules, now).await??;
        Ok::<_, JobError>((summary, skipped))
    }
    .await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(JobError::Provider(err)) if err.is_transient() => "postponed",
        Err(JobError::ListingRefused(_)) => "refused",
        Err(_) => "error",
    };
    metrics.jobs.sync_total.with_label_values(&[outcome]).inc();
    metrics
        .jobs
        .sync_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Ok((summary, _)) = &result {
        metrics
            .jobs
            .sync_sandboxes_synced_total
            .inc_by(summary.synced);
        metrics
            .jobs
            .sync_sandboxes_stale_total
            .inc_by(summary.marked_stale);
        metrics
            .jobs
            .deletion_unverified_total
            .inc_by(summary.unverified);
    }
    result
}
