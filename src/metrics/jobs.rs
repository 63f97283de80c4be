//! The background jobs: sync, cleanup, expiry and stale removal.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, gauge, histogram, zero};

/// The background jobs: sync, cleanup, expiry and stale removal.
#[derive(Clone)]
pub struct JobMetrics {
    /// Provider syncs by `outcome`: `success`, `postponed` (provider unavailable),
    /// `refused` (an unbelievable listing, not applied), `error`.
    pub sync_total: IntCounterVec,
    /// Provider sandboxes a sync left `available`.
    pub sync_sandboxes_synced_total: IntCounter,
    /// Sandboxes a sync marked `stale`.
    pub sync_sandboxes_stale_total: IntCounter,
    /// Time a sync took.
    pub sync_duration_seconds: prometheus::Histogram,
    /// Cleanup runs by `outcome`: `success`, `postponed` (breaker open), `error`.
    pub cleanup_total: IntCounterVec,
    /// Sandboxes deleted at the provider.
    pub cleanup_deleted_total: IntCounter,
    /// Sandboxes that became `deletion_failed`.
    pub cleanup_failed_total: IntCounter,
    /// Time a cleanup run took.
    pub cleanup_duration_seconds: prometheus::Histogram,
    /// Auto-expiry runs by `outcome`: `success`, `error`.
    pub expiry_total: IntCounterVec,
    /// Allocations auto-expiry released (their owner never did).
    pub expiry_orphaned_total: IntCounter,
    /// `broker_deletion_unverified_total`: deletions the provider reported but contradicted
    /// by still listing the account past `DELETION_VERIFY_GRACE_SEC`.
    pub deletion_unverified_total: IntCounter,
    /// `broker_auto_delete_stale_total{outcome}`: scheduled stale-removal runs.
    pub auto_delete_stale_total: IntCounterVec,
    /// `broker_auto_delete_stale_deleted_total`: stale rows it removed.
    pub auto_delete_stale_deleted_total: IntCounter,
    /// `broker_reservation_short_sandboxes`: sandboxes the holding reservations lacked after
    /// the reservations job's last run on this instance (the pool had too few).
    pub reservations_short: IntGauge,
}

impl JobMetrics {
    /// Registers every series in `r`, the ones with closed label sets at zero.
    pub(super) fn register(r: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            sync_total: counter_vec(
                r,
                "broker_sync_total",
                "Provider syncs by outcome",
                &["outcome"],
            )?,
            sync_sandboxes_synced_total: counter(
                r,
                "broker_sync_sandboxes_synced_total",
                "Sandboxes a sync left available",
            )?,
            sync_sandboxes_stale_total: counter(
                r,
                "broker_sync_sandboxes_stale_total",
                "Sandboxes a sync marked stale",
            )?,
            sync_duration_seconds: histogram(
                r,
                "broker_sync_duration_seconds",
                "Time a provider sync took",
            )?,
            cleanup_total: counter_vec(
                r,
                "broker_cleanup_total",
                "Cleanup runs by outcome",
                &["outcome"],
            )?,
            cleanup_deleted_total: counter(
                r,
                "broker_cleanup_deleted_total",
                "Sandboxes deleted at the provider",
            )?,
            cleanup_failed_total: counter(
                r,
                "broker_cleanup_failed_total",
                "Sandboxes whose deletion failed for good",
            )?,
            cleanup_duration_seconds: histogram(
                r,
                "broker_cleanup_duration_seconds",
                "Time a cleanup run took",
            )?,
            expiry_total: counter_vec(
                r,
                "broker_expiry_total",
                "Auto-expiry runs by outcome",
                &["outcome"],
            )?,
            expiry_orphaned_total: counter(
                r,
                "broker_expiry_orphaned_total",
                "Allocations released by auto-expiry",
            )?,
            deletion_unverified_total: counter(
                r,
                "broker_deletion_unverified_total",
                "Reported deletions a later sync contradicted (the provider still listed the account)",
            )?,
            auto_delete_stale_total: counter_vec(
                r,
                "broker_auto_delete_stale_total",
                "Scheduled removals of long-stale rows, by outcome",
                &["outcome"],
            )?,
            auto_delete_stale_deleted_total: counter(
                r,
                "broker_auto_delete_stale_deleted_total",
                "Stale rows removed by the scheduled job",
            )?,
            reservations_short: gauge(
                r,
                "broker_reservation_short_sandboxes",
                "Sandboxes the holding reservations lacked after the reservations job's last run here",
            )?,
        };
        metrics.zero_known_series();
        Ok(metrics)
    }

    fn zero_known_series(&self) {
        zero(
            &self.sync_total,
            &["success", "postponed", "refused", "error"],
        );
        zero(&self.cleanup_total, &["success", "postponed", "error"]);
        zero(&self.expiry_total, &["success", "error"]);
        zero(&self.auto_delete_stale_total, &["success", "error"]);
    }
}
