//! Admin routes for dashboards and scripts: allocations over time with lab-duration
//! statistics, and what the NIOSXaaS pre-delete hook did. Both fold store facts with the
//! rules of [`crate::domain::usage`].

pub mod views;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use self::views::{NiosxaasCountsView, NiosxaasOverviewView, UsageView};
use crate::domain::usage::{NiosxaasTally, UsageWindow, usage_series};
use crate::domain::{SandboxStatus, ValidationError};
use crate::http::error::{ErrorEnvelope, Result};
use crate::http::extract::Query;
use crate::http::handlers::admin::{given, integer_in};
use crate::http::state::AppState;

/// History items `GET /admin/niosxaas` returns when `limit` is not given.
const DEFAULT_RECORDS: u32 = 100;
/// Most history items one answer carries.
const MAX_RECORDS: u32 = 1000;

/// `raw` as a whole number, or `default` when absent.
fn whole_number(name: &str, raw: Option<&String>, default: u32) -> Result<u32, ValidationError> {
    given(raw).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| ValidationError::new(name, "must be a whole number"))
    })
}

/// Query of `GET /admin/usage`, as sent.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// How far back the series reaches, 1..=720 hours (default 24).
    hours: Option<String>,
    /// Bucket size, 1..=1440 minutes (default 60); at most 1000 buckets.
    bucket_minutes: Option<String>,
}

/// Allocations and releases per time bucket, and how long released sandboxes were held.
#[utoipa::path(
    get, path = "/admin/usage", tag = "admin", params(UsageParams),
    responses((status = 200, body = UsageView), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn usage(
    State(app): State<AppState>,
    Query(params): Query<UsageParams>,
) -> Result<Json<UsageView>> {
    let window = UsageWindow::ending_now(
        app.clock.now(),
        whole_number("hours", params.hours.as_ref(), 24)?,
        whole_number("bucket_minutes", params.bucket_minutes.as_ref(), 60)?,
    )?;
    let facts = app.shared_allocation_facts().await?;
    Ok(Json(usage_series(&facts, window).into()))
}

/// Query of `GET /admin/niosxaas`, as sent.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NiosxaasParams {
    /// How many history items to return, newest first, 1..=1000 (default 100).
    limit: Option<String>,
}

/// The NIOSXaaS hook: enabled or not, its breaker, counts and history records.
#[utoipa::path(
    get, path = "/admin/niosxaas", tag = "admin", params(NiosxaasParams),
    responses((status = 200, body = NiosxaasOverviewView), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn niosxaas_overview(
    State(app): State<AppState>,
    Query(params): Query<NiosxaasParams>,
) -> Result<Json<NiosxaasOverviewView>> {
    let limit = integer_in(
        "limit",
        params.limit.as_ref(),
        DEFAULT_RECORDS,
        1..=MAX_RECORDS,
    )?;
    let now = app.clock.now();
    let mut histories: Vec<_> = app
        .niosxaas_histories
        .try_get(|| async {
            app.store
                .analytics
                .niosxaas_histories(now)
                .await
                .map(Arc::new)
        })
        .await?
        .iter()
        .cloned()
        .collect();
    let mut tally = NiosxaasTally::default();
    histories.iter().for_each(|h| tally.count(&h.cleanup));
    let hook = app.pre_delete.as_deref();
    let pending = match hook {
        // The pool counts `/metrics` shares (at most METRICS_POOL_REFRESH_SEC old).
        Some(_) => match app.store_readings().await {
            Some(readings) => readings.pool.get(SandboxStatus::PendingDeletion),
            None => app
                .store
                .analytics
                .stats()
                .await?
                .get(SandboxStatus::PendingDeletion),
        },
        None => 0,
    };
    // Newest first; a given-up deletion (no deleted_at) sorts after every deleted one.
    histories.sort_by(|a, b| (b.deleted_at, &a.sandbox_id).cmp(&(a.deleted_at, &b.sandbox_id)));
    let total_records = histories.len();
    histories.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Json(NiosxaasOverviewView {
        enabled: hook.is_some(),
        shadow_mode: hook.is_some_and(|h| h.shadow_mode()),
        breaker: hook.map(|h| h.breaker_state().as_str().to_owned()),
        counts: NiosxaasCountsView::new(tally, pending),
        total_records,
        records: histories.into_iter().map(Into::into).collect(),
    }))
}
