//! Prometheus metrics, owned by one struct so every app (and every test) has its own registry.
//!
//! Rule: the Python service's metric names (docs/metrics.md) are kept exactly; the pool gauges are set
//! from the store's exact counts, taken at most once per `METRICS_POOL_REFRESH_SEC`
//! (`http::recent`), so scrapes never become store load.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

mod http;
mod jobs;
mod lab;
mod lab_slo;
mod provider;
mod readings;
mod webhooks;

pub use self::http::HttpMetrics;
pub use self::jobs::JobMetrics;
pub use self::lab::LabMetrics;
pub use self::lab_slo::{LabLevels, LabSlo};
pub use self::provider::ProviderMetrics;
use self::readings::ReadingGauges;
pub use self::readings::{PrefixForecast, StoreReadings};
pub use self::webhooks::WebhookMetrics;

/// Latency buckets in seconds: dense from 0.5 ms (a group-committed allocation) to 100 ms,
/// then coarse up to 10 s so a stalled store still shows where it sits.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The service's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The HTTP edge's series.
    pub http: HttpMetrics,
    /// The lab routes' series.
    pub lab: LabMetrics,
    /// Per-lab service levels, with a bounded `lab` label.
    pub lab_slo: LabSlo,
    /// The background jobs' series.
    pub jobs: JobMetrics,
    /// The provider's and the NIOSXaaS hook's series.
    pub provider: ProviderMetrics,
    /// The webhook dispatcher's series.
    pub webhooks: WebhookMetrics,
    /// 1 when the last scrape could read the pool counts from the store, else 0.
    store_up: IntGauge,
    readings: ReadingGauges,
}

pub(crate) fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> prometheus::Result<IntCounter> {
    let metric = IntCounter::new(name, help)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub(crate) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub(crate) fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

pub(crate) fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let metric = IntGauge::new(name, help)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Creates every series of `vec` whose label values form a closed set, at zero, so a
/// scrape lists each one before its first event (`rate()` and alerts see 0, not absence).
fn zero(vec: &IntCounterVec, values: &[&str]) {
    for value in values {
        vec.with_label_values(&[value]);
    }
}

/// Job durations: from a quick sync to a slow throttled cleanup.
const JOB_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

pub(crate) fn histogram(
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

pub(crate) fn histogram_vec(
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
            http: HttpMetrics::register(&r)?,
            lab: LabMetrics::register(&r)?,
            lab_slo: LabSlo::register(&r)?,
            jobs: JobMetrics::register(&r)?,
            provider: ProviderMetrics::register(&r)?,
            webhooks: WebhookMetrics::register(&r)?,
            store_up: gauge(
                &r,
                "broker_store_up",
                "1 when the store answered the last scrape",
            )?,
            readings: ReadingGauges::register(&r)?,
            registry: r,
        };
        Ok(metrics)
    }

    /// Adds the store's own series (see [`crate::store::HealthStore::collectors`]).
    pub fn register_store(&self, store: &dyn crate::store::HealthStore) -> prometheus::Result<()> {
        for collector in store.collectors() {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// The Prometheus text exposition. With `Some(readings)` the pool and job gauges are
    /// set from them; with `None` (store unreachable) they keep their last values and
    /// `broker_store_up` is 0, so a store outage never hides the request metrics that
    /// explain it.
    pub fn render(&self, readings: Option<&StoreReadings>) -> Result<String, prometheus::Error> {
        self.store_up.set(i64::from(readings.is_some()));
        if let Some(readings) = readings {
            self.readings.set(readings);
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
