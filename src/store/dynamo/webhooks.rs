//! Webhook endpoints on the shared table: one item each under `PK = "WEBHOOK"` (additive,
//! no `status`), the endpoint (its secrets included) and its delivery state in two
//! attributes, so a rotation and a delivery's record each write only theirs.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::error::DynamoError;
use super::item::{AttributeValuesExt, Item, s};
use crate::domain::webhooks::{DeliveryState, WebhookEndpoint, WebhookUse};
use crate::store::StoreError;

/// The partition of the endpoint items; each one's sort key is its id.
pub(super) const WEBHOOKS: &str = "WEBHOOK";

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
    /// See [`crate::store::WebhookStore::add_webhook`].
    pub(super) async fn put_webhook(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
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
