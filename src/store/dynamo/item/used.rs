//! Used-account markers on the shared table (additive, see docs/dynamodb.md): what the
//! broker keeps of a handed-out account once its row is gone.

use std::collections::HashMap;

use super::{AttributeValuesExt, Item, ItemError, USED_PREFIX, USED_SORT_KEY, n, s};
use crate::domain::time::EpochSecs;
use crate::domain::used::UsedAccount;

/// The primary key of a sandbox's used-account marker.
pub(crate) fn used_key(id: &str) -> Item {
    HashMap::from([
        ("PK".to_owned(), s(format!("{USED_PREFIX}{id}"))),
        ("SK".to_owned(), s(USED_SORT_KEY)),
    ])
}

/// A marker item: no `status` and none of the GSI keys (`status`, `allocated_to_track`,
/// `idempotency_key`, `allocated_at`), so no index and no status count sees it; a
/// `sandbox_id` naming its sandbox, as the allocation-key items do, because the Python
/// service's sync reads that attribute from every item; no `ttl`, so DynamoDB keeps it.
impl From<&UsedAccount> for Item {
    fn from(marker: &UsedAccount) -> Self {
        let mut item = used_key(&marker.sandbox_id);
        item.insert("sandbox_id".to_owned(), s(&marker.sandbox_id));
        item.insert("external_id".to_owned(), s(&marker.external_id));
        item.insert("last_allocated_at".to_owned(), n(marker.allocated_at));
        item.insert("recorded_at".to_owned(), n(marker.recorded_at));
        item
    }
}

impl TryFrom<&Item> for UsedAccount {
    type Error = ItemError;

    fn try_from(item: &Item) -> Result<Self, ItemError> {
        let pk = item.text("PK").unwrap_or_default();
        let id_from_pk = pk
            .strip_prefix(USED_PREFIX)
            .ok_or_else(|| ItemError::NotASandbox(pk.to_owned()))?;
        Ok(Self {
            sandbox_id: item.text("sandbox_id").unwrap_or(id_from_pk).to_owned(),
            external_id: item.text("external_id").unwrap_or_default().to_owned(),
            allocated_at: EpochSecs::new(item.integer("last_allocated_at").unwrap_or(0)),
            recorded_at: EpochSecs::new(item.integer("recorded_at").unwrap_or(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_carries_no_index_key_and_no_status() {
        let item = Item::from(&UsedAccount {
            sandbox_id: "2012224".into(),
            external_id: "identity/accounts/x".into(),
            allocated_at: crate::domain::time::EpochSecs::new(1_700_000_000),
            recorded_at: crate::domain::time::EpochSecs::new(1_700_100_000),
        });
        assert_eq!(item["PK"], s("USED#2012224"));
        assert_eq!(item["sandbox_id"], s("2012224"));
        for index_key in [
            "status",
            "allocated_to_track",
            "idempotency_key",
            "allocated_at",
            "name",
            "ttl",
        ] {
            assert!(!item.contains_key(index_key), "{index_key}");
        }
    }
}
