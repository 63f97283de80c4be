//! What every request handler may use: the service's shared state.
//!
//! Rule: the state is defined here, at the HTTP edge that reads it, and built by the
//! start-up module (`app`) that wires the layers below, so `http` never depends on it.

use std::ops::Deref;
use std::sync::Arc;

use super::auth::{Auth, LabTokens};
use super::config::HttpConfig;
use super::recent::Recent;
use crate::domain::clock::SharedClock;
use crate::domain::cordon::Cordon;
use crate::domain::reservations::Reservation;
use crate::domain::time::EpochSecs;
use crate::domain::tokens::LabToken;
use crate::domain::usage::AllocationFacts;
use crate::domain::usage::allocation_rate;
use crate::domain::{LabPolicy, NiosxaasHistory};
use crate::jobs::Jobs;
use crate::metrics::{Metrics, PrefixForecast, StoreReadings};
use crate::provider::breaker::GuardedProvider;
use crate::provider::niosxaas::PreDeleteHook;
use crate::ratelimit::RateLimiter;
use crate::ratelimit::failures::FailureThrottle;
use crate::store::{SharedStore, StoreError};

/// How long an instance reuses the cordons it read: a cordon holds across a fleet within it.
pub const CORDONS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// How long an instance reuses the reservations it read: a reservation made or deleted on
/// one instance is drawn on (or no more) across the fleet within it.
pub const RESERVATIONS_REFRESH: std::time::Duration = std::time::Duration::from_secs(4);

/// Everything a request handler may use.
pub struct Services {
    /// The store behind every route.
    pub store: SharedStore,
    /// This instance's metrics registry.
    pub metrics: Metrics,
    /// The edge's settings: listener, route prefix, timeouts, proxies and origins.
    pub http: Arc<HttpConfig>,
    /// When allocations expire.
    pub lab_policy: LabPolicy,
    /// The time every rule the routes apply reads (the jobs read the same one).
    pub clock: SharedClock,
    /// Per-caller token buckets.
    pub rate_limiter: RateLimiter,
    /// Per-address token buckets of the track routes.
    pub address_limiter: RateLimiter,
    /// The accepted track, admin and metrics tokens.
    pub auth: Auth,
    /// Failed authentications per client address.
    pub auth_failures: FailureThrottle,
    /// The pool counts `/metrics` reports (`None`: the store could not count).
    pub pool_counts: Recent<Option<Arc<StoreReadings>>>,
    /// The store's last readiness answer, reused for a second.
    pub readiness: Recent<&'static str>,
    /// Every handed-out row's allocation facts (`/admin/tracks`, `/admin/usage`), read
    /// at most once per `ANALYTICS_CACHE_SEC` however many dashboards are open.
    pub allocation_facts: Recent<Arc<Vec<AllocationFacts>>>,
    /// The NIOSXaaS history items (`/admin/niosxaas`), shared the same way.
    pub niosxaas_histories: Recent<Arc<Vec<NiosxaasHistory>>>,
    /// The cordons in place, read at most once per [`CORDONS_REFRESH`], so a cordon put in
    /// place on one instance holds across the fleet within that time.
    pub cordons: Recent<Arc<Vec<Cordon>>>,
    /// The lab tokens, read at most once per [`LAB_TOKENS_REFRESH`](super::auth::LAB_TOKENS_REFRESH), so a token minted or
    /// revoked on one instance holds across the fleet within that time.
    pub lab_tokens: Recent<Arc<LabTokens>>,
    /// The reservations, read at most once per [`RESERVATIONS_REFRESH`]: which one a lab's
    /// allocation draws on first.
    pub reservations: Recent<Arc<Vec<Reservation>>>,
    /// `RESERVATION_LEAD_MINUTES`, in seconds: reservations hold (and are drawn on) from
    /// this long before their start.
    pub reservation_lead_secs: i64,
    /// Posts signed webhook events.
    pub deliverer: crate::webhooks::Deliverer,
    /// `MAX_WEBHOOKS`: endpoints at most.
    pub max_webhooks: usize,
    /// Allocation requests waiting for a sandbox (`Prefer: wait`).
    pub waiting: Arc<crate::allocation::waiting::WaitingRoom>,
    /// `SYNC_MIN_GAP_SEC`: the least time between syncs an exhausted pool triggers.
    pub sync_min_gap: std::time::Duration,
    /// When this instance last triggered a sync for an exhausted pool.
    pub exhaustion_sync: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Each lab token's own `per_minute` bucket on this instance.
    pub token_rates: crate::ratelimit::TokenRates,
    /// When this instance last recorded each lab token's use (at most once a minute each).
    pub lab_token_touches: std::sync::Mutex<std::collections::HashMap<String, EpochSecs>>,
    /// The background jobs (sync, …) and their leases.
    pub jobs: Arc<Jobs>,
    /// The circuit breaker around the provider, when one is configured.
    pub breaker: Option<Arc<GuardedProvider>>,
    /// The NIOSXaaS pre-delete hook, when enabled.
    pub pre_delete: Option<Arc<PreDeleteHook>>,
}

/// Cheap-to-clone handle on [`Services`], the router's state.
#[derive(Clone)]
pub struct AppState(pub Arc<Services>);

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

impl Services {
    /// What `/metrics` reads of the store — the pool counts, the configured prefixes'
    /// available counts, the job records and, for prefixes with a low watermark, the
    /// forecast (from the handed-out rows' facts, shared with the dashboard's analytics) —
    /// at most once per `METRICS_POOL_REFRESH_SEC` (`None` while the store cannot be read).
    pub async fn store_readings(&self) -> Option<Arc<StoreReadings>> {
        self.pool_counts
            .get(|| async {
                let marks = &self.http.pool_low_watermarks.0;
                let mut prefixes = self.http.metrics_pool_prefixes.0.clone();
                for (prefix, _) in marks {
                    if !prefixes.contains(prefix) {
                        prefixes.push(prefix.clone());
                    }
                }
                let facts = async {
                    if marks.is_empty() {
                        Ok(Arc::new(Vec::new()))
                    } else {
                        self.shared_allocation_facts().await
                    }
                };
                let read = tokio::try_join!(
                    self.store.analytics.stats(),
                    self.store.analytics.available_by_prefix(&prefixes),
                    self.store.jobs.job_records(),
                    facts,
                );
                match read {
                    Ok((pool, by_prefix, jobs, facts)) => {
                        let available_by_prefix: Vec<_> =
                            prefixes.iter().cloned().zip(by_prefix).collect();
                        let now = self.clock.now();
                        let forecasts = marks
                            .iter()
                            .map(|(prefix, watermark)| PrefixForecast {
                                prefix: prefix.clone(),
                                available: available_by_prefix
                                    .iter()
                                    .find(|(p, _)| p == prefix)
                                    .map_or(0, |(_, n)| *n),
                                rate: allocation_rate(&facts, prefix.as_str(), now),
                                watermark: *watermark,
                            })
                            .collect();
                        Some(Arc::new(StoreReadings {
                            pool,
                            available_by_prefix,
                            forecasts,
                            jobs,
                        }))
                    }
                    Err(err) => {
                        tracing::warn!(error = ?err, "metrics: pool counts unavailable");
                        None
                    }
                }
            })
            .await
    }

    /// The cordons in place (at most [`CORDONS_REFRESH`] old).
    pub async fn current_cordons(&self) -> Result<Arc<Vec<Cordon>>, StoreError> {
        self.cordons
            .try_get(|| async { self.store.admin.cordons().await.map(Arc::new) })
            .await
    }

    /// The reservations (at most [`RESERVATIONS_REFRESH`] old).
    pub async fn current_reservations(&self) -> Result<Arc<Vec<Reservation>>, StoreError> {
        self.reservations
            .try_get(|| async { self.store.reservations.reservations().await.map(Arc::new) })
            .await
    }

    /// The lab tokens (at most [`LAB_TOKENS_REFRESH`](super::auth::LAB_TOKENS_REFRESH) old).
    pub async fn current_lab_tokens(&self) -> Result<Arc<LabTokens>, StoreError> {
        self.lab_tokens
            .try_get(|| async {
                self.store
                    .tokens
                    .tokens()
                    .await
                    .map(|t| Arc::new(LabTokens::of(t)))
            })
            .await
    }

    /// Records that `token` was presented now: in the store at most once a minute per
    /// instance, in the background, so no request waits for it.
    pub fn used_lab_token(&self, token: &LabToken) {
        let now = self.clock.now();
        {
            let mut touches = self
                .lab_token_touches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if touches.get(&token.id).is_some_and(|at| now - *at < 60) {
                return;
            }
            touches.insert(token.id.clone(), now);
        }
        let (store, id) = (Arc::clone(&self.store.tokens), token.id.clone());
        tokio::spawn(async move {
            if let Err(err) = store.touch_token(&id, now).await {
                tracing::warn!(token.id = %id, error = %crate::telemetry::error_chain(&err), "could not record a lab token's use");
            }
        });
    }

    /// An exhausted pool asks for a sync now: at most once per `SYNC_MIN_GAP_SEC` from this
    /// instance, and not when a sync started anywhere in the fleet within that gap (its
    /// record says). Runs in the background, under the sync's lease; the waiting requests
    /// are told when it ends.
    pub fn sync_soon(&self) {
        let gap = self.sync_min_gap;
        {
            let mut last = self
                .exhaustion_sync
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < gap) {
                return;
            }
            *last = Some(tokio::time::Instant::now());
        }
        let (jobs, waiting, now) = (
            Arc::clone(&self.jobs),
            Arc::clone(&self.waiting),
            self.clock.now(),
        );
        tokio::spawn(async move {
            let recent = jobs.records().await.ok().and_then(|records| {
                records
                    .into_iter()
                    .find(|(job, ..)| *job == crate::jobs::JobName::Sync)
                    .and_then(|(.., record)| record?.last_started_at)
            });
            let gap_secs = i64::try_from(gap.as_secs()).unwrap_or(i64::MAX);
            if recent.is_some_and(|started| now - started < gap_secs) {
                return;
            }
            match jobs.sync().await {
                Ok(_) => waiting.pool_grew(),
                Err(err) => {
                    tracing::info!(error = %crate::telemetry::error_chain(&err), "a sync for an exhausted pool did not run")
                }
            }
        });
    }

    /// Every handed-out row's allocation facts, read at most once per
    /// `ANALYTICS_CACHE_SEC` and shared by every dashboard.
    pub async fn shared_allocation_facts(&self) -> Result<Arc<Vec<AllocationFacts>>, StoreError> {
        self.allocation_facts
            .try_get(|| async { self.store.analytics.allocation_facts().await.map(Arc::new) })
            .await
    }
}
