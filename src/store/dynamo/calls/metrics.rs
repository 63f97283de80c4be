//! The DynamoDB calls' series: attempt latency, retries, deadlines, up, and the gate's.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use crate::store::dynamo::admission::GateMetrics;

/// The calls' own series, registered by the store.
#[derive(Clone)]
pub(super) struct CallMetrics {
    /// Attempts by outcome.
    pub(super) duration: HistogramVec,
    /// Attempts sent again, by reason.
    pub(super) retries: IntCounterVec,
    /// Operations whose deadline ran out, by where.
    pub(super) deadlines: IntCounterVec,
    /// 1 while the table answers usefully.
    pub(super) up: IntGauge,
    /// The admission gate's series.
    pub(super) gate: GateMetrics,
}

/// Latency buckets for single calls: a local emulator answers in a millisecond, a queue
/// or a slow table in seconds.
const CALL_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl CallMetrics {
    /// Creates (not registers) every series; the closed label sets start at 0, so
    /// `rate()` and alerts see zero rather than nothing.
    pub(super) fn new() -> prometheus::Result<Self> {
        let metrics = Self::unset()?;
        for reason in ["throttled", "no_answer", "timeout"] {
            metrics.retries.with_label_values(&[reason]);
        }
        for place in ["queued", "retrying", "racing"] {
            metrics.deadlines.with_label_values(&[place]);
        }
        Ok(metrics)
    }

    fn unset() -> prometheus::Result<Self> {
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(CALL_BUCKETS.to_vec()))
        };
        Ok(Self {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "broker_dynamodb_call_duration_seconds",
                    "DynamoDB call attempts by outcome (ok, conflict, refused, throttled, no_answer, timeout)",
                )
                .buckets(CALL_BUCKETS.to_vec()),
                &["outcome"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "broker_dynamodb_retries_total",
                    "DynamoDB call attempts sent again, by reason (throttled, no_answer, timeout)",
                ),
                &["reason"],
            )?,
            deadlines: IntCounterVec::new(
                Opts::new(
                    "broker_dynamodb_deadline_exceeded_total",
                    "Operations that answered 503 because their deadline ran out, by where (queued, retrying, racing)",
                ),
                &["where"],
            )?,
            up: IntGauge::new(
                "broker_dynamodb_up",
                "1 while DynamoDB gives useful answers, 0 while it is considered down",
            )?,
            gate: GateMetrics {
                queue_depth: IntGauge::new(
                    "broker_dynamodb_queue_depth",
                    "Operations waiting in this process for a turn to call DynamoDB",
                )?,
                in_flight: IntGauge::new(
                    "broker_dynamodb_in_flight",
                    "Operations holding a turn to call DynamoDB",
                )?,
                limit: IntGauge::new(
                    "broker_dynamodb_concurrency_limit",
                    "Operations allowed to call DynamoDB at once (adaptive, at most DDB_MAX_CONCURRENCY)",
                )?,
                queue_wait: histogram(
                    "broker_dynamodb_queue_wait_seconds",
                    "Time operations waited in this process for a turn to call DynamoDB",
                )?,
            },
        })
    }

    /// Every series, for the registry.
    pub(super) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.duration.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.deadlines.clone()),
            Box::new(self.up.clone()),
            Box::new(self.gate.queue_depth.clone()),
            Box::new(self.gate.in_flight.clone()),
            Box::new(self.gate.limit.clone()),
            Box::new(self.gate.queue_wait.clone()),
        ]
    }
}
