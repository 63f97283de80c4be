//! Deletion bookkeeping on the shared table: which pending rows are due, claiming one for
//! a runner, recording the outcome, and dropping expired tombstones.
//!
//! Rule: a claim is a conditional write (pending, and unclaimed or the claim ran out), and
//! every outcome is written only while the runner still holds that claim — so two runners
//! never delete the same sandbox twice, and a late runner never overwrites a newer result.

use aws_sdk_dynamodb::types::ReturnValue;

use super::DynamoStore;
use super::error::{DynamoError, classify};
use super::item::{Item, n, returned_row, s, sandbox_key};
use crate::domain::{Sandbox, SandboxId, SandboxStatus};
use crate::store::{DeletionOutcome, StoreError};

impl DynamoStore {
    /// See [`crate::store::Store::deletions_due`].
    pub(super) async fn due_for_deletion(
        &self,
        now: i64,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError> {
        Ok(self
            .rows_in_status(SandboxStatus::PendingDeletion)
            .await?
            .into_iter()
            .filter(|row| ignore_backoff || row.next_deletion_attempt_at.is_none_or(|at| at <= now))
            .collect())
    }

    /// See [`crate::store::Store::claim_deletion`].
    pub(super) async fn claim_for_deletion(
        &self,
        id: &SandboxId,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<Sandbox>, StoreError> {
        let claimed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(id.as_str())))
            .update_expression("SET deletion_claimed_by = :me, deletion_claimed_until = :until")
            .condition_expression(
                "#s = :pending AND (attribute_not_exists(deletion_claimed_by) \
                 OR deletion_claimed_by = :me OR deletion_claimed_until < :now)",
            )
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pending", s(SandboxStatus::PendingDeletion.as_str()))
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(classify);
        match claimed {
            Ok(output) => returned_row(output.attributes).map(Some),
            Err(DynamoError::Conflict) => Ok(None),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::Store::finish_deletion`].
    pub(super) async fn record_deletion(
        &self,
        id: &SandboxId,
        holder: &str,
        outcome: DeletionOutcome,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(id.as_str())))
            .condition_expression("#s = :pending AND deletion_claimed_by = :me")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":pending", s(SandboxStatus::PendingDeletion.as_str()))
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":now", n(now));
        let expression = match outcome {
            DeletionOutcome::Deleted { ttl } => {
                update = update
                    .expression_attribute_values(":deleted", s(SandboxStatus::Deleted.as_str()))
                    .expression_attribute_values(":ttl", n(ttl));
                "SET #s = :deleted, deleted_at = :now, #ttl = :ttl, updated_at = :now \
                 REMOVE deletion_claimed_by, deletion_claimed_until, next_deletion_attempt_at, last_deletion_error"
                    .to_owned()
            }
            DeletionOutcome::Retry {
                next_attempt_at,
                attempts,
                transient_failures,
                first_transient_failure_at,
                error,
            } => {
                update = update
                    .expression_attribute_values(":next", n(next_attempt_at))
                    .expression_attribute_values(":attempts", n(attempts))
                    .expression_attribute_values(":transient", n(transient_failures))
                    .expression_attribute_values(":error", s(error));
                let mut set = String::from(
                    "SET next_deletion_attempt_at = :next, deletion_retry_count = :attempts, \
                     deletion_transient_failures = :transient, last_deletion_error = :error, updated_at = :now",
                );
                let mut remove =
                    String::from(" REMOVE deletion_claimed_by, deletion_claimed_until");
                match first_transient_failure_at {
                    Some(first) => {
                        set.push_str(", first_deletion_failure_at = :first");
                        update = update.expression_attribute_values(":first", n(first));
                    }
                    None => remove.push_str(", first_deletion_failure_at"),
                }
                set + &remove
            }
            DeletionOutcome::Failed { attempts, error } => {
                update = update
                    .expression_attribute_values(
                        ":failed",
                        s(SandboxStatus::DeletionFailed.as_str()),
                    )
                    .expression_attribute_values(":attempts", n(attempts))
                    .expression_attribute_values(":error", s(error));
                "SET #s = :failed, deletion_retry_count = :attempts, last_deletion_error = :error, \
                 updated_at = :now REMOVE deletion_claimed_by, deletion_claimed_until"
                    .to_owned()
            }
            DeletionOutcome::Released => {
                "SET updated_at = :now REMOVE deletion_claimed_by, deletion_claimed_until"
                    .to_owned()
            }
        };
        if expression.contains("#ttl") {
            update = update.expression_attribute_names("#ttl", "ttl");
        }
        match update
            .update_expression(expression)
            .send()
            .await
            .map_err(classify)
        {
            // Someone else's claim (ours ran out) or a finished row: theirs stands.
            Ok(_) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::Store::purge_tombstones`]. DynamoDB's own TTL (enabled on `ttl`
    /// by the Terraform) also drops them; this keeps tables without it tidy.
    pub(super) async fn purge_expired_tombstones(&self, now: i64) -> Result<u64, StoreError> {
        let expired: Vec<Item> = self
            .rows_in_status(SandboxStatus::Deleted)
            .await?
            .iter()
            .filter(|row| row.ttl.is_some_and(|ttl| ttl <= now))
            .map(|row| sandbox_key(&row.sandbox_id))
            .collect();
        self.delete_each_if(expired, SandboxStatus::Deleted, Some(("ttl", now)))
            .await
    }
}
