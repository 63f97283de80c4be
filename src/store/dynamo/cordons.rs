//! Cordons on the shared table: one item each under `PK = "CORDON"` (additive, no
//! `status`, a `sandbox_id` naming no sandbox, as the job items), read consistently.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::DynamoStore;
use super::error::DynamoError;
use super::item::{AttributeValuesExt, Item, s};
use crate::domain::cordon::Cordon;
use crate::store::StoreError;

/// The partition of the cordon items; each one's sort key is its id.
pub(super) const CORDONS: &str = "CORDON";

fn key(id: &str) -> Item {
    HashMap::from([("PK".to_owned(), s(CORDONS)), ("SK".to_owned(), s(id))])
}

pub(super) fn cordon_of(item: &Item) -> Result<Cordon, StoreError> {
    serde_json::from_str(item.text("cordon").unwrap_or_default())
        .map_err(|err| StoreError::Internal(Box::new(err)))
}

/// The item of `cordon`.
pub(super) fn cordon_item(cordon: &Cordon) -> Result<Item, StoreError> {
    let json = serde_json::to_string(cordon).map_err(|err| StoreError::Internal(Box::new(err)))?;
    let mut item = key(&cordon.id);
    item.insert("sandbox_id".to_owned(), s(CORDONS));
    item.insert("cordon".to_owned(), AttributeValue::S(json));
    Ok(item)
}

impl DynamoStore {
    /// Every item under `partition` (the cordons, the reservations), read consistently.
    pub(super) async fn partition_items(&self, partition: &str) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", s(partition))
            .consistent_read(true);
        self.query_every_page(&self.calls.budget(), query).await
    }

    /// Deletes the item `sort_key` under `partition`; what it was, if there was one.
    pub(super) async fn delete_partition_item(
        &self,
        partition: &str,
        sort_key: &str,
    ) -> Result<Option<Item>, StoreError> {
        let delete = self
            .client()
            .delete_item()
            .table_name(&self.table)
            .key("PK", s(partition))
            .key("SK", s(sort_key))
            .return_values(ReturnValue::AllOld);
        let deleted = self
            .calls
            .send(&self.calls.budget(), || self.calls.wire.send(&delete))
            .await
            .map_err(DynamoError::into_store_error)?;
        Ok(deleted.attributes)
    }

    /// See [`crate::store::AdminStore::cordons`].
    pub(super) async fn read_cordons(&self) -> Result<Vec<Cordon>, StoreError> {
        self.partition_items(CORDONS)
            .await?
            .iter()
            .map(cordon_of)
            .collect()
    }

    /// See [`crate::store::AdminStore::add_cordon`].
    pub(super) async fn put_cordon(&self, cordon: &Cordon) -> Result<(), StoreError> {
        self.put_record(&self.calls.budget(), cordon_item(cordon)?)
            .await
    }

    /// See [`crate::store::AdminStore::remove_cordon`].
    pub(super) async fn delete_cordon(&self, id: &str) -> Result<Option<Cordon>, StoreError> {
        self.delete_partition_item(CORDONS, id)
            .await?
            .as_ref()
            .map(cordon_of)
            .transpose()
    }
}
