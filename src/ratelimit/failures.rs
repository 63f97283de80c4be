//! Failed authentications per client address, so a token cannot be guessed at line rate.
//!
//! Rule: an address may fail `limit` times per window; after that every failed attempt it
//! makes is refused with 429 until the window ends. Only failures are counted and refused:
//! a request with a right token is served from any address (see `http::auth`), and an
//! address that authenticates never spends any of its allowance.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

use super::bounded::BoundedMap;

/// One address's failures in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Milliseconds from the throttle's start to the window's first failure.
    started_ms: u64,
    failures: u32,
}

/// The throttle: a bounded map of windows, keyed by client address.
pub struct FailureThrottle {
    windows: BoundedMap<Window>,
    limit: u32,
    window: Duration,
    start: Instant,
}

impl FailureThrottle {
    /// At most `limit` failures per `window` per address, for at most about `capacity`
    /// addresses at once (those with the fewest failures are forgotten first).
    pub fn new(limit: NonZeroU32, window: Duration, capacity: usize) -> Self {
        Self {
            windows: BoundedMap::new(capacity, |window: &Window| u64::from(window.failures)),
            limit: limit.get(),
            window,
            start: Instant::now(),
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// `Some(seconds until it may try again)` while `address` has used its failures up.
    pub fn blocked(&self, address: IpAddr, now: Instant) -> Option<u64> {
        let window = self.windows.get(&address)?;
        let ends_ms = window.started_ms.saturating_add(self.window_ms());
        let now_ms = self.millis(now);
        (window.failures >= self.limit && now_ms < ends_ms)
            .then(|| (ends_ms - now_ms).div_ceil(1000).max(1))
    }

    /// Counts one failed authentication of `address`.
    pub fn record_failure(&self, address: IpAddr, now: Instant) {
        let now_ms = self.millis(now);
        let window_ms = self.window_ms();
        self.windows.update(&address, |old| {
            let window = match old {
                Some(window) if now_ms < window.started_ms.saturating_add(window_ms) => Window {
                    failures: window.failures.saturating_add(1),
                    ..window
                },
                _ => Window {
                    started_ms: now_ms,
                    failures: 1,
                },
            };
            ((), Some(window))
        });
    }

    /// Forgets windows that have ended, so memory follows recent failures.
    pub fn forget_ended(&self, now: Instant) {
        let now_ms = self.millis(now);
        let window_ms = self.window_ms();
        self.windows
            .retain(|window| now_ms < window.started_ms.saturating_add(window_ms));
    }

    /// How many addresses have a window now.
    pub fn tracked_addresses(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(limit: u32) -> FailureThrottle {
        FailureThrottle::new(
            NonZeroU32::new(limit).unwrap(),
            Duration::from_secs(60),
            1_000,
        )
    }

    #[test]
    fn an_address_is_blocked_after_its_limit_until_the_window_ends() {
        let throttle = throttle(3);
        let guesser: IpAddr = "203.0.113.7".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(throttle.blocked(guesser, start), None);
            throttle.record_failure(guesser, start);
        }
        assert_eq!(throttle.blocked(guesser, start), Some(60));
        let later = start + Duration::from_millis(59_500);
        assert_eq!(throttle.blocked(guesser, later), Some(1));
        assert_eq!(
            throttle.blocked(guesser, start + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn other_addresses_are_not_affected_and_ended_windows_are_forgotten() {
        let throttle = throttle(1);
        let guesser: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let now = Instant::now();
        throttle.record_failure(guesser, now);
        assert!(throttle.blocked(guesser, now).is_some());
        assert_eq!(throttle.blocked(other, now), None);
        throttle.forget_ended(now + Duration::from_secs(61));
        assert_eq!(throttle.tracked_addresses(), 0);
    }
}
