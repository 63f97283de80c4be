//! Job leases: one rule for when a lease may be taken, shared by both stores.
//!
//! Rule: a lease runs until its end, exclusive — at `now_ms == expires_at_ms` it has run
//! out. It may be taken by anyone when nobody holds it or it has run out, and renewed by
//! its holder at any time. The embedded store applies [`decide`] inside its write
//! transaction; the DynamoDB store sends [`TAKE_CONDITION`], the same rule as a condition
//! expression, and reads a refusal back through [`decide`].

use crate::domain::time::{EpochMillis, EpochSecs};
/// The DynamoDB condition of a take or renewal: `:me` the taker, `:now` the time in epoch
/// milliseconds. It says exactly what [`decide`] says.
pub const TAKE_CONDITION: &str =
    "attribute_not_exists(holder) OR holder = :me OR lease_expires_at_ms <= :now";

/// The DynamoDB condition of a finished run's release of its lease (`:me` the runner):
/// exactly what [`released_by`] says.
pub const RELEASE_CONDITION: &str = "holder = :me";

/// Whether a run of `finisher` ending releases the lease now held by `holder`: only its
/// own. A run whose lease was taken over records its run but leaves the new holder's lease.
pub fn released_by(instance: Option<&str>, finisher: &str) -> bool {
    instance == Some(finisher)
}

/// What a take of a lease comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// The taker gets (or keeps) the lease.
    Take,
    /// Someone else's lease is still running.
    HeldBy {
        /// Its holder.
        instance: String,
        /// When it runs out (epoch milliseconds).
        until_ms: EpochMillis,
    },
}

/// Whether a lease ending at `expires_at_ms` still runs at `now_ms`.
pub fn is_running(expires_at_ms: EpochMillis, now_ms: EpochMillis) -> bool {
    expires_at_ms > now_ms
}

/// Whether `taker` may take the lease now held by `holder` until `expires_at_ms`.
pub fn decide(
    instance: Option<&str>,
    expires_at_ms: EpochMillis,
    taker: &str,
    now_ms: EpochMillis,
) -> LeaseDecision {
    match instance {
        Some(other) if other != taker && is_running(expires_at_ms, now_ms) => {
            LeaseDecision::HeldBy {
                instance: other.to_owned(),
                until_ms: expires_at_ms,
            }
        }
        _ => LeaseDecision::Take,
    }
}

/// When a scheduled run of a job is due, given when its last run finished on any
/// instance (`last_finished_at`, in the whole seconds the shared job record keeps):
/// `None` when it is due at `now_ms`, else `Some(when it falls due)`. A
/// fleet so runs each scheduled job once per interval, however many instances wake for it:
/// the first one runs it, the others find it finished less than an interval ago. The
/// record keeps whole seconds, so the finish is taken as the end of its second: runs are
/// never closer than `interval_ms`.
pub fn scheduled_run_due_at(
    last_finished_at: Option<EpochSecs>,
    interval_ms: i64,
    now_ms: EpochMillis,
) -> Option<EpochMillis> {
    let finished_by = (last_finished_at? + 1).millis();
    let due_at = finished_by + interval_ms;
    (now_ms < due_at).then_some(due_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_run_is_due_an_interval_after_the_fleets_last_finish() {
        assert_eq!(
            scheduled_run_due_at(None, 2_000, EpochMillis::new(0)),
            None,
            "never ran"
        );
        // Finished during second 10 (at 10.999 s at the latest): due at 12.999 s.
        assert_eq!(
            scheduled_run_due_at(Some(EpochSecs::new(10)), 2_000, EpochMillis::new(12_999)),
            Some(EpochMillis::new(13_000))
        );
        assert_eq!(
            scheduled_run_due_at(Some(EpochSecs::new(10)), 2_000, EpochMillis::new(11_000)),
            Some(EpochMillis::new(13_000))
        );
        assert_eq!(
            scheduled_run_due_at(Some(EpochSecs::new(10)), 2_000, EpochMillis::new(13_000)),
            None
        );
    }

    #[test]
    fn a_lease_is_free_unheld_own_or_run_out_and_runs_out_at_its_end() {
        let held = |instance: &str, until_ms| LeaseDecision::HeldBy {
            instance: instance.into(),
            until_ms,
        };
        let cases = [
            (None, 0, "a", 10, LeaseDecision::Take),
            (Some("a"), 100, "a", 10, LeaseDecision::Take),
            (Some("b"), 100, "a", 10, held("b", EpochMillis::new(100))),
            (Some("b"), 100, "a", 99, held("b", EpochMillis::new(100))),
            (Some("b"), 100, "a", 100, LeaseDecision::Take),
            (Some("b"), 100, "a", 101, LeaseDecision::Take),
        ];
        for (instance, expires, taker, now, expected) in cases {
            assert_eq!(
                decide(
                    instance,
                    EpochMillis::new(expires),
                    taker,
                    EpochMillis::new(now)
                ),
                expected,
                "{instance:?} until {expires}, {taker} at {now}"
            );
        }
    }
}
