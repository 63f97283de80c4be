//! What the provider and imports bring: upserts from a listing or an import, and stale rows removed.

use super::*;

impl Tables<'_> {
    /// Upserts each row as `available` unless it exists in another status.
    pub(in crate::store::embedded) fn import(
        &mut self,
        rows: Vec<NewSandbox>,
        now: i64,
    ) -> Result<ImportSummary, StoreError> {
        let mut summary = ImportSummary::default();
        for incoming in rows {
            let old = self.row(incoming.sandbox_id.as_str())?;
            match lifecycle::import_row(old.as_ref(), &incoming, now) {
                Some(upsert) => {
                    self.put(old.as_ref(), upsert.row())?;
                    summary.imported += 1;
                }
                None => summary.skipped += 1,
            }
        }
        Ok(summary)
    }

    /// Applies a complete provider listing (see [`crate::store::Store::sync_provider`]).
    pub(in crate::store::embedded) fn sync_provider(
        &mut self,
        listing: Vec<ProviderSandbox>,
        now: i64,
    ) -> Result<SyncSummary, StoreError> {
        let mut summary = SyncSummary::default();
        let mut listed = HashSet::with_capacity(listing.len());
        for sandbox in listing {
            listed.insert(sandbox.sandbox_id.as_str().to_owned());
            let incoming = NewSandbox::from(sandbox);
            let old = self.row(incoming.sandbox_id.as_str())?;
            summary.record(lifecycle::sync_step(old.as_ref().map(|row| row.status)));
            // Inside the write transaction the row read is the row written over, so the
            // decision's expectation holds by construction.
            if let Some(upsert) = lifecycle::sync_listed(old.as_ref(), &incoming, now) {
                self.put(old.as_ref(), upsert.row())?;
            }
        }
        let mut missing = Vec::new();
        for entry in self.available.iter().map_err(storage)? {
            let (_, id) = entry.map_err(storage)?;
            if !listed.contains(id.value()) {
                missing.push(id.value().to_owned());
            }
        }
        for id in missing {
            let Some(old) = self.row(&id)? else { continue };
            let Some(change) = lifecycle::mark_stale(&old, now) else {
                continue;
            };
            self.put(Some(&old), &change.row)?;
            summary.marked_stale += 1;
        }
        Ok(summary)
    }

    /// Removes stale rows stale since `stale_since` or earlier.
    pub(in crate::store::embedded) fn delete_stale(
        &mut self,
        stale_since: i64,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for id in self.ids_in_status(SandboxStatus::Stale)? {
            let Some(old) = self.row(&id)? else { continue };
            if lifecycle::stale_removable(&old, stale_since) {
                self.remove(&old)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
