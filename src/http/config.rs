//! The HTTP edge's settings: where it listens, its routes' prefix, and how long clients
//! and requests may take.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Args;
use ipnet::IpNet;

use super::serve::ConnectionLimits;
use crate::config_values::{as_usize, parse_seconds};
use crate::domain::NamePrefix;

/// The listener, the routes and the connection limits (docs/api.md and `.env.example`).
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address and port the HTTP server listens on.
    #[arg(
        long,
        env = "BROKER_LISTEN_ADDR",
        value_name = "BROKER_LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_addr: SocketAddr,

    /// Prefix of the track and admin routes, e.g. `/v1`.
    #[arg(long, env = "API_BASE_PATH", value_name = "API_BASE_PATH", default_value = "/v1", value_parser = parse_base_path)]
    pub api_base_path: String,

    /// Proxies (CIDRs, comma-separated) whose `X-Forwarded-For` is believed.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        value_name = "TRUSTED_PROXIES",
        default_value = "",
        value_parser = TrustedProxies::parse
    )]
    pub trusted_proxies: TrustedProxies,

    /// Origins allowed by CORS, comma-separated (`https://labs.example.com`), or `*`.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_name = "CORS_ALLOWED_ORIGINS",
        default_value = "*",
        value_parser = CorsOrigins::parse
    )]
    pub cors_allowed_origins: CorsOrigins,

    /// Longest a request may run before it is answered 408; bounds shutdown draining too.
    #[arg(long, env = "REQUEST_TIMEOUT_SEC", value_name = "REQUEST_TIMEOUT_SEC", default_value = "30", value_parser = parse_seconds)]
    pub request_timeout: Duration,

    /// Seconds the pool gauges of `/metrics` are reused before the store is counted again,
    /// however often it is scraped.
    #[arg(long, env = "METRICS_POOL_REFRESH_SEC", value_name = "METRICS_POOL_REFRESH_SEC", default_value = "5", value_parser = parse_seconds)]
    pub metrics_pool_refresh: Duration,

    /// Seconds the dashboard's analytics (`/v1/admin/usage`, `/tracks`, `/niosxaas`) are
    /// reused before the store is read again, however many dashboards are open.
    #[arg(long, env = "ANALYTICS_CACHE_SEC", value_name = "ANALYTICS_CACHE_SEC", default_value = "30", value_parser = parse_seconds)]
    pub analytics_cache: Duration,

    /// Labs with a `lab` label of their own on the per-lab series (the ones whose students
    /// allocated most recently); the rest are counted as `other`.
    #[arg(long, env = "LAB_METRICS_MAX", value_name = "LAB_METRICS_MAX", default_value = "50", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub lab_metrics_max: u32,

    /// Allocation requests that may wait at once on this instance (`Prefer: wait=N`, when
    /// nothing is available); a request beyond it gets its 409 at once.
    #[arg(long, env = "WAIT_QUEUE_MAX", value_name = "WAIT_QUEUE_MAX", default_value = "1000", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub wait_queue_max: u32,

    /// Name prefixes (comma-separated, at most 20) whose available sandboxes `/metrics`
    /// counts as `broker_pool_available_by_prefix{prefix}`: the pools labs draw from with
    /// `X-Sandbox-Name-Prefix`, so an alert can say which one runs low.
    #[arg(
        long,
        env = "METRICS_POOL_PREFIXES",
        value_name = "METRICS_POOL_PREFIXES",
        default_value = "",
        value_parser = PoolPrefixes::parse
    )]
    pub metrics_pool_prefixes: PoolPrefixes,

    /// Low watermarks per name prefix, `prefix:count` comma-separated (`lab-:50,nios-:20`):
    /// fewer available than the count sets `broker_pool_below_watermark{prefix}` and logs a
    /// WARN. Each prefix also gets a forecast (`broker_pool_time_to_empty_seconds`).
    #[arg(
        long,
        env = "POOL_LOW_WATERMARKS",
        value_name = "POOL_LOW_WATERMARKS",
        default_value = "",
        value_parser = PoolWatermarks::parse
    )]
    pub pool_low_watermarks: PoolWatermarks,

    /// Seconds a client may take to send a request's line and headers, from its first byte;
    /// slower clients are disconnected.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SEC", value_name = "HEADER_READ_TIMEOUT_SEC", default_value = "10", value_parser = parse_seconds)]
    pub header_read_timeout: Duration,

    /// Seconds an idle keep-alive connection is kept open. Keep it above the load
    /// balancer's idle timeout (60 s on an ALB), or the balancer reuses closed connections.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT_SEC", value_name = "KEEP_ALIVE_TIMEOUT_SEC", default_value = "75", value_parser = parse_seconds)]
    pub keep_alive_timeout: Duration,

    /// Most client connections open at once; beyond it new ones are answered 503 and closed.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS", default_value = "4096", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

impl HttpConfig {
    /// What the accept loop enforces per connection.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            keep_alive_timeout: self.keep_alive_timeout,
            max_connections: as_usize(self.max_connections),
        }
    }
}

/// Networks whose `X-Forwarded-For` is believed; blank means none.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Comma-separated CIDRs (`10.0.0.0/8`) or single addresses; blank entries are ignored.
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("{entry:?} is not a CIDR like 10.0.0.0/8 or an IP address")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// The name prefixes the per-prefix pool gauges count, in the order given, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolPrefixes(pub Vec<NamePrefix>);

impl PoolPrefixes {
    /// Most prefixes one instance counts: each is one index query per refresh.
    pub const MAX: usize = 20;

    /// A comma-separated list of name prefixes; empty means none.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut prefixes: Vec<NamePrefix> = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let prefix =
                NamePrefix::parse("METRICS_POOL_PREFIXES", entry).map_err(|err| err.to_string())?;
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        if prefixes.len() > Self::MAX {
            return Err(format!(
                "at most {} prefixes, got {}",
                Self::MAX,
                prefixes.len()
            ));
        }
        Ok(Self(prefixes))
    }
}

/// Low watermarks per name prefix, in the order given, each prefix once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolWatermarks(pub Vec<(NamePrefix, u64)>);

impl PoolWatermarks {
    /// `prefix:count` entries, comma-separated; empty means none.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut marks: Vec<(NamePrefix, u64)> = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (prefix, count) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("{entry:?} is not prefix:count"))?;
            let prefix = NamePrefix::parse("POOL_LOW_WATERMARKS", prefix.trim())
                .map_err(|err| err.to_string())?;
            let count = count
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{entry:?}: the count is not a whole number"))?;
            if marks.iter().any(|(seen, _)| *seen == prefix) {
                return Err(format!("{} is given twice", prefix.as_str()));
            }
            marks.push((prefix, count));
        }
        if marks.len() > PoolPrefixes::MAX {
            return Err(format!(
                "at most {} prefixes, got {}",
                PoolPrefixes::MAX,
                marks.len()
            ));
        }
        Ok(Self(marks))
    }
}

/// The CORS origins: empty means any origin (`*`).
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<HeaderValue>);

impl CorsOrigins {
    /// `*`, or a comma-separated list of `scheme://host[:port]` origins.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim() == "*" {
            return Ok(Self::default());
        }
        let origins = raw
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(parse_origin)
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err("must be * or at least one origin".into());
        }
        Ok(Self(origins))
    }
}

fn parse_origin(origin: &str) -> Result<HeaderValue, String> {
    let invalid = || format!("{origin:?} is not an origin like https://labs.example.com");
    let (scheme, host) = origin.split_once("://").ok_or_else(invalid)?;
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

fn parse_base_path(raw: &str) -> Result<String, String> {
    let path = raw.trim().trim_end_matches('/');
    let valid_segment = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if path.is_empty() || (path.starts_with('/') && path[1..].split('/').all(valid_segment)) {
        Ok(path.to_owned())
    } else {
        Err("must look like /v1 (segments of letters, digits, '-', '_', '.')".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_prefixes_are_trimmed_deduplicated_checked_and_bounded() {
        let names = |raw: &str| {
            PoolPrefixes::parse(raw).map(|p| {
                p.0.iter()
                    .map(|n| n.as_str().to_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(names(""), Ok(vec![]));
        assert_eq!(
            names(" dns- ,sec-,,dns-"),
            Ok(vec!["dns-".into(), "sec-".into()])
        );
        assert!(names("caf\u{e9}-").is_err(), "the header's character rules");
        let many: Vec<String> = (0..=PoolPrefixes::MAX).map(|n| format!("p{n}-")).collect();
        assert!(names(&many.join(",")).unwrap_err().contains("at most 20"));
    }

    #[test]
    fn base_paths_are_normalised_and_checked() {
        assert_eq!(parse_base_path("/v1/").as_deref(), Ok("/v1"));
        assert_eq!(parse_base_path("/api/v1").as_deref(), Ok("/api/v1"));
        assert_eq!(parse_base_path("").as_deref(), Ok(""));
        for bad in ["v1", "/v 1", "//v1", "/v1/{x}"] {
            assert!(parse_base_path(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn trusted_proxies_accept_blank_cidrs_and_addresses() {
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
        let parsed = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7,,::1").unwrap();
        let shown: Vec<String> = parsed.0.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
        assert!(TrustedProxies::parse("10.0.0.0/99").is_err());
    }

    #[test]
    fn cors_origins_are_checked() {
        let origins = CorsOrigins::parse("https://a.example, http://b:8080").unwrap();
        assert_eq!(origins.0.len(), 2);
        for bad in ["a.example", "ftp://a", "https://a/path", " , ", "https://"] {
            assert!(CorsOrigins::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
