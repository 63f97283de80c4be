//! Provider sync: the provider's active sandboxes become available, vanished ones stale.
//!
//! Rule: only a complete listing is applied — a failed or refused listing changes nothing,
//! so a provider outage can never mark the pool stale.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::domain::now_epoch;
use crate::metrics::Metrics;
use crate::provider::ProviderClient;
use crate::store::Store;

use super::JobError;

/// Lists the provider and applies the listing; counts `synced`, `added`, `restored`,
/// `untouched`, `marked_stale` and `skipped` (provider rows without a usable id or name).
pub async fn run_once(
    provider: &dyn ProviderClient,
    store: &dyn Store,
    metrics: &Metrics,
) -> Result<BTreeMap<String, u64>, JobError> {
    let started = Instant::now();
    let result = async {
        let listing = provider.list_sandboxes().await?;
        let skipped = listing.skipped;
        let summary = store.sync_provider(listing.sandboxes, now_epoch()).await?;
        Ok::<_, JobError>(BTreeMap::from([
            ("synced".to_owned(), summary.synced),
            ("added".to_owned(), summary.added),
            ("restored".to_owned(), summary.restored),
            ("untouched".to_owned(), summary.untouched),
            ("marked_stale".to_owned(), summary.marked_stale),
            ("skipped".to_owned(), skipped),
        ]))
    }
    .await;
    let outcome = match &result {
        Ok(_) => "success",
        Err(JobError::Provider(err)) if err.is_transient() => "postponed",
        Err(_) => "error",
    };
    metrics.sync_total.with_label_values(&[outcome]).inc();
    metrics
        .sync_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    if let Ok(counts) = &result {
        metrics.sync_sandboxes_synced_total.inc_by(counts["synced"]);
        metrics
            .sync_sandboxes_stale_total
            .inc_by(counts["marked_stale"]);
    }
    result
}
