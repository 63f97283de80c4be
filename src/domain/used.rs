//! The broker's memory of used accounts: a sandbox handed out once (or reported deleted by
//! the provider) is never `available` again, whatever happens to its row.
//!
//! Rule: a row that was ever handed out carries that memory itself while it exists. When it
//! leaves the table (an admin's bulk delete, a tombstone's ttl, stale removal), a compact
//! [`UsedAccount`] marker is kept in its place, and a sync or an import that finds no row
//! but a marker leaves the account out of the pool. Markers are never dropped: the
//! provider may list an account long after it said it deleted it, and a marker costs
//! about a hundred bytes.

use serde::{Deserialize, Serialize};

use super::{Sandbox, SandboxStatus};
use crate::domain::time::EpochSecs;

/// What the broker keeps of an account once its row is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedAccount {
    /// The sandbox's id: what a listing or an import names it by.
    pub sandbox_id: String,
    /// Its provider id, for an operator reading the marker.
    pub external_id: String,
    /// Epoch seconds of its last allocation (0 when it was never allocated here, e.g. a
    /// row whose deletion alone the provider reported).
    pub allocated_at: EpochSecs,
    /// Epoch seconds the marker was written.
    pub recorded_at: EpochSecs,
}

impl UsedAccount {
    /// The marker `row` leaves when it is removed at `now`, or `None` when the account was
    /// never handed out nor reported deleted (a row that was only ever `available` or
    /// `stale` may come back when the provider lists it again).
    pub fn left_by(row: &Sandbox, now: EpochSecs) -> Option<Self> {
        was_used(row).then(|| Self {
            sandbox_id: row.sandbox_id.clone(),
            external_id: row.external_id.clone(),
            allocated_at: row.allocated_at.unwrap_or_default(),
            recorded_at: now,
        })
    }
}

/// Whether `row`'s account was ever handed out or reported deleted: it is, or was,
/// allocated (a recorded allocation time), or is in a status only a handed-out account
/// reaches.
pub fn was_used(row: &Sandbox) -> bool {
    row.allocated_at.is_some_and(|at| at > EpochSecs::new(0))
        || matches!(
            row.status,
            SandboxStatus::Allocated
                | SandboxStatus::PendingDeletion
                | SandboxStatus::DeletionFailed
                | SandboxStatus::Deleted
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::tests::row;

    #[test]
    fn only_a_handed_out_or_deleted_account_leaves_a_marker() {
        for status in SandboxStatus::ALL {
            let never_allocated = row(status, None);
            let expected = !matches!(
                status,
                SandboxStatus::Available
                    | SandboxStatus::Stale
                    | SandboxStatus::Quarantined
                    | SandboxStatus::Reserved
            );
            assert_eq!(
                UsedAccount::left_by(&never_allocated, EpochSecs::new(900)).is_some(),
                expected,
                "{status:?}"
            );
        }
        // An available or stale row that was allocated once (a Python-era row, or one an
        // older build put back) is used all the same.
        let mut once_allocated = row(SandboxStatus::Stale, None);
        once_allocated.allocated_at = Some(EpochSecs::new(500));
        let marker = UsedAccount::left_by(&once_allocated, EpochSecs::new(900)).unwrap();
        assert_eq!(
            (marker.allocated_at, marker.recorded_at),
            (EpochSecs::new(500), EpochSecs::new(900)),
            "{marker:?}"
        );
        let mut python_zero = row(SandboxStatus::Available, None);
        python_zero.allocated_at = Some(EpochSecs::new(0));
        assert!(UsedAccount::left_by(&python_zero, EpochSecs::new(900)).is_none());
    }
}
