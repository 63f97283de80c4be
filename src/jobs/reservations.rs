//! The reservations job: sets sandboxes aside for each reservation that is holding, and
//! returns those of reservations that ended or were deleted (docs/api.md, *Reservations*).
//!
//! Rule: what to do for each reservation is `domain::reservations::plan`, on the counts the
//! store reads from the rows at the start of the run; the allocation path only draws on what
//! this job set aside, so it never holds or returns anything itself.

use std::collections::{BTreeSet, HashMap};

use super::{Fence, HoldingCounts, JobError};
use crate::domain::reservations::{self, Holding, ReservationCounts};
use crate::domain::time::EpochSecs;
use crate::metrics::Metrics;
use crate::store::ReservationStore;

/// One run at `now`, with sandboxes held `lead_secs` before a class starts.
pub async fn run_once(
    store: &dyn ReservationStore,
    metrics: &Metrics,
    fence: &Fence,
    lead_secs: i64,
    now: EpochSecs,
) -> Result<HoldingCounts, JobError> {
    let all = store.reservations().await?;
    // What each used is needed only while one holds (it decides how many more to hold);
    // otherwise the held rows alone say what to return, read without a scan.
    let counts: HashMap<String, ReservationCounts> =
        if all.iter().any(|r| r.holding(now, lead_secs)) {
            store.reservation_counts().await?
        } else {
            store
                .held_rows()
                .await?
                .into_iter()
                .map(|(id, held)| (id, ReservationCounts { held, used: 0 }))
                .collect()
        };
    let mut done = HoldingCounts::default();
    let ids: BTreeSet<&str> = all
        .iter()
        .map(|r| r.id.as_str())
        .chain(counts.keys().map(String::as_str))
        .collect();
    for id in ids {
        fence.check()?;
        let reservation = all.iter().find(|r| r.id == id);
        let count = counts.get(id).copied().unwrap_or_default();
        match reservations::plan(reservation, count, now, lead_secs) {
            Holding::Hold(wanted) => {
                let Some(reservation) = reservation else {
                    continue;
                };
                let held = store.hold_rows(reservation, wanted, now).await?;
                done.held += held;
                if held < wanted {
                    done.short += wanted - held;
                    tracing::warn!(
                        reservation = id,
                        track_name = reservation.lab,
                        wanted,
                        held,
                        "a reservation holds fewer sandboxes than it needs: the pool has too few"
                    );
                }
            }
            Holding::Return => done.returned += store.return_rows(id, now).await?,
            Holding::Keep => {}
        }
        if let Some(reservation) = reservation
            && reservations::forgotten(reservation, now)
            && store.remove_reservation(id).await?.is_some()
        {
            done.forgotten += 1;
        }
    }
    metrics
        .jobs
        .reservations_short
        .set(i64::try_from(done.short).unwrap_or(i64::MAX));
    Ok(done)
}
