//! Deletion bookkeeping on the shared table: which pending rows are due, claiming one for
//! a runner, recording the outcome, and dropping expired tombstones.
//!
//! Rule: a claim is a conditional write (pending, and unclaimed or the claim ran out), and
//! every outcome is written only while the runner still holds that claim — so two runners
//! never delete the same sandbox twice, and a late runner never overwrites a newer result.

use aws_sdk_dynamodb::types::{ReturnValue, TransactWriteItem, Update};

use super::DynamoStore;
use super::error::{DynamoError, internal};
use super::item::{Item, n, returned_row, s, sandbox_key};
use super::update::row_update;
use crate::domain::lifecycle;
use crate::domain::time::EpochSecs;
use crate::domain::used::UsedAccount;
use crate::domain::{NiosxaasHistory, Sandbox, SandboxStatus};
use crate::store::{DeletionClaim, DeletionOutcome, FinishedDeletion, StoreError, finished_change};

impl DynamoStore {
    /// See [`crate::store::LifecycleStore::deletions_due`].
    pub(super) async fn due_deletions(
        &self,
        now: EpochSecs,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError> {
        Ok(self
            .rows_in_status(SandboxStatus::PendingDeletion)
            .await?
            .into_iter()
            .filter(|row| lifecycle::deletion_due(row, now, ignore_backoff))
            .collect())
    }

    /// See [`crate::store::LifecycleStore::claim_deletion`].
    pub(super) async fn claim_row_for_deletion(
        &self,
        claim: &DeletionClaim<'_>,
    ) -> Result<Option<Sandbox>, StoreError> {
        let &DeletionClaim {
            id,
            runner,
            now,
            until,
        } = claim;
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        let update = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(id.as_str())))
            .update_expression("SET deletion_claimed_by = :me, deletion_claimed_until = :until")
            .condition_expression(lifecycle::DELETION_CLAIM_CONDITION)
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pending", s(SandboxStatus::PendingDeletion.as_str()))
            .expression_attribute_values(":me", s(runner))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew);
        let claimed = self
            .calls
            .send(&budget, || self.calls.wire.send(&update))
            .await;
        match claimed {
            Ok(output) => returned_row(output.attributes).map(Some),
            Err(DynamoError::Conflict) => Ok(None),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::LifecycleStore::finish_deletion`]. A final outcome of a row the NIOSXaaS
    /// hook ran for writes the row and its history item in one transaction, so a crash never
    /// leaves a deleted sandbox without its history. A deletion writes the account's
    /// used-account marker in the same transaction: DynamoDB's own TTL drops the tombstone
    /// later without asking, and the marker must outlive it.
    pub(super) async fn record_deletion(
        &self,
        finished: FinishedDeletion<'_>,
    ) -> Result<(), StoreError> {
        let FinishedDeletion {
            claimed,
            runner,
            outcome,
            niosxaas,
            now,
        } = finished;
        let change = finished_change(claimed, runner, &outcome, niosxaas, now);
        let history = if outcome.is_final() {
            NiosxaasHistory::of(&change.row, now).map(|history| Item::from(&history))
        } else {
            None
        };
        let marker = match outcome {
            DeletionOutcome::Deleted { .. } => {
                UsedAccount::left_by(&change.row, now).map(|marker| Item::from(&marker))
            }
            _ => None,
        };
        let puts: Vec<Item> = history.into_iter().chain(marker).collect();
        let write = row_update(claimed, &change, self.announcing());
        let key = sandbox_key(&claimed.sandbox_id);
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        let written = if puts.is_empty() {
            let update = self
                .client()
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression(write.condition.clone())
                .update_expression(write.expression.clone())
                .set_expression_attribute_names(Some(write.names))
                .set_expression_attribute_values(Some(write.values));
            self.calls
                .send(&budget, || self.calls.wire.send(&update))
                .await
                .map(drop)
        } else {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .condition_expression(write.condition.clone())
                .update_expression(write.expression.clone())
                .set_expression_attribute_names(Some(write.names))
                .set_expression_attribute_values(Some(write.values))
                .build()
                .map_err(|err| internal(format!("deletion update: {err}")))?;
            let update = TransactWriteItem::builder().update(update).build();
            self.send_with_puts(&budget, update, puts).await
        };
        match written {
            // Someone else's claim (ours ran out) or a finished row: theirs stands.
            Ok(()) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::LifecycleStore::purge_tombstones`]. DynamoDB's own TTL (enabled on `ttl`
    /// by the Terraform) also drops them; this keeps tables without it tidy.
    pub(super) async fn purge_expired_tombstones(&self, now: EpochSecs) -> Result<u64, StoreError> {
        let expired: Vec<Sandbox> = self
            .rows_in_status(SandboxStatus::Deleted)
            .await?
            .into_iter()
            .filter(|row| lifecycle::tombstone_purgeable(row, now))
            .collect();
        self.delete_each_if(
            expired,
            SandboxStatus::Deleted,
            Some(("ttl", now.get())),
            now,
        )
        .await
    }
}
