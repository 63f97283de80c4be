//! Auto-expiry and stale removal on the shared table.
//!
//! Rule: rows are found through `StatusIndex` (a hint) and changed only by a write
//! conditional on exactly what was read — so a student's own mark, a sync or another
//! instance racing these always leaves one consistent outcome.

use futures::stream::{self, StreamExt, TryStreamExt};

use super::error::DynamoError;
use super::{BULK_CONCURRENCY, DynamoStore};
use crate::domain::lifecycle::{self, Change};
use crate::domain::time::EpochSecs;
use crate::domain::{LabPolicy, Sandbox, SandboxStatus};
use crate::store::StoreError;

impl DynamoStore {
    /// Every row `StatusIndex` lists in `status`, every page.
    pub(super) async fn rows_in_status(
        &self,
        status: SandboxStatus,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let budget = self.calls.budget();
        let mut rows = Vec::new();
        for item in self
            .query_every_page(&budget, self.in_status(status))
            .await?
        {
            if let Some(row) = self.full_row(&budget, &item).await? {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// See [`crate::store::LifecycleStore::expire_allocations`].
    pub(super) async fn expire_ended(
        &self,
        now: EpochSecs,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let ended: Vec<(Sandbox, Change)> = self
            .rows_in_status(SandboxStatus::Allocated)
            .await?
            .into_iter()
            .filter_map(|row| lifecycle::expire(&row, policy, now).map(|change| (row, change)))
            .collect();
        let released: Vec<Option<Sandbox>> = stream::iter(ended)
            .map(|(row, change)| self.release_ended(row, change))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(released.into_iter().flatten().collect())
    }

    async fn release_ended(
        &self,
        row: Sandbox,
        change: Change,
    ) -> Result<Option<Sandbox>, StoreError> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        match self.send_change(&budget, &row, &change).await {
            Ok(sandbox) => {
                self.free_allocation_key(&budget, &sandbox).await;
                Ok(Some(sandbox))
            }
            // Its owner released it (or another instance expired it) first.
            Err(DynamoError::Conflict) => Ok(None),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::LifecycleStore::delete_stale`].
    pub(super) async fn remove_stale(
        &self,
        stale_since: EpochSecs,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let old: Vec<Sandbox> = self
            .rows_in_status(SandboxStatus::Stale)
            .await?
            .into_iter()
            .filter(|row| lifecycle::stale_removable(row, stale_since))
            .collect();
        self.delete_each_if(
            old,
            SandboxStatus::Stale,
            Some(("updated_at", stale_since.get())),
            now,
        )
        .await
    }
}
