//! The admins' action log, and the admin controls that write to it.
//!
//! Rule: every admin write is recorded after it is done — who (the admin token's
//! fingerprint), what, to what, why and what it came to — in the store's append-only log,
//! which `GET /v1/admin/actions` pages through, newest first.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::actions::AdminAction;
use crate::domain::cordon::Cordon;
use crate::domain::lifecycle::RowAction;
use crate::domain::{NamePrefix, SandboxId, SandboxStatus, StudentKey, TrackName, ValidationError};
use crate::http::auth::AdminActor;
use crate::http::error::{ApiError, ErrorEnvelope, Result};
use crate::http::extract::{JsonBody, Query, SandboxIdPath};
use crate::http::handlers::admin::views::AdminSandboxView;
use crate::http::handlers::admin::{given, integer_in};
use crate::http::state::AppState;
use crate::store::StoreError;

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
/// undone, so a log that cannot be written is an ERROR line, not a failed request.
pub async fn record(app: &AppState, actor: &AdminActor, done: Done<'_>) {
    let action = AdminAction {
        at: app.clock.now(),
        actor: actor.0.clone(),
        action: done.action.to_owned(),
        target: done.target,
        reason: done.reason,
        detail: done.detail,
    };
    if let Err(err) = app.store.record_action(&action).await {
        tracing::error!(action = action.action, actor = action.actor, error = %crate::telemetry::error_chain(&err), "could not record an admin action");
    }
}

/// A body carrying the admin's reason.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReasonRequest {
    /// Why (required, 1–512 characters): kept in the action log.
    reason: Option<String>,
}

impl ReasonRequest {
    /// The reason, trimmed; a 400 naming `reason` when it is missing, empty or too long.
    fn reason(&self) -> Result<String, ValidationError> {
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
    let row = app.store.get(&id).await?.ok_or(ApiError::SandboxNotFound)?;
    let holder = match (row.status, row.allocated_to_track.as_deref()) {
        (SandboxStatus::Allocated, Some(holder)) => {
            StudentKey::parse("holder", holder).map_err(|err| ApiError::Internal(Box::new(err)))?
        }
        (status, _) => return Err(ApiError::NotAllocated(status)),
    };
    // Released as its holder: conditional on that holder, so a concurrent release,
    // expiry or reallocation is never overwritten.
    let released = match app
        .store
        .mark_for_deletion(&id, &holder, app.clock.now())
        .await
    {
        Ok(outcome) => outcome.sandbox,
        Err(StoreError::NotOwner) => return Err(ApiError::NotAllocated(SandboxStatus::Allocated)),
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
    Ok(Json(AdminSandboxView::new(&released, app.lab)))
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

/// Applies an admin's `action` to the sandbox `id` and records it, as `name`, with `reason`.
async fn row_action(
    app: &AppState,
    actor: &AdminActor,
    id: &SandboxId,
    action: RowAction,
    name: &str,
    reason: String,
) -> Result<Json<AdminSandboxView>> {
    let row = app.store.change_row(id, action, app.clock.now()).await?;
    let done = Done {
        action: name,
        target: Some(id.as_str().to_owned()),
        reason: Some(reason),
        detail: None,
    };
    record(app, actor, done).await;
    Ok(Json(AdminSandboxView::new(&row, app.lab)))
}

/// A cordon to put in place, as sent.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CordonRequest {
    /// Pause requests whose `X-Sandbox-Name-Prefix` starts with this.
    name_prefix: Option<String>,
    /// Pause requests whose `X-Instruqt-Track-ID` is this.
    track_name: Option<String>,
    /// Why (required): told to every paused request and kept in the action log.
    reason: Option<String>,
}

/// A cordon in place.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CordonView {
    /// Its id, for `DELETE /v1/admin/cordon/{id}`.
    pub id: String,
    /// The name prefix it pauses, if it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// The lab it pauses, if it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_name: Option<String>,
    /// Why.
    pub reason: String,
    /// Epoch seconds it was put in place.
    pub created_at: i64,
    /// Who put it in place.
    pub actor: String,
}

impl From<Cordon> for CordonView {
    fn from(cordon: Cordon) -> Self {
        Self {
            id: cordon.id,
            name_prefix: cordon.name_prefix,
            track_name: cordon.track_name,
            reason: cordon.reason,
            created_at: cordon.created_at,
            actor: cordon.actor,
        }
    }
}

/// `GET /admin/cordon` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CordonsView {
    /// Every cordon in place.
    pub cordons: Vec<CordonView>,
}

/// Every cordon in place.
#[utoipa::path(
    get, path = "/admin/cordon", tag = "admin",
    responses((status = 200, body = CordonsView)),
    security(("bearer" = []))
)]
pub async fn list_cordons(State(app): State<AppState>) -> Result<Json<CordonsView>> {
    let cordons = app.store.cordons().await?;
    Ok(Json(CordonsView {
        cordons: cordons.into_iter().map(CordonView::from).collect(),
    }))
}

/// Pauses new allocations for a name prefix or a lab: they answer 503 `CORDONED` with the
/// reason; students who hold a sandbox there get it back as before. Holds across the fleet
/// within 5 s. Recorded with the reason.
#[utoipa::path(
    post, path = "/admin/cordon", tag = "admin",
    request_body = CordonRequest,
    responses(
        (status = 201, body = CordonView),
        (status = 400, description = "Neither a prefix nor a lab, a bad one, or no reason", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn add_cordon(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    JsonBody(request): JsonBody<CordonRequest>,
) -> Result<(StatusCode, Json<CordonView>)> {
    let reason = ReasonRequest {
        reason: request.reason,
    }
    .reason()?;
    let name_prefix = given(request.name_prefix.as_ref())
        .map(|prefix| NamePrefix::parse("name_prefix", prefix))
        .transpose()?;
    let track_name = given(request.track_name.as_ref())
        .map(|track| TrackName::parse("track_name", track))
        .transpose()?;
    if name_prefix.is_none() && track_name.is_none() {
        return Err(ValidationError::new(
            "name_prefix",
            "or track_name is required: say what to pause",
        )
        .into());
    }
    let cordon = Cordon {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        name_prefix: name_prefix.map(|p| p.as_str().to_owned()),
        track_name: track_name.map(|t| t.as_str().to_owned()),
        reason: reason.clone(),
        created_at: app.clock.now(),
        actor: actor.0.clone(),
    };
    app.store.add_cordon(&cordon).await?;
    app.cordons.forget().await;
    let target = [
        cordon
            .name_prefix
            .as_ref()
            .map(|p| format!("name_prefix={p}")),
        cordon
            .track_name
            .as_ref()
            .map(|t| format!("track_name={t}")),
    ];
    let done = Done {
        action: "admin.cordon",
        target: Some(target.into_iter().flatten().collect::<Vec<_>>().join(" ")),
        reason: Some(reason),
        detail: Some(format!("cordon {}", cordon.id)),
    };
    record(&app, &actor, done).await;
    Ok((StatusCode::CREATED, Json(cordon.into())))
}

/// Lifts a cordon: new allocations there are served again (across the fleet within 5 s).
#[utoipa::path(
    delete, path = "/admin/cordon/{id}", tag = "admin",
    params(("id" = String, Path, description = "The cordon's id")),
    responses(
        (status = 200, description = "Lifted", body = CordonView),
        (status = 400, description = "Not a cordon id", body = ErrorEnvelope),
        (status = 404, description = "No such cordon", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn remove_cordon(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Path(id): Path<String>,
) -> Result<Json<CordonView>> {
    let well_formed =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed {
        return Err(ValidationError::new("id", "is not a cordon id").into());
    }
    let Some(cordon) = app.store.remove_cordon(&id).await? else {
        return Err(ApiError::NothingFound(format!("no cordon {id}")));
    };
    app.cordons.forget().await;
    let done = Done {
        action: "admin.uncordon",
        target: Some(format!("cordon {id}")),
        reason: None,
        detail: Some(cordon.reason.clone()),
    };
    record(&app, &actor, done).await;
    Ok(Json(cordon.into()))
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
                at: a.at,
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
