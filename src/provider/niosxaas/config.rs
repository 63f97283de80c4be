//! The NIOSXaaS pre-delete hook's settings.

use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret, SecretString};

use super::{NiosxaasSettings, ServiceSelector};
use crate::config_values::{ConfigError, parse_seconds};
use crate::provider::CspConfig;

/// Whether the hook runs, as whom, and on which services.
#[derive(Debug, Clone, Args)]
pub struct NiosxaasConfig {
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
}

impl NiosxaasConfig {
    /// The hook's settings: `None` while `NIOSXAAS_ENABLED` is false; an error naming the
    /// variable when it is enabled without what it needs. The connect timeout, the breaker
    /// and the scheme rule are the CSP client's (`csp`), since both call the same hosts.
    pub fn settings(&self, csp: &CspConfig) -> Result<Option<NiosxaasSettings>, ConfigError> {
        if !self.niosxaas_enabled {
            return Ok(None);
        }
        csp.check_upstream_scheme("NIOSXAAS_BASE_URL", &self.niosxaas_base_url)?;
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
            connect_timeout: csp.csp_connect_timeout,
            shadow_mode: self.niosxaas_shadow_mode,
            allow_http: csp.allow_http_upstreams,
            breaker_threshold: csp.circuit_breaker_threshold,
            breaker_timeout: csp.circuit_breaker_timeout,
        }))
    }
}
