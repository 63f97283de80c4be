//! The series a scrape sets from what it read of the store: pool counts (whole pool and
//! per configured name prefix) and the jobs' shared records, so every instance of a fleet
//! reports the same truth about the pool and about when each job last ran.

use prometheus::{IntGauge, IntGaugeVec, Registry};

use super::{gauge, gauge_vec};
use crate::domain::NamePrefix;
use crate::domain::audit::{AUDIT_JOB, Check};
use crate::store::{JobOutcome, JobRecord, PoolStats};

/// What a scrape read from the store (at most once per `METRICS_POOL_REFRESH_SEC`).
#[derive(Debug, Clone, Default)]
pub struct StoreReadings {
    /// Exact counts by status.
    pub pool: PoolStats,
    /// Available sandboxes per configured prefix (`METRICS_POOL_PREFIXES`).
    pub available_by_prefix: Vec<(NamePrefix, u64)>,
    /// Each job's lease and last run, as the store keeps them for the fleet.
    pub jobs: Vec<JobRecord>,
}

#[derive(Clone)]
pub(super) struct ReadingGauges {
    available: IntGauge,
    allocated: IntGauge,
    pending_deletion: IntGauge,
    stale: IntGauge,
    deletion_failed: IntGauge,
    quarantined: IntGauge,
    total: IntGauge,
    available_by_prefix: IntGaugeVec,
    job_last_finished: IntGaugeVec,
    job_next_run: IntGaugeVec,
    job_last_outcome: IntGaugeVec,
    audit_violations: IntGaugeVec,
}

impl ReadingGauges {
    pub(super) fn register(r: &Registry) -> prometheus::Result<Self> {
        let audit_violations = gauge_vec(
            r,
            "broker_audit_violations",
            "Violations the last audit (on any instance) found, per check",
            &["check"],
        )?;
        for check in Check::ALL {
            audit_violations.with_label_values(&[check.as_str()]).set(0);
        }
        Ok(Self {
            audit_violations,
            available: gauge(r, "broker_pool_available", "Sandboxes available")?,
            allocated: gauge(r, "broker_pool_allocated", "Sandboxes allocated")?,
            pending_deletion: gauge(
                r,
                "broker_pool_pending_deletion",
                "Sandboxes pending deletion",
            )?,
            stale: gauge(r, "broker_pool_stale", "Sandboxes stale")?,
            quarantined: gauge(
                r,
                "broker_pool_quarantined",
                "Sandboxes an admin quarantined",
            )?,
            deletion_failed: gauge(
                r,
                "broker_pool_deletion_failed",
                "Sandboxes whose deletion failed",
            )?,
            total: gauge(
                r,
                "broker_pool_total",
                "Sandbox rows in the pool, tombstones included",
            )?,
            available_by_prefix: gauge_vec(
                r,
                "broker_pool_available_by_prefix",
                "Sandboxes available whose name starts with the prefix (METRICS_POOL_PREFIXES)",
                &["prefix"],
            )?,
            job_last_finished: gauge_vec(
                r,
                "broker_job_last_finished_timestamp_seconds",
                "When the job's last run ended, on any instance (epoch seconds)",
                &["job"],
            )?,
            job_next_run: gauge_vec(
                r,
                "broker_job_next_run_timestamp_seconds",
                "When the job is next due, on any instance (epoch seconds)",
                &["job"],
            )?,
            job_last_outcome: gauge_vec(
                r,
                "broker_job_last_outcome",
                "1 for the outcome of the job's last run (completed, failed, postponed, refused), else 0",
                &["job", "outcome"],
            )?,
        })
    }

    pub(super) fn set(&self, readings: &StoreReadings) {
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let pool = &readings.pool;
        self.available.set(to_i64(pool.available));
        self.allocated.set(to_i64(pool.allocated));
        self.pending_deletion.set(to_i64(pool.pending_deletion));
        self.stale.set(to_i64(pool.stale));
        self.deletion_failed.set(to_i64(pool.deletion_failed));
        self.quarantined.set(to_i64(pool.quarantined));
        self.total.set(to_i64(pool.total()));
        for (prefix, count) in &readings.available_by_prefix {
            self.available_by_prefix
                .with_label_values(&[prefix.as_str()])
                .set(to_i64(*count));
        }
        for record in &readings.jobs {
            let job = record.job.as_str();
            if let Some(at) = record.last_finished_at {
                self.job_last_finished
                    .with_label_values(&[job])
                    .set(at.get());
            }
            if let Some(at) = record.next_run_at {
                self.job_next_run.with_label_values(&[job]).set(at.get());
            }
            if job == AUDIT_JOB {
                for check in Check::ALL {
                    let count = record.last_counts.get(check.as_str()).copied();
                    self.audit_violations
                        .with_label_values(&[check.as_str()])
                        .set(to_i64(count.unwrap_or(0)));
                }
            }
            if let Some(last) = record.last_outcome.as_deref() {
                for outcome in JobOutcome::ALL.map(JobOutcome::as_str) {
                    self.job_last_outcome
                        .with_label_values(&[job, outcome])
                        .set(i64::from(outcome == last));
                }
            }
        }
    }
}
