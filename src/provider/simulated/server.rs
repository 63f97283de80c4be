//! `sandbox-broker simulate-provider`: the simulated provider behind the CSP's own HTTP
//! API (docs/api.md, *Outbound calls* and cleanup), so a broker in another process or container — the compose file's —
//! syncs and deletes against something real over the wire.
//!
//! Rule: it answers exactly the two calls the broker makes, with the CSP's shapes and its
//! `Authorization: Token <token>` header; anything else is 404.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::SimulatedProvider;
use crate::provider::{ProviderClient, ProviderSandbox};

/// Settings of `sandbox-broker simulate-provider`.
#[derive(Debug, Clone, Args)]
pub struct SimulatorConfig {
    /// Address the simulated CSP API listens on.
    #[arg(long, env = "SIMULATOR_LISTEN_ADDR", default_value = "127.0.0.1:9000")]
    pub simulator_listen_addr: SocketAddr,
    /// The token callers must send as `Authorization: Token <it>`: the broker's
    /// `CSP_API_TOKEN`.
    #[arg(long, env = "CSP_API_TOKEN", hide_env_values = true)]
    pub csp_api_token: SecretString,
}

#[derive(Clone)]
struct Simulator {
    provider: Arc<SimulatedProvider>,
    token: Arc<SecretString>,
    /// The listing the first page (`_offset=0`) took, which later pages page through:
    /// one listing, however many pages it is read in.
    listing: Arc<Mutex<Vec<ProviderSandbox>>>,
}

impl Simulator {
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let expected = format!("Token {}", self.token.expose_secret());
        headers
            .get(header::AUTHORIZATION)
            .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(expected.as_bytes())))
    }
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": [{"message": message}]}))).into_response()
}

/// Most accounts the simulator answers per page, whatever `_limit` asks: the broker must
/// read every page, as it must of a CSP that caps its pages.
const MAX_PAGE: usize = 100;

/// `?_offset=&_limit=` of the account list (the CSP's paging parameters).
#[derive(Debug, serde::Deserialize)]
struct Paging {
    #[serde(rename = "_offset")]
    offset: Option<usize>,
    #[serde(rename = "_limit")]
    limit: Option<usize>,
}

/// `GET /v2/current_user/accounts?_offset=&_limit=`: one page of the accounts, in the
/// CSP's shape, at most [`MAX_PAGE`] of them.
async fn list_accounts(
    State(sim): State<Simulator>,
    Query(paging): Query<Paging>,
    headers: HeaderMap,
) -> Response {
    if !sim.authorised(&headers) {
        return refusal(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let offset = paging.offset.unwrap_or(0);
    if offset == 0 {
        let fresh = match sim.provider.list_sandboxes().await {
            Ok(listing) => listing.sandboxes,
            Err(err) => return refusal(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        };
        *sim.listing.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    }
    let listing = sim
        .listing
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let limit = paging.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let results: Vec<Value> = listing
        .iter()
        .skip(offset)
        .take(limit)
        .map(|account| {
            let mut entry = json!({
                "id": account.external_id.as_str(),
                "csp_id": account.sandbox_id.as_str().parse::<u64>().ok(),
                "name": account.name.as_str(),
                "account_type": "sandbox",
                "state": "active",
            });
            if let Some(sfdc) = &account.sfdc_account_id {
                entry["sfdc_account_id"] = json!(sfdc);
            }
            entry
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}

/// `DELETE /v2/sandbox/accounts/{uuid}`: 204, or 404 for an account it does not have
/// (which the broker counts as deleted, as the CSP's 404 means).
async fn delete_account(
    State(sim): State<Simulator>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !sim.authorised(&headers) {
        return refusal(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let external_id = format!("identity/accounts/{uuid}");
    if !sim.provider.has_account(&external_id) {
        return refusal(StatusCode::NOT_FOUND, "no such account");
    }
    match sim.provider.delete_sandbox(&external_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => refusal(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

/// The simulator's routes over `provider`, accepting `token`.
pub fn router(provider: Arc<SimulatedProvider>, token: SecretString) -> Router {
    Router::new()
        .route("/v2/current_user/accounts", get(list_accounts))
        .route("/v2/sandbox/accounts/{uuid}", delete(delete_account))
        .route(
            "/healthz",
            get(|| async { Json(json!({"status": "healthy"})) }),
        )
        .with_state(Simulator {
            provider,
            token: Arc::new(token),
            listing: Arc::default(),
        })
}

/// Serves `router` on `config`'s address until `shutdown` resolves.
pub async fn run(
    config: SimulatorConfig,
    provider: Arc<SimulatedProvider>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.simulator_listen_addr).await?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        accounts = provider.len(),
        "simulated provider listening"
    );
    axum::serve(listener, router(provider, config.csp_api_token))
        .with_graceful_shutdown(shutdown)
        .await
}
