//! Auto-expiry: releasing the allocations of ended labs.

use super::*;
use crate::domain::time::EpochSecs;

impl Tables<'_> {
    /// Releases each of `ids` whose allocation has ended, decided again on the row as it
    /// is now (a snapshot found them; a student may have released one since).
    pub(in crate::store::embedded) fn expire_rows(
        &mut self,
        ids: &[String],
        now: EpochSecs,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let mut expired = Vec::new();
        for id in ids {
            let Some(old) = self.row(id)? else { continue };
            let Some(change) = lifecycle::expire(&old, policy, now) else {
                continue;
            };
            let row = change.row;
            self.put_announcing(Some(&old), &row, change.by_expiry)?;
            expired.push(row);
        }
        Ok(expired)
    }
}
