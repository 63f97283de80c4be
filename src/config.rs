//! The command line: each owner's settings flattened into one, parsed once from flags, the
//! environment and an optional `.env`.
//!
//! Rule: every setting is declared by the module that uses it (`http::config`,
//! `store::dynamo::config`, `jobs::config`, …), as a `clap::Args` struct beside its
//! code; this module only composes them and checks what spans two owners. A bad value
//! stops start-up with a message naming the variable (each `value_name` is the variable's
//! name, so clap's own errors name it too), and no secret has a usable default outside
//! demo mode.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand};

pub use crate::config_values::ConfigError;
use crate::domain::LabPolicy;
pub use crate::http::auth::{AuthConfig, TokenList};
pub use crate::http::config::{CorsOrigins, HttpConfig, TrustedProxies};
pub use crate::jobs::config::JobsConfig;
pub use crate::provider::CspConfig;
pub use crate::provider::niosxaas::NiosxaasConfig;
pub use crate::ratelimit::RateLimitConfig;
pub use crate::store::config::{StoreConfig, StoreKind};
pub use crate::store::dynamo::DynamoConfig;
pub use crate::telemetry::{LogConfig, LogFormat};

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

/// The subcommands (README, *The binary* in docs/api.md).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (HTTP API) with the configured store.
    Serve(Config),
    /// Run the service on a scratch embedded store with a demo pool and printed demo tokens.
    Demo(Config),
    /// Create the DynamoDB table and its indexes if missing (idempotent), then exit.
    InitTable(Config),
    /// Write every item of the configured store (rows in every status, allocation keys,
    /// used-account markers, NIOSXaaS history, job records, cordons, the action log) to an
    /// export file. The embedded store must not be in use by `serve`; a running service
    /// exports online with `GET /v1/admin/export`.
    Export(ExportConfig),
    /// Load an export into the configured store (embedded or DynamoDB), then read every
    /// item back and compare. Refuses a store that is not empty unless `--merge`; run
    /// again after an interruption, it carries on.
    Restore(RestoreConfig),
    /// Serve a simulated provider (the CSP accounts API, holding the demo pool) for a
    /// broker in another process or container to sync and delete against; not for
    /// production.
    SimulateProvider(crate::provider::simulated::server::SimulatorConfig),
}

/// The `export` command's settings.
#[derive(Debug, Clone, Args)]
pub struct ExportConfig {
    /// The file to write (replaced once the export is complete).
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// The store to export.
    #[command(flatten, next_help_heading = "Store")]
    pub store: StoreConfig,
}

/// The `restore` command's settings.
#[derive(Debug, Clone, Args)]
pub struct RestoreConfig {
    /// The export to load.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Restore into a store that already holds items: every item it holds is kept as it
    /// is, the file's other items are added, and what was kept is reported.
    #[arg(long)]
    pub merge: bool,
    /// Only read and check the file (header, every line, counts, digest); open no store.
    #[arg(long)]
    pub check: bool,
    /// The store to restore into.
    #[command(flatten, next_help_heading = "Store")]
    pub store: StoreConfig,
}

/// Every setting of the service (docs/api.md and `.env.example`), grouped by the module that owns it.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The listener, routes and connection limits.
    #[command(flatten, next_help_heading = "HTTP")]
    pub http: HttpConfig,
    /// The tokens and the failure throttle.
    #[command(flatten, next_help_heading = "Authentication")]
    pub auth: AuthConfig,
    /// The per-caller rate limit.
    #[command(flatten, next_help_heading = "Rate limit")]
    pub rate_limit: RateLimitConfig,
    /// How long labs last.
    #[command(flatten, next_help_heading = "Labs")]
    pub lab: LabConfig,
    /// Which store: the embedded store's directory, or the DynamoDB table.
    #[command(flatten, next_help_heading = "Store")]
    pub store: StoreConfig,
    /// The CSP provider and its breaker.
    #[command(flatten, next_help_heading = "CSP provider")]
    pub csp: CspConfig,
    /// The NIOSXaaS pre-delete hook.
    #[command(flatten, next_help_heading = "NIOSXaaS pre-delete hook")]
    pub niosxaas: NiosxaasConfig,
    /// The background jobs.
    #[command(flatten, next_help_heading = "Jobs")]
    pub jobs: JobsConfig,
    /// Webhook deliveries.
    #[command(flatten, next_help_heading = "Webhooks")]
    pub webhooks: crate::webhooks::config::WebhookConfig,
    /// Logging.
    #[command(flatten, next_help_heading = "Logging")]
    pub log: LogConfig,
}

/// A configuration that passed [`Config::validate`]: what the application is built from,
/// so the checks run once, before anything is opened.
#[derive(Debug, Clone)]
pub struct ValidConfig(Config);

impl ValidConfig {
    /// The checked configuration.
    pub fn into_inner(self) -> Config {
        self.0
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

/// When allocations expire: the one policy the lab routes and the expiry job share.
#[derive(Debug, Clone, Args)]
pub struct LabConfig {
    /// How long a lab lasts; `expires_at = allocated_at + this`. 0 is allowed.
    #[arg(
        long,
        env = "LAB_DURATION_HOURS",
        value_name = "LAB_DURATION_HOURS",
        default_value_t = 48
    )]
    pub lab_duration_hours: u32,

    /// Minutes after `expires_at` before auto-expiry releases an allocation.
    #[arg(
        long,
        env = "GRACE_PERIOD_MINUTES",
        value_name = "GRACE_PERIOD_MINUTES",
        default_value_t = 30
    )]
    pub grace_period_minutes: u32,
}

impl LabConfig {
    /// The policy: `LAB_DURATION_HOURS` for allocations this service did not record an
    /// expiry for, and `GRACE_PERIOD_MINUTES`.
    pub fn policy(&self) -> LabPolicy {
        LabPolicy {
            lab_duration_hours: self.lab_duration_hours,
            grace_secs: i64::from(self.grace_period_minutes) * 60,
        }
    }
}

impl Config {
    /// The configuration `serve` runs with, once it has checked what `serve` needs beyond
    /// parsing (see [`ValidConfig`]).
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        self.validate_for_serve()?;
        Ok(ValidConfig(self))
    }

    /// Checks what `serve` needs beyond parsing, owner by owner: the index names, the
    /// tokens, and upstream URLs credentials may be sent to.
    fn validate_for_serve(&self) -> Result<(), ConfigError> {
        self.store.dynamo.validate_index_names()?;
        self.auth.validate_for_serve()?;
        self.csp.validate_for_serve()?;
        self.niosxaas.settings(&self.csp)?;
        Ok(())
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
    pub fn for_tests(data_dir: PathBuf, lab_token: &str, admin_token: &str) -> Self {
        let mut config = Self::declared_defaults()
            .unwrap_or_else(|err| panic!("the declared defaults do not parse: {err}"));
        config.http.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.store.store = Some(StoreKind::Embedded);
        config.store.data_dir = data_dir;
        config.auth.api_token = TokenList::parse(lab_token).ok();
        config.auth.admin_token = TokenList::parse(admin_token).ok();
        config.auth.auth_failure_limit = NonZeroU32::MAX;
        config.log.log_format = Some(LogFormat::Text);
        config.rate_limit.rate_limit_per_sec = NonZeroU32::MAX;
        config.rate_limit.rate_limit_burst = NonZeroU32::MAX;
        config.rate_limit.rate_limit_per_address_per_sec = NonZeroU32::MAX;
        config.rate_limit.rate_limit_per_address_burst = NonZeroU32::MAX;
        config.jobs.cleanup_batch_delay = Duration::ZERO;
        // Tests read their analytics right after changing the pool; the cache has its own.
        config.http.analytics_cache = Duration::ZERO;
        config.csp.allow_http_upstreams = true;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_serve(args: &[&str]) -> Config {
        let mut all = vec!["sandbox-broker", "serve"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(config) => config,
            _ => panic!("parsed serve"),
        }
    }

    #[test]
    fn serve_needs_both_tokens_and_names_the_missing_one() {
        let mut config = Config::for_tests("/tmp/x".into(), "t", "a");
        config.auth.admin_token = None;
        let err = config.validate_for_serve().unwrap_err().to_string();
        assert!(err.contains("BROKER_ADMIN_TOKEN"), "{err}");
        config.auth.api_token = None;
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
        config.csp.allow_http_upstreams = false;
        config.csp.csp_api_token = Some("csp-token".into());
        config.csp.csp_base_url = "http://csp.internal/v2".into();
        let err = config.validate_for_serve().unwrap_err().to_string();
        assert!(
            err.contains("CSP_BASE_URL") && err.contains("ALLOW_HTTP_UPSTREAMS"),
            "{err}"
        );
        config.csp.allow_http_upstreams = true;
        assert!(config.validate_for_serve().is_ok());
        config.csp.csp_base_url = "ftp://csp.internal".into();
        assert!(config.validate_for_serve().is_err());
        config.csp.csp_base_url = "https://csp.infoblox.com/v2".into();
        config.csp.allow_http_upstreams = false;
        assert!(config.validate_for_serve().is_ok());
        config.auth.metrics_token = TokenList::parse("short").ok();
        let err = config.validate_for_serve().unwrap_err().to_string();
        assert!(err.contains("METRICS_TOKEN") && err.contains("16"), "{err}");
    }

    #[test]
    fn the_declared_defaults_match_the_documented_ones() {
        let config = parse_serve(&[]);
        assert_eq!(config.http.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.store.data_dir, PathBuf::from("./data"));
        assert_eq!(config.http.api_base_path, "/v1");
        assert_eq!(config.lab.lab_duration_hours, 48);
        assert_eq!(
            (
                config.rate_limit.rate_limit_per_sec.get(),
                config.rate_limit.rate_limit_burst.get()
            ),
            (50, 200)
        );
        assert!(
            config.http.cors_allowed_origins.0.is_empty(),
            "* allows any origin"
        );
        assert!(
            !config.csp.allow_http_upstreams,
            "outbound calls are HTTPS-only by default"
        );
        assert!(config.auth.metrics_token.is_none());
        assert_eq!(
            (
                config.http.header_read_timeout.as_secs(),
                config.http.keep_alive_timeout.as_secs(),
                config.http.max_connections,
            ),
            (10, 75, 4096)
        );
    }

    #[test]
    fn the_flattened_owners_declare_each_variable_once() {
        let command = Config::augment_args(clap::Command::new("serve"));
        let mut names: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| Some(arg.get_env()?.to_str()?.to_owned()))
            .collect();
        let declared = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), declared, "a variable is declared twice");
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
        let settings_of = |config: Config| config.niosxaas.settings(&config.csp);
        assert!(settings_of(parse_serve(&[])).unwrap().is_none());
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
        let settings = settings_of(parse_serve(&complete)).unwrap().unwrap();
        assert!(settings.shadow_mode, "shadow mode is the default");
        assert_eq!(settings.base_url, "https://csp.infoblox.com");
        for (missing, variable) in [
            (3, "NIOSXAAS_EMAIL"),
            (5, "NIOSXAAS_PASSWORD"),
            (7, "NIOSXAAS_SERVICE_NAME"),
        ] {
            let mut args = complete;
            args[missing] = " ";
            let err = settings_of(parse_serve(&args)).unwrap_err().to_string();
            assert!(err.starts_with(variable), "{err}");
        }
        let err =
            Cli::try_parse_from(["sandbox-broker", "serve", "--niosxaas-shadow-mode", "maybe"])
                .unwrap_err()
                .to_string();
        assert!(err.contains("NIOSXAAS_SHADOW_MODE"), "{err}");
    }
}
