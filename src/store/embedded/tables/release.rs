//! Releases: a holder's release, and the allocation key it frees.

use super::*;
use crate::domain::time::EpochSecs;

impl Tables<'_> {
    /// Moves the owner's allocated row to `pending_deletion`; other released states are a repeat.
    pub(in crate::store::embedded) fn release(
        &mut self,
        request: &ReleaseRequest,
    ) -> Outcome<ReleaseOutcome> {
        let Some(old) = self.row(request.id.as_str())? else {
            return Ok(Err(Refusal::SandboxNotFound));
        };
        // Read inside this write transaction, so the decision's expectation holds.
        let new = match lifecycle::release(
            &old,
            &request.holder,
            request.token.as_deref(),
            request.now,
        ) {
            Err(NotHolder) => return Ok(Err(Refusal::NotHolder)),
            Ok(Release::Repeat) => {
                return Ok(Ok(ReleaseOutcome {
                    sandbox: old,
                    newly_released: false,
                }));
            }
            Ok(Release::Now(change)) => change.row,
        };
        self.put(Some(&old), &new)?;
        self.free_allocation_key(&old)?;
        Ok(Ok(ReleaseOutcome {
            sandbox: new,
            newly_released: true,
        }))
    }

    /// Frees the allocation key of a released row, if it still points at it: the key's
    /// next allocation must get a new sandbox.
    pub(super) fn free_allocation_key(&mut self, released: &Sandbox) -> Result<(), StoreError> {
        let Some(key) = allocation_key_of_row(released) else {
            return Ok(());
        };
        let points_here = self
            .allocation_keys
            .get(key.as_str())
            .map_err(storage)?
            .is_some_and(|guard| guard.value() == released.sandbox_id.as_str());
        if points_here {
            self.allocation_keys.remove(key.as_str()).map_err(storage)?;
        }
        Ok(())
    }

    /// Applies an admin's `action` to the row `id` as the domain decides on it.
    pub(in crate::store::embedded) fn change_row(
        &mut self,
        id: &str,
        action: &lifecycle::RowAction,
        now: EpochSecs,
    ) -> Outcome<Sandbox> {
        let Some(old) = self.row(id)? else {
            return Ok(Err(Refusal::SandboxNotFound));
        };
        let change = match lifecycle::decide_row_action(&old, action, now) {
            Ok(change) => change,
            Err(refused) => return Ok(Err(refused.into())),
        };
        self.put(Some(&old), &change.row)?;
        Ok(Ok(change.row))
    }
}
