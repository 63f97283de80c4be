//! The JSON shapes of the API (contract §3), each documented in the OpenAPI schema.
//!
//! Rule: wire shapes are built from store rows here and nowhere else; `sfdc_account_id`
//! is always a string and timestamps are integer epoch seconds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{LabPolicy, Sandbox};
use crate::store::{ImportSummary, PoolStats, TrackStats};

/// `POST /allocate` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AllocationView {
    /// The sandbox's id.
    #[schema(example = "2012224")]
    pub sandbox_id: String,
    /// Display name.
    #[schema(example = "lab-adventure-0087")]
    pub name: String,
    /// The provider's id; lab scripts use the part after the last `/`.
    #[schema(example = "identity/accounts/1e96e538-0000-4000-8000-000000000000")]
    pub external_id: String,
    /// Epoch seconds of allocation.
    pub allocated_at: i64,
    /// When the lab ends: `allocated_at` plus the lab duration recorded at allocation
    /// (`LAB_DURATION_HOURS` for allocations another service made).
    pub expires_at: i64,
    /// Salesforce account id, `""` when unknown.
    pub sfdc_account_id: String,
}

impl AllocationView {
    /// The allocation answer for an allocated row, its lab ending as `lab` says.
    pub fn new(row: &Sandbox, lab: LabPolicy) -> Self {
        let allocated_at = row.allocated_at.unwrap_or(row.updated_at);
        Self {
            sandbox_id: row.sandbox_id.clone(),
            name: row.name.clone(),
            external_id: row.external_id.clone(),
            allocated_at,
            expires_at: lab.expires_at(row).unwrap_or(allocated_at),
            sfdc_account_id: row.sfdc_account_id.clone().unwrap_or_default(),
        }
    }
}

/// A sandbox as its owner (`GET /sandboxes/{id}`) or an admin (list) sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SandboxView {
    /// The sandbox's id.
    pub sandbox_id: String,
    /// Display name.
    pub name: String,
    /// The provider's id.
    pub external_id: String,
    /// Lifecycle status.
    #[schema(example = "allocated")]
    pub status: String,
    /// The student key holding it, if any.
    pub allocated_to_track: Option<String>,
    /// Epoch seconds of allocation; null while never allocated.
    pub allocated_at: Option<i64>,
    /// Epoch seconds when the lab ends; null while never allocated.
    pub expires_at: Option<i64>,
    /// The lab slug it was allocated for, if any.
    pub track_name: Option<String>,
    /// Salesforce account id, `""` when unknown.
    pub sfdc_account_id: String,
    /// Epoch seconds when it was released, if it was.
    pub deletion_requested_at: Option<i64>,
}

impl SandboxView {
    /// How `row` looks on the wire, its lab ending as `lab` says.
    pub fn new(row: &Sandbox, lab: LabPolicy) -> Self {
        Self {
            sandbox_id: row.sandbox_id.clone(),
            name: row.name.clone(),
            external_id: row.external_id.clone(),
            status: row.status.as_str().to_owned(),
            allocated_to_track: row.allocated_to_track.clone(),
            allocated_at: row.allocated_at,
            expires_at: lab.expires_at(row),
            track_name: row.track_name.clone(),
            sfdc_account_id: row.sfdc_account_id.clone().unwrap_or_default(),
            deletion_requested_at: row.deletion_requested_at,
        }
    }
}

/// `POST /sandboxes/{id}/mark-for-deletion` answer; a repeat returns the same body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MarkView {
    /// The sandbox's id.
    pub sandbox_id: String,
    /// `pending_deletion`, or a later status when cleanup already ran.
    #[schema(example = "pending_deletion")]
    pub status: String,
    /// Epoch seconds of the first release request.
    pub deletion_requested_at: Option<i64>,
}

impl From<&Sandbox> for MarkView {
    fn from(row: &Sandbox) -> Self {
        Self {
            sandbox_id: row.sandbox_id.clone(),
            status: row.status.as_str().to_owned(),
            deletion_requested_at: row.deletion_requested_at,
        }
    }
}

/// `GET /admin/sandboxes` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SandboxListView {
    /// This page's rows.
    pub sandboxes: Vec<SandboxView>,
    /// Rows on this page.
    pub count: usize,
    /// Pass as `cursor` for the next page; null on the last page.
    pub cursor: Option<String>,
}

/// `GET /admin/stats` answer: exact counts over the whole pool.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// Every row, tombstones included.
    pub total: u64,
    /// Rows `available`.
    pub available: u64,
    /// Rows `allocated`.
    pub allocated: u64,
    /// Rows `pending_deletion`.
    pub pending_deletion: u64,
    /// Rows `stale`.
    pub stale: u64,
    /// Rows `deletion_failed`.
    pub deletion_failed: u64,
    /// Rows `deleted`.
    pub deleted: u64,
}

impl From<PoolStats> for StatsView {
    fn from(stats: PoolStats) -> Self {
        Self {
            total: stats.total(),
            available: stats.available,
            allocated: stats.allocated,
            pending_deletion: stats.pending_deletion,
            stale: stats.stale,
            deletion_failed: stats.deletion_failed,
            deleted: stats.deleted,
        }
    }
}

/// One lab's counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrackView {
    /// The lab slug.
    pub track_name: String,
    /// Rows now `allocated`.
    pub allocated: u64,
    /// Rows now `pending_deletion`.
    pub pending_deletion: u64,
    /// Rows now `deleted`.
    pub deleted: u64,
    /// Every row of this lab.
    pub total: u64,
}

impl From<TrackStats> for TrackView {
    fn from(t: TrackStats) -> Self {
        Self {
            track_name: t.track_name,
            allocated: t.allocated,
            pending_deletion: t.pending_deletion,
            deleted: t.deleted,
            total: t.total,
        }
    }
}

/// `GET /admin/tracks` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TracksView {
    /// Per-lab counts, sorted by track name.
    pub tracks: Vec<TrackView>,
}

/// `POST /admin/sandboxes` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportRequest {
    /// At most 1000 rows.
    pub sandboxes: Vec<ImportRow>,
}

/// A string, or a number sent where a string id was meant (`"sandbox_id": 2012224`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TextOrNumber {
    /// Sent as a string.
    Text(String),
    /// Sent as an integer.
    Number(u64),
}

impl TextOrNumber {
    /// The value as text.
    pub fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Number(number) => number.to_string(),
        }
    }
}

/// One sandbox to import.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportRow {
    /// The sandbox's id (`csp_id` for CSP sandboxes).
    #[schema(value_type = String)]
    pub sandbox_id: TextOrNumber,
    /// Display name.
    pub name: String,
    /// The provider's id, e.g. `identity/accounts/<uuid>`.
    pub external_id: String,
    /// Salesforce account id, if known.
    #[serde(default)]
    pub sfdc_account_id: Option<String>,
}

/// `POST /admin/sandboxes` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportView {
    /// Rows created or refreshed as `available`.
    pub imported: u64,
    /// Rows left alone because they exist in another status.
    pub skipped: u64,
}

impl From<ImportSummary> for ImportView {
    fn from(s: ImportSummary) -> Self {
        Self {
            imported: s.imported,
            skipped: s.skipped,
        }
    }
}

/// Answer of the admin operations that remove rows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkDeleteView {
    /// Always `completed`.
    pub status: String,
    /// Rows removed.
    pub deleted: u64,
    /// Time taken.
    pub duration_ms: u64,
}

/// `GET /healthz` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// Always `healthy`.
    pub status: String,
    /// Epoch seconds now.
    pub timestamp: i64,
}

/// `GET /readyz` answer, 200 or 503.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyView {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Epoch seconds now.
    pub timestamp: i64,
    /// Each dependency's state.
    pub checks: ReadyChecks,
}

/// The checks behind `/readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`, or a short reason such as `unavailable` or `timeout`.
    pub store: String,
    /// On the DynamoDB store, the same answer under the key the Python service used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamodb: Option<String>,
}

/// `GET /` answer, as the Python service gave it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RootView {
    /// `Sandbox Broker API`.
    pub service: String,
    /// This build's version.
    pub version: String,
    /// Where the API docs are.
    pub docs: String,
}

/// The error envelope, defined once beside the error type that renders it.
pub use super::error::ErrorEnvelope;

/// `POST /admin/sync` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncView {
    /// Always `completed`.
    pub status: String,
    /// Provider sandboxes now `available` (new, refreshed or back from `stale`).
    pub synced: u64,
    /// `available` rows the provider no longer lists, now `stale`.
    pub marked_stale: u64,
    /// Of `synced`, rows new to the broker.
    pub added: u64,
    /// Of `synced`, rows back from `stale`.
    pub restored: u64,
    /// Listed sandboxes the broker holds in another status, left alone.
    pub untouched: u64,
    /// Provider rows without a usable `csp_id` or `name`.
    pub skipped: u64,
    /// Time taken.
    pub duration_ms: u64,
}

/// One background job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// `sync`, `cleanup`, `expiry` or `auto_delete_stale`.
    pub job: String,
    /// Whether this instance runs it (sync and cleanup need `CSP_API_TOKEN`).
    pub enabled: bool,
    /// Seconds between scheduled runs.
    pub interval_sec: u64,
    /// The instance holding its lease right now, if any.
    pub lease_holder: Option<String>,
    /// Epoch seconds the lease runs out.
    pub lease_expires_at: Option<i64>,
    /// Epoch seconds the last run started.
    pub last_started_at: Option<i64>,
    /// Epoch seconds the last run ended.
    pub last_finished_at: Option<i64>,
    /// `completed`, `postponed` (provider unavailable) or `failed`.
    pub last_outcome: Option<String>,
    /// The last run's counts.
    pub last_counts: std::collections::BTreeMap<String, u64>,
    /// Epoch seconds of the next scheduled run (as planned by the last run).
    pub next_run_at: Option<i64>,
}

impl JobView {
    /// The view of `job` from its stored record.
    pub fn new(
        job: &str,
        enabled: bool,
        interval: std::time::Duration,
        record: Option<crate::store::JobRecord>,
    ) -> Self {
        let record = record.unwrap_or_default();
        let holding = record.holder.is_some() && record.lease_expires_at_ms > 0;
        Self {
            job: job.to_owned(),
            enabled,
            interval_sec: interval.as_secs(),
            lease_holder: record.holder.filter(|_| holding),
            lease_expires_at: holding.then_some(record.lease_expires_at_ms / 1000),
            last_started_at: record.last_started_at,
            last_finished_at: record.last_finished_at,
            last_outcome: record.last_outcome,
            last_counts: record.last_counts,
            next_run_at: record.next_run_at,
        }
    }
}

/// `GET /admin/jobs` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobsView {
    /// This instance's name in leases.
    pub instance: String,
    /// Every job.
    pub jobs: Vec<JobView>,
}

/// `POST /admin/expire` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExpireView {
    /// Always `completed`.
    pub status: String,
    /// Allocations released to `pending_deletion`.
    pub expired: u64,
    /// Time taken.
    pub duration_ms: u64,
}

/// `POST /admin/auto-delete-stale` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StaleDeleteView {
    /// Always `completed`.
    pub status: String,
    /// Stale rows removed.
    pub deleted: u64,
    /// Time taken.
    pub duration_ms: u64,
    /// The grace applied.
    pub grace_period_hours: f64,
}

/// `POST /admin/cleanup` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CleanupView {
    /// Always `completed`.
    pub status: String,
    /// Sandboxes deleted at the provider, now `deleted` tombstones.
    pub deleted: u64,
    /// Sandboxes that became `deletion_failed` in this run.
    pub failed: u64,
    /// Sandboxes whose deletion failed and will be retried (transient failures do not count).
    pub retrying: u64,
    /// Sandboxes not tried because the provider's circuit breaker is open.
    pub postponed: u64,
    /// Time taken.
    pub duration_ms: u64,
}

/// What the NIOSXaaS pre-delete hook did for a sandbox: its `NIOSXAAS#` history item, with
/// the attribute names the Python service's dashboards read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NiosxaasHistoryView {
    /// The sandbox.
    pub sandbox_id: String,
    /// Its name.
    pub sandbox_name: String,
    /// Its provider id.
    pub external_id: String,
    /// The lab it was last allocated for.
    pub track_name: Option<String>,
    /// The student key that last held it.
    pub allocated_to_track: Option<String>,
    /// Epoch seconds the hook finished cleaning; null in shadow mode or after a failure.
    pub niosxaas_cleaned_at: Option<i64>,
    /// Nothing was deleted: no service matched, or shadow mode.
    pub niosxaas_cleanup_skipped: bool,
    /// Why the hook failed, if it did.
    pub niosxaas_cleanup_failed_reason: Option<String>,
    /// Universal services it matched (deleted unless in shadow mode).
    pub niosxaas_services_matched: u32,
    /// Whether it ran in shadow mode.
    pub niosxaas_shadow_mode: bool,
    /// Epoch seconds the sandbox was deleted at the provider; null when deletion was given up.
    pub deleted_at: Option<i64>,
    /// Epoch seconds after which the item is dropped.
    pub ttl: i64,
}

impl From<crate::domain::NiosxaasHistory> for NiosxaasHistoryView {
    fn from(history: crate::domain::NiosxaasHistory) -> Self {
        Self {
            sandbox_id: history.sandbox_id,
            sandbox_name: history.sandbox_name,
            external_id: history.external_id,
            track_name: history.track_name,
            allocated_to_track: history.allocated_to_track,
            niosxaas_cleaned_at: history.cleanup.niosxaas_cleaned_at,
            niosxaas_cleanup_skipped: history.cleanup.niosxaas_cleanup_skipped,
            niosxaas_cleanup_failed_reason: history.cleanup.niosxaas_cleanup_failed_reason,
            niosxaas_services_matched: history.cleanup.niosxaas_services_matched,
            niosxaas_shadow_mode: history.cleanup.niosxaas_shadow_mode,
            deleted_at: history.deleted_at,
            ttl: history.ttl,
        }
    }
}
