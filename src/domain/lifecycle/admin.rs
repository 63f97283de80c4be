//! What an admin may do to one row for a bad day, decided without I/O.
//!
//! Rule: quarantine takes an `available` or `stale` sandbox out of the pool without
//! deleting it (a suspicious account, kept for a look); only an admin puts it back, and only
//! a sandbox that was never handed out (a used account never returns to the pool), and an
//! admin retires one that is not fine through the normal deletion path, which leaves its
//! used-account marker. Every change applies only while the row is still in the status read.

use super::sync::while_still;
use super::{Change, Expect};
use crate::domain::time::EpochSecs;
use crate::domain::used::was_used;
use crate::domain::{Sandbox, SandboxStatus};

/// An admin's change to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowAction {
    /// Take it out of the pool, saying why.
    Quarantine {
        /// The admin's reason, kept on the row.
        reason: String,
    },
    /// Return it to the pool.
    Unquarantine,
    /// Delete a quarantined sandbox at the provider: it goes to `pending_deletion`, and
    /// the cleanup job deletes it as it does a released one.
    Retire,
}

/// Why an admin's change does not apply to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RowActionRefused {
    /// Only an `available` or `stale` sandbox can be quarantined.
    #[error("a {0} sandbox cannot be quarantined (only available or stale ones)")]
    NotQuarantinable(SandboxStatus),
    /// Only a `quarantined` sandbox can be returned.
    #[error("the sandbox is {0}, not quarantined")]
    NotQuarantined(SandboxStatus),
    /// It was handed out once: it never returns to the pool.
    #[error(
        "the sandbox was handed out before, so it never returns to the pool; retire it instead"
    )]
    WasHandedOut,
}

/// The change `action` makes to `row` at `now`, or why it does not apply.
pub fn decide_row_action(
    row: &Sandbox,
    action: &RowAction,
    now: EpochSecs,
) -> Result<Change, RowActionRefused> {
    let mut changed = row.clone();
    changed.updated_at = now;
    match action {
        RowAction::Quarantine { reason } => {
            if !matches!(
                row.status,
                SandboxStatus::Available | SandboxStatus::Stale | SandboxStatus::Reserved
            ) {
                return Err(RowActionRefused::NotQuarantinable(row.status));
            }
            // A reservation's row leaves it (the reservations job holds another).
            changed.reserved_for = None;
            changed.status = SandboxStatus::Quarantined;
            changed.quarantine_reason = Some(reason.clone());
        }
        RowAction::Unquarantine => {
            if row.status != SandboxStatus::Quarantined {
                return Err(RowActionRefused::NotQuarantined(row.status));
            }
            if was_used(row) {
                return Err(RowActionRefused::WasHandedOut);
            }
            changed.status = SandboxStatus::Available;
            changed.quarantine_reason = None;
        }
        RowAction::Retire => {
            if row.status != SandboxStatus::Quarantined {
                return Err(RowActionRefused::NotQuarantined(row.status));
            }
            changed.status = SandboxStatus::PendingDeletion;
            changed.deletion_requested_at = Some(now);
            changed.quarantine_reason = None;
        }
    }
    Ok(Change {
        by_expiry: false,
        row: changed,
        expect: Expect {
            reserved_for: row.reserved_for.clone(),
            ..while_still(row.status)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::tests::row;

    #[test]
    fn only_a_pool_row_is_quarantined_and_only_a_never_used_one_returns() {
        let quarantine = RowAction::Quarantine {
            reason: "odd logins".into(),
        };
        for status in SandboxStatus::ALL {
            let mut pool_row = row(status, None);
            if status == SandboxStatus::Reserved {
                pool_row.reserved_for = Some("res_1".into());
            }
            let decided = decide_row_action(&pool_row, &quarantine, EpochSecs::new(900));
            let allowed = matches!(
                status,
                SandboxStatus::Available | SandboxStatus::Stale | SandboxStatus::Reserved
            );
            assert_eq!(decided.is_ok(), allowed, "{status:?}");
            if let Ok(change) = decided {
                assert_eq!(change.row.status, SandboxStatus::Quarantined);
                assert_eq!(change.row.reserved_for, None, "it leaves its reservation");
                assert_eq!(change.expect.reserved_for, pool_row.reserved_for);
                assert_eq!(change.row.quarantine_reason.as_deref(), Some("odd logins"));
                assert_eq!(change.expect.status, status, "only while still {status:?}");
            }
        }
        let quarantined = decide_row_action(
            &row(SandboxStatus::Available, None),
            &quarantine,
            EpochSecs::new(900),
        )
        .unwrap()
        .row;
        let back =
            decide_row_action(&quarantined, &RowAction::Unquarantine, EpochSecs::new(950)).unwrap();
        assert_eq!(
            (
                back.row.status,
                back.row.quarantine_reason,
                back.row.updated_at
            ),
            (SandboxStatus::Available, None, EpochSecs::new(950))
        );
        let mut once_used = quarantined;
        once_used.allocated_at = Some(EpochSecs::new(500));
        assert_eq!(
            decide_row_action(&once_used, &RowAction::Unquarantine, EpochSecs::new(950)),
            Err(RowActionRefused::WasHandedOut)
        );
        assert_eq!(
            decide_row_action(
                &row(SandboxStatus::Available, None),
                &RowAction::Unquarantine,
                EpochSecs::new(950)
            ),
            Err(RowActionRefused::NotQuarantined(SandboxStatus::Available))
        );
    }

    #[test]
    fn only_a_quarantined_row_is_retired_and_it_goes_the_deletion_path() {
        let quarantine = RowAction::Quarantine {
            reason: "odd logins".into(),
        };
        let quarantined = decide_row_action(
            &row(SandboxStatus::Stale, None),
            &quarantine,
            EpochSecs::new(900),
        )
        .unwrap()
        .row;
        let retired =
            decide_row_action(&quarantined, &RowAction::Retire, EpochSecs::new(950)).unwrap();
        assert_eq!(
            (
                retired.row.status,
                retired.row.deletion_requested_at,
                retired.row.quarantine_reason.as_deref()
            ),
            (
                SandboxStatus::PendingDeletion,
                Some(EpochSecs::new(950)),
                None
            )
        );
        assert_eq!(retired.expect.status, SandboxStatus::Quarantined);
        assert!(
            crate::domain::lifecycle::deletion_due(&retired.row, EpochSecs::new(950), false),
            "the cleanup job deletes it at once"
        );
        for status in SandboxStatus::ALL {
            if status != SandboxStatus::Quarantined {
                assert_eq!(
                    decide_row_action(&row(status, None), &RowAction::Retire, EpochSecs::new(950)),
                    Err(RowActionRefused::NotQuarantined(status)),
                    "{status:?}"
                );
            }
        }
    }
}
