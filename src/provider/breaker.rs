//! A circuit breaker (docs/api.md, *Outbound calls* and cleanup): [`Breaker`] is the state machine, [`GuardedProvider`]
//! puts one around any [`ProviderClient`]; the NIOSXaaS hook has a `Breaker` of its own.
//!
//! Rule: `CIRCUIT_BREAKER_THRESHOLD` consecutive provider failures (connection, timeout,
//! 429, 5xx) open it; while open every call fails at once with
//! [`ProviderError::CircuitOpen`] — a transient error, so callers postpone work and mark
//! nothing failed; after `CIRCUIT_BREAKER_TIMEOUT_SEC` exactly one probe call goes through
//! and its outcome closes or re-opens it. Refusals about one sandbox (404, other 4xx)
//! say nothing about the provider's health and do not count.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use super::{ProviderClient, ProviderError, ProviderListing};
use crate::domain::clock::SharedClock;

/// The breaker's state, for the `broker_provider_circuit_state` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once.
    Open,
    /// One probe call is allowed (or under way).
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, as the admin API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    /// Open until this clock time, in epoch milliseconds.
    Open {
        until_ms: i64,
    },
    HalfOpen {
        probing: bool,
    },
}

/// The breaker's state machine, for any calls that fail with [`ProviderError`]; the
/// provider and the NIOSXaaS hook each have their own.
pub struct Breaker {
    name: &'static str,
    threshold: u32,
    open_for: Duration,
    state: Arc<Mutex<State>>,
    clock: SharedClock,
}

/// The provider behind a [`Breaker`].
pub struct GuardedProvider {
    inner: Arc<dyn ProviderClient>,
    breaker: Breaker,
}

/// Puts a probe that never finished (its future was dropped) back to "probe allowed".
struct ProbeGuard {
    state: Arc<Mutex<State>>,
    finished: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.finished {
            *self.state.lock().unwrap_or_else(PoisonError::into_inner) =
                State::HalfOpen { probing: false };
        }
    }
}

impl GuardedProvider {
    /// Wraps `inner`; `threshold` is at least 1; the open period runs on `clock`.
    pub fn new(
        inner: Arc<dyn ProviderClient>,
        threshold: u32,
        open_for: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            inner,
            breaker: Breaker::new("provider", threshold, open_for, clock),
        }
    }

    /// The state now (an elapsed open period reads as half-open).
    pub fn state(&self) -> BreakerState {
        self.breaker.state()
    }
}

impl Breaker {
    /// A closed breaker named `name` in its log events; `threshold` is at least 1; the
    /// open period runs on `clock`.
    pub fn new(name: &'static str, threshold: u32, open_for: Duration, clock: SharedClock) -> Self {
        Self {
            name,
            threshold: threshold.max(1),
            open_for,
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
            clock,
        }
    }

    /// Whether an open period ending at `until_ms` is still running.
    fn still_open(&self, until_ms: i64) -> bool {
        self.clock.now_ms().get() < until_ms
    }

    /// The state now (an elapsed open period reads as half-open).
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until_ms } if self.still_open(until_ms) => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through (`Ok(is_probe)`) or refuses it.
    fn admit(&self) -> Result<bool, ProviderError> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until_ms } if self.still_open(until_ms) => {
                Err(ProviderError::CircuitOpen)
            }
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(true)
            }
            State::HalfOpen { probing: true } => Err(ProviderError::CircuitOpen),
        }
    }

    fn record(&self, failed: bool, probe: bool) {
        let mut state = self.lock();
        *state = match (*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if !probe && failures + 1 < self.threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, true) => {
                tracing::warn!(
                    breaker = self.name,
                    open_for_secs = self.open_for.as_secs(),
                    "circuit breaker opened"
                );
                State::Open {
                    until_ms: self.clock.now_ms().after(self.open_for).get(),
                }
            }
        };
    }

    /// Runs `operation` if the breaker admits it, and counts its outcome.
    pub async fn call<T>(
        &self,
        operation: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let probe = self.admit()?;
        let mut guard = ProbeGuard {
            state: Arc::clone(&self.state),
            finished: !probe,
        };
        let result = operation.await;
        guard.finished = true;
        let failed = result
            .as_ref()
            .err()
            .is_some_and(ProviderError::is_provider_failure);
        self.record(failed, probe);
        result
    }
}

#[async_trait]
impl ProviderClient for GuardedProvider {
    async fn list_sandboxes(&self) -> Result<ProviderListing, ProviderError> {
        self.breaker.call(self.inner.list_sandboxes()).await
    }

    async fn delete_sandbox(&self, external_id: &str) -> Result<(), ProviderError> {
        self.breaker
            .call(self.inner.delete_sandbox(external_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::domain::clock::ManualClock;

    /// Answers deletes from a script; counts calls.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<(), ProviderError>>>,
        calls: AtomicUsize,
        gate: Option<tokio::sync::Notify>,
    }

    impl Scripted {
        fn with(answers: Vec<Result<(), ProviderError>>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into()),
                ..Self::default()
            })
        }
    }

    #[async_trait]
    impl ProviderClient for Scripted {
        async fn list_sandboxes(&self) -> Result<ProviderListing, ProviderError> {
            Ok(ProviderListing::default())
        }

        async fn delete_sandbox(&self, _: &str) -> Result<(), ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()))
        }
    }

    fn down() -> Result<(), ProviderError> {
        Err(ProviderError::Unavailable("503".into()))
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_after_the_threshold_and_then_refuses_without_calling() {
        let clock = Arc::new(ManualClock::starting_now());
        let provider = Scripted::with(vec![down(), down(), down()]);
        let breaker =
            GuardedProvider::new(provider.clone(), 3, Duration::from_secs(60), clock.clone());

        for _ in 0..3 {
            assert!(matches!(
                breaker.delete_sandbox("x").await,
                Err(ProviderError::Unavailable(_))
            ));
        }
        let refused = breaker.delete_sandbox("x").await;

        assert!(matches!(refused, Err(ProviderError::CircuitOpen)));
        assert!(
            refused.unwrap_err().is_transient(),
            "an open breaker postpones, never fails a sandbox"
        );
        assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_about_one_sandbox_do_not_count_and_success_resets() {
        let clock = Arc::new(ManualClock::starting_now());
        let provider = Scripted::with(vec![
            down(),
            Err(ProviderError::Other("HTTP 400".into())),
            down(),
            Ok(()),
            down(),
            down(),
        ]);
        let breaker = GuardedProvider::new(provider, 3, Duration::from_secs(60), clock.clone());
        for _ in 0..6 {
            let _ = breaker.delete_sandbox("x").await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_timeout_exactly_one_probe_decides() {
        let clock = Arc::new(ManualClock::starting_now());
        let provider = Arc::new(Scripted {
            answers: Mutex::new(vec![down(), Ok(())].into()),
            gate: Some(tokio::sync::Notify::new()),
            ..Scripted::default()
        });
        let breaker = Arc::new(GuardedProvider::new(
            provider.clone(),
            1,
            Duration::from_secs(60),
            clock.clone(),
        ));
        provider.gate.as_ref().unwrap().notify_one();
        let _ = breaker.delete_sandbox("x").await;
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(61));

        let probe = tokio::spawn({
            let breaker = Arc::clone(&breaker);
            async move { breaker.delete_sandbox("probe").await }
        });
        tokio::task::yield_now().await;
        let during_probe = breaker.delete_sandbox("other").await;
        provider.gate.as_ref().unwrap().notify_one();
        let probed = probe.await.unwrap();

        assert!(
            matches!(during_probe, Err(ProviderError::CircuitOpen)),
            "only one probe at a time"
        );
        assert!(probed.is_ok());
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_period() {
        let clock = Arc::new(ManualClock::starting_now());
        let provider = Scripted::with(vec![down(), down()]);
        let breaker =
            GuardedProvider::new(provider.clone(), 1, Duration::from_secs(60), clock.clone());
        let _ = breaker.delete_sandbox("x").await;
        clock.advance(Duration::from_secs(61));

        let probe = breaker.delete_sandbox("x").await;

        assert!(matches!(probe, Err(ProviderError::Unavailable(_))));
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(30));
        assert!(matches!(
            breaker.delete_sandbox("x").await,
            Err(ProviderError::CircuitOpen)
        ));
        assert_eq!(provider.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_does_not_wedge_the_breaker() {
        let clock = Arc::new(ManualClock::starting_now());
        let provider = Arc::new(Scripted {
            answers: Mutex::new(vec![down()].into()),
            gate: Some(tokio::sync::Notify::new()),
            ..Scripted::default()
        });
        let breaker =
            GuardedProvider::new(provider.clone(), 1, Duration::from_secs(60), clock.clone());
        provider.gate.as_ref().unwrap().notify_one();
        let _ = breaker.delete_sandbox("x").await;
        clock.advance(Duration::from_secs(61));

        let abandoned =
            tokio::time::timeout(Duration::from_millis(10), breaker.delete_sandbox("slow")).await;
        assert!(abandoned.is_err(), "the probe was cancelled");
        provider.gate.as_ref().unwrap().notify_one();

        assert!(
            breaker.delete_sandbox("next").await.is_ok(),
            "a new probe is allowed"
        );
    }
}
