//! The JSON shapes of the usage routes, each an OpenAPI schema.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::usage::{DurationStats, NiosxaasTally, UsageSeries};
use crate::http::handlers::admin::views::NiosxaasHistoryView;

/// One bucket of a usage series.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageBucketView {
    /// Epoch seconds the bucket starts.
    pub start: i64,
    /// Sandboxes allocated in it.
    pub allocated: u64,
    /// Sandboxes released in it (by their student or by expiry).
    pub released: u64,
}

/// Hold-time statistics, in seconds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DurationView {
    /// How many released sandboxes they cover.
    pub count: u64,
    /// Mean hold time (0 when none).
    pub mean_seconds: u64,
    /// Median hold time.
    pub p50_seconds: u64,
    /// 90th percentile hold time.
    pub p90_seconds: u64,
    /// Longest hold time.
    pub max_seconds: u64,
}

impl From<DurationStats> for DurationView {
    fn from(stats: DurationStats) -> Self {
        Self {
            count: stats.count,
            mean_seconds: stats.mean_seconds,
            p50_seconds: stats.p50_seconds,
            p90_seconds: stats.p90_seconds,
            max_seconds: stats.max_seconds,
        }
    }
}

/// `GET /admin/usage` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    /// Epoch seconds the first bucket starts.
    pub from: i64,
    /// Epoch seconds the last bucket ends (after now: the last bucket is the current one).
    pub to: i64,
    /// Seconds per bucket.
    pub bucket_seconds: i64,
    /// The buckets, oldest first.
    pub buckets: Vec<UsageBucketView>,
    /// Allocations in the window.
    pub allocated: u64,
    /// Releases in the window.
    pub released: u64,
    /// Sandboxes allocated now.
    pub held_now: u64,
    /// How long the sandboxes released in the window were held.
    pub lab_duration: DurationView,
}

impl From<UsageSeries> for UsageView {
    fn from(series: UsageSeries) -> Self {
        let window = series.window;
        let buckets = (0..)
            .zip(series.allocated.iter().zip(&series.released))
            .map(|(i, (&allocated, &released))| UsageBucketView {
                start: window.start + i * window.bucket_secs,
                allocated,
                released,
            })
            .collect();
        Self {
            from: window.start,
            to: window.end(),
            bucket_seconds: window.bucket_secs,
            buckets,
            allocated: series.allocated.iter().sum(),
            released: series.released.iter().sum(),
            held_now: series.held_now,
            lab_duration: series.lab_duration.into(),
        }
    }
}

/// How the NIOSXaaS hook's runs ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NiosxaasCountsView {
    /// Runs that removed the account's matching services.
    pub cleaned: u64,
    /// Runs that deleted nothing (no match, or shadow mode).
    pub skipped: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Sandboxes pending deletion: each waits for the hook (0 while it is disabled).
    pub pending: u64,
}

impl NiosxaasCountsView {
    /// The counts of `tally`, with `pending` sandboxes still to go.
    pub fn new(tally: NiosxaasTally, pending: u64) -> Self {
        Self {
            cleaned: tally.cleaned,
            skipped: tally.skipped,
            failed: tally.failed,
            pending,
        }
    }
}

/// `GET /admin/niosxaas` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NiosxaasOverviewView {
    /// Whether the pre-delete hook runs on this instance.
    pub enabled: bool,
    /// Whether it only looks (lists and counts, deletes nothing).
    pub shadow_mode: bool,
    /// Its circuit breaker: `closed`, `open` or `half_open`; null while disabled.
    pub breaker: Option<String>,
    /// Counts over every unexpired history item, and the sandboxes still pending.
    pub counts: NiosxaasCountsView,
    /// How many history items there are (the records below are the newest `limit`).
    pub total_records: usize,
    /// History items, most recently deleted first.
    pub records: Vec<NiosxaasHistoryView>,
}
