//! Deletion bookkeeping: rows due, claims, outcomes, and expired tombstones.

use super::*;
use crate::domain::time::EpochSecs;

impl Tables<'_> {
    /// Pending rows due for a deletion attempt.
    pub(in crate::store::embedded) fn deletions_due(
        &self,
        now: EpochSecs,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let mut due = Vec::new();
        for id in self.ids_in_status(SandboxStatus::PendingDeletion)? {
            if let Some(row) = self.row(&id)?
                && lifecycle::deletion_due(&row, now, ignore_backoff)
            {
                due.push(row);
            }
        }
        Ok(due)
    }

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
                .insert(id, bytes.as_slice())
                .map_err(storage)?;
        }
        self.put(Some(&old), &row)
    }

    /// Drops tombstones and NIOSXaaS history items whose ttl has passed; counts tombstones.
    pub(in crate::store::embedded) fn purge_tombstones(
        &mut self,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        self.niosxaas_history
            .retain(|_, bytes| {
                serde_json::from_slice::<NiosxaasHistory>(bytes)
                    .map_or(true, |history| history.ttl > now)
            })
            .map_err(storage)?;
        let mut purged = 0;
        for id in self.ids_in_status(SandboxStatus::Deleted)? {
            if let Some(old) = self.row(&id)?
                && lifecycle::tombstone_purgeable(&old, now)
            {
                self.remove(&old, now)?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}
