//! Webhook endpoints on the shared table: one item each under `PK = "WEBHOOK"` (additive,
//! no `status`), the endpoint (its secrets included) and its delivery state in two
//! attributes, so a rotation and a delivery's record each write only theirs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::calls::Calls;
use super::error::DynamoError;
use super::item::{AttributeValuesExt, Item, s};
use crate::domain::webhooks::{DeliveryState, WebhookEndpoint, WebhookUse};
use crate::store::StoreError;

/// The partition of the endpoint items; each one's sort key is its id.
pub(super) const WEBHOOKS: &str = "WEBHOOK";

/// How long this instance trusts a reading of the table that found no endpoint. An
/// endpoint registered on another instance is announced to from at most this long after.
pub(super) const ENDPOINTS_RECHECK: Duration = Duration::from_secs(5);

/// Whether the fleet has any webhook endpoint, as this instance last read the table.
#[derive(Debug, Default)]
pub(super) struct EndpointsSeen {
    /// Whether a read found any, and when that read started (a registration here counts
    /// as a read that found one).
    last: Mutex<Option<(bool, Instant)>>,
    /// A read is in flight.
    reading: AtomicBool,
}

impl EndpointsSeen {
    /// Keeps what was seen at `at` unless something newer is known already.
    fn saw(&self, any: bool, at: Instant) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|(_, known)| known <= at) {
            *last = Some((any, at));
        }
    }
}

/// Whether the table holds any webhook endpoint (one consistent key-only read).
async fn any_webhook(calls: &Calls, table: &str) -> Result<bool, StoreError> {
    let query = calls
        .client
        .query()
        .table_name(table)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", s(WEBHOOKS))
        .projection_expression("PK")
        .consistent_read(true)
        .limit(1);
    let page = calls
        .send(&calls.budget(), || calls.wire.send(&query))
        .await
        .map_err(DynamoError::into_store_error)?;
    Ok(!page.items().is_empty())
}

fn json<T: serde::Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(value)
        .map(AttributeValue::S)
        .map_err(|err| StoreError::Internal(Box::new(err)))
}

pub(super) fn webhook_use_of(item: &Item) -> Result<WebhookUse, StoreError> {
    let decode = |name: &str| item.text(name).unwrap_or_default();
    let endpoint: WebhookEndpoint = serde_json::from_str(decode("endpoint"))
        .map_err(|err| StoreError::Internal(Box::new(err)))?;
    let state = match item.text("state") {
        Some(text) => {
            serde_json::from_str(text).map_err(|err| StoreError::Internal(Box::new(err)))?
        }
        None => DeliveryState::default(),
    };
    Ok(WebhookUse { endpoint, state })
}

/// The item of a new `endpoint`.
pub(super) fn webhook_item(endpoint: &WebhookEndpoint) -> Result<Item, StoreError> {
    Ok(HashMap::from([
        ("PK".to_owned(), s(WEBHOOKS)),
        ("SK".to_owned(), s(&endpoint.id)),
        ("sandbox_id".to_owned(), s(WEBHOOKS)),
        ("endpoint".to_owned(), json(endpoint)?),
    ]))
}

/// The item of `endpoint` with its delivery `state` (a restore).
pub(super) fn webhook_item_with(
    endpoint: &WebhookEndpoint,
    state: &DeliveryState,
) -> Result<Item, StoreError> {
    let mut item = webhook_item(endpoint)?;
    item.insert("state".to_owned(), json(state)?);
    Ok(item)
}

impl DynamoStore {
    /// Whether a row change should carry the event it announces. Not while this instance
    /// read, less than [`ENDPOINTS_RECHECK`] ago, that no endpoint is registered: a fan-out
    /// would drop the event, and writing it costs the change a write to the outbox index
    /// and the dispatcher a write to clear it (about a third of DynamoDB Local's throughput
    /// in `bench`). The reading is renewed in the background at half that age; until the
    /// first one, and whenever it is too old, events are written.
    pub(super) fn announcing(&self) -> bool {
        let last = *self
            .endpoints_seen
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let age = last.map(|(any, at)| (any, at.elapsed()));
        if age.is_none_or(|(_, age)| age >= ENDPOINTS_RECHECK / 2) {
            self.read_endpoints_ahead();
        }
        !matches!(age, Some((false, age)) if age < ENDPOINTS_RECHECK)
    }

    /// Reads in the background whether any endpoint is registered, unless a read is in
    /// flight already.
    fn read_endpoints_ahead(&self) {
        let seen = Arc::clone(&self.endpoints_seen);
        if seen.reading.swap(true, Ordering::AcqRel) {
            return;
        }
        let (calls, table) = (Arc::clone(&self.calls), self.table.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            // A failed read leaves the last reading to age: events are then written.
            if let Ok(any) = any_webhook(&calls, &table).await {
                seen.saw(any, started);
            }
            seen.reading.store(false, Ordering::Release);
        });
    }

    /// See [`crate::store::WebhookStore::add_webhook`].
    pub(super) async fn put_webhook(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        // Before the write: a change made here from now on announces its event.
        self.endpoints_seen.saw(true, Instant::now());
        self.put_record(&self.calls.budget(), webhook_item(endpoint)?)
            .await
    }

    /// See [`crate::store::WebhookStore::webhooks`].
    pub(super) async fn read_webhooks(&self) -> Result<Vec<WebhookUse>, StoreError> {
        self.partition_items(WEBHOOKS)
            .await?
            .iter()
            .map(webhook_use_of)
            .collect()
    }

    /// Sets one attribute of the endpoint `id`, if it exists; whether it did.
    async fn set_webhook_attribute(
        &self,
        id: &str,
        name: &str,
        value: AttributeValue,
    ) -> Result<bool, StoreError> {
        let update = self
            .client()
            .update_item()
            .table_name(&self.table)
            .key("PK", s(WEBHOOKS))
            .key("SK", s(id))
            .update_expression("SET #a = :v")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":v", value);
        match self
            .calls
            .send(&self.calls.budget(), || self.calls.wire.send(&update))
            .await
        {
            Ok(_) => Ok(true),
            Err(DynamoError::Conflict) => Ok(false),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::WebhookStore::replace_webhook`].
    pub(super) async fn rewrite_webhook(
        &self,
        endpoint: &WebhookEndpoint,
    ) -> Result<bool, StoreError> {
        self.set_webhook_attribute(&endpoint.id, "endpoint", json(endpoint)?)
            .await
    }

    /// See [`crate::store::WebhookStore::remove_webhook`].
    pub(super) async fn delete_webhook(
        &self,
        id: &str,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        Ok(self
            .delete_partition_item(WEBHOOKS, id)
            .await?
            .as_ref()
            .map(webhook_use_of)
            .transpose()?
            .map(|used| used.endpoint))
    }

    /// See [`crate::store::WebhookStore::record_delivery`].
    pub(super) async fn write_delivery_state(
        &self,
        id: &str,
        state: &DeliveryState,
    ) -> Result<(), StoreError> {
        self.set_webhook_attribute(id, "state", json(state)?)
            .await
            .map(drop)
    }
}
