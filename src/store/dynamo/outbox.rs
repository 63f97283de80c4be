//! The webhook outbox on the shared table (docs/webhooks.md).
//!
//! Rule: a row change's event rides on the change's own `UpdateItem` (`update.rs`): it is
//! appended to the row's `pending_events` and the row enters the sparse `OutboxIndex`.
//! Fanning out reads each such row consistently, writes one delivery item per endpoint
//! that wants an event (`PK = "DELIVERY#<endpoint>"`, `SK = "<event time>#<event id>"`),
//! then takes the events it moved off the row, conditional on the list still starting
//! with them, and the row leaves the index once its list is empty.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::calls::Budget;
use super::error::DynamoError;
use super::item::{AttributeValuesExt, Item, s};
use super::schema::{OUTBOX_INDEX, OUTBOX_SHARDS};
use super::update::{OUTBOX, OUTBOX_AT, PENDING_EVENTS};
use crate::domain::Sandbox;
use crate::domain::time::{EpochMillis, EpochSecs};
use crate::domain::webhooks::WebhookEndpoint;
use crate::domain::webhooks::outbox::{Delivery, OutboxEvent, Pending, sequence};
use crate::store::StoreError;

/// What every delivery item's partition key starts with (then the endpoint id).
pub(super) const DELIVERY_PREFIX: &str = "DELIVERY#";

fn internal(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Internal(Box::new(err))
}

pub(super) fn delivery_item(delivery: &Delivery) -> Result<Item, StoreError> {
    let json = serde_json::to_string(delivery).map_err(internal)?;
    Ok(HashMap::from([
        (
            "PK".to_owned(),
            s(format!("{DELIVERY_PREFIX}{}", delivery.endpoint)),
        ),
        (
            "SK".to_owned(),
            s(format!(
                "{:012}#{}",
                delivery.event.at.get().max(0),
                delivery.event.id
            )),
        ),
        ("sandbox_id".to_owned(), s("DELIVERY")),
        ("delivery".to_owned(), AttributeValue::S(json)),
    ]))
}

pub(super) fn delivery_of(item: &Item) -> Result<Delivery, StoreError> {
    serde_json::from_str(item.text("delivery").unwrap_or_default()).map_err(internal)
}

/// What every event item's partition key starts with (an event about no sandbox).
const EVENT_PREFIX: &str = "EVENT#";
/// The sort key of event items.
const EVENT_SORT_KEY: &str = "EVENT";

/// The pending events an item holds, as stored (JSON strings) and decoded.
fn pending_of(item: &Item) -> Result<Vec<(AttributeValue, Pending)>, StoreError> {
    let Some(AttributeValue::L(events)) = item.get(PENDING_EVENTS) else {
        return Ok(Vec::new());
    };
    events
        .iter()
        .map(|value| match value {
            AttributeValue::S(json) => serde_json::from_str(json)
                .map(|announced| (value.clone(), announced))
                .map_err(internal),
            _ => Err(StoreError::Internal(
                "a pending event is not a string".into(),
            )),
        })
        .collect()
}

impl DynamoStore {
    /// The query of one outbox index shard.
    fn outbox_shard_query(
        &self,
        shard: u32,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client()
            .query()
            .table_name(&self.table)
            .index_name(OUTBOX_INDEX)
            .key_condition_expression("#o = :shard")
            .expression_attribute_names("#o", OUTBOX)
            .expression_attribute_values(":shard", s(format!("p#{shard}")))
    }

    /// The keys (`PK`, `SK`) of up to `limit` items with pending events, oldest first.
    async fn rows_with_events(
        &self,
        budget: &Budget,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        let mut found = Vec::new();
        for shard in 0..OUTBOX_SHARDS {
            let query = self
                .outbox_shard_query(shard)
                .limit(i32::try_from(limit).unwrap_or(i32::MAX));
            let page = self
                .calls
                .send(budget, || self.calls.wire.send(&query))
                .await
                .map_err(DynamoError::into_store_error)?;
            for item in page.items() {
                if let (Some(pk), Some(sk), Some(at)) =
                    (item.text("PK"), item.text("SK"), item.integer(OUTBOX_AT))
                {
                    found.push((at, pk.to_owned(), sk.to_owned()));
                }
            }
        }
        found.sort();
        found.truncate(limit);
        Ok(found)
    }

    /// See [`crate::store::OutboxStore::fan_out`].
    pub(super) async fn fan_out_events(
        &self,
        endpoints: &[WebhookEndpoint],
        limit: usize,
        now: EpochMillis,
    ) -> Result<u64, StoreError> {
        let budget = self.calls.budget();
        let mut moved = 0;
        let mut place = 0;
        for (_, pk, sk) in self.rows_with_events(&budget, limit).await? {
            let key = HashMap::from([("PK".to_owned(), s(&pk)), ("SK".to_owned(), s(&sk))]);
            let Some(item) = self.consistent_item(&budget, key.clone()).await? else {
                continue;
            };
            let pending = pending_of(&item)?;
            let row = Sandbox::try_from(&item).ok();
            for (_, entry) in &pending {
                let event = entry.event(row.as_ref()).map_err(internal)?;
                let sequence = sequence(now, place);
                place += 1;
                let receiving = endpoints
                    .iter()
                    .filter(|e| e.receives(entry.kind(), entry.at()));
                for endpoint in receiving {
                    let put = self
                        .client()
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(delivery_item(&Delivery::first(
                            &endpoint.id,
                            &event,
                            sequence,
                        ))?))
                        // A fan-out repeated after a crash must not reset a delivery's retries.
                        .condition_expression("attribute_not_exists(PK)");
                    match self
                        .calls
                        .send(&budget, || self.calls.wire.send(&put))
                        .await
                    {
                        Ok(_) | Err(DynamoError::Conflict) => {}
                        Err(DynamoError::Store(err)) => return Err(err),
                    }
                }
            }
            if pk.starts_with(EVENT_PREFIX) {
                // An event item holds only its event: it goes once fanned out.
                self.delete_partition_item(&pk, &sk).await?;
            } else {
                self.take_events_off(&budget, key, &pending).await?;
            }
            moved += pending.len() as u64;
        }
        Ok(moved)
    }

    /// See [`crate::store::OutboxStore::announce`]: an item of its own, in the outbox index.
    pub(super) async fn put_event(&self, event: &OutboxEvent) -> Result<(), StoreError> {
        let json = serde_json::to_string(&Pending::Event(event.clone())).map_err(internal)?;
        let item = HashMap::from([
            ("PK".to_owned(), s(format!("{EVENT_PREFIX}{}", event.id))),
            ("SK".to_owned(), s(EVENT_SORT_KEY)),
            ("sandbox_id".to_owned(), s(EVENT_SORT_KEY)),
            (
                PENDING_EVENTS.to_owned(),
                AttributeValue::L(vec![AttributeValue::S(json)]),
            ),
            (OUTBOX.to_owned(), s(super::update::outbox_shard(&event.id))),
            (OUTBOX_AT.to_owned(), super::item::n(event.at)),
        ]);
        let put = self
            .client()
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)");
        match self
            .calls
            .send(&self.calls.budget(), || self.calls.wire.send(&put))
            .await
        {
            Ok(_) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// Removes the `taken` events from the head of the row's list: the whole list and the
    /// index key when nothing was appended meanwhile, else only those.
    async fn take_events_off(
        &self,
        budget: &Budget,
        key: Item,
        taken: &[(AttributeValue, Pending)],
    ) -> Result<(), StoreError> {
        let Some((first, _)) = taken.first() else {
            return Ok(());
        };
        let count = super::item::n(taken.len());
        let all = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .update_expression("REMOVE #e, #o, #oa")
            .condition_expression("size(#e) = :n AND #e[0] = :first")
            .expression_attribute_names("#e", PENDING_EVENTS)
            .expression_attribute_names("#o", OUTBOX)
            .expression_attribute_names("#oa", OUTBOX_AT)
            .expression_attribute_values(":n", count.clone())
            .expression_attribute_values(":first", first.clone());
        match self.calls.send(budget, || self.calls.wire.send(&all)).await {
            Ok(_) => return Ok(()),
            Err(DynamoError::Conflict) => {}
            Err(DynamoError::Store(err)) => return Err(err),
        }
        // More were appended: remove only the head that was moved.
        let heads: Vec<String> = (0..taken.len()).map(|i| format!("#e[{i}]")).collect();
        let head = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .update_expression(format!("REMOVE {}", heads.join(", ")))
            .condition_expression("size(#e) > :n AND #e[0] = :first")
            .expression_attribute_names("#e", PENDING_EVENTS)
            .expression_attribute_values(":n", count)
            .expression_attribute_values(":first", first.clone());
        match self
            .calls
            .send(budget, || self.calls.wire.send(&head))
            .await
        {
            // Not as read any more: the next fan-out reads it again (and re-puts nothing
            // that exists).
            Ok(_) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::OutboxStore::deliveries`].
    pub(super) async fn read_deliveries(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(format!("{DELIVERY_PREFIX}{endpoint}")))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        let page = self
            .calls
            .send(&self.calls.budget(), || self.calls.wire.send(&query))
            .await
            .map_err(DynamoError::into_store_error)?;
        page.items().iter().map(delivery_of).collect()
    }

    /// See [`crate::store::OutboxStore::settle_delivery`].
    pub(super) async fn write_settled(
        &self,
        delivery: &Delivery,
        next: Option<&Delivery>,
    ) -> Result<(), StoreError> {
        let budget = self.calls.budget();
        let item = delivery_item(delivery)?;
        let key = HashMap::from([
            ("PK".to_owned(), item["PK"].clone()),
            ("SK".to_owned(), item["SK"].clone()),
        ]);
        let sent = match next {
            None => {
                let delete = self
                    .client()
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key));
                self.calls
                    .send(&budget, || self.calls.wire.send(&delete))
                    .await
                    .map(drop)
            }
            Some(next) => {
                let put = self
                    .client()
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(delivery_item(next)?))
                    // An endpoint removed meanwhile took the delivery along.
                    .condition_expression("attribute_exists(PK)");
                self.calls
                    .send(&budget, || self.calls.wire.send(&put))
                    .await
                    .map(drop)
            }
        };
        match sent {
            Ok(()) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::OutboxStore::outbox_backlog`]: rows with pending events (not
    /// events: counting those would read every row), and the oldest one's first event.
    pub(super) async fn count_backlog(&self) -> Result<(u64, Option<EpochSecs>), StoreError> {
        let budget = self.calls.budget();
        let mut rows = 0;
        let mut oldest: Option<i64> = None;
        for shard in 0..OUTBOX_SHARDS {
            let query = self.outbox_shard_query(shard);
            let first = query.clone().limit(1);
            let page = self
                .calls
                .send(&budget, || self.calls.wire.send(&first))
                .await
                .map_err(DynamoError::into_store_error)?;
            if let Some(at) = page
                .items()
                .first()
                .and_then(|item| item.integer(OUTBOX_AT))
            {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
                rows += self.count(&budget, query, u64::MAX).await?;
            }
        }
        Ok((rows, oldest.map(EpochSecs::new)))
    }

    /// See [`crate::store::OutboxStore::drop_deliveries`].
    pub(super) async fn delete_deliveries(&self, endpoint: &str) -> Result<u64, StoreError> {
        let budget = self.calls.budget();
        let pk = format!("{DELIVERY_PREFIX}{endpoint}");
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .projection_expression("PK, SK");
        let mut dropped = 0;
        for item in self.query_every_page(&budget, query).await? {
            let Some(sk) = item.text("SK") else { continue };
            if self.delete_partition_item(&pk, sk).await?.is_some() {
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}
