//! Cordons: an admin pauses new allocations for a name prefix or a lab, recorded in the
//! action log; the lab route checks them (at most 5 s old) before allocating.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::actions::{Done, ReasonRequest, record};
use crate::domain::cordon::Cordon;
use crate::domain::{LabName, NamePrefix, ValidationError};
use crate::http::auth::AdminActor;
use crate::http::error::{ApiError, ErrorEnvelope, Result};
use crate::http::extract::JsonBody;
use crate::http::handlers::admin::given;
use crate::http::state::AppState;

/// A cordon to put in place, as sent.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CordonRequest {
    /// Pause requests whose `X-Sandbox-Name-Prefix` starts with this.
    name_prefix: Option<String>,
    /// Pause requests whose `X-Instruqt-Track-ID` is this.
    #[serde(rename = "track_name")]
    lab: Option<String>,
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
    #[serde(rename = "track_name")]
    pub lab: Option<String>,
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
            lab: cordon.lab,
            reason: cordon.reason,
            created_at: cordon.created_at.get(),
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
    let cordons = app.store.admin.cordons().await?;
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
    let lab = given(request.lab.as_ref())
        .map(|lab| LabName::parse("track_name", lab))
        .transpose()?;
    if name_prefix.is_none() && lab.is_none() {
        return Err(ValidationError::new(
            "name_prefix",
            "or track_name is required: say what to pause",
        )
        .into());
    }
    let cordon = Cordon {
        id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        name_prefix: name_prefix.map(|p| p.as_str().to_owned()),
        lab: lab.map(|t| t.as_str().to_owned()),
        reason: reason.clone(),
        created_at: app.clock.now(),
        actor: actor.0.clone(),
    };
    app.store.admin.add_cordon(&cordon).await?;
    app.cordons.forget().await;
    let target = [
        cordon
            .name_prefix
            .as_ref()
            .map(|p| format!("name_prefix={p}")),
        cordon.lab.as_ref().map(|t| format!("track_name={t}")),
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
    let Some(cordon) = app.store.admin.remove_cordon(&id).await? else {
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
