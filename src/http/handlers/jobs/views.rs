//! The JSON shapes of the job routes, each an OpenAPI schema.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::time::EpochMillis;
use crate::domain::time::EpochSecs;

/// The `status` of an admin-triggered run's answer: the route answers only once the work
/// is done, so it is always `completed` (kept because the Python service sent it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The run finished.
    #[default]
    Completed,
}

/// `POST /admin/sync` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SyncView {
    /// Always `completed`.
    pub status: RunStatus,
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
    /// Listed accounts the broker handed out before (their rows gone, or stale since):
    /// kept out of the pool.
    pub kept_out: u64,
    /// `deleted` rows the provider still listed past `DELETION_VERIFY_GRACE_SEC`: their
    /// deletion is retried.
    pub unverified: u64,
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
        let holding = record.instance.is_some() && record.lease_expires_at_ms > EpochMillis::new(0);
        Self {
            job: job.to_owned(),
            enabled,
            interval_sec: interval.as_secs(),
            lease_holder: record.instance.filter(|_| holding),
            lease_expires_at: holding.then_some(record.lease_expires_at_ms.secs().get()),
            last_started_at: record.last_started_at.map(EpochSecs::get),
            last_finished_at: record.last_finished_at.map(EpochSecs::get),
            last_outcome: record.last_outcome,
            last_counts: record.last_counts,
            next_run_at: record.next_run_at.map(EpochSecs::get),
        }
    }
}

/// The circuit breakers of this instance: `closed`, `open` or `half_open`, or null where
/// the client is not configured.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BreakersView {
    /// The breaker around the provider (sync and cleanup calls).
    pub provider: Option<String>,
    /// The breaker around the NIOSXaaS pre-delete hook.
    pub niosxaas: Option<String>,
}

/// `GET /admin/jobs` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobsView {
    /// This instance's name in leases.
    pub instance: String,
    /// Every job.
    pub jobs: Vec<JobView>,
    /// This instance's circuit breakers (each instance has its own).
    pub breakers: BreakersView,
}

/// `POST /admin/expire` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExpireView {
    /// Always `completed`.
    pub status: RunStatus,
    /// Allocations released to `pending_deletion`.
    pub expired: u64,
    /// Time taken.
    pub duration_ms: u64,
}

/// `POST /admin/auto-delete-stale` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StaleDeleteView {
    /// Always `completed`.
    pub status: RunStatus,
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
    pub status: RunStatus,
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

/// One thing the auditor found wrong.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ViolationView {
    /// `key_holds_several`, `allocated_missing_at_provider`, `deletion_overdue`,
    /// `deletion_failed` or `deleted_still_listed`.
    pub check: String,
    /// The sandbox, when it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// The student holding it, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "student")]
    pub holder: Option<String>,
    /// What is wrong, for an operator.
    pub detail: String,
}

/// `GET` / `POST /admin/audit` answer: the last audit (or the one just run).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Epoch seconds the audit read the store.
    pub checked_at: i64,
    /// How long it took.
    pub duration_ms: u64,
    /// What it found, at most 1,000 (the counts count them all).
    pub violations: Vec<ViolationView>,
    /// Violations per check, every check present.
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl From<crate::domain::audit::AuditReport> for AuditView {
    fn from(report: crate::domain::audit::AuditReport) -> Self {
        Self {
            checked_at: report.checked_at.get(),
            duration_ms: report.duration_ms,
            violations: report
                .violations
                .into_iter()
                .map(|violation| ViolationView {
                    check: violation.check.as_str().to_owned(),
                    sandbox_id: violation.sandbox_id,
                    holder: violation.holder,
                    detail: violation.detail,
                })
                .collect(),
            counts: report.counts,
        }
    }
}
