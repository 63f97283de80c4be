//! The store's one way to call DynamoDB: admission, patience, retries and outage detection.
//!
//! Rule: a call is retried — with jittered exponential backoff, the same request each
//! time — for as long as its operation's deadline allows, when the table throttles,
//! answers 5xx, refuses the connection or lets one attempt time out. Every write the store
//! makes is conditional, and the protocol recognises its own earlier attempt when a retry
//! fails its condition, so a retried write whose first attempt did land is never
//! misread. Only [`Health`] decides that the table is *down* (no useful answer to any
//! call for the stall timeout); then the call ends at once with 503. Every attempt's
//! latency feeds the adaptive limit of the [`Gate`].

use std::future::Future;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use prometheus::core::Collector;

use self::metrics::CallMetrics;
use super::DynamoSettings;
use super::admission::{Gate, Turn};
use super::error::{DynamoError, Verdict, verdict};
use super::health::{Admission, Health};
use super::wire::Wire;
use crate::store::StoreError;

mod metrics;

/// How patient calls are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Patience {
    /// `ALLOCATE_DEADLINE_SEC`: how long one operation may keep waiting and retrying.
    pub(super) deadline: Duration,
    /// `DDB_ATTEMPT_TIMEOUT_MS`: one attempt that gets no answer while the table answers
    /// others is abandoned and sent again.
    pub(super) attempt_timeout: Duration,
    /// `BACKOFF_BASE_MS`: the first retry delay (jittered, doubling).
    pub(super) backoff_base: Duration,
    /// `BACKOFF_MAX_MS`: the longest retry delay.
    pub(super) backoff_max: Duration,
}

/// When an operation must stop starting new waits (queueing, backoff, another round).
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    deadline: Instant,
}

impl Budget {
    /// A budget that runs out at `deadline`.
    #[cfg(test)]
    pub(super) fn until(deadline: Instant) -> Self {
        Self { deadline }
    }

    /// The instant the deadline falls on.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub(super) fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The 503 an operation answers when its deadline ran out.
    pub(super) fn exceeded(&self, doing: &str) -> StoreError {
        StoreError::Unavailable(
            format!("the request's deadline (ALLOCATE_DEADLINE_SEC) ran out while {doing}").into(),
        )
    }
}

/// The client, the queue, the health watch and their metrics.
pub(super) struct Calls {
    /// The SDK client, with its own retries off (they are done here).
    pub(super) client: Client,
    /// The lean path for single-item calls and queries (see `wire.rs`).
    pub(super) wire: Wire,
    gate: Gate,
    health: Health,
    patience: Patience,
    metrics: CallMetrics,
}

/// The probe slot of a down table, given back when dropped.
struct ProbeSlot<'a>(&'a Health);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.probe_failed();
    }
}

/// How one attempt ended.
enum Attempt<T, E> {
    Done(Result<T, E>),
    TimedOut,
    Stalled,
}

impl Calls {
    /// Calls through `client` as `settings` say.
    pub(super) fn new(client: Client, wire: Wire, settings: &DynamoSettings) -> Self {
        let patience = Patience {
            deadline: settings.deadline,
            attempt_timeout: settings.attempt_timeout,
            backoff_base: settings.backoff_base,
            backoff_max: settings.backoff_max,
        };
        let metrics = match CallMetrics::new() {
            Ok(metrics) => metrics,
            // The names and help texts are constants; this cannot fail at run time.
            Err(err) => unreachable!("DynamoDB call metrics: {err}"),
        };
        Self {
            client,
            wire,
            gate: Gate::new(
                settings.max_concurrency.max(1),
                settings.latency_target,
                metrics.gate.clone(),
            ),
            health: Health::new(settings.stall_timeout, metrics.up.clone()),
            patience,
            metrics,
        }
    }

    /// How patient calls are.
    pub(super) fn patience(&self) -> &Patience {
        &self.patience
    }

    /// The budget of an operation starting now.
    pub(super) fn budget(&self) -> Budget {
        Budget {
            deadline: Instant::now() + self.patience.deadline,
        }
    }

    /// Queues for a turn (see `admission.rs`) within `budget`.
    pub(super) async fn turn(&self, budget: &Budget) -> Result<Turn, StoreError> {
        if self.health.is_down() {
            // No queueing for a table that does not answer: the operation's first call
            // either probes it or answers 503 at once.
            return Ok(self.gate.bypass());
        }
        let turn = self.gate.enter(budget.deadline, &self.health).await;
        if let Err(StoreError::Unavailable(_)) = &turn
            && !self.health.is_down()
        {
            self.metrics.deadlines.with_label_values(&["queued"]).inc();
        }
        turn
    }

    /// Counts an operation that gave up because its deadline ran out.
    pub(super) fn deadline_exceeded(&self, budget: &Budget, doing: &str) -> StoreError {
        self.metrics.deadlines.with_label_values(&["racing"]).inc();
        budget.exceeded(doing)
    }

    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable(
            format!(
                "DynamoDB gave no useful answer for {} ms",
                self.health.stall_timeout().as_millis()
            )
            .into(),
        )
    }

    /// Sends a request (built afresh by `attempt` for every try) with the store's patience,
    /// and classifies the outcome the usual way.
    pub(super) async fn send<T, E, F, Fut>(
        &self,
        budget: &Budget,
        attempt: F,
    ) -> Result<T, DynamoError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.send_classified(budget, attempt, verdict).await
    }

    /// [`Self::send`], also handing back what `keep` takes from the last service error —
    /// the item a failed condition returns, which the classifier reduces to "conflict".
    pub(super) async fn send_keeping<T, E, F, Fut, K>(
        &self,
        budget: &Budget,
        attempt: F,
        keep: impl Fn(&E) -> Option<K>,
    ) -> (Result<T, DynamoError>, Option<K>)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.send_keeping_classified(budget, attempt, keep, verdict)
            .await
    }

    /// [`Self::send_keeping`] with the classifier of [`Self::send_classified`].
    pub(super) async fn send_keeping_classified<T, E, F, Fut, K>(
        &self,
        budget: &Budget,
        attempt: F,
        keep: impl Fn(&E) -> Option<K>,
        classify: fn(SdkError<E, HttpResponse>) -> Verdict,
    ) -> (Result<T, DynamoError>, Option<K>)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kept = std::sync::Mutex::new(None);
        let result = self
            .send_classified(
                budget,
                || async {
                    let result = attempt().await;
                    if let Err(err) = &result
                        && let Some(service) = err.as_service_error()
                    {
                        *kept.lock().unwrap_or_else(PoisonError::into_inner) = keep(service);
                    }
                    result
                },
                classify,
            )
            .await;
        (
            result,
            kept.into_inner().unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// [`Self::send`] with a classifier of its own (transactions report conditions their way).
    pub(super) async fn send_classified<T, E, F, Fut>(
        &self,
        budget: &Budget,
        attempt: F,
        classify: fn(SdkError<E, HttpResponse>) -> Verdict,
    ) -> Result<T, DynamoError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let call_started = Instant::now();
        let mut retries = 0u32;
        loop {
            let probe = match self.health.admit() {
                Admission::Go => None,
                // Freed however the probe ends — also when its request is dropped midway,
                // which would otherwise leave the table "probing" (and refused) forever.
                Admission::Probe => Some(ProbeSlot(&self.health)),
                Admission::Refuse => return Err(self.unavailable().into()),
            };
            let sent = Instant::now();
            let outcome = tokio::select! {
                result = attempt() => Attempt::Done(result),
                () = tokio::time::sleep(self.patience.attempt_timeout) => Attempt::TimedOut,
                () = self.health.stall(call_started) => Attempt::Stalled,
            };
            let latency = sent.elapsed();
            let (failure, reason) = match outcome {
                Attempt::Done(Ok(value)) => {
                    self.useful(latency, "ok");
                    return Ok(value);
                }
                Attempt::Done(Err(err)) => match classify(err) {
                    Verdict::Answer(answer) => {
                        let label = match &answer {
                            DynamoError::Conflict => "conflict",
                            DynamoError::Store(_) => "refused",
                        };
                        self.useful(latency, label);
                        return Err(answer);
                    }
                    Verdict::Busy(err) => {
                        self.failed(latency, "throttled", true);
                        (err, "throttled")
                    }
                    Verdict::NoAnswer(err) => {
                        self.failed(latency, "no_answer", false);
                        (err, "no_answer")
                    }
                },
                Attempt::TimedOut => {
                    self.failed(latency, "timeout", true);
                    let err = StoreError::Unavailable(
                        format!(
                            "a DynamoDB call got no answer within DDB_ATTEMPT_TIMEOUT_MS ({} ms)",
                            self.patience.attempt_timeout.as_millis()
                        )
                        .into(),
                    );
                    (err, "timeout")
                }
                Attempt::Stalled => {
                    self.metrics
                        .duration
                        .with_label_values(&["no_answer"])
                        .observe(latency.as_secs_f64());
                    self.health.mark_down(Instant::now());
                    return Err(self.unavailable().into());
                }
            };
            if probe.is_some() {
                return Err(failure.into());
            }
            let delay = backoff(&self.patience, retries);
            if Instant::now() + delay >= budget.deadline {
                self.metrics
                    .deadlines
                    .with_label_values(&["retrying"])
                    .inc();
                return Err(failure.into());
            }
            self.metrics.retries.with_label_values(&[reason]).inc();
            retries += 1;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.health.stall(call_started) => {
                    self.health.mark_down(Instant::now());
                    return Err(self.unavailable().into());
                }
            }
        }
    }

    fn useful(&self, latency: Duration, outcome: &str) {
        self.health.answered(Instant::now());
        self.gate.observe(latency, false);
        self.observe(latency, outcome);
    }

    fn failed(&self, latency: Duration, outcome: &str, overloaded: bool) {
        if overloaded {
            self.gate.observe(latency, true);
        }
        self.observe(latency, outcome);
    }

    fn observe(&self, latency: Duration, outcome: &str) {
        self.metrics
            .duration
            .with_label_values(&[outcome])
            .observe(latency.as_secs_f64());
    }

    /// Whether the table is considered down right now.
    pub(super) fn is_down(&self) -> bool {
        self.health.is_down()
    }

    /// The current adaptive limit.
    pub(super) fn limit(&self) -> usize {
        self.gate.limit()
    }

    /// The most operations ever seen queued at once.
    pub(super) fn peak_queue_depth(&self) -> usize {
        self.gate.peak_queue_depth()
    }

    /// The Prometheus series of the calls, the queue and the health watch.
    pub(super) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        self.metrics.collectors()
    }
}

/// The delay before retry number `retries` (from 0): exponential from the base, capped,
/// with half of it random ("equal jitter") so a fleet's retries spread out.
pub(super) fn backoff(patience: &Patience, retries: u32) -> Duration {
    let doubled = patience
        .backoff_base
        .saturating_mul(1u32 << retries.min(16))
        .min(patience.backoff_max);
    let half = doubled / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_dropped_midway_frees_its_slot() {
        let health = Health::new(
            Duration::from_secs(1),
            prometheus::IntGauge::new("up", "up").unwrap(),
        );
        health.mark_down(Instant::now());
        assert_eq!(health.admit(), Admission::Probe);
        let slot = ProbeSlot(&health);
        assert_eq!(health.admit(), Admission::Refuse);
        drop(slot);
        assert_eq!(health.admit(), Admission::Probe);
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_jitter() {
        let patience = Patience {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(400),
        };
        for (retry, full) in [(0, 25), (1, 50), (2, 100), (3, 200), (4, 400), (9, 400)] {
            for _ in 0..50 {
                let delay = backoff(&patience, retry);
                let full = Duration::from_millis(full);
                assert!(delay >= full / 2 && delay <= full, "{retry}: {delay:?}");
            }
        }
    }
}
