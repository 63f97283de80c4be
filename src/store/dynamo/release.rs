//! Releases on the shared table: a student's mark, decided by `domain::lifecycle` and
//! applied through the update derived from that decision; the freed allocation key.

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::ReturnValue;

use super::DynamoStore;
use super::calls::Budget;
use super::error::DynamoError;
use super::item::{self, s, sandbox_key};
use crate::domain::lifecycle::{self, Change, NotHolder, Release};
use crate::domain::time::EpochSecs;
use crate::domain::{Sandbox, SandboxId};
use crate::store::{
    Outcome, Refusal, ReleaseOutcome, ReleaseRequest, StoreError, allocation_key_of_row,
};

impl DynamoStore {
    /// Frees the allocation key that points at `row`, if it still does. Best effort:
    /// allocation also recognises a key that points at a released sandbox.
    pub(super) async fn free_allocation_key(&self, budget: &Budget, row: &Sandbox) {
        let Some(encoded) = allocation_key_of_row(row) else {
            return;
        };
        let delete = self
            .client()
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item::allocation_key(&encoded)))
            .condition_expression("sandbox_id = :id")
            .expression_attribute_values(":id", s(&row.sandbox_id));
        let result = self
            .calls
            .send(budget, || self.calls.wire.send(&delete))
            .await;
        if let Err(DynamoError::Store(err)) = result {
            tracing::warn!(error = ?err, sandbox.id = %row.sandbox_id, "could not free the allocation key");
        }
    }

    /// The conditional update that applies a decided `change` to `before`, answering the
    /// new row (see [`super::update::row_update`]).
    pub(super) fn apply_change(
        &self,
        before: &Sandbox,
        change: &Change,
    ) -> UpdateItemFluentBuilder {
        let update = super::update::row_update(before, change, self.announcing());
        self.client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(&change.row.sandbox_id)))
            .update_expression(update.expression)
            .condition_expression(update.condition)
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values(Some(update.values))
            .return_values(ReturnValue::AllNew)
    }

    /// Releases the holder's sandbox: see [`crate::store::AllocationStore::release`].
    pub(super) async fn release_within(
        &self,
        budget: &Budget,
        request: &ReleaseRequest,
    ) -> Outcome<ReleaseOutcome> {
        let ReleaseRequest {
            id,
            holder,
            now,
            token,
        } = request;
        let token = token.as_deref();
        let now = *now;
        let Some(row) = self.row(budget, id.as_str()).await? else {
            return Ok(Err(Refusal::SandboxNotFound));
        };
        let change = match lifecycle::release(&row, holder, token, now) {
            Err(NotHolder) => return Ok(Err(Refusal::NotHolder)),
            Ok(Release::Repeat) => {
                return Ok(Ok(ReleaseOutcome {
                    sandbox: row,
                    newly_released: false,
                }));
            }
            Ok(Release::Now(change)) => change,
        };
        match self.send_change(budget, &row, &change).await {
            Ok(sandbox) => {
                self.free_allocation_key(budget, &sandbox).await;
                Ok(Ok(ReleaseOutcome {
                    sandbox,
                    newly_released: true,
                }))
            }
            // A concurrent mark (or expiry) got there first — or our own earlier attempt,
            // sent again: report the row as it is now.
            Err(DynamoError::Conflict) => {
                let Some(row) = self.row(budget, id.as_str()).await? else {
                    return Ok(Err(Refusal::SandboxNotFound));
                };
                if row.is_held_by(holder) && row.allocated_under(token) {
                    Ok(Ok(ReleaseOutcome {
                        newly_released: lifecycle::release_applied(&row, now),
                        sandbox: row,
                    }))
                } else {
                    Ok(Err(Refusal::NotHolder))
                }
            }
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::AdminStore::change_row`]: decided on the row read consistently, and
    /// written only while it is still in the status read; a row changed meanwhile is
    /// decided on once more.
    pub(super) async fn change_row_as_decided(
        &self,
        id: &SandboxId,
        action: &lifecycle::RowAction,
        now: EpochSecs,
    ) -> Outcome<Sandbox> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        for _ in 0..3 {
            let Some(old) = self.row(&budget, id.as_str()).await? else {
                return Ok(Err(Refusal::SandboxNotFound));
            };
            let change = match lifecycle::decide_row_action(&old, action, now) {
                Ok(change) => change,
                Err(refused) => return Ok(Err(refused.into())),
            };
            match self.send_change(&budget, &old, &change).await {
                Ok(_) => return Ok(Ok(change.row)),
                Err(DynamoError::Conflict) => continue,
                Err(DynamoError::Store(err)) => return Err(err),
            }
        }
        Err(StoreError::Unavailable(
            "the row kept changing while an admin changed it; try again".into(),
        ))
    }
}
