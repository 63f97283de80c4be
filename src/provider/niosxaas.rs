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

mod settings;

pub use settings::NiosxaasConfig;

use std::time::{Duration, Instant};

use reqwest::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::ProviderError;
use super::breaker::{Breaker, BreakerState};
use super::client::{account_uuid, success_json, transport_error};
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
    pub async fn run(&self, row: &Sandbox, now: i64) -> (NiosxaasCleanup, Option<HookFailure>) {
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
                .niosxaas_services_total
                .with_label_values(&[self.mode()])
                .inc();
            let id = service.id.as_deref().unwrap_or_default();
            if self.settings.shadow_mode {
                tracing::info!(sandbox.id = log_id, service.name = ?service.name, service.id = id, "NIOSXaaS shadow mode: would delete this universal service");
                continue;
            }
            self.delete(&jwt, service).await?;
            self.metrics.niosxaas_services_deleted_total.inc();
            tracing::info!(sandbox.id = log_id, service.name = ?service.name, service.id = id, "NIOSXaaS: deleted a universal service");
        }
        Ok(())
    }

    /// Runs one call through the breaker and records its latency and outcome.
    async fn call<T>(
        &self,
        step: &'static str,
        operation: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, HookFailure> {
        let started = Instant::now();
        let result = self.breaker.call(operation).await;
        let outcome = ProviderError::outcome_label(&result);
        self.metrics
            .niosxaas_request_duration_seconds
            .with_label_values(&[step, outcome])
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|error| HookFailure { step, error })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_url)
    }

    async fn sign_in(&self) -> Result<SecretString, HookFailure> {
        let signed_in = self
            .call("sign_in", async {
                let response = self
                    .http
                    .post(self.url("/v2/session/users/sign_in"))
                    .json(&json!({
                        "email": self.settings.email,
                        "password": self.settings.password.expose_secret(),
                    }))
                    .send()
                    .await
                    .map_err(transport_error)?;
                jwt_of(&success_json(response, "sign-in answer").await?)
            })
            .await;
        let outcome = match &signed_in {
            Ok(_) => "success",
            Err(failure) if failure.error.is_transient() => "error",
            Err(_) => "failure",
        };
        self.metrics
            .niosxaas_auth_total
            .with_label_values(&[outcome])
            .inc();
        signed_in
    }

    /// The JWT for the sandbox account; `None` when the account no longer exists.
    async fn switch_account(
        &self,
        jwt: &SecretString,
        external_id: &str,
    ) -> Result<Option<SecretString>, HookFailure> {
        let switched = self
            .call("account_switch", async {
                let response = self
                    .http
                    .post(self.url("/v2/session/account_switch"))
                    .header(AUTHORIZATION, bearer(jwt))
                    .json(&json!({ "id": external_id }))
                    .send()
                    .await
                    .map_err(transport_error)?;
                jwt_of(&success_json(response, "account switch answer").await?)
            })
            .await;
        match switched {
            Ok(jwt) => Ok(Some(jwt)),
            Err(HookFailure {
                error: ProviderError::NotFound,
                ..
            }) => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    async fn list(&self, jwt: &SecretString) -> Result<Vec<UniversalService>, HookFailure> {
        self.call("list", async {
            let response = self
                .http
                .get(self.url("/api/universalinfra/v1/universalservices"))
                .header(AUTHORIZATION, bearer(jwt))
                .send()
                .await
                .map_err(transport_error)?;
            services_of(&success_json(response, "universal service list").await?)
        })
        .await
    }

    /// Deletes one service by the UUID of its id; 200, 204 and 404 all mean gone.
    async fn delete(
        &self,
        jwt: &SecretString,
        service: &UniversalService,
    ) -> Result<(), HookFailure> {
        self.call("delete", async {
            let uuid = service
                .id
                .as_deref()
                .and_then(account_uuid)
                .ok_or_else(|| {
                    ProviderError::Other(format!(
                        "universal service {:?} has no usable id",
                        service.name
                    ))
                })?;
            let response = self
                .http
                .delete(self.url(&format!("/api/universalinfra/v1/universalservices/{uuid}")))
                .header(AUTHORIZATION, bearer(jwt))
                .send()
                .await
                .map_err(transport_error)?;
            let status = response.status();
            if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
                return Ok(());
            }
            Err(super::client::status_error(status, response.headers()))
        })
        .await
    }
}

fn bearer(jwt: &SecretString) -> String {
    format!("Bearer {}", jwt.expose_secret())
}

/// The `jwt` of a sign-in or account-switch answer.
fn jwt_of(body: &Value) -> Result<SecretString, ProviderError> {
    body.get("jwt")
        .and_then(Value::as_str)
        .filter(|jwt| !jwt.is_empty())
        .map(|jwt| SecretString::from(jwt.to_owned()))
        .ok_or_else(|| ProviderError::Other("the answer carries no jwt".into()))
}

/// The services of a list answer (`{"results": [{"id", "name"}, …]}`); entries without a
/// name cannot match and are left out.
fn services_of(body: &Value) -> Result<Vec<UniversalService>, ProviderError> {
    let results = body
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ProviderError::Other("the universal service list has no `results` array".into())
        })?;
    Ok(results
        .iter()
        .filter_map(|service| {
            Some(UniversalService {
                id: service.get("id").and_then(Value::as_str).map(str::to_owned),
                name: service.get("name").and_then(Value::as_str)?.to_owned(),
            })
        })
        .collect())
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
        .into_available_row(0);
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
    fn a_list_answer_maps_named_services_and_needs_results() {
        let body = json!({"results": [
            {"id": "infra/universal_service/a", "name": "lab"},
            {"name": "no-id"},
            {"id": "infra/universal_service/c"},
        ]});
        assert_eq!(
            services_of(&body).unwrap(),
            [
                UniversalService {
                    id: Some("infra/universal_service/a".into()),
                    name: "lab".into()
                },
                UniversalService {
                    id: None,
                    name: "no-id".into()
                },
            ]
        );
        assert!(matches!(
            services_of(&json!({"items": []})),
            Err(ProviderError::Other(_))
        ));
        assert!(jwt_of(&json!({"jwt": ""})).is_err());
        assert_eq!(jwt_of(&json!({"jwt": "x"})).unwrap().expose_secret(), "x");
    }

    #[test]
    fn the_hook_is_due_until_it_finished_in_the_current_mode() {
        let cleaned = NiosxaasCleanup {
            niosxaas_cleaned_at: Some(5),
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
