//! Prometheus metrics, owned by one struct so every app (and every test) has its own registry.
//!
//! Rule: the contract's metric names (§3.5) are kept exactly; the pool gauges are set
//! from the store's exact counts, taken at most once per `METRICS_POOL_REFRESH_SEC`
//! (`http::recent`), so scrapes never become store load.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::store::PoolStats;

/// Latency buckets in seconds: dense from 0.5 ms (a group-committed allocation) to 100 ms,
/// then coarse up to 10 s so a stalled store still shows where it sits.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The service's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Allocation requests by `outcome`: `success`, `idempotent`, `no_sandboxes`, `error`.
    pub allocate_total: IntCounterVec,
    /// Allocation requests answered with the key's existing sandbox.
    pub allocate_idempotent_hits_total: IntCounter,
    /// Allocation attempts that lost a race for a candidate and retried (shared stores).
    pub allocate_conflicts_total: IntCounter,
    /// Mark-for-deletion requests by `outcome`: `success`, `not_allocated` (a repeat),
    /// `not_found`, `not_owner`, `error` — the Python service's values.
    pub deletion_marked_total: IntCounterVec,
    /// Every HTTP request by `method`, matched route `endpoint` and `status`.
    pub request_latency_seconds: HistogramVec,
    /// Time the store took to allocate, by `outcome`.
    pub allocation_latency_seconds: HistogramVec,
    /// Requests being served right now.
    pub requests_in_flight: IntGauge,
    /// Client connections open now (at most `MAX_CONNECTIONS`).
    pub connections_open: IntGauge,
    /// Connections answered 503 and closed because `MAX_CONNECTIONS` were open.
    pub connections_shed_total: IntCounter,
    /// Requests refused by the rate limiter.
    pub rate_limited_total: IntCounter,
    /// `broker_auth_failures_total{outcome}`: `rejected` (a missing or wrong token, 401/403)
    /// and `throttled` (refused unread, 429: the address failed too often).
    pub auth_failures_total: IntCounterVec,
    /// Callers with a rate-limit bucket now (at most `RATE_LIMIT_MAX_CALLERS`).
    pub rate_limit_callers: IntGauge,
    /// Provider syncs by `outcome`: `success`, `postponed` (provider unavailable), `error`.
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
    /// `broker_auto_delete_stale_total{outcome}`: scheduled stale-removal runs.
    pub auto_delete_stale_total: IntCounterVec,
    /// `broker_auto_delete_stale_deleted_total`: stale rows it removed.
    pub auto_delete_stale_deleted_total: IntCounter,
    /// Provider calls by `operation` (`list`, `delete`) and `outcome`.
    pub provider_request_duration_seconds: HistogramVec,
    /// Provider circuit breaker: 0 closed, 1 open, 2 half-open.
    pub provider_circuit_state: IntGauge,
    /// `broker_niosxaas_cleanup_total{outcome}`, the Python service's series: `success`
    /// (services deleted), `skipped` (shadow mode or nothing to clean), `failed`, `error`
    /// (not attempted: the hook's breaker is open).
    pub niosxaas_cleanup_total: IntCounterVec,
    /// `broker_niosxaas_services_deleted_total`: universal services deleted (enforce mode).
    pub niosxaas_services_deleted_total: IntCounter,
    /// `broker_niosxaas_auth_total{outcome}`: sign-ins, `success`, `failure` (refused) or
    /// `error` (unreachable, or the breaker open).
    pub niosxaas_auth_total: IntCounterVec,
    /// NIOSXaaS pre-delete hook runs by `mode` (`enforce`, `shadow`) and `outcome`
    /// (`cleaned`, `nothing_to_clean`, `failed`, `postponed`).
    pub niosxaas_cleanups_total: IntCounterVec,
    /// Universal services the hook matched, by `mode`: deleted in `enforce`, only counted in `shadow`.
    pub niosxaas_services_total: IntCounterVec,
    /// NIOSXaaS calls by `operation` (`sign_in`, `account_switch`, `list`, `delete`) and `outcome`.
    pub niosxaas_request_duration_seconds: HistogramVec,
    /// The NIOSXaaS hook's own circuit breaker: 0 closed, 1 open, 2 half-open.
    pub niosxaas_circuit_state: IntGauge,
    /// 1 when the last scrape could read the pool counts from the store, else 0.
    store_up: IntGauge,
    pool: PoolGauges,
}

#[derive(Clone)]
struct PoolGauges {
    available: IntGauge,
    allocated: IntGauge,
    pending_deletion: IntGauge,
    stale: IntGauge,
    deletion_failed: IntGauge,
    total: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let metric = IntCounter::new(name, help)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let metric = IntGauge::new(name, help)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Job durations: from a quick sync to a slow throttled cleanup.
const JOB_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
) -> prometheus::Result<prometheus::Histogram> {
    let metric = prometheus::Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(JOB_BUCKETS.to_vec()),
    )?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let metric = HistogramVec::new(opts, labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let metrics = Self {
            allocate_total: counter_vec(
                &r,
                "broker_allocate_total",
                "Allocation requests by outcome",
                &["outcome"],
            )?,
            allocate_idempotent_hits_total: counter(
                &r,
                "broker_allocate_idempotent_hits_total",
                "Allocations answered with the key's existing sandbox",
            )?,
            allocate_conflicts_total: counter(
                &r,
                "broker_allocate_conflicts_total",
                "Allocation candidates lost to a concurrent request",
            )?,
            deletion_marked_total: counter_vec(
                &r,
                "broker_deletion_marked_total",
                "Mark-for-deletion requests by outcome",
                &["outcome"],
            )?,
            request_latency_seconds: histogram_vec(
                &r,
                "broker_request_latency_seconds",
                "HTTP request latency",
                &["method", "endpoint", "status"],
            )?,
            allocation_latency_seconds: histogram_vec(
                &r,
                "broker_allocation_latency_seconds",
                "Store allocation latency by outcome",
                &["outcome"],
            )?,
            requests_in_flight: gauge(
                &r,
                "broker_requests_in_flight",
                "HTTP requests being served",
            )?,
            connections_open: gauge(
                &r,
                "broker_connections_open",
                "Client connections open (at most MAX_CONNECTIONS)",
            )?,
            connections_shed_total: counter(
                &r,
                "broker_connections_shed_total",
                "Connections answered 503 and closed because MAX_CONNECTIONS were open",
            )?,
            rate_limited_total: counter(
                &r,
                "broker_rate_limited_total",
                "Requests refused by the rate limiter",
            )?,
            auth_failures_total: counter_vec(
                &r,
                "broker_auth_failures_total",
                "Requests refused for their token (rejected) or their address's failures (throttled)",
                &["outcome"],
            )?,
            rate_limit_callers: gauge(
                &r,
                "broker_rate_limit_callers",
                "Callers with a rate-limit bucket (bounded by RATE_LIMIT_MAX_CALLERS)",
            )?,
            store_up: gauge(
                &r,
                "broker_store_up",
                "1 when the store answered the last scrape",
            )?,
            sync_total: counter_vec(
                &r,
                "broker_sync_total",
                "Provider syncs by outcome",
                &["outcome"],
            )?,
            sync_sandboxes_synced_total: counter(
                &r,
                "broker_sync_sandboxes_synced_total",
                "Sandboxes a sync left available",
            )?,
            sync_sandboxes_stale_total: counter(
                &r,
                "broker_sync_sandboxes_stale_total",
                "Sandboxes a sync marked stale",
            )?,
            sync_duration_seconds: histogram(
                &r,
                "broker_sync_duration_seconds",
                "Time a provider sync took",
            )?,
            provider_request_duration_seconds: histogram_vec(
                &r,
                "broker_provider_request_duration_seconds",
                "Provider calls by operation and outcome",
                &["operation", "outcome"],
            )?,
            provider_circuit_state: gauge(
                &r,
                "broker_provider_circuit_state",
                "Provider circuit breaker: 0 closed, 1 open, 2 half-open",
            )?,
            niosxaas_cleanup_total: counter_vec(
                &r,
                "broker_niosxaas_cleanup_total",
                "NIOSXaaS cleanups by outcome (success, skipped, failed, error), as the Python service counted them",
                &["outcome"],
            )?,
            niosxaas_services_deleted_total: counter(
                &r,
                "broker_niosxaas_services_deleted_total",
                "Universal services the NIOSXaaS hook deleted",
            )?,
            niosxaas_auth_total: counter_vec(
                &r,
                "broker_niosxaas_auth_total",
                "NIOSXaaS sign-ins by outcome (success, failure, error)",
                &["outcome"],
            )?,
            niosxaas_cleanups_total: counter_vec(
                &r,
                "broker_niosxaas_cleanups_total",
                "NIOSXaaS pre-delete hook runs by mode and outcome",
                &["mode", "outcome"],
            )?,
            niosxaas_services_total: counter_vec(
                &r,
                "broker_niosxaas_services_total",
                "Universal services the NIOSXaaS hook matched (deleted unless in shadow mode)",
                &["mode"],
            )?,
            niosxaas_request_duration_seconds: histogram_vec(
                &r,
                "broker_niosxaas_request_duration_seconds",
                "NIOSXaaS calls by operation and outcome",
                &["operation", "outcome"],
            )?,
            niosxaas_circuit_state: gauge(
                &r,
                "broker_niosxaas_circuit_state",
                "NIOSXaaS hook circuit breaker: 0 closed, 1 open, 2 half-open",
            )?,
            cleanup_total: counter_vec(
                &r,
                "broker_cleanup_total",
                "Cleanup runs by outcome",
                &["outcome"],
            )?,
            cleanup_deleted_total: counter(
                &r,
                "broker_cleanup_deleted_total",
                "Sandboxes deleted at the provider",
            )?,
            cleanup_failed_total: counter(
                &r,
                "broker_cleanup_failed_total",
                "Sandboxes whose deletion failed for good",
            )?,
            cleanup_duration_seconds: histogram(
                &r,
                "broker_cleanup_duration_seconds",
                "Time a cleanup run took",
            )?,
            expiry_total: counter_vec(
                &r,
                "broker_expiry_total",
                "Auto-expiry runs by outcome",
                &["outcome"],
            )?,
            expiry_orphaned_total: counter(
                &r,
                "broker_expiry_orphaned_total",
                "Allocations released by auto-expiry",
            )?,
            auto_delete_stale_total: counter_vec(
                &r,
                "broker_auto_delete_stale_total",
                "Scheduled removals of long-stale rows, by outcome",
                &["outcome"],
            )?,
            auto_delete_stale_deleted_total: counter(
                &r,
                "broker_auto_delete_stale_deleted_total",
                "Stale rows removed by the scheduled job",
            )?,
            pool: PoolGauges {
                available: gauge(&r, "broker_pool_available", "Sandboxes available")?,
                allocated: gauge(&r, "broker_pool_allocated", "Sandboxes allocated")?,
                pending_deletion: gauge(
                    &r,
                    "broker_pool_pending_deletion",
                    "Sandboxes pending deletion",
                )?,
                stale: gauge(&r, "broker_pool_stale", "Sandboxes stale")?,
                deletion_failed: gauge(
                    &r,
                    "broker_pool_deletion_failed",
                    "Sandboxes whose deletion failed",
                )?,
                total: gauge(
                    &r,
                    "broker_pool_total",
                    "Sandbox rows in the pool, tombstones included",
                )?,
            },
            registry: r,
        };
        metrics.zero_known_series();
        Ok(metrics)
    }

    /// Creates every series whose label values form a closed set, at zero, so a scrape
    /// lists each one before its first event (`rate()` and alerts see 0, not absence).
    fn zero_known_series(&self) {
        let zero = |vec: &IntCounterVec, values: &[&str]| {
            for value in values {
                vec.with_label_values(&[value]);
            }
        };
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
        zero(&self.auth_failures_total, &["rejected", "throttled"]);
        zero(&self.sync_total, &["success", "postponed", "error"]);
        zero(&self.cleanup_total, &["success", "postponed", "error"]);
        zero(&self.expiry_total, &["success", "error"]);
        zero(&self.auto_delete_stale_total, &["success", "error"]);
        zero(
            &self.niosxaas_cleanup_total,
            &["success", "skipped", "failed", "error"],
        );
        zero(&self.niosxaas_auth_total, &["success", "failure", "error"]);
        for mode in ["enforce", "shadow"] {
            self.niosxaas_services_total.with_label_values(&[mode]);
            for outcome in ["cleaned", "nothing_to_clean", "failed", "postponed"] {
                self.niosxaas_cleanups_total
                    .with_label_values(&[mode, outcome]);
            }
        }
    }

    /// Adds the store's own series (see [`crate::store::Store::collectors`]).
    pub fn register_store(&self, store: &dyn crate::store::Store) -> prometheus::Result<()> {
        for collector in store.collectors() {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// The Prometheus text exposition. With `Some(pool)` the pool gauges are set from it;
    /// with `None` (store unreachable) they keep their last values and `broker_store_up` is 0,
    /// so a store outage never hides the request metrics that explain it.
    pub fn render(&self, pool: Option<&PoolStats>) -> Result<String, prometheus::Error> {
        self.store_up.set(i64::from(pool.is_some()));
        if let Some(pool) = pool {
            let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.pool.available.set(to_i64(pool.available));
            self.pool.allocated.set(to_i64(pool.allocated));
            self.pool
                .pending_deletion
                .set(to_i64(pool.pending_deletion));
            self.pool.stale.set(to_i64(pool.stale));
            self.pool.deletion_failed.set(to_i64(pool.deletion_failed));
            self.pool.total.set(to_i64(pool.total()));
        }
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))
    }
}

/// Decrements the in-flight gauge when the request ends, however it ends.
pub struct InFlightGuard(IntGauge);

impl InFlightGuard {
    /// Counts one request in flight until the guard drops.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
