//! The rate limit's settings.

use std::num::NonZeroU32;

use clap::Args;

use super::RateLimiter;
use crate::config_values::as_usize;

/// Per-caller token buckets (docs/api.md, *Rate limiting*) and how many callers are remembered.
#[derive(Debug, Clone, Args)]
pub struct RateLimitConfig {
    /// Requests per second each caller may make on the track and admin routes.
    #[arg(
        long,
        env = "RATE_LIMIT_PER_SEC",
        value_name = "RATE_LIMIT_PER_SEC",
        default_value = "50"
    )]
    pub rate_limit_per_sec: NonZeroU32,

    /// How many requests a caller may make at once above the steady rate.
    #[arg(
        long,
        env = "RATE_LIMIT_BURST",
        value_name = "RATE_LIMIT_BURST",
        default_value = "200"
    )]
    pub rate_limit_burst: NonZeroU32,

    /// Requests per second one client address may make on the track routes, whatever
    /// student keys it sends: bounds a script inventing keys. Generous, since a class
    /// behind one NAT address shares it.
    #[arg(
        long,
        env = "RATE_LIMIT_PER_ADDRESS_PER_SEC",
        value_name = "RATE_LIMIT_PER_ADDRESS_PER_SEC",
        default_value = "500"
    )]
    pub rate_limit_per_address_per_sec: NonZeroU32,

    /// How many track requests one client address may make at once above its steady rate
    /// (a class of hundreds starting together behind one address).
    #[arg(
        long,
        env = "RATE_LIMIT_PER_ADDRESS_BURST",
        value_name = "RATE_LIMIT_PER_ADDRESS_BURST",
        default_value = "2000"
    )]
    pub rate_limit_per_address_burst: NonZeroU32,

    /// Most callers (holder keys and client addresses) whose rate-limit bucket is kept;
    /// beyond it the fullest buckets are forgotten, so invented keys cannot grow memory.
    #[arg(long, env = "RATE_LIMIT_MAX_CALLERS", value_name = "RATE_LIMIT_MAX_CALLERS", default_value = "100000", value_parser = clap::value_parser!(u32).range(16..=10_000_000))]
    pub rate_limit_max_callers: u32,
}

impl RateLimitConfig {
    /// Callers remembered at most, by this limiter and by the failure throttle alike.
    pub fn max_callers(&self) -> usize {
        as_usize(self.rate_limit_max_callers)
    }

    /// The per-address limiter of the track routes.
    pub fn address_limiter(&self) -> RateLimiter {
        RateLimiter::new(
            self.rate_limit_per_address_per_sec,
            self.rate_limit_per_address_burst,
            self.max_callers(),
        )
    }

    /// The limiter these settings describe.
    pub fn limiter(&self) -> RateLimiter {
        RateLimiter::new(
            self.rate_limit_per_sec,
            self.rate_limit_burst,
            self.max_callers(),
        )
    }
}
