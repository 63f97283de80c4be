//! Typed configuration, parsed once from flags, the environment and an optional `.env`.
//!
//! Rule: every setting is read here and nowhere else; a bad value stops start-up with a
//! message naming the variable (each `value_name` is the variable's name, so clap's own
//! errors name it too), and no secret has a usable default outside demo mode.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::LabPolicy;
use crate::store::dynamo::schema::{IDEMPOTENCY_INDEX, STATUS_INDEX, TRACK_INDEX};

/// The contract's default table name.
const DEFAULT_TABLE: &str = "SandboxPool";

/// The `sandbox-broker` command line.
#[derive(Debug, Parser)]
#[command(
    name = "sandbox-broker",
    version,
    about = "Hands out cloud sandboxes to lab students"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of contract §7.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (HTTP API) with the configured store.
    Serve(Config),
    /// Run the service on a scratch embedded store with a demo pool and printed demo tokens.
    Demo(Config),
    /// Create the DynamoDB table and its indexes if missing (idempotent), then exit.
    InitTable(Config),
}

/// Which store backs the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded redb store in `BROKER_DATA_DIR`.
    Embedded,
    /// A DynamoDB table (`DDB_TABLE_NAME`), shared by a fleet of instances.
    Dynamodb,
}

/// Log line format (owned by telemetry, which the configuration sits above).
pub use crate::telemetry::LogFormat;

/// Every setting of the service (contract §6).
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    #[arg(
        long,
        env = "BROKER_LISTEN_ADDR",
        value_name = "BROKER_LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen_addr: SocketAddr,

    /// Which store to use. Unset: `dynamodb` when DDB_TABLE_NAME or DDB_ENDPOINT_URL is
    /// set (the Python service's environment starts on its table), else `embedded`.
    #[arg(long, env = "BROKER_STORE", value_name = "BROKER_STORE", value_enum)]
    pub store: Option<StoreKind>,

    /// Directory of the embedded store.
    #[arg(
        long,
        env = "BROKER_DATA_DIR",
        value_name = "BROKER_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// Track token(s), comma-separated so a token can be rotated without downtime.
    #[arg(long, env = "BROKER_API_TOKEN", value_name = "BROKER_API_TOKEN", hide_env_values = true, value_parser = TokenList::parse)]
    pub api_token: Option<TokenList>,

    /// Admin token(s), comma-separated.
    #[arg(long, env = "BROKER_ADMIN_TOKEN", value_name = "BROKER_ADMIN_TOKEN", hide_env_values = true, value_parser = TokenList::parse)]
    pub admin_token: Option<TokenList>,

    /// Prefix of the track and admin routes, e.g. `/v1`.
    #[arg(long, env = "API_BASE_PATH", value_name = "API_BASE_PATH", default_value = "/v1", value_parser = parse_base_path)]
    pub api_base_path: String,

    /// How long a lab lasts; `expires_at = allocated_at + this`. 0 is allowed.
    #[arg(
        long,
        env = "LAB_DURATION_HOURS",
        value_name = "LAB_DURATION_HOURS",
        default_value_t = 48
    )]
    pub lab_duration_hours: u32,

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

    /// Log filter: a level, any case, Python's names included (`DEBUG`, `INFO`,
    /// `WARNING`, `ERROR`, `CRITICAL`), or `tracing` directives (`sandbox_broker=debug,info`).
    #[arg(
        long,
        env = "LOG_LEVEL",
        value_name = "LOG_LEVEL",
        default_value = "info",
        value_parser = parse_log_level
    )]
    pub log_level: String,

    /// Log line format. Unset: `json` for `serve` and `init-table` (as the Python service,
    /// so CloudWatch filters match), `text` for `demo`.
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Longest a request may run before it is answered 408; bounds shutdown draining too.
    #[arg(long, env = "REQUEST_TIMEOUT_SEC", value_name = "REQUEST_TIMEOUT_SEC", default_value = "30", value_parser = parse_seconds)]
    pub request_timeout: Duration,

    /// DynamoDB table of the `dynamodb` store (default `SandboxPool`); setting it selects
    /// that store when BROKER_STORE is unset.
    #[arg(long, env = "DDB_TABLE_NAME", value_name = "DDB_TABLE_NAME")]
    pub ddb_table_name: Option<String>,

    /// The Python service's name for `StatusIndex`; only that name is supported.
    #[arg(long, env = "DDB_GSI1_NAME", value_name = "DDB_GSI1_NAME", default_value = STATUS_INDEX)]
    pub ddb_gsi1_name: String,

    /// The Python service's name for `TrackIndex`; only that name is supported.
    #[arg(long, env = "DDB_GSI2_NAME", value_name = "DDB_GSI2_NAME", default_value = TRACK_INDEX)]
    pub ddb_gsi2_name: String,

    /// The Python service's name for `IdempotencyIndex`; only that name is supported.
    #[arg(long, env = "DDB_GSI3_NAME", value_name = "DDB_GSI3_NAME", default_value = IDEMPOTENCY_INDEX)]
    pub ddb_gsi3_name: String,

    /// DynamoDB endpoint override, e.g. `http://127.0.0.1:8000` for DynamoDB Local.
    #[arg(long, env = "DDB_ENDPOINT_URL", value_name = "DDB_ENDPOINT_URL")]
    pub ddb_endpoint_url: Option<String>,

    /// AWS region of the table (else the SDK's usual sources).
    #[arg(long, env = "AWS_REGION", value_name = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Candidate claims one allocation tries back to back, after losing races, before a
    /// short jittered pause (it keeps trying until ALLOCATE_DEADLINE_SEC).
    #[arg(long, env = "K_CANDIDATES", value_name = "K_CANDIDATES", default_value = "15", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub k_candidates: u32,

    /// First retry delay (ms) of a throttled or failed DynamoDB call; jittered, doubling.
    #[arg(long, env = "BACKOFF_BASE_MS", value_name = "BACKOFF_BASE_MS", default_value = "25", value_parser = parse_millis)]
    pub backoff_base: Duration,

    /// Longest retry delay (ms) of a DynamoDB call.
    #[arg(long, env = "BACKOFF_MAX_MS", value_name = "BACKOFF_MAX_MS", default_value = "400", value_parser = parse_millis)]
    pub backoff_max: Duration,

    /// DynamoDB connect timeout (ms).
    #[arg(long, env = "DDB_CONNECT_TIMEOUT_MS", value_name = "DDB_CONNECT_TIMEOUT_MS", default_value = "300", value_parser = parse_millis)]
    pub ddb_connect_timeout: Duration,

    /// Ceiling of the adaptive limit on operations talking to DynamoDB at once; more wait
    /// their turn in this process, in arrival order.
    #[arg(long, env = "DDB_MAX_CONCURRENCY", value_name = "DDB_MAX_CONCURRENCY", default_value = "128", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ddb_max_concurrency: u32,

    /// Infoblox CSP API base URL.
    #[arg(
        long,
        env = "CSP_BASE_URL",
        value_name = "CSP_BASE_URL",
        default_value = "https://csp.infoblox.com/v2"
    )]
    pub csp_base_url: String,

    /// CSP API token; without it the provider jobs (sync, cleanup) are off and only imports fill the pool.
    #[arg(
        long,
        env = "CSP_API_TOKEN",
        value_name = "CSP_API_TOKEN",
        hide_env_values = true
    )]
    pub csp_api_token: Option<SecretString>,

    /// CSP connect timeout in seconds.
    #[arg(long, env = "CSP_TIMEOUT_CONNECT_SEC", value_name = "CSP_TIMEOUT_CONNECT_SEC", default_value = "5", value_parser = parse_seconds)]
    pub csp_connect_timeout: Duration,

    /// CSP read timeout in seconds (the whole request).
    #[arg(long, env = "CSP_TIMEOUT_READ_SEC", value_name = "CSP_TIMEOUT_READ_SEC", default_value = "15", value_parser = parse_seconds)]
    pub csp_read_timeout: Duration,

    /// Consecutive provider failures that open the circuit breaker.
    #[arg(long, env = "CIRCUIT_BREAKER_THRESHOLD", value_name = "CIRCUIT_BREAKER_THRESHOLD", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub circuit_breaker_threshold: u32,

    /// Seconds the breaker stays open before one probe call decides.
    #[arg(long, env = "CIRCUIT_BREAKER_TIMEOUT_SEC", value_name = "CIRCUIT_BREAKER_TIMEOUT_SEC", default_value = "60", value_parser = parse_seconds)]
    pub circuit_breaker_timeout: Duration,

    /// Seconds between provider syncs.
    #[arg(long, env = "SYNC_INTERVAL_SEC", value_name = "SYNC_INTERVAL_SEC", default_value = "600", value_parser = parse_seconds)]
    pub sync_interval: Duration,

    /// Seconds between cleanup runs (deletion at the provider).
    #[arg(long, env = "CLEANUP_INTERVAL_SEC", value_name = "CLEANUP_INTERVAL_SEC", default_value = "300", value_parser = parse_seconds)]
    pub cleanup_interval: Duration,

    /// Sandboxes deleted per batch.
    #[arg(long, env = "CLEANUP_BATCH_SIZE", value_name = "CLEANUP_BATCH_SIZE", default_value = "10", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub cleanup_batch_size: u32,

    /// Seconds to wait between batches (fractions allowed).
    #[arg(long, env = "CLEANUP_BATCH_DELAY_SEC", value_name = "CLEANUP_BATCH_DELAY_SEC", default_value = "2.0", value_parser = parse_fractional_seconds)]
    pub cleanup_batch_delay: Duration,

    /// Seconds to wait between two sandboxes of a batch (fractions allowed).
    #[arg(long, env = "CLEANUP_PER_SANDBOX_DELAY_SEC", value_name = "CLEANUP_PER_SANDBOX_DELAY_SEC", default_value = "0.0", value_parser = parse_fractional_seconds)]
    pub cleanup_per_sandbox_delay: Duration,

    /// Permanent provider refusals before a sandbox becomes `deletion_failed`.
    #[arg(long, env = "DELETION_RETRY_MAX_ATTEMPTS", value_name = "DELETION_RETRY_MAX_ATTEMPTS", default_value = "3", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub deletion_retry_max_attempts: u32,

    /// First retry delay (seconds) after a failed deletion; doubles per try, up to an hour.
    #[arg(long, env = "DELETION_RETRY_BACKOFF_SEC", value_name = "DELETION_RETRY_BACKOFF_SEC", default_value = "60", value_parser = parse_seconds)]
    pub deletion_retry_backoff: Duration,

    /// Hours of transient failures after which a sandbox becomes `deletion_failed`.
    #[arg(long, env = "DELETION_GIVE_UP_HOURS", value_name = "DELETION_GIVE_UP_HOURS", default_value = "24", value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub deletion_give_up_hours: u32,

    /// Days a `deleted` tombstone stays visible to its owner (its `ttl`).
    #[arg(long, env = "DELETED_TTL_DAYS", value_name = "DELETED_TTL_DAYS", default_value = "30", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub deleted_ttl_days: u32,

    /// Seconds between scheduled stale removals (the first comes soon after start-up).
    #[arg(long, env = "AUTO_DELETE_STALE_INTERVAL_SEC", value_name = "AUTO_DELETE_STALE_INTERVAL_SEC", default_value = "86400", value_parser = parse_seconds)]
    pub auto_delete_stale_interval: Duration,

    /// Hours a row stays `stale` before the scheduled job removes it.
    #[arg(long, env = "AUTO_DELETE_STALE_GRACE_HOURS", value_name = "AUTO_DELETE_STALE_GRACE_HOURS", default_value = "24", value_parser = clap::value_parser!(u32).range(0..=87_600))]
    pub auto_delete_stale_grace_hours: u32,

    /// Seconds between auto-expiry runs.
    #[arg(long, env = "AUTO_EXPIRY_INTERVAL_SEC", value_name = "AUTO_EXPIRY_INTERVAL_SEC", default_value = "300", value_parser = parse_seconds)]
    pub auto_expiry_interval: Duration,

    /// Minutes after `expires_at` before auto-expiry releases an allocation.
    #[arg(
        long,
        env = "GRACE_PERIOD_MINUTES",
        value_name = "GRACE_PERIOD_MINUTES",
        default_value_t = 30
    )]
    pub grace_period_minutes: u32,

    /// Seconds a job's lease lasts without renewal; a holder that dies is replaced after this.
    #[arg(long, env = "JOB_LEASE_SEC", value_name = "JOB_LEASE_SEC", default_value = "60", value_parser = parse_seconds)]
    pub job_lease: Duration,

    /// This instance's name in job leases (default: host name plus a random suffix).
    #[arg(long, env = "INSTANCE_ID", value_name = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Run the NIOSXaaS pre-delete hook (delete a sandbox's universal services before the account).
    #[arg(long, env = "NIOSXAAS_ENABLED", value_name = "NIOSXAAS_ENABLED", default_value = "false", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub niosxaas_enabled: bool,

    /// Shadow mode: the hook only lists, logs and counts the services it would delete.
    #[arg(long, env = "NIOSXAAS_SHADOW_MODE", value_name = "NIOSXAAS_SHADOW_MODE", default_value = "true", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub niosxaas_shadow_mode: bool,

    /// Base URL of the CSP session and universal-infra APIs the hook calls.
    #[arg(
        long,
        env = "NIOSXAAS_BASE_URL",
        value_name = "NIOSXAAS_BASE_URL",
        default_value = "https://csp.infoblox.com"
    )]
    pub niosxaas_base_url: String,

    /// Service account that signs in and switches into sandbox accounts.
    #[arg(long, env = "NIOSXAAS_EMAIL", value_name = "NIOSXAAS_EMAIL")]
    pub niosxaas_email: Option<String>,

    /// That account's password.
    #[arg(
        long,
        env = "NIOSXAAS_PASSWORD",
        value_name = "NIOSXAAS_PASSWORD",
        hide_env_values = true
    )]
    pub niosxaas_password: Option<SecretString>,

    /// Name of the universal services to delete (`*`: every one in the sandbox account).
    #[arg(
        long,
        env = "NIOSXAAS_SERVICE_NAME",
        value_name = "NIOSXAAS_SERVICE_NAME"
    )]
    pub niosxaas_service_name: Option<String>,

    /// Seconds one NIOSXaaS call may take.
    #[arg(long, env = "NIOSXAAS_TIMEOUT_SEC", value_name = "NIOSXAAS_TIMEOUT_SEC", default_value = "30", value_parser = parse_seconds)]
    pub niosxaas_timeout: Duration,

    /// DynamoDB calls slower than this (ms) on average shrink the adaptive concurrency
    /// limit; faster ones let it grow up to DDB_MAX_CONCURRENCY.
    #[arg(long, env = "DDB_LATENCY_TARGET_MS", value_name = "DDB_LATENCY_TARGET_MS", default_value = "50", value_parser = parse_millis)]
    pub ddb_latency_target: Duration,

    /// Seconds one allocation (or other store operation) may wait for a slow DynamoDB,
    /// queueing and retrying, before it answers 503.
    #[arg(long, env = "ALLOCATE_DEADLINE_SEC", value_name = "ALLOCATE_DEADLINE_SEC", default_value = "10", value_parser = parse_seconds)]
    pub allocate_deadline: Duration,

    /// A DynamoDB call attempt (ms) that gets no answer while the table answers others is
    /// sent again.
    #[arg(long, env = "DDB_ATTEMPT_TIMEOUT_MS", value_name = "DDB_ATTEMPT_TIMEOUT_MS", default_value = "3000", value_parser = parse_millis)]
    pub ddb_attempt_timeout: Duration,

    /// No useful answer from DynamoDB to any call for this long (ms) means it is down:
    /// 503 at once until it answers again. Keeps an outage's 503 under 2 s.
    #[arg(long, env = "DDB_STALL_TIMEOUT_MS", value_name = "DDB_STALL_TIMEOUT_MS", default_value = "1000", value_parser = parse_millis)]
    pub ddb_stall_timeout: Duration,

    /// Most callers (student keys and client addresses) whose rate-limit bucket is kept;
    /// beyond it the fullest buckets are forgotten, so invented keys cannot grow memory.
    #[arg(long, env = "RATE_LIMIT_MAX_CALLERS", value_name = "RATE_LIMIT_MAX_CALLERS", default_value = "100000", value_parser = clap::value_parser!(u32).range(16..=10_000_000))]
    pub rate_limit_max_callers: u32,

    /// Failed authentications a client address may make per AUTH_FAILURE_WINDOW_SEC; after
    /// that its requests to authenticated routes answer 429 until the window ends.
    #[arg(
        long,
        env = "AUTH_FAILURE_LIMIT",
        value_name = "AUTH_FAILURE_LIMIT",
        default_value = "20"
    )]
    pub auth_failure_limit: NonZeroU32,

    /// The window of AUTH_FAILURE_LIMIT, in seconds.
    #[arg(long, env = "AUTH_FAILURE_WINDOW_SEC", value_name = "AUTH_FAILURE_WINDOW_SEC", default_value = "60", value_parser = parse_seconds)]
    pub auth_failure_window: Duration,

    /// Bearer token(s) `/metrics` requires, comma-separated. Unset: `/metrics` is open, so
    /// keep it off the public listener (terraform's ALB answers it 404).
    #[arg(long, env = "METRICS_TOKEN", value_name = "METRICS_TOKEN", hide_env_values = true, value_parser = TokenList::parse)]
    pub metrics_token: Option<TokenList>,

    /// Seconds the pool gauges of `/metrics` are reused before the store is counted again,
    /// however often it is scraped.
    #[arg(long, env = "METRICS_POOL_REFRESH_SEC", value_name = "METRICS_POOL_REFRESH_SEC", default_value = "5", value_parser = parse_seconds)]
    pub metrics_pool_refresh: Duration,

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

    /// Let CSP_BASE_URL and NIOSXAAS_BASE_URL be plain `http://` (local simulators only);
    /// otherwise they must be `https://`, since the provider token and password go there.
    #[arg(long, env = "ALLOW_HTTP_UPSTREAMS", value_name = "ALLOW_HTTP_UPSTREAMS", default_value = "false", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_http_upstreams: bool,
}

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required secret is not set.
    #[error("{0} must be set (one or more comma-separated tokens)")]
    Missing(&'static str),
    /// A setting is invalid in combination with another.
    #[error("{variable}: {reason}")]
    Invalid {
        /// The variable at fault.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// The store to run on, and why: `BROKER_STORE`, else `dynamodb` when a table is
    /// configured (DDB_TABLE_NAME or DDB_ENDPOINT_URL), else `embedded` (contract §6).
    pub fn store_choice(&self) -> (StoreKind, &'static str) {
        match self.store {
            Some(kind) => (kind, "BROKER_STORE"),
            None if self.ddb_table_name.is_some() || self.ddb_endpoint_url.is_some() => (
                StoreKind::Dynamodb,
                "BROKER_STORE is unset and DDB_TABLE_NAME or DDB_ENDPOINT_URL is set",
            ),
            None => (
                StoreKind::Embedded,
                "BROKER_STORE is unset and no DynamoDB table is configured",
            ),
        }
    }

    /// The store to run on (see [`Self::store_choice`]).
    pub fn store_kind(&self) -> StoreKind {
        self.store_choice().0
    }

    /// `DDB_TABLE_NAME`, or the contract's default `SandboxPool`.
    pub fn table_name(&self) -> &str {
        self.ddb_table_name.as_deref().unwrap_or(DEFAULT_TABLE)
    }

    /// Refuses index names other than the contract's: the service queries its indexes by
    /// those names, and renaming a GSI is not something DynamoDB can do in place.
    pub fn validate_index_names(&self) -> Result<(), ConfigError> {
        let names = [
            ("DDB_GSI1_NAME", &self.ddb_gsi1_name, STATUS_INDEX),
            ("DDB_GSI2_NAME", &self.ddb_gsi2_name, TRACK_INDEX),
            ("DDB_GSI3_NAME", &self.ddb_gsi3_name, IDEMPOTENCY_INDEX),
        ];
        for (variable, value, expected) in names {
            if value != expected {
                return Err(ConfigError::Invalid {
                    variable,
                    reason: format!(
                        "must be {expected} (the contract's index name, which this service queries); other names are not supported"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks what `serve` needs beyond parsing: both token lists, and no token in both.
    pub fn validate_for_serve(&self) -> Result<(), ConfigError> {
        self.validate_index_names()?;
        let track = self
            .api_token
            .as_ref()
            .ok_or(ConfigError::Missing("BROKER_API_TOKEN"))?;
        let admin = self
            .admin_token
            .as_ref()
            .ok_or(ConfigError::Missing("BROKER_ADMIN_TOKEN"))?;
        for (variable, list) in [("BROKER_API_TOKEN", track), ("BROKER_ADMIN_TOKEN", admin)] {
            list.check_for_serve()
                .map_err(|reason| ConfigError::Invalid { variable, reason })?;
        }
        if let Some(metrics) = &self.metrics_token {
            metrics
                .check_for_serve()
                .map_err(|reason| ConfigError::Invalid {
                    variable: "METRICS_TOKEN",
                    reason,
                })?;
        }
        if self.csp_api_token.is_some() {
            self.check_upstream_scheme("CSP_BASE_URL", &self.csp_base_url)?;
        }
        if self.niosxaas_enabled {
            self.check_upstream_scheme("NIOSXAAS_BASE_URL", &self.niosxaas_base_url)?;
        }
        if track.tokens().any(|t| admin.tokens().any(|a| a == t)) {
            return Err(ConfigError::Invalid {
                variable: "BROKER_ADMIN_TOKEN",
                reason: "must not contain a token that is also in BROKER_API_TOKEN".into(),
            });
        }
        Ok(())
    }

    /// Refuses a base URL that is not `https://` (credentials are sent there) unless
    /// ALLOW_HTTP_UPSTREAMS is set, and then only `http://` besides.
    fn check_upstream_scheme(&self, variable: &'static str, url: &str) -> Result<(), ConfigError> {
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("https") => Ok(()),
            Some("http") if self.allow_http_upstreams => Ok(()),
            Some("http") => Err(ConfigError::Invalid {
                variable,
                reason: "must be an https:// URL (credentials are sent there); set ALLOW_HTTP_UPSTREAMS=true only for a local simulator".into(),
            }),
            _ => Err(ConfigError::Invalid {
                variable,
                reason: "must be an https:// URL".into(),
            }),
        }
    }

    /// Every setting at its declared default: the clap definitions parsed from an empty
    /// command line with the environment ignored, so what tests start from is what `serve`
    /// would run with, never a copy of it.
    pub fn declared_defaults() -> Result<Self, clap::Error> {
        let command = Self::augment_args(clap::Command::new("defaults"))
            .mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(["defaults"])?;
        Self::from_arg_matches(&matches)
    }

    /// A configuration for tests and the benchmark, independent of the environment: the
    /// declared defaults with these overrides: loopback port 0, the given tokens, the
    /// embedded store, text logs, no effective rate limit or failure throttle, no pause
    /// between cleanup batches, and plain `http://` allowed for the simulators on loopback.
    pub fn for_tests(data_dir: PathBuf, track_token: &str, admin_token: &str) -> Self {
        let defaults = Self::declared_defaults()
            .unwrap_or_else(|err| panic!("the declared defaults do not parse: {err}"));
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: Some(StoreKind::Embedded),
            data_dir,
            api_token: TokenList::parse(track_token).ok(),
            admin_token: TokenList::parse(admin_token).ok(),
            log_format: Some(LogFormat::Text),
            rate_limit_per_sec: NonZeroU32::MAX,
            rate_limit_burst: NonZeroU32::MAX,
            auth_failure_limit: NonZeroU32::MAX,
            cleanup_batch_delay: Duration::ZERO,
            allow_http_upstreams: true,
            ..defaults
        }
    }

    /// The CSP client's settings, when a token is configured.
    pub fn csp_settings(&self) -> Option<crate::provider::client::CspSettings> {
        Some(crate::provider::client::CspSettings {
            base_url: self.csp_base_url.clone(),
            token: self.csp_api_token.clone()?,
            connect_timeout: self.csp_connect_timeout,
            read_timeout: self.csp_read_timeout,
            allow_http: self.allow_http_upstreams,
        })
    }

    /// The NIOSXaaS hook's settings: `None` while `NIOSXAAS_ENABLED` is false; an error
    /// naming the variable when it is enabled without what it needs.
    pub fn niosxaas_settings(
        &self,
    ) -> Result<Option<crate::provider::niosxaas::NiosxaasSettings>, ConfigError> {
        use crate::provider::niosxaas::{NiosxaasSettings, ServiceSelector};
        if !self.niosxaas_enabled {
            return Ok(None);
        }
        let needed = |variable: &'static str| ConfigError::Invalid {
            variable,
            reason: "must be set when NIOSXAAS_ENABLED is true".into(),
        };
        let email = self
            .niosxaas_email
            .as_deref()
            .map(str::trim)
            .filter(|email| !email.is_empty())
            .ok_or_else(|| needed("NIOSXAAS_EMAIL"))?;
        let password = self
            .niosxaas_password
            .clone()
            .filter(|password| !password.expose_secret().trim().is_empty())
            .ok_or_else(|| needed("NIOSXAAS_PASSWORD"))?;
        let services = ServiceSelector::parse(self.niosxaas_service_name.as_deref().unwrap_or(""))
            .ok_or_else(|| ConfigError::Invalid {
                variable: "NIOSXAAS_SERVICE_NAME",
                reason: "must name the universal services to delete (or `*` for every one) \
                         when NIOSXAAS_ENABLED is true"
                    .into(),
            })?;
        Ok(Some(NiosxaasSettings {
            base_url: self.niosxaas_base_url.clone(),
            email: email.to_owned(),
            password,
            services,
            timeout: self.niosxaas_timeout,
            connect_timeout: self.csp_connect_timeout,
            shadow_mode: self.niosxaas_shadow_mode,
            allow_http: self.allow_http_upstreams,
            breaker_threshold: self.circuit_breaker_threshold,
            breaker_timeout: self.circuit_breaker_timeout,
        }))
    }

    /// The name this instance uses in job leases.
    pub fn instance_name(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "broker".into());
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &suffix[..8])
        })
    }

    /// When allocations expire: `LAB_DURATION_HOURS` for those this service did not
    /// record one for, and `GRACE_PERIOD_MINUTES`.
    pub fn lab_policy(&self) -> LabPolicy {
        LabPolicy {
            lab_duration_hours: self.lab_duration_hours,
            grace_secs: i64::from(self.grace_period_minutes) * 60,
        }
    }

    /// The `dynamodb` store's settings.
    pub fn dynamo_settings(&self) -> crate::store::dynamo::DynamoSettings {
        crate::store::dynamo::DynamoSettings {
            table: self.table_name().to_owned(),
            endpoint_url: self.ddb_endpoint_url.clone(),
            region: self.aws_region.clone(),
            k_candidates: usize::try_from(self.k_candidates).unwrap_or(usize::MAX),
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            connect_timeout: self.ddb_connect_timeout,
            attempt_timeout: self.ddb_attempt_timeout,
            stall_timeout: self.ddb_stall_timeout,
            deadline: self.allocate_deadline,
            max_concurrency: usize::try_from(self.ddb_max_concurrency).unwrap_or(usize::MAX),
            latency_target: self.ddb_latency_target,
            list_evaluate_max: crate::store::dynamo::LIST_EVALUATE_PER_REQUEST,
        }
    }
}

/// Shortest token `serve` accepts: a guessable token is no token.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Token values that were published (this project's `.env.example`, the Python service's
/// defaults) and so protect nothing.
const KNOWN_PLACEHOLDERS: [&str; 4] = [
    "change-me-track-token",
    "change-me-admin-token",
    "dev_token_change_me",
    "admin_token_change_me",
];

/// One or more bearer tokens; the `Debug` form never shows them.
///
/// Parsing never fails: clap would quote the rejected value (the whole token list) in its
/// error, and that error reaches the logs. A malformed list is kept with its problem, and
/// [`Config::validate_for_serve`] refuses it naming only the variable and the rule.
#[derive(Debug, Clone)]
pub struct TokenList {
    tokens: Vec<SecretString>,
    problem: Option<&'static str>,
}

impl TokenList {
    /// Reads a comma-separated list; blanks around commas are ignored.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let tokens: Vec<SecretString> = raw
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(SecretString::from)
            .collect();
        let problem = if tokens.is_empty() {
            Some("must hold at least one token")
        } else if tokens.iter().any(|t| {
            t.expose_secret()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        }) {
            Some("tokens must not contain spaces or control characters")
        } else {
            None
        };
        Ok(Self { tokens, problem })
    }

    /// The tokens, exposed for comparison only.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|t| t.expose_secret())
    }

    /// What `serve` requires of a token list, as a rule that never quotes a token: well
    /// formed, every token at least [`MIN_TOKEN_CHARS`] characters and not a published
    /// placeholder.
    pub fn check_for_serve(&self) -> Result<(), String> {
        if let Some(problem) = self.problem {
            return Err(problem.to_owned());
        }
        if self.tokens().any(|t| t.chars().count() < MIN_TOKEN_CHARS) {
            return Err(format!(
                "every token must be at least {MIN_TOKEN_CHARS} characters"
            ));
        }
        if self.tokens().any(|t| KNOWN_PLACEHOLDERS.contains(&t)) {
            return Err("a token is a published placeholder (from .env.example or the Python service's defaults); set a secret of your own".into());
        }
        Ok(())
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

/// The CORS origins: empty means any origin (`*`).
#[derive(Debug, Clone, Default)]
pub struct CorsOrigins(pub Vec<axum::http::HeaderValue>);

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

fn parse_origin(origin: &str) -> Result<axum::http::HeaderValue, String> {
    let invalid = || format!("{origin:?} is not an origin like https://labs.example.com");
    let (scheme, host) = origin.split_once("://").ok_or_else(invalid)?;
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
        return Err(invalid());
    }
    axum::http::HeaderValue::from_str(origin).map_err(|_| invalid())
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

/// `LOG_LEVEL` as a `tracing` filter; refuses one that would not parse, at start-up.
fn parse_log_level(raw: &str) -> Result<String, String> {
    let filter = crate::telemetry::filter_directives(raw)?;
    tracing_subscriber::EnvFilter::try_new(&filter)
        .map(|_| filter)
        .map_err(|err| format!("not a valid filter: {err}"))
}

fn parse_millis(raw: &str) -> Result<Duration, String> {
    let millis: u64 = raw.parse().map_err(|err| format!("{err}"))?;
    if millis == 0 {
        return Err("must be at least 1".into());
    }
    Ok(Duration::from_millis(millis))
}

/// Seconds with fractions, 0 to an hour; `Duration::try_from_secs_f64` never panics.
fn parse_fractional_seconds(raw: &str) -> Result<Duration, String> {
    let seconds: f64 = raw.trim().parse().map_err(|err| format!("{err}"))?;
    if !(0.0..=3600.0).contains(&seconds) {
        return Err("must be a number of seconds from 0 to 3600".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|err| err.to_string())
}

fn parse_seconds(raw: &str) -> Result<Duration, String> {
    let seconds: u64 = raw.parse().map_err(|err| format!("{err}"))?;
    if seconds == 0 {
        return Err("must be at least 1".into());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn token_lists_split_on_commas_and_refuse_blanks() {
        let list = TokenList::parse(" hunter2 , b,,").unwrap();
        assert_eq!(list.tokens().collect::<Vec<_>>(), ["hunter2", "b"]);
        for (raw, rule) in [
            (" , ", "at least one"),
            ("a b", "spaces"),
            ("short", "16 characters"),
            ("a-long-enough-token-1,short", "16 characters"),
            ("change-me-track-token", "placeholder"),
            ("dev_token_change_me", "placeholder"),
        ] {
            let refused = TokenList::parse(raw)
                .unwrap()
                .check_for_serve()
                .unwrap_err();
            assert!(refused.contains(rule), "{raw:?}: {refused}");
            assert!(
                !refused.contains(raw.trim()) || raw.trim().is_empty(),
                "the rule quotes the value: {refused}"
            );
        }
        assert!(
            TokenList::parse("a-long-enough-token-1,another-long-token-2")
                .unwrap()
                .check_for_serve()
                .is_ok()
        );
        assert!(
            !format!("{list:?}").contains("hunter2"),
            "Debug leaks a token"
        );
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

    #[test]
    fn serve_needs_both_tokens_and_names_the_missing_one() {
        let mut config = Config::for_tests("/tmp/x".into(), "t", "a");
        config.admin_token = None;
        let err = config.validate_for_serve().unwrap_err().to_string();
        assert!(err.contains("BROKER_ADMIN_TOKEN"), "{err}");
        config.api_token = None;
        let err = config.validate_for_serve().unwrap_err().to_string();
        assert!(err.contains("BROKER_API_TOKEN"), "{err}");
    }

    #[test]
    fn serve_refuses_plain_http_upstreams_unless_allowed_and_checks_the_metrics_token() {
        let mut config = Config::for_tests(
            "/tmp/x".into(),
            "a-long-enough-track-token",
            "a-long-enough-admin-token",
        );
        config.allow_http_upstreams = false;
        config.csp_api_token = Some("csp-token".into());
        config.csp_base_url = "http://csp.internal/v2".into();
        let err = config.validate_for_serve().unwrap_err().to_string();
        assert!(
            err.contains("CSP_BASE_URL") && err.contains("ALLOW_HTTP_UPSTREAMS"),
            "{err}"
        );
        config.allow_http_upstreams = true;
        assert!(config.validate_for_serve().is_ok());
        config.csp_base_url = "ftp://csp.internal".into();
        assert!(config.validate_for_serve().is_err());
        config.csp_base_url = "https://csp.infoblox.com/v2".into();
        config.allow_http_upstreams = false;
        assert!(config.validate_for_serve().is_ok());
        config.metrics_token = TokenList::parse("short").ok();
        let err = config.validate_for_serve().unwrap_err().to_string();
        assert!(err.contains("METRICS_TOKEN") && err.contains("16"), "{err}");
    }

    #[test]
    fn the_declared_defaults_match_the_contract() {
        let Command::Serve(config) = Cli::parse_from(["sandbox-broker", "serve"]).command else {
            panic!("parsed serve")
        };
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.api_base_path, "/v1");
        assert_eq!(config.lab_duration_hours, 48);
        assert_eq!(
            (
                config.rate_limit_per_sec.get(),
                config.rate_limit_burst.get()
            ),
            (50, 200)
        );
        assert!(
            config.cors_allowed_origins.0.is_empty(),
            "* allows any origin"
        );
        assert!(
            !config.allow_http_upstreams,
            "outbound calls are HTTPS-only by default"
        );
        assert!(config.metrics_token.is_none());
        assert_eq!(
            (
                config.header_read_timeout.as_secs(),
                config.keep_alive_timeout.as_secs(),
                config.max_connections,
            ),
            (10, 75, 4096)
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = Cli::try_parse_from(["sandbox-broker", "serve", "--rate-limit-per-sec", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RATE_LIMIT_PER_SEC"), "{err}");
    }

    #[test]
    fn the_niosxaas_hook_is_off_by_default_shadow_when_on_and_refuses_missing_settings() {
        let parse = |args: &[&str]| {
            let mut all = vec!["sandbox-broker", "serve"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).unwrap().command {
                Command::Serve(config) => config,
                _ => panic!("parsed serve"),
            }
        };
        assert!(parse(&[]).niosxaas_settings().unwrap().is_none());
        let complete = [
            "--niosxaas-enabled",
            "yes",
            "--niosxaas-email",
            "robot@example.com",
            "--niosxaas-password",
            "pw",
            "--niosxaas-service-name",
            "Instrqt-SaaS",
        ];
        let settings = parse(&complete).niosxaas_settings().unwrap().unwrap();
        assert!(settings.shadow_mode, "shadow mode is the default");
        assert_eq!(settings.base_url, "https://csp.infoblox.com");
        for (missing, variable) in [
            (3, "NIOSXAAS_EMAIL"),
            (5, "NIOSXAAS_PASSWORD"),
            (7, "NIOSXAAS_SERVICE_NAME"),
        ] {
            let mut args = complete;
            args[missing] = " ";
            let err = parse(&args).niosxaas_settings().unwrap_err().to_string();
            assert!(err.starts_with(variable), "{err}");
        }
        let err =
            Cli::try_parse_from(["sandbox-broker", "serve", "--niosxaas-shadow-mode", "maybe"])
                .unwrap_err()
                .to_string();
        assert!(err.contains("NIOSXAAS_SHADOW_MODE"), "{err}");
    }
}
