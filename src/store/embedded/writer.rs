//! The writer thread: group commit.
//!
//! Rule: it takes every command waiting (up to [`MAX_BATCH`]), applies them one after
//! another in one write transaction, commits once with `Durability::Immediate` (one
//! fsync for the group), and only then answers each; if anything fails, the whole batch
//! rolls back and no requester is told its write committed.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntGauge};
use redb::{Database, Durability};
use tokio::sync::mpsc;

use super::keys::{KeyChanges, KeyIndex};
use super::tables::{StatusDeltas, Tables};
use crate::store::PoolStats;

/// Most commands applied in one commit; bounds the latency one commit adds to its last member.
const MAX_BATCH: usize = 1024;

/// A write waiting for the writer thread: it runs inside the batch's transaction and
/// returns how to answer its requester once the commit has succeeded.
pub(super) type Command = Box<dyn FnOnce(&mut Tables<'_>) -> Applied + Send>;

/// A command's effect inside the open transaction.
pub(super) struct Applied {
    /// The storage engine failed: the whole transaction must roll back.
    pub(super) storage_failed: bool,
    /// Sends the result. Dropped without being called when the batch rolls back, which
    /// the requester sees as "not committed".
    pub(super) respond: Box<dyn FnOnce() + Send>,
}

/// Commit durations: a group commit is one `fdatasync` (a tenth of a millisecond to a few
/// milliseconds) plus the batch's work; a stalled writer shows in the upper buckets.
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The writer's own series, registered by the app beside the service's.
#[derive(Clone)]
pub(super) struct WriterMetrics {
    /// How long each group commit took, from its first command to durable.
    commit_seconds: Histogram,
    /// Writes waiting for the writer when it started its latest commit, that commit's
    /// own batch included; 0 once it is idle.
    queue_depth: IntGauge,
}

impl WriterMetrics {
    /// Creates (not registers) the series.
    pub(super) fn new() -> prometheus::Result<Self> {
        Ok(Self {
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "broker_store_commit_seconds",
                    "Embedded store: time each group commit took, from applying its first write to durable",
                )
                .buckets(COMMIT_BUCKETS.to_vec()),
            )?,
            queue_depth: IntGauge::new(
                "broker_store_writer_queue_depth",
                "Embedded store: writes waiting for the writer when it began its latest commit, that batch included (0 when idle)",
            )?,
        })
    }

    /// Every series, for the registry.
    pub(super) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.commit_seconds.clone()),
            Box::new(self.queue_depth.clone()),
        ]
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) stats: Arc<Mutex<PoolStats>>,
    pub(super) keys: Arc<KeyIndex>,
    pub(super) metrics: WriterMetrics,
}

impl Writer {
    /// Applies and commits batches until every sender is dropped.
    pub(super) fn run(self, mut queue: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.metrics
                .queue_depth
                .set(i64::try_from(batch.len() + queue.len()).unwrap_or(i64::MAX));
            let started = Instant::now();
            let committed = self.commit_batch(&mut batch);
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            match committed {
                Ok((applied, (deltas, keys))) => {
                    deltas.apply_to(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
                    self.keys.apply(keys);
                    applied.into_iter().for_each(|a| (a.respond)());
                }
                Err(err) => {
                    // Dropping the responders tells each requester its write did not commit.
                    tracing::error!(error = %err, "embedded store commit failed; batch rolled back");
                }
            }
            batch.clear();
            if queue.is_empty() {
                self.metrics.queue_depth.set(0);
            }
        }
        tracing::debug!("embedded store writer stopped: every handle was dropped");
    }

    /// Applies every command in one transaction and commits it durably.
    fn commit_batch(
        &self,
        batch: &mut Vec<Command>,
    ) -> Result<(Vec<Applied>, (StatusDeltas, KeyChanges)), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut applied = Vec::with_capacity(batch.len());
        let changes = {
            let mut tables = Tables::open(&txn, &self.keys)?;
            for command in batch.drain(..) {
                let result = command(&mut tables);
                let failed = result.storage_failed;
                applied.push(result);
                if failed {
                    break;
                }
            }
            tables.into_changes()
        };
        if applied.iter().any(|a| a.storage_failed) {
            txn.abort()?;
            return Err(redb::Error::Corrupted(
                "a command failed in the storage engine".into(),
            ));
        }
        txn.commit()?;
        Ok((applied, changes))
    }
}
