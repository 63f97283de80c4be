//! The time the jobs read: the system clock in service, a clock tests move by hand.
//!
//! Rule: leases and their renewal, the circuit breakers' open periods, expiry, the track
//! routes' timestamps and every job read one [`Clock`], so a test that needs a lease to run
//! out or a breaker to half-open moves the clock instead of sleeping. Latency measurements
//! (monotonic `Instant`s for metrics) are not rules and stay on the system's timer.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::time::{EpochMillis, EpochSecs};

/// Wall-clock time in epoch milliseconds (and seconds), and waiting on it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> EpochMillis;

    /// Whole seconds since the Unix epoch, as the API's timestamps are.
    fn now(&self) -> EpochSecs {
        self.now_ms().secs()
    }

    /// Resolves once this clock reads `at` or later: a deadline fixed when it was
    /// computed, however late the future is first polled.
    fn sleep_until(&self, at: EpochMillis) -> BoxFuture<'static, ()>;

    /// Resolves once this clock has moved on by `duration` from now.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.sleep_until(self.now_ms().after(duration))
    }
}

/// `duration` in whole milliseconds, as the clock counts them (saturating).
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A clock shared by everything that reads it.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> EpochMillis {
        EpochMillis::new(super::now_epoch_ms())
    }

    fn sleep_until(&self, at: EpochMillis) -> BoxFuture<'static, ()> {
        let ahead = u64::try_from(at.get().saturating_sub(self.now_ms().get())).unwrap_or(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(ahead)))
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to, for tests; its sleepers wake when it is moved
/// past their end, never on their own.
#[derive(Debug)]
pub struct ManualClock(watch::Sender<i64>);

impl ManualClock {
    /// A manual clock set to the system's time now.
    pub fn starting_now() -> Self {
        Self(watch::Sender::new(super::now_epoch_ms()))
    }

    /// Moves the clock forward by `by`, waking every sleeper whose end it passes.
    pub fn advance(&self, by: Duration) {
        self.0
            .send_modify(|now| *now = now.saturating_add(millis(by)));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> EpochMillis {
        EpochMillis::new(*self.0.borrow())
    }

    fn sleep_until(&self, end: EpochMillis) -> BoxFuture<'static, ()> {
        let end = end.get();
        let mut time = self.0.subscribe();
        Box::pin(async move {
            // An error means the clock is gone: nothing will ever move it, so wait forever
            // as a sleep on a stopped clock would.
            if time.wait_for(|now| *now >= end).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::starting_now();
        let start = clock.now_ms();
        assert_eq!(clock.now_ms(), start);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), start + 1_500);
        assert_eq!(clock.now(), (start + 1_500).secs());
    }

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_passes_its_end_and_not_before() {
        let clock = ManualClock::starting_now();
        let mut sleeping = clock.sleep(Duration::from_secs(60));
        assert!(futures::poll!(&mut sleeping).is_pending());
        clock.advance(Duration::from_secs(59));
        assert!(futures::poll!(&mut sleeping).is_pending());
        clock.advance(Duration::from_secs(1));
        assert!(futures::poll!(&mut sleeping).is_ready());
    }
}
