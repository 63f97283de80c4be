//! Exports from one read snapshot, and restores that write only what is missing.

use redb::{ReadOnlyTable, ReadTransaction};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::domain::actions::AdminAction;
use crate::store::backup::{AllocationKeyItem, BackupItem, LoggedAction, RestoreMarker, Restored};
use crate::store::embedded::keys::KeyChanges;

/// The [`RECORDS`] key of a restore under way.
const RESTORE_MARKER: &str = "restore_marker";

/// The exported tables, in the order an export lists them: the used-account markers and
/// the rows before the keys that point at rows, so a restore cut short never holds a key
/// without its row, nor a row without the marker that keeps its account out.
struct Snapshot {
    tokens: ReadOnlyTable<&'static str, &'static [u8]>,
    used: ReadOnlyTable<&'static str, &'static [u8]>,
    sandboxes: ReadOnlyTable<&'static str, &'static [u8]>,
    /// Encoded key → `sandbox_id`: the keys the snapshot's allocated rows hold, then the
    /// stored ones no row holds ([`ALLOCATION_KEYS`]).
    keys: BTreeMap<String, String>,
    niosxaas_history: ReadOnlyTable<&'static str, &'static [u8]>,
    jobs: ReadOnlyTable<&'static str, &'static [u8]>,
    cordons: ReadOnlyTable<&'static str, &'static [u8]>,
    actions: ReadOnlyTable<&'static str, &'static [u8]>,
    reservations: ReadOnlyTable<&'static str, &'static [u8]>,
    webhooks: ReadOnlyTable<&'static str, &'static [u8]>,
    deliveries: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Snapshot {
    fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let sandboxes = txn.open_table(SANDBOXES).map_err(storage)?;
        let keys = keys_in(txn, &sandboxes)?;
        Ok(Self {
            tokens: txn.open_table(TOKENS).map_err(storage)?,
            used: txn.open_table(USED_ACCOUNTS).map_err(storage)?,
            sandboxes,
            keys,
            niosxaas_history: txn.open_table(NIOSXAAS_HISTORY).map_err(storage)?,
            jobs: txn.open_table(JOBS).map_err(storage)?,
            cordons: txn.open_table(CORDONS).map_err(storage)?,
            actions: txn.open_table(ACTIONS).map_err(storage)?,
            reservations: txn.open_table(RESERVATIONS).map_err(storage)?,
            webhooks: txn.open_table(WEBHOOKS).map_err(storage)?,
            deliveries: txn.open_table(DELIVERIES).map_err(storage)?,
        })
    }

    fn items(&self) -> Result<u64, StoreError> {
        let lengths = [
            self.tokens.len(),
            self.used.len(),
            self.sandboxes.len(),
            Ok(self.keys.len() as u64),
            self.niosxaas_history.len(),
            self.jobs.len(),
            self.cordons.len(),
            self.actions.len(),
            self.reservations.len(),
            self.webhooks.len(),
            self.deliveries.len(),
        ];
        lengths
            .into_iter()
            .try_fold(0, |sum, len| Ok(sum + len.map_err(storage)?))
    }

    /// Hands every item to `send`, in [`BackupItem::order`], until it answers `false` (the
    /// reader went away).
    fn each(&self, mut send: impl FnMut(BackupItem) -> bool) -> Result<(), StoreError> {
        let mut each_json = |tables: &[(&ReadOnlyTable<&str, &[u8]>, JsonKind)]| {
            for (table, kind) in tables {
                for entry in table.iter().map_err(storage)? {
                    let (key, value) = entry.map_err(storage)?;
                    if !send(kind.decode(key.value(), value.value())?) {
                        return Ok(false);
                    }
                }
            }
            Ok::<_, StoreError>(true)
        };
        // What others point at first: the tokens, the markers, the rows.
        let referred = [
            (&self.tokens, JsonKind::Token),
            (&self.used, JsonKind::Used),
            (&self.sandboxes, JsonKind::Sandbox),
        ];
        if !each_json(&referred)? {
            return Ok(());
        }
        let rest = [
            (&self.niosxaas_history, JsonKind::Niosxaas),
            (&self.jobs, JsonKind::Job),
            (&self.cordons, JsonKind::Cordon),
            (&self.actions, JsonKind::Action),
            (&self.reservations, JsonKind::Reservation),
            (&self.webhooks, JsonKind::Webhook),
        ];
        if !each_json(&rest)? {
            return Ok(());
        }
        for (key, id) in &self.keys {
            let item = AllocationKeyItem::from_encoded(key, id.clone());
            if !send(BackupItem::AllocationKey(item)) {
                return Ok(());
            }
        }
        // Last: they name endpoints.
        for entry in self.deliveries.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            if !send(JsonKind::Delivery.decode(key.value(), value.value())?) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The key of the first item held, if any.
    fn any_item(&self) -> Result<Option<String>, StoreError> {
        let mut found = None;
        self.each(|item| {
            found = Some(item.key());
            false
        })?;
        Ok(found)
    }
}

/// The allocation keys of a snapshot: those its allocated rows hold (as the key index
/// derives them), then the stored ones no row holds.
pub(super) fn keys_in(
    txn: &ReadTransaction,
    sandboxes: &ReadOnlyTable<&'static str, &'static [u8]>,
) -> Result<BTreeMap<String, String>, StoreError> {
    let mut changes = KeyChanges::default();
    let by_status = txn.open_table(BY_STATUS).map_err(storage)?;
    each_id_in_status(&by_status, SandboxStatus::Allocated, |id| {
        if let Some(value) = sandboxes.get(id).map_err(storage)? {
            changes.row_added(&decode(id, value.value())?);
        }
        Ok(())
    })?;
    let mut keys = changes.into_held();
    let stored = txn.open_table(ALLOCATION_KEYS).map_err(storage)?;
    for entry in stored.iter().map_err(storage)? {
        let (key, id) = entry.map_err(storage)?;
        keys.entry(key.value().to_owned())
            .or_insert_with(|| id.value().to_owned());
    }
    Ok(keys)
}

/// The tables whose values are JSON, and what each decodes to.
#[derive(Clone, Copy)]
enum JsonKind {
    Token,
    Used,
    Sandbox,
    Niosxaas,
    Job,
    Cordon,
    Action,
    Reservation,
    Webhook,
    Delivery,
}

impl JsonKind {
    fn decode(self, key: &str, bytes: &[u8]) -> Result<BackupItem, StoreError> {
        Ok(match self {
            Self::Token => BackupItem::LabToken(json("lab token", key, bytes)?),
            Self::Reservation => BackupItem::Reservation(json("reservation", key, bytes)?),
            Self::Webhook => super::webhooks::backup_item(key, bytes)?,
            Self::Delivery => BackupItem::WebhookDelivery(json("webhook delivery", key, bytes)?),
            Self::Used => BackupItem::UsedAccount(json("used-account marker", key, bytes)?),
            Self::Sandbox => BackupItem::Sandbox(decode(key, bytes)?),
            Self::Niosxaas => BackupItem::NiosxaasHistory(json("NIOSXaaS history", key, bytes)?),
            Self::Job => BackupItem::Job(jobs::decode_job(key, bytes)?),
            Self::Cordon => BackupItem::Cordon(json("cordon", key, bytes)?),
            Self::Action => BackupItem::Action(LoggedAction {
                key: key.to_owned(),
                entry: json::<AdminAction>("action", key, bytes)?,
            }),
        })
    }
}

/// Reads one snapshot and sends its item count to `total`, then every item to `items`;
/// the service keeps serving meanwhile (the writer never waits for a reader).
pub(in crate::store::embedded) fn export_snapshot(
    db: &Database,
    total: oneshot::Sender<Result<u64, StoreError>>,
    items: &mpsc::Sender<Result<BackupItem, StoreError>>,
) {
    let opened = db.begin_read().map_err(storage).and_then(|txn| {
        let snapshot = Snapshot::open(&txn)?;
        let count = snapshot.items()?;
        Ok((snapshot, count))
    });
    let snapshot = match opened {
        Ok((snapshot, count)) => {
            let _ = total.send(Ok(count));
            snapshot
        }
        Err(err) => {
            let _ = total.send(Err(err));
            return;
        }
    };
    if let Err(err) = snapshot.each(|item| items.blocking_send(Ok(item)).is_ok()) {
        let _ = items.blocking_send(Err(err));
    }
}

/// The key of some item the store holds, if it holds any.
pub(in crate::store::embedded) fn any_item(db: &Database) -> Result<Option<String>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    Snapshot::open(&txn)?.any_item()
}

/// The marker of a restore under way.
pub(in crate::store::embedded) fn restore_marker(
    db: &Database,
) -> Result<Option<RestoreMarker>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let records = txn.open_table(RECORDS).map_err(storage)?;
    let guard = records.get(RESTORE_MARKER).map_err(storage)?;
    guard
        .map(|value| json("restore marker", RESTORE_MARKER, value.value()))
        .transpose()
}

impl Tables<'_> {
    /// Writes each item whose key is not held yet; reports what became of each.
    pub(in crate::store::embedded) fn restore_items(
        &mut self,
        items: &[BackupItem],
    ) -> Result<Vec<Restored>, StoreError> {
        items.iter().map(|item| self.restore_item(item)).collect()
    }

    fn restore_item(&mut self, item: &BackupItem) -> Result<Restored, StoreError> {
        if let Some(present) = self.stored(item)? {
            return Ok(Restored::Present(Box::new(present)));
        }
        match item {
            BackupItem::Sandbox(row) => self.put(None, row)?,
            // A key no restored row holds (yet): kept as the file has it, for exports.
            BackupItem::AllocationKey(key) => {
                self.allocation_keys
                    .write(self.txn)?
                    .insert(key.encoded().as_str(), key.sandbox_id.as_str())
                    .map_err(storage)?;
            }
            BackupItem::UsedAccount(marker) => {
                self.used
                    .write(self.txn)?
                    .insert(marker.sandbox_id.as_str(), encode(marker)?.as_slice())
                    .map_err(storage)?;
            }
            BackupItem::NiosxaasHistory(history) => {
                self.niosxaas_history
                    .write(self.txn)?
                    .insert(history.sandbox_id.as_str(), encode(history)?.as_slice())
                    .map_err(storage)?;
            }
            BackupItem::Job(record) => self.put_job(record)?,
            BackupItem::LabToken(token) => self.put_token(token)?,
            BackupItem::Reservation(reservation) => self.put_reservation(reservation)?,
            BackupItem::Webhook { endpoint, state } => self.restore_webhook(endpoint, state)?,
            BackupItem::WebhookDelivery(delivery) => self.restore_delivery(delivery)?,
            BackupItem::Cordon(cordon) => self.add_cordon(cordon)?,
            BackupItem::Action(action) => {
                self.actions
                    .write(self.txn)?
                    .insert(action.key.as_str(), encode(&action.entry)?.as_slice())
                    .map_err(storage)?;
            }
        }
        Ok(Restored::Written)
    }

    /// What the store holds under `item`'s key.
    fn stored(&self, item: &BackupItem) -> Result<Option<BackupItem>, StoreError> {
        let json_entry = |table: &redb::Table<'_, &str, &[u8]>, kind: JsonKind, key: &str| {
            let guard = table.get(key).map_err(storage)?;
            guard
                .map(|value| kind.decode(key, value.value()))
                .transpose()
        };
        match item {
            BackupItem::Sandbox(row) => Ok(self.row(&row.sandbox_id)?.map(BackupItem::Sandbox)),
            BackupItem::AllocationKey(key) => {
                // A key an allocated row holds is there as soon as its row is.
                let encoded = key.encoded();
                let id = match self.key_holder(&encoded) {
                    Some(id) => Some(id),
                    None => self
                        .allocation_keys
                        .read(self.txn)?
                        .get(encoded.as_str())
                        .map_err(storage)?
                        .map(|guard| guard.value().to_owned()),
                };
                Ok(id.map(|id| {
                    BackupItem::AllocationKey(AllocationKeyItem::from_encoded(&encoded, id))
                }))
            }
            BackupItem::UsedAccount(marker) => json_entry(
                self.used.read(self.txn)?,
                JsonKind::Used,
                &marker.sandbox_id,
            ),
            BackupItem::NiosxaasHistory(history) => json_entry(
                self.niosxaas_history.read(self.txn)?,
                JsonKind::Niosxaas,
                &history.sandbox_id,
            ),
            BackupItem::Job(record) => Ok(self.job(&record.job)?.map(BackupItem::Job)),
            BackupItem::Cordon(cordon) => {
                json_entry(self.cordons.read(self.txn)?, JsonKind::Cordon, &cordon.id)
            }
            BackupItem::Action(action) => {
                json_entry(self.actions.read(self.txn)?, JsonKind::Action, &action.key)
            }
            BackupItem::LabToken(token) => {
                json_entry(self.tokens.read(self.txn)?, JsonKind::Token, &token.id)
            }
            BackupItem::Reservation(reservation) => json_entry(
                self.reservations.read(self.txn)?,
                JsonKind::Reservation,
                &reservation.id,
            ),
            BackupItem::Webhook { endpoint, .. } => json_entry(
                self.webhooks.read(self.txn)?,
                JsonKind::Webhook,
                &endpoint.id,
            ),
            BackupItem::WebhookDelivery(delivery) => json_entry(
                self.deliveries.read(self.txn)?,
                JsonKind::Delivery,
                &super::outbox::delivery_key(delivery),
            ),
        }
    }

    /// Writes (`Some`) or removes (`None`) the marker of a restore under way.
    pub(in crate::store::embedded) fn set_restore_marker(
        &mut self,
        marker: Option<&RestoreMarker>,
    ) -> Result<(), StoreError> {
        match marker {
            Some(marker) => {
                self.records
                    .write(self.txn)?
                    .insert(RESTORE_MARKER, encode(marker)?.as_slice())
                    .map_err(storage)?;
            }
            None => {
                self.records
                    .write(self.txn)?
                    .remove(RESTORE_MARKER)
                    .map_err(storage)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cordon::Cordon;

    #[test]
    fn a_cordon_round_trips_through_restore_and_is_then_present() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        create_all(&db).unwrap();
        let cordon = BackupItem::Cordon(Cordon {
            id: "c1".into(),
            name_prefix: Some("lab-".into()),
            lab: None,
            reason: "fixing".into(),
            created_at: EpochSecs::new(1),
            actor: "admin:0".into(),
        });
        let (txn, keys) = (db.begin_write().unwrap(), KeyIndex::default());
        {
            let mut tables = Tables::open(&txn, &keys).unwrap();
            let first = tables.restore_items(std::slice::from_ref(&cordon)).unwrap();
            assert_eq!(first, vec![Restored::Written]);
            let again = tables.restore_items(std::slice::from_ref(&cordon)).unwrap();
            assert_eq!(again, vec![Restored::Present(Box::new(cordon))]);
        }
        txn.commit().unwrap();
        assert_eq!(any_item(&db).unwrap(), Some("cordon c1".into()));
    }
}
