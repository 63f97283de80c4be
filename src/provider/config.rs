//! The provider clients' settings: where the CSP API is, how long its calls may take, and
//! when the circuit breaker opens.

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::client::CspSettings;
use crate::config_values::{ConfigError, parse_seconds};

/// The CSP API, its breaker, and which URLs outbound calls may use.
#[derive(Debug, Clone, Args)]
pub struct CspConfig {
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

    /// Let CSP_BASE_URL and NIOSXAAS_BASE_URL be plain `http://` (local simulators only);
    /// otherwise they must be `https://`, since the provider token and password go there.
    #[arg(long, env = "ALLOW_HTTP_UPSTREAMS", value_name = "ALLOW_HTTP_UPSTREAMS", default_value = "false", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_http_upstreams: bool,
}

impl CspConfig {
    /// The CSP client's settings, when a token is configured.
    pub fn csp_settings(&self) -> Option<CspSettings> {
        Some(CspSettings {
            base_url: self.csp_base_url.clone(),
            token: self.csp_api_token.clone()?,
            connect_timeout: self.csp_connect_timeout,
            read_timeout: self.csp_read_timeout,
            allow_http: self.allow_http_upstreams,
        })
    }

    /// What `serve` requires: a CSP URL the token may be sent to, when there is a token.
    pub fn validate_for_serve(&self) -> Result<(), ConfigError> {
        if self.csp_api_token.is_some() {
            self.check_upstream_scheme("CSP_BASE_URL", &self.csp_base_url)?;
        }
        Ok(())
    }

    /// Refuses a base URL that is not `https://` (credentials are sent there) unless
    /// ALLOW_HTTP_UPSTREAMS is set, and then only `http://` besides.
    pub fn check_upstream_scheme(
        &self,
        variable: &'static str,
        url: &str,
    ) -> Result<(), ConfigError> {
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
}
