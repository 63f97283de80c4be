//! Provider call metrics: latency and outcome of every call that reaches the provider.
//!
//! Rule: it sits inside the circuit breaker, so calls the breaker refuses are not counted
//! as provider calls (the breaker's state gauge shows those).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{ProviderClient, ProviderError, ProviderListing};
use crate::metrics::Metrics;

/// Records `broker_provider_request_duration_seconds{operation,outcome}` per call.
pub struct Instrumented {
    inner: Arc<dyn ProviderClient>,
    metrics: Metrics,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ProviderClient>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, ProviderError>) {
        let outcome = ProviderError::outcome_label(result);
        self.metrics
            .provider
            .provider_request_duration_seconds
            .with_label_values(&[operation, outcome])
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl ProviderClient for Instrumented {
    async fn list_sandboxes(&self) -> Result<ProviderListing, ProviderError> {
        let started = Instant::now();
        let result = self.inner.list_sandboxes().await;
        self.record("list", started, &result);
        result
    }

    async fn delete_sandbox(&self, external_id: &str) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.delete_sandbox(external_id).await;
        self.record("delete", started, &result);
        result
    }
}
