//! Admin routes of the background jobs: trigger a run now, see every job's state.

use axum::Json;
use axum::extract::State;

use crate::app::AppState;
use crate::http::error::Result;
use crate::http::views::{ErrorEnvelope, JobView, JobsView, SyncView};
use crate::jobs::JobName;

/// Syncs with the provider now (under the job's lease).
#[utoipa::path(
    post, path = "/admin/sync", tag = "admin",
    responses(
        (status = 200, body = SyncView),
        (status = 409, description = "A sync is running (here or on another instance)", body = ErrorEnvelope),
        (status = 503, description = "The provider is unreachable, refused, or not configured", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn trigger_sync(State(app): State<AppState>) -> Result<Json<SyncView>> {
    let report = app.jobs.run(JobName::Sync).await?;
    Ok(Json(SyncView {
        status: "completed".into(),
        synced: report.count("synced"),
        marked_stale: report.count("marked_stale"),
        added: report.count("added"),
        restored: report.count("restored"),
        untouched: report.count("untouched"),
        skipped: report.count("skipped"),
        duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
    }))
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
        instance: app.jobs.holder().to_owned(),
        jobs,
    }))
}
