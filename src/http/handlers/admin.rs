//! Admin routes (docs/api.md, *Admin routes*): pool inspection, import and removal.

pub mod views;

use std::collections::HashSet;
use std::time::Instant;

use axum::Json;
use axum::extract::{Extension, State};
use serde::Deserialize;
use utoipa::IntoParams;

use self::views::{
    AdminSandboxView, BulkDeleteView, ImportRequest, ImportRow, ImportView, LabView, LabsView,
    NiosxaasHistoryView, SandboxListView, StatsView,
};
use crate::domain::usage::lab_stats;
use crate::domain::{
    DeletableStatus, ExternalId, HolderKey, LabName, NamePrefix, NewSandbox, SandboxId,
    SandboxName, SandboxStatus, SearchText, ValidationError, trim_blanks,
};
use crate::http::auth::AdminActor;
use crate::http::error::ErrorEnvelope;
use crate::http::error::{ApiError, Result};
use crate::http::extract::{JsonBody, Query, SandboxIdPath};
use crate::http::handlers::actions::{Done, record};
use crate::http::handlers::jobs::views::RunStatus;
use crate::http::state::AppState;
use crate::store::{ListCursor, ListQuery};

/// Most rows one import may carry.
pub const MAX_IMPORT_ROWS: usize = 1000;
/// Page size when `limit` is not given.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page.
const MAX_PAGE_SIZE: u32 = 100;

/// Query of `GET /admin/sandboxes`, as sent.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only rows in this status.
    status: Option<String>,
    /// Page size, 1..=100 (default 50).
    limit: Option<String>,
    /// The `cursor` of the previous page.
    cursor: Option<String>,
    /// Only rows whose name starts with this.
    name_prefix: Option<String>,
    /// Only rows held by this holder key.
    #[serde(rename = "student")]
    holder: Option<String>,
    /// Only rows of this lab.
    #[serde(rename = "track_name")]
    lab: Option<String>,
    /// Only rows whose id, name, holder key or lab contains this text (ignoring case).
    q: Option<String>,
}

/// Blank query values count as absent, as a form with an empty field would send them.
pub(crate) fn given(value: Option<&String>) -> Option<&str> {
    value.map(|v| trim_blanks(v)).filter(|v| !v.is_empty())
}

/// An integer query value within `range`, or `default` when absent.
pub(crate) fn integer_in(
    name: &str,
    raw: Option<&String>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ValidationError> {
    given(raw).map_or(Ok(default), |v| {
        v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| {
            ValidationError::new(
                name,
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
    })
}

impl TryFrom<ListParams> for ListQuery {
    type Error = ValidationError;

    fn try_from(params: ListParams) -> Result<Self, ValidationError> {
        let limit = integer_in(
            "limit",
            params.limit.as_ref(),
            DEFAULT_PAGE_SIZE,
            1..=MAX_PAGE_SIZE,
        )?;
        Ok(Self {
            status: given(params.status.as_ref())
                .map(str::parse::<SandboxStatus>)
                .transpose()?,
            name_prefix: given(params.name_prefix.as_ref())
                .map(|v| NamePrefix::parse("name_prefix", v))
                .transpose()?,
            holder: given(params.holder.as_ref())
                .map(|v| HolderKey::parse("student", v))
                .transpose()?,
            lab: given(params.lab.as_ref())
                .map(|v| LabName::parse("track_name", v))
                .transpose()?,
            search: given(params.q.as_ref())
                .map(|v| SearchText::parse("q", v))
                .transpose()?,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            cursor: given(params.cursor.as_ref())
                .map(ListCursor::decode)
                .transpose()?,
        })
    }
}

/// One page of sandboxes, in id order; follow `cursor` to visit every match once.
#[utoipa::path(
    get, path = "/admin/sandboxes", tag = "admin", params(ListParams),
    responses((status = 200, body = SandboxListView), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn list_sandboxes(
    State(app): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<SandboxListView>> {
    let page = app.store.admin.list(ListQuery::try_from(params)?).await?;
    let lab = app.lab_policy;
    let sandboxes: Vec<AdminSandboxView> = page
        .sandboxes
        .iter()
        .map(|row| AdminSandboxView::new(row, lab))
        .collect();
    Ok(Json(SandboxListView {
        count: sandboxes.len(),
        sandboxes,
        cursor: page.next.map(|c| c.encode()),
    }))
}

/// Validates one import row; `index` locates it in the error.
fn parse_import_row(index: usize, row: ImportRow) -> Result<NewSandbox, ValidationError> {
    let field = |name: &str| format!("sandboxes[{index}].{name}");
    let sfdc = row
        .sfdc_account_id
        .as_deref()
        .map(trim_blanks)
        .filter(|v| !v.is_empty())
        .map(|v| SandboxName::parse(&field("sfdc_account_id"), v))
        .transpose()?;
    Ok(NewSandbox {
        sandbox_id: SandboxId::parse(&field("sandbox_id"), &row.sandbox_id.into_text())?,
        name: SandboxName::parse(&field("name"), &row.name)?,
        external_id: ExternalId::parse(&field("external_id"), &row.external_id)?,
        sfdc_account_id: sfdc.map(|s| s.as_str().to_owned()),
    })
}

/// Parses a whole import: at most 1000 rows, each valid, no id twice.
pub fn parse_import(request: ImportRequest) -> Result<Vec<NewSandbox>, ApiError> {
    if request.sandboxes.len() > MAX_IMPORT_ROWS {
        return Err(ApiError::PayloadTooLarge(format!(
            "An import may carry at most {MAX_IMPORT_ROWS} sandboxes"
        )));
    }
    let rows = request
        .sandboxes
        .into_iter()
        .enumerate()
        .map(|(index, row)| parse_import_row(index, row))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = HashSet::new();
    if let Some(dup) = rows.iter().find(|r| !seen.insert(r.sandbox_id.as_str())) {
        return Err(ValidationError::new(
            "sandboxes",
            format!("lists sandbox_id {} more than once", dup.sandbox_id),
        )
        .into());
    }
    Ok(rows)
}

/// Imports sandboxes as `available`; rows that exist in another status are skipped.
#[utoipa::path(
    post, path = "/admin/sandboxes", tag = "admin", request_body = ImportRequest,
    responses(
        (status = 200, body = ImportView),
        (status = 400, body = ErrorEnvelope),
        (status = 413, description = "More than 1000 rows or 1 MiB", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn import_sandboxes(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    JsonBody(request): JsonBody<ImportRequest>,
) -> Result<Json<ImportView>> {
    let rows = parse_import(request)?;
    let summary = app.store.admin.import(rows, app.clock.now()).await?;
    let done = Done {
        action: "admin.import_sandboxes",
        target: None,
        reason: None,
        detail: Some(format!(
            "imported {}, skipped {}",
            summary.imported, summary.skipped
        )),
    };
    record(&app, &actor, done).await;
    Ok(Json(summary.into()))
}

/// Exact counts per status over the whole pool.
#[utoipa::path(
    get, path = "/admin/stats", tag = "admin",
    responses((status = 200, body = StatsView)),
    security(("bearer" = []))
)]
pub async fn pool_stats(State(app): State<AppState>) -> Result<Json<StatsView>> {
    Ok(Json(app.store.analytics.stats().await?.into()))
}

/// Per-lab analytics over rows that carry a track name.
#[utoipa::path(
    get, path = "/admin/tracks", tag = "admin",
    responses((status = 200, body = LabsView)),
    security(("bearer" = []))
)]
pub async fn lab_analytics(State(app): State<AppState>) -> Result<Json<LabsView>> {
    let facts = app.shared_allocation_facts().await?;
    let levels = app.metrics.lab_slo.levels();
    let mut labs: Vec<LabView> = lab_stats(&facts)
        .into_iter()
        .map(|stats| {
            let seen = levels.iter().find(|l| l.lab == stats.lab);
            LabView::from(stats).with_levels(seen)
        })
        .collect();
    for seen in &levels {
        if !labs.iter().any(|lab| lab.lab == seen.lab) && seen.lab != "none" {
            labs.push(LabView::of_levels(seen));
        }
    }
    labs.sort_by(|a, b| a.lab.cmp(&b.lab));
    Ok(Json(LabsView { labs }))
}

/// `?status=` of bulk-delete, as sent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkDeleteParams {
    /// Required: `available`, `stale`, `deletion_failed` or `deleted`.
    status: Option<String>,
}

/// Removes every row in one status from the broker (never from the provider).
#[utoipa::path(
    post, path = "/admin/bulk-delete", tag = "admin", params(BulkDeleteParams),
    responses((status = 200, body = BulkDeleteView), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn bulk_delete(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Query(params): Query<BulkDeleteParams>,
) -> Result<Json<BulkDeleteView>> {
    let started = Instant::now();
    let raw = given(params.status.as_ref()).ok_or_else(|| {
        ValidationError::new(
            "status",
            "is required (available, stale, deletion_failed or deleted)",
        )
    })?;
    let status = DeletableStatus::parse(raw)?;
    let deleted = app.store.admin.bulk_delete(status, app.clock.now()).await?;
    let done = Done {
        action: "admin.bulk_delete",
        target: Some(format!("status={}", status.status())),
        reason: None,
        detail: Some(format!("deleted {deleted}")),
    };
    record(&app, &actor, done).await;
    Ok(Json(BulkDeleteView {
        status: RunStatus::Completed,
        deleted,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// The NIOSXaaS pre-delete hook's history item of a deleted (or given-up) sandbox.
#[utoipa::path(
    get, path = "/admin/sandboxes/{sandbox_id}/niosxaas-cleanup", tag = "admin",
    params(("sandbox_id" = String, Path, description = "The sandbox's id")),
    responses(
        (status = 200, body = NiosxaasHistoryView),
        (status = 404, description = "No history: the hook never ran for it, it is not finished, or the item expired", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn niosxaas_cleanup(
    State(app): State<AppState>,
    SandboxIdPath(id): SandboxIdPath,
) -> Result<Json<NiosxaasHistoryView>> {
    let history = app
        .store
        .analytics
        .niosxaas_history(&id, app.clock.now())
        .await?
        .ok_or_else(|| {
            ApiError::NothingFound(format!(
                "No NIOSXaaS cleanup history for sandbox {id}: the hook never ran for it, \
                 its deletion is not finished, or the history expired"
            ))
        })?;
    Ok(Json(history.into()))
}
