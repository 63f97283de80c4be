//! Provider sync and imports on the shared table.
//!
//! Rule: each sandbox a sync lists (or an import names) is written as
//! `domain::lifecycle` decides on the row it has: a new row put only where there is none,
//! or the row's refresh as the update derived from the decision, conditional on the
//! status read. A sync starts from the rows `StatusIndex` shows in a status it may replace
//! (a hint); a write whose condition finds the row otherwise decides once more on the row
//! it found, so a lagging index never makes a wrong write. Each `available` row the provider no
//! longer lists turns `stale` only if it is still `available`; an allocation racing the
//! sync always wins.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::calls::Budget;
use super::error::{DynamoError, internal};
use super::item::{Item, ItemError, row_found_by_put, row_found_by_update};
use super::{BULK_CONCURRENCY, DynamoStore};
use crate::domain::lifecycle::{self, Change, SyncStep, Upsert};
use crate::domain::{NewSandbox, ProviderSandbox, Sandbox, SandboxStatus};
use crate::store::{ImportSummary, StoreError, SyncSummary};

/// A sync's or an import's decision for one sandbox, given the row it has (`None`: none).
type Decide = fn(Option<&Sandbox>, &NewSandbox, i64) -> Option<Upsert>;

/// The row a refused write found, when the table handed it back.
type Found = Option<Result<Sandbox, ItemError>>;

/// What writing one sandbox of a sync or an import came to.
enum Upserted {
    /// Written over the row in this status (`None`: a new row).
    Wrote(Option<SandboxStatus>),
    /// Left alone: the row is in a status the decision does not replace.
    Left,
}

impl DynamoStore {
    /// See [`crate::store::Store::sync_provider`].
    pub(super) async fn sync_provider(
        &self,
        listing: Vec<ProviderSandbox>,
        now: i64,
    ) -> Result<SyncSummary, StoreError> {
        let mut known: HashMap<String, Sandbox> = HashMap::new();
        for status in lifecycle::SYNC_REPLACES {
            for row in self.rows_in_status(status).await? {
                known.insert(row.sandbox_id.clone(), row);
            }
        }
        // Each listed sandbox takes its row out of `known`: what stays is what the provider
        // no longer lists.
        let guessed: Vec<(NewSandbox, Option<Sandbox>)> = listing
            .into_iter()
            .map(|sandbox| {
                let guess = known.remove(sandbox.sandbox_id.as_str());
                (NewSandbox::from(sandbox), guess)
            })
            .collect();
        let written: Vec<Upserted> = stream::iter(guessed)
            .map(|(incoming, guess)| self.upsert(incoming, guess, now, lifecycle::sync_listed))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        let mut summary = SyncSummary::default();
        for upserted in written {
            summary.record(match upserted {
                Upserted::Wrote(replaced) => lifecycle::sync_step(replaced),
                Upserted::Left => SyncStep::Untouched,
            });
        }
        let staled: Vec<bool> = stream::iter(known.into_values())
            .map(|row| self.mark_stale(row, now))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        summary.marked_stale = staled.into_iter().filter(|done| *done).count() as u64;
        Ok(summary)
    }

    /// Imports `rows` (see [`crate::store::Store::import`]), `BULK_CONCURRENCY` at once.
    pub(super) async fn import(
        &self,
        rows: Vec<NewSandbox>,
        now: i64,
    ) -> Result<ImportSummary, StoreError> {
        // Most imported sandboxes are new: guess no row, and read only the ones that exist.
        let written: Vec<Upserted> = stream::iter(rows)
            .map(|row| self.upsert(row, None, now, lifecycle::import_row))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        let imported = written
            .iter()
            .filter(|upserted| matches!(upserted, Upserted::Wrote(_)))
            .count() as u64;
        Ok(ImportSummary {
            imported,
            skipped: written.len() as u64 - imported,
        })
    }

    /// Writes `decide`'s upsert of `incoming` on `guess` (the row as the caller believes
    /// it is); when the write's condition finds the row otherwise, decides once more on
    /// the row found. A second refusal is a write that came first (an allocation, another
    /// instance's sync): the row is left to it.
    async fn upsert(
        &self,
        incoming: NewSandbox,
        guess: Option<Sandbox>,
        now: i64,
        decide: Decide,
    ) -> Result<Upserted, StoreError> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        let mut old = guess;
        for decided_on_read in [false, true] {
            let Some(upsert) = decide(old.as_ref(), &incoming, now) else {
                return Ok(Upserted::Left);
            };
            let (sent, found) = match (&upsert, &old) {
                (Upsert::Insert(row), _) => self.insert(&budget, row).await,
                (Upsert::Update(change), Some(before)) => {
                    self.refresh(&budget, before, change).await
                }
                (Upsert::Update(_), None) => {
                    return Err(internal("an update decided without a row"));
                }
            };
            match sent {
                Ok(()) => return Ok(Upserted::Wrote(old.map(|row| row.status))),
                Err(DynamoError::Conflict) if !decided_on_read => {
                    old = match found {
                        Some(Ok(row)) => Some(row),
                        _ => self.row(&budget, incoming.sandbox_id.as_str()).await?,
                    };
                }
                Err(DynamoError::Conflict) => return Ok(Upserted::Left),
                Err(DynamoError::Store(err)) => return Err(err),
            }
        }
        Ok(Upserted::Left)
    }

    /// Puts `row` where there is no row yet; a refusal hands back the row found (when
    /// the table returns it: DynamoDB Local may not).
    async fn insert(&self, budget: &Budget, row: &Sandbox) -> (Result<(), DynamoError>, Found) {
        let put = self
            .client()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Item::from(row)))
            .condition_expression("attribute_not_exists(PK)")
            .return_values_on_condition_check_failure(AllOld);
        let (sent, found) = self
            .calls
            .send_keeping(budget, || put.clone().send(), row_found_by_put)
            .await;
        (sent.map(drop), found)
    }

    /// Applies `change` to `before`; a refusal hands back the row found, as [`Self::insert`].
    async fn refresh(
        &self,
        budget: &Budget,
        before: &Sandbox,
        change: &Change,
    ) -> (Result<(), DynamoError>, Found) {
        let update = self
            .apply_change(before, change)
            .return_values_on_condition_check_failure(AllOld);
        let (sent, found) = self
            .calls
            .send_keeping(budget, || update.clone().send(), row_found_by_update)
            .await;
        (sent.map(drop), found)
    }

    /// Marks `row` (read `available`, no longer listed) stale if it still is available.
    async fn mark_stale(&self, row: Sandbox, now: i64) -> Result<bool, StoreError> {
        let Some(change) = lifecycle::mark_stale(&row, now) else {
            return Ok(false);
        };
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        let update = self.apply_change(&row, &change);
        match self.calls.send(&budget, || update.clone().send()).await {
            Ok(_) => Ok(true),
            Err(DynamoError::Conflict) => Ok(false),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }
}
