//! The admins' action log, and the admin controls that write to it.
//!
//! Rule: every admin write is recorded after it is done — who (the admin token's
//! fingerprint), what, to what, why and what it came to — in the store's append-only log,
//! which `GET /v1/admin/actions` pages through, newest first.

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::actions::AdminAction;
use crate::domain::lifecycle::RowAction;
use crate::domain::{HolderKey, SandboxId, SandboxStatus, ValidationError};
use crate::http::auth::AdminActor;
use crate::http::error::{ApiError, ErrorEnvelope, Result};
use crate::http::extract::{JsonBody, Query, SandboxIdPath};
use crate::http::handlers::admin::views::AdminSandboxView;
use crate::http::handlers::admin::{given, integer_in};
use crate::http::state::AppState;
use crate::store::{Refusal, ReleaseRequest};

/// The longest reason an admin may give.
const MAX_REASON_CHARS: usize = 512;

/// What an admin write came to, for the action log.
pub struct Done<'a> {
    /// The operation, as the access log names it (`admin.release`, …).
    pub action: &'a str,
    /// What it was done to, when it names one thing.
    pub target: Option<String>,
    /// Why, when the admin said.
    pub reason: Option<String>,
    /// What it came to.
    pub detail: Option<String>,
}

/// Appends `done` to the action log as `actor`'s. The write itself is done and cannot be
/// undone, so a log that cannot be written is an ERROR line and
/// `broker_admin_actions_unrecorded_total` (alerted on), not a failed request.
pub async fn record(app: &AppState, actor: &AdminActor, done: Done<'_>) {
    let action = AdminAction {
        at: app.clock.now(),
        actor: actor.0.clone(),
        action: done.action.to_owned(),
        target: done.target,
        reason: done.reason,
        detail: done.detail,
    };
    if let Err(err) = app.store.action_log.record_action(&action).await {
        app.metrics.http.admin_actions_unrecorded_total.inc();
        tracing::error!(action = action.action, actor = action.actor, error = %crate::telemetry::error_chain(&err), "could not record an admin action");
    }
}

/// A body carrying the admin's reason.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReasonRequest {
    /// Why (required, 1–512 characters): kept in the action log.
    pub(crate) reason: Option<String>,
}

impl ReasonRequest {
    /// The reason, trimmed; a 400 naming `reason` when it is missing, empty or too long.
    pub(crate) fn reason(&self) -> Result<String, ValidationError> {
        let reason = self.reason.as_deref().map(str::trim).unwrap_or_default();
        if reason.is_empty() {
            return Err(ValidationError::new("reason", "is required: say why"));
        }
        if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "reason",
                "must be at most 512 characters, without control characters",
            ));
        }
        Ok(reason.to_owned())
    }
}

/// Releases any student's allocation, as its holder would: the sandbox goes to the normal
/// deletion path. Recorded with the reason.
#[utoipa::path(
    post, path = "/admin/sandboxes/{sandbox_id}/release", tag = "admin",
    params(("sandbox_id" = String, Path, description = "The sandbox's id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Released: now pending deletion", body = AdminSandboxView),
        (status = 400, description = "No reason, or a bad id", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`NOT_ALLOCATED`: nothing to release", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn release(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    SandboxIdPath(id): SandboxIdPath,
    JsonBody(request): JsonBody<ReasonRequest>,
) -> Result<Json<AdminSandboxView>> {
    let reason = request.reason()?;
    let row = app
        .store
        .allocation
        .get(&id)
        .await?
        .ok_or(ApiError::SandboxNotFound)?;
    let holder = match (row.status, row.holder.as_deref()) {
        (SandboxStatus::Allocated, Some(holder)) => {
            HolderKey::parse("holder", holder).map_err(|err| ApiError::Internal(Box::new(err)))?
        }
        (status, _) => return Err(ApiError::NotAllocated(status)),
    };
    // Released as its holder: conditional on that holder, so a concurrent release,
    // expiry or reallocation is never overwritten.
    let released = match app
        .store
        .allocation
        .release(ReleaseRequest {
            id: id.clone(),
            holder: holder.clone(),
            now: app.clock.now(),
            token: None,
        })
        .await
    {
        Ok(Ok(outcome)) => outcome.sandbox,
        Ok(Err(Refusal::NotHolder)) => {
            return Err(ApiError::NotAllocated(SandboxStatus::Allocated));
        }
        Ok(Err(refusal)) => return Err(refusal.into()),
        Err(err) => return Err(err.into()),
    };
    record(
        &app,
        &actor,
        Done {
            action: "admin.release",
            target: Some(id.as_str().to_owned()),
            reason: Some(reason),
            detail: Some(format!("released from {}", holder.as_str())),
        },
    )
    .await;
    Ok(Json(AdminSandboxView::new(&released, app.lab_policy)))
}

/// Takes an `available` or `stale` sandbox out of the pool without deleting it (a
/// suspicious account, kept for a look). Recorded with the reason.
#[utoipa::path(
    post, path = "/admin/sandboxes/{sandbox_id}/quarantine", tag = "admin",
    params(("sandbox_id" = String, Path, description = "The sandbox's id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Quarantined", body = AdminSandboxView),
        (status = 400, description = "No reason, or a bad id", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`NOT_QUARANTINABLE`: only available or stale sandboxes", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn quarantine(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    SandboxIdPath(id): SandboxIdPath,
    JsonBody(request): JsonBody<ReasonRequest>,
) -> Result<Json<AdminSandboxView>> {
    let reason = request.reason()?;
    let action = RowAction::Quarantine {
        reason: reason.clone(),
    };
    row_action(&app, &actor, &id, action, "admin.quarantine", reason).await
}

/// Returns a quarantined sandbox to the pool, only if it was never handed out. Recorded
/// with the reason.
#[utoipa::path(
    post, path = "/admin/sandboxes/{sandbox_id}/unquarantine", tag = "admin",
    params(("sandbox_id" = String, Path, description = "The sandbox's id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Available again", body = AdminSandboxView),
        (status = 400, description = "No reason, or a bad id", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`NOT_QUARANTINED`, or `WAS_HANDED_OUT`: a used account never returns to the pool", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn unquarantine(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    SandboxIdPath(id): SandboxIdPath,
    JsonBody(request): JsonBody<ReasonRequest>,
) -> Result<Json<AdminSandboxView>> {
    let reason = request.reason()?;
    let action = RowAction::Unquarantine;
    row_action(&app, &actor, &id, action, "admin.unquarantine", reason).await
}

/// Retires a quarantined sandbox that is not fine: it goes to `pending_deletion`, the
/// cleanup job deletes it at the provider like a released one, and its account is never
/// handed out again. Recorded with the reason.
#[utoipa::path(
    post, path = "/admin/sandboxes/{sandbox_id}/retire", tag = "admin",
    params(("sandbox_id" = String, Path, description = "The sandbox's id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Pending deletion", body = AdminSandboxView),
        (status = 400, description = "No reason, or a bad id", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`NOT_QUARANTINED`: only a quarantined sandbox is retired", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn retire(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    SandboxIdPath(id): SandboxIdPath,
    JsonBody(request): JsonBody<ReasonRequest>,
) -> Result<Json<AdminSandboxView>> {
    let reason = request.reason()?;
    row_action(&app, &actor, &id, RowAction::Retire, "admin.retire", reason).await
}

/// Applies an admin's `action` to the sandbox `id` and records it, as `name`, with `reason`.
async fn row_action(
    app: &AppState,
    actor: &AdminActor,
    id: &SandboxId,
    action: RowAction,
    name: &str,
    reason: String,
) -> Result<Json<AdminSandboxView>> {
    let row = app
        .store
        .admin
        .change_row(id, action, app.clock.now())
        .await??;
    let done = Done {
        action: name,
        target: Some(id.as_str().to_owned()),
        reason: Some(reason),
        detail: None,
    };
    record(app, actor, done).await;
    Ok(Json(AdminSandboxView::new(&row, app.lab_policy)))
}

/// `?limit=&cursor=` of the action log, as sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionsParams {
    /// Entries per page, 1..=100 (default 50).
    limit: Option<String>,
    /// The `cursor` of the previous page: older entries.
    cursor: Option<String>,
}

/// One entry of the action log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionView {
    /// Epoch seconds.
    pub at: i64,
    /// The admin token's fingerprint (`admin:<12 hex>`).
    pub actor: String,
    /// The operation (`admin.release`, `admin.sync`, …).
    pub action: String,
    /// What it was done to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it came to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /admin/actions` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionsView {
    /// Newest first.
    pub actions: Vec<ActionView>,
    /// The next (older) page's cursor; null on the last page.
    pub cursor: Option<String>,
}

/// The admins' action log, newest first.
#[utoipa::path(
    get, path = "/admin/actions", tag = "admin", params(ActionsParams),
    responses((status = 200, body = ActionsView), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn actions(
    State(app): State<AppState>,
    Query(params): Query<ActionsParams>,
) -> Result<Json<ActionsView>> {
    let limit = integer_in("limit", params.limit.as_ref(), 50, 1..=100)?;
    let page = app
        .store
        .action_log
        .actions(
            usize::try_from(limit).unwrap_or(50),
            given(params.cursor.as_ref()),
        )
        .await?;
    Ok(Json(ActionsView {
        actions: page
            .actions
            .into_iter()
            .map(|a| ActionView {
                at: a.at.get(),
                actor: a.actor,
                action: a.action,
                target: a.target,
                reason: a.reason,
                detail: a.detail,
            })
            .collect(),
        cursor: page.next,
    }))
}
