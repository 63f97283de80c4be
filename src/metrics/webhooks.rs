//! The webhook dispatcher's series.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{counter_vec, gauge, gauge_vec};

/// Deliveries, what waits, and how long.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// `broker_webhook_deliveries_total{endpoint,outcome}`: attempts by endpoint id and
    /// `delivered`, `failed` (retried) or `given_up`.
    pub deliveries_total: IntCounterVec,
    /// `broker_webhook_pending{endpoint}`: deliveries waiting per endpoint at the last run.
    pub pending: IntGaugeVec,
    /// `broker_webhook_outbox_depth`: events not yet fanned out at the last run (on
    /// DynamoDB: rows holding such events).
    pub outbox_depth: IntGauge,
    /// `broker_webhook_oldest_pending_seconds`: age of the oldest event not yet delivered
    /// (given-up deliveries aside) at the last run; 0 when nothing waits.
    pub oldest_pending_seconds: IntGauge,
}

impl WebhookMetrics {
    /// Registers every series in `r`.
    pub(super) fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            deliveries_total: counter_vec(
                r,
                "broker_webhook_deliveries_total",
                "Webhook delivery attempts by endpoint and outcome",
                &["endpoint", "outcome"],
            )?,
            pending: gauge_vec(
                r,
                "broker_webhook_pending",
                "Webhook deliveries waiting per endpoint at the dispatcher's last run",
                &["endpoint"],
            )?,
            outbox_depth: gauge(
                r,
                "broker_webhook_outbox_depth",
                "Webhook events not yet fanned out to endpoints at the dispatcher's last run",
            )?,
            oldest_pending_seconds: gauge(
                r,
                "broker_webhook_oldest_pending_seconds",
                "Age of the oldest webhook event not yet delivered at the dispatcher's last run",
            )?,
        })
    }
}
