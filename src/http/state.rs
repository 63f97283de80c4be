//! What every request handler may use: the service's shared state.
//!
//! Rule: the state is defined here, at the HTTP edge that reads it, and built by the
//! start-up module (`app`) that wires the layers below, so `http` never depends on it.

use std::ops::Deref;
use std::sync::Arc;

use super::auth::Auth;
use super::recent::Recent;
use super::settings::HttpConfig;
use crate::domain::LabPolicy;
use crate::domain::clock::SharedClock;
use crate::jobs::Jobs;
use crate::metrics::{Metrics, StoreReadings};
use crate::provider::breaker::CircuitBreaker;
use crate::provider::niosxaas::PreDeleteHook;
use crate::ratelimit::RateLimiter;
use crate::ratelimit::failures::FailureThrottle;
use crate::store::SharedStore;

/// Everything a request handler may use.
pub struct App {
    /// The store behind every route.
    pub store: SharedStore,
    /// This instance's metrics registry.
    pub metrics: Metrics,
    /// The edge's settings: listener, route prefix, timeouts, proxies and origins.
    pub http: Arc<HttpConfig>,
    /// When allocations expire.
    pub lab: LabPolicy,
    /// The time every rule the routes apply reads (the jobs read the same one).
    pub clock: SharedClock,
    /// Per-caller token buckets.
    pub rate_limiter: RateLimiter,
    /// The accepted track, admin and metrics tokens.
    pub auth: Auth,
    /// Failed authentications per client address.
    pub auth_failures: FailureThrottle,
    /// The pool counts `/metrics` reports (`None`: the store could not count).
    pub pool_counts: Recent<Option<Arc<StoreReadings>>>,
    /// The store's last readiness answer, reused for a second.
    pub readiness: Recent<&'static str>,
    /// The background jobs (sync, …) and their leases.
    pub jobs: Arc<Jobs>,
    /// The circuit breaker around the provider, when one is configured.
    pub breaker: Option<Arc<CircuitBreaker>>,
    /// The NIOSXaaS pre-delete hook, when enabled.
    pub pre_delete: Option<Arc<PreDeleteHook>>,
}

/// Cheap-to-clone handle on [`App`], the router's state.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}
