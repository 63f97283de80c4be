//! The allocation key's own item, `ALLOC#<key>`: writing it first (write 1), moving it off
//! a dead sandbox, and reading it back.

use aws_sdk_dynamodb::types::AttributeValue;

use super::Race;
use crate::store::StoreError;
use crate::store::dynamo::DynamoStore;
use crate::store::dynamo::calls::Budget;
use crate::store::dynamo::error::{DynamoError, internal};
use crate::store::dynamo::item::{AttributeValuesExt, Item, allocation_key, n, s};

/// The key item as read: the sandbox it names and the request that pointed it there.
pub(super) struct KeyItem {
    /// The sandbox the key may claim.
    pub(super) sandbox_id: String,
    /// The request that last pointed the key there.
    pub(super) request_id: Option<String>,
}

impl KeyItem {
    /// Reads the key item stored at `key`.
    pub(super) fn parse(key: &str, item: &Item) -> Result<Self, StoreError> {
        match item.get("sandbox_id") {
            Some(AttributeValue::S(id)) => Ok(Self {
                sandbox_id: id.clone(),
                request_id: item.text("request_id").map(str::to_owned),
            }),
            _ => Err(internal(format!(
                "allocation key item {key:?} names no sandbox"
            ))),
        }
    }

    /// Whether the request `me` last pointed the key.
    pub(super) fn made_by(&self, me: &str) -> bool {
        self.request_id.as_deref() == Some(me)
    }
}

impl DynamoStore {
    /// Write 1: the key item naming `sandbox_id` and this call, only if the key has none.
    /// A failed condition whose item names this call is our own earlier attempt: done.
    pub(super) async fn create_key(
        &self,
        budget: &Budget,
        race: &Race<'_>,
        sandbox_id: &str,
    ) -> Result<(), DynamoError> {
        let mut item: Item = allocation_key(&race.key);
        item.insert("sandbox_id".into(), s(sandbox_id));
        item.insert("request_id".into(), s(&race.me));
        item.insert("created_at".into(), n(race.request.now));
        item.insert("updated_at".into(), n(race.request.now));
        let (sent, returned) = self.put_new_item(budget, item).await;
        match sent {
            Ok(_) => Ok(()),
            Err(DynamoError::Conflict) => {
                let current = match returned {
                    Some(item) => Some(KeyItem::parse(&race.key, &item)?),
                    None => self.read_key(budget, &race.key).await?,
                };
                match current {
                    Some(current) if current.made_by(&race.me) => Ok(()),
                    _ => Err(DynamoError::Conflict),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Moves the key item from a dead sandbox to `next` (and to this call), only if it
    /// still names `dead`. A failed condition that finds it already naming `next` for this
    /// call is our own earlier attempt: done.
    pub(super) async fn repoint_key(
        &self,
        budget: &Budget,
        race: &Race<'_>,
        dead: &str,
        next: &str,
    ) -> Result<(), DynamoError> {
        let update = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(allocation_key(&race.key)))
            .update_expression("SET sandbox_id = :next, request_id = :me, updated_at = :now")
            .condition_expression("sandbox_id = :dead")
            .expression_attribute_values(":next", s(next))
            .expression_attribute_values(":dead", s(dead))
            .expression_attribute_values(":me", s(&race.me))
            .expression_attribute_values(":now", n(race.request.now));
        match self
            .calls
            .send(budget, || self.calls.wire.send(&update))
            .await
        {
            Ok(_) => Ok(()),
            Err(DynamoError::Conflict) => match self.read_key(budget, &race.key).await? {
                Some(current) if current.made_by(&race.me) && current.sandbox_id == next => Ok(()),
                _ => Err(DynamoError::Conflict),
            },
            Err(err) => Err(err),
        }
    }

    /// Deletes the key item if it still names `sandbox_id` for this call (whose allocation
    /// was refused). Best effort: a key item left behind only turns the key's next 201
    /// into a 200.
    pub(super) async fn drop_refused_key(
        &self,
        budget: &Budget,
        race: &Race<'_>,
        sandbox_id: &str,
    ) {
        let delete = self
            .client()
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(allocation_key(&race.key)))
            .condition_expression("sandbox_id = :id AND request_id = :me")
            .expression_attribute_values(":id", s(sandbox_id))
            .expression_attribute_values(":me", s(&race.me));
        if let Err(DynamoError::Store(err)) = self
            .calls
            .send(budget, || self.calls.wire.send(&delete))
            .await
        {
            tracing::warn!(error = ?err, "could not drop a refused allocation's key item");
        }
    }

    /// The key item, read consistently.
    pub(super) async fn read_key(
        &self,
        budget: &Budget,
        key: &str,
    ) -> Result<Option<KeyItem>, StoreError> {
        self.consistent_item(budget, allocation_key(key))
            .await?
            .map(|item| KeyItem::parse(key, &item))
            .transpose()
    }
}
