//! Admin routes of the background jobs: trigger a run now, see every job's state.

pub mod views;

use axum::Json;
use axum::extract::{Extension, State};

use self::views::{
    AuditView, BreakersView, CleanupView, ExpireView, JobView, JobsView, RunStatus,
    StaleDeleteView, SyncView,
};
use crate::domain::ValidationError;
use crate::http::auth::AdminActor;
use crate::http::error::ApiError;
use crate::http::error::ErrorEnvelope;
use crate::http::error::Result;
use crate::http::extract::Query;
use crate::http::handlers::actions::{Done, record};
use crate::http::state::AppState;
use crate::jobs::{ExpiryCounts, JobName, JobReport, RunCounts, SyncCounts};

/// Records an admin-triggered run of `job` in the action log, with its counts.
async fn record_run(
    app: &AppState,
    actor: &AdminActor,
    job: JobName,
    report: &JobReport<impl RunCounts>,
    target: Option<String>,
) {
    let counts: Vec<String> = report
        .counts
        .named()
        .into_iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    let done = Done {
        action: job.admin_action(),
        target,
        reason: None,
        detail: Some(counts.join(", ")),
    };
    record(app, actor, done).await;
}

fn duration_ms<C>(report: &JobReport<C>) -> u64 {
    u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX)
}

/// `?force=` of a sync, as sent.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncParams {
    /// `true` applies the listing even if it would mark more of the pool stale than
    /// `SYNC_MAX_STALE_FRACTION` allows; `false` (the default) refuses such a listing.
    force: Option<String>,
}

/// Syncs with the provider now (under the job's lease).
#[utoipa::path(
    post, path = "/admin/sync", tag = "admin",
    params(SyncParams),
    responses(
        (status = 200, body = SyncView),
        (status = 400, description = "`force` is not `true` or `false`", body = ErrorEnvelope),
        (status = 409, description = "A sync is running (here or on another instance), or the listing was refused (`LISTING_REFUSED`): it would have marked too much of the pool stale", body = ErrorEnvelope),
        (status = 503, description = "The provider is unreachable, refused, or not configured", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn trigger_sync(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Query(params): Query<SyncParams>,
) -> Result<Json<SyncView>> {
    let force = match params.force.as_deref().map(str::trim) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ValidationError::new("force", "must be true or false").into());
        }
    };
    let report = if force {
        app.jobs.force_sync().await?
    } else {
        app.jobs.sync().await?
    };
    let forced = force.then(|| "force=true".to_owned());
    record_run(&app, &actor, JobName::Sync, &report, forced).await;
    let SyncCounts { summary, skipped } = report.counts;
    Ok(Json(SyncView {
        status: RunStatus::Completed,
        synced: summary.synced,
        marked_stale: summary.marked_stale,
        added: summary.added,
        restored: summary.restored,
        untouched: summary.untouched,
        kept_out: summary.kept_out,
        unverified: summary.unverified,
        skipped,
        duration_ms: duration_ms(&report),
    }))
}

/// Audits the pool now (under the audit job's lease) and answers what it found; repairs
/// nothing.
#[utoipa::path(
    post, path = "/admin/audit", tag = "admin",
    responses(
        (status = 200, body = AuditView),
        (status = 409, description = "An audit is running (here or on another instance)", body = ErrorEnvelope),
        (status = 503, description = "The store is unreachable", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn trigger_audit(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
) -> Result<Json<AuditView>> {
    let report = app.jobs.audit().await?;
    record_run(&app, &actor, JobName::Audit, &report, None).await;
    last_audit_view(&app).await
}

/// The last audit, run here or on any other instance.
#[utoipa::path(
    get, path = "/admin/audit", tag = "admin",
    responses(
        (status = 200, body = AuditView),
        (status = 404, description = "No audit has run yet", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn last_audit(State(app): State<AppState>) -> Result<Json<AuditView>> {
    last_audit_view(&app).await
}

async fn last_audit_view(app: &AppState) -> Result<Json<AuditView>> {
    match app.store.lifecycle.last_audit().await? {
        Some(report) => Ok(Json(AuditView::from(report))),
        None => Err(ApiError::NothingFound(
            "no audit has run yet (POST /v1/admin/audit runs one)".to_owned(),
        )),
    }
}

/// Every background job: enabled here, interval, lease holder, last run and next run.
#[utoipa::path(
    get, path = "/admin/jobs", tag = "admin",
    responses((status = 200, body = JobsView)),
    security(("bearer" = []))
)]
pub async fn list_jobs(State(app): State<AppState>) -> Result<Json<JobsView>> {
    let jobs = app
        .jobs
        .records()
        .await?
        .into_iter()
        .map(|(job, enabled, interval, record)| {
            JobView::new(job.as_str(), enabled, interval, record)
        })
        .collect();
    Ok(Json(JobsView {
        instance: app.jobs.instance().to_owned(),
        jobs,
        breakers: BreakersView {
            provider: app.breaker.as_ref().map(|b| b.state().as_str().to_owned()),
            niosxaas: app
                .pre_delete
                .as_ref()
                .map(|h| h.breaker_state().as_str().to_owned()),
        },
    }))
}

/// Runs auto-expiry now (under the job's lease): ended allocations go to `pending_deletion`.
#[utoipa::path(
    post, path = "/admin/expire", tag = "admin",
    responses(
        (status = 200, body = ExpireView),
        (status = 409, description = "Expiry is running (here or on another instance)", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn trigger_expiry(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
) -> Result<Json<ExpireView>> {
    let report = app.jobs.expire().await?;
    record_run(&app, &actor, JobName::Expiry, &report, None).await;
    let ExpiryCounts { expired } = report.counts;
    Ok(Json(ExpireView {
        status: RunStatus::Completed,
        expired,
        duration_ms: duration_ms(&report),
    }))
}

/// `?grace_period_hours=` of auto-delete-stale, as sent.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaleParams {
    /// Hours a row must have been stale, ≥ 0 (default 24).
    grace_period_hours: Option<String>,
}

/// The grace in hours: a finite number ≥ 0, 24 when not given.
fn grace_hours(raw: Option<&str>) -> Result<f64, ValidationError> {
    let Some(raw) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_STALE_GRACE_HOURS);
    };
    raw.parse::<f64>()
        .ok()
        .filter(|hours| hours.is_finite() && *hours >= 0.0 && *hours <= MAX_STALE_GRACE_HOURS)
        .ok_or_else(|| {
            ValidationError::new(
                "grace_period_hours",
                "must be a number of hours from 0 to 87600",
            )
        })
}

/// Hours a row must have been stale before `auto-delete-stale` removes it, by default.
const DEFAULT_STALE_GRACE_HOURS: f64 = 24.0;
/// Ten years: anything larger is a typo.
const MAX_STALE_GRACE_HOURS: f64 = 87_600.0;

/// Removes `stale` rows that have been stale for longer than the grace period.
#[utoipa::path(
    post, path = "/admin/auto-delete-stale", tag = "admin", params(StaleParams),
    responses((status = 200, body = StaleDeleteView), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = []))
)]
pub async fn auto_delete_stale(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Query(params): Query<StaleParams>,
) -> Result<Json<StaleDeleteView>> {
    let started = std::time::Instant::now();
    let hours = grace_hours(params.grace_period_hours.as_deref())?;
    // Bounded above, so the product fits an i64 of seconds.
    let grace_secs = (hours * 3600.0).round() as i64;
    let now = app.clock.now();
    let deleted = app
        .store
        .lifecycle
        .delete_stale(now - grace_secs, now)
        .await?;
    let done = Done {
        action: "admin.auto_delete_stale",
        target: Some(format!("grace_period_hours={hours}")),
        reason: None,
        detail: Some(format!("deleted {deleted}")),
    };
    record(&app, &actor, done).await;
    Ok(Json(StaleDeleteView {
        status: RunStatus::Completed,
        deleted,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        grace_period_hours: hours,
    }))
}

#[cfg(test)]
mod tests {
    use super::grace_hours;

    #[test]
    fn the_grace_is_a_non_negative_number_of_hours() {
        assert_eq!(grace_hours(None), Ok(24.0));
        assert_eq!(grace_hours(Some("0")), Ok(0.0));
        assert_eq!(grace_hours(Some("1.5")), Ok(1.5));
        for bad in ["-1", "abc", "NaN", "inf", "1e9"] {
            assert!(grace_hours(Some(bad)).is_err(), "{bad} accepted");
        }
    }
}

/// Deletes every `pending_deletion` sandbox at the provider now, backoff ignored (throttling
/// kept), under the cleanup job's lease.
#[utoipa::path(
    post, path = "/admin/cleanup", tag = "admin",
    responses(
        (status = 200, body = CleanupView),
        (status = 409, description = "A cleanup is running (here or on another instance)", body = ErrorEnvelope),
        (status = 503, description = "No provider is configured", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn trigger_cleanup(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
) -> Result<Json<CleanupView>> {
    let report = app.jobs.cleanup().await?;
    record_run(&app, &actor, JobName::Cleanup, &report, None).await;
    let counts = report.counts;
    Ok(Json(CleanupView {
        status: RunStatus::Completed,
        deleted: counts.deleted,
        failed: counts.failed,
        retrying: counts.retrying,
        postponed: counts.postponed,
        duration_ms: duration_ms(&report),
    }))
}
