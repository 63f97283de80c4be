//! The `UpdateItem` that persists a decided change: derived from the decision, never
//! written by hand per operation.
//!
//! Rule: the `SET`/`REMOVE` clauses are the difference between the row as read and the
//! decided row (the key never changes), and the condition is exactly the decision's
//! [`Expect`](crate::domain::lifecycle::Expect): what must still hold for it to apply.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::error::internal;
use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Item, n, row_attributes, s};
use crate::domain::lifecycle::Change;
use crate::domain::time::EpochSecs;
use crate::domain::{ExternalId, NewSandbox, Sandbox, SandboxId, SandboxName, ValidationError};
use crate::store::StoreError;

/// The row attribute holding the webhook events its changes announced and the dispatcher
/// has not fanned out yet (JSON strings, oldest first).
pub(crate) const PENDING_EVENTS: &str = "pending_events";
/// The sparse outbox index's key: set while the row has pending events.
pub(crate) const OUTBOX: &str = "outbox";
/// The outbox index's range key: when the row's first pending event was announced.
pub(crate) const OUTBOX_AT: &str = "outbox_at";

/// The outbox index key of the row `sandbox_id`: one of `OUTBOX_SHARDS` values, by hash.
pub(crate) fn outbox_shard(sandbox_id: &str) -> String {
    let hash = sandbox_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("p#{}", hash % super::schema::OUTBOX_SHARDS)
}

/// The parts of an `UpdateItem` that turn the stored row into a decided one.
#[derive(Debug, Default)]
pub(crate) struct RowUpdate {
    /// `SET … REMOVE …`.
    pub(crate) expression: String,
    /// The condition: the decision's [`Expect`].
    pub(crate) condition: String,
    /// `#aN` → attribute name.
    pub(crate) names: HashMap<String, String>,
    /// `:vN` → value.
    pub(crate) values: Item,
}

/// The update that applies `change` to `before` (the row as read): a `SET` of every
/// attribute that differs, a `REMOVE` of every one the new row lacks (the key never
/// changes), conditional on the change's expectation — derived from the decision, never
/// written by hand per operation. With `announce`, the event the change announces (if
/// any) rides on it (see [`super::DynamoStore::announcing`]).
pub(crate) fn row_update(before: &Sandbox, change: &Change, announce: bool) -> RowUpdate {
    let (old, new) = (row_attributes(before), row_attributes(&change.row));
    let mut update = RowUpdate::default();
    // One placeholder per attribute, however often the update names it.
    let name = |update: &mut RowUpdate, attribute: &str| {
        if let Some((placeholder, _)) = update.names.iter().find(|(_, a)| *a == attribute) {
            return placeholder.clone();
        }
        let placeholder = format!("#a{}", update.names.len());
        update
            .names
            .insert(placeholder.clone(), attribute.to_owned());
        placeholder
    };
    // Both sorted by name: one pass finds what the new row sets and what it drops.
    let (mut set, mut gone) = (Vec::new(), Vec::new());
    let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((was, _)), Some((is, _))) => was.cmp(is),
        };
        let changed = match order {
            // Only the old row has it.
            Ordering::Less => {
                gone.extend(old.next().map(|(attribute, _)| *attribute));
                None
            }
            Ordering::Equal => {
                old.next()
                    .zip(new.next())
                    .and_then(|((_, before), (attribute, after))| {
                        (before != after).then_some((attribute, after))
                    })
            }
            // Only the new row has it.
            Ordering::Greater => new.next().map(|(attribute, value)| (attribute, value)),
        };
        if let Some((attribute, value)) = changed {
            let placeholder = name(&mut update, attribute);
            let value_placeholder = format!(":v{}", update.values.len());
            update
                .values
                .insert(value_placeholder.clone(), value.clone());
            set.push(format!("{placeholder} = {value_placeholder}"));
        }
    }
    let remove: Vec<String> = gone
        .into_iter()
        .map(|attribute| name(&mut update, attribute))
        .collect();
    // The event the change announces rides on the change's own write (docs/webhooks.md):
    // appended to the row's pending events, and the row put in the sparse outbox index.
    if announce
        && let Some(announced) = crate::domain::webhooks::outbox::announced(before, change)
        && let Ok(event) = serde_json::to_string(&announced)
    {
        let events = name(&mut update, PENDING_EVENTS);
        let outbox = name(&mut update, OUTBOX);
        let outbox_at = name(&mut update, OUTBOX_AT);
        update.values.insert(
            ":v_event".into(),
            AttributeValue::L(vec![AttributeValue::S(event)]),
        );
        update
            .values
            .insert(":v_no_events".into(), AttributeValue::L(Vec::new()));
        update
            .values
            .insert(":v_outbox".into(), s(outbox_shard(&change.row.sandbox_id)));
        update.values.insert(":v_outbox_at".into(), n(announced.at));
        set.push(format!(
            "{events} = list_append(if_not_exists({events}, :v_no_events), :v_event)"
        ));
        set.push(format!("{outbox} = :v_outbox"));
        set.push(format!(
            "{outbox_at} = if_not_exists({outbox_at}, :v_outbox_at)"
        ));
    }
    if set.is_empty() && remove.is_empty() {
        // A decision that changes nothing (a second sync within the same second) still
        // lands only where its expectation holds, and DynamoDB refuses an empty update:
        // write the status it already has.
        let placeholder = name(&mut update, "status");
        update
            .values
            .insert(":v_same".into(), s(change.row.status.as_str()));
        set.push(format!("{placeholder} = :v_same"));
    }
    let mut expression = String::new();
    if !set.is_empty() {
        expression = format!("SET {}", set.join(", "));
    }
    if !remove.is_empty() {
        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    update.expression = expression.trim_start().to_owned();
    let status = name(&mut update, "status");
    update
        .values
        .insert(":expect_status".into(), s(change.expect.status.as_str()));
    update.condition = format!("{status} = :expect_status");
    if let Some(holder) = &change.expect.held_by {
        let attribute = name(&mut update, "allocated_to_track");
        update.values.insert(":expect_holder".into(), s(holder));
        update
            .condition
            .push_str(&format!(" AND {attribute} = :expect_holder"));
    }
    if let Some(at) = change.expect.allocated_at {
        let started = name(&mut update, "allocated_at");
        update.values.insert(":expect_allocated_at".into(), n(at));
        update
            .condition
            .push_str(&format!(" AND {started} = :expect_allocated_at"));
    }
    if let Some(reservation) = &change.expect.reserved_for {
        let attribute = name(&mut update, "reserved_for");
        update
            .values
            .insert(":expect_reservation".into(), s(reservation));
        update
            .condition
            .push_str(&format!(" AND {attribute} = :expect_reservation"));
    }
    if let Some(runner) = &change.expect.claimed_by {
        let claimer = name(&mut update, "deletion_claimed_by");
        update.values.insert(":expect_claimer".into(), s(runner));
        update
            .condition
            .push_str(&format!(" AND {claimer} = :expect_claimer"));
    }
    update
}

/// An available row as a write that has not read it must assume it: known only by its id,
/// and perhaps still carrying a `track_name` from an earlier life (a row another service
/// returned to the pool), which an allocation without a track must clear. Every other
/// attribute is the same before and after a decision on it, so the update derived from
/// the decision writes exactly what the decision changes (an allocation's claim, which
/// never reads its candidate), and the decision's expectation stays its condition.
pub(super) fn unread_available(id: &str) -> Result<Sandbox, StoreError> {
    const UNREAD: &str = "unread";
    let invalid = |err: ValidationError| internal(err.to_string());
    let mut row = NewSandbox {
        sandbox_id: SandboxId::parse("sandbox_id", UNREAD).map_err(invalid)?,
        name: SandboxName::parse("name", UNREAD).map_err(invalid)?,
        external_id: ExternalId::parse("external_id", UNREAD).map_err(invalid)?,
        sfdc_account_id: None,
    }
    .into_available_row(EpochSecs::new(0));
    row.sandbox_id = id.to_owned();
    row.lab = Some(UNREAD.to_owned());
    Ok(row)
}

/// The `SET` clauses of `update` as (attribute, value placeholder), and apart the
/// attributes the announced event writes (their values are expressions).
#[cfg(test)]
pub(crate) fn set_clauses(update: &RowUpdate) -> (Vec<(String, String)>, Vec<String>) {
    let set = update
        .expression
        .trim_start_matches("SET ")
        .split(" REMOVE ")
        .next()
        .unwrap_or_default();
    let (mut plain, mut announced) = (Vec::new(), Vec::new());
    for clause in set.split(", #") {
        let clause = clause.trim_start_matches('#');
        let Some((name, value)) = clause.split_once(" = ") else {
            continue;
        };
        let attribute = update.names[&format!("#{name}")].clone();
        if [PENDING_EVENTS, OUTBOX, OUTBOX_AT].contains(&attribute.as_str()) {
            announced.push(attribute);
        } else {
            plain.push((attribute, value.to_owned()));
        }
    }
    announced.sort();
    (plain, announced)
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;
    use crate::domain::SandboxStatus;
    use crate::store::dynamo::item::tests::python_row;

    /// The attributes `update` sets and removes, by name.
    fn touched(update: &RowUpdate) -> (Vec<String>, Vec<String>) {
        let (set, remove) = update
            .expression
            .trim_start_matches("SET ")
            .split_once(" REMOVE ")
            .unwrap_or((update.expression.trim_start_matches("SET "), ""));
        let name = |placeholder: &str| update.names[placeholder].clone();
        let mut set: Vec<String> = set
            .split(", ")
            .filter(|clause| !clause.is_empty())
            .map(|clause| name(clause.split_once(" = ").unwrap().0))
            .collect();
        set.sort();
        let remove = remove
            .split(", ")
            .filter(|a| !a.is_empty())
            .map(name)
            .collect();
        (set, remove)
    }

    #[test]
    fn a_sync_refresh_writes_only_what_the_listing_changed_and_needs_the_status_read() {
        use crate::domain::lifecycle::tests::RULES;
        use crate::domain::lifecycle::{Prior, Upsert, sync_listed};
        let listed = NewSandbox {
            sandbox_id: SandboxId::parse("id", "1").unwrap(),
            name: SandboxName::parse("name", "lab-renamed").unwrap(),
            external_id: ExternalId::parse("ext", "identity/accounts/1").unwrap(),
            sfdc_account_id: None,
        };
        for (status, status_too) in [
            (SandboxStatus::Available, false),
            (SandboxStatus::Stale, true),
        ] {
            let mut old = Sandbox::try_from(&python_row()).unwrap();
            old.sandbox_id = "1".into();
            old.external_id = "identity/accounts/1".into();
            old.status = status;
            old.sfdc_account_id = Some("001X".into());
            let Some(Upsert::Update(change)) =
                sync_listed(Prior::Row(&old), &listed, &RULES, EpochSecs::new(900)).upsert
            else {
                panic!("{status:?} is refreshed")
            };
            let update = row_update(&old, &change, true);
            let mut expected = vec!["last_synced", "name", "updated_at"];
            if status_too {
                expected.push("status");
            }
            expected.sort();
            assert_eq!(
                touched(&update),
                (expected.iter().map(|a| a.to_string()).collect(), vec![]),
                "{status:?}: the account the listing omits and the row's history stay"
            );
            assert_eq!(update.values[":expect_status"], s(status.as_str()));
        }
    }

    #[test]
    fn a_decision_that_changes_nothing_still_writes_under_its_condition() {
        use crate::domain::lifecycle::tests::RULES;
        use crate::domain::lifecycle::{Prior, Upsert, sync_listed};
        let mut old = Sandbox::try_from(&python_row()).unwrap();
        old.status = SandboxStatus::Available;
        let listed = NewSandbox {
            sandbox_id: SandboxId::parse("id", &old.sandbox_id).unwrap(),
            name: SandboxName::parse("name", &old.name).unwrap(),
            external_id: ExternalId::parse("ext", &old.external_id).unwrap(),
            sfdc_account_id: None,
        };
        old.updated_at = EpochSecs::new(900);
        old.last_synced = Some(EpochSecs::new(900));
        let Some(Upsert::Update(change)) =
            sync_listed(Prior::Row(&old), &listed, &RULES, EpochSecs::new(900)).upsert
        else {
            panic!("an available row is refreshed")
        };
        assert_eq!(change.row, old, "the same listing in the same second");

        let update = row_update(&old, &change, true);

        assert_eq!(touched(&update), (vec!["status".to_owned()], vec![]));
        assert_eq!(update.values[":v_same"], s("available"));
        assert_eq!(update.values[":expect_status"], s("available"));
    }

    #[test]
    fn a_row_update_sets_what_the_decision_changed_and_requires_its_expectation() {
        use crate::domain::HolderKey;
        use crate::domain::lifecycle::{Release, release};
        let mut held = Sandbox::try_from(&python_row()).unwrap();
        held.status = SandboxStatus::Allocated;
        held.holder = Some("stu".into());
        held.sfdc_account_id = Some("001X".into());
        let Ok(Release::Now(mut change)) = release(
            &held,
            &HolderKey::parse("h", "stu").unwrap(),
            None,
            EpochSecs::new(900),
        ) else {
            panic!("a release")
        };
        change.row.sfdc_account_id = None;

        let update = row_update(&held, &change, true);

        let named = |placeholder: &str| update.names[placeholder].clone();
        let (mut set, announced) = set_clauses(&update);
        assert_eq!(
            announced,
            ["outbox", "outbox_at", "pending_events"],
            "the release's event rides on the release's own write"
        );
        let mut set: Vec<(String, AttributeValue)> = set
            .drain(..)
            .map(|(name, value)| (name, update.values[&value].clone()))
            .collect();
        set.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            set,
            [
                ("deletion_requested_at".to_owned(), n(900)),
                ("status".to_owned(), s("pending_deletion")),
                ("updated_at".to_owned(), n(900)),
            ]
        );
        let removed = update.expression.split(" REMOVE ").nth(1).unwrap();
        assert_eq!(named(removed), "sfdc_account_id");
        assert_eq!(
            update.condition,
            format!(
                "{} = :expect_status AND {} = :expect_holder",
                update.names.iter().find(|(_, a)| *a == "status").unwrap().0,
                update
                    .names
                    .iter()
                    .find(|(_, a)| *a == "allocated_to_track")
                    .unwrap()
                    .0,
            )
        );
        assert_eq!(update.values[":expect_status"], s("allocated"));
        assert_eq!(update.values[":expect_holder"], s("stu"));
    }
}
