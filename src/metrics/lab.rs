//! The lab routes: allocations and releases.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, Registry};

use super::{counter, counter_vec, histogram_vec, zero};

/// The lab routes: allocations and releases.
#[derive(Clone)]
pub struct LabMetrics {
    /// Allocation requests by `outcome`: `success`, `idempotent`, `no_sandboxes`, `error`.
    pub allocate_total: IntCounterVec,
    /// Allocation requests answered with the key's existing sandbox.
    pub allocate_idempotent_hits_total: IntCounter,
    /// Allocation attempts that lost a race for a candidate and retried (shared stores).
    pub allocate_conflicts_total: IntCounter,
    /// Mark-for-deletion requests by `outcome`: `success`, `not_allocated` (a repeat),
    /// `not_found`, `not_owner`, `error` — the Python service's values.
    pub deletion_marked_total: IntCounterVec,
    /// Time the store took to allocate, by `outcome`.
    pub allocation_latency_seconds: HistogramVec,
    /// Allocation requests under a lab token, by the token's `token` name and `outcome`:
    /// `success`, `idempotent`, `no_sandboxes`, `quota_exceeded`, `rate_limited`,
    /// `out_of_scope`, `cordoned`, `error`. At most `MAX_TOKENS` live token names.
    pub token_allocations_total: IntCounterVec,
    /// Allocation requests waiting now (`Prefer: wait`) on this instance.
    pub wait_queue_depth: prometheus::IntGauge,
    /// How long waiting requests waited, by `outcome`: `served`, `timed_out`, `queue_full`.
    pub wait_seconds: HistogramVec,
}

impl LabMetrics {
    /// Registers every series in `r`, the ones with closed label sets at zero.
    pub(super) fn register(r: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            allocate_total: counter_vec(
                r,
                "broker_allocate_total",
                "Allocation requests by outcome",
                &["outcome"],
            )?,
            allocate_idempotent_hits_total: counter(
                r,
                "broker_allocate_idempotent_hits_total",
                "Allocations answered with the key's existing sandbox",
            )?,
            allocate_conflicts_total: counter(
                r,
                "broker_allocate_conflicts_total",
                "Allocation candidates lost to a concurrent request",
            )?,
            deletion_marked_total: counter_vec(
                r,
                "broker_deletion_marked_total",
                "Mark-for-deletion requests by outcome",
                &["outcome"],
            )?,
            allocation_latency_seconds: histogram_vec(
                r,
                "broker_allocation_latency_seconds",
                "Store allocation latency by outcome",
                &["outcome"],
            )?,
            token_allocations_total: counter_vec(
                r,
                "broker_token_allocations_total",
                "Allocation requests under a lab token by token name and outcome",
                &["token", "outcome"],
            )?,
            wait_queue_depth: super::gauge(
                r,
                "broker_wait_queue_depth",
                "Allocation requests waiting for a sandbox (Prefer: wait) on this instance",
            )?,
            wait_seconds: histogram_vec(
                r,
                "broker_wait_seconds",
                "Time allocation requests waited for a sandbox, by outcome",
                &["outcome"],
            )?,
        };
        metrics.zero_known_series();
        Ok(metrics)
    }

    fn zero_known_series(&self) {
        let allocate = ["success", "idempotent", "no_sandboxes", "error"];
        zero(&self.allocate_total, &allocate);
        for outcome in allocate {
            self.allocation_latency_seconds
                .with_label_values(&[outcome]);
        }
        let mark = [
            "success",
            "not_allocated",
            "not_found",
            "not_owner",
            "error",
        ];
        zero(&self.deletion_marked_total, &mark);
    }
}
