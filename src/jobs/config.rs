//! The jobs' settings: how often each runs, how the cleanup paces itself, and the leases.

use std::time::Duration;

use clap::Args;

use super::Schedule;
use super::cleanup::CleanupSettings;
use crate::config_values::{as_usize, parse_fractional_seconds, parse_seconds};
use crate::domain::LabPolicy;
use crate::domain::audit::AuditRules;
use crate::domain::deletion::DeletionPolicy;
use crate::domain::lifecycle::SyncRules;

/// Every job's interval, the cleanup's pacing and retries, and the lease (docs/api.md and `.env.example`).
#[derive(Debug, Clone, Args)]
pub struct JobsConfig {
    /// Seconds between provider syncs.
    #[arg(long, env = "SYNC_INTERVAL_SEC", value_name = "SYNC_INTERVAL_SEC", default_value = "600", value_parser = parse_seconds)]
    pub sync_interval: Duration,

    /// Seconds a sync triggered by an exhausted pool (a request waiting with `Prefer:
    /// wait`) waits after the last sync started anywhere in the fleet.
    #[arg(long, env = "SYNC_MIN_GAP_SEC", value_name = "SYNC_MIN_GAP_SEC", default_value = "30", value_parser = parse_seconds)]
    pub sync_min_gap: Duration,

    /// Seconds between cleanup runs (deletion at the provider).
    #[arg(long, env = "CLEANUP_INTERVAL_SEC", value_name = "CLEANUP_INTERVAL_SEC", default_value = "300", value_parser = parse_seconds)]
    pub cleanup_interval: Duration,

    /// Sandboxes deleted per batch.
    #[arg(long, env = "CLEANUP_BATCH_SIZE", value_name = "CLEANUP_BATCH_SIZE", default_value = "10", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub cleanup_batch_size: u32,

    /// Seconds to wait between batches (fractions allowed).
    #[arg(long, env = "CLEANUP_BATCH_DELAY_SEC", value_name = "CLEANUP_BATCH_DELAY_SEC", default_value = "2.0", value_parser = parse_fractional_seconds)]
    pub cleanup_batch_delay: Duration,

    /// Seconds to wait between two sandboxes of a batch (fractions allowed).
    #[arg(long, env = "CLEANUP_PER_SANDBOX_DELAY_SEC", value_name = "CLEANUP_PER_SANDBOX_DELAY_SEC", default_value = "0.0", value_parser = parse_fractional_seconds)]
    pub cleanup_per_sandbox_delay: Duration,

    /// Permanent provider refusals before a sandbox becomes `deletion_failed`.
    #[arg(long, env = "DELETION_RETRY_MAX_ATTEMPTS", value_name = "DELETION_RETRY_MAX_ATTEMPTS", default_value = "3", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub deletion_retry_max_attempts: u32,

    /// First retry delay (seconds) after a failed deletion; doubles per try, up to an hour.
    #[arg(long, env = "DELETION_RETRY_BACKOFF_SEC", value_name = "DELETION_RETRY_BACKOFF_SEC", default_value = "60", value_parser = parse_seconds)]
    pub deletion_retry_backoff: Duration,

    /// Hours of transient failures after which a sandbox becomes `deletion_failed`.
    #[arg(long, env = "DELETION_GIVE_UP_HOURS", value_name = "DELETION_GIVE_UP_HOURS", default_value = "24", value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub deletion_give_up_hours: u32,

    /// Days a `deleted` tombstone stays visible to its owner (its `ttl`).
    #[arg(long, env = "DELETED_TTL_DAYS", value_name = "DELETED_TTL_DAYS", default_value = "30", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub deleted_ttl_days: u32,

    /// Seconds between scheduled stale removals (the first comes soon after start-up).
    #[arg(long, env = "AUTO_DELETE_STALE_INTERVAL_SEC", value_name = "AUTO_DELETE_STALE_INTERVAL_SEC", default_value = "86400", value_parser = parse_seconds)]
    pub auto_delete_stale_interval: Duration,

    /// Hours a row stays `stale` before the scheduled job removes it.
    #[arg(long, env = "AUTO_DELETE_STALE_GRACE_HOURS", value_name = "AUTO_DELETE_STALE_GRACE_HOURS", default_value = "24", value_parser = clap::value_parser!(u32).range(0..=87_600))]
    pub auto_delete_stale_grace_hours: u32,

    /// Seconds between auto-expiry runs.
    #[arg(long, env = "AUTO_EXPIRY_INTERVAL_SEC", value_name = "AUTO_EXPIRY_INTERVAL_SEC", default_value = "300", value_parser = parse_seconds)]
    pub auto_expiry_interval: Duration,

    /// Largest share (0–1) of the available pool one provider listing may mark stale; a
    /// listing beyond it is refused until an admin forces it (`POST /v1/admin/sync?force=true`).
    #[arg(long, env = "SYNC_MAX_STALE_FRACTION", value_name = "SYNC_MAX_STALE_FRACTION", default_value = "0.5", value_parser = parse_fraction)]
    pub sync_max_stale_fraction: f64,

    /// Seconds the provider may still list an account after reporting it deleted; a sync
    /// that lists it later retries the deletion.
    #[arg(long, env = "DELETION_VERIFY_GRACE_SEC", value_name = "DELETION_VERIFY_GRACE_SEC", default_value = "3600", value_parser = parse_seconds)]
    pub deletion_verify_grace: Duration,

    /// Seconds between audits (the auditor reports what is wrong with the pool and repairs nothing).
    #[arg(long, env = "AUDIT_INTERVAL_SEC", value_name = "AUDIT_INTERVAL_SEC", default_value = "300", value_parser = parse_seconds)]
    pub audit_interval: Duration,

    /// Minutes a sandbox may stay pending deletion before the auditor reports it overdue.
    #[arg(long, env = "DELETION_OVERDUE_MINUTES", value_name = "DELETION_OVERDUE_MINUTES", default_value = "60", value_parser = clap::value_parser!(u32).range(1..=525_600))]
    pub deletion_overdue_minutes: u32,

    /// Seconds between runs of the reservations job (it sets sandboxes aside for the
    /// reservations that are holding, and returns those of ended or deleted ones).
    #[arg(long, env = "RESERVATIONS_INTERVAL_SEC", value_name = "RESERVATIONS_INTERVAL_SEC", default_value = "15", value_parser = parse_seconds)]
    pub reservations_interval: Duration,

    /// Minutes before a reservation's `starts_at` that its sandboxes are set aside.
    #[arg(long, env = "RESERVATION_LEAD_MINUTES", value_name = "RESERVATION_LEAD_MINUTES", default_value = "30", value_parser = clap::value_parser!(u32).range(0..=10_080))]
    pub reservation_lead_minutes: u32,

    /// Seconds a job's lease lasts without renewal; a holder that dies is replaced after this.
    #[arg(long, env = "JOB_LEASE_SEC", value_name = "JOB_LEASE_SEC", default_value = "60", value_parser = parse_seconds)]
    pub job_lease: Duration,

    /// This instance's name in job leases (default: host name plus a random suffix).
    #[arg(long, env = "INSTANCE_ID", value_name = "INSTANCE_ID")]
    pub instance_id: Option<String>,
}

/// A share between 0 and 1, e.g. `0.5`.
fn parse_fraction(raw: &str) -> Result<f64, String> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|share| (0.0..=1.0).contains(share))
        .ok_or_else(|| format!("{raw:?} is not a number between 0 and 1"))
}

impl JobsConfig {
    /// When each job runs, and how the cleanup works; `lab` says when allocations expire.
    pub fn schedule(&self, lab: LabPolicy) -> Schedule {
        Schedule {
            sync: self.sync_interval,
            expiry: self.auto_expiry_interval,
            lab_policy: lab,
            cleanup: self.cleanup_interval,
            stale: self.auto_delete_stale_interval,
            stale_grace: Duration::from_secs(u64::from(self.auto_delete_stale_grace_hours) * 3600),
            cleanup_settings: self.cleanup_settings(),
            sync_rules: self.sync_rules(),
            audit: self.audit_interval,
            reservations: self.reservations_interval,
            reservation_lead_secs: self.reservation_lead_secs(),
            audit_rules: AuditRules {
                deletion_overdue_secs: i64::from(self.deletion_overdue_minutes) * 60,
            },
        }
    }

    /// `RESERVATION_LEAD_MINUTES`, in seconds.
    pub fn reservation_lead_secs(&self) -> i64 {
        i64::from(self.reservation_lead_minutes) * 60
    }

    /// How a scheduled sync applies a listing (an admin may force one).
    pub fn sync_rules(&self) -> SyncRules {
        SyncRules {
            max_stale_fraction: self.sync_max_stale_fraction,
            force: false,
            deletion_verify_grace_secs: i64::try_from(self.deletion_verify_grace.as_secs())
                .unwrap_or(i64::MAX),
            deletion: self.cleanup_settings().policy,
        }
    }

    /// The cleanup's batches, pauses and retry policy.
    pub fn cleanup_settings(&self) -> CleanupSettings {
        CleanupSettings {
            batch_size: as_usize(self.cleanup_batch_size),
            batch_delay: self.cleanup_batch_delay,
            per_sandbox_delay: self.cleanup_per_sandbox_delay,
            policy: DeletionPolicy {
                max_attempts: self.deletion_retry_max_attempts,
                backoff_base_secs: i64::try_from(self.deletion_retry_backoff.as_secs())
                    .unwrap_or(i64::MAX),
                give_up_secs: i64::from(self.deletion_give_up_hours) * 3600,
                tombstone_ttl_secs: i64::from(self.deleted_ttl_days) * 86_400,
            },
        }
    }

    /// The name this instance uses in job leases.
    pub fn instance_name(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "broker".into());
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &suffix[..8])
        })
    }
}
