//! The webhook dispatcher: fans announced events out to the endpoints that want them and
//! delivers what is due, each endpoint on its own (docs/webhooks.md).
//!
//! Rule: what an event is, its order and its retries are `domain::webhooks::outbox`'s; this
//! job only moves and sends. It runs under the job lease, so on a fleet one instance
//! delivers. Each endpoint has its own worker, which a run starts and does not wait for;
//! a worker stops at its endpoint's first failure, so an endpoint that is down costs one
//! attempt per run and waits on its own backoff, and one that is slow keeps only its own
//! worker busy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Fence, JobError, RunCounts};
use crate::domain::NamePrefix;
use crate::domain::clock::{Clock, SharedClock};
use crate::domain::time::EpochSecs;
use crate::domain::webhooks::outbox::{
    Delivery, PoolLevel, RetryPolicy, delivery_order, pool_event,
};
use crate::domain::webhooks::{DeliveryOutcome, WebhookUse};
use crate::metrics::Metrics;
use crate::store::{AnalyticsStore, OutboxStore, StoreError, WebhookStore};
use crate::webhooks::Deliverer;

/// Events fanned out per run, at most.
const FAN_OUT_PER_RUN: usize = 1000;
/// Deliveries read per endpoint per run, at most.
const DELIVERIES_PER_ENDPOINT: usize = 200;

/// What the dispatcher needs beside the store.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Posts signed events.
    pub deliverer: Deliverer,
    /// How long deliveries are retried.
    pub policy: RetryPolicy,
    /// How often the dispatcher runs.
    pub interval: std::time::Duration,
    /// `POOL_LOW_WATERMARKS`: the prefixes whose crossings announce `pool.low` and
    /// `pool.empty`.
    pub watermarks: Vec<(NamePrefix, u64)>,
    /// Where each watched prefix stood at this instance's last run (an instance that
    /// takes the lease over starts from "fine", so it may announce a standing low once
    /// more: at least once).
    pub levels: Arc<Mutex<HashMap<String, PoolLevel>>>,
    /// This instance's endpoint workers.
    pub workers: Arc<Workers>,
}

/// Announces `pool.low` / `pool.empty` for the watched prefixes that crossed since the
/// last run; how many it announced.
async fn watch_pool(
    analytics: &dyn AnalyticsStore,
    outbox: &dyn OutboxStore,
    dispatch: &Dispatch,
    now: crate::domain::time::EpochSecs,
) -> Result<u64, StoreError> {
    if dispatch.watermarks.is_empty() {
        return Ok(0);
    }
    let prefixes: Vec<NamePrefix> = dispatch.watermarks.iter().map(|(p, _)| p.clone()).collect();
    let counts = analytics.available_by_prefix(&prefixes).await?;
    let mut events = Vec::new();
    {
        let mut levels = dispatch
            .levels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for ((prefix, watermark), available) in dispatch.watermarks.iter().zip(counts) {
            let level = PoolLevel::of(available, *watermark);
            let before = levels
                .insert(prefix.as_str().to_owned(), level)
                .unwrap_or(PoolLevel::Fine);
            events.extend(pool_event(
                prefix.as_str(),
                before,
                level,
                available,
                *watermark,
                now,
            ));
        }
    }
    for event in &events {
        outbox.announce(event).await?;
    }
    Ok(events.len() as u64)
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    /// Events moved from the outbox to deliveries.
    pub fanned_out: u64,
    /// Endpoint workers started (each delivers its endpoint's due deliveries; what they
    /// delivered is in `broker_webhook_deliveries_total`).
    pub workers_started: u64,
}

impl RunCounts for WebhookCounts {
    fn named(&self) -> BTreeMap<String, u64> {
        [
            ("fanned_out", self.fanned_out),
            ("workers_started", self.workers_started),
        ]
        .into_iter()
        .map(|(name, count)| (name.to_owned(), count))
        .collect()
    }
}

/// The store roles the dispatcher uses (owned: an endpoint's worker outlives the run that
/// started it).
#[derive(Clone)]
pub struct Stores {
    /// Endpoints and their delivery state.
    pub webhooks: Arc<dyn WebhookStore>,
    /// Events and deliveries.
    pub outbox: Arc<dyn OutboxStore>,
    /// The pool's counts per name prefix.
    pub analytics: Arc<dyn AnalyticsStore>,
}

/// The endpoints a worker of this instance is delivering to now, and the time of each
/// endpoint's oldest pending delivery as its last worker saw it.
#[derive(Debug, Default)]
pub struct Workers {
    busy: Mutex<HashSet<String>>,
    pending_since: Mutex<HashMap<String, EpochSecs>>,
}

/// Marks an endpoint free again when its worker ends, however it ends.
struct Busy<'a> {
    workers: &'a Workers,
    endpoint: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.workers
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.endpoint);
    }
}

/// One run: fan out, then start a worker for every endpoint that has none. A run does not
/// wait for the workers: an endpoint that is slow (each attempt up to
/// `WEBHOOK_TIMEOUT_SEC`) keeps only its own worker busy, and every other endpoint's next
/// deliveries start on the next run. (If the lease moves to another instance meanwhile,
/// both may attempt the same delivery: at least once, same id.)
pub async fn run_once(
    stores: Stores,
    dispatch: &Dispatch,
    metrics: &Metrics,
    fence: &Fence,
    clock: SharedClock,
) -> Result<WebhookCounts, JobError> {
    watch_pool(&*stores.analytics, &*stores.outbox, dispatch, clock.now()).await?;
    let endpoints = stores.webhooks.webhooks().await?;
    let list: Vec<_> = endpoints.iter().map(|used| used.endpoint.clone()).collect();
    let mut counts = WebhookCounts {
        fanned_out: stores
            .outbox
            .fan_out(&list, FAN_OUT_PER_RUN, clock.now_ms())
            .await?,
        ..WebhookCounts::default()
    };
    fence.check()?;
    for used in endpoints {
        let endpoint = used.endpoint.id.clone();
        if !dispatch
            .workers
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint.clone())
        {
            continue;
        }
        counts.workers_started += 1;
        let (stores, dispatch, metrics, clock) = (
            stores.clone(),
            dispatch.clone(),
            metrics.clone(),
            Arc::clone(&clock),
        );
        tokio::spawn(async move {
            let busy = Busy {
                workers: &dispatch.workers,
                endpoint: endpoint.clone(),
            };
            match deliver_to(&stores, &dispatch, &metrics, &*clock, &used).await {
                Ok(Some(since)) => {
                    dispatch
                        .workers
                        .pending_since
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(endpoint, since);
                }
                Ok(None) => {
                    dispatch
                        .workers
                        .pending_since
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&endpoint);
                }
                Err(err) => {
                    tracing::warn!(webhook = endpoint, error = %crate::telemetry::error_chain(&err), "a webhook worker stopped on a store error; the next run starts another");
                }
            }
            drop(busy);
        });
    }
    // A fan-out that moved less than its limit emptied the outbox (but for events announced
    // since): only a full one leaves a backlog worth reading again.
    let (backlog, oldest) = if counts.fanned_out < FAN_OUT_PER_RUN as u64 {
        (0, None)
    } else {
        stores.outbox.outbox_backlog().await?
    };
    metrics
        .webhooks
        .outbox_depth
        .set(i64::try_from(backlog).unwrap_or(i64::MAX));
    let known: HashSet<&str> = list.iter().map(|e| e.id.as_str()).collect();
    let oldest = {
        let mut since = dispatch
            .workers
            .pending_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Endpoints deleted meanwhile wait for nothing any more.
        since.retain(|endpoint, _| known.contains(endpoint.as_str()));
        since.values().copied().chain(oldest).min()
    };
    let now = clock.now();
    metrics
        .webhooks
        .oldest_pending_seconds
        .set(oldest.map_or(0, |at| (now - at).max(0)));
    Ok(counts)
}

/// Delivers what is due to one endpoint, in order, stopping at its first failure; the
/// time of its oldest delivery still pending before it started.
async fn deliver_to(
    stores: &Stores,
    dispatch: &Dispatch,
    metrics: &Metrics,
    clock: &dyn Clock,
    used: &WebhookUse,
) -> Result<Option<EpochSecs>, StoreError> {
    let endpoint = &used.endpoint;
    let all = stores
        .outbox
        .deliveries(&endpoint.id, DELIVERIES_PER_ENDPOINT)
        .await?;
    let pending: Vec<Delivery> = all.into_iter().filter(|d| d.failed_at.is_none()).collect();
    let pending_since = pending.iter().map(|d| d.event.at).min();
    metrics
        .webhooks
        .pending
        .with_label_values(&[endpoint.id.as_str()])
        .set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
    let mut state = used.state.clone();
    for delivery in delivery_order(pending) {
        let now = clock.now();
        if !delivery.due(now) {
            continue;
        }
        let body = match delivery.event.body() {
            Ok(body) => body,
            Err(err) => return Err(StoreError::Internal(Box::new(err))),
        };
        let outcome = dispatch
            .deliverer
            .deliver(endpoint, &delivery.event.id, &body, now)
            .await;
        state = state.after(&outcome, now);
        let label = match &outcome {
            DeliveryOutcome::Delivered { .. } => {
                stores.outbox.settle_delivery(&delivery, None).await?;
                "delivered"
            }
            DeliveryOutcome::Failed { error, .. } => {
                let next = dispatch.policy.after_failure(
                    &delivery,
                    error.clone(),
                    now,
                    rand::random::<f64>(),
                );
                stores
                    .outbox
                    .settle_delivery(&delivery, Some(&next))
                    .await?;
                if next.failed_at.is_some() {
                    "given_up"
                } else {
                    "failed"
                }
            }
        };
        metrics
            .webhooks
            .deliveries_total
            .with_label_values(&[endpoint.id.as_str(), label])
            .inc();
        if label != "delivered" {
            break;
        }
    }
    if state != used.state {
        stores
            .webhooks
            .record_delivery(&endpoint.id, &state)
            .await?;
    }
    Ok(pending_since)
}
