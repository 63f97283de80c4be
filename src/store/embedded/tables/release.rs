//! Releases: a holder's release (the row's write frees its allocation key).

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
        Ok(Ok(ReleaseOutcome {
            sandbox: new,
            newly_released: true,
        }))
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
