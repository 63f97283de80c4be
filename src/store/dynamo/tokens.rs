//! Lab tokens on the shared table: one item each under `PK = "TOKEN"` (additive: no
//! `status`, a `sandbox_id` naming no sandbox, as the job items), read consistently, so
//! every instance of a fleet sees a new or revoked token at its next read.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::transact_write_items::builders::TransactWriteItemsFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::DynamoStore;
use super::calls::Budget;
use super::error::{DynamoError, internal, transaction_verdict};
use super::item::{AttributeValuesExt, Item, n, returned_row, s, sandbox_key};
use super::update::row_update;
use crate::domain::lifecycle::Change;
use crate::domain::time::EpochSecs;
use crate::domain::tokens::{self, LabToken, TokenUse};
use crate::domain::{Sandbox, SandboxStatus};
use crate::store::{Outcome, StoreError, TokenGrant};

/// The partition of the token items; each one's sort key is the token's id.
pub(super) const TOKENS: &str = "TOKEN";

fn key(id: &str) -> Item {
    HashMap::from([("PK".to_owned(), s(TOKENS)), ("SK".to_owned(), s(id))])
}

/// The token a token item holds; its last use is kept beside the record (`last_used_at`),
/// so recording a use never rewrites it.
pub(super) fn token_of(item: &Item) -> Result<LabToken, StoreError> {
    let mut token: LabToken = serde_json::from_str(item.text("token").unwrap_or_default())
        .map_err(|err| StoreError::Internal(Box::new(err)))?;
    if let Some(at) = item.integer("last_used_at") {
        token.last_used_at = Some(EpochSecs::new(at));
    }
    Ok(token)
}

/// The item of `token`: its record as JSON; what it holds is kept beside, in `held`.
pub(super) fn token_item(token: &LabToken) -> Result<Item, StoreError> {
    let json = serde_json::to_string(token).map_err(|err| StoreError::Internal(Box::new(err)))?;
    let mut item = key(&token.id);
    item.insert("sandbox_id".to_owned(), s(TOKENS));
    item.insert("token".to_owned(), AttributeValue::S(json));
    // What it holds: sandbox id → epoch seconds it was allocated (see `claim_under_token`).
    item.insert("held".to_owned(), AttributeValue::M(HashMap::new()));
    if let Some(at) = token.last_used_at {
        item.insert("last_used_at".to_owned(), n(at));
    }
    Ok(item)
}

/// How many allocations a token item says are held under it.
fn held_of(item: &Item) -> u64 {
    match item.get("held") {
        Some(AttributeValue::M(held)) => held.len() as u64,
        _ => 0,
    }
}

impl DynamoStore {
    /// An `UpdateItem` of the token `id`'s item, applied only if the token exists.
    fn update_token(&self, id: &str) -> UpdateItemFluentBuilder {
        self.client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(id)))
            .condition_expression("attribute_exists(PK)")
    }

    async fn token_items(&self) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(TOKENS))
            .consistent_read(true);
        self.query_every_page(&self.calls.budget(), query).await
    }

    /// See [`crate::store::TokenStore::tokens`].
    pub(super) async fn read_tokens(&self) -> Result<Vec<TokenUse>, StoreError> {
        self.token_items()
            .await?
            .iter()
            .map(|item| {
                Ok(TokenUse {
                    token: token_of(item)?,
                    held: held_of(item),
                })
            })
            .collect()
    }

    /// See [`crate::store::TokenStore::add_token`]. The checks read every token first, so
    /// two admins minting at the same moment could pass `MAX_TOKENS` by one, or share a
    /// name; the id itself never collides (a conditional put).
    pub(super) async fn put_token(
        &self,
        token: &LabToken,
        limit: usize,
        now: EpochSecs,
    ) -> Outcome<()> {
        let existing: Vec<LabToken> = self
            .token_items()
            .await?
            .iter()
            .map(token_of)
            .collect::<Result<_, _>>()?;
        if let Err(refused) = tokens::may_add(token, &existing, limit, now) {
            return Ok(Err(refused.into()));
        }
        let put = self
            .client()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(token_item(token)?))
            .condition_expression("attribute_not_exists(PK)");
        self.calls
            .send(&self.calls.budget(), || self.calls.wire.send(&put))
            .await
            .map_err(DynamoError::into_store_error)?;
        Ok(Ok(()))
    }

    /// See [`crate::store::TokenStore::touch_token`].
    pub(super) async fn record_token_use(&self, id: &str, at: EpochSecs) -> Result<(), StoreError> {
        let update = self
            .update_token(id)
            .update_expression("SET last_used_at = :at")
            .expression_attribute_values(":at", n(at));
        match self
            .calls
            .send(&self.calls.budget(), || self.calls.wire.send(&update))
            .await
        {
            Ok(_) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::TokenStore::revoke_token`].
    pub(super) async fn revoke_stored_token(
        &self,
        id: &str,
        now: EpochSecs,
    ) -> Result<Option<LabToken>, StoreError> {
        let budget = self.calls.budget();
        let Some(item) = self.consistent_item(&budget, key(id)).await? else {
            return Ok(None);
        };
        let mut token = token_of(&item)?;
        if token.revoked_at.is_some() {
            return Ok(Some(token));
        }
        token.revoked_at = Some(now);
        let json =
            serde_json::to_string(&token).map_err(|err| StoreError::Internal(Box::new(err)))?;
        // Only the record changes: what the token holds stays, and is freed as released.
        let update = self
            .update_token(id)
            .update_expression("SET #token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", AttributeValue::S(json));
        self.calls
            .send(&budget, || self.calls.wire.send(&update))
            .await
            .map_err(DynamoError::into_store_error)?;
        Ok(Some(token))
    }
}

/// What a refused claim under a lab token found: the row was not available (handed back
/// as it is), or the token already holds its cap.
pub(super) enum ClaimRefused {
    /// The row's condition failed; the row as it is, when the table returned it.
    Row(Option<Box<Sandbox>>),
    /// The token's condition failed: it holds `max_active` sandboxes.
    Cap,
}

/// Whether `change` ends an allocation made under a lab token (a release, an expiry, an
/// admin's change): its slot on the token must go with it.
fn ends_token_hold<'a>(before: &'a Sandbox, change: &Change) -> Option<&'a str> {
    (before.status == SandboxStatus::Allocated && change.row.status != SandboxStatus::Allocated)
        .then_some(before.token_id.as_deref())
        .flatten()
}

fn build_error(err: impl std::fmt::Display) -> StoreError {
    internal(format!("building a transaction: {err}"))
}

impl DynamoStore {
    /// The row's conditional update (see [`super::update::row_update`]) as a transaction
    /// item, handing back the row when its condition fails.
    fn row_update_item(
        &self,
        before: &Sandbox,
        change: &Change,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = row_update(before, change, self.announcing());
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(&change.row.sandbox_id)))
            .update_expression(update.expression)
            .condition_expression(update.condition)
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values(Some(update.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The token's update that adds (`taking`) or removes `sandbox_id` from what it holds;
    /// adding is conditional on the token holding fewer than `max_active` (or it already
    /// holding this sandbox, for a retried attempt).
    fn slot_item(
        &self,
        token: &str,
        sandbox_id: &str,
        taking: Option<Option<u32>>,
        now: EpochSecs,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(token)))
            .expression_attribute_names("#sid", sandbox_id);
        let update = match taking {
            Some(max_active) => {
                let update = update
                    .update_expression("SET held.#sid = :now")
                    .expression_attribute_values(":now", n(now));
                match max_active {
                    Some(max) => update
                        .condition_expression(
                            "attribute_exists(PK) AND (attribute_exists(held.#sid) OR size(held) < :max)",
                        )
                        .expression_attribute_values(":max", n(max)),
                    None => update.condition_expression("attribute_exists(PK)"),
                }
            }
            None => update
                .update_expression("REMOVE held.#sid")
                .condition_expression("attribute_exists(PK)"),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(build_error)?)
            .build())
    }

    /// One transaction of a row's update and its token's slot, under one client token for
    /// every attempt (DynamoDB applies a retried transaction once).
    fn row_and_slot(
        &self,
        row: TransactWriteItem,
        slot: TransactWriteItem,
    ) -> TransactWriteItemsFluentBuilder {
        self.client()
            .transact_write_items()
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .transact_items(row)
            .transact_items(slot)
    }

    /// Claims `candidate` for `request` under its lab token: the row's update and the
    /// token's new slot in one transaction, so a fleet never holds more than `max_active`
    /// under one token. A refusal says which condition failed.
    pub(super) async fn claim_under_token(
        &self,
        budget: &Budget,
        unread: &Sandbox,
        change: &Change,
        token: &TokenGrant,
    ) -> (Result<(), DynamoError>, Option<ClaimRefused>) {
        let items = self.row_update_item(unread, change).and_then(|row| {
            let slot = self.slot_item(
                &token.id,
                &change.row.sandbox_id,
                Some(token.max_active),
                change.row.updated_at,
            )?;
            Ok((row, slot))
        });
        let (row, slot) = match items {
            Ok(items) => items,
            Err(err) => return (Err(err.into()), None),
        };
        let transaction = self.row_and_slot(row, slot);
        let (sent, found) = self
            .calls
            .send_keeping_classified(
                budget,
                || transaction.clone().send(),
                refused_claim,
                transaction_verdict,
            )
            .await;
        (sent.map(drop), found)
    }

    /// Applies a decided `change` to `before`, answering the new row. A change that ends an
    /// allocation made under a lab token frees its slot on the token in the same
    /// transaction; any other is one conditional `UpdateItem`.
    pub(super) async fn send_change(
        &self,
        budget: &Budget,
        before: &Sandbox,
        change: &Change,
    ) -> Result<Sandbox, DynamoError> {
        let Some(token) = ends_token_hold(before, change) else {
            let update = self.apply_change(before, change);
            let output = self
                .calls
                .send(budget, || self.calls.wire.send(&update))
                .await?;
            return Ok(returned_row(output.attributes)?);
        };
        let row = self.row_update_item(before, change)?;
        let slot = self.slot_item(token, &before.sandbox_id, None, change.row.updated_at)?;
        let transaction = self.row_and_slot(row, slot);
        self.calls
            .send_classified(budget, || transaction.clone().send(), transaction_verdict)
            .await?;
        Ok(change.row.clone())
    }
}

impl DynamoStore {
    /// Records on its lab token that a restored `row` is held under it (what a claim's
    /// transaction would have recorded), so the token's cap counts it after a move. The
    /// export lists tokens before rows; a token missing from it leaves nothing to record.
    pub(super) async fn hold_restored_row(
        &self,
        budget: &Budget,
        row: &Sandbox,
    ) -> Result<(), StoreError> {
        let Some(token) = row.token_id.as_deref() else {
            return Ok(());
        };
        if row.status != SandboxStatus::Allocated {
            return Ok(());
        }
        let update = self
            .update_token(token)
            .update_expression("SET held.#sid = :at")
            .expression_attribute_names("#sid", row.sandbox_id.as_str())
            .expression_attribute_values(":at", n(row.allocated_at.unwrap_or(row.updated_at)));
        match self
            .calls
            .send(budget, || self.calls.wire.send(&update))
            .await
        {
            Ok(_) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }
}

/// Which item of a refused claim transaction failed its condition: the row (first) or the
/// token's slot (second).
fn refused_claim(err: &TransactWriteItemsError) -> Option<ClaimRefused> {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = err else {
        return None;
    };
    let failed = |reason: &aws_sdk_dynamodb::types::CancellationReason| {
        reason.code() == Some("ConditionalCheckFailed")
    };
    let reasons = cancelled.cancellation_reasons();
    if let Some(row) = reasons.first().filter(|reason| failed(reason)) {
        return Some(ClaimRefused::Row(
            row.item()
                .and_then(|item| Sandbox::try_from(item).ok())
                .map(Box::new),
        ));
    }
    reasons
        .get(1)
        .filter(|reason| failed(reason))
        .map(|_| ClaimRefused::Cap)
}
