//! The NIOSXaaS pre-delete hook: before a sandbox account is deleted, remove the NIOS-X
//! universal services a student left in it, as the Python service did.
//!
//! Flow (the Python service's endpoints, see docs/api.md): sign in with the service
//! account (`POST /v2/session/users/sign_in`), switch into the sandbox account
//! (`POST /v2/session/account_switch`), list its universal services
//! (`GET /api/universalinfra/v1/universalservices`) and delete those named
//! `NIOSXAAS_SERVICE_NAME` (`DELETE …/universalservices/<uuid>`).
//!
//! Rule: in shadow mode (the default) the hook signs in, switches and lists, then only logs
//! and counts what it would delete, and its failures never hold up a deletion. In enforce
//! mode a failure holds up the account's deletion under the cleanup's usual policy (an
//! outage waits, a refusal counts as an attempt), so an account is never deleted with its
//! services still running. Every call goes through the hook's own circuit breaker, so a
//! NIOSXaaS outage never opens the provider's.

mod api;
mod config;

pub use config::NiosxaasConfig;

use crate::domain::time::EpochSecs;
use std::time::Duration;

use secrecy::SecretString;

use super::ProviderError;
use super::breaker::{Breaker, BreakerState};
use crate::domain::clock::SharedClock;
use crate::domain::{NiosxaasCleanup, Sandbox};
use crate::metrics::Metrics;

/// Which universal services the hook deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceSelector {
    /// Those with exactly this name.
    Named(String),
    /// Every universal service in the account (`NIOSXAAS_SERVICE_NAME=*`).
    Every,
}

impl ServiceSelector {
    /// Parses `NIOSXAAS_SERVICE_NAME`: `*` selects every service, blank selects none (refused).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "" => None,
            "*" => Some(Self::Every),
            name => Some(Self::Named(name.to_owned())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Named(wanted) => wanted == name,
            Self::Every => true,
        }
    }
}

/// The hook's settings (`NIOSXAAS_*`).
#[derive(Debug, Clone)]
pub struct NiosxaasSettings {
    /// `NIOSXAAS_BASE_URL`, e.g. `https://csp.infoblox.com`.
    pub base_url: String,
    /// `NIOSXAAS_EMAIL`: the service account that may switch into sandbox accounts.
    pub email: String,
    /// `NIOSXAAS_PASSWORD`.
    pub password: SecretString,
    /// `NIOSXAAS_SERVICE_NAME`.
    pub services: ServiceSelector,
    /// `NIOSXAAS_TIMEOUT_SEC`: one call, body included.
    pub timeout: Duration,
    /// `CSP_TIMEOUT_CONNECT_SEC`.
    pub connect_timeout: Duration,
    /// `NIOSXAAS_SHADOW_MODE`.
    pub shadow_mode: bool,
    /// `ALLOW_HTTP_UPSTREAMS`: plain `http://` allowed (a local simulator).
    pub allow_http: bool,
    /// `CIRCUIT_BREAKER_THRESHOLD` for the hook's own breaker.
    pub breaker_threshold: u32,
    /// `CIRCUIT_BREAKER_TIMEOUT_SEC` for the hook's own breaker.
    pub breaker_timeout: Duration,
}

/// A universal service as the list answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UniversalService {
    id: Option<String>,
    name: String,
}

/// Why the hook could not finish, and at which step.
#[derive(Debug, thiserror::Error)]
#[error("NIOSXaaS pre-delete cleanup failed at {step}: {error}")]
pub struct HookFailure {
    /// `sign_in`, `account_switch`, `list` or `delete`.
    pub step: &'static str,
    /// What the call said.
    #[source]
    pub error: ProviderError,
}

/// The hook: an HTTP client, its own breaker and its settings.
pub struct PreDeleteHook {
    http: reqwest::Client,
    settings: NiosxaasSettings,
    breaker: Breaker,
    metrics: Metrics,
}

impl std::fmt::Debug for PreDeleteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreDeleteHook")
            .field("base_url", &self.settings.base_url)
            .field("shadow_mode", &self.settings.shadow_mode)
            .finish_non_exhaustive()
    }
}

impl PreDeleteHook {
    /// Builds the HTTP client once; the breaker's open period runs on `clock`.
    pub fn new(
        settings: NiosxaasSettings,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Result<Self, ProviderError> {
        let http = super::outbound_client(
            settings.connect_timeout,
            settings.timeout,
            settings.allow_http,
        )?;
        let breaker = Breaker::new(
            "niosxaas",
            settings.breaker_threshold,
            settings.breaker_timeout,
            clock,
        );
        let base_url = settings.base_url.trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            settings: NiosxaasSettings {
                base_url,
                ..settings
            },
            breaker,
            metrics,
        })
    }

    /// Whether the hook only looks (shadow mode).
    pub fn shadow_mode(&self) -> bool {
        self.settings.shadow_mode
    }

    /// The hook's breaker state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    fn mode(&self) -> &'static str {
        if self.settings.shadow_mode {
            "shadow"
        } else {
            "enforce"
        }
    }

    /// Whether `row` still needs the hook: it never ran, it failed, or it only looked
    /// (shadow mode) and the hook now enforces.
    pub fn is_due(&self, row: &Sandbox) -> bool {
        row.niosxaas.as_ref().is_none_or(|done| {
            done.niosxaas_cleanup_failed_reason.is_some()
                || (done.niosxaas_cleaned_at.is_none() && !self.settings.shadow_mode)
        })
    }

    /// Runs the hook for `row` at `now`: the record to keep on the row, and the failure if
    /// it did not finish (its record then carries the reason).
    pub async fn run(
        &self,
        row: &Sandbox,
        now: EpochSecs,
    ) -> (NiosxaasCleanup, Option<HookFailure>) {
        let shadow = self.settings.shadow_mode;
        let mut record = NiosxaasCleanup {
            niosxaas_shadow_mode: shadow,
            ..NiosxaasCleanup::default()
        };
        let result = self.clean(row, &mut record).await;
        let outcome = match &result {
            Ok(()) => {
                record.niosxaas_cleanup_skipped = shadow || record.niosxaas_services_matched == 0;
                if !shadow {
                    record.niosxaas_cleaned_at = Some(now);
                }
                if record.niosxaas_services_matched == 0 {
                    "nothing_to_clean"
                } else {
                    "cleaned"
                }
            }
            Err(failure) => {
                record.niosxaas_cleanup_failed_reason = Some(failure.to_string());
                if matches!(failure.error, ProviderError::CircuitOpen) {
                    "postponed"
                } else {
                    "failed"
                }
            }
        };
        self.metrics
            .provider
            .niosxaas_cleanups_total
            .with_label_values(&[self.mode(), outcome])
            .inc();
        let python_outcome = match outcome {
            "cleaned" if !shadow => "success",
            "cleaned" | "nothing_to_clean" => "skipped",
            "postponed" => "error",
            _ => "failed",
        };
        self.metrics
            .provider
            .niosxaas_cleanup_total
            .with_label_values(&[python_outcome])
            .inc();
        (record, result.err())
    }

    /// Sign in, switch, list, and delete (or, in shadow mode, count) the matching services.
    async fn clean(&self, row: &Sandbox, record: &mut NiosxaasCleanup) -> Result<(), HookFailure> {
        let log_id = row.sandbox_id.as_str();
        let jwt = self.sign_in().await?;
        let Some(jwt) = self.switch_account(&jwt, &row.external_id).await? else {
            tracing::info!(sandbox.id = log_id, "NIOSXaaS: the account is already gone");
            return Ok(());
        };
        let services = self.list(&jwt).await?;
        let matching: Vec<&UniversalService> = services
            .iter()
            .filter(|service| self.settings.services.matches(&service.name))
            .collect();
        for service in matching {
            record.niosxaas_services_matched += 1;
            self.metrics
                .provider
                .niosxaas_services_total
                .with_label_values(&[self.mode()])
                .inc();
            let id = service.id.as_deref().unwrap_or_default();
            if self.settings.shadow_mode {
                tracing::info!(sandbox.id = log_id, service.name = ?service.name, service.id = id, "NIOSXaaS shadow mode: would delete this universal service");
                continue;
            }
            self.delete(&jwt, service).await?;
            self.metrics.provider.niosxaas_services_deleted_total.inc();
            tracing::info!(sandbox.id = log_id, service.name = ?service.name, service.id = id, "NIOSXaaS: deleted a universal service");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExternalId, NewSandbox, SandboxId, SandboxName};

    fn hook(shadow_mode: bool) -> PreDeleteHook {
        PreDeleteHook::new(
            NiosxaasSettings {
                base_url: "http://127.0.0.1:9/".into(),
                email: "robot@example.com".into(),
                password: "pw".into(),
                services: ServiceSelector::Named("lab".into()),
                timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
                shadow_mode,
                allow_http: true,
                breaker_threshold: 1,
                breaker_timeout: Duration::from_secs(60),
            },
            Metrics::new().unwrap(),
            std::sync::Arc::new(crate::domain::clock::SystemClock),
        )
        .unwrap()
    }

    fn row(niosxaas: Option<NiosxaasCleanup>) -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("i", "1").unwrap(),
            name: SandboxName::parse("n", "lab-1").unwrap(),
            external_id: ExternalId::parse("e", "identity/accounts/u").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(EpochSecs::new(0));
        row.niosxaas = niosxaas;
        row
    }

    #[test]
    fn the_service_name_selects_exact_names_star_selects_all_and_blank_is_refused() {
        assert_eq!(ServiceSelector::parse("  "), None);
        let named = ServiceSelector::parse(" Instrqt-SaaS ").unwrap();
        assert!(named.matches("Instrqt-SaaS"));
        assert!(!named.matches("instrqt-saas"));
        assert!(!named.matches("Instrqt-SaaS-2"));
        assert!(ServiceSelector::parse("*").unwrap().matches("anything"));
    }

    #[test]
    fn the_hook_is_due_until_it_finished_in_the_current_mode() {
        let cleaned = NiosxaasCleanup {
            niosxaas_cleaned_at: Some(EpochSecs::new(5)),
            ..NiosxaasCleanup::default()
        };
        let looked = NiosxaasCleanup {
            niosxaas_shadow_mode: true,
            niosxaas_cleanup_skipped: true,
            ..NiosxaasCleanup::default()
        };
        let failed = NiosxaasCleanup {
            niosxaas_cleanup_failed_reason: Some("boom".into()),
            ..NiosxaasCleanup::default()
        };
        let (enforce, shadow) = (hook(false), hook(true));
        assert!(enforce.is_due(&row(None)) && shadow.is_due(&row(None)));
        assert!(!enforce.is_due(&row(Some(cleaned.clone()))));
        assert!(!shadow.is_due(&row(Some(cleaned))));
        assert!(!shadow.is_due(&row(Some(looked.clone()))));
        assert!(
            enforce.is_due(&row(Some(looked))),
            "a shadow look does not clean: switching to enforce mode runs it for real"
        );
        assert!(enforce.is_due(&row(Some(failed.clone()))));
        assert!(shadow.is_due(&row(Some(failed))));
    }
}
