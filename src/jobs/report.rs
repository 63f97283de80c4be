//! What a job run is and what it reports: the jobs' names, who triggered a run, its typed
//! counts, and its one log line.

use std::collections::BTreeMap;
use std::time::Duration;

use super::JobError;
use super::cleanup::CleanupCounts;
use crate::store::{JobOutcome, SyncSummary};

/// The one log line of a job run, in the Python service's shape (docs/api.md, *Logs*): `action` =
/// `background_<job>`, `outcome` `success` or `error`; a run that did not complete (its
/// lease could not be taken, or the work failed) is an ERROR line. `result` is ours:
/// `completed`, `postponed` or `failed`.
pub(super) fn log_run(
    job: JobName,
    result: JobOutcome,
    duration: Duration,
    run: &Result<&BTreeMap<String, u64>, &JobError>,
) {
    let action = format!("background_{}", job.as_str());
    let result = result.as_str();
    let latency_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    match run {
        Ok(counts) => {
            tracing::info!(action, outcome = "success", result, job = job.as_str(), latency_ms, counts = ?counts, "{action} completed")
        }
        Err(err) => {
            let error = crate::telemetry::error_chain(*err);
            tracing::error!(
                action,
                outcome = "error",
                result,
                job = job.as_str(),
                latency_ms,
                error,
                "{action} did not complete"
            )
        }
    }
}

/// The jobs, by the names leases and `GET /v1/admin/jobs` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobName {
    /// Provider sync.
    Sync,
    /// Deletion at the provider.
    Cleanup,
    /// Auto-expiry of ended allocations.
    Expiry,
    /// Removal of rows stale for longer than the grace.
    AutoDeleteStale,
    /// The auditor: reports what is wrong with the pool.
    Audit,
    /// Sets sandboxes aside for reservations, and returns them.
    Reservations,
    /// Fans webhook events out and delivers them.
    Webhooks,
}

impl JobName {
    /// Every job.
    pub const ALL: [Self; 7] = [
        Self::Sync,
        Self::Cleanup,
        Self::Expiry,
        Self::AutoDeleteStale,
        Self::Audit,
        Self::Reservations,
        Self::Webhooks,
    ];

    /// The lease and metric name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Cleanup => "cleanup",
            Self::Expiry => "expiry",
            Self::AutoDeleteStale => "auto_delete_stale",
            Self::Audit => crate::domain::audit::AUDIT_JOB,
            Self::Reservations => "reservations",
            Self::Webhooks => "webhooks",
        }
    }

    /// The action-log name of an admin's run of it (the access log's `operation`).
    pub fn admin_action(self) -> &'static str {
        match self {
            Self::Sync => "admin.sync",
            Self::Cleanup => "admin.cleanup",
            Self::Expiry => "admin.expire",
            Self::AutoDeleteStale => "admin.auto_delete_stale",
            Self::Audit => "admin.audit",
            Self::Reservations => "admin.reservations",
            Self::Webhooks => "admin.webhooks",
        }
    }

    /// Whether it needs the provider (and so is off without `CSP_API_TOKEN`).
    pub(super) fn needs_provider(self) -> bool {
        matches!(self, Self::Sync | Self::Cleanup)
    }
}

/// Who asked for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The job's own schedule.
    Scheduled,
    /// An admin, through the API: cleanup then tries every pending row regardless of backoff.
    Admin,
    /// An admin applying a listing a sync would refuse as unbelievable
    /// (`POST /v1/admin/sync?force=true`).
    Forced,
}

/// What one run of a job counted, by name: what the job's record keeps, `GET
/// /v1/admin/jobs` shows and the action log says.
pub trait RunCounts: std::fmt::Debug + Send + Sync {
    /// The counts by name.
    fn named(&self) -> BTreeMap<String, u64>;
}

fn by_name(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs
        .iter()
        .map(|&(name, count)| (name.to_owned(), count))
        .collect()
}

/// What a sync counted: what the store changed, and provider rows without a usable id or
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncCounts {
    /// What the store changed.
    pub summary: SyncSummary,
    /// Provider rows skipped as unusable.
    pub skipped: u64,
}

impl RunCounts for SyncCounts {
    fn named(&self) -> BTreeMap<String, u64> {
        let Self { summary, skipped } = *self;
        by_name(&[
            ("synced", summary.synced),
            ("added", summary.added),
            ("restored", summary.restored),
            ("untouched", summary.untouched),
            ("marked_stale", summary.marked_stale),
            ("kept_out", summary.kept_out),
            ("unverified", summary.unverified),
            ("skipped", skipped),
        ])
    }
}

impl RunCounts for CleanupCounts {
    fn named(&self) -> BTreeMap<String, u64> {
        by_name(&[
            ("deleted", self.deleted),
            ("failed", self.failed),
            ("retrying", self.retrying),
            ("postponed", self.postponed),
            ("skipped", self.skipped),
            ("purged", self.purged),
        ])
    }
}

/// What auto-expiry counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryCounts {
    /// Allocations released.
    pub expired: u64,
}

impl RunCounts for ExpiryCounts {
    fn named(&self) -> BTreeMap<String, u64> {
        by_name(&[("expired", self.expired)])
    }
}

/// What stale removal counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleCounts {
    /// Rows removed.
    pub deleted: u64,
}

impl RunCounts for StaleCounts {
    fn named(&self) -> BTreeMap<String, u64> {
        by_name(&[("deleted", self.deleted)])
    }
}

/// What a run of the reservations job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldingCounts {
    /// Rows set aside for reservations.
    pub held: u64,
    /// Rows returned to the pool (ended or deleted reservations).
    pub returned: u64,
    /// Rows a holding reservation still lacks because the pool had too few.
    pub short: u64,
    /// Ended reservations forgotten.
    pub forgotten: u64,
}

impl RunCounts for HoldingCounts {
    fn named(&self) -> BTreeMap<String, u64> {
        by_name(&[
            ("held", self.held),
            ("returned", self.returned),
            ("short", self.short),
            ("forgotten", self.forgotten),
        ])
    }
}

/// What an audit counted: violations per check, in `domain::audit::Check::ALL`'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCounts {
    /// Violations per check.
    pub violations: [u64; crate::domain::audit::Check::ALL.len()],
}

impl RunCounts for AuditCounts {
    fn named(&self) -> BTreeMap<String, u64> {
        crate::domain::audit::Check::ALL
            .iter()
            .zip(self.violations)
            .map(|(check, count)| (check.as_str().to_owned(), count))
            .collect()
    }
}

/// What a completed run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobReport<C> {
    /// Its counts.
    pub counts: C,
    /// Time the run took.
    pub duration: Duration,
}
