//! The HTTP edge: requests, connections, the rate limit and authentication failures.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, gauge, histogram_vec, zero};

/// The HTTP edge: requests, connections, the rate limit and authentication failures.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Every HTTP request by `method`, matched route `endpoint` and `status`.
    pub request_latency_seconds: HistogramVec,
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
    /// Admin writes that were done but could not be recorded in the action log.
    pub admin_actions_unrecorded_total: IntCounter,
}

impl HttpMetrics {
    /// Registers every series in `r`, the ones with closed label sets at zero.
    pub(super) fn register(r: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            request_latency_seconds: histogram_vec(
                r,
                "broker_request_latency_seconds",
                "HTTP request latency",
                &["method", "endpoint", "status"],
            )?,
            requests_in_flight: gauge(
                r,
                "broker_requests_in_flight",
                "HTTP requests being served",
            )?,
            connections_open: gauge(
                r,
                "broker_connections_open",
                "Client connections open (at most MAX_CONNECTIONS)",
            )?,
            connections_shed_total: counter(
                r,
                "broker_connections_shed_total",
                "Connections answered 503 and closed because MAX_CONNECTIONS were open",
            )?,
            rate_limited_total: counter(
                r,
                "broker_rate_limited_total",
                "Requests refused by the rate limiter",
            )?,
            auth_failures_total: counter_vec(
                r,
                "broker_auth_failures_total",
                "Requests refused for their token (rejected) or their address's failures (throttled)",
                &["outcome"],
            )?,
            rate_limit_callers: gauge(
                r,
                "broker_rate_limit_callers",
                "Callers with a rate-limit bucket (bounded by RATE_LIMIT_MAX_CALLERS)",
            )?,
            admin_actions_unrecorded_total: counter(
                r,
                "broker_admin_actions_unrecorded_total",
                "Admin writes done but not recorded in the action log (the store refused the entry)",
            )?,
        };
        metrics.zero_known_series();
        Ok(metrics)
    }

    fn zero_known_series(&self) {
        zero(&self.auth_failures_total, &["rejected", "throttled"]);
    }
}
