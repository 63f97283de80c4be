//! Auto-expiry: releasing the allocations of ended labs.

use super::*;
use crate::domain::time::EpochSecs;

impl Tables<'_> {
    /// Releases ended allocations (see [`crate::store::LifecycleStore::expire_allocations`]).
    pub(in crate::store::embedded) fn expire_allocations(
        &mut self,
        now: EpochSecs,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let mut expired = Vec::new();
        for id in self.ids_in_status(SandboxStatus::Allocated)? {
            let Some(old) = self.row(&id)? else { continue };
            let Some(change) = lifecycle::expire(&old, policy, now) else {
                continue;
            };
            let row = change.row;
            self.put_announcing(Some(&old), &row, change.by_expiry)?;
            self.free_allocation_key(&old)?;
            expired.push(row);
        }
        Ok(expired)
    }
}
