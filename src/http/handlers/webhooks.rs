//! Webhook endpoints (docs/webhooks.md): an admin registers an endpoint for some event
//! types (its secret shown once), sees how its deliveries go, sends it a test event,
//! rotates its secret and removes it; every change is in the action log.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::actions::{Done, record};
use crate::domain::webhooks::{
    self, DeliveryOutcome, EventType, ID_PREFIX, RawEndpointSpec, WebhookEndpoint, WebhookUse,
};
use crate::http::auth::AdminActor;
use crate::http::error::{ApiError, ErrorEnvelope, Result};
use crate::http::extract::{JsonBody, prefixed_id};
use crate::http::state::AppState;

/// An endpoint to register, as sent.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WebhookRequest {
    /// Where deliveries are posted: `https://` (required).
    url: Option<String>,
    /// The event types it gets (at least one).
    events: Option<Vec<String>>,
    /// A note for the operators (at most 256 characters).
    description: Option<String>,
}

/// An endpoint as listed: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// Its id, for the routes below.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// The event types it gets.
    pub events: Vec<String>,
    /// The operators' note.
    pub description: Option<String>,
    /// Epoch seconds it was registered.
    pub created_at: i64,
    /// Epoch seconds until which the rotated-out secret still signs (null: none).
    pub previous_secret_expires_at: Option<i64>,
    /// Epoch seconds a delivery last succeeded (null: never).
    pub last_success_at: Option<i64>,
    /// Epoch seconds one last failed (null: never).
    pub last_failure_at: Option<i64>,
    /// The status of that failure, when the receiver answered.
    pub last_failure_status: Option<u16>,
    /// What went wrong then.
    pub last_failure_error: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Deliveries waiting (first attempts and retries).
    pub pending: u64,
    /// Deliveries given up after `WEBHOOK_RETRY_HOURS` (kept to be seen).
    pub failed: u64,
}

/// How many deliveries to an endpoint wait and how many were given up (the first 10,000).
async fn delivery_counts(app: &AppState, id: &str) -> Result<(u64, u64)> {
    let deliveries = app.store.outbox.deliveries(id, 10_000).await?;
    let failed = deliveries.iter().filter(|d| d.failed_at.is_some()).count() as u64;
    Ok((deliveries.len() as u64 - failed, failed))
}

impl WebhookView {
    fn of(used: &WebhookUse, now: crate::domain::time::EpochSecs) -> Self {
        let WebhookUse { endpoint, state } = used;
        Self {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint
                .events
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            description: endpoint.description.clone(),
            created_at: endpoint.created_at.get(),
            previous_secret_expires_at: endpoint
                .previous_until
                .filter(|until| *until > now)
                .map(|until| until.get()),
            last_success_at: state.last_success_at.map(|at| at.get()),
            last_failure_at: state.last_failure_at.map(|at| at.get()),
            last_failure_status: state.last_failure_status,
            last_failure_error: state.last_failure_error.clone(),
            consecutive_failures: state.consecutive_failures,
            pending: 0,
            failed: 0,
        }
    }

    /// The view with `counts` (pending, failed) of its deliveries.
    fn counted(self, (pending, failed): (u64, u64)) -> Self {
        Self {
            pending,
            failed,
            ..self
        }
    }
}

/// `POST /admin/webhooks` and `…/rotate` answers: the endpoint and, this once, its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecretView {
    /// The signing secret (`whsec_…`): shown only here.
    pub secret: String,
    /// The endpoint.
    #[serde(flatten)]
    pub details: WebhookView,
}

/// `GET /admin/webhooks` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhooksView {
    /// Every endpoint, oldest first.
    pub webhooks: Vec<WebhookView>,
}

/// `POST /admin/webhooks/{id}/test` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestDeliveryView {
    /// The test event's id (its `webhook-id`).
    pub event_id: String,
    /// Whether the endpoint answered 2xx.
    pub delivered: bool,
    /// Its status, when it answered.
    pub status: Option<u16>,
    /// What went wrong, when it did.
    pub error: Option<String>,
}

/// The endpoint `id` with its state, or 404.
async fn webhook(app: &AppState, id: &str) -> Result<WebhookUse> {
    prefixed_id(id, ID_PREFIX, "webhook")?;
    app.store
        .webhooks
        .webhooks()
        .await?
        .into_iter()
        .find(|used| used.endpoint.id == id)
        .ok_or_else(|| ApiError::NothingFound(format!("no webhook {id}")))
}

/// Registers an endpoint. Its secret is in this answer only.
#[utoipa::path(
    post, path = "/admin/webhooks", tag = "admin",
    request_body = WebhookRequest,
    responses(
        (status = 201, body = WebhookSecretView),
        (status = 400, description = "A bad field, named (a URL that is not https://, or whose host is inside the network, among them)", body = ErrorEnvelope),
        (status = 409, description = "`TOO_MANY_WEBHOOKS`", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    JsonBody(request): JsonBody<WebhookRequest>,
) -> Result<(StatusCode, Json<WebhookSecretView>)> {
    let now = app.clock.now();
    let endpoint = WebhookEndpoint::parse(
        RawEndpointSpec {
            url: request.url,
            events: request.events,
            description: request.description,
        },
        app.deliverer.allows_http(),
        webhooks::new_id(rand::random()),
        webhooks::new_secret(rand::random()),
        now,
    )?;
    app.deliverer.check_endpoint(&endpoint.url).await?;
    if app.store.webhooks.webhooks().await?.len() >= app.max_webhooks {
        return Err(ApiError::TooManyWebhooks(app.max_webhooks));
    }
    app.store.webhooks.add_webhook(&endpoint).await?;
    let done = Done {
        action: "admin.webhook_create",
        target: Some(format!("webhook {}", endpoint.id)),
        reason: None,
        detail: Some(endpoint.url.clone()),
    };
    record(&app, &actor, done).await;
    let used = WebhookUse {
        endpoint,
        state: Default::default(),
    };
    Ok((
        StatusCode::CREATED,
        Json(WebhookSecretView {
            secret: used.endpoint.secret.clone(),
            details: WebhookView::of(&used, now),
        }),
    ))
}

/// Every endpoint and how its deliveries go; never a secret.
#[utoipa::path(
    get, path = "/admin/webhooks", tag = "admin",
    responses((status = 200, body = WebhooksView)),
    security(("bearer" = []))
)]
pub async fn list_webhooks(State(app): State<AppState>) -> Result<Json<WebhooksView>> {
    let now = app.clock.now();
    let mut all = app.store.webhooks.webhooks().await?;
    all.sort_by(|a, b| {
        (a.endpoint.created_at, &a.endpoint.id).cmp(&(b.endpoint.created_at, &b.endpoint.id))
    });
    let mut webhooks = Vec::with_capacity(all.len());
    for used in &all {
        let counts = delivery_counts(&app, &used.endpoint.id).await?;
        webhooks.push(WebhookView::of(used, now).counted(counts));
    }
    Ok(Json(WebhooksView { webhooks }))
}

/// One endpoint and how its deliveries go.
#[utoipa::path(
    get, path = "/admin/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)")),
    responses(
        (status = 200, body = WebhookView),
        (status = 400, description = "Not a webhook id", body = ErrorEnvelope),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get_webhook(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>> {
    let used = webhook(&app, &id).await?;
    let counts = delivery_counts(&app, &id).await?;
    Ok(Json(
        WebhookView::of(&used, app.clock.now()).counted(counts),
    ))
}

/// Removes an endpoint: nothing more is delivered to it.
#[utoipa::path(
    delete, path = "/admin/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)")),
    responses(
        (status = 200, description = "Removed", body = WebhookView),
        (status = 400, description = "Not a webhook id", body = ErrorEnvelope),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>> {
    let used = webhook(&app, &id).await?;
    if app.store.webhooks.remove_webhook(&id).await?.is_none() {
        return Err(ApiError::NothingFound(format!("no webhook {id}")));
    }
    // Nothing more goes to it: what was still waiting for it is dropped with it.
    app.store.outbox.drop_deliveries(&id).await?;
    let done = Done {
        action: "admin.webhook_delete",
        target: Some(format!("webhook {id}")),
        reason: None,
        detail: Some(used.endpoint.url.clone()),
    };
    record(&app, &actor, done).await;
    Ok(Json(WebhookView::of(&used, app.clock.now())))
}

/// Sends the endpoint a `webhook.test` event now, signed as every delivery is, and says
/// how it went (also recorded in its delivery state).
#[utoipa::path(
    post, path = "/admin/webhooks/{id}/test", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)")),
    responses(
        (status = 200, body = TestDeliveryView),
        (status = 400, description = "Not a webhook id", body = ErrorEnvelope),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn test_webhook(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Path(id): Path<String>,
) -> Result<Json<TestDeliveryView>> {
    let used = webhook(&app, &id).await?;
    let now = app.clock.now();
    let event_id = webhooks::new_event_id(rand::random());
    let data = serde_json::json!({"webhook_id": id, "url": used.endpoint.url});
    let body = webhooks::event_body(EventType::WebhookTest, now, &data)
        .map_err(|err| ApiError::Internal(Box::new(err)))?;
    let outcome = app
        .deliverer
        .deliver(&used.endpoint, &event_id, &body, now)
        .await;
    let state = used.state.after(&outcome, now);
    app.store.webhooks.record_delivery(&id, &state).await?;
    let (delivered, status, error) = match outcome {
        DeliveryOutcome::Delivered { status } => (true, Some(status), None),
        DeliveryOutcome::Failed { status, error } => (false, status, Some(error)),
    };
    let done = Done {
        action: "admin.webhook_test",
        target: Some(format!("webhook {id}")),
        reason: None,
        detail: Some(if delivered {
            "delivered".to_owned()
        } else {
            format!("failed: {}", error.as_deref().unwrap_or_default())
        }),
    };
    record(&app, &actor, done).await;
    Ok(Json(TestDeliveryView {
        event_id,
        delivered,
        status,
        error,
    }))
}

/// Issues a new secret; the old one signs beside it for 24 h, so receivers can switch
/// without losing a delivery. The new secret is in this answer only.
#[utoipa::path(
    post, path = "/admin/webhooks/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)")),
    responses(
        (status = 200, body = WebhookSecretView),
        (status = 400, description = "Not a webhook id", body = ErrorEnvelope),
        (status = 404, description = "No such endpoint", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_webhook(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Path(id): Path<String>,
) -> Result<Json<WebhookSecretView>> {
    let used = webhook(&app, &id).await?;
    let now = app.clock.now();
    let rotated = used
        .endpoint
        .rotated(webhooks::new_secret(rand::random()), now);
    if !app.store.webhooks.replace_webhook(&rotated).await? {
        return Err(ApiError::NothingFound(format!("no webhook {id}")));
    }
    let done = Done {
        action: "admin.webhook_rotate",
        target: Some(format!("webhook {id}")),
        reason: None,
        detail: None,
    };
    record(&app, &actor, done).await;
    let used = WebhookUse {
        endpoint: rotated,
        state: used.state,
    };
    Ok(Json(WebhookSecretView {
        secret: used.endpoint.secret.clone(),
        details: WebhookView::of(&used, now),
    }))
}
