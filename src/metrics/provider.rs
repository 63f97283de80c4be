//! The provider and the NIOSXaaS hook: calls, breakers and cleanups.

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

use super::{counter, counter_vec, gauge, histogram_vec, zero};

/// The provider and the NIOSXaaS hook: calls, breakers and cleanups.
#[derive(Clone)]
pub struct ProviderMetrics {
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
}

impl ProviderMetrics {
    /// Registers every series in `r`, the ones with closed label sets at zero.
    pub(super) fn register(r: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            provider_request_duration_seconds: histogram_vec(
                r,
                "broker_provider_request_duration_seconds",
                "Provider calls by operation and outcome",
                &["operation", "outcome"],
            )?,
            provider_circuit_state: gauge(
                r,
                "broker_provider_circuit_state",
                "Provider circuit breaker: 0 closed, 1 open, 2 half-open",
            )?,
            niosxaas_cleanup_total: counter_vec(
                r,
                "broker_niosxaas_cleanup_total",
                "NIOSXaaS cleanups by outcome (success, skipped, failed, error), as the Python service counted them",
                &["outcome"],
            )?,
            niosxaas_services_deleted_total: counter(
                r,
                "broker_niosxaas_services_deleted_total",
                "Universal services the NIOSXaaS hook deleted",
            )?,
            niosxaas_auth_total: counter_vec(
                r,
                "broker_niosxaas_auth_total",
                "NIOSXaaS sign-ins by outcome (success, failure, error)",
                &["outcome"],
            )?,
            niosxaas_cleanups_total: counter_vec(
                r,
                "broker_niosxaas_cleanups_total",
                "NIOSXaaS pre-delete hook runs by mode and outcome",
                &["mode", "outcome"],
            )?,
            niosxaas_services_total: counter_vec(
                r,
                "broker_niosxaas_services_total",
                "Universal services the NIOSXaaS hook matched (deleted unless in shadow mode)",
                &["mode"],
            )?,
            niosxaas_request_duration_seconds: histogram_vec(
                r,
                "broker_niosxaas_request_duration_seconds",
                "NIOSXaaS calls by operation and outcome",
                &["operation", "outcome"],
            )?,
            niosxaas_circuit_state: gauge(
                r,
                "broker_niosxaas_circuit_state",
                "NIOSXaaS hook circuit breaker: 0 closed, 1 open, 2 half-open",
            )?,
        };
        metrics.zero_known_series();
        Ok(metrics)
    }

    fn zero_known_series(&self) {
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
}
