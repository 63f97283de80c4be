//! The embedded store: an ACID redb file in `BROKER_DATA_DIR`, the default store.
//!
//! Rule: one writer thread owns every write. Requests queue commands; the writer applies
//! as many as are waiting in one transaction, commits with `Durability::Immediate`
//! (one fsync for the whole group) and only then answers each of them. Commands run one
//! after another inside the transaction, so races between requests cannot exist here;
//! group commit is what makes durable allocation fast. Reads use redb's MVCC snapshots
//! on the blocking pool and never wait for the writer.

mod keys;
mod tables;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use redb::{Database, DatabaseError, ReadableDatabase, StorageBackend};
use tokio::sync::{mpsc, oneshot};

use self::tables::Tables;
use self::writer::{Applied, Command, Writer, WriterMetrics};
use super::backup::{BackupItem, Consistency, Export, RestoreMarker, Restored};
use super::{
    ActionLog, AdminStore, Allocation, AllocationRequest, AllocationStore, AnalyticsStore,
    BackupStore, DeletionClaim, FinishedDeletion, HealthStore, ImportSummary, JobRecord, JobStore,
    LeaseOutcome, LeaseRequest, LifecycleStore, ListQuery, OutboxStore, Outcome, PoolStats,
    ReleaseOutcome, ReleaseRequest, ReservationStore, SandboxPage, StoreError, SyncSummary,
    TokenStore, WebhookStore,
};
use crate::domain::ProviderSandbox;
use crate::domain::actions::{ActionPage, AdminAction};
use crate::domain::audit::{AuditFacts, AuditReport};
use crate::domain::cordon::Cordon;
use crate::domain::lifecycle::{self, ListingRefused, RowAction, SyncRules};
use crate::domain::reservations::{Reservation, ReservationCounts};
use crate::domain::time::{EpochMillis, EpochSecs};
use crate::domain::tokens::{LabToken, TokenUse};
use crate::domain::usage::AllocationFacts;
use crate::domain::webhooks::outbox::{Delivery, OutboxEvent, Pending};
use crate::domain::webhooks::{DeliveryState, WebhookEndpoint, WebhookUse};
use crate::domain::{
    DeletableStatus, LabPolicy, NamePrefix, NewSandbox, NiosxaasHistory, Sandbox, SandboxId,
    SandboxStatus,
};

/// The file inside the data directory.
const DB_FILE_NAME: &str = "sandbox-broker.redb";
/// Commands that may wait for the writer before senders are slowed down.
const QUEUE_DEPTH: usize = 16 * 1024;
/// Rows one writer command of a job (or a bulk delete) changes at most: a bound on what a
/// job adds to the commit that allocations share.
const JOB_BATCH: usize = 32;
/// After each of its writer commands a job waits this many times as long as the command
/// took to commit: a busy writer slows the job down, an idle one barely does.
const JOB_YIELD: u32 = 3;
/// Status-index entries a job reads from one snapshot: a bound on how long one read
/// holds a blocking thread, and on what a job keeps in memory.
const JOB_PAGE: usize = 1024;

/// Why the embedded store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be created, or the writer thread not started.
    #[error("cannot use data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process has the database open.
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    /// redb refused to open, repair or initialise the file.
    #[error("cannot open database {path}: {source}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// The redb error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored row could not be decoded.
    #[error("database {0} holds a row this version cannot read")]
    Corrupt(PathBuf),
}

/// The redb-backed [`Store`](super::Store). Dropping it lets the writer finish its batch and closes the
/// database cleanly, so the next start needs no crash repair.
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// `None` only while dropping.
    commands: Option<mpsc::Sender<Command>>,
    writer: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<PoolStats>>,
    /// Which sandbox each allocation key holds (`keys.rs`), as of the last commit.
    keys: Arc<keys::KeyIndex>,
    metrics: WriterMetrics,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has answered what it holds.
        self.commands = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("embedded store writer panicked");
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` and starts its writer thread.
    /// Fails with [`OpenError::Locked`] while another process has it open.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let io = |source| OpenError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(DB_FILE_NAME);
        let storage = |source: redb::Error| OpenError::Storage {
            path: path.clone(),
            source: Box::new(source),
        };
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(OpenError::Locked(dir.to_owned()));
            }
            Err(err) => return Err(storage(err.into())),
        };
        Self::start(db, &path)
    }

    /// Opens the store on another redb storage backend (another medium, or a
    /// fault-injecting wrapper in tests); there is no directory to lock.
    pub fn open_with_backend(backend: impl StorageBackend) -> Result<Self, OpenError> {
        let path = PathBuf::from("<custom storage backend>");
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|err| OpenError::Storage {
                path: path.clone(),
                source: Box::new(err.into()),
            })?;
        Self::start(db, &path)
    }

    /// Prepares the tables and counts, then starts the writer thread.
    fn start(db: Database, path: &Path) -> Result<Self, OpenError> {
        let storage = |source: redb::Error| OpenError::Storage {
            path: path.to_owned(),
            source: Box::new(source),
        };
        tables::create_all(&db).map_err(storage)?;
        if tables::ensure_status_index(&db).map_err(storage)? {
            tracing::info!("embedded store: rebuilt the status index");
        }
        let rewritten = tables::migrate_rows(&db).map_err(storage)?;
        if rewritten > 0 {
            tracing::info!(
                rewritten,
                "embedded store: rewrote rows from JSON in the binary form"
            );
        }
        let marked = tables::mark_own_allocations(&db).map_err(storage)?;
        if marked > 0 {
            tracing::info!(
                marked,
                "embedded store: marked earlier allocations as this service's"
            );
        }
        let (stats, keys) = tables::scan_rows(&db)
            .map_err(storage)?
            .ok_or_else(|| OpenError::Corrupt(path.to_owned()))?;
        let pruned = tables::prune_held_keys(&db, &keys).map_err(storage)?;
        if pruned > 0 {
            tracing::info!(
                pruned,
                "embedded store: allocation keys are now read from the rows; deleted their stored copies"
            );
        }
        let keys = Arc::new(keys);

        let db = Arc::new(db);
        let stats = Arc::new(Mutex::new(stats));
        let (commands, queue) = mpsc::channel(QUEUE_DEPTH);
        let metrics = WriterMetrics::new().map_err(|err| OpenError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(err),
        })?;
        let writer = Writer {
            db: Arc::clone(&db),
            stats: Arc::clone(&stats),
            keys: Arc::clone(&keys),
            metrics: metrics.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|source| OpenError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            db,
            commands: Some(commands),
            writer: Some(writer),
            stats,
            keys,
            metrics,
        })
    }

    /// Queues `operation` for the writer and waits until its batch is durable.
    async fn submit<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Tables<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let command: Command = Box::new(move |tables| {
            let result = operation(tables);
            Applied {
                storage_failed: matches!(
                    result,
                    Err(StoreError::Unavailable(_) | StoreError::Internal(_))
                ),
                respond: Box::new(move || {
                    // A requester that gave up is no error: its write stands regardless.
                    let _ = reply.send(result);
                }),
            }
        });
        let commands = self.commands.as_ref().ok_or_else(writer_gone)?;
        commands.send(command).await.map_err(|_| writer_gone())?;
        // The commit failed or never ran. Retrying is safe: allocation replays by key, and
        // marks and imports are idempotent.
        answer.await.map_err(|_| {
            StoreError::Unavailable("the write could not be committed; retry it".into())
        })?
    }

    /// Runs `apply` on `items` in writer commands of at most [`JOB_BATCH`] items each, one
    /// after another, pausing after each for [`JOB_YIELD`] times as long as it took: a
    /// job's writes interleave with allocations instead of holding the writer, and slow
    /// down while the writer is busy (its commits take longer).
    async fn in_batches<I, T>(
        &self,
        items: Vec<I>,
        apply: Arc<impl Fn(&mut Tables<'_>, &[I]) -> Result<T, StoreError> + Send + Sync + 'static>,
    ) -> Result<Vec<T>, StoreError>
    where
        I: Send + 'static,
        T: Send + 'static,
    {
        let mut results = Vec::with_capacity(items.len().div_ceil(JOB_BATCH));
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let batch: Vec<I> = items.by_ref().take(JOB_BATCH).collect();
            let apply = Arc::clone(&apply);
            let started = std::time::Instant::now();
            results.push(self.submit(move |tables| apply(tables, &batch)).await?);
            if items.peek().is_some() {
                tokio::time::sleep(started.elapsed() * JOB_YIELD).await;
            }
        }
        Ok(results)
    }

    /// A job's sweep over the rows in `status`: finds those `wanted` picks on snapshots, a
    /// page of [`JOB_PAGE`] at a time, and has [`Self::in_batches`] `apply` to their ids,
    /// which decides again on each row as it is when written.
    async fn sweep<T: Send + 'static>(
        &self,
        status: SandboxStatus,
        wanted: impl Fn(&Sandbox) -> bool + Send + Sync + 'static,
        apply: impl Fn(&mut Tables<'_>, &[String]) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<Vec<T>, StoreError> {
        let (wanted, apply) = (Arc::new(wanted), Arc::new(apply));
        let mut results = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let wanted = Arc::clone(&wanted);
            let page = self
                .read(move |db| {
                    tables::page_where(db, status, after.as_deref(), JOB_PAGE, &*wanted)
                })
                .await?;
            let ids = tables::ids(page.rows);
            results.extend(self.in_batches(ids, Arc::clone(&apply)).await?);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(results),
            }
        }
    }

    /// Runs a read on the blocking pool against a fresh snapshot.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(|join| StoreError::Internal(Box::new(join)))?
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the embedded store's writer has stopped".into())
}

#[async_trait]
impl AllocationStore for EmbeddedStore {
    async fn allocate(&self, request: AllocationRequest) -> Outcome<Allocation> {
        self.submit(move |tables| tables.allocate(&request)).await
    }

    async fn get(&self, id: &SandboxId) -> Result<Option<Sandbox>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |db| tables::read_row(db, &id)).await
    }

    async fn release(&self, request: ReleaseRequest) -> Outcome<ReleaseOutcome> {
        self.submit(move |tables| tables.release(&request)).await
    }

    async fn held_by(&self, request: &AllocationRequest) -> Result<Option<Sandbox>, StoreError> {
        let request = request.clone();
        let keys = Arc::clone(&self.keys);
        self.read(move |db| tables::read_held_by(db, &keys, &request))
            .await
    }
}

#[async_trait]
impl LifecycleStore for EmbeddedStore {
    async fn sync_provider(
        &self,
        listing: Vec<ProviderSandbox>,
        rules: SyncRules,
        now: EpochSecs,
    ) -> Result<Result<SyncSummary, ListingRefused>, StoreError> {
        let plan = self
            .read(move |db| tables::plan_sync(db, listing, &rules, now))
            .await?;
        let tables::SyncPlan {
            mut summary,
            writes,
            missing,
            listing,
        } = match plan {
            Ok(plan) => plan,
            Err(refused) => return Ok(Err(refused)),
        };
        let written = self
            .in_batches(
                writes,
                Arc::new(move |tables: &mut Tables<'_>, rows: &[NewSandbox]| {
                    tables.apply_listed(rows, &rules, now)
                }),
            )
            .await?;
        written
            .into_iter()
            .flatten()
            .for_each(|step| summary.record(step));
        let marked = self
            .in_batches(
                missing,
                Arc::new(move |tables: &mut Tables<'_>, ids: &[String]| {
                    tables.mark_missing_stale(ids, now)
                }),
            )
            .await?;
        summary.marked_stale = marked.into_iter().sum();
        self.submit(move |tables| tables.record_listing(&listing))
            .await?;
        Ok(Ok(summary))
    }

    async fn expire_allocations(
        &self,
        now: EpochSecs,
        policy: LabPolicy,
    ) -> Result<Vec<Sandbox>, StoreError> {
        let expired = self
            .sweep(
                SandboxStatus::Allocated,
                move |row| policy.expired(row, now),
                move |tables, ids| tables.expire_rows(ids, now, policy),
            )
            .await?;
        Ok(expired.into_iter().flatten().collect())
    }

    async fn delete_stale(
        &self,
        stale_since: EpochSecs,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let deleted = self
            .sweep(
                SandboxStatus::Stale,
                move |row| lifecycle::stale_removable(row, stale_since),
                move |tables, ids| tables.remove_stale(ids, stale_since, now),
            )
            .await?;
        Ok(deleted.into_iter().sum())
    }

    async fn deletions_due(
        &self,
        now: EpochSecs,
        ignore_backoff: bool,
    ) -> Result<Vec<Sandbox>, StoreError> {
        self.read(move |db| tables::deletions_due(db, now, ignore_backoff))
            .await
    }

    async fn claim_deletion(
        &self,
        claim: DeletionClaim<'_>,
    ) -> Result<Option<Sandbox>, StoreError> {
        let (now, until) = (claim.now, claim.until);
        let (id, runner) = (claim.id.as_str().to_owned(), claim.runner.to_owned());
        self.submit(move |tables| tables.claim_deletion(&id, &runner, now, until))
            .await
    }

    async fn finish_deletion(&self, finished: FinishedDeletion<'_>) -> Result<(), StoreError> {
        let FinishedDeletion {
            outcome, niosxaas, ..
        } = finished;
        let now = finished.now;
        let (id, runner) = (
            finished.claimed.sandbox_id.clone(),
            finished.runner.to_owned(),
        );
        self.submit(move |tables| tables.finish_deletion(&id, &runner, &outcome, niosxaas, now))
            .await
    }

    async fn purge_tombstones(&self, now: EpochSecs) -> Result<u64, StoreError> {
        let histories = self
            .read(move |db| tables::expired_histories(db, now))
            .await?;
        self.in_batches(
            histories,
            Arc::new(move |tables: &mut Tables<'_>, ids: &[String]| {
                tables.purge_histories(ids, now)
            }),
        )
        .await?;
        let purged = self
            .sweep(
                SandboxStatus::Deleted,
                move |row| lifecycle::tombstone_purgeable(row, now),
                move |tables, ids| tables.purge_tombstones(ids, now),
            )
            .await?;
        Ok(purged.into_iter().sum())
    }

    async fn audit_facts(&self) -> Result<AuditFacts, StoreError> {
        self.read(tables::audit_facts).await
    }

    async fn save_audit(&self, report: &AuditReport) -> Result<(), StoreError> {
        let report = report.clone();
        self.submit(move |tables| tables.save_audit(&report)).await
    }

    async fn last_audit(&self) -> Result<Option<AuditReport>, StoreError> {
        self.read(tables::last_audit).await
    }
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn acquire_lease(&self, request: LeaseRequest<'_>) -> Result<LeaseOutcome, StoreError> {
        let (now, ttl) = (request.now, request.ttl);
        let (job, instance) = (request.job.to_owned(), request.instance.to_owned());
        self.submit(move |tables| tables.acquire_lease(&job, &instance, now, ttl))
            .await
    }

    async fn finish_job_run(&self, record: JobRecord, instance: &str) -> Result<(), StoreError> {
        let instance = instance.to_owned();
        self.submit(move |tables| tables.finish_job_run(record, &instance))
            .await
    }

    async fn job_records(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.read(tables::job_records).await
    }
}

#[async_trait]
impl AdminStore for EmbeddedStore {
    async fn import(
        &self,
        rows: Vec<NewSandbox>,
        now: EpochSecs,
    ) -> Result<ImportSummary, StoreError> {
        self.submit(move |tables| tables.import(rows, now)).await
    }

    async fn list(&self, query: ListQuery) -> Result<SandboxPage, StoreError> {
        self.read(move |db| tables::list_page(db, &query)).await
    }

    async fn bulk_delete(
        &self,
        status: DeletableStatus,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let status = status.status();
        let removed = self
            .sweep(
                status,
                |_| true,
                move |tables, ids| tables.remove_in_status(ids, status, now),
            )
            .await?;
        Ok(removed.into_iter().sum())
    }

    async fn change_row(
        &self,
        id: &SandboxId,
        action: RowAction,
        now: EpochSecs,
    ) -> Outcome<Sandbox> {
        let id = id.as_str().to_owned();
        self.submit(move |tables| tables.change_row(&id, &action, now))
            .await
    }

    async fn cordons(&self) -> Result<Vec<Cordon>, StoreError> {
        self.read(tables::cordons).await
    }

    async fn add_cordon(&self, cordon: &Cordon) -> Result<(), StoreError> {
        let cordon = cordon.clone();
        self.submit(move |tables| tables.add_cordon(&cordon)).await
    }

    async fn remove_cordon(&self, id: &str) -> Result<Option<Cordon>, StoreError> {
        let id = id.to_owned();
        self.submit(move |tables| tables.remove_cordon(&id)).await
    }
}

#[async_trait]
impl ActionLog for EmbeddedStore {
    async fn record_action(&self, action: &AdminAction) -> Result<(), StoreError> {
        let action = action.clone();
        self.submit(move |tables| tables.record_action(&action))
            .await
    }

    async fn actions(&self, limit: usize, cursor: Option<&str>) -> Result<ActionPage, StoreError> {
        let cursor = cursor.map(str::to_owned);
        self.read(move |db| tables::action_page(db, limit, cursor.as_deref()))
            .await
    }
}

#[async_trait]
impl AnalyticsStore for EmbeddedStore {
    async fn stats(&self) -> Result<PoolStats, StoreError> {
        Ok(*self.stats.lock().unwrap_or_else(PoisonError::into_inner))
    }

    async fn allocation_facts(&self) -> Result<Vec<AllocationFacts>, StoreError> {
        self.read(tables::allocation_facts).await
    }

    async fn available_by_prefix(&self, prefixes: &[NamePrefix]) -> Result<Vec<u64>, StoreError> {
        if prefixes.is_empty() {
            // The default: no snapshot to open on every scrape.
            return Ok(Vec::new());
        }
        let prefixes = prefixes.to_vec();
        self.read(move |db| tables::available_by_prefix(db, &prefixes))
            .await
    }

    async fn niosxaas_history(
        &self,
        id: &SandboxId,
        now: EpochSecs,
    ) -> Result<Option<NiosxaasHistory>, StoreError> {
        let id = id.as_str().to_owned();
        self.read(move |db| tables::read_niosxaas_history(db, &id, now))
            .await
    }

    async fn niosxaas_histories(&self, now: EpochSecs) -> Result<Vec<NiosxaasHistory>, StoreError> {
        self.read(move |db| tables::read_niosxaas_histories(db, now))
            .await
    }
}

#[async_trait]
impl BackupStore for EmbeddedStore {
    async fn export(&self, now: EpochSecs) -> Result<Export, StoreError> {
        let db = Arc::clone(&self.db);
        let (total, counted) = oneshot::channel();
        // A small buffer: the snapshot is read as fast as the client takes it.
        let (items, received) = mpsc::channel(256);
        tokio::task::spawn_blocking(move || tables::export_snapshot(&db, total, &items));
        let count = counted
            .await
            .map_err(|_| StoreError::Internal("the export's reader stopped".into()))??;
        let items = futures::stream::unfold(received, |mut received| async move {
            received.recv().await.map(|item| (item, received))
        });
        Ok(Export {
            header: Export::header("embedded", Consistency::Snapshot, now, count),
            items: Box::pin(items),
        })
    }

    async fn restore_items(
        &self,
        items: Vec<BackupItem>,
        _now: EpochSecs,
    ) -> Result<Vec<Restored>, StoreError> {
        self.submit(move |tables| tables.restore_items(&items))
            .await
    }

    async fn any_item(&self) -> Result<Option<String>, StoreError> {
        self.read(tables::any_item).await
    }

    async fn restore_marker(&self) -> Result<Option<RestoreMarker>, StoreError> {
        self.read(tables::restore_marker).await
    }

    async fn set_restore_marker(&self, marker: Option<RestoreMarker>) -> Result<(), StoreError> {
        self.submit(move |tables| tables.set_restore_marker(marker.as_ref()))
            .await
    }
}

#[async_trait]
impl TokenStore for EmbeddedStore {
    async fn add_token(&self, token: &LabToken, limit: usize, now: EpochSecs) -> Outcome<()> {
        let token = token.clone();
        self.submit(move |tables| tables.add_token(&token, limit, now))
            .await
    }

    async fn tokens(&self) -> Result<Vec<TokenUse>, StoreError> {
        self.read(tables::token_uses).await
    }

    async fn revoke_token(&self, id: &str, now: EpochSecs) -> Result<Option<LabToken>, StoreError> {
        let id = id.to_owned();
        self.submit(move |tables| tables.revoke_token(&id, now))
            .await
    }

    async fn touch_token(&self, id: &str, at: EpochSecs) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.submit(move |tables| tables.touch_token(&id, at)).await
    }
}

#[async_trait]
impl ReservationStore for EmbeddedStore {
    async fn add_reservation(&self, reservation: &Reservation) -> Result<(), StoreError> {
        let reservation = reservation.clone();
        self.submit(move |tables| tables.put_reservation(&reservation))
            .await
    }

    async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.read(tables::reservations).await
    }

    async fn remove_reservation(&self, id: &str) -> Result<Option<Reservation>, StoreError> {
        let id = id.to_owned();
        self.submit(move |tables| tables.remove_reservation(&id))
            .await
    }

    async fn reservation_counts(&self) -> Result<HashMap<String, ReservationCounts>, StoreError> {
        self.read(tables::reservation_counts).await
    }

    async fn held_rows(&self) -> Result<HashMap<String, u64>, StoreError> {
        self.read(tables::held_rows).await
    }

    async fn reservable(&self, prefix: &str) -> Result<u64, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |db| tables::reservable(db, &prefix)).await
    }

    async fn hold_rows(
        &self,
        reservation: &Reservation,
        count: u64,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let reservation = reservation.clone();
        self.submit(move |tables| tables.hold_rows(&reservation, count, now))
            .await
    }

    async fn return_rows(&self, id: &str, now: EpochSecs) -> Result<u64, StoreError> {
        let id = id.to_owned();
        self.submit(move |tables| tables.return_rows(&id, now))
            .await
    }
}

#[async_trait]
impl WebhookStore for EmbeddedStore {
    async fn add_webhook(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let endpoint = endpoint.clone();
        self.submit(move |tables| tables.add_webhook(&endpoint))
            .await
    }

    async fn webhooks(&self) -> Result<Vec<WebhookUse>, StoreError> {
        self.read(tables::webhook_uses).await
    }

    async fn replace_webhook(&self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError> {
        let endpoint = endpoint.clone();
        self.submit(move |tables| tables.replace_webhook(&endpoint))
            .await
    }

    async fn remove_webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        let id = id.to_owned();
        self.submit(move |tables| tables.remove_webhook(&id)).await
    }

    async fn record_delivery(&self, id: &str, state: &DeliveryState) -> Result<(), StoreError> {
        let (id, state) = (id.to_owned(), state.clone());
        self.submit(move |tables| tables.record_delivery(&id, &state))
            .await
    }
}

#[async_trait]
impl OutboxStore for EmbeddedStore {
    async fn fan_out(
        &self,
        endpoints: &[WebhookEndpoint],
        limit: usize,
        now: EpochMillis,
    ) -> Result<u64, StoreError> {
        let endpoints = endpoints.to_vec();
        self.submit(move |tables| tables.fan_out(&endpoints, limit, now))
            .await
    }

    async fn deliveries(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let endpoint = endpoint.to_owned();
        self.read(move |db| tables::deliveries(db, &endpoint, limit))
            .await
    }

    async fn settle_delivery(
        &self,
        delivery: &Delivery,
        next: Option<&Delivery>,
    ) -> Result<(), StoreError> {
        let (delivery, next) = (delivery.clone(), next.cloned());
        self.submit(move |tables| tables.settle_delivery(&delivery, next.as_ref()))
            .await
    }

    async fn announce(&self, event: &OutboxEvent) -> Result<(), StoreError> {
        let pending = Pending::Event(event.clone());
        self.submit(move |tables| tables.enqueue(|| Some(pending)))
            .await
    }

    async fn outbox_backlog(&self) -> Result<(u64, Option<EpochSecs>), StoreError> {
        self.read(tables::outbox_backlog).await
    }

    async fn drop_deliveries(&self, endpoint: &str) -> Result<u64, StoreError> {
        let endpoint = endpoint.to_owned();
        self.submit(move |tables| tables.drop_deliveries(&endpoint))
            .await
    }
}

#[async_trait]
impl HealthStore for EmbeddedStore {
    /// Ready means a durable commit goes through now: an empty command joins the next
    /// batch, so a full disk or a failing fsync makes readiness fail, not just writes.
    async fn ping(&self) -> Result<(), StoreError> {
        self.submit(|_| Ok(())).await?;
        self.read(|db| {
            db.begin_read()
                .map(drop)
                .map_err(|err| StoreError::Unavailable(Box::new(err)))
        })
        .await
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        self.metrics.collectors()
    }
}
