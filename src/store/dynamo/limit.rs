//! How many operations may talk to DynamoDB at once, adapted to the latency it shows.
//!
//! Rule: additive increase, multiplicative decrease, with latency and throttling as the
//! congestion signals — the shape of TCP's congestion control and of Netflix's
//! concurrency-limits AIMD limiter. Call latencies are gathered in windows of about one
//! round of calls. At the end of each window:
//! - an overload signal in it (throttling, 5xx, an attempt that timed out) halves the limit;
//! - a mean latency above the target (`DDB_LATENCY_TARGET_MS`) takes 10 % off: calls are
//!   queueing *in the table*, so more of them would only wait there instead of here;
//! - otherwise, if the window used at least half the limit, it grows by one.
//!
//! The limit stays between [`MIN_LIMIT`] and the ceiling (`DDB_MAX_CONCURRENCY`). A table
//! whose latency stays low under load (real DynamoDB far from its partition limits) lets
//! the limit climb to the ceiling; one that queues (DynamoDB Local, a hot partition) holds
//! it where its answers take about the target — past the knee of its latency curve, where
//! more concurrency adds waiting, not throughput. The target is absolute on purpose: a
//! baseline learned from idle moments would make the operating point depend on history.

use std::time::{Duration, Instant};

/// The lowest the limit goes, so a noisy moment never serialises the service.
pub(super) const MIN_LIMIT: usize = 4;
/// Fewest samples in a window: one or two calls say nothing about a trend.
const MIN_WINDOW_SAMPLES: u32 = 16;
/// A window also ends after this long (light load), if it has any sample.
const MAX_WINDOW: Duration = Duration::from_millis(250);

/// One finished call, as the limit sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample {
    /// Time from sending the call to its answer (queueing in this process excluded).
    pub(super) latency: Duration,
    /// The table said "too much" (throttling, 5xx) or the attempt timed out.
    pub(super) overloaded: bool,
    /// Operations holding a turn when the call ended.
    pub(super) in_flight: usize,
}

/// The adaptive limit: plain state, no I/O, driven by [`AdaptiveLimit::observe`].
#[derive(Debug)]
pub(super) struct AdaptiveLimit {
    limit: f64,
    min: f64,
    max: f64,
    target: Duration,
    window: Window,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    samples: u32,
    total: Duration,
    overloaded: bool,
    busiest: usize,
}

impl AdaptiveLimit {
    /// A limit between [`MIN_LIMIT`] and `ceiling`, starting at a quarter of the ceiling,
    /// that shrinks when calls take longer than `target` on average.
    pub(super) fn new(ceiling: usize, target: Duration) -> Self {
        let max = ceiling.max(1) as f64;
        let min = (MIN_LIMIT as f64).min(max);
        Self {
            limit: (max / 4.0).clamp(min, max),
            min,
            max,
            target,
            window: Window::default(),
        }
    }

    /// The current limit.
    pub(super) fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Takes one sample; returns the new limit when it closed a window.
    pub(super) fn observe(&mut self, sample: Sample, now: Instant) -> Option<usize> {
        let window = &mut self.window;
        let started = *window.started.get_or_insert(now);
        window.samples += 1;
        window.total += sample.latency;
        window.overloaded |= sample.overloaded;
        window.busiest = window.busiest.max(sample.in_flight);
        let enough = window.samples >= MIN_WINDOW_SAMPLES.max(self.limit as u32);
        if !enough && now.saturating_duration_since(started) < MAX_WINDOW {
            return None;
        }
        let window = std::mem::take(&mut self.window);
        let mean = window.total / window.samples;
        self.limit = if window.overloaded {
            self.limit * 0.5
        } else if mean > self.target {
            self.limit * 0.9
        } else if window.busiest as f64 * 2.0 >= self.limit {
            self.limit + 1.0
        } else {
            self.limit
        }
        .clamp(self.min, self.max);
        Some(self.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds whole windows of identical samples; returns the limit after each window.
    fn windows(
        limit: &mut AdaptiveLimit,
        start: Instant,
        count: usize,
        latency: Duration,
        overloaded: bool,
    ) -> Vec<usize> {
        let mut after = Vec::new();
        let mut now = start;
        for _ in 0..count {
            loop {
                now += Duration::from_micros(100);
                let in_flight = limit.limit();
                let sample = Sample {
                    latency,
                    overloaded,
                    in_flight,
                };
                if let Some(new) = limit.observe(sample, now) {
                    after.push(new);
                    break;
                }
            }
        }
        after
    }

    const TARGET: Duration = Duration::from_millis(50);

    #[test]
    fn starts_at_a_quarter_of_the_ceiling_within_bounds() {
        assert_eq!(AdaptiveLimit::new(128, TARGET).limit(), 32);
        assert_eq!(AdaptiveLimit::new(8, TARGET).limit(), MIN_LIMIT);
        assert_eq!(AdaptiveLimit::new(2, TARGET).limit(), 2);
    }

    #[test]
    fn flat_latency_under_load_grows_the_limit_to_the_ceiling() {
        let mut limit = AdaptiveLimit::new(64, TARGET);
        let after = windows(&mut limit, Instant::now(), 100, ms(5), false);
        assert!(after.windows(2).all(|w| w[1] >= w[0]), "{after:?}");
        assert_eq!(limit.limit(), 64);
    }

    #[test]
    fn latency_above_the_target_shrinks_it_and_a_calm_table_lets_it_grow_back() {
        let start = Instant::now();
        let mut limit = AdaptiveLimit::new(128, TARGET);
        windows(&mut limit, start, 5, ms(20), false);
        let before = limit.limit();
        assert_eq!(before, 37);
        let shrinking = windows(&mut limit, start + ms(10), 10, ms(80), false);
        assert!(shrinking.windows(2).all(|w| w[1] <= w[0]), "{shrinking:?}");
        assert_eq!(limit.limit(), 12, "37 × 0.9^10");
        windows(&mut limit, start + ms(50), 10, ms(30), false);
        assert_eq!(limit.limit(), 22);
    }

    #[test]
    fn an_overloaded_window_halves_it_once_never_below_the_floor() {
        let mut limit = AdaptiveLimit::new(128, TARGET);
        let after = windows(&mut limit, Instant::now(), 6, ms(5), true);
        assert_eq!(after, vec![16, 8, 4, 4, 4, 4]);
    }

    #[test]
    fn a_lightly_used_limit_does_not_grow() {
        let mut limit = AdaptiveLimit::new(128, TARGET);
        let mut now = Instant::now();
        for _ in 0..200 {
            now += ms(5);
            let sample = Sample {
                latency: ms(1),
                overloaded: false,
                in_flight: 1,
            };
            limit.observe(sample, now);
        }
        assert_eq!(limit.limit(), 32);
    }
}
