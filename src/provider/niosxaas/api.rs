//! The CSP session and universal-infra calls the hook makes, each through its breaker.

use std::time::Instant;

use reqwest::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{HookFailure, PreDeleteHook, UniversalService};
use crate::provider::ProviderError;
use crate::provider::client::{account_uuid, every_page, success_json, transport_error};

impl PreDeleteHook {
    /// Runs one call through the breaker and records its latency and outcome.
    pub(super) async fn call<T>(
        &self,
        step: &'static str,
        operation: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, HookFailure> {
        let started = Instant::now();
        let result = self.breaker.call(operation).await;
        let outcome = ProviderError::outcome_label(&result);
        self.metrics
            .provider
            .niosxaas_request_duration_seconds
            .with_label_values(&[step, outcome])
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|error| HookFailure { step, error })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.base_url)
    }

    pub(super) async fn sign_in(&self) -> Result<SecretString, HookFailure> {
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
            .provider
            .niosxaas_auth_total
            .with_label_values(&[outcome])
            .inc();
        signed_in
    }

    /// The JWT for the sandbox account; `None` when the account no longer exists.
    pub(super) async fn switch_account(
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

    pub(super) async fn list(
        &self,
        jwt: &SecretString,
    ) -> Result<Vec<UniversalService>, HookFailure> {
        let url = self.url("/api/universalinfra/v1/universalservices");
        self.call("list", async {
            let services = every_page("universal service list", |paging| {
                let request = self
                    .http
                    .get(format!("{url}?{paging}"))
                    .header(AUTHORIZATION, bearer(jwt));
                async move {
                    let response = request.send().await.map_err(transport_error)?;
                    success_json(response, "universal service list").await
                }
            })
            .await?;
            Ok(services_of(&services))
        })
        .await
    }

    /// Deletes one service by the UUID of its id; 200, 204 and 404 all mean gone.
    pub(super) async fn delete(
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
            Err(crate::provider::client::status_error(
                status,
                response.headers(),
            ))
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

/// The services of a list (`[{"id", "name"}, …]`, every page's `results`); entries
/// without a name cannot match and are left out.
fn services_of(results: &[Value]) -> Vec<UniversalService> {
    results
        .iter()
        .filter_map(|service| {
            Some(UniversalService {
                id: service.get("id").and_then(Value::as_str).map(str::to_owned),
                name: service.get("name").and_then(Value::as_str)?.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_maps_named_services() {
        let results = [
            json!({"id": "infra/universal_service/a", "name": "lab"}),
            json!({"name": "no-id"}),
            json!({"id": "infra/universal_service/c"}),
        ];
        assert_eq!(
            services_of(&results),
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
        assert!(jwt_of(&json!({"jwt": ""})).is_err());
        assert_eq!(jwt_of(&json!({"jwt": "x"})).unwrap().expose_secret(), "x");
    }
}
