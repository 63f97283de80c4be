//! The NIOSXaaS hook's attributes on a sandbox item, and its history items (docs/dynamodb.md),
//! under the Python service's names and types.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{AttributeValuesExt, Item, ItemError, NIOSXAAS_PREFIX, NIOSXAAS_SORT_KEY, n, s};
use crate::domain::time::EpochSecs;
use crate::domain::{NiosxaasCleanup, NiosxaasHistory};

/// The primary key of a sandbox's NIOSXaaS history item.
pub(crate) fn niosxaas_history_key(id: &str) -> Item {
    HashMap::from([
        ("PK".to_owned(), s(format!("{NIOSXAAS_PREFIX}{id}"))),
        ("SK".to_owned(), s(NIOSXAAS_SORT_KEY)),
    ])
}

/// The hook's attributes (the Python service's names, plus two additive ones), each with
/// its value or `None` where the attribute must be absent.
pub(super) fn niosxaas_attributes(
    cleanup: &NiosxaasCleanup,
) -> [(&'static str, Option<AttributeValue>); 5] {
    [
        ("niosxaas_cleaned_at", cleanup.niosxaas_cleaned_at.map(n)),
        (
            "niosxaas_cleanup_skipped",
            Some(AttributeValue::Bool(cleanup.niosxaas_cleanup_skipped)),
        ),
        (
            "niosxaas_cleanup_failed_reason",
            cleanup
                .niosxaas_cleanup_failed_reason
                .as_deref()
                .filter(|reason| !reason.is_empty())
                .map(s),
        ),
        (
            "niosxaas_services_matched",
            Some(n(cleanup.niosxaas_services_matched)),
        ),
        (
            "niosxaas_shadow_mode",
            Some(AttributeValue::Bool(cleanup.niosxaas_shadow_mode)),
        ),
    ]
}

/// A boolean written as `BOOL` (or, leniently, as `"true"`/`1`).
fn flag(item: &Item, name: &str) -> bool {
    match item.get(name) {
        Some(AttributeValue::Bool(value)) => *value,
        Some(AttributeValue::S(text) | AttributeValue::N(text)) => {
            matches!(text.trim(), "true" | "True" | "1")
        }
        _ => false,
    }
}

/// The hook's result stored on an item; `None` when the hook never ran for it.
pub(super) fn read_niosxaas(item: &Item) -> Option<NiosxaasCleanup> {
    let ran = [
        "niosxaas_cleaned_at",
        "niosxaas_cleanup_skipped",
        "niosxaas_cleanup_failed_reason",
    ]
    .iter()
    .any(|name| item.contains_key(*name));
    ran.then(|| NiosxaasCleanup {
        niosxaas_cleaned_at: (item.integer("niosxaas_cleaned_at").filter(|at| *at > 0))
            .map(EpochSecs::new),
        niosxaas_cleanup_skipped: flag(item, "niosxaas_cleanup_skipped"),
        niosxaas_cleanup_failed_reason: item
            .text("niosxaas_cleanup_failed_reason")
            .filter(|reason| !reason.is_empty())
            .map(str::to_owned),
        niosxaas_services_matched: item
            .integer("niosxaas_services_matched")
            .and_then(|count| u32::try_from(count).ok())
            .unwrap_or(0),
        niosxaas_shadow_mode: flag(item, "niosxaas_shadow_mode"),
    })
}

impl From<&NiosxaasHistory> for Item {
    fn from(history: &NiosxaasHistory) -> Self {
        let mut item = niosxaas_history_key(&history.sandbox_id);
        item.insert("sandbox_id".to_owned(), s(&history.sandbox_id));
        item.insert("sandbox_name".to_owned(), s(&history.sandbox_name));
        item.insert("external_id".to_owned(), s(&history.external_id));
        for (name, value) in [
            ("track_name", &history.lab),
            ("allocated_to_track", &history.holder),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                item.insert(name.to_owned(), s(value));
            }
        }
        for (name, value) in niosxaas_attributes(&history.cleanup) {
            if let Some(value) = value {
                item.insert(name.to_owned(), value);
            }
        }
        if let Some(deleted_at) = history.deleted_at {
            item.insert("deleted_at".to_owned(), n(deleted_at));
        }
        item.insert("ttl".to_owned(), n(history.ttl));
        item
    }
}

impl TryFrom<&Item> for NiosxaasHistory {
    type Error = ItemError;

    fn try_from(item: &Item) -> Result<Self, ItemError> {
        let pk = item.text("PK").unwrap_or_default();
        let id_from_pk = pk
            .strip_prefix(NIOSXAAS_PREFIX)
            .ok_or_else(|| ItemError::NotASandbox(pk.to_owned()))?;
        let text = |name: &str| item.text(name).filter(|v| !v.is_empty()).map(str::to_owned);
        Ok(Self {
            sandbox_id: text("sandbox_id").unwrap_or_else(|| id_from_pk.to_owned()),
            sandbox_name: text("sandbox_name").unwrap_or_default(),
            external_id: text("external_id").unwrap_or_default(),
            lab: text("track_name"),
            holder: text("allocated_to_track"),
            cleanup: read_niosxaas(item).unwrap_or_default(),
            deleted_at: (item.integer("deleted_at")).map(EpochSecs::new),
            ttl: EpochSecs::new(item.integer("ttl").unwrap_or(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sandbox;
    use crate::store::dynamo::item::tests::python_row;

    #[test]
    fn history_items_carry_the_python_services_names_and_types() {
        let history = NiosxaasHistory {
            sandbox_id: "7".into(),
            sandbox_name: "lab-7".into(),
            external_id: "identity/accounts/u7".into(),
            lab: Some("dns-lab".into()),
            holder: Some("stu".into()),
            cleanup: NiosxaasCleanup {
                niosxaas_cleaned_at: Some(EpochSecs::new(100)),
                niosxaas_cleanup_skipped: false,
                niosxaas_cleanup_failed_reason: None,
                niosxaas_services_matched: 2,
                niosxaas_shadow_mode: false,
            },
            deleted_at: Some(EpochSecs::new(101)),
            ttl: EpochSecs::new(200),
        };
        let item = Item::from(&history);
        assert_eq!(item["PK"], s("NIOSXAAS#7"));
        assert_eq!(item["SK"], s("CLEANUP"));
        assert_eq!(
            item["niosxaas_cleanup_skipped"],
            AttributeValue::Bool(false)
        );
        assert_eq!(item["niosxaas_cleaned_at"], n(100));
        assert_eq!(item["deleted_at"], n(101));
        assert_eq!(item["ttl"], n(200));
        assert!(!item.contains_key("niosxaas_cleanup_failed_reason"));
        assert!(!item.contains_key("status"), "never in StatusIndex");
        assert_eq!(NiosxaasHistory::try_from(&item).unwrap(), history);
        assert!(matches!(
            Sandbox::try_from(&item),
            Err(ItemError::NotASandbox(_))
        ));
    }

    #[test]
    fn the_hooks_record_round_trips_on_a_sandbox_row() {
        let mut row = Sandbox::try_from(&python_row()).unwrap();
        row.niosxaas = Some(NiosxaasCleanup {
            niosxaas_cleanup_failed_reason: Some("failed at list".into()),
            niosxaas_shadow_mode: true,
            ..NiosxaasCleanup::default()
        });
        assert_eq!(Sandbox::try_from(&Item::from(&row)).unwrap(), row);
    }
}
