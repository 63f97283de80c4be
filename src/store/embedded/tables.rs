//! The redb tables of the embedded store: their layout, and the one place rows change.
//! The operations on them live beside, one file per use case, as the DynamoDB store's do.
//!
//! Rule: rows change only through [`Tables::put`] and [`Tables::remove`], which keep the
//! available-by-name index, the status index and the status counts in step with the rows.

mod allocate;
mod audit;
mod backup;
mod deletion;
mod expiry;
mod jobs;
mod list;
mod outbox;
mod release;
mod reservations;
mod row;
mod sync;
mod tokens;
mod webhooks;

pub(super) use self::audit::{action_page, audit_facts, cordons, last_audit};
pub(super) use self::backup::{any_item, export_snapshot, restore_marker};
pub(super) use self::deletion::{deletions_due, expired_histories};
pub(super) use self::jobs::job_records;
pub(super) use self::list::{
    allocation_facts, available_by_prefix, list_page, read_held_by, read_niosxaas_histories,
    read_niosxaas_history, read_row,
};
pub(super) use self::outbox::{deliveries, outbox_backlog};
pub(super) use self::reservations::{held_rows, reservable, reservation_counts, reservations};
pub(super) use self::row::migrate_rows;
pub(super) use self::sync::{SyncPlan, plan_sync};
pub(super) use self::tokens::token_uses;
pub(super) use self::webhooks::webhook_uses;

use crate::domain::time::EpochSecs;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::keys::{KeyChanges, KeyIndex};
use crate::domain::ProviderSandbox;
use crate::domain::lease::{self, LeaseDecision};
use crate::domain::lifecycle::{self, NotHolder, Release};
use crate::domain::usage::AllocationFacts;
use crate::domain::used::UsedAccount;
use crate::domain::{
    ALLOCATED_BY_BROKER, LabPolicy, NamePrefix, NewSandbox, NiosxaasCleanup, NiosxaasHistory,
    Sandbox, SandboxStatus,
};
use crate::store::{
    Allocation, AllocationRequest, DeletionOutcome, ImportSummary, JobRecord, LeaseOutcome,
    ListCursor, ListQuery, Outcome, PoolStats, Refusal, ReleaseOutcome, ReleaseRequest,
    SandboxPage, StoreError, SyncSummary, finished_change,
};

/// `sandbox_id` → the row in its binary form (`row.rs`).
const SANDBOXES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sandboxes");
/// `"<name>\0<sandbox_id>"` → `sandbox_id`, for every `available` row: allocation takes the
/// first entry at or after the name prefix, so a prefix request costs one seek.
const AVAILABLE_BY_NAME: TableDefinition<'_, &str, &str> =
    TableDefinition::new("available_by_name");
/// Encoded allocation key → `sandbox_id`, for keys no allocated row holds: those a restore
/// brought in (a DynamoDB export carries the `ALLOC#` items of released and deleted rows)
/// and those of files from before the key index (`keys.rs`). Kept only so an export gives
/// back what was restored; which sandbox a key holds comes from the index alone.
const ALLOCATION_KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new("allocation_keys");
/// Job name → its lease and last run, as JSON.
const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jobs");
/// `"<status>\0<sandbox_id>"` for every row, so a list filtered by status reads only that
/// status's rows, in `sandbox_id` order like the unfiltered list.
const BY_STATUS: TableDefinition<'_, &str, ()> = TableDefinition::new("by_status");
/// `sandbox_id` → its NIOSXaaS history item as JSON (the `NIOSXAAS#` items of docs/dynamodb.md).
const NIOSXAAS_HISTORY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("niosxaas_history");
/// `sandbox_id` → the [`UsedAccount`] marker a handed-out row left when it was removed.
const USED_ACCOUNTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("used_accounts");
/// Single records as JSON: [`LAST_LISTING`] (the last listing a sync applied) and
/// [`LAST_AUDIT`] (the last audit's report).
const RECORDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("records");
/// `domain::actions::action_key` → the admin action as JSON: the append-only action log.
const ACTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("actions");
/// Cordon id → the cordon as JSON.
const CORDONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("cordons");
/// Lab token id → the token as JSON (its secret's digest, never the secret).
const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");
/// `"<token_id>\0<sandbox_id>"` for every `allocated` row held under a lab token: what the
/// token holds now, so its cap is checked with one range count.
const TOKEN_HELD: TableDefinition<'_, &str, ()> = TableDefinition::new("token_held");
/// Reservation id → the reservation as JSON.
const RESERVATIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("reservations");
/// `"<reservation>\0<name>\0<sandbox_id>"` → `sandbox_id`, for every `reserved` row: what a
/// reservation holds, in name order, so its lab's allocation takes the first with one seek.
const RESERVED_BY_NAME: TableDefinition<'_, &str, &str> = TableDefinition::new("reserved_by_name");
/// `"<reservation>\0<sandbox_id>"` for every row allocated from a reservation (whatever
/// became of it since): what the reservation used.
const RESERVATION_USED: TableDefinition<'_, &str, ()> = TableDefinition::new("reservation_used");
/// `"<sequence, 20 digits>"` → an event a row change announced
/// (`domain::webhooks::outbox::Announced`), written in the change's own transaction.
const OUTBOX: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("outbox");
/// `"<endpoint>\0<event time, 12 digits>\0<event id>"` → a delivery not yet delivered.
const DELIVERIES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("deliveries");
/// The [`RECORDS`] key of the outbox's last sequence number.
const OUTBOX_SEQUENCE: &str = "outbox_sequence";
/// Webhook endpoint id → `{"endpoint", "state"}` as JSON.
const WEBHOOKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("webhooks");
/// The [`RECORDS`] key of the last complete listing a sync applied.
const LAST_LISTING: &str = "last_listing";
/// The [`RECORDS`] key of the last audit's report.
const LAST_AUDIT: &str = "last_audit";
/// The [`RECORDS`] key present once [`mark_own_allocations`] has run on the file.
const OWN_ALLOCATIONS_MARKED: &str = "own_allocations_marked";

fn storage(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(Box::new(err.into()))
}

/// `bytes`, the JSON of the `what` kept under `key`, decoded.
fn json<T: serde::de::DeserializeOwned>(
    what: &str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| {
        StoreError::Internal(format!("{what} {key} cannot be decoded: {err}").into())
    })
}

/// `value` as the JSON the tables keep.
fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Internal(Box::new(err)))
}

fn decode(id: &str, bytes: &[u8]) -> Result<Sandbox, StoreError> {
    row::decode_row(id, bytes)
}

fn available_key(row: &Sandbox) -> String {
    format!("{}\0{}", row.name, row.sandbox_id)
}

/// The [`TOKEN_HELD`] entry of `row`, when it is allocated under a lab token.
fn token_held_key(row: &Sandbox) -> Option<String> {
    let token = row.token_id.as_deref()?;
    (row.status == SandboxStatus::Allocated).then(|| format!("{token}\0{}", row.sandbox_id))
}

/// The [`RESERVED_BY_NAME`] entry of `row`, when it is set aside for a reservation.
fn reserved_key(row: &Sandbox) -> Option<String> {
    let reservation = row.reserved_for.as_deref()?;
    (row.status == SandboxStatus::Reserved)
        .then(|| format!("{reservation}\0{}\0{}", row.name, row.sandbox_id))
}

/// The [`RESERVATION_USED`] entry of `row`, when it was allocated from a reservation.
fn reservation_used_key(row: &Sandbox) -> Option<String> {
    let reservation = row.reserved_for.as_deref()?;
    (row.status != SandboxStatus::Reserved).then(|| format!("{reservation}\0{}", row.sandbox_id))
}

fn status_key(status: SandboxStatus, id: &str) -> String {
    format!("{status}\0{id}")
}

/// Calls `each` with the id of every row in `status`, in id order, from a snapshot's
/// status index.
fn each_id_in_status(
    by_status: &redb::ReadOnlyTable<&'static str, ()>,
    status: SandboxStatus,
    mut each: impl FnMut(&str) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let prefix = status_key(status, "");
    for entry in by_status.range(prefix.as_str()..).map_err(storage)? {
        let (key, _) = entry.map_err(storage)?;
        let Some(id) = key.value().strip_prefix(prefix.as_str()) else {
            break;
        };
        each(id)?;
    }
    Ok(())
}

/// Creates any missing table, so readers never meet a table that does not exist.
pub(super) fn create_all(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(SANDBOXES)?;
    txn.open_table(AVAILABLE_BY_NAME)?;
    txn.open_table(ALLOCATION_KEYS)?;
    txn.open_table(BY_STATUS)?;
    txn.open_table(JOBS)?;
    txn.open_table(NIOSXAAS_HISTORY)?;
    txn.open_table(USED_ACCOUNTS)?;
    txn.open_table(RECORDS)?;
    txn.open_table(ACTIONS)?;
    txn.open_table(CORDONS)?;
    txn.open_table(TOKENS)?;
    txn.open_table(TOKEN_HELD)?;
    txn.open_table(RESERVATIONS)?;
    txn.open_table(RESERVED_BY_NAME)?;
    txn.open_table(RESERVATION_USED)?;
    txn.open_table(WEBHOOKS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(DELIVERIES)?;
    txn.commit()?;
    Ok(())
}

/// Rebuilds the status index when it does not cover every row (a file from before the
/// index existed); returns whether it had to.
pub(super) fn ensure_status_index(db: &Database) -> Result<bool, redb::Error> {
    let txn = db.begin_write()?;
    {
        let sandboxes = txn.open_table(SANDBOXES)?;
        let mut by_status = txn.open_table(BY_STATUS)?;
        if by_status.len()? == sandboxes.len()? {
            return Ok(false);
        }
        by_status.retain(|_, ()| false)?;
        for entry in sandboxes.iter()? {
            let (key, value) = entry?;
            let row = decode(key.value(), value.value())
                .map_err(|err| redb::Error::Corrupted(err.to_string()))?;
            by_status.insert(status_key(row.status, &row.sandbox_id).as_str(), ())?;
        }
    }
    txn.commit()?;
    Ok(true)
}

/// Marks allocations made before rows recorded who made them as this service's: only this
/// service wrote an embedded store then, so their recorded lab duration is trusted (see
/// `domain::LabPolicy`). Runs once per file: rows restored later from a DynamoDB export
/// keep whatever mark they had, so the Python service's allocations keep its expiry.
/// Returns how many it marked.
pub(super) fn mark_own_allocations(db: &Database) -> Result<u64, redb::Error> {
    let corrupt = |err: StoreError| redb::Error::Corrupted(err.to_string());
    let txn = db.begin_write()?;
    let mut marked = 0;
    {
        let mut records = txn.open_table(RECORDS)?;
        if records.get(OWN_ALLOCATIONS_MARKED)?.is_some() {
            return Ok(0);
        }
        records.insert(OWN_ALLOCATIONS_MARKED, [].as_slice())?;
        let by_status = txn.open_table(BY_STATUS)?;
        let mut sandboxes = txn.open_table(SANDBOXES)?;
        let prefix = status_key(SandboxStatus::Allocated, "");
        let mut unmarked = Vec::new();
        for entry in by_status.range(prefix.as_str()..)? {
            let (key, _) = entry?;
            let Some(id) = key.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            let row = match sandboxes.get(id)? {
                Some(value) => decode(id, value.value()).map_err(corrupt)?,
                None => continue,
            };
            if row.allocated_by.is_none() {
                unmarked.push(row);
            }
        }
        for mut row in unmarked {
            row.allocated_by = Some(ALLOCATED_BY_BROKER.to_owned());
            let bytes = row::encode_row(&row).map_err(corrupt)?;
            sandboxes.insert(row.sandbox_id.as_str(), bytes.as_slice())?;
            marked += 1;
        }
    }
    txn.commit()?;
    Ok(marked)
}

/// Counts rows per status and builds the allocation-key index from them; `None` when a
/// row cannot be decoded.
pub(super) fn scan_rows(db: &Database) -> Result<Option<(PoolStats, KeyIndex)>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SANDBOXES)?;
    let mut stats = PoolStats::default();
    let mut keys = KeyChanges::default();
    for entry in table.iter()? {
        let (key, value) = entry?;
        match decode(key.value(), value.value()) {
            Ok(row) => {
                stats.adjust(row.status, 1);
                keys.row_added(&row);
            }
            Err(_) => return Ok(None),
        }
    }
    Ok(Some((stats, KeyIndex::from(keys))))
}

/// Deletes the [`ALLOCATION_KEYS`] entries of keys an allocated row holds (`index`): a
/// file from before the index kept every key there. Returns how many it deleted.
pub(super) fn prune_held_keys(db: &Database, index: &KeyIndex) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let pruned = {
        let mut keys = txn.open_table(ALLOCATION_KEYS)?;
        let before = keys.len()?;
        keys.retain(|key, _| !index.contains(key))?;
        before - keys.len()?
    };
    if pruned == 0 {
        txn.abort()?;
    } else {
        txn.commit()?;
    }
    Ok(pruned)
}

/// Rows gained (+) and lost (−) per status in one transaction, applied to the shared
/// counts only after the commit succeeds.
#[derive(Debug, Default)]
pub(super) struct StatusDeltas(BTreeMap<SandboxStatus, i64>);

impl StatusDeltas {
    fn add(&mut self, status: SandboxStatus, delta: i64) {
        *self.0.entry(status).or_default() += delta;
    }

    /// Adds the committed changes to `stats`.
    pub(super) fn apply_to(&self, stats: &mut PoolStats) {
        for (status, delta) in &self.0 {
            stats.adjust(*status, *delta);
        }
    }
}

/// A table of one write transaction, opened on its first use. redb keeps every table a
/// transaction opened and looks each up again at commit, used or not: opening all 18 for
/// every group commit cost about as much as a whole allocation's status-index writes.
pub(super) struct Lazy<'txn, K: redb::Key + 'static, V: redb::Value + 'static> {
    definition: TableDefinition<'static, K, V>,
    table: std::cell::OnceCell<redb::Table<'txn, K, V>>,
}

impl<'txn, K: redb::Key + 'static, V: redb::Value + 'static> Lazy<'txn, K, V> {
    fn new(definition: TableDefinition<'static, K, V>) -> Self {
        Self {
            definition,
            table: std::cell::OnceCell::new(),
        }
    }

    /// The table, to read; opened in `txn` if this is its first use.
    fn read(&self, txn: &'txn WriteTransaction) -> Result<&redb::Table<'txn, K, V>, StoreError> {
        if let Some(table) = self.table.get() {
            return Ok(table);
        }
        let table = txn.open_table(self.definition).map_err(storage)?;
        Ok(self.table.get_or_init(|| table))
    }

    /// The table, to write; opened in `txn` if this is its first use.
    fn write(
        &mut self,
        txn: &'txn WriteTransaction,
    ) -> Result<&mut redb::Table<'txn, K, V>, StoreError> {
        self.read(txn)?;
        self.table
            .get_mut()
            .ok_or_else(|| StoreError::Internal("a table just opened is gone".into()))
    }
}

/// The tables of one write transaction. The three every row change writes are opened
/// with it; the others on first use ([`Lazy`]).
pub(super) struct Tables<'txn> {
    txn: &'txn WriteTransaction,
    sandboxes: redb::Table<'txn, &'static str, &'static [u8]>,
    available: redb::Table<'txn, &'static str, &'static str>,
    by_status: redb::Table<'txn, &'static str, ()>,
    allocation_keys: Lazy<'txn, &'static str, &'static str>,
    jobs: Lazy<'txn, &'static str, &'static [u8]>,
    niosxaas_history: Lazy<'txn, &'static str, &'static [u8]>,
    used: Lazy<'txn, &'static str, &'static [u8]>,
    records: Lazy<'txn, &'static str, &'static [u8]>,
    actions: Lazy<'txn, &'static str, &'static [u8]>,
    cordons: Lazy<'txn, &'static str, &'static [u8]>,
    tokens: Lazy<'txn, &'static str, &'static [u8]>,
    token_held: Lazy<'txn, &'static str, ()>,
    reservations: Lazy<'txn, &'static str, &'static [u8]>,
    reserved: Lazy<'txn, &'static str, &'static str>,
    reservation_used: Lazy<'txn, &'static str, ()>,
    webhooks: Lazy<'txn, &'static str, &'static [u8]>,
    outbox: Lazy<'txn, &'static str, &'static [u8]>,
    deliveries: Lazy<'txn, &'static str, &'static [u8]>,
    deltas: StatusDeltas,
    /// The committed allocation-key index, and this transaction's changes to it.
    keys: &'txn KeyIndex,
    key_changes: KeyChanges,
}

impl<'txn> Tables<'txn> {
    /// Opens the row tables in `txn` (the others wait for their first use), beside the
    /// committed allocation-key index `keys`.
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        keys: &'txn KeyIndex,
    ) -> Result<Self, redb::Error> {
        Ok(Self {
            txn,
            sandboxes: txn.open_table(SANDBOXES)?,
            available: txn.open_table(AVAILABLE_BY_NAME)?,
            by_status: txn.open_table(BY_STATUS)?,
            allocation_keys: Lazy::new(ALLOCATION_KEYS),
            jobs: Lazy::new(JOBS),
            niosxaas_history: Lazy::new(NIOSXAAS_HISTORY),
            used: Lazy::new(USED_ACCOUNTS),
            records: Lazy::new(RECORDS),
            actions: Lazy::new(ACTIONS),
            cordons: Lazy::new(CORDONS),
            tokens: Lazy::new(TOKENS),
            token_held: Lazy::new(TOKEN_HELD),
            reservations: Lazy::new(RESERVATIONS),
            reserved: Lazy::new(RESERVED_BY_NAME),
            reservation_used: Lazy::new(RESERVATION_USED),
            webhooks: Lazy::new(WEBHOOKS),
            outbox: Lazy::new(OUTBOX),
            deliveries: Lazy::new(DELIVERIES),
            deltas: StatusDeltas::default(),
            keys,
            key_changes: KeyChanges::default(),
        })
    }

    /// The status-count and allocation-key changes made so far, to apply once committed.
    pub(super) fn into_changes(self) -> (StatusDeltas, KeyChanges) {
        (self.deltas, self.key_changes)
    }

    /// The sandbox the allocation key `key` (encoded) holds, this transaction's writes
    /// included.
    fn key_holder(&self, key: &str) -> Option<String> {
        self.key_changes.get(self.keys, key)
    }

    fn row(&self, id: &str) -> Result<Option<Sandbox>, StoreError> {
        let guard = self.sandboxes.get(id).map_err(storage)?;
        guard.map(|value| decode(id, value.value())).transpose()
    }

    /// Writes `new`, replacing `old`, keeps the index and counts in step, and puts the
    /// event the change announces (if any) in the outbox, in the same transaction.
    fn put(&mut self, old: Option<&Sandbox>, new: &Sandbox) -> Result<(), StoreError> {
        self.put_announcing(old, new, false)
    }

    /// [`Self::put`], `by_expiry` saying auto-expiry ended the allocation.
    fn put_announcing(
        &mut self,
        old: Option<&Sandbox>,
        new: &Sandbox,
        by_expiry: bool,
    ) -> Result<(), StoreError> {
        self.write_row(old, new)?;
        let Some(old) = old else { return Ok(()) };
        self.enqueue(|| {
            crate::domain::webhooks::outbox::announce(old.status, new, by_expiry)
                .map(crate::domain::webhooks::outbox::Pending::Sandbox)
        })
    }

    /// Writes `new`, replacing `old`, and keeps the index and counts in step.
    fn write_row(&mut self, old: Option<&Sandbox>, new: &Sandbox) -> Result<(), StoreError> {
        if let Some(old) = old {
            self.unindex(old)?;
        }
        if new.status == SandboxStatus::Available {
            self.available
                .insert(available_key(new).as_str(), new.sandbox_id.as_str())
                .map_err(storage)?;
        }
        if let Some(key) = token_held_key(new) {
            self.token_held
                .write(self.txn)?
                .insert(key.as_str(), ())
                .map_err(storage)?;
        }
        if let Some(key) = reserved_key(new) {
            self.reserved
                .write(self.txn)?
                .insert(key.as_str(), new.sandbox_id.as_str())
                .map_err(storage)?;
        }
        if let Some(key) = reservation_used_key(new) {
            self.reservation_used
                .write(self.txn)?
                .insert(key.as_str(), ())
                .map_err(storage)?;
        }
        self.deltas.add(new.status, 1);
        self.by_status
            .insert(status_key(new.status, &new.sandbox_id).as_str(), ())
            .map_err(storage)?;
        self.key_changes.row_added(new);
        let bytes = row::encode_row(new)?;
        self.sandboxes
            .insert(new.sandbox_id.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Deletes `old` and its index entries; a row that was handed out leaves its
    /// [`UsedAccount`] marker in the same transaction, so its account never comes back.
    fn remove(&mut self, old: &Sandbox, now: EpochSecs) -> Result<(), StoreError> {
        if let Some(marker) = UsedAccount::left_by(old, now) {
            let bytes = encode(&marker)?;
            self.used
                .write(self.txn)?
                .insert(old.sandbox_id.as_str(), bytes.as_slice())
                .map_err(storage)?;
        }
        self.unindex(old)?;
        self.sandboxes
            .remove(old.sandbox_id.as_str())
            .map_err(storage)?;
        Ok(())
    }

    /// What the broker has for `id`: its row, else whether a used-account marker is kept.
    fn prior(&self, id: &str) -> Result<(Option<Sandbox>, bool), StoreError> {
        prior_in(&self.sandboxes, self.used.read(self.txn)?, id)
    }

    fn unindex(&mut self, old: &Sandbox) -> Result<(), StoreError> {
        if let Some(key) = token_held_key(old) {
            self.token_held
                .write(self.txn)?
                .remove(key.as_str())
                .map_err(storage)?;
        }
        if let Some(key) = reserved_key(old) {
            self.reserved
                .write(self.txn)?
                .remove(key.as_str())
                .map_err(storage)?;
        }
        if let Some(key) = reservation_used_key(old) {
            self.reservation_used
                .write(self.txn)?
                .remove(key.as_str())
                .map_err(storage)?;
        }
        self.deltas.add(old.status, -1);
        self.key_changes.row_removed(self.keys, old);
        self.by_status
            .remove(status_key(old.status, &old.sandbox_id).as_str())
            .map_err(storage)?;
        if old.status == SandboxStatus::Available {
            self.available
                .remove(available_key(old).as_str())
                .map_err(storage)?;
        }
        Ok(())
    }
}

/// What `rows` and `used` (a write transaction's tables or a snapshot's) hold for `id`:
/// its row, else whether a used-account marker is kept.
fn prior_in(
    rows: &impl ReadableTable<&'static str, &'static [u8]>,
    used: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<(Option<Sandbox>, bool), StoreError> {
    let row = rows
        .get(id)
        .map_err(storage)?
        .map(|value| decode(id, value.value()))
        .transpose()?;
    let used = row.is_none() && used.get(id).map_err(storage)?.is_some();
    Ok((row, used))
}

/// The rows in `status` that `wanted` picks, from a fresh snapshot (through the status
/// index).
pub(super) fn rows_where(
    db: &Database,
    status: SandboxStatus,
    wanted: impl Fn(&Sandbox) -> bool,
) -> Result<Vec<Sandbox>, StoreError> {
    // With no limit there is one page.
    Ok(page_where(db, status, None, usize::MAX, &wanted)?.rows)
}

/// One page of [`page_where`]: the rows picked, and where the next page starts.
pub(super) struct Page {
    /// The rows picked.
    pub(super) rows: Vec<Sandbox>,
    /// The last id looked at, when the page was full (more may follow).
    pub(super) next: Option<String>,
}

/// The rows in `status` after the id `after` that `wanted` picks, looking at `limit` rows
/// at most, from a fresh snapshot: how a job finds its rows a page at a time without
/// holding up the writer. It then writes only what it changes, each row decided again as
/// it is then (`EmbeddedStore::sweep`).
pub(super) fn page_where(
    db: &Database,
    status: SandboxStatus,
    after: Option<&str>,
    limit: usize,
    wanted: &impl Fn(&Sandbox) -> bool,
) -> Result<Page, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let by_status = txn.open_table(BY_STATUS).map_err(storage)?;
    let rows = txn.open_table(SANDBOXES).map_err(storage)?;
    let prefix = status_key(status, "");
    let start = status_key(status, after.unwrap_or_default());
    let bounds = (
        if after.is_some() {
            Bound::Excluded(start.as_str())
        } else {
            Bound::Included(start.as_str())
        },
        Bound::Unbounded,
    );
    let mut picked = Vec::new();
    let (mut looked, mut last, mut full) = (0, String::new(), false);
    for entry in by_status.range::<&str>(bounds).map_err(storage)? {
        let (key, _) = entry.map_err(storage)?;
        let Some(id) = key.value().strip_prefix(prefix.as_str()) else {
            break;
        };
        if looked == limit {
            full = true;
            break;
        }
        looked += 1;
        last.clear();
        last.push_str(id);
        if let Some(value) = rows.get(id).map_err(storage)? {
            let row = decode(id, value.value())?;
            if wanted(&row) {
                picked.push(row);
            }
        }
    }
    let page = Page {
        rows: picked,
        next: full.then_some(last),
    };
    Ok(page)
}

/// The ids of `rows`.
pub(super) fn ids(rows: Vec<Sandbox>) -> Vec<String> {
    rows.into_iter().map(|row| row.sandbox_id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExternalId, SandboxId, SandboxName};

    fn every_field_set() -> Sandbox {
        let at = |secs| Some(EpochSecs::new(secs));
        Sandbox {
            sandbox_id: "4711".into(),
            name: "lab-dns-0001 \"ü\"".into(),
            external_id: "identity/accounts/x".into(),
            status: SandboxStatus::PendingDeletion,
            holder: Some("stu-1".into()),
            allocated_at: at(1_700_000_000),
            lab_duration_hours: Some(48),
            allocated_by: Some(ALLOCATED_BY_BROKER.into()),
            deletion_requested_at: at(1_700_000_100),
            deletion_retry_count: 3,
            last_synced: at(-5),
            idempotency_key: Some("idem".into()),
            lab: Some("lab-dns".into()),
            created_at: EpochSecs::new(i64::MIN),
            updated_at: EpochSecs::new(i64::MAX),
            sfdc_account_id: Some("001X".into()),
            deleted_at: at(1),
            ttl: at(2),
            next_deletion_attempt_at: at(3),
            deletion_claimed_by: Some("instance-a".into()),
            deletion_claimed_until: at(4),
            first_deletion_failure_at: at(5),
            deletion_transient_failures: u32::MAX,
            last_deletion_error: Some("503\nretry".into()),
            niosxaas: Some(NiosxaasCleanup {
                niosxaas_cleaned_at: at(6),
                niosxaas_cleanup_skipped: true,
                niosxaas_cleanup_failed_reason: Some("why".into()),
                niosxaas_services_matched: 2,
                niosxaas_shadow_mode: true,
            }),
            quarantine_reason: Some("suspicious".into()),
            token_id: Some("tok_1".into()),
            reserved_for: Some("rsv_1".into()),
        }
    }

    #[test]
    fn rows_round_trip_in_the_binary_form_with_every_field_set_or_none() {
        let full = every_field_set();
        let bytes = row::encode_row(&full).unwrap();
        assert_eq!(bytes[0], 0xB1);
        assert_eq!(row::decode_row("4711", &bytes).unwrap(), full);
        let mut bare = row("7").into_available_row(EpochSecs::new(9));
        bare.status = SandboxStatus::Reserved;
        let bytes = row::encode_row(&bare).unwrap();
        assert_eq!(row::decode_row("7", &bytes).unwrap(), bare);
        assert!(
            bytes.len() < serde_json::to_vec(&bare).unwrap().len() / 3,
            "{} bytes",
            bytes.len()
        );
        // Cut short, or with a byte too many, it is refused, never misread.
        let full = row::encode_row(&full).unwrap();
        for cut in [1, 10, full.len() - 1] {
            assert!(row::decode_row("4711", &full[..cut]).is_err(), "{cut}");
        }
        let mut longer = full;
        longer.push(0);
        assert!(row::decode_row("4711", &longer).is_err());
    }

    #[test]
    fn json_rows_of_an_earlier_build_are_rewritten_once_on_open_and_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        create_all(&db).unwrap();
        let (full, bare) = (
            every_field_set(),
            row("8").into_available_row(EpochSecs::new(1)),
        );
        let txn = db.begin_write().unwrap();
        {
            // As a build before the binary form wrote them.
            let mut rows = txn.open_table(SANDBOXES).unwrap();
            for old in [&full, &bare] {
                let json = serde_json::to_vec(old).unwrap();
                rows.insert(old.sandbox_id.as_str(), json.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        assert_eq!(
            read_row(&db, "4711").unwrap().unwrap(),
            full,
            "JSON still reads"
        );

        assert_eq!(row::migrate_rows(&db).unwrap(), 2);
        assert_eq!(row::migrate_rows(&db).unwrap(), 0, "once");
        let txn = db.begin_read().unwrap();
        let rows = txn.open_table(SANDBOXES).unwrap();
        for id in ["4711", "8"] {
            assert_eq!(rows.get(id).unwrap().unwrap().value()[0], 0xB1, "{id}");
        }
        assert_eq!(read_row(&db, "4711").unwrap().unwrap(), full);
        assert_eq!(read_row(&db, "8").unwrap().unwrap(), bare);
    }

    fn row(id: &str) -> NewSandbox {
        NewSandbox {
            sandbox_id: SandboxId::parse("id", id).unwrap(),
            name: SandboxName::parse("name", &format!("lab-{id}")).unwrap(),
            external_id: ExternalId::parse("ext", "identity/accounts/x").unwrap(),
            sfdc_account_id: None,
        }
    }

    /// A store file with rows 1 and 2, row 1 allocated to `stu` as a build before
    /// `allocated_by` stored it; `also` writes more in the same transaction.
    fn file_with_one_allocation(
        dir: &std::path::Path,
        also: impl FnOnce(&mut Tables<'_>),
    ) -> Database {
        let db = Database::create(dir.join("t.redb")).unwrap();
        create_all(&db).unwrap();
        let (txn, keys) = (db.begin_write().unwrap(), KeyIndex::default());
        {
            let mut tables = Tables::open(&txn, &keys).unwrap();
            tables
                .import(vec![row("1"), row("2")], EpochSecs::new(0))
                .unwrap();
            let old = tables.row("1").unwrap().unwrap();
            let mut allocated = old.clone();
            allocated.status = SandboxStatus::Allocated;
            allocated.holder = Some("stu".into());
            allocated.allocated_at = Some(EpochSecs::new(100));
            allocated.lab_duration_hours = Some(2);
            tables.put(Some(&old), &allocated).unwrap();
            also(&mut tables);
        }
        txn.commit().unwrap();
        db
    }

    #[test]
    fn allocations_from_before_the_mark_are_marked_as_this_services_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_with_one_allocation(dir.path(), |_| {});

        assert_eq!(mark_own_allocations(&db).unwrap(), 1);
        assert_eq!(mark_own_allocations(&db).unwrap(), 0, "once");
        let marked = read_row(&db, "1").unwrap().unwrap();
        assert!(marked.allocated_here());
        assert_eq!(marked.lab_duration_hours, Some(2));
        assert_eq!(read_row(&db, "2").unwrap().unwrap().allocated_by, None);
    }

    #[test]
    fn a_file_that_stored_every_allocation_key_keeps_only_those_no_row_holds() {
        let dir = tempfile::tempdir().unwrap();
        let db = file_with_one_allocation(dir.path(), |tables| {
            // As a build before the index kept them: the live key, and one whose row is gone.
            let stored = tables.allocation_keys.write(tables.txn).unwrap();
            stored.insert("stu", "1").unwrap();
            stored.insert("gone", "9").unwrap();
        });

        let (stats, index) = scan_rows(&db).unwrap().unwrap();
        assert_eq!((stats.allocated, stats.available), (1, 1));
        assert_eq!(index.get("stu").as_deref(), Some("1"));
        assert_eq!(index.get("gone"), None);
        assert_eq!(prune_held_keys(&db, &index).unwrap(), 1);
        assert_eq!(prune_held_keys(&db, &index).unwrap(), 0, "once");
        let txn = db.begin_read().unwrap();
        let stored = txn.open_table(ALLOCATION_KEYS).unwrap();
        assert_eq!(stored.len().unwrap(), 1);
        assert!(stored.get("gone").unwrap().is_some());
        // An export still carries both: the held key from its row, the other as stored.
        let sandboxes = txn.open_table(SANDBOXES).unwrap();
        let keys = backup::keys_in(&txn, &sandboxes).unwrap();
        let expected = [("gone", "9"), ("stu", "1")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(keys, BTreeMap::from(expected));
    }

    #[test]
    fn a_missing_status_index_is_rebuilt_and_then_serves_filtered_lists() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        create_all(&db).unwrap();
        let (txn, keys) = (db.begin_write().unwrap(), KeyIndex::default());
        {
            let mut tables = Tables::open(&txn, &keys).unwrap();
            tables
                .import(vec![row("1"), row("2"), row("3")], EpochSecs::new(0))
                .unwrap();
            tables.by_status.retain(|_, ()| false).unwrap();
        }
        txn.commit().unwrap();

        assert!(ensure_status_index(&db).unwrap(), "the gap is noticed");
        assert!(
            !ensure_status_index(&db).unwrap(),
            "a complete index is left alone"
        );

        let query = ListQuery {
            status: Some(SandboxStatus::Available),
            limit: 2,
            ..ListQuery::default()
        };
        let first = list_page(&db, &query).unwrap();
        let second = list_page(
            &db,
            &ListQuery {
                cursor: first.next.clone(),
                ..query
            },
        )
        .unwrap();
        let ids: Vec<String> = first
            .sandboxes
            .iter()
            .chain(&second.sandboxes)
            .map(|r| r.sandbox_id.clone())
            .collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert!(second.next.is_none());
    }
}
