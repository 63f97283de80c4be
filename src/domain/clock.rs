//! The time the jobs read: the system clock in service, a clock tests move by hand.
//!
//! Rule: leases, retry backoff, expiry and every job read one [`Clock`], so a test that
//! needs a lease to run out or a backoff to pass moves the clock instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Wall-clock time in epoch milliseconds (and seconds).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch, as the contract's timestamps are.
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// A clock shared by everything that reads it.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        super::now_epoch_ms()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A manual clock set to the system's time now.
    pub fn starting_now() -> Self {
        Self(AtomicI64::new(super::now_epoch_ms()))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
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
        assert_eq!(clock.now(), (start + 1_500).div_euclid(1000));
    }
}
