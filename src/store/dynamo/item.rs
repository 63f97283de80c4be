//! Items of the shared table (docs/dynamodb.md) and their conversion to and from rows.
//!
//! Rule: read leniently (rows the Python service wrote may lack attributes or carry numbers
//! as strings), write exactly the table layout's names and types (docs/dynamodb.md), and never write an empty
//! string or a null into an attribute that keys a GSI.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::time::EpochSecs;
use crate::domain::{Sandbox, SandboxStatus};

mod niosxaas;
mod used;

pub(crate) use self::niosxaas::niosxaas_history_key;
use self::niosxaas::{niosxaas_attributes, read_niosxaas};
pub(crate) use self::used::used_key;

/// An item as the SDK passes it around.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Partition key prefix of sandbox rows; anything else is not a sandbox.
pub(crate) const SANDBOX_PREFIX: &str = "SBX#";
/// Sort key of sandbox rows.
pub(crate) const SANDBOX_SORT_KEY: &str = "META";
/// Partition key prefix of allocation-key items (additive, see docs/dynamodb.md).
pub(crate) const ALLOCATION_PREFIX: &str = "ALLOC#";
/// Sort key of allocation-key items.
pub(crate) const ALLOCATION_SORT_KEY: &str = "ALLOC";
/// Partition key prefix of NIOSXaaS history items (docs/dynamodb.md).
pub(crate) const NIOSXAAS_PREFIX: &str = "NIOSXAAS#";
/// Sort key of NIOSXaaS history items.
pub(crate) const NIOSXAAS_SORT_KEY: &str = "CLEANUP";
/// Partition key prefix of used-account markers (additive, see docs/dynamodb.md).
pub(crate) const USED_PREFIX: &str = "USED#";
/// Sort key of used-account markers.
pub(crate) const USED_SORT_KEY: &str = "USED";

/// What a `reserved` row's `allocated_to_track` starts with: `TrackIndex` then lists a
/// reservation's rows (`reservation#<id>`), so allocation and the reservations job find
/// them with one query and no new index. No student key starts with it in practice, and
/// the row decoder never takes it for a holder.
pub(crate) const RESERVATION_TRACK_PREFIX: &str = "reservation#";

/// The `TrackIndex` key of the rows set aside for `reservation`.
pub(crate) fn reservation_track(reservation: &str) -> String {
    format!("{RESERVATION_TRACK_PREFIX}{reservation}")
}

/// Typed reads of item attributes.
pub(crate) trait AttributeValuesExt {
    /// A string attribute (`S`), or a number's text.
    fn text(&self, name: &str) -> Option<&str>;
    /// An integer from `N` (fractions truncated) or a numeric `S`; `None` when absent or not a number.
    fn integer(&self, name: &str) -> Option<i64>;
}

impl AttributeValuesExt for Item {
    fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            AttributeValue::S(text) | AttributeValue::N(text) => Some(text),
            _ => None,
        }
    }

    fn integer(&self, name: &str) -> Option<i64> {
        let raw = match self.get(name)? {
            AttributeValue::N(n) | AttributeValue::S(n) => n.trim(),
            _ => return None,
        };
        raw.parse::<i64>().ok().or_else(|| {
            let whole = raw.split('.').next()?;
            whole.parse::<i64>().ok()
        })
    }
}

/// Builds attribute values.
pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(crate) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The primary key of a sandbox row.
pub(crate) fn sandbox_key(id: &str) -> Item {
    HashMap::from([
        ("PK".to_owned(), s(format!("{SANDBOX_PREFIX}{id}"))),
        ("SK".to_owned(), s(SANDBOX_SORT_KEY)),
    ])
}

/// The primary key of an allocation-key item.
pub(crate) fn allocation_key(encoded: &str) -> Item {
    HashMap::from([
        ("PK".to_owned(), s(format!("{ALLOCATION_PREFIX}{encoded}"))),
        ("SK".to_owned(), s(ALLOCATION_SORT_KEY)),
    ])
}

/// The row a write returned (`ReturnValues`); a missing or unreadable one is an internal error.
pub(crate) fn returned_row(attributes: Option<Item>) -> Result<Sandbox, crate::store::StoreError> {
    Sandbox::try_from(&attributes.unwrap_or_default())
        .map_err(|err| crate::store::StoreError::Internal(Box::new(err)))
}

/// The item a conditional put was refused by (`ReturnValuesOnConditionCheckFailure::AllOld`),
/// if the table handed it back.
pub(crate) fn item_a_put_found(err: &PutItemError) -> Option<Item> {
    match err {
        PutItemError::ConditionalCheckFailedException(failed) => failed.item().cloned(),
        _ => None,
    }
}

/// The row a refused update found (`ReturnValuesOnConditionCheckFailure::AllOld`), if the
/// table handed it back.
pub(crate) fn row_found_by_update(err: &UpdateItemError) -> Option<Result<Sandbox, ItemError>> {
    match err {
        UpdateItemError::ConditionalCheckFailedException(failed) => {
            failed.item().map(Sandbox::try_from)
        }
        _ => None,
    }
}

/// Why an item is not a sandbox row this service can use.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// Not a sandbox row at all (e.g. a NIOSXaaS history item).
    #[error("item {0} is not a sandbox row")]
    NotASandbox(String),
    /// A sandbox row without a usable required attribute.
    #[error("sandbox row {pk} has no usable {attribute}")]
    Missing {
        /// The row's partition key.
        pk: String,
        /// The attribute.
        attribute: &'static str,
    },
}

impl TryFrom<&Item> for Sandbox {
    type Error = ItemError;

    fn try_from(item: &Item) -> Result<Self, ItemError> {
        let pk = item.text("PK").unwrap_or_default();
        let id_from_pk = pk
            .strip_prefix(SANDBOX_PREFIX)
            .ok_or_else(|| ItemError::NotASandbox(pk.to_owned()))?;
        let missing = |attribute| ItemError::Missing {
            pk: pk.to_owned(),
            attribute,
        };
        let text = |name: &str| item.text(name).filter(|v| !v.is_empty()).map(str::to_owned);
        let status = item
            .text("status")
            .and_then(|v| v.parse::<SandboxStatus>().ok())
            .ok_or_else(|| missing("status"))?;
        let allocated_at = item.integer("allocated_at").filter(|at| *at > 0);
        let updated_at = item.integer("updated_at").unwrap_or(0);
        Ok(Self {
            sandbox_id: text("sandbox_id").unwrap_or_else(|| id_from_pk.to_owned()),
            name: text("name").ok_or_else(|| missing("name"))?,
            external_id: text("external_id").unwrap_or_default(),
            status,
            // A reserved row's `allocated_to_track` is its reservation's index key.
            holder: text("allocated_to_track").filter(|_| status != SandboxStatus::Reserved),
            allocated_at: allocated_at.map(EpochSecs::new),
            lab_duration_hours: item
                .integer("lab_duration_hours")
                .and_then(|h| u32::try_from(h).ok()),
            allocated_by: text("allocated_by"),
            deletion_requested_at: (item.integer("deletion_requested_at")).map(EpochSecs::new),
            deletion_retry_count: item
                .integer("deletion_retry_count")
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            last_synced: (item.integer("last_synced")).map(EpochSecs::new),
            idempotency_key: text("idempotency_key"),
            lab: text("track_name"),
            created_at: EpochSecs::new(item.integer("created_at").unwrap_or(updated_at)),
            updated_at: EpochSecs::new(updated_at),
            sfdc_account_id: text("sfdc_account_id"),
            deleted_at: (item.integer("deleted_at")).map(EpochSecs::new),
            ttl: (item.integer("ttl")).map(EpochSecs::new),
            next_deletion_attempt_at: (item.integer("next_deletion_attempt_at"))
                .map(EpochSecs::new),
            deletion_claimed_by: text("deletion_claimed_by"),
            deletion_claimed_until: (item.integer("deletion_claimed_until")).map(EpochSecs::new),
            first_deletion_failure_at: (item.integer("first_deletion_failure_at"))
                .map(EpochSecs::new),
            deletion_transient_failures: item
                .integer("deletion_transient_failures")
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0),
            last_deletion_error: text("last_deletion_error"),
            quarantine_reason: text("quarantine_reason"),
            token_id: text("token_id"),
            reserved_for: text("reserved_for"),
            niosxaas: read_niosxaas(item),
        })
    }
}

impl From<&Sandbox> for Item {
    fn from(row: &Sandbox) -> Self {
        let mut item = sandbox_key(&row.sandbox_id);
        item.extend(
            row_attributes(row)
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        );
        item
    }
}

/// Every attribute of `row`'s item but its key, sorted by name: the one mapping of a row
/// to its item, which [`Item::from`] and the updates derived from decisions
/// (`update::row_update`) share.
pub(crate) fn row_attributes(row: &Sandbox) -> Vec<(&'static str, AttributeValue)> {
    let mut attributes = Vec::with_capacity(32);
    let mut put = |name: &'static str, value: AttributeValue| attributes.push((name, value));
    put("sandbox_id", s(&row.sandbox_id));
    put("name", s(&row.name));
    put("external_id", s(&row.external_id));
    put("status", s(row.status.as_str()));
    // The table's sentinel: 0 while never allocated, so StatusIndex holds every row.
    put(
        "allocated_at",
        n(row.allocated_at.unwrap_or(EpochSecs::new(0))),
    );
    put("deletion_retry_count", n(row.deletion_retry_count));
    put("created_at", n(row.created_at));
    put("updated_at", n(row.updated_at));
    let reservation_track = match (row.status, &row.reserved_for) {
        (SandboxStatus::Reserved, Some(reservation)) => Some(reservation_track(reservation)),
        _ => row.holder.clone(),
    };
    let optional_text = [
        ("allocated_to_track", &reservation_track),
        ("allocated_by", &row.allocated_by),
        ("idempotency_key", &row.idempotency_key),
        ("track_name", &row.lab),
        ("sfdc_account_id", &row.sfdc_account_id),
        ("deletion_claimed_by", &row.deletion_claimed_by),
        ("last_deletion_error", &row.last_deletion_error),
        ("quarantine_reason", &row.quarantine_reason),
        ("token_id", &row.token_id),
        ("reserved_for", &row.reserved_for),
    ];
    for (name, value) in optional_text {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            put(name, s(value));
        }
    }
    let optional_numbers = [
        ("lab_duration_hours", row.lab_duration_hours.map(i64::from)),
        (
            "deletion_requested_at",
            row.deletion_requested_at.map(EpochSecs::get),
        ),
        ("last_synced", row.last_synced.map(EpochSecs::get)),
        ("deleted_at", row.deleted_at.map(EpochSecs::get)),
        ("ttl", row.ttl.map(EpochSecs::get)),
        (
            "next_deletion_attempt_at",
            row.next_deletion_attempt_at.map(EpochSecs::get),
        ),
        (
            "deletion_claimed_until",
            row.deletion_claimed_until.map(EpochSecs::get),
        ),
        (
            "first_deletion_failure_at",
            row.first_deletion_failure_at.map(EpochSecs::get),
        ),
        (
            "deletion_transient_failures",
            Some(i64::from(row.deletion_transient_failures)).filter(|c| *c > 0),
        ),
    ];
    for (name, value) in optional_numbers {
        if let Some(value) = value {
            put(name, n(value));
        }
    }
    if let Some(cleanup) = &row.niosxaas {
        for (name, value) in niosxaas_attributes(cleanup) {
            if let Some(value) = value {
                put(name, value);
            }
        }
    }
    attributes.sort_unstable_by_key(|(name, _)| *name);
    attributes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A row as the Python service wrote it.
    pub(crate) fn python_row() -> Item {
        HashMap::from([
            ("PK".to_owned(), s("SBX#2009521")),
            ("SK".to_owned(), s("META")),
            ("sandbox_id".to_owned(), s("2009521")),
            ("name".to_owned(), s("lab-adventure-0087")),
            ("external_id".to_owned(), s("identity/accounts/1e96e538")),
            ("status".to_owned(), s("available")),
            ("allocated_at".to_owned(), n(0)),
            ("last_synced".to_owned(), n("1728054123.52")),
        ])
    }

    #[test]
    fn a_python_row_without_optional_attributes_reads() {
        let row = Sandbox::try_from(&python_row()).unwrap();
        assert_eq!(row.sandbox_id, "2009521");
        assert_eq!(row.status, SandboxStatus::Available);
        assert_eq!(row.allocated_at, None, "0 is the never-allocated sentinel");
        assert_eq!(row.sfdc_account_id, None);
        assert_eq!(row.lab, None);
        assert_eq!(
            row.last_synced,
            Some(EpochSecs::new(1_728_054_123)),
            "fractional N is truncated"
        );
    }

    #[test]
    fn numbers_stored_as_strings_and_empty_strings_are_tolerated() {
        let mut item = python_row();
        item.insert("allocated_at".into(), s("1728054123"));
        item.insert("sfdc_account_id".into(), s(""));
        item.insert("deletion_retry_count".into(), s("2"));
        let row = Sandbox::try_from(&item).unwrap();
        assert_eq!(row.allocated_at, Some(EpochSecs::new(1_728_054_123)));
        assert_eq!(row.sfdc_account_id, None);
        assert_eq!(row.deletion_retry_count, 2);
    }

    #[test]
    fn non_sandbox_items_and_broken_rows_are_refused() {
        let mut history = python_row();
        history.insert("PK".into(), s("NIOSXAAS#2009521"));
        assert!(matches!(
            Sandbox::try_from(&history),
            Err(ItemError::NotASandbox(_))
        ));
        let mut unknown = python_row();
        unknown.insert("status".into(), s("exploded"));
        assert!(matches!(
            Sandbox::try_from(&unknown),
            Err(ItemError::Missing {
                attribute: "status",
                ..
            })
        ));
    }

    #[test]
    fn rows_round_trip_and_never_write_empty_index_keys() {
        let mut row = Sandbox::try_from(&python_row()).unwrap();
        row.holder = Some(String::new());
        let item = Item::from(&row);
        assert!(
            !item.contains_key("allocated_to_track"),
            "an empty GSI key would be rejected"
        );
        assert!(!item.contains_key("idempotency_key"));
        assert_eq!(item["allocated_at"], n(0));
        row.holder = None;
        assert_eq!(Sandbox::try_from(&item).unwrap(), row);
    }
}
