//! The `export` and `restore` commands: a store's items to a file, and a file's items
//! into a store, checked before and after (docs/operations.md).
//!
//! Rule: a restore writes nothing until the whole file has been read and checked; writes
//! each item only where its key is free; leaves a marker while it runs, so the same
//! command run again after a crash carries on, and `serve` will not start on a
//! half-restored store; and ends by reading every item back and comparing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::domain::SandboxStatus;
use crate::domain::time::EpochSecs;
use crate::store::backup::{
    BackupItem, CheckedExport, ExportFileError, ExportReader, ExportTrailer, RestoreMarker,
    Restored, Tally, check_export, export_lines,
};
use crate::store::{BackupStore, StoreError};

/// Items handed to the store per call: one commit on the embedded store, a window of
/// conditional puts on DynamoDB; progress is printed after each.
const RESTORE_BATCH: usize = 1000;
/// Keys of kept items named in the report; the rest are counted.
const KEPT_NAMED: usize = 20;

/// Why an export or a restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not a usable export; nothing was written.
    #[error("{path}: {source}; nothing was written")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ExportFileError,
    },
    /// The file stopped reading as it did when it was checked, after writing began.
    #[error(
        "{path} changed while it was being restored ({source}); items already written stay, and the store keeps its restore marker: restore the file again once it is whole"
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// What reading it met.
        #[source]
        source: ExportFileError,
    },
    /// The export was written but does not read back whole (the disk, or a bug).
    #[error("wrote {path}, but it does not read back as a whole export: {source}")]
    WrittenBadly {
        /// The file.
        path: PathBuf,
        /// What reading it met.
        #[source]
        source: ExportFileError,
    },
    /// The output file could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store holds items and `--merge` was not given.
    #[error(
        "{store} is not empty: it holds {found}, among others. Restore into an empty store, or pass --merge to keep every item it holds and add the rest; nothing was written"
    )]
    NotEmpty {
        /// The store, named as the configuration names it.
        store: String,
        /// One item it holds.
        found: String,
    },
    /// An interrupted restore of another file is under way.
    #[error(
        "{store} holds an interrupted restore of another export ({digest}, begun at epoch {started_at}); run that restore again with its file to finish it; nothing was written"
    )]
    OtherRestore {
        /// The store.
        store: String,
        /// The digest of the export being restored.
        digest: String,
        /// When that restore began.
        started_at: i64,
    },
    /// The store failed.
    #[error("{store}: {source}")]
    Store {
        /// The store.
        store: String,
        /// What it met.
        #[source]
        source: StoreError,
    },
    /// What was read back does not match the file.
    #[error("{store}: verification failed: {problem}")]
    Verification {
        /// The store.
        store: String,
        /// What differs.
        problem: String,
    },
}

/// What a restore wrote and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Items written. An allocation key a store derives from its allocated row (the
    /// embedded store's) counts as written when this run wrote that row.
    pub written: u64,
    /// Items the store already held exactly as the file has them (an earlier run's).
    pub already_there: u64,
    /// Items the store held differently and kept (`--merge`), by key.
    pub kept: Vec<String>,
    /// Items read back, per kind and status.
    pub read_back: BTreeMap<String, u64>,
    /// The digest of everything the store holds after the restore.
    pub store_digest: String,
}

/// The `export` command: every item of `store` into `to`, through a temporary file
/// renamed into place once complete. Returns the closing line.
pub async fn export_to_file(
    store: &dyn BackupStore,
    store_name: &str,
    to: &Path,
    now: EpochSecs,
) -> Result<ExportTrailer, BackupError> {
    let output = |source| BackupError::Output {
        path: to.to_owned(),
        source,
    };
    let failed = |source| BackupError::Store {
        store: store_name.to_owned(),
        source,
    };
    let directory = match to.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(directory).map_err(output)?;
    let mut lines = export_lines(store.export(now).await.map_err(failed)?);
    while let Some(chunk) = lines.next().await {
        file.write_all(&chunk.map_err(failed)?).map_err(output)?;
    }
    file.as_file().sync_all().map_err(output)?;
    file.persist(to).map_err(|err| output(err.error))?;
    let reread = File::open(to).map_err(output)?;
    check_export(BufReader::new(reread))
        .map(|checked| checked.trailer)
        .map_err(|source| BackupError::WrittenBadly {
            path: to.to_owned(),
            source,
        })
}

/// Reads and checks the whole file at `path`.
pub fn checked_file(path: &Path) -> Result<CheckedExport, BackupError> {
    let bad = |source| BackupError::File {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|err| bad(err.into()))?;
    check_export(BufReader::new(file)).map_err(bad)
}

/// The file at `path`, checked once already, opened again to be read item by item.
fn reader(path: &Path) -> Result<ExportReader<BufReader<File>>, BackupError> {
    let bad = |source| BackupError::FileChanged {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|err| bad(err.into()))?;
    ExportReader::open(BufReader::new(file)).map_err(bad)
}

fn line_hash(item: &BackupItem) -> Result<[u8; 32], StoreError> {
    Ok(Sha256::digest(item.line()?).into())
}

/// The `restore` command: the export `checked` at `from` (see [`checked_file`]) into
/// `store`, then every item read back and compared. Progress and the report go to `out`.
pub async fn restore(
    store: &dyn BackupStore,
    store_name: &str,
    (from, checked): (&Path, &CheckedExport),
    merge: bool,
    now: EpochSecs,
    out: &mut dyn Write,
) -> Result<RestoreReport, BackupError> {
    let failed = |source| BackupError::Store {
        store: store_name.to_owned(),
        source,
    };
    let digest = checked.trailer.digest.clone();
    let total = checked.header.items;
    let _ = writeln!(
        out,
        "restoring {} ({} export of epoch {}, {total} items, {digest}) into {store_name}",
        from.display(),
        checked.header.store,
        checked.header.exported_at,
    );

    let merge = match store.restore_marker().await.map_err(failed)? {
        Some(marker) if marker.digest == digest => {
            let _ = writeln!(
                out,
                "carrying on the restore of this export begun at epoch {}",
                marker.started_at
            );
            marker.merge || merge
        }
        Some(marker) => {
            return Err(BackupError::OtherRestore {
                store: store_name.to_owned(),
                digest: marker.digest,
                started_at: marker.started_at.get(),
            });
        }
        None => {
            if !merge && let Some(found) = store.any_item().await.map_err(failed)? {
                return Err(BackupError::NotEmpty {
                    store: store_name.to_owned(),
                    found,
                });
            }
            let marker = RestoreMarker {
                digest: digest.clone(),
                items: total,
                merge,
                started_at: now,
            };
            store
                .set_restore_marker(Some(marker))
                .await
                .map_err(failed)?;
            merge
        }
    };

    let mut report = RestoreReport::default();
    let mut kept_count = 0u64;
    // Allocated rows this run wrote: the keys they hold count as written too.
    let mut allocated_here: HashSet<String> = HashSet::new();
    let mut file = reader(from)?;
    let mut offered = 0u64;
    loop {
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        while batch.len() < RESTORE_BATCH {
            match file.next_item() {
                Ok(Some(item)) => batch.push(item),
                Ok(None) => break,
                Err(source) => {
                    return Err(BackupError::FileChanged {
                        path: from.to_owned(),
                        source,
                    });
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        offered += batch.len() as u64;
        let outcomes = store
            .restore_items(batch.clone(), now)
            .await
            .map_err(failed)?;
        for (item, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Restored::Written => {
                    if let BackupItem::Sandbox(row) = item
                        && row.status == SandboxStatus::Allocated
                    {
                        allocated_here.insert(row.sandbox_id.clone());
                    }
                    report.written += 1;
                }
                // The embedded store derives a key from its allocated row: written with it.
                Restored::Present(present)
                    if *present == *item
                        && matches!(item, BackupItem::AllocationKey(key)
                            if allocated_here.contains(&key.sandbox_id)) =>
                {
                    report.written += 1;
                }
                Restored::Present(present) if *present == *item => report.already_there += 1,
                Restored::Present(_) => {
                    kept_count += 1;
                    if report.kept.len() < KEPT_NAMED {
                        report.kept.push(item.key());
                    }
                }
            }
        }
        let _ = writeln!(out, "restored {offered} of {total} items");
    }

    verify(store, store_name, from, merge, now, &mut report).await?;
    store.set_restore_marker(None).await.map_err(failed)?;

    let _ = writeln!(
        out,
        "written {} items; {} were already there as the file has them; {kept_count} kept as the store held them",
        report.written, report.already_there
    );
    if kept_count > 0 {
        let more = kept_count.saturating_sub(report.kept.len() as u64);
        let _ = writeln!(
            out,
            "kept (--merge, the store's version wins): {}{}",
            report.kept.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(out, "{:<32} {:>10} {:>10}", "", "in file", "read back");
    let mut names: Vec<&String> = checked.trailer.counts.keys().collect();
    names.extend(report.read_back.keys());
    names.sort();
    names.dedup();
    for name in names {
        let count = |counts: &BTreeMap<String, u64>| counts.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name:<32} {:>10} {:>10}",
            count(&checked.trailer.counts),
            count(&report.read_back)
        );
    }
    let _ = writeln!(
        out,
        "verified: every item of the file reads back{}; store digest {}{}",
        if merge {
            " (or was kept)"
        } else {
            " identical"
        },
        report.store_digest,
        if report.store_digest == digest {
            " = the file's"
        } else {
            ""
        }
    );
    Ok(report)
}

/// Reads every item back and compares it with the file: each item must be held as the
/// file has it (or, with `--merge`, kept as the store had it); without `--merge` the
/// store must hold nothing else, so its digest is the file's.
async fn verify(
    store: &dyn BackupStore,
    store_name: &str,
    from: &Path,
    merge: bool,
    now: EpochSecs,
    report: &mut RestoreReport,
) -> Result<(), BackupError> {
    let failed = |source| BackupError::Store {
        store: store_name.to_owned(),
        source,
    };
    let fail = |problem: String| BackupError::Verification {
        store: store_name.to_owned(),
        problem,
    };
    let mut held: HashMap<String, [u8; 32]> = HashMap::new();
    let mut tally = Tally::default();
    let mut items = store.export(now).await.map_err(failed)?.items;
    while let Some(item) = items.next().await {
        let item = item.map_err(failed)?;
        let line = item.line().map_err(failed)?;
        tally.add(&item, &line);
        held.insert(item.key(), Sha256::digest(&line).into());
    }
    let held_count = held.len() as u64;
    let read_back = tally.finish();
    report.read_back = read_back.counts;
    report.store_digest = read_back.digest;

    let mut file = reader(from)?;
    let (mut missing, mut differing) = (Vec::new(), 0u64);
    let mut in_file = 0u64;
    while let Some(item) = file
        .next_item()
        .map_err(|source| BackupError::FileChanged {
            path: from.to_owned(),
            source,
        })?
    {
        in_file += 1;
        match held.get(&item.key()) {
            None => missing.push(item.key()),
            Some(hash) if *hash == line_hash(&item).map_err(failed)? => {}
            Some(_) => differing += 1,
        }
    }
    if let Some(first) = missing.first() {
        return Err(fail(format!(
            "{} items of the file are not in the store, {first} among them",
            missing.len()
        )));
    }
    if !merge && differing > 0 {
        return Err(fail(format!(
            "{differing} items read back differ from the file"
        )));
    }
    if !merge && held_count != in_file {
        return Err(fail(format!(
            "the store holds {held_count} items, the file {in_file}: something else wrote to it during the restore"
        )));
    }
    Ok(())
}
