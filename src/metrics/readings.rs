//! The series a scrape sets from what it read of the store: pool counts (whole pool and
//! per configured name prefix) and the jobs' shared records, so every instance of a fleet
//! reports the same truth about the pool and about when each job last ran.

use prometheus::{GaugeVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::{gauge, gauge_vec};
use crate::domain::NamePrefix;
use crate::domain::audit::{AUDIT_JOB, Check};
use crate::domain::usage::time_to_empty;
use crate::store::{JobOutcome, JobRecord, PoolStats};

/// What a scrape read from the store (at most once per `METRICS_POOL_REFRESH_SEC`).
#[derive(Debug, Clone, Default)]
pub struct StoreReadings {
    /// Exact counts by status.
    pub pool: PoolStats,
    /// Available sandboxes per configured prefix (`METRICS_POOL_PREFIXES` and
    /// `POOL_LOW_WATERMARKS`).
    pub available_by_prefix: Vec<(NamePrefix, u64)>,
    /// The forecast of each prefix with a watermark.
    pub forecasts: Vec<PrefixForecast>,
    /// Each job's lease and last run, as the store keeps them for the fleet.
    pub jobs: Vec<JobRecord>,
}

/// A name prefix's forecast: how fast its sandboxes go, and whether it is below its mark.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixForecast {
    /// The prefix.
    pub prefix: NamePrefix,
    /// Sandboxes available.
    pub available: u64,
    /// Allocations a second over the last 15 minutes.
    pub rate: f64,
    /// Its low watermark.
    pub watermark: u64,
}

#[derive(Clone)]
pub(super) struct ReadingGauges {
    available: IntGauge,
    allocated: IntGauge,
    pending_deletion: IntGauge,
    stale: IntGauge,
    deletion_failed: IntGauge,
    quarantined: IntGauge,
    reserved: IntGauge,
    total: IntGauge,
    available_by_prefix: IntGaugeVec,
    job_last_finished: IntGaugeVec,
    job_next_run: IntGaugeVec,
    job_last_outcome: IntGaugeVec,
    audit_violations: IntGaugeVec,
    allocation_rate: GaugeVec,
    time_to_empty: GaugeVec,
    below_watermark: IntGaugeVec,
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
        let float_gauges = |name: &str, help: &str| {
            let metric = GaugeVec::new(Opts::new(name, help), &["prefix"])?;
            r.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        Ok(Self {
            allocation_rate: float_gauges(
                "broker_pool_allocation_rate",
                "Allocations a second of sandboxes named with the prefix, over the last 15 minutes (POOL_LOW_WATERMARKS)",
            )?,
            time_to_empty: float_gauges(
                "broker_pool_time_to_empty_seconds",
                "Seconds until the prefix's available sandboxes run out at the last 15 minutes' rate (+Inf while none are taken)",
            )?,
            below_watermark: gauge_vec(
                r,
                "broker_pool_below_watermark",
                "1 while fewer sandboxes of the prefix are available than its POOL_LOW_WATERMARKS count",
                &["prefix"],
            )?,
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
            reserved: gauge(
                r,
                "broker_pool_reserved",
                "Sandboxes set aside for reservations",
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
        self.reserved.set(to_i64(pool.reserved));
        self.total.set(to_i64(pool.total()));
        for (prefix, count) in &readings.available_by_prefix {
            self.available_by_prefix
                .with_label_values(&[prefix.as_str()])
                .set(to_i64(*count));
        }
        for forecast in &readings.forecasts {
            let prefix = forecast.prefix.as_str();
            self.allocation_rate
                .with_label_values(&[prefix])
                .set(forecast.rate);
            self.time_to_empty
                .with_label_values(&[prefix])
                .set(time_to_empty(forecast.available, forecast.rate));
            let below = forecast.available < forecast.watermark;
            let gauge = self.below_watermark.with_label_values(&[prefix]);
            if below && gauge.get() == 0 {
                tracing::warn!(
                    prefix,
                    available = forecast.available,
                    watermark = forecast.watermark,
                    "pool below its low watermark"
                );
            } else if !below && gauge.get() == 1 {
                tracing::info!(
                    prefix,
                    available = forecast.available,
                    watermark = forecast.watermark,
                    "pool back above its low watermark"
                );
            }
            gauge.set(i64::from(below));
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
