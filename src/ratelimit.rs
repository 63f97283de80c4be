//! Per-caller token buckets (docs/api.md, *Rate limiting*): `RATE_LIMIT_PER_SEC` steady, `RATE_LIMIT_BURST` at once.
//!
//! Rule: a caller is its holder key when it sends one, else its client address (taken
//! from `X-Forwarded-For` only when the peer is a trusted proxy); a denial is a value the
//! HTTP layer renders as 429, never a panic or a silent drop. The buckets live in a
//! [`BoundedMap`], so callers inventing keys cannot grow memory past
//! `RATE_LIMIT_MAX_CALLERS`: a forgotten bucket is a full one, so eviction takes the
//! fullest first.

pub mod bounded;
mod config;
pub mod failures;

pub use config::RateLimitConfig;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use ipnet::IpNet;

use self::bounded::BoundedMap;

/// Who a rate-limit bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// A student, by key: many students behind one NAT each get their own bucket.
    Holder(String),
    /// A caller without a holder key, by client address.
    Address(IpAddr),
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more requests fit in the burst now.
    Allowed {
        /// Requests left in the bucket.
        remaining: u32,
    },
    /// Refused; retry after this many whole seconds (at least 1).
    Limited {
        /// Whole seconds until a request would be allowed.
        retry_after_secs: u64,
    },
}

/// governor's bucket state (each bucket's theoretical arrival time) in a [`BoundedMap`].
pub struct BoundedBuckets(BoundedMap<u64>);

impl StateStore for BoundedBuckets {
    type Key = CallerKey;

    fn measure_and_replace<T, F, E>(&self, key: &CallerKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.update(key, |old| match f(old.map(Nanos::from)) {
            Ok((answer, new)) => (Ok(answer), Some(new.as_u64())),
            Err(refused) => (Err(refused), old),
        })
    }
}

impl ShrinkableKeyedStateStore<CallerKey> for BoundedBuckets {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        self.0.retain(|arrival| *arrival >= drop_below);
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Buckets<C> = governor::RateLimiter<CallerKey, BoundedBuckets, C, StateInformationMiddleware>;

/// A keyed token-bucket limiter.
pub struct RateLimiter<C: Clock = DefaultClock> {
    buckets: Buckets<C>,
    clock: C,
    /// The steady rate, reported in `X-RateLimit-Limit`.
    limit_per_sec: u32,
}

impl RateLimiter<DefaultClock> {
    /// A limiter on the real clock, remembering at most about `max_callers` buckets.
    pub fn new(per_sec: NonZeroU32, burst: NonZeroU32, max_callers: usize) -> Self {
        Self::with_clock(per_sec, burst, max_callers, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// A limiter on `clock`, so tests can move time by hand.
    pub fn with_clock(
        per_sec: NonZeroU32,
        burst: NonZeroU32,
        max_callers: usize,
        clock: C,
    ) -> Self {
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        // The rank is the arrival time: the lowest is the bucket closest to full.
        let state = BoundedBuckets(BoundedMap::new(max_callers, |arrival: &u64| *arrival));
        let buckets = Buckets::<C>::new(quota, state, clock.clone());
        Self {
            buckets,
            clock,
            limit_per_sec: per_sec.get(),
        }
    }

    /// The steady rate in requests per second.
    pub fn limit_per_sec(&self) -> u32 {
        self.limit_per_sec
    }

    /// Takes one token from `caller`'s bucket.
    pub fn check(&self, caller: &CallerKey) -> Decision {
        match self.buckets.check_key(caller) {
            Ok(snapshot) => Decision::Allowed {
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision::Limited {
                    retry_after_secs: whole_seconds_at_least_one(wait),
                }
            }
        }
    }

    /// Forgets buckets that are full again, so memory stays bounded by recent callers.
    pub fn retain_recent(&self) {
        self.buckets.retain_recent();
    }

    /// How many callers have a bucket now.
    pub fn tracked_callers(&self) -> usize {
        self.buckets.len()
    }
}

/// Each lab token's own allocation rate (`per_minute`) on this instance: one bucket per
/// token, at most `MAX_TOKENS` of them, rebuilt when an admin's token changes its rate.
#[derive(Default)]
pub struct TokenRates {
    buckets: std::sync::Mutex<
        std::collections::HashMap<String, (u32, governor::DefaultDirectRateLimiter)>,
    >,
}

impl TokenRates {
    /// Takes one allocation from `token`'s bucket of `per_minute` (the whole minute's
    /// worth may come at once).
    pub fn check(&self, token: &str, per_minute: NonZeroU32) -> Decision {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (rate, bucket) = buckets.entry(token.to_owned()).or_insert_with(|| {
            (
                per_minute.get(),
                governor::RateLimiter::direct(Quota::per_minute(per_minute)),
            )
        });
        if *rate != per_minute.get() {
            *rate = per_minute.get();
            *bucket = governor::RateLimiter::direct(Quota::per_minute(per_minute));
        }
        match bucket.check() {
            Ok(()) => Decision::Allowed { remaining: 0 },
            Err(not_until) => Decision::Limited {
                retry_after_secs: whole_seconds_at_least_one(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ),
            },
        }
    }
}

fn whole_seconds_at_least_one(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(chain) = forwarded_for else {
        return peer;
    };
    let mut hops = chain.split(',').rev().map(str::trim);
    let mut client = peer;
    for hop in hops.by_ref() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // A malformed hop ends what we can believe; the last good address stands.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(per_sec: u32, burst: u32) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(
            NonZeroU32::new(per_sec).unwrap(),
            NonZeroU32::new(burst).unwrap(),
            1_000,
            clock.clone(),
        );
        (limiter, clock)
    }

    #[test]
    fn a_caller_gets_its_burst_then_waits_for_the_steady_rate() {
        let (limiter, clock) = limiter(2, 3);
        let caller = CallerKey::Holder("stu".into());
        let remaining: Vec<_> = (0..3).map(|_| limiter.check(&caller)).collect();
        assert_eq!(
            remaining,
            [2, 1, 0].map(|remaining| Decision::Allowed { remaining })
        );
        assert_eq!(
            limiter.check(&caller),
            Decision::Limited {
                retry_after_secs: 1
            }
        );
        clock.advance(Duration::from_millis(500));
        assert!(matches!(limiter.check(&caller), Decision::Allowed { .. }));
    }

    #[test]
    fn callers_have_separate_buckets() {
        let (limiter, _) = limiter(1, 1);
        assert!(matches!(
            limiter.check(&CallerKey::Holder("a".into())),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            limiter.check(&CallerKey::Holder("b".into())),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            limiter.check(&CallerKey::Holder("a".into())),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn retain_recent_forgets_refilled_buckets() {
        let (limiter, clock) = limiter(10, 10);
        limiter.check(&CallerKey::Holder("a".into()));
        assert_eq!(limiter.tracked_callers(), 1);
        clock.advance(Duration::from_secs(5));
        limiter.retain_recent();
        assert_eq!(limiter.tracked_callers(), 0);
    }

    #[test]
    fn a_flood_of_fresh_keys_neither_grows_memory_nor_frees_a_limited_caller() {
        let (limiter, clock) = limiter(1, 5);
        let heavy = CallerKey::Holder("heavy".into());
        while matches!(limiter.check(&heavy), Decision::Allowed { .. }) {}
        for n in 0..100_000 {
            limiter.check(&CallerKey::Holder(format!("fresh-{n}")));
            if n % 10_000 == 0 {
                clock.advance(Duration::from_millis(1));
            }
        }
        assert!(
            limiter.tracked_callers() <= 1_008,
            "{}",
            limiter.tracked_callers()
        );
        assert!(matches!(limiter.check(&heavy), Decision::Limited { .. }));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let cases = [
            (outsider, Some("1.2.3.4"), "203.0.113.9"),
            (proxy, None, "10.1.2.3"),
            (proxy, Some("1.2.3.4"), "1.2.3.4"),
            (proxy, Some("6.6.6.6, 1.2.3.4, 10.9.9.9"), "1.2.3.4"),
            (proxy, Some("garbage, 10.9.9.9"), "10.9.9.9"),
        ];
        for (peer, header, expected) in cases {
            assert_eq!(
                client_address(peer, header, &trusted).to_string(),
                expected,
                "peer {peer} with X-Forwarded-For {header:?}"
            );
        }
    }
}
