//! The redb tables of the embedded store and every operation on them.
//!
//! Rule: rows change only through [`Tables::put`] and [`Tables::remove`], which keep the
//! available-by-name index, the status index and the status counts in step with the rows.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use crate::domain::ProviderSandbox;
use crate::domain::lease::{self, LeaseDecision};
use crate::domain::lifecycle::{self, NotHolder, Release, SyncStep};
use crate::domain::{
    ALLOCATED_BY_BROKER, DeletableStatus, LabPolicy, NewSandbox, NiosxaasCleanup, NiosxaasHistory,
    Sandbox, SandboxId, SandboxStatus, StudentKey,
};
use crate::store::{
    Allocation, AllocationRequest, DeletionOutcome, ImportSummary, JobRecord, LeaseOutcome,
    ListCursor, ListQuery, MarkOutcome, PoolStats, SandboxPage, StoreError, SyncSummary,
    TrackStats, TrackTally, allocation_key_of_row, finished_change,
};

/// `sandbox_id` → the row as JSON.
const SANDBOXES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sandboxes");
/// `"<name>\0<sandbox_id>"` → `sandbox_id`, for every `available` row: allocation takes the
/// first entry at or after the name prefix, so a prefix request costs one seek.
const AVAILABLE_BY_NAME: TableDefinition<'_, &str, &str> =
    TableDefinition::new("available_by_name");
/// Encoded allocation key → `sandbox_id` of the allocation it made.
const ALLOCATION_KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new("allocation_keys");
/// Job name → its lease and last run, as JSON.
const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jobs");
/// `"<status>\0<sandbox_id>"` for every row, so a list filtered by status reads only that
/// status's rows, in `sandbox_id` order like the unfiltered list.
const BY_STATUS: TableDefinition<'_, &str, ()> = TableDefinition::new("by_status");
/// `sandbox_id` → its NIOSXaaS history item as JSON (the `NIOSXAAS#` items of contract §5).
const NIOSXAAS_HISTORY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("niosxaas_history");

fn storage(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(Box::new(err.into()))
}

fn decode(id: &str, bytes: &[u8]) -> Result<Sandbox, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|err| StoreError::Internal(format!("row {id} cannot be decoded: {err}").into()))
}

fn available_key(row: &Sandbox) -> String {
    format!("{}\0{}", row.name, row.sandbox_id)
}

fn status_key(status: SandboxStatus, id: &str) -> String {
    format!("{status}\0{id}")
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
    txn.commit()?;
    Ok(())
}

/// Every job's lease and last run.
pub(super) fn job_records(db: &Database) -> Result<Vec<JobRecord>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(JOBS).map_err(storage)?;
    let mut records = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        records.push(decode_job(key.value(), value.value())?);
    }
    Ok(records)
}

fn decode_job(job: &str, bytes: &[u8]) -> Result<JobRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| {
        StoreError::Internal(format!("job record {job} cannot be decoded: {err}").into())
    })
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
/// service ever writes an embedded store, so their recorded lab duration is trusted (see
/// `domain::LabPolicy`). Returns how many it marked.
pub(super) fn mark_own_allocations(db: &Database) -> Result<u64, redb::Error> {
    let corrupt = |err: StoreError| redb::Error::Corrupted(err.to_string());
    let txn = db.begin_write()?;
    let mut marked = 0;
    {
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
            let bytes =
                serde_json::to_vec(&row).map_err(|err| redb::Error::Corrupted(err.to_string()))?;
            sandboxes.insert(row.sandbox_id.as_str(), bytes.as_slice())?;
            marked += 1;
        }
    }
    txn.commit()?;
    Ok(marked)
}

/// Counts rows per status; `None` when a row cannot be decoded.
pub(super) fn count_statuses(db: &Database) -> Result<Option<PoolStats>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SANDBOXES)?;
    let mut stats = PoolStats::default();
    for entry in table.iter()? {
        let (key, value) = entry?;
        match decode(key.value(), value.value()) {
            Ok(row) => stats.adjust(row.status, 1),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(stats))
}

/// The row with this id from a fresh snapshot.
pub(super) fn read_row(db: &Database, id: &str) -> Result<Option<Sandbox>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(SANDBOXES).map_err(storage)?;
    let guard = table.get(id).map_err(storage)?;
    guard.map(|value| decode(id, value.value())).transpose()
}

/// The NIOSXaaS history item of `id` from a fresh snapshot, unless it expired.
pub(super) fn read_niosxaas_history(
    db: &Database,
    id: &str,
    now: i64,
) -> Result<Option<NiosxaasHistory>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(NIOSXAAS_HISTORY).map_err(storage)?;
    let Some(value) = table.get(id).map_err(storage)? else {
        return Ok(None);
    };
    let history: NiosxaasHistory = serde_json::from_slice(value.value()).map_err(|err| {
        StoreError::Internal(format!("history of {id} cannot be decoded: {err}").into())
    })?;
    Ok((history.ttl > now).then_some(history))
}

/// One page in `sandbox_id` order, starting after the cursor. With a status filter only
/// that status's rows are read, through the status index.
pub(super) fn list_page(db: &Database, query: &ListQuery) -> Result<SandboxPage, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(SANDBOXES).map_err(storage)?;
    let after = query.cursor.as_ref().map(|c| c.after_sandbox_id.as_str());
    let mut page = PageBuilder::new(query);
    if let Some(status) = query.status {
        let index = txn.open_table(BY_STATUS).map_err(storage)?;
        let prefix = status_key(status, "");
        let start = status_key(status, after.unwrap_or(""));
        for entry in index.range(start.as_str()..).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let Some(id) = key.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            if Some(id) == after {
                continue;
            }
            let Some(value) = table.get(id).map_err(storage)? else {
                continue;
            };
            if page.offer(decode(id, value.value())?) {
                break;
            }
        }
    } else {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        for entry in table
            .range::<&str>((start, Bound::Unbounded))
            .map_err(storage)?
        {
            let (key, value) = entry.map_err(storage)?;
            if page.offer(decode(key.value(), value.value())?) {
                break;
            }
        }
    }
    Ok(page.finish())
}

/// Collects up to `limit` matching rows and notices whether one more exists.
struct PageBuilder<'q> {
    query: &'q ListQuery,
    rows: Vec<Sandbox>,
    more: bool,
}

impl<'q> PageBuilder<'q> {
    fn new(query: &'q ListQuery) -> Self {
        Self {
            query,
            rows: Vec::with_capacity(query.limit),
            more: false,
        }
    }

    /// Takes `row` if it matches; `true` once the page is full and another match was seen.
    fn offer(&mut self, row: Sandbox) -> bool {
        if !self.query.matches(&row) {
            return false;
        }
        if self.rows.len() == self.query.limit {
            self.more = true;
            return true;
        }
        self.rows.push(row);
        false
    }

    fn finish(self) -> SandboxPage {
        let next = self
            .more
            .then(|| self.rows.last())
            .flatten()
            .map(|last| ListCursor::after(&last.sandbox_id));
        SandboxPage {
            sandboxes: self.rows,
            next,
        }
    }
}

/// Per-lab counts over rows that carry a `track_name`, sorted by name.
pub(super) fn track_stats(db: &Database) -> Result<Vec<TrackStats>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(SANDBOXES).map_err(storage)?;
    let mut tally = TrackTally::default();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let row = decode(key.value(), value.value())?;
        if let Some(name) = &row.track_name {
            tally.count(name, Some(row.status));
        }
    }
    Ok(tally.into_stats())
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

/// The open tables of one write transaction.
pub(super) struct Tables<'txn> {
    sandboxes: redb::Table<'txn, &'static str, &'static [u8]>,
    available: redb::Table<'txn, &'static str, &'static str>,
    allocation_keys: redb::Table<'txn, &'static str, &'static str>,
    by_status: redb::Table<'txn, &'static str, ()>,
    jobs: redb::Table<'txn, &'static str, &'static [u8]>,
    niosxaas_history: redb::Table<'txn, &'static str, &'static [u8]>,
    deltas: StatusDeltas,
}

impl<'txn> Tables<'txn> {
    /// Opens every table in `txn`.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            sandboxes: txn.open_table(SANDBOXES)?,
            available: txn.open_table(AVAILABLE_BY_NAME)?,
            allocation_keys: txn.open_table(ALLOCATION_KEYS)?,
            by_status: txn.open_table(BY_STATUS)?,
            jobs: txn.open_table(JOBS)?,
            niosxaas_history: txn.open_table(NIOSXAAS_HISTORY)?,
            deltas: StatusDeltas::default(),
        })
    }

    /// The status changes made so far.
    pub(super) fn into_deltas(self) -> StatusDeltas {
        self.deltas
    }

    fn row(&self, id: &str) -> Result<Option<Sandbox>, StoreError> {
        let guard = self.sandboxes.get(id).map_err(storage)?;
        guard.map(|value| decode(id, value.value())).transpose()
    }

    /// Writes `new`, replacing `old`, and keeps the index and counts in step.
    fn put(&mut self, old: Option<&Sandbox>, new: &Sandbox) -> Result<(), StoreError> {
        if let Some(old) = old {
            self.unindex(old)?;
        }
        if new.status == SandboxStatus::Available {
            self.available
                .insert(available_key(new).as_str(), new.sandbox_id.as_str())
                .map_err(storage)?;
        }
        self.deltas.add(new.status, 1);
        self.by_status
            .insert(status_key(new.status, &new.sandbox_id).as_str(), ())
            .map_err(storage)?;
        let bytes = serde_json::to_vec(new).map_err(|err| StoreError::Internal(Box::new(err)))?;
        self.sandboxes
            .insert(new.sandbox_id.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Deletes `old` and its index entries.
    fn remove(&mut self, old: &Sandbox) -> Result<(), StoreError> {
        self.unindex(old)?;
        self.sandboxes
            .remove(old.sandbox_id.as_str())
            .map_err(storage)?;
        Ok(())
    }

    fn unindex(&mut self, old: &Sandbox) -> Result<(), StoreError> {
        self.deltas.add(old.status, -1);
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

    /// The sandbox this allocation key still actively holds, if any.
    fn active_allocation(
        &self,
        request: &AllocationRequest,
    ) -> Result<Option<Sandbox>, StoreError> {
        let key = request.key.encoded();
        let Some(id) = self
            .allocation_keys
            .get(key.as_str())
            .map_err(storage)?
            .map(|guard| guard.value().to_owned())
        else {
            return Ok(None);
        };
        Ok(self
            .row(&id)?
            .filter(|row| row.status == SandboxStatus::Allocated && request.key.holds(row)))
    }

    /// The first available row whose name starts with `prefix`.
    fn first_available(&self, prefix: &str) -> Result<Option<Sandbox>, StoreError> {
        let id = match self.available.range(prefix..).map_err(storage)?.next() {
            Some(entry) => {
                let (key, id) = entry.map_err(storage)?;
                key.value()
                    .starts_with(prefix)
                    .then(|| id.value().to_owned())
            }
            None => None,
        };
        let Some(id) = id else { return Ok(None) };
        match self.row(&id)? {
            Some(row) if row.status == SandboxStatus::Available => Ok(Some(row)),
            _ => Err(StoreError::Internal(
                format!("available index names {id}, which is not available").into(),
            )),
        }
    }

    /// Replays the key's active allocation or takes the first matching available row.
    pub(super) fn allocate(
        &mut self,
        request: &AllocationRequest,
    ) -> Result<Allocation, StoreError> {
        if let Some(sandbox) = self.active_allocation(request)? {
            return Ok(Allocation {
                sandbox,
                newly_allocated: false,
                conflicts: 0,
            });
        }
        let prefix = request.name_prefix.as_ref().map_or("", |p| p.as_str());
        let old = self
            .first_available(prefix)?
            .ok_or(StoreError::NoSandboxAvailable)?;
        let mut new = old.clone();
        new.status = SandboxStatus::Allocated;
        new.allocated_to_track = Some(request.key.student.as_str().to_owned());
        new.idempotency_key = Some(request.key.stored_idempotency_key().to_owned());
        new.track_name = request.track_name.as_ref().map(|t| t.as_str().to_owned());
        new.allocated_at = Some(request.now);
        new.lab_duration_hours = Some(request.lab_duration_hours);
        new.allocated_by = Some(ALLOCATED_BY_BROKER.to_owned());
        new.updated_at = request.now;
        self.put(Some(&old), &new)?;
        self.allocation_keys
            .insert(request.key.encoded().as_str(), new.sandbox_id.as_str())
            .map_err(storage)?;
        Ok(Allocation {
            sandbox: new,
            newly_allocated: true,
            conflicts: 0,
        })
    }

    /// Moves the owner's allocated row to `pending_deletion`; other released states are a repeat.
    pub(super) fn mark(
        &mut self,
        id: &SandboxId,
        student: &StudentKey,
        now: i64,
    ) -> Result<MarkOutcome, StoreError> {
        let old = self.row(id.as_str())?.ok_or(StoreError::SandboxNotFound)?;
        // Read inside this write transaction, so the decision's expectation holds.
        let new = match lifecycle::release(&old, student, now) {
            Err(NotHolder) => return Err(StoreError::NotOwner),
            Ok(Release::Repeat) => {
                return Ok(MarkOutcome {
                    sandbox: old,
                    newly_marked: false,
                });
            }
            Ok(Release::Mark(change)) => change.row,
        };
        self.put(Some(&old), &new)?;
        self.free_allocation_key(&old)?;
        Ok(MarkOutcome {
            sandbox: new,
            newly_marked: true,
        })
    }

    /// Frees the allocation key of a released row, if it still points at it: the key's
    /// next allocation must get a new sandbox.
    fn free_allocation_key(&mut self, released: &Sandbox) -> Result<(), StoreError> {
        let Some(key) = allocation_key_of_row(released) else {
            return Ok(());
        };
        let points_here = self
            .allocation_keys
            .get(key.as_str())
            .map_err(storage)?
            .is_some_and(|guard| guard.value() == released.sandbox_id.as_str());
        if points_here {
            self.allocation_keys.remove(key.as_str()).map_err(storage)?;
        }
        Ok(())
    }

    /// Upserts each row as `available` unless it exists in another status.
    pub(super) fn import(
        &mut self,
        rows: Vec<NewSandbox>,
        now: i64,
    ) -> Result<ImportSummary, StoreError> {
        let mut summary = ImportSummary::default();
        for incoming in rows {
            match self.row(incoming.sandbox_id.as_str())? {
                None => {
                    self.put(None, &incoming.into_available_row(now))?;
                    summary.imported += 1;
                }
                Some(old) if old.status == SandboxStatus::Available => {
                    let mut new = old.clone();
                    new.name = incoming.name.as_str().to_owned();
                    new.external_id = incoming.external_id.as_str().to_owned();
                    if incoming.sfdc_account_id.is_some() {
                        new.sfdc_account_id = incoming.sfdc_account_id;
                    }
                    new.updated_at = now;
                    self.put(Some(&old), &new)?;
                    summary.imported += 1;
                }
                Some(_) => summary.skipped += 1,
            }
        }
        Ok(summary)
    }

    /// Applies a complete provider listing (see [`crate::store::Store::sync_provider`]).
    pub(super) fn sync_provider(
        &mut self,
        listing: Vec<ProviderSandbox>,
        now: i64,
    ) -> Result<SyncSummary, StoreError> {
        let mut summary = SyncSummary::default();
        let mut listed = HashSet::with_capacity(listing.len());
        for sandbox in listing {
            listed.insert(sandbox.sandbox_id.as_str().to_owned());
            let incoming = NewSandbox::from(sandbox);
            let old = self.row(incoming.sandbox_id.as_str())?;
            let step = lifecycle::sync_step(old.as_ref().map(|row| row.status));
            summary.record(step);
            match (step, old) {
                (SyncStep::Untouched, _) => {}
                (_, None) => {
                    let mut row = incoming.into_available_row(now);
                    row.last_synced = Some(now);
                    self.put(None, &row)?;
                }
                (_, Some(old)) => {
                    let mut row = old.clone();
                    row.status = SandboxStatus::Available;
                    row.name = incoming.name.as_str().to_owned();
                    row.external_id = incoming.external_id.as_str().to_owned();
                    if incoming.sfdc_account_id.is_some() {
                        row.sfdc_account_id = incoming.sfdc_account_id;
                    }
                    row.last_synced = Some(now);
                    row.updated_at = now;
                    self.put(Some(&old), &row)?;
                }
            }
        }
        let mut missing = Vec::new();
        for entry in self.available.iter().map_err(storage)? {
            let (_, id) = entry.map_err(storage)?;
            if !listed.contains(id.value()) {
                missing.push(id.value().to_owned());
            }
        }
        for id in missing {
            let Some(old) = self.row(&id)? else { continue };
            if !lifecycle::goes_stale(old.status) {
                continue;
            }
            let mut row = old.clone();
            row.status = SandboxStatus::Stale;
            row.updated_at = now;
            self.put(Some(&old), &row)?;
            summary.marked_stale += 1;
        }
        Ok(summary)
    }

    fn job(&self, job: &str) -> Result<Option<JobRecord>, StoreError> {
        let guard = self.jobs.get(job).map_err(storage)?;
        guard
            .map(|value| decode_job(job, value.value()))
            .transpose()
    }

    fn put_job(&mut self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec(record).map_err(|err| StoreError::Internal(Box::new(err)))?;
        self.jobs
            .insert(record.job.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Takes or renews `job`'s lease unless another holder's is still running.
    pub(super) fn acquire_lease(
        &mut self,
        job: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<LeaseOutcome, StoreError> {
        let mut record = self.job(job)?.unwrap_or_else(|| JobRecord {
            job: job.to_owned(),
            ..JobRecord::default()
        });
        if let LeaseDecision::HeldBy { holder, until_ms } = lease::decide(
            record.holder.as_deref(),
            record.lease_expires_at_ms,
            holder,
            now_ms,
        ) {
            return Ok(LeaseOutcome::Held { holder, until_ms });
        }
        record.holder = Some(holder.to_owned());
        record.lease_expires_at_ms = now_ms + ttl_ms;
        self.put_job(&record)?;
        Ok(LeaseOutcome::Acquired)
    }

    /// Records a run and, if `holder` still holds the lease, ends it.
    pub(super) fn finish_job_run(
        &mut self,
        run: JobRecord,
        holder: &str,
    ) -> Result<(), StoreError> {
        let mut record = self.job(&run.job)?.unwrap_or_else(|| JobRecord {
            job: run.job.clone(),
            ..JobRecord::default()
        });
        if record.holder.as_deref() == Some(holder) {
            record.holder = None;
            record.lease_expires_at_ms = 0;
        }
        record.last_started_at = run.last_started_at;
        record.last_finished_at = run.last_finished_at;
        record.last_outcome = run.last_outcome;
        record.last_counts = run.last_counts;
        record.next_run_at = run.next_run_at;
        self.put_job(&record)
    }

    /// Ids of every row in `status`, from the status index.
    fn ids_in_status(&self, status: SandboxStatus) -> Result<Vec<String>, StoreError> {
        let prefix = status_key(status, "");
        let mut ids = Vec::new();
        for entry in self.by_status.range(prefix.as_str()..).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let Some(id) = key.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            ids.push(id.to_owned());
        }
        Ok(ids)
    }

    /// Releases ended allocations (see [`crate::store::Store::expire_allocations`]).
    pub(super) fn expire_allocations(
        &mut self,
        now: i64,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let mut expired = Vec::new();
        for id in self.ids_in_status(SandboxStatus::Allocated)? {
            let Some(old) = self.row(&id)? else { continue };
            let Some(change) = lifecycle::expire(&old, policy, now) else {
                continue;
            };
            let row = change.row;
            self.put(Some(&old), &row)?;
            self.free_allocation_key(&old)?;
            expired.push(row);
        }
        Ok(expired)
    }

    /// Pending rows due for a deletion attempt.
    pub(super) fn deletions_due(
        &self,
        now: i64,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let mut due = Vec::new();
        for id in self.ids_in_status(SandboxStatus::PendingDeletion)? {
            if let Some(row) = self.row(&id)?
                && lifecycle::deletion_due(&row, now, ignore_backoff)
            {
                due.push(row);
            }
        }
        Ok(due)
    }

    /// Claims a pending row for `holder` unless another runner's claim still runs.
    pub(super) fn claim_deletion(
        &mut self,
        id: &str,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<Sandbox>, StoreError> {
        let Some(old) = self.row(id)? else {
            return Ok(None);
        };
        if !lifecycle::deletion_claimable(&old, holder, now) {
            return Ok(None);
        }
        let mut row = old.clone();
        row.deletion_claimed_by = Some(holder.to_owned());
        row.deletion_claimed_until = Some(until);
        self.put(Some(&old), &row)?;
        Ok(Some(row))
    }

    /// Applies a claimed deletion's outcome, if `holder` still holds the claim, and writes
    /// the NIOSXaaS history item of a final outcome in the same transaction.
    pub(super) fn finish_deletion(
        &mut self,
        id: &str,
        holder: &str,
        outcome: &DeletionOutcome,
        niosxaas: Option<NiosxaasCleanup>,
        now: i64,
    ) -> Result<(), StoreError> {
        let Some(old) = self.row(id)? else {
            return Ok(());
        };
        let change = finished_change(&old, holder, outcome, niosxaas, now);
        if !change.expect.holds_for(&old) {
            return Ok(());
        }
        let row = change.row;
        if outcome.is_final()
            && let Some(history) = NiosxaasHistory::of(&row, now)
        {
            let bytes =
                serde_json::to_vec(&history).map_err(|err| StoreError::Internal(Box::new(err)))?;
            self.niosxaas_history
                .insert(id, bytes.as_slice())
                .map_err(storage)?;
        }
        self.put(Some(&old), &row)
    }

    /// Drops tombstones and NIOSXaaS history items whose ttl has passed; counts tombstones.
    pub(super) fn purge_tombstones(&mut self, now: i64) -> Result<u64, StoreError> {
        self.niosxaas_history
            .retain(|_, bytes| {
                serde_json::from_slice::<NiosxaasHistory>(bytes)
                    .map_or(true, |history| history.ttl > now)
            })
            .map_err(storage)?;
        let mut purged = 0;
        for id in self.ids_in_status(SandboxStatus::Deleted)? {
            if let Some(old) = self.row(&id)?
                && old.ttl.is_some_and(|ttl| ttl <= now)
            {
                self.remove(&old)?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Removes stale rows stale since `stale_since` or earlier.
    pub(super) fn delete_stale(&mut self, stale_since: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for id in self.ids_in_status(SandboxStatus::Stale)? {
            let Some(old) = self.row(&id)? else { continue };
            if old.updated_at <= stale_since {
                self.remove(&old)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Removes every row in `status`.
    pub(super) fn bulk_delete(&mut self, status: DeletableStatus) -> Result<u64, StoreError> {
        let mut doomed = Vec::new();
        for entry in self.sandboxes.iter().map_err(storage)? {
            let (key, value) = entry.map_err(storage)?;
            let row = decode(key.value(), value.value())?;
            if row.status == status.status() {
                doomed.push(row);
            }
        }
        for row in &doomed {
            self.remove(row)?;
        }
        Ok(doomed.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExternalId, SandboxName};

    fn row(id: &str) -> NewSandbox {
        NewSandbox {
            sandbox_id: SandboxId::parse("id", id).unwrap(),
            name: SandboxName::parse("name", &format!("lab-{id}")).unwrap(),
            external_id: ExternalId::parse("ext", "identity/accounts/x").unwrap(),
            sfdc_account_id: None,
        }
    }

    #[test]
    fn allocations_from_before_the_mark_are_marked_as_this_services_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        create_all(&db).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut tables = Tables::open(&txn).unwrap();
            tables.import(vec![row("1"), row("2")], 0).unwrap();
            // An allocation as a build before `allocated_by` stored it.
            let old = tables.row("1").unwrap().unwrap();
            let mut allocated = old.clone();
            allocated.status = SandboxStatus::Allocated;
            allocated.allocated_to_track = Some("stu".into());
            allocated.allocated_at = Some(100);
            allocated.lab_duration_hours = Some(2);
            tables.put(Some(&old), &allocated).unwrap();
        }
        txn.commit().unwrap();

        assert_eq!(mark_own_allocations(&db).unwrap(), 1);
        assert_eq!(mark_own_allocations(&db).unwrap(), 0, "once");
        let marked = read_row(&db, "1").unwrap().unwrap();
        assert!(marked.allocated_here());
        assert_eq!(marked.lab_duration_hours, Some(2));
        assert_eq!(read_row(&db, "2").unwrap().unwrap().allocated_by, None);
    }

    #[test]
    fn a_missing_status_index_is_rebuilt_and_then_serves_filtered_lists() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        create_all(&db).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut tables = Tables::open(&txn).unwrap();
            tables
                .import(vec![row("1"), row("2"), row("3")], 0)
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
