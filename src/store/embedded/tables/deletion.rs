//! Deletion bookkeeping: rows due, claims, outcomes, and expired tombstones.

use super::*;
use crate::domain::time::EpochSecs;

/// Pending rows due for a deletion attempt, from a fresh snapshot.
pub(in crate::store::embedded) fn deletions_due(
    db: &Database,
    now: EpochSecs,
    ignore_backoff: bool,
) -> Result<Vec<Sandbox>, StoreError> {
    rows_where(db, SandboxStatus::PendingDeletion, |row| {
        lifecycle::deletion_due(row, now, ignore_backoff)
    })
}

/// The NIOSXaaS history items whose ttl has passed, from a fresh snapshot.
pub(in crate::store::embedded) fn expired_histories(
    db: &Database,
    now: EpochSecs,
) -> Result<Vec<String>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let histories = txn.open_table(NIOSXAAS_HISTORY).map_err(storage)?;
    let mut expired = Vec::new();
    for entry in histories.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        if history_expired(value.value(), now) {
            expired.push(key.value().to_owned());
        }
    }
    Ok(expired)
}

/// Whether a stored NIOSXaaS history item's ttl has passed (one that cannot be read is kept).
fn history_expired(bytes: &[u8], now: EpochSecs) -> bool {
    serde_json::from_slice::<NiosxaasHistory>(bytes).is_ok_and(|history| history.ttl <= now)
}

impl Tables<'_> {
    /// Claims a pending row for `holder` unless another runner's claim still runs.
    pub(in crate::store::embedded) fn claim_deletion(
        &mut self,
        id: &str,
        runner: &str,
        now: EpochSecs,
        until: EpochSecs,
    ) -> Result<Option<Sandbox>, StoreError> {
        let Some(old) = self.row(id)? else {
            return Ok(None);
        };
        let Some(row) = lifecycle::claim_deletion(&old, runner, now, until) else {
            return Ok(None);
        };
        self.put(Some(&old), &row)?;
        Ok(Some(row))
    }

    /// Applies a claimed deletion's outcome, if `holder` still holds the claim, and writes
    /// the NIOSXaaS history item of a final outcome in the same transaction.
    pub(in crate::store::embedded) fn finish_deletion(
        &mut self,
        id: &str,
        runner: &str,
        outcome: &DeletionOutcome,
        niosxaas: Option<NiosxaasCleanup>,
        now: EpochSecs,
    ) -> Result<(), StoreError> {
        let Some(old) = self.row(id)? else {
            return Ok(());
        };
        let change = finished_change(&old, runner, outcome, niosxaas, now);
        if !change.expect.holds_for(&old) {
            return Ok(());
        }
        let row = change.row;
        if outcome.is_final()
            && let Some(history) = NiosxaasHistory::of(&row, now)
        {
            let bytes = encode(&history)?;
            self.niosxaas_history
                .write(self.txn)?
                .insert(id, bytes.as_slice())
                .map_err(storage)?;
        }
        self.put(Some(&old), &row)
    }

    /// Drops each of the history items `ids` whose ttl has passed (checked again).
    pub(in crate::store::embedded) fn purge_histories(
        &mut self,
        ids: &[String],
        now: EpochSecs,
    ) -> Result<(), StoreError> {
        for id in ids {
            let expired = self
                .niosxaas_history
                .read(self.txn)?
                .get(id.as_str())
                .map_err(storage)?
                .is_some_and(|value| history_expired(value.value(), now));
            if expired {
                self.niosxaas_history
                    .write(self.txn)?
                    .remove(id.as_str())
                    .map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Removes each of the tombstones `ids` whose ttl has passed (checked again); counts them.
    pub(in crate::store::embedded) fn purge_tombstones(
        &mut self,
        ids: &[String],
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut purged = 0;
        for id in ids {
            if let Some(old) = self.row(id)?
                && lifecycle::tombstone_purgeable(&old, now)
            {
                self.remove(&old, now)?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}
