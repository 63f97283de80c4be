//! Whether the table answers: the one place where "slow" and "down" are told apart.
//!
//! Rule: the table is *up* while it does work for us. It is *down* once a call has waited
//! `stall_timeout` without the table giving any call a useful answer — a result, or a
//! refusal such as a failed condition. Connection refused, a socket that never answers,
//! and nothing but throttling or 5xx all look the same from here: no useful answer. While
//! down, calls are refused at once (503) except one probe at a time, and the first useful
//! answer to anything brings the table back up. A slow table keeps answering some call
//! every few milliseconds, so it is never mistaken for a dead one, however long its queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::sync::watch;

/// The table's state as calls see it.
pub(super) struct Health {
    /// When this process started watching; `last_useful` counts milliseconds from here.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last useful answer, plus one (0: never).
    last_useful: AtomicU64,
    stall_timeout: Duration,
    state: Mutex<State>,
    /// `true` while down; queued requests wait on it so an outage empties the queue at once.
    down: watch::Sender<bool>,
    up_gauge: IntGauge,
}

#[derive(Debug, Default)]
struct State {
    down_since: Option<Instant>,
    probing: bool,
}

/// What a call may do now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// The table is up: call it, retrying what is worth retrying.
    Go,
    /// The table is down and this call is the one probe: one attempt, no retries.
    Probe,
    /// The table is down and another call is probing: answer 503 now.
    Refuse,
}

/// Whether a call that started at `call_started` has waited too long for any useful answer.
/// The table answering *another* call in the meantime proves it alive, so the wait counts
/// from the later of the two.
pub(super) fn stalled(
    call_started: Instant,
    last_useful: Option<Instant>,
    now: Instant,
    stall_timeout: Duration,
) -> bool {
    let since = last_useful.map_or(call_started, |answer| answer.max(call_started));
    now.saturating_duration_since(since) >= stall_timeout
}

impl Health {
    /// An up table; `up_gauge` is set to 1 while up and 0 while down.
    pub(super) fn new(stall_timeout: Duration, up_gauge: IntGauge) -> Self {
        up_gauge.set(1);
        Self {
            epoch: Instant::now(),
            last_useful: AtomicU64::new(0),
            stall_timeout,
            state: Mutex::new(State::default()),
            down: watch::Sender::new(false),
            up_gauge,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last useful answer, if there was one.
    pub(super) fn last_useful(&self) -> Option<Instant> {
        match self.last_useful.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    /// Whether a call may go to the table now.
    pub(super) fn admit(&self) -> Admission {
        let mut state = self.state();
        match state.down_since {
            None => Admission::Go,
            Some(_) if state.probing => Admission::Refuse,
            Some(_) => {
                state.probing = true;
                Admission::Probe
            }
        }
    }

    /// A probe ended (without a useful answer, or its caller went away): the next call
    /// may probe. Harmless once the table is up again.
    pub(super) fn probe_failed(&self) {
        self.state().probing = false;
    }

    /// The table gave a useful answer: it is up.
    pub(super) fn answered(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1;
        self.last_useful.fetch_max(ms, Ordering::AcqRel);
        let mut state = self.state();
        state.probing = false;
        if let Some(since) = state.down_since.take() {
            drop(state);
            self.up_gauge.set(1);
            self.down.send_replace(false);
            tracing::info!(
                down_for_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                "DynamoDB answers again"
            );
        }
    }

    /// A call saw no useful answer for the stall timeout: the table is down.
    pub(super) fn mark_down(&self, now: Instant) {
        let mut state = self.state();
        state.probing = false;
        if state.down_since.is_none() {
            state.down_since = Some(now);
            drop(state);
            self.up_gauge.set(0);
            self.down.send_replace(true);
            tracing::warn!(
                stall_timeout_ms = u64::try_from(self.stall_timeout.as_millis()).unwrap_or(0),
                "DynamoDB gave no useful answer within the stall timeout; answering 503 until it does"
            );
        }
    }

    /// Whether the table is down right now.
    pub(super) fn is_down(&self) -> bool {
        self.state().down_since.is_some()
    }

    /// Completes when a call that started at `call_started` has stalled: no useful answer
    /// to any call for the stall timeout. Never completes while the table keeps answering.
    pub(super) async fn stall(&self, call_started: Instant) {
        loop {
            let now = Instant::now();
            if stalled(call_started, self.last_useful(), now, self.stall_timeout) {
                return;
            }
            let since = self
                .last_useful()
                .map_or(call_started, |answer| answer.max(call_started));
            tokio::time::sleep_until((since + self.stall_timeout).into()).await;
        }
    }

    /// Completes once the table is down (at once if it already is).
    pub(super) async fn went_down(&self) {
        let mut down = self.down.subscribe();
        // `wait_for` only fails when the sender is gone, and `self` owns it.
        let _ = down.wait_for(|down| *down).await;
    }

    /// The stall timeout, for messages.
    pub(super) fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_millis(1000);

    fn health() -> Health {
        Health::new(STALL, IntGauge::new("up", "up").unwrap())
    }

    #[test]
    fn a_call_stalls_only_when_nothing_answered_for_the_whole_timeout() {
        let start = Instant::now();
        let ms = |n| Duration::from_millis(n);
        // Nobody answered since the call started.
        assert!(!stalled(start, None, start + ms(999), STALL));
        assert!(stalled(start, None, start + ms(1000), STALL));
        // Another call got an answer 500 ms in: the table is alive, the wait restarts.
        assert!(!stalled(
            start,
            Some(start + ms(500)),
            start + ms(1400),
            STALL
        ));
        assert!(stalled(
            start,
            Some(start + ms(500)),
            start + ms(1500),
            STALL
        ));
        // An answer from before the call started proves nothing about now.
        assert!(stalled(
            start + ms(10),
            Some(start),
            start + ms(1010),
            STALL
        ));
    }

    #[test]
    fn down_admits_one_probe_at_a_time_and_any_answer_brings_it_up() {
        let health = health();
        assert_eq!(health.admit(), Admission::Go);
        health.mark_down(Instant::now());
        assert!(health.is_down());
        assert_eq!(health.admit(), Admission::Probe);
        assert_eq!(health.admit(), Admission::Refuse);
        health.probe_failed();
        assert_eq!(health.admit(), Admission::Probe);
        health.answered(Instant::now());
        assert!(!health.is_down());
        assert_eq!(health.admit(), Admission::Go);
        assert_eq!(health.up_gauge.get(), 1);
    }

    #[test]
    fn last_useful_answer_only_moves_forward() {
        let health = health();
        assert_eq!(health.last_useful(), None);
        let later = Instant::now() + Duration::from_millis(50);
        health.answered(later);
        health.answered(later - Duration::from_millis(40));
        let recorded = health.last_useful().unwrap();
        assert!(recorded + Duration::from_millis(2) >= later);
    }
}
