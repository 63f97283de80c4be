//! What the auditor reads and keeps on the shared table — the handed-out rows, the
//! tombstones' ids, the last listing a sync applied, the last report — and the admins'
//! action log (one partition, `PK = "ACTIONS"`, sorted by time: admin writes are rare).
//!
//! Rule: an audit reads one pass over `StatusIndex` for the three statuses a handed-out,
//! undeleted row can be in, the tombstones' ids from the keys-only `StatusNameIndex`, and
//! the listing record, each page under the store's call budget. The records are additive
//! items with no `status` and no index key (docs/dynamodb.md): the listing is a head item
//! naming its generation and that generation's parts (at most [`IDS_PER_PART`] ids each,
//! so any listing fits DynamoDB's 400 KB items), which expire a week after they were
//! written, so an abandoned generation needs no clean-up.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::error::DynamoError;
use super::item::{AttributeValuesExt, Item, n, s};
use crate::domain::SandboxStatus;
use crate::domain::actions::{ActionPage, AdminAction};
use crate::domain::audit::{AuditFacts, AuditReport, ListingSnapshot};
use crate::domain::time::EpochSecs;
use crate::store::{StoreError, decode_action_cursor, encode_action_cursor, new_action_key};

/// Partition key of the listing's head item (its sort key is `LISTING`).
const LISTING_HEAD: &str = "LISTING#last";
/// Partition key prefix of a listing generation's parts.
const LISTING_PARTS: &str = "LISTING#";
/// Partition key of the action log; each entry's sort key is its `action_key`.
pub(super) const ACTIONS: &str = "ACTIONS";
/// Partition key of the last audit's report (its sort key is `AUDIT`).
const AUDIT_HEAD: &str = "AUDIT#last";
/// Ids per listing part: about 10 bytes each, far below the 400 KB item limit.
const IDS_PER_PART: usize = 20_000;
/// How long a listing part is kept: a sync writes a new generation every interval.
const PART_TTL_SECS: i64 = 7 * 86_400;

/// An item of this module: its keys, and a `sandbox_id` naming no sandbox (the Python
/// service's sync reads that attribute from every item, as from the job items).
fn record_item(pk: &str, sk: &str) -> Item {
    HashMap::from([
        ("PK".to_owned(), s(pk)),
        ("SK".to_owned(), s(sk)),
        ("sandbox_id".to_owned(), s(pk)),
    ])
}

/// The action-log item of `action`, under `key`.
pub(super) fn action_item(key: &str, action: &AdminAction) -> Result<Item, StoreError> {
    let json = serde_json::to_string(action).map_err(|err| StoreError::Internal(Box::new(err)))?;
    let mut item = record_item(ACTIONS, key);
    item.insert("action".to_owned(), AttributeValue::S(json));
    Ok(item)
}

/// The entry an action-log item holds.
pub(super) fn action_of(item: &Item) -> Result<AdminAction, StoreError> {
    serde_json::from_str(item.text("action").unwrap_or_default())
        .map_err(|err| StoreError::Internal(Box::new(err)))
}

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("PK".to_owned(), s(pk)), ("SK".to_owned(), s(sk))])
}

impl DynamoStore {
    /// Keeps `listing` as the last complete listing a sync applied: its parts under a new
    /// generation, then the head that names it, so a reader sees a whole listing or the
    /// one before.
    pub(super) async fn record_listing(&self, listing: &ListingSnapshot) -> Result<(), StoreError> {
        let budget = self.calls.budget();
        let generation = uuid::Uuid::new_v4().simple().to_string();
        let chunks: Vec<&[String]> = listing.ids.chunks(IDS_PER_PART).collect();
        for (index, ids) in chunks.iter().enumerate() {
            let mut item = record_item(
                &format!("{LISTING_PARTS}{generation}"),
                &format!("PART#{index:05}"),
            );
            item.insert("ids".to_owned(), s(ids.join(",")));
            item.insert("ttl".to_owned(), n(listing.taken_at + PART_TTL_SECS));
            self.put_record(&budget, item).await?;
        }
        let mut head = record_item(LISTING_HEAD, "LISTING");
        head.insert("taken_at".to_owned(), n(listing.taken_at));
        head.insert("generation".to_owned(), s(&generation));
        head.insert("parts".to_owned(), n(chunks.len()));
        self.put_record(&budget, head).await
    }

    /// See [`crate::store::LifecycleStore::audit_facts`].
    pub(super) async fn read_audit_facts(&self) -> Result<AuditFacts, StoreError> {
        let mut facts = AuditFacts::default();
        for status in [
            SandboxStatus::Allocated,
            SandboxStatus::PendingDeletion,
            SandboxStatus::DeletionFailed,
        ] {
            facts.held.extend(self.rows_in_status(status).await?);
        }
        facts.deleted_ids = self.ids_in_status(SandboxStatus::Deleted).await?;
        facts.listing = self.last_listing().await?;
        Ok(facts)
    }

    /// The last listing a sync recorded, if its head and every part are there.
    async fn last_listing(&self) -> Result<Option<ListingSnapshot>, StoreError> {
        let budget = self.calls.budget();
        let Some(head) = self
            .consistent_item(&budget, key(LISTING_HEAD, "LISTING"))
            .await?
        else {
            return Ok(None);
        };
        let (Some(taken_at), Some(generation), Some(parts)) = (
            head.integer("taken_at"),
            head.text("generation"),
            head.integer("parts"),
        ) else {
            return Err(StoreError::Internal(
                "the listing record is unreadable".into(),
            ));
        };
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(format!("{LISTING_PARTS}{generation}")))
            .consistent_read(true);
        let items = self.query_every_page(&budget, query).await?;
        if i64::try_from(items.len()).ok() != Some(parts) {
            // A part expired (no sync for a week): no listing is better than half of one.
            return Ok(None);
        }
        let mut ids = Vec::new();
        for item in &items {
            ids.extend(
                item.text("ids")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(Some(ListingSnapshot {
            taken_at: EpochSecs::new(taken_at),
            ids,
        }))
    }

    /// See [`crate::store::LifecycleStore::save_audit`].
    pub(super) async fn keep_audit(&self, report: &AuditReport) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(report).map_err(|err| StoreError::Internal(Box::new(err)))?;
        let mut item = record_item(AUDIT_HEAD, "AUDIT");
        item.insert("report".to_owned(), AttributeValue::S(json));
        self.put_record(&self.calls.budget(), item).await
    }

    /// See [`crate::store::LifecycleStore::last_audit`].
    pub(super) async fn read_last_audit(&self) -> Result<Option<AuditReport>, StoreError> {
        let Some(item) = self
            .consistent_item(&self.calls.budget(), key(AUDIT_HEAD, "AUDIT"))
            .await?
        else {
            return Ok(None);
        };
        let report = item.text("report").unwrap_or_default();
        serde_json::from_str(report)
            .map(Some)
            .map_err(|err| StoreError::Internal(Box::new(err)))
    }

    /// See [`crate::store::ActionLog::record_action`].
    pub(super) async fn append_action(&self, action: &AdminAction) -> Result<(), StoreError> {
        let item = action_item(&new_action_key(action), action)?;
        // Append-only: never overwrite an entry (the key is unique; this makes sure).
        let put = self
            .client()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)");
        self.calls
            .send(&self.calls.budget(), || self.calls.wire.send(&put))
            .await
            .map(drop)
            .map_err(DynamoError::into_store_error)
    }

    /// See [`crate::store::ActionLog::actions`].
    pub(super) async fn action_page(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<ActionPage, StoreError> {
        let before = cursor.map(decode_action_cursor).transpose()?;
        let mut query = self
            .client()
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(ACTIONS))
            .scan_index_forward(false)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX));
        if let Some(key) = &before {
            query = query.set_exclusive_start_key(Some(HashMap::from([
                ("PK".to_owned(), s(ACTIONS)),
                ("SK".to_owned(), s(key)),
            ])));
        }
        let page = self
            .calls
            .send(&self.calls.budget(), || self.calls.wire.send(&query))
            .await
            .map_err(DynamoError::into_store_error)?;
        let items = page.items();
        let mut actions = Vec::new();
        for item in items.iter().take(limit) {
            actions.push(action_of(item)?);
        }
        let next = (items.len() > limit)
            .then(|| items.get(limit - 1).and_then(|item| item.text("SK")))
            .flatten()
            .map(encode_action_cursor);
        Ok(ActionPage { actions, next })
    }

    /// Puts `item` (a record of this module's, or a cordon), unconditionally.
    pub(super) async fn put_record(
        &self,
        budget: &super::calls::Budget,
        item: Item,
    ) -> Result<(), StoreError> {
        let put = self
            .client()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        self.calls
            .send(budget, || self.calls.wire.send(&put))
            .await
            .map(drop)
            .map_err(DynamoError::into_store_error)
    }
}
