//! Provider sync and imports on the shared table.
//!
//! Rule: each sandbox a sync lists (or an import names) is written as
//! `domain::lifecycle` decides on what the broker has for it: a new row put only where
//! there is neither a row nor a used-account marker (one transaction checks both), or the
//! row's refresh as the update derived from the decision, conditional on the status read.
//! A sync starts from the rows `StatusIndex` shows in the statuses it may replace and the
//! ids `StatusNameIndex` (keys only) shows in the statuses it never writes (hints); any
//! other listed id, new or a tombstone, is tried as an insert. A write whose condition
//! finds the row otherwise decides once more on what it found, so a lagging index never
//! makes a wrong write. Nothing is written before the listing is believed
//! (`SyncRules::believe`). Each `available` row the provider no longer lists turns
//! `stale` only if it is still `available`; an allocation racing the sync always wins.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
use futures::stream::{self, StreamExt, TryStreamExt};

use super::calls::Budget;
use super::error::{DynamoError, internal, transaction_verdict};
use super::item::{
    AttributeValuesExt, Item, ItemError, SANDBOX_PREFIX, row_found_by_update, s, used_key,
};
use super::schema::STATUS_NAME_INDEX;
use super::{BULK_CONCURRENCY, DynamoStore};
use crate::domain::audit::ListingSnapshot;
use crate::domain::lifecycle::{
    self, Change, Decision, ListingRefused, Prior, SYNC_NEVER_WRITES, SyncRules, SyncStep, Upsert,
};
use crate::domain::time::EpochSecs;
use crate::domain::{NewSandbox, ProviderSandbox, Sandbox, SandboxStatus};
use crate::store::{ImportSummary, StoreError, SyncSummary};

/// What the broker was found to have for a sandbox when a write's condition failed.
enum Found {
    /// A row (or an item that is not a usable row).
    Row(Box<Result<Sandbox, ItemError>>),
    /// A used-account marker, and no row.
    Used,
}

/// What writing one sandbox of a sync or an import came to: how it counts, and whether
/// it wrote.
struct Upserted {
    step: SyncStep,
    wrote: bool,
}

/// What the sync guesses the broker has for a listed sandbox, from the indexes.
enum Guess {
    /// A row read whole (a status the sync may write over).
    Row(Box<Sandbox>),
    /// A row in a status the sync never writes: left alone without a write.
    Held,
    /// Neither: a new row, unless a marker or a row (a tombstone, or one the index has not
    /// shown yet) says otherwise.
    Nothing,
}

impl DynamoStore {
    /// See [`crate::store::LifecycleStore::sync_provider`].
    pub(super) async fn apply_listing(
        &self,
        listing: Vec<ProviderSandbox>,
        rules: &SyncRules,
        now: EpochSecs,
    ) -> Result<Result<SyncSummary, ListingRefused>, StoreError> {
        let mut known: HashMap<String, Sandbox> = HashMap::new();
        for status in lifecycle::SYNC_REPLACES {
            for row in self.rows_in_status(status).await? {
                known.insert(row.sandbox_id.clone(), row);
            }
        }
        let mut held = HashSet::new();
        for status in SYNC_NEVER_WRITES {
            if status != SandboxStatus::Reserved {
                held.extend(self.ids_in_status(status).await?);
            }
        }
        // Reserved rows are never written from a listing, but one the provider dropped
        // goes stale (a class must not get it): read whole, as the available ones.
        let mut reserved: HashMap<String, Sandbox> = HashMap::new();
        for row in self.rows_in_status(SandboxStatus::Reserved).await? {
            held.insert(row.sandbox_id.clone());
            reserved.insert(row.sandbox_id.clone(), row);
        }
        let available = known
            .values()
            .filter(|row| row.status == SandboxStatus::Available)
            .count() as u64
            + reserved.len() as u64;
        // Each listed sandbox takes its row out of `known`: what stays is what the provider
        // no longer lists.
        let guessed: Vec<(NewSandbox, Guess)> = listing
            .into_iter()
            .map(|sandbox| {
                let id = sandbox.sandbox_id.as_str();
                reserved.remove(id);
                let guess = match known.remove(id) {
                    Some(row) => Guess::Row(Box::new(row)),
                    None if held.contains(id) => Guess::Held,
                    None => Guess::Nothing,
                };
                (NewSandbox::from(sandbox), guess)
            })
            .collect();
        let snapshot = ListingSnapshot {
            taken_at: now,
            ids: guessed
                .iter()
                .map(|(sandbox, _)| sandbox.sandbox_id.as_str().to_owned())
                .collect(),
        };
        let unlisted: Vec<Sandbox> = known
            .into_values()
            .chain(reserved.into_values())
            .filter(|row| lifecycle::goes_stale(row.status))
            .collect();
        if let Err(refused) = rules.believe(available, unlisted.len() as u64) {
            return Ok(Err(refused));
        }
        let decide = |prior: Prior<'_>, incoming: &NewSandbox| {
            lifecycle::sync_listed(prior, incoming, rules, now)
        };
        let decide = &decide;
        let written: Vec<Upserted> = stream::iter(guessed)
            .map(|(incoming, guess)| async move {
                match guess {
                    Guess::Row(row) => self.upsert(incoming, Some(*row), decide).await,
                    Guess::Nothing => self.upsert(incoming, None, decide).await,
                    Guess::Held => Ok(Upserted {
                        step: SyncStep::Untouched,
                        wrote: false,
                    }),
                }
            })
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        let mut summary = SyncSummary::default();
        for upserted in written {
            summary.record(upserted.step);
        }
        let staled: Vec<bool> = stream::iter(unlisted)
            .map(|row| self.mark_stale(row, now))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        summary.marked_stale = staled.into_iter().filter(|done| *done).count() as u64;
        self.record_listing(&snapshot).await?;
        Ok(Ok(summary))
    }

    /// Imports `rows` (see [`crate::store::AdminStore::import`]), `BULK_CONCURRENCY` at once.
    pub(super) async fn import_rows(
        &self,
        rows: Vec<NewSandbox>,
        now: EpochSecs,
    ) -> Result<ImportSummary, StoreError> {
        let decide = |prior: Prior<'_>, incoming: &NewSandbox| {
            let upsert = lifecycle::import_row(prior, incoming, now);
            Decision {
                // An import counts only what it wrote; the step names that.
                step: if upsert.is_some() {
                    SyncStep::Added
                } else {
                    SyncStep::Untouched
                },
                upsert,
            }
        };
        let decide = &decide;
        // Most imported sandboxes are new: guess no row, and read only the ones that exist.
        let written: Vec<Upserted> = stream::iter(rows)
            .map(|row| self.upsert(row, None, decide))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        let imported = written.iter().filter(|upserted| upserted.wrote).count() as u64;
        Ok(ImportSummary {
            imported,
            skipped: written.len() as u64 - imported,
        })
    }

    /// Writes `decide`'s upsert of `incoming` on `guess` (the row as the caller believes
    /// it is); when the write's condition finds otherwise (a row, or a used-account
    /// marker), decides once more on what it found. A second refusal is a write that came
    /// first (an allocation, another instance's sync): the row is left to it.
    async fn upsert(
        &self,
        incoming: NewSandbox,
        guess: Option<Sandbox>,
        decide: &(impl Fn(Prior<'_>, &NewSandbox) -> Decision + Sync),
    ) -> Result<Upserted, StoreError> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        let (mut old, mut used) = (guess, false);
        for decided_on_read in [false, true] {
            let decision = decide(Prior::of(old.as_ref(), used), &incoming);
            let Some(upsert) = decision.upsert else {
                return Ok(Upserted {
                    step: decision.step,
                    wrote: false,
                });
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
                Ok(()) => {
                    return Ok(Upserted {
                        step: decision.step,
                        wrote: true,
                    });
                }
                Err(DynamoError::Conflict) if !decided_on_read => match found {
                    Some(Found::Row(found)) if found.is_ok() => old = (*found).ok(),
                    Some(Found::Used) => (old, used) = (None, true),
                    Some(Found::Row(_)) | None => {
                        let id = incoming.sandbox_id.as_str();
                        old = self.row(&budget, id).await?;
                        used = old.is_none() && self.is_used(&budget, id).await?;
                    }
                },
                Err(DynamoError::Conflict) => break,
                Err(DynamoError::Store(err)) => return Err(err),
            }
        }
        Ok(Upserted {
            step: SyncStep::Untouched,
            wrote: false,
        })
    }

    /// Puts `row` where there is no row yet and no used-account marker, in one
    /// transaction; a refusal says which of the two it found (the row, when the table
    /// returns it: DynamoDB Local may not).
    async fn insert(
        &self,
        budget: &Budget,
        row: &Sandbox,
    ) -> (Result<(), DynamoError>, Option<Found>) {
        let transaction = || -> Result<_, DynamoError> {
            let unused = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(used_key(&row.sandbox_id)))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map_err(|err| internal(format!("marker check: {err}")))?;
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(Item::from(row)))
                .condition_expression("attribute_not_exists(PK)")
                .return_values_on_condition_check_failure(AllOld)
                .build()
                .map_err(|err| internal(format!("new row: {err}")))?;
            Ok(self
                .client()
                .transact_write_items()
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .transact_items(TransactWriteItem::builder().condition_check(unused).build())
                .transact_items(TransactWriteItem::builder().put(put).build()))
        };
        let transaction = match transaction() {
            Ok(transaction) => transaction,
            Err(err) => return (Err(err), None),
        };
        let (sent, found) = self
            .calls
            .send_keeping_classified(
                budget,
                || transaction.clone().send(),
                found_by_insert,
                transaction_verdict,
            )
            .await;
        (sent.map(drop), found)
    }

    /// Applies `change` to `before`; a refusal hands back the row found, as [`Self::insert`].
    async fn refresh(
        &self,
        budget: &Budget,
        before: &Sandbox,
        change: &Change,
    ) -> (Result<(), DynamoError>, Option<Found>) {
        let update = self
            .apply_change(before, change)
            .return_values_on_condition_check_failure(AllOld);
        let (sent, found) = self
            .calls
            .send_keeping(
                budget,
                || self.calls.wire.send(&update),
                row_found_by_update,
            )
            .await;
        (sent.map(drop), found.map(|row| Found::Row(Box::new(row))))
    }

    /// Whether a used-account marker is kept for `id`, read consistently.
    async fn is_used(&self, budget: &Budget, id: &str) -> Result<bool, StoreError> {
        Ok(self.consistent_item(budget, used_key(id)).await?.is_some())
    }

    /// Ids of the rows `StatusNameIndex` (keys only) shows in `status`.
    pub(super) async fn ids_in_status(
        &self,
        status: SandboxStatus,
    ) -> Result<Vec<String>, StoreError> {
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .index_name(STATUS_NAME_INDEX)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":s", s(status.as_str()));
        let items = self.query_every_page(&self.calls.budget(), query).await?;
        Ok(items
            .iter()
            .filter_map(|item| item.text("PK")?.strip_prefix(SANDBOX_PREFIX))
            .map(str::to_owned)
            .collect())
    }

    /// Marks `row` (read `available`, no longer listed) stale if it still is available.
    async fn mark_stale(&self, row: Sandbox, now: EpochSecs) -> Result<bool, StoreError> {
        let Some(change) = lifecycle::mark_stale(&row, now) else {
            return Ok(false);
        };
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        let update = self.apply_change(&row, &change);
        match self
            .calls
            .send(&budget, || self.calls.wire.send(&update))
            .await
        {
            Ok(_) => Ok(true),
            Err(DynamoError::Conflict) => Ok(false),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }
}

/// What a refused insert found: its first item is the marker check, its second the put.
fn found_by_insert(err: &TransactWriteItemsError) -> Option<Found> {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = err else {
        return None;
    };
    let failed = |reason: &aws_sdk_dynamodb::types::CancellationReason| {
        reason.code() == Some("ConditionalCheckFailed")
    };
    let reasons = cancelled.cancellation_reasons();
    if let Some(put) = reasons.get(1).filter(|reason| failed(reason)) {
        return put
            .item()
            .map(|item| Found::Row(Box::new(Sandbox::try_from(item))));
    }
    reasons
        .first()
        .filter(|reason| failed(reason))
        .map(|_| Found::Used)
}
