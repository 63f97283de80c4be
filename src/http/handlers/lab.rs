//! Lab routes (docs/api.md, *Track routes*): what lab scripts call when a student starts or stops a lab.

pub mod views;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use self::views::{AllocationView, ReleaseView, SandboxView};
use crate::allocation::{self, AllocateInput};
use crate::http::error::ErrorEnvelope;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{AllocationHeaders, Holder, SandboxIdPath};
use crate::http::middleware::{LoggedSandbox, Outcome};
use crate::http::state::AppState;
use crate::store::ReleaseRequest;

/// Allocates a sandbox to the student, or returns the one this allocation key already holds.
#[utoipa::path(
    post, path = "/allocate", tag = "track",
    params(
        ("X-Instruqt-Sandbox-ID" = Option<String>, Header, description = "Student key (preferred)"),
        ("X-Track-ID" = Option<String>, Header, description = "Legacy student key, used when the first is absent"),
        ("X-Instruqt-Track-ID" = Option<String>, Header, description = "Lab slug, stored for analytics"),
        ("X-Sandbox-Name-Prefix" = Option<String>, Header, description = "Only sandboxes whose name starts with this"),
        ("Idempotency-Key" = Option<String>, Header, description = "Separates several allocations of one student"),
    ),
    responses(
        (status = 201, description = "Newly allocated", body = AllocationView),
        (status = 200, description = "This key's existing allocation", body = AllocationView),
        (status = 400, description = "Missing or malformed header", body = ErrorEnvelope),
        (status = 409, description = "No matching sandbox available", body = ErrorEnvelope),
        (status = 503, description = "`CORDONED`: an admin paused new allocations for this prefix or lab (the message says why), or the store is unavailable", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn allocate_sandbox(
    State(app): State<AppState>,
    Holder(holder): Holder,
    headers: AllocationHeaders,
) -> Result<Response> {
    let input = AllocateInput {
        holder,
        lab: headers.lab,
        name_prefix: headers.name_prefix,
        idempotency_key: headers.idempotency_key,
    };
    let request = input.into_request(app.lab_policy.lab_duration_hours, app.clock.now());
    let prefix = request.name_prefix.as_ref().map(|p| p.as_str());
    let lab = request.lab.as_ref().map(|t| t.as_str());
    // A store that cannot list the cordons cannot allocate either: answer (and count) the
    // outage at once rather than wait for it a second time.
    let cordons = match app.current_cordons().await {
        Ok(cordons) => cordons,
        Err(err) => return Err(allocation::failed_early(&app.metrics, err).into()),
    };
    let cordoned = cordons
        .iter()
        .find(|cordon| cordon.pauses(prefix, lab))
        .cloned();
    if let Some(cordon) = cordoned {
        // Paused for new allocations; a student who holds a sandbox there keeps it.
        let held = app.store.allocation.held_by(&request).await?;
        let Some(sandbox) = held else {
            return Err(ApiError::Cordoned {
                reason: cordon.reason,
            });
        };
        let view = AllocationView::new(&sandbox, app.lab_policy);
        return Ok((
            StatusCode::OK,
            axum::Extension(Outcome("idempotent")),
            axum::Extension(LoggedSandbox(sandbox.sandbox_id)),
            Json(view),
        )
            .into_response());
    }
    let (outcome, result) =
        allocation::allocate(&*app.store.allocation, &app.metrics, request).await;
    let allocation = result??;
    let status = if allocation.newly_allocated {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = AllocationView::new(&allocation.sandbox, app.lab_policy);
    Ok((
        status,
        axum::Extension(Outcome(outcome.as_str())),
        axum::Extension(LoggedSandbox(allocation.sandbox.sandbox_id)),
        Json(view),
    )
        .into_response())
}

/// The caller's own sandbox, in any status.
#[utoipa::path(
    get, path = "/sandboxes/{sandbox_id}", tag = "track",
    params(
        ("sandbox_id" = String, Path, description = "The sandbox's id"),
        ("X-Instruqt-Sandbox-ID" = Option<String>, Header, description = "Student key"),
    ),
    responses(
        (status = 200, body = SandboxView),
        (status = 403, description = "Held by another student or nobody", body = ErrorEnvelope),
        (status = 404, description = "No such sandbox", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn get_sandbox(
    State(app): State<AppState>,
    SandboxIdPath(id): SandboxIdPath,
    Holder(holder): Holder,
) -> Result<Json<SandboxView>> {
    let sandbox = allocation::owned_sandbox(&*app.store.allocation, &id, &holder).await??;
    Ok(Json(SandboxView::new(&sandbox, app.lab_policy)))
}

/// Releases the caller's sandbox for deletion; repeating it returns the same body.
#[utoipa::path(
    post, path = "/sandboxes/{sandbox_id}/mark-for-deletion", tag = "track",
    operation_id = "mark_for_deletion",
    params(
        ("sandbox_id" = String, Path, description = "The sandbox's id"),
        ("X-Instruqt-Sandbox-ID" = Option<String>, Header, description = "Student key"),
    ),
    responses(
        (status = 200, body = ReleaseView),
        (status = 403, description = "Held by another student or nobody", body = ErrorEnvelope),
        (status = 404, description = "No such sandbox", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn release(
    State(app): State<AppState>,
    SandboxIdPath(id): SandboxIdPath,
    Holder(holder): Holder,
) -> Result<Json<ReleaseView>> {
    let released = allocation::release(
        &*app.store.allocation,
        &app.metrics,
        ReleaseRequest {
            id: id.clone(),
            holder,
            now: app.clock.now(),
        },
    )
    .await??;
    Ok(Json(ReleaseView::from(&released.sandbox)))
}
