//! Operations routes (docs/api.md, *Operations*): liveness, readiness and metrics, unauthenticated.

pub mod views;

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use self::views::{HealthView, ReadyChecks, ReadyView, RootView};
use crate::http::error::{ApiError, Result};
use crate::http::state::AppState;

/// How long readiness waits for the store before calling it unavailable.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What this service is and where its docs are, as the Python service answered `GET /`.
#[utoipa::path(get, path = "/", tag = "ops", responses((status = 200, body = RootView)))]
pub async fn root(State(app): State<AppState>) -> Json<RootView> {
    Json(RootView {
        service: "Sandbox Broker API".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        docs: format!("{}/docs", app.http.api_base_path),
    })
}

/// The Python service's ReDoc page: the same document is served by the Swagger UI, so
/// this answers with a redirect there rather than vendoring a second docs bundle.
pub async fn redoc(State(app): State<AppState>) -> axum::response::Redirect {
    axum::response::Redirect::permanent(&format!("{}/docs/", app.http.api_base_path))
}

/// Liveness: the process serves HTTP. Never checks dependencies.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = HealthView)))]
pub async fn health(State(app): State<AppState>) -> Json<HealthView> {
    Json(HealthView {
        status: "healthy".into(),
        timestamp: app.clock.now().get(),
    })
}

/// Readiness: 200 when the store answers, else 503 with a short reason.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses((status = 200, body = ReadyView), (status = 503, body = ReadyView))
)]
pub async fn readiness(State(app): State<AppState>) -> Response {
    let store = app
        .readiness
        .get(|| async {
            match tokio::time::timeout(READY_TIMEOUT, app.store.health.ping()).await {
                Ok(Ok(())) => "ok",
                Ok(Err(err)) => {
                    tracing::warn!(error = ?err, "readiness: store unavailable");
                    "unavailable"
                }
                Err(_) => "timeout",
            }
        })
        .await;
    let ready = store == "ok";
    let view = ReadyView {
        status: if ready { "ready" } else { "not_ready" }.into(),
        timestamp: app.clock.now().get(),
        checks: ReadyChecks {
            store: store.into(),
            dynamodb: app.store.health.backend().map(|_| store.to_owned()),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(view)).into_response()
}

/// Prometheus text exposition; the pool gauges come from the store's counts of at most
/// `METRICS_POOL_REFRESH_SEC` ago (kept, with `broker_store_up 0`, while the store is
/// unreachable). With `METRICS_TOKEN` set it needs that bearer token.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn metrics(State(app): State<AppState>) -> Result<Response> {
    let readings = app.store_readings().await;
    app.metrics
        .http
        .rate_limit_callers
        .set(i64::try_from(app.rate_limiter.tracked_callers()).unwrap_or(i64::MAX));
    if let Some(breaker) = &app.breaker {
        app.metrics
            .provider
            .provider_circuit_state
            .set(breaker.state().as_gauge());
    }
    if let Some(hook) = &app.pre_delete {
        app.metrics
            .provider
            .niosxaas_circuit_state
            .set(hook.breaker_state().as_gauge());
    }
    let text = app
        .metrics
        .render(readings.as_deref())
        .map_err(|err| ApiError::Internal(Box::new(err)))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
