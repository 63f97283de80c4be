//! What the provider and imports bring: upserts from a listing or an import, and stale rows removed.

use super::*;
use crate::domain::time::EpochSecs;

impl Tables<'_> {
    /// Upserts each row as `available` unless it exists in another status or its account
    /// was handed out before.
    pub(in crate::store::embedded) fn import(
        &mut self,
        rows: Vec<NewSandbox>,
        now: EpochSecs,
    ) -> Result<ImportSummary, StoreError> {
        let mut summary = ImportSummary::default();
        for incoming in rows {
            let (old, used) = self.prior(incoming.sandbox_id.as_str())?;
            let prior = lifecycle::Prior::of(old.as_ref(), used);
            match lifecycle::import_row(prior, &incoming, now) {
                Some(upsert) => {
                    self.put(old.as_ref(), upsert.row())?;
                    summary.imported += 1;
                }
                None => summary.skipped += 1,
            }
        }
        Ok(summary)
    }

    /// Applies a complete provider listing (see [`crate::store::LifecycleStore::sync_provider`]):
    /// first decides what it would mark stale, and refuses the whole listing before
    /// writing anything when `rules` do not believe it.
    pub(in crate::store::embedded) fn sync_provider(
        &mut self,
        listing: Vec<ProviderSandbox>,
        rules: &lifecycle::SyncRules,
        now: EpochSecs,
    ) -> Result<Result<SyncSummary, lifecycle::ListingRefused>, StoreError> {
        let snapshot = crate::domain::audit::ListingSnapshot {
            taken_at: now,
            ids: listing
                .iter()
                .map(|sandbox| sandbox.sandbox_id.as_str().to_owned())
                .collect(),
        };
        let listed: HashSet<&str> = snapshot.ids.iter().map(String::as_str).collect();
        let mut missing = Vec::new();
        let mut available = 0;
        // The pool: available rows and those set aside for reservations (one the provider
        // dropped goes stale: a class must not get it).
        for entry in self
            .available
            .iter()
            .map_err(storage)?
            .chain(self.reserved.iter().map_err(storage)?)
        {
            let (_, id) = entry.map_err(storage)?;
            available += 1;
            if !listed.contains(id.value()) {
                missing.push(id.value().to_owned());
            }
        }
        if let Err(refused) = rules.believe(available, missing.len() as u64) {
            return Ok(Err(refused));
        }
        let mut summary = SyncSummary::default();
        for sandbox in listing {
            let incoming = NewSandbox::from(sandbox);
            let (old, used) = self.prior(incoming.sandbox_id.as_str())?;
            let prior = lifecycle::Prior::of(old.as_ref(), used);
            // Inside the write transaction the row read is the row written over, so the
            // decision's expectation holds by construction.
            let decision = lifecycle::sync_listed(prior, &incoming, rules, now);
            summary.record(decision.step);
            if let Some(upsert) = decision.upsert {
                self.put(old.as_ref(), upsert.row())?;
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
        self.record_listing(&snapshot)?;
        Ok(Ok(summary))
    }

    /// Removes stale rows stale since `stale_since` or earlier.
    pub(in crate::store::embedded) fn delete_stale(
        &mut self,
        stale_since: EpochSecs,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for id in self.ids_in_status(SandboxStatus::Stale)? {
            let Some(old) = self.row(&id)? else { continue };
            if lifecycle::stale_removable(&old, stale_since) {
                self.remove(&old, now)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
