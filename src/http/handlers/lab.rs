//! Lab routes (docs/api.md, *Track routes*): what lab scripts call when a student starts or stops a lab.

pub mod views;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use self::views::{AllocationView, ReleaseView, SandboxView};
use crate::allocation::{self, AllocateInput};
use crate::domain::reservations;
use crate::domain::{LabName, NamePrefix};
use crate::http::auth::ScopedToken;
use crate::http::error::ErrorEnvelope;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{AllocationHeaders, Holder, SandboxIdPath};
use crate::http::middleware::{LoggedSandbox, Outcome};
use crate::http::state::AppState;
use crate::ratelimit::Decision;
use crate::store::{AllocationRequest, ReleaseRequest, TokenGrant};
use std::time::Duration;

/// Allocates a sandbox to the student, or returns the one this allocation key already holds.
#[utoipa::path(
    post, path = "/allocate", tag = "track",
    params(
        ("X-Instruqt-Sandbox-ID" = Option<String>, Header, description = "Student key (preferred)"),
        ("X-Track-ID" = Option<String>, Header, description = "Legacy student key, used when the first is absent"),
        ("X-Instruqt-Track-ID" = Option<String>, Header, description = "Lab slug, stored for analytics"),
        ("X-Sandbox-Name-Prefix" = Option<String>, Header, description = "Only sandboxes whose name starts with this"),
        ("Idempotency-Key" = Option<String>, Header, description = "Separates several allocations of one student"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (N ≤ 60): when nothing is available, wait up to N seconds for a sandbox instead of answering 409 at once"),
    ),
    responses(
        (status = 201, description = "Newly allocated", body = AllocationView),
        (status = 200, description = "This key's existing allocation", body = AllocationView),
        (status = 400, description = "Missing or malformed header", body = ErrorEnvelope),
        (status = 403, description = "`OUT_OF_SCOPE`: a lab token asked for a lab or prefix outside its scope, or replayed another token's allocation", body = ErrorEnvelope),
        (status = 409, description = "No matching sandbox available", body = ErrorEnvelope),
        (status = 429, description = "`QUOTA_EXCEEDED`: the lab token holds its `max_active` sandboxes; or its `per_minute` rate (`RATE_LIMIT_EXCEEDED`)", body = ErrorEnvelope),
        (status = 503, description = "`CORDONED`: an admin paused new allocations for this prefix or lab (the message says why), or the store is unavailable", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn allocate_sandbox(
    State(app): State<AppState>,
    Holder(holder): Holder,
    headers: AllocationHeaders,
    scoped: Option<Extension<ScopedToken>>,
) -> Result<Response> {
    let input = AllocateInput {
        holder,
        lab: headers.lab,
        name_prefix: headers.name_prefix,
        idempotency_key: headers.idempotency_key,
    };
    let started = tokio::time::Instant::now();
    let request = input.into_request(app.lab_policy.lab_duration_hours, app.clock.now());
    let lab = request.lab.clone();
    let answer = allocate_as_asked(&app, request, scoped, headers.wait).await;
    let lab = lab.as_ref().map(LabName::as_str);
    match &answer {
        Ok(_) => app
            .metrics
            .lab_slo
            .allocated(lab, started.elapsed().as_secs_f64()),
        Err(ApiError::NoSandboxesAvailable) => app.metrics.lab_slo.exhausted(lab),
        Err(_) => {}
    }
    answer
}

/// Allocates for `request` with the static track token, or inside the lab token's scope.
async fn allocate_as_asked(
    app: &AppState,
    request: AllocationRequest,
    scoped: Option<Extension<ScopedToken>>,
    wait: Option<Duration>,
) -> Result<Response> {
    // A wait ends in time for its 409 to beat the request timeout's 408.
    let wait = wait.map(|wait| wait.min(app.http.request_timeout.saturating_sub(WAIT_MARGIN)));
    let Some(Extension(ScopedToken(token))) = scoped else {
        let prefixes = [request.name_prefix.clone()];
        return serve(app, request, &prefixes, wait).await;
    };
    let answer = allocate_under(app, &token, request, wait).await;
    app.metrics
        .lab
        .token_allocations_total
        .with_label_values(&[token.name.as_str(), token_outcome(&answer)])
        .inc();
    answer
}

/// How long before `REQUEST_TIMEOUT_SEC` a waiting request gives up and answers 409.
const WAIT_MARGIN: Duration = Duration::from_secs(2);

/// The `outcome` of `broker_token_allocations_total`.
fn token_outcome(answer: &Result<Response>) -> &'static str {
    match answer {
        Ok(response) if response.status() == StatusCode::CREATED => "success",
        Ok(_) => "idempotent",
        Err(ApiError::NoSandboxesAvailable) => "no_sandboxes",
        Err(ApiError::QuotaExceeded) => "quota_exceeded",
        Err(ApiError::RateLimited { .. }) => "rate_limited",
        Err(ApiError::OutOfScope(_)) => "out_of_scope",
        Err(ApiError::Cordoned { .. }) => "cordoned",
        Err(_) => "error",
    }
}

/// Allocates for `request` under the lab token `token`: inside its scope, at its rate,
/// under its cap.
async fn allocate_under(
    app: &AppState,
    token: &crate::domain::tokens::LabToken,
    mut request: AllocationRequest,
    wait: Option<Duration>,
) -> Result<Response> {
    // A lab token allocates only inside its scope, at its own rate, under its cap.
    let prefixes = token
        .admits(request.lab.as_ref(), request.name_prefix.as_ref())
        .map_err(|out| ApiError::OutOfScope(out.to_string()))?;
    if let Some(per_minute) = token.per_minute.and_then(std::num::NonZeroU32::new)
        && let Decision::Limited { retry_after_secs } = app.token_rates.check(&token.id, per_minute)
    {
        return Err(ApiError::RateLimited { retry_after_secs });
    }
    request.token = Some(TokenGrant {
        id: token.id.clone(),
        max_active: token.max_active,
    });
    serve(app, request, &prefixes, wait).await
}

/// Allocates for `request` from the first of `prefixes` that has a sandbox; when none has
/// and the caller asked to wait, waits its turn for one (see [`wait_for_sandbox`]).
async fn serve(
    app: &AppState,
    request: AllocationRequest,
    prefixes: &[Option<NamePrefix>],
    wait: Option<Duration>,
) -> Result<Response> {
    // A request that may wait is counted once, when it is served or finally refused.
    let quiet = wait.is_some();
    match (
        from_first_with_one(app, &request, prefixes, quiet).await,
        wait,
    ) {
        (Err(ApiError::NoSandboxesAvailable), Some(wait)) => {
            wait_for_sandbox(app, &request, prefixes, wait).await
        }
        (answer, _) => answer,
    }
}

/// Without a prefix of its own, a request may draw on any of the ones given, in order.
async fn from_first_with_one(
    app: &AppState,
    request: &AllocationRequest,
    prefixes: &[Option<NamePrefix>],
    again: bool,
) -> Result<Response> {
    let last = prefixes.len().saturating_sub(1);
    for (tried, prefix) in prefixes.iter().enumerate() {
        let mut request = request.clone();
        request.name_prefix = prefix.clone();
        match allocate_once(app, request, again).await {
            Err(ApiError::NoSandboxesAvailable) if tried < last => {}
            answer => return answer,
        }
    }
    Err(ApiError::NoSandboxesAvailable)
}

/// `Prefer: wait=N` on an exhausted pool: the request takes its place in its prefix's queue
/// (a full queue answers 409 at once), asks for a sync, and tries again whenever it is
/// first in line and the pool may have grown, until it is served or `wait` is up (409).
async fn wait_for_sandbox(
    app: &AppState,
    request: &AllocationRequest,
    prefixes: &[Option<NamePrefix>],
    wait: Duration,
) -> Result<Response> {
    let started = tokio::time::Instant::now();
    let metrics = &app.metrics.lab;
    let queue = prefixes
        .first()
        .cloned()
        .flatten()
        .map_or_else(String::new, |prefix| prefix.as_str().to_owned());
    let Some(ticket) = app.waiting.enter(&queue) else {
        metrics
            .wait_seconds
            .with_label_values(&["queue_full"])
            .observe(0.0);
        return Err(ApiError::NoSandboxesAvailable);
    };
    metrics
        .wait_queue_depth
        .set(gauge_value(app.waiting.depth()));
    app.sync_soon();
    let answer = loop {
        let Some(left) = wait.checked_sub(started.elapsed()) else {
            break Err(ApiError::NoSandboxesAvailable);
        };
        let _ = tokio::time::timeout(left, ticket.next_chance()).await;
        if started.elapsed() >= wait {
            break Err(ApiError::NoSandboxesAvailable);
        }
        if !ticket.is_first() {
            continue;
        }
        match from_first_with_one(app, request, prefixes, true).await {
            Err(ApiError::NoSandboxesAvailable) => {}
            answer => break answer,
        }
    };
    if answer.is_err() {
        allocation::refused_after_waiting(&app.metrics);
    }
    drop(ticket);
    metrics
        .wait_queue_depth
        .set(gauge_value(app.waiting.depth()));
    let outcome = if answer.is_ok() {
        "served"
    } else {
        "timed_out"
    };
    metrics
        .wait_seconds
        .with_label_values(&[outcome])
        .observe(started.elapsed().as_secs_f64());
    answer
}

fn gauge_value(depth: usize) -> i64 {
    i64::try_from(depth).unwrap_or(i64::MAX)
}

/// Allocates (or replays) for `request` unless a cordon pauses it, and answers: 201 for a
/// new allocation, 200 for a replay. `again`: a waiting request's further try, whose
/// finding nothing is not counted.
async fn allocate_once(
    app: &AppState,
    request: AllocationRequest,
    again: bool,
) -> Result<Response> {
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
    let drawn_on = match lab {
        Some(lab) => {
            let reservations = match app.current_reservations().await {
                Ok(reservations) => reservations,
                Err(err) => return Err(allocation::failed_early(&app.metrics, err).into()),
            };
            reservations::drawn_on(
                &reservations,
                lab,
                prefix.unwrap_or_default(),
                request.now,
                app.reservation_lead_secs,
            )
            .map(|reservation| reservation.id.clone())
        }
        None => None,
    };
    let request = AllocationRequest {
        reservation: drawn_on,
        ..request
    };
    let token = request.token.as_ref().map(|token| token.id.clone());
    let (status, outcome, sandbox) = if let Some(cordon) = cordoned {
        // Paused for new allocations; a student who holds a sandbox there keeps it.
        let held = app.store.allocation.held_by(&request).await?;
        let Some(sandbox) = held else {
            return Err(ApiError::Cordoned {
                reason: cordon.reason,
            });
        };
        (StatusCode::OK, "idempotent", sandbox)
    } else {
        let (outcome, result) = if again {
            allocation::try_again(&*app.store.allocation, &app.metrics, request).await
        } else {
            allocation::allocate(&*app.store.allocation, &app.metrics, request).await
        };
        let allocation = result??;
        let status = if allocation.newly_allocated {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        (status, outcome.as_str(), allocation.sandbox)
    };
    // A replay under a lab token is only of that token's own allocation.
    if !sandbox.allocated_under(token.as_deref()) {
        return Err(ApiError::OutOfScope(
            "this student key holds a sandbox allocated under another token".to_owned(),
        ));
    }
    let view = AllocationView::new(&sandbox, app.lab_policy);
    Ok((
        status,
        axum::Extension(Outcome(outcome)),
        axum::Extension(LoggedSandbox(sandbox.sandbox_id)),
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
    scoped: Option<Extension<ScopedToken>>,
) -> Result<Json<SandboxView>> {
    let token = scoped
        .as_ref()
        .map(|Extension(ScopedToken(token))| token.id.as_str());
    let sandbox = allocation::owned_sandbox(&*app.store.allocation, &id, &holder, token).await??;
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
    scoped: Option<Extension<ScopedToken>>,
) -> Result<Json<ReleaseView>> {
    let released = allocation::release(
        &*app.store.allocation,
        &app.metrics,
        ReleaseRequest {
            id: id.clone(),
            holder,
            now: app.clock.now(),
            token: scoped.map(|Extension(ScopedToken(token))| token.id.clone()),
        },
    )
    .await??;
    Ok(Json(ReleaseView::from(&released.sandbox)))
}
