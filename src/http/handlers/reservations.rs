//! Reservations for scheduled classes (docs/api.md, *Reservations*): an admin sets a count
//! of sandboxes aside for a lab over a time, sees what each holds and used, and deletes
//! one; every change is recorded in the action log. The reservations job does the holding
//! and returning; these routes start a run of it so nobody waits for its schedule.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::actions::{Done, record};
use crate::domain::reservations::{
    self, ID_PREFIX, RawReservationSpec, Reservation, ReservationCounts,
};
use crate::domain::time::EpochSecs;
use crate::domain::usage::{allocation_rate, time_to_empty};
use crate::http::auth::AdminActor;
use crate::http::error::{ApiError, ErrorEnvelope, Result};
use crate::http::extract::{JsonBody, prefixed_id};
use crate::http::state::AppState;
use crate::jobs::JobError;

/// A reservation to make, as sent.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReservationRequest {
    /// The lab (`X-Instruqt-Track-ID`) the sandboxes are for (required).
    track_name: Option<String>,
    /// Only sandboxes whose name starts with this (default: any).
    name_prefix: Option<String>,
    /// How many sandboxes (1–100000).
    count: Option<i64>,
    /// Epoch seconds the class starts; sandboxes are set aside `RESERVATION_LEAD_MINUTES` before.
    starts_at: Option<i64>,
    /// Epoch seconds it ends (after `starts_at`, in the future, at most 31 days after
    /// `starts_at`); what is unused then returns to the pool.
    ends_at: Option<i64>,
}

/// A reservation and what it holds.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    /// Its id, for `DELETE /v1/admin/reservations/{id}`.
    pub id: String,
    /// The lab it holds sandboxes for.
    pub track_name: String,
    /// The name prefix it holds sandboxes at (null: any).
    pub name_prefix: Option<String>,
    /// How many sandboxes it is for.
    pub count: u64,
    /// Epoch seconds the class starts.
    pub starts_at: i64,
    /// Epoch seconds it ends.
    pub ends_at: i64,
    /// Epoch seconds its sandboxes are set aside from (`starts_at` less the lead time).
    pub holds_from: i64,
    /// Epoch seconds it was made.
    pub created_at: i64,
    /// Sandboxes set aside for it now, not yet handed out.
    pub held: u64,
    /// Sandboxes its lab's students got from it.
    pub used: u64,
    /// While holding: sandboxes it still lacks (the pool had too few, or the job has not
    /// run yet); otherwise 0.
    pub short: u64,
    /// `scheduled` (before `holds_from`), `holding` or `ended`.
    pub status: String,
}

impl ReservationView {
    fn of(
        reservation: &Reservation,
        counts: ReservationCounts,
        now: EpochSecs,
        lead_secs: i64,
    ) -> Self {
        let holding = reservation.holding(now, lead_secs);
        let status = if holding {
            "holding"
        } else if now < reservation.holds_from(lead_secs) {
            "scheduled"
        } else {
            "ended"
        };
        let short = if holding {
            reservation.still_needed(counts).saturating_sub(counts.held)
        } else {
            0
        };
        Self {
            id: reservation.id.clone(),
            track_name: reservation.lab.clone(),
            name_prefix: Some(reservation.name_prefix.clone()).filter(|p| !p.is_empty()),
            count: reservation.count,
            starts_at: reservation.starts_at.get(),
            ends_at: reservation.ends_at.get(),
            holds_from: reservation.holds_from(lead_secs).get(),
            created_at: reservation.created_at.get(),
            held: counts.held,
            used: counts.used,
            short,
            status: status.to_owned(),
        }
    }
}

/// How long a name prefix's available sandboxes last at the recent allocation rate.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ForecastView {
    /// The prefix (null: the whole pool).
    pub name_prefix: Option<String>,
    /// Sandboxes available there now.
    pub available: u64,
    /// Allocations a minute there over the last 15 minutes, fleet-wide.
    pub allocations_per_minute: f64,
    /// Seconds until none is left at that rate (null: none are being taken).
    pub time_to_empty_seconds: Option<f64>,
    /// Epoch seconds it runs dry at that rate (null: not at this rate).
    pub empty_at: Option<i64>,
    /// Its `POOL_LOW_WATERMARKS` mark, if it has one.
    pub watermark: Option<u64>,
    /// Whether it is below the mark now.
    pub below_watermark: bool,
}

impl ForecastView {
    fn of(
        prefix: Option<&str>,
        available: u64,
        rate: f64,
        watermark: Option<u64>,
        now: EpochSecs,
    ) -> Self {
        let seconds = time_to_empty(available, rate);
        let finite = seconds.is_finite().then_some(seconds);
        Self {
            name_prefix: prefix.map(str::to_owned),
            available,
            allocations_per_minute: rate * 60.0,
            time_to_empty_seconds: finite,
            // Whole seconds are plenty for a timeline.
            #[allow(
                clippy::cast_possible_truncation,
                reason = "a finite, non-negative number of seconds"
            )]
            empty_at: finite.map(|s| now.get() + s.round() as i64),
            watermark,
            below_watermark: watermark.is_some_and(|mark| available < mark),
        }
    }
}

/// `GET /admin/reservations` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReservationsView {
    /// Every reservation kept (ended ones for a week), by start.
    pub reservations: Vec<ReservationView>,
    /// The forecast beside them: the whole pool first, then each `POOL_LOW_WATERMARKS` prefix.
    pub forecast: Vec<ForecastView>,
    /// Epoch seconds the answer was made (the timeline's "now").
    pub now: i64,
}

/// Starts a run of the reservations job in the background, so a reservation made or deleted
/// now holds or returns its sandboxes without waiting for the schedule. A run already going
/// (here or elsewhere) may have read the reservations before this change, so the new run
/// waits for it (a few seconds at most; then the schedule catches up).
fn hold_soon(app: &AppState) {
    const PATIENCE: Duration = Duration::from_secs(5);
    const PAUSE: Duration = Duration::from_millis(100);
    let jobs = std::sync::Arc::clone(&app.jobs);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        loop {
            match jobs.hold_reservations().await {
                Err(JobError::AlreadyRunning { .. }) if started.elapsed() < PATIENCE => {
                    tokio::time::sleep(PAUSE).await;
                }
                Ok(_) | Err(JobError::AlreadyRunning { .. }) => return,
                Err(err) => {
                    tracing::warn!(error = %crate::telemetry::error_chain(&err), "the reservations job did not run after a change");
                    return;
                }
            }
        }
    });
}

/// Sets sandboxes aside for a scheduled class. Refused with the shortfall when the pool at
/// its name prefix, less what overlapping reservations still need, cannot hold it.
#[utoipa::path(
    post, path = "/admin/reservations", tag = "admin",
    request_body = ReservationRequest,
    responses(
        (status = 201, body = ReservationView),
        (status = 400, description = "A bad field, named", body = ErrorEnvelope),
        (status = 409, description = "`RESERVATION_SHORT`: the pool cannot hold it; `shortfall` says by how many", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn create_reservation(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    JsonBody(request): JsonBody<ReservationRequest>,
) -> Result<(StatusCode, Json<ReservationView>)> {
    let now = app.clock.now();
    let reservation = Reservation::parse(
        RawReservationSpec {
            track_name: request.track_name,
            name_prefix: request.name_prefix,
            count: request.count,
            starts_at: request.starts_at,
            ends_at: request.ends_at,
        },
        reservations::new_id(rand::random()),
        now,
    )?;
    let store = &app.store.reservations;
    let (existing, counts, pool) = tokio::try_join!(
        store.reservations(),
        store.reservation_counts(),
        store.reservable(&reservation.name_prefix),
    )?;
    let lead = app.reservation_lead_secs;
    let shortfall = reservations::shortfall(&reservation, &existing, &counts, pool, lead);
    if shortfall > 0 {
        return Err(ApiError::ReservationShort {
            shortfall,
            count: reservation.count,
            free: reservation.count - shortfall,
        });
    }
    store.add_reservation(&reservation).await?;
    app.reservations.forget().await;
    let done = Done {
        action: "admin.reservation_create",
        target: Some(format!("reservation {}", reservation.id)),
        reason: None,
        detail: Some(describe(&reservation)),
    };
    record(&app, &actor, done).await;
    hold_soon(&app);
    Ok((
        StatusCode::CREATED,
        Json(ReservationView::of(
            &reservation,
            ReservationCounts::default(),
            now,
            lead,
        )),
    ))
}

fn describe(reservation: &Reservation) -> String {
    let prefix = if reservation.name_prefix.is_empty() {
        String::new()
    } else {
        format!(" at {}", reservation.name_prefix)
    };
    format!(
        "{} sandboxes{prefix} for {} from {} to {}",
        reservation.count,
        reservation.lab,
        reservation.starts_at.get(),
        reservation.ends_at.get()
    )
}

/// Every reservation with what it holds and used, by start.
#[utoipa::path(
    get, path = "/admin/reservations", tag = "admin",
    responses((status = 200, body = ReservationsView)),
    security(("bearer" = []))
)]
pub async fn list_reservations(State(app): State<AppState>) -> Result<Json<ReservationsView>> {
    let now = app.clock.now();
    let store = &app.store.reservations;
    let (mut all, counts, stats, facts) = tokio::try_join!(
        store.reservations(),
        store.reservation_counts(),
        app.store.analytics.stats(),
        app.shared_allocation_facts(),
    )?;
    all.sort_by(|a, b| (a.starts_at, &a.id).cmp(&(b.starts_at, &b.id)));
    let mut forecast = vec![ForecastView::of(
        None,
        stats.available,
        allocation_rate(&facts, "", now),
        None,
        now,
    )];
    if let Some(readings) = app.store_readings().await {
        forecast.extend(readings.forecasts.iter().map(|f| {
            ForecastView::of(
                Some(f.prefix.as_str()),
                f.available,
                f.rate,
                Some(f.watermark),
                now,
            )
        }));
    }
    Ok(Json(ReservationsView {
        reservations: views(&all, &counts, now, app.reservation_lead_secs),
        forecast,
        now: now.get(),
    }))
}

fn views(
    all: &[Reservation],
    counts: &HashMap<String, ReservationCounts>,
    now: EpochSecs,
    lead: i64,
) -> Vec<ReservationView> {
    all.iter()
        .map(|r| ReservationView::of(r, counts.get(&r.id).copied().unwrap_or_default(), now, lead))
        .collect()
}

/// Deletes a reservation: its lab stops drawing on it (at once here, across the fleet
/// within 4 s) and what it holds returns to the pool.
#[utoipa::path(
    delete, path = "/admin/reservations/{id}", tag = "admin",
    params(("id" = String, Path, description = "The reservation's id (`res_…`)")),
    responses(
        (status = 200, description = "Deleted; `held` is what returns to the pool", body = ReservationView),
        (status = 400, description = "Not a reservation id", body = ErrorEnvelope),
        (status = 404, description = "No such reservation", body = ErrorEnvelope),
    ),
    security(("bearer" = []))
)]
pub async fn delete_reservation(
    State(app): State<AppState>,
    Extension(actor): Extension<AdminActor>,
    Path(id): Path<String>,
) -> Result<Json<ReservationView>> {
    prefixed_id(&id, ID_PREFIX, "reservation")?;
    let now = app.clock.now();
    // Read while the record still stands: once it is gone a job run may already be
    // returning the rows, and the answer must say all that returns.
    let counts = app.store.reservations.reservation_counts().await?;
    let Some(reservation) = app.store.reservations.remove_reservation(&id).await? else {
        return Err(ApiError::NothingFound(format!("no reservation {id}")));
    };
    app.reservations.forget().await;
    let done = Done {
        action: "admin.reservation_delete",
        target: Some(format!("reservation {id}")),
        reason: None,
        detail: Some(describe(&reservation)),
    };
    record(&app, &actor, done).await;
    hold_soon(&app);
    Ok(Json(ReservationView::of(
        &reservation,
        counts.get(&id).copied().unwrap_or_default(),
        now,
        app.reservation_lead_secs,
    )))
}
