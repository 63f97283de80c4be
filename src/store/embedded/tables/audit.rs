//! What the auditor reads and keeps — the handed-out rows, the tombstones' ids, the last
//! listing a sync applied, the last report — and the admins' action log.

use super::*;
use crate::domain::actions::{ActionPage, AdminAction};
use crate::domain::audit::{AuditFacts, AuditReport, ListingSnapshot};
use crate::domain::cordon::Cordon;
use crate::store::{decode_action_cursor, encode_action_cursor, new_action_key};

/// The handed-out rows that are not deleted, the tombstones' ids and the last listing,
/// from one snapshot.
pub(in crate::store::embedded) fn audit_facts(db: &Database) -> Result<AuditFacts, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let sandboxes = txn.open_table(SANDBOXES).map_err(storage)?;
    let by_status = txn.open_table(BY_STATUS).map_err(storage)?;
    let records = txn.open_table(RECORDS).map_err(storage)?;
    let mut facts = AuditFacts::default();
    for status in [
        SandboxStatus::Allocated,
        SandboxStatus::PendingDeletion,
        SandboxStatus::DeletionFailed,
        SandboxStatus::Deleted,
    ] {
        each_id_in_status(&by_status, status, |id| {
            if status == SandboxStatus::Deleted {
                facts.deleted_ids.push(id.to_owned());
            } else if let Some(value) = sandboxes.get(id).map_err(storage)? {
                facts.held.push(decode(id, value.value())?);
            }
            Ok(())
        })?;
    }
    facts.listing = record(&records, LAST_LISTING)?;
    Ok(facts)
}

/// The last audit's report, if one was kept.
pub(in crate::store::embedded) fn last_audit(
    db: &Database,
) -> Result<Option<AuditReport>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let records = txn.open_table(RECORDS).map_err(storage)?;
    record(&records, LAST_AUDIT)
}

fn record<T: serde::de::DeserializeOwned>(
    records: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    records
        .get(key)
        .map_err(storage)?
        .map(|value| {
            serde_json::from_slice(value.value()).map_err(|err| {
                StoreError::Internal(format!("record {key} cannot be decoded: {err}").into())
            })
        })
        .transpose()
}

/// Every cordon in place.
pub(in crate::store::embedded) fn cordons(db: &Database) -> Result<Vec<Cordon>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(CORDONS).map_err(storage)?;
    let mut cordons = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        cordons.push(serde_json::from_slice(value.value()).map_err(|err| {
            StoreError::Internal(format!("cordon {} cannot be decoded: {err}", key.value()).into())
        })?);
    }
    Ok(cordons)
}

/// Up to `limit` action-log entries older than `cursor`, newest first.
pub(in crate::store::embedded) fn action_page(
    db: &Database,
    limit: usize,
    cursor: Option<&str>,
) -> Result<ActionPage, StoreError> {
    let before = cursor.map(decode_action_cursor).transpose()?;
    let txn = db.begin_read().map_err(storage)?;
    let actions = txn.open_table(ACTIONS).map_err(storage)?;
    let range = match &before {
        Some(key) => actions.range(..key.as_str()),
        None => actions.range::<&str>(..),
    }
    .map_err(storage)?;
    let mut page = ActionPage::default();
    let mut last_key = None;
    for entry in range.rev() {
        let (key, value) = entry.map_err(storage)?;
        if page.actions.len() == limit {
            page.next = last_key.as_deref().map(encode_action_cursor);
            break;
        }
        let action: AdminAction = serde_json::from_slice(value.value()).map_err(|err| {
            StoreError::Internal(format!("action {} cannot be decoded: {err}", key.value()).into())
        })?;
        page.actions.push(action);
        last_key = Some(key.value().to_owned());
    }
    Ok(page)
}

impl Tables<'_> {
    /// Puts `cordon` in place.
    pub(in crate::store::embedded) fn add_cordon(
        &mut self,
        cordon: &Cordon,
    ) -> Result<(), StoreError> {
        let bytes = encode(cordon)?;
        self.cordons
            .write(self.txn)?
            .insert(cordon.id.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Lifts the cordon `id`, handing it back.
    pub(in crate::store::embedded) fn remove_cordon(
        &mut self,
        id: &str,
    ) -> Result<Option<Cordon>, StoreError> {
        let removed = self.cordons.write(self.txn)?.remove(id).map_err(storage)?;
        removed
            .map(|value| {
                serde_json::from_slice(value.value())
                    .map_err(|err| StoreError::Internal(Box::new(err)))
            })
            .transpose()
    }

    /// Appends `action` to the action log.
    pub(in crate::store::embedded) fn record_action(
        &mut self,
        action: &AdminAction,
    ) -> Result<(), StoreError> {
        let key = new_action_key(action);
        let bytes = encode(action)?;
        self.actions
            .write(self.txn)?
            .insert(key.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Keeps `listing` as the last complete listing a sync applied.
    pub(in crate::store::embedded) fn record_listing(
        &mut self,
        listing: &ListingSnapshot,
    ) -> Result<(), StoreError> {
        self.put_record(LAST_LISTING, listing)
    }

    /// Keeps `report` as the last audit.
    pub(in crate::store::embedded) fn save_audit(
        &mut self,
        report: &AuditReport,
    ) -> Result<(), StoreError> {
        self.put_record(LAST_AUDIT, report)
    }

    fn put_record(&mut self, key: &str, value: &impl serde::Serialize) -> Result<(), StoreError> {
        let bytes = encode(value)?;
        self.records
            .write(self.txn)?
            .insert(key, bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }
}
