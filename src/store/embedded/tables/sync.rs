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

    /// Writes a sync's rows (see [`plan_sync`]), each decided again on what the broker has
    /// for it now; answers each row's step.
    pub(in crate::store::embedded) fn apply_listed(
        &mut self,
        rows: &[NewSandbox],
        rules: &lifecycle::SyncRules,
        now: EpochSecs,
    ) -> Result<Vec<lifecycle::SyncStep>, StoreError> {
        let mut steps = Vec::with_capacity(rows.len());
        for incoming in rows {
            let (old, used) = self.prior(incoming.sandbox_id.as_str())?;
            let prior = lifecycle::Prior::of(old.as_ref(), used);
            let decision = lifecycle::sync_listed(prior, incoming, rules, now);
            steps.push(decision.step);
            if let Some(upsert) = decision.upsert {
                self.put(old.as_ref(), upsert.row())?;
            }
        }
        Ok(steps)
    }

    /// Marks each of `ids` (rows the listing left out) stale if it still may go stale;
    /// counts them.
    pub(in crate::store::embedded) fn mark_missing_stale(
        &mut self,
        ids: &[String],
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut marked = 0;
        for id in ids {
            let Some(old) = self.row(id)? else { continue };
            let Some(change) = lifecycle::mark_stale(&old, now) else {
                continue;
            };
            self.put(Some(&old), &change.row)?;
            marked += 1;
        }
        Ok(marked)
    }

    /// Removes each of `ids` that is still stale since `stale_since` or earlier; counts them.
    pub(in crate::store::embedded) fn remove_stale(
        &mut self,
        ids: &[String],
        stale_since: EpochSecs,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for id in ids {
            let Some(old) = self.row(id)? else { continue };
            if lifecycle::stale_removable(&old, stale_since) {
                self.remove(&old, now)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// A sync decided on a snapshot: what it writes, the rest already counted.
pub(in crate::store::embedded) struct SyncPlan {
    /// The steps of the listed rows it leaves alone.
    pub(in crate::store::embedded) summary: SyncSummary,
    /// Listed rows it writes (each decided again when written).
    pub(in crate::store::embedded) writes: Vec<NewSandbox>,
    /// Pool rows the listing left out, to mark stale.
    pub(in crate::store::embedded) missing: Vec<String>,
    /// The listing, recorded once it is applied.
    pub(in crate::store::embedded) listing: crate::domain::audit::ListingSnapshot,
}

/// Plans applying a complete provider listing (see
/// [`crate::store::LifecycleStore::sync_provider`]) on a fresh snapshot: decides what it
/// would mark stale, and refuses the whole listing before anything is written when
/// `rules` do not believe it.
pub(in crate::store::embedded) fn plan_sync(
    db: &Database,
    listing: Vec<ProviderSandbox>,
    rules: &lifecycle::SyncRules,
    now: EpochSecs,
) -> Result<Result<SyncPlan, lifecycle::ListingRefused>, StoreError> {
    let snapshot = crate::domain::audit::ListingSnapshot {
        taken_at: now,
        ids: listing
            .iter()
            .map(|sandbox| sandbox.sandbox_id.as_str().to_owned())
            .collect(),
    };
    let txn = db.begin_read().map_err(storage)?;
    let available = txn.open_table(AVAILABLE_BY_NAME).map_err(storage)?;
    let reserved = txn.open_table(RESERVED_BY_NAME).map_err(storage)?;
    let missing = {
        let listed: HashSet<&str> = snapshot.ids.iter().map(String::as_str).collect();
        let mut missing = Vec::new();
        let mut pool = 0;
        // The pool: available rows and those set aside for reservations (one the provider
        // dropped goes stale: a class must not get it).
        for entry in available
            .iter()
            .map_err(storage)?
            .chain(reserved.iter().map_err(storage)?)
        {
            let (_, id) = entry.map_err(storage)?;
            pool += 1;
            if !listed.contains(id.value()) {
                missing.push(id.value().to_owned());
            }
        }
        if let Err(refused) = rules.believe(pool, missing.len() as u64) {
            return Ok(Err(refused));
        }
        missing
    };
    let rows = txn.open_table(SANDBOXES).map_err(storage)?;
    let used = txn.open_table(USED_ACCOUNTS).map_err(storage)?;
    let mut summary = SyncSummary::default();
    // What adds to the pool (new and returned rows, retried deletions) is written first,
    // so a class waiting for sandboxes (`Prefer: wait`) gets them before the refreshes of
    // rows already available, which on a large pool are most of the writes.
    let (mut writes, mut refreshes) = (Vec::new(), Vec::new());
    for sandbox in listing {
        let incoming = NewSandbox::from(sandbox);
        let (old, was_used) = prior_in(&rows, &used, incoming.sandbox_id.as_str())?;
        let prior = lifecycle::Prior::of(old.as_ref(), was_used);
        let decision = lifecycle::sync_listed(prior, &incoming, rules, now);
        match (decision.upsert.is_some(), decision.step) {
            (false, step) => summary.record(step),
            (true, lifecycle::SyncStep::Refreshed) => refreshes.push(incoming),
            (true, _) => writes.push(incoming),
        }
    }
    writes.append(&mut refreshes);
    Ok(Ok(SyncPlan {
        summary,
        writes,
        missing,
        listing: snapshot,
    }))
}
