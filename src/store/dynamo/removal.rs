//! Rows leaving the shared table: an admin's bulk delete, and the stale and tombstone
//! removals of the jobs.
//!
//! Rule: every removal is a delete conditional on what was read, and a row whose account
//! was handed out leaves its used-account marker in the same transaction
//! (`domain::used`), so the account never comes back into the pool.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::calls::Budget;
use super::error::{DynamoError, internal, transaction_verdict};
use super::item::{Item, n, s, sandbox_key};
use super::{BULK_CONCURRENCY, DynamoStore};
use crate::domain::time::EpochSecs;
use crate::domain::used::UsedAccount;
use crate::domain::{DeletableStatus, Sandbox, SandboxStatus};
use crate::store::StoreError;

/// Deletes by status: an admin's bulk delete, and the stale and tombstone removals of the
/// jobs, all through one conditional delete per row; a handed-out row's delete carries
/// its used-account marker in the same transaction.
impl DynamoStore {
    /// See [`crate::store::AdminStore::bulk_delete`]. Conditional single-item deletes rather
    /// than `BatchWriteItem`: a batch cannot carry a condition, and an unconditional
    /// delete could remove a row allocated a moment ago.
    pub(super) async fn remove_in_status(
        &self,
        status: DeletableStatus,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let rows = self.rows_in_status(status.status()).await?;
        self.delete_each_if(rows, status.status(), None, now).await
    }

    /// Deletes each of `rows` that is still in `status` and, with `at_most =
    /// Some((attribute, limit))`, whose `attribute` is still at most `limit`;
    /// `BULK_CONCURRENCY` at once, each one queued like any other write. A row whose
    /// account was handed out is deleted in one transaction with the put of its
    /// [`UsedAccount`] marker (stamped `now`), so it can never come back without it.
    /// Returns how many were deleted: a row that changed since it was read is left alone.
    pub(super) async fn delete_each_if(
        &self,
        rows: Vec<Sandbox>,
        status: SandboxStatus,
        at_most: Option<(&str, i64)>,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let (condition, names, values) = {
            let mut names = HashMap::from([("#s".to_owned(), "status".to_owned())]);
            let mut values = HashMap::from([(":s".to_owned(), s(status.as_str()))]);
            let condition = match at_most {
                Some((attribute, limit)) => {
                    names.insert("#bound".to_owned(), attribute.to_owned());
                    values.insert(":limit".to_owned(), n(limit));
                    "#s = :s AND #bound <= :limit"
                }
                None => "#s = :s",
            };
            (condition, names, values)
        };
        let deleted: Vec<bool> = stream::iter(rows)
            .map(|row| {
                let (names, values) = (names.clone(), values.clone());
                async move {
                    let budget = self.calls.budget();
                    let _turn = self.calls.turn(&budget).await?;
                    let key = sandbox_key(&row.sandbox_id);
                    let sent = match UsedAccount::left_by(&row, now) {
                        None => {
                            let delete = self
                                .client()
                                .delete_item()
                                .table_name(&self.table)
                                .set_key(Some(key))
                                .condition_expression(condition)
                                .set_expression_attribute_names(Some(names))
                                .set_expression_attribute_values(Some(values));
                            self.calls
                                .send(&budget, || self.calls.wire.send(&delete))
                                .await
                                .map(drop)
                        }
                        Some(marker) => {
                            let delete = Delete::builder()
                                .table_name(&self.table)
                                .set_key(Some(key))
                                .condition_expression(condition)
                                .set_expression_attribute_names(Some(names))
                                .set_expression_attribute_values(Some(values))
                                .build()
                                .map_err(|err| internal(format!("delete: {err}")))?;
                            let delete = TransactWriteItem::builder().delete(delete).build();
                            self.send_with_puts(&budget, delete, vec![Item::from(&marker)])
                                .await
                        }
                    };
                    match sent {
                        Ok(()) => Ok(true),
                        Err(DynamoError::Conflict) => Ok(false),
                        Err(DynamoError::Store(err)) => Err(err),
                    }
                }
            })
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(deleted.into_iter().filter(|d| *d).count() as u64)
    }

    /// Sends `first` and a put of each of `puts` as one transaction, under one client
    /// token for every attempt (DynamoDB applies a retried transaction once); a failed
    /// condition is [`DynamoError::Conflict`].
    pub(super) async fn send_with_puts(
        &self,
        budget: &Budget,
        first: TransactWriteItem,
        puts: Vec<Item>,
    ) -> Result<(), DynamoError> {
        let mut transaction = self
            .client()
            .transact_write_items()
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .transact_items(first);
        for item in puts {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(|err| internal(format!("put in a transaction: {err}")))?;
            transaction = transaction.transact_items(TransactWriteItem::builder().put(put).build());
        }
        self.calls
            .send_classified(budget, || transaction.clone().send(), transaction_verdict)
            .await
            .map(drop)
    }
}
