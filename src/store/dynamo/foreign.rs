//! Allocations another service made on the same table: the Python service, during and
//! after a migration, while its students are mid-lab.
//!
//! Rule: its allocations have no `ALLOC#` key item, only the row's `allocated_to_track`
//! and `idempotency_key` (see [`AllocationKey::holds_foreign`]). Before this instance
//! makes a new allocation it looks for one of those for the same key, and replays it
//! (200) instead of handing out a second sandbox. The lookup costs one `IdempotencyIndex`
//! query, so it runs only while such allocations may exist: each instance checks the
//! `allocated` rows for one without this service's mark at most once per
//! [`RECHECK_EVERY`], and once none is left (they are released or expire) allocations
//! cost nothing extra.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::DynamoStore;
use super::calls::Budget;
use super::error::DynamoError;
use super::item::s;
use super::schema::IDEMPOTENCY_INDEX;
use crate::domain::{ALLOCATED_BY_BROKER, Sandbox, SandboxStatus};
use crate::store::{AllocationRequest, StoreError};

/// How long an answer to "are there foreign allocations?" is trusted. While the Python
/// service still runs beside this one it keeps making them; a minute bounds how long a
/// new one can go unseen by an instance that had found none.
const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// This instance's latest answer to "may foreign allocations exist?".
#[derive(Default)]
pub(super) struct ForeignWatch {
    checked: Mutex<Option<(Instant, bool)>>,
    /// Held while a check runs, so concurrent allocations wait for it instead of repeating it.
    checking: tokio::sync::Mutex<()>,
}

impl ForeignWatch {
    fn fresh(&self) -> Option<bool> {
        let checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        checked.and_then(|(at, present)| (at.elapsed() < RECHECK_EVERY).then_some(present))
    }

    fn record(&self, present: bool) {
        *self.checked.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), present));
    }
}

impl DynamoStore {
    /// The allocation another service made for `request`'s key, if any.
    pub(super) async fn foreign_allocation(
        &self,
        budget: &Budget,
        request: &AllocationRequest,
    ) -> Result<Option<Sandbox>, StoreError> {
        if !self.foreign_allocations_may_exist(budget).await? {
            return Ok(None);
        }
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .index_name(IDEMPOTENCY_INDEX)
            .key_condition_expression("idempotency_key = :k")
            .expression_attribute_values(":k", s(request.key.stored_idempotency_key()));
        let page = self
            .calls
            .send(budget, || self.calls.wire.send(&query))
            .await
            .map_err(DynamoError::into_store_error)?;
        for item in page.items() {
            let hinted =
                Sandbox::try_from(item).map_err(|err| StoreError::Internal(Box::new(err)))?;
            if !request.key.holds_foreign(&hinted) {
                continue;
            }
            // The index is eventually consistent: the row itself decides.
            if let Some(row) = self.row(budget, &hinted.sandbox_id).await?
                && request.key.holds_foreign(&row)
            {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }

    /// Whether any `allocated` row lacks this service's mark, as last checked.
    async fn foreign_allocations_may_exist(&self, budget: &Budget) -> Result<bool, StoreError> {
        if let Some(present) = self.foreign.fresh() {
            return Ok(present);
        }
        let _checking = self.foreign.checking.lock().await;
        if let Some(present) = self.foreign.fresh() {
            return Ok(present);
        }
        let unmarked = self
            .in_status(SandboxStatus::Allocated)
            .filter_expression("attribute_not_exists(allocated_by) OR allocated_by <> :me")
            .expression_attribute_values(":me", s(ALLOCATED_BY_BROKER));
        let present = self.count(budget, unmarked, 1).await? > 0;
        self.foreign.record(present);
        Ok(present)
    }
}
