//! Exports and restores: the items a store holds, the file both stores write and read,
//! and the checks a file passes before a restore writes anything (docs/operations.md).
//!
//! Rule: an export is NDJSON. A header line (format, version, store kind, time, item
//! count), one line per item in any order, then a closing line with the count per kind
//! and status and a digest that does not depend on the order (so a DynamoDB scan and an
//! embedded snapshot of the same items agree). A file is used only when every line
//! parses, no item key repeats, and the header's count, the closing line's counts and
//! the digest all match what was read: a truncated, edited or damaged file is refused
//! before anything is written.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{JobRecord, StoreError, encode_allocation_key};
use crate::domain::actions::AdminAction;
use crate::domain::cordon::Cordon;
use crate::domain::time::EpochSecs;
use crate::domain::used::UsedAccount;
use crate::domain::{NiosxaasHistory, Sandbox};

/// The header's `format`: what tells an export from any other NDJSON file.
pub const FORMAT: &str = "sandbox-broker-export";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// What an export's items are as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// One point in time: every item as it was when the export began (the embedded store).
    Snapshot,
    /// Each item read consistently, but not all at one moment: a write during the scan
    /// may show in some items and not in others (DynamoDB).
    Scan,
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`VERSION`] when this build wrote it).
    pub version: u32,
    /// The store it was taken from: `embedded` or `dynamodb`.
    pub store: String,
    /// Whether the items are one snapshot or a scan.
    pub consistency: Consistency,
    /// Epoch seconds the export began.
    pub exported_at: EpochSecs,
    /// How many item lines follow.
    pub items: u64,
}

/// The last line of an export: what a reader checks the items against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTrailer {
    /// Always `"end"`: tells the closing line from an item.
    pub item: EndMark,
    /// How many item lines came before it.
    pub items: u64,
    /// Items per kind, and sandbox rows per status (`sandbox:allocated`, `used_account`, …).
    pub counts: BTreeMap<String, u64>,
    /// [`ItemDigest`] of every item.
    pub digest: String,
}

/// The closing line's `item` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndMark {
    /// `"end"`.
    End,
}

/// An allocation key's item: which sandbox the key's allocation is (docs/dynamodb.md,
/// `ALLOC#`). Store-neutral: the holder and the `Idempotency-Key`, not an encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationKeyItem {
    /// The student.
    #[serde(rename = "student")]
    pub holder: String,
    /// The `Idempotency-Key`, when the allocation had one other than the student key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The sandbox the key's allocation holds.
    pub sandbox_id: String,
}

impl AllocationKeyItem {
    /// The key as both stores encode it.
    pub fn encoded(&self) -> String {
        encode_allocation_key(&self.holder, self.idempotency_key.as_deref())
    }

    /// The item of an encoded key (the inverse of [`Self::encoded`]).
    pub fn from_encoded(encoded: &str, sandbox_id: String) -> Self {
        let (holder, idempotency_key) = match encoded.split_once('\u{1f}') {
            Some((holder, key)) => (holder.to_owned(), Some(key.to_owned())),
            None => (encoded.to_owned(), None),
        };
        Self {
            holder,
            idempotency_key,
            sandbox_id,
        }
    }
}

/// One entry of the admins' action log, with the key that orders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedAction {
    /// Its key in the log ([`crate::domain::actions::action_key`]).
    pub key: String,
    /// The entry.
    pub entry: AdminAction,
}

/// One item a store holds, as an export carries it. Derived records (the last listing,
/// the last audit) are left out: the next sync and audit write them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every item is a sandbox row: boxing it would cost an allocation each and save nothing"
)]
pub enum BackupItem {
    /// A sandbox row in any status, tombstones (`deleted`) included.
    Sandbox(Sandbox),
    /// Which sandbox an allocation key holds.
    AllocationKey(AllocationKeyItem),
    /// A handed-out account whose row is gone: never to be issued again.
    UsedAccount(UsedAccount),
    /// What the NIOSXaaS pre-delete hook did for a sandbox.
    NiosxaasHistory(NiosxaasHistory),
    /// A job's lease and last run.
    Job(JobRecord),
    /// A paused prefix or lab.
    Cordon(Cordon),
    /// An entry of the admins' action log.
    Action(LoggedAction),
    /// A scoped lab token (its secret's digest, never the secret).
    LabToken(crate::domain::tokens::LabToken),
    /// A reservation for a scheduled class (its rows carry `reserved_for`).
    Reservation(crate::domain::reservations::Reservation),
    /// A webhook endpoint (its signing secrets included: an export is as secret as the
    /// store) and how its deliveries have gone.
    Webhook {
        /// The endpoint.
        endpoint: crate::domain::webhooks::WebhookEndpoint,
        /// Its delivery state.
        #[serde(default)]
        state: crate::domain::webhooks::DeliveryState,
    },
    /// A webhook delivery not yet delivered (waiting, being retried, or given up).
    WebhookDelivery(crate::domain::webhooks::outbox::Delivery),
}

impl BackupItem {
    /// Where the item goes in an export: the items others refer to first (tokens and
    /// used-account markers before rows, rows before the keys that point at them), so a
    /// restore cut short never holds a reference to an item it has not written.
    pub fn order(&self) -> u8 {
        match self {
            Self::LabToken(_) | Self::UsedAccount(_) => 0,
            Self::Sandbox(_) => 1,
            Self::WebhookDelivery(_) => 3,
            _ => 2,
        }
    }

    /// What the item is, and for a sandbox row its status: the closing line's count keys.
    pub fn tally_key(&self) -> String {
        match self {
            Self::Sandbox(row) => format!("sandbox:{}", row.status),
            Self::AllocationKey(_) => "allocation_key".into(),
            Self::UsedAccount(_) => "used_account".into(),
            Self::NiosxaasHistory(_) => "niosxaas_history".into(),
            Self::Job(_) => "job".into(),
            Self::Cordon(_) => "cordon".into(),
            Self::Action(_) => "action".into(),
            Self::LabToken(_) => "lab_token".into(),
            Self::Reservation(_) => "reservation".into(),
            Self::Webhook { .. } => "webhook".into(),
            Self::WebhookDelivery(_) => "webhook_delivery".into(),
        }
    }

    /// The item's identity: two items with one key cannot both be in a store.
    pub fn key(&self) -> String {
        match self {
            Self::Sandbox(row) => format!("sandbox {}", row.sandbox_id),
            Self::AllocationKey(key) => format!("allocation_key {:?}", key.encoded()),
            Self::UsedAccount(marker) => format!("used_account {}", marker.sandbox_id),
            Self::NiosxaasHistory(history) => format!("niosxaas_history {}", history.sandbox_id),
            Self::Job(record) => format!("job {}", record.job),
            Self::Cordon(cordon) => format!("cordon {}", cordon.id),
            Self::Action(action) => format!("action {}", action.key),
            Self::LabToken(token) => format!("lab_token {}", token.id),
            Self::Reservation(reservation) => format!("reservation {}", reservation.id),
            Self::Webhook { endpoint, .. } => format!("webhook {}", endpoint.id),
            Self::WebhookDelivery(delivery) => format!(
                "webhook_delivery {} {} {} {}",
                delivery.endpoint,
                delivery.event.at.get(),
                delivery.sequence,
                delivery.event.id
            ),
        }
    }

    /// Why the item cannot be stored, if it cannot: an empty id or key, or a student
    /// key holding the encoding's separator.
    pub fn problem(&self) -> Option<&'static str> {
        let empty = |value: &str| value.trim().is_empty();
        match self {
            Self::Sandbox(row) if empty(&row.sandbox_id) => Some("a sandbox row has no sandbox_id"),
            Self::Sandbox(row) if empty(&row.name) => Some("a sandbox row has no name"),
            Self::AllocationKey(key) if empty(&key.holder) || empty(&key.sandbox_id) => {
                Some("an allocation key needs a student and a sandbox_id")
            }
            Self::AllocationKey(key) if key.holder.contains('\u{1f}') => {
                Some("an allocation key's student holds a control character")
            }
            Self::UsedAccount(marker) if empty(&marker.sandbox_id) => {
                Some("a used-account marker has no sandbox_id")
            }
            Self::NiosxaasHistory(history) if empty(&history.sandbox_id) => {
                Some("a NIOSXaaS history item has no sandbox_id")
            }
            Self::Job(record) if empty(&record.job) => Some("a job record has no job"),
            Self::Cordon(cordon) if empty(&cordon.id) => Some("a cordon has no id"),
            Self::Action(action) if empty(&action.key) => Some("an action has no key"),
            Self::LabToken(token) if empty(&token.id) => Some("a lab token has no id"),
            Self::Reservation(reservation) if empty(&reservation.id) => {
                Some("a reservation has no id")
            }
            Self::Webhook { endpoint, .. } if empty(&endpoint.id) => {
                Some("a webhook endpoint has no id")
            }
            Self::WebhookDelivery(delivery)
                if empty(&delivery.endpoint) || empty(&delivery.event.id) =>
            {
                Some("a webhook delivery needs an endpoint and an event id")
            }
            _ => None,
        }
    }

    /// The item's line, without the newline: what the digest hashes.
    pub fn line(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|err| StoreError::Internal(Box::new(err)))
    }
}

/// A digest of a set of items, whatever their order: SHA-256 over the sorted SHA-256 of
/// each item's line.
#[derive(Debug, Default)]
pub struct ItemDigest {
    hashes: Vec<[u8; 32]>,
}

impl ItemDigest {
    /// Adds one item's line.
    pub fn add(&mut self, line: &[u8]) {
        self.hashes.push(Sha256::digest(line).into());
    }

    /// `sha256:<hex>`.
    pub fn finish(mut self) -> String {
        self.hashes.sort_unstable();
        let mut whole = Sha256::new();
        for hash in &self.hashes {
            whole.update(hash);
        }
        let hex: String = whole
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("sha256:{hex}")
    }
}

/// The counts and digest of items seen so far, as the closing line states them.
#[derive(Debug, Default)]
pub struct Tally {
    items: u64,
    counts: BTreeMap<String, u64>,
    digest: ItemDigest,
}

impl Tally {
    /// Counts `item`, whose line is `line`.
    pub fn add(&mut self, item: &BackupItem, line: &[u8]) {
        self.items += 1;
        *self.counts.entry(item.tally_key()).or_default() += 1;
        self.digest.add(line);
    }

    /// Items counted so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The closing line of the items counted.
    pub fn finish(self) -> ExportTrailer {
        ExportTrailer {
            item: EndMark::End,
            items: self.items,
            counts: self.counts,
            digest: self.digest.finish(),
        }
    }
}

/// Every item of a store, as [`super::BackupStore::export`] hands them out.
pub struct Export {
    /// What the header says.
    pub header: ExportHeader,
    /// The items, [`ExportHeader::items`] of them; an error ends the export.
    pub items: BoxStream<'static, Result<BackupItem, StoreError>>,
}

impl Export {
    /// The header of an export taken now from `store`, of `items` items.
    pub fn header(
        store: &str,
        consistency: Consistency,
        exported_at: EpochSecs,
        items: u64,
    ) -> ExportHeader {
        ExportHeader {
            format: FORMAT.into(),
            version: VERSION,
            store: store.into(),
            consistency,
            exported_at,
            items,
        }
    }
}

/// Turns an export into its lines: the header, the items, then the closing line.
#[derive(Debug, Default)]
pub struct ExportWriter {
    tally: Tally,
}

impl ExportWriter {
    /// The header line.
    pub fn header_line(header: &ExportHeader) -> Result<Vec<u8>, StoreError> {
        let mut line =
            serde_json::to_vec(header).map_err(|err| StoreError::Internal(Box::new(err)))?;
        line.push(b'\n');
        Ok(line)
    }

    /// Appends `item`'s line to `out`.
    pub fn item(&mut self, item: &BackupItem, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let line = item.line()?;
        self.tally.add(item, &line);
        out.extend_from_slice(&line);
        out.push(b'\n');
        Ok(())
    }

    /// Items written so far.
    pub fn items(&self) -> u64 {
        self.tally.items()
    }

    /// The closing line.
    pub fn finish(self) -> Result<Vec<u8>, StoreError> {
        let mut line = serde_json::to_vec(&self.tally.finish())
            .map_err(|err| StoreError::Internal(Box::new(err)))?;
        line.push(b'\n');
        Ok(line)
    }
}

/// Bytes of item lines gathered before they are handed on as one chunk.
const CHUNK_BYTES: usize = 64 * 1024;

/// What [`export_lines`] is producing next.
enum Stage {
    Header,
    Items(ExportWriter),
    Done,
}

/// The file's bytes, in chunks: the header line, the item lines, the closing line. A store
/// error ends the stream early; the file then lacks its closing line and a restore
/// refuses it as truncated.
pub fn export_lines(export: Export) -> BoxStream<'static, Result<bytes::Bytes, StoreError>> {
    let Export { header, items } = export;
    let state = (Stage::Header, items, header);
    let stream = futures::stream::unfold(state, |(stage, mut items, header)| async move {
        match stage {
            Stage::Header => {
                let line = ExportWriter::header_line(&header).map(bytes::Bytes::from);
                let next = if line.is_ok() {
                    Stage::Items(ExportWriter::default())
                } else {
                    Stage::Done
                };
                Some((line, (next, items, header)))
            }
            Stage::Items(mut writer) => {
                let mut chunk = Vec::with_capacity(CHUNK_BYTES + 1024);
                loop {
                    match futures::StreamExt::next(&mut items).await {
                        Some(Ok(item)) => {
                            if let Err(err) = writer.item(&item, &mut chunk) {
                                return Some((Err(err), (Stage::Done, items, header)));
                            }
                            if chunk.len() >= CHUNK_BYTES {
                                let next = Stage::Items(writer);
                                return Some((Ok(chunk.into()), (next, items, header)));
                            }
                        }
                        Some(Err(err)) => return Some((Err(err), (Stage::Done, items, header))),
                        None if writer.items() != header.items => {
                            let err = StoreError::Internal(
                                format!(
                                    "the export announced {} items but the store handed out {}",
                                    header.items,
                                    writer.items()
                                )
                                .into(),
                            );
                            return Some((Err(err), (Stage::Done, items, header)));
                        }
                        None => {
                            let end = writer.finish().map(|line| {
                                chunk.extend(line);
                                chunk.into()
                            });
                            return Some((end, (Stage::Done, items, header)));
                        }
                    }
                }
            }
            Stage::Done => None,
        }
    });
    Box::pin(stream)
}

/// Why a file is not a usable export. Nothing has been written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum ExportFileError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is empty.
    #[error("the file is empty; an export starts with a header line")]
    Empty,
    /// The first line is not an export header.
    #[error("line 1 is not an export header ({0}); is this a sandbox-broker export?")]
    NotAnExport(String),
    /// Written by a newer build in a format this one does not know.
    #[error(
        "the export is format version {found}; this build reads version {VERSION}: restore with a newer build"
    )]
    Version {
        /// The file's version.
        found: u32,
    },
    /// A line that is not an item.
    #[error("line {line}: {problem}")]
    BadLine {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// An item whose key an earlier line already had.
    #[error("line {line}: {key} appears twice")]
    Duplicate {
        /// 1-based line number.
        line: u64,
        /// The item's key.
        key: String,
    },
    /// The file ends before its closing line.
    #[error(
        "the file ends after {read} of the {expected} items its header announces, without its closing line: it is truncated"
    )]
    Truncated {
        /// Items read.
        read: u64,
        /// Items the header announces.
        expected: u64,
    },
    /// The items do not match the header or the closing line.
    #[error("the file is damaged or was edited: {0}")]
    Mismatch(String),
}

/// Reads an export line by line, checking as it goes; the checks that need every line
/// (counts, digest) are made when the closing line is reached.
pub struct ExportReader<R> {
    reader: R,
    header: ExportHeader,
    line: u64,
    tally: Tally,
    keys: HashSet<String>,
    trailer: Option<ExportTrailer>,
    buffer: String,
}

impl<R: BufRead> ExportReader<R> {
    /// Reads and checks the header.
    pub fn open(mut reader: R) -> Result<Self, ExportFileError> {
        let mut buffer = String::new();
        if reader.read_line(&mut buffer)? == 0 {
            return Err(ExportFileError::Empty);
        }
        let header: ExportHeader = serde_json::from_str(buffer.trim_end())
            .map_err(|err| ExportFileError::NotAnExport(err.to_string()))?;
        if header.format != FORMAT {
            return Err(ExportFileError::NotAnExport(format!(
                "its format is {:?}, not {FORMAT:?}",
                header.format
            )));
        }
        if header.version != VERSION {
            return Err(ExportFileError::Version {
                found: header.version,
            });
        }
        Ok(Self {
            reader,
            header,
            line: 1,
            tally: Tally::default(),
            keys: HashSet::new(),
            trailer: None,
            buffer,
        })
    }

    /// The header.
    pub fn header(&self) -> &ExportHeader {
        &self.header
    }

    /// The next item; `Ok(None)` after the closing line, once every check has passed.
    pub fn next_item(&mut self) -> Result<Option<BackupItem>, ExportFileError> {
        loop {
            self.buffer.clear();
            let read = self.reader.read_line(&mut self.buffer)?;
            if read == 0 {
                return match self.trailer {
                    Some(_) => Ok(None),
                    None => Err(ExportFileError::Truncated {
                        read: self.tally.items(),
                        expected: self.header.items,
                    }),
                };
            }
            self.line += 1;
            let text = self.buffer.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            if self.trailer.is_some() {
                return Err(self.bad("a line after the closing line".into()));
            }
            let item = match serde_json::from_str::<BackupItem>(text) {
                Ok(item) => item,
                Err(item_error) => match serde_json::from_str::<ExportTrailer>(text) {
                    Ok(trailer) => {
                        self.trailer = Some(trailer);
                        self.check_end()?;
                        continue;
                    }
                    // A last line without its newline that does not parse was cut off.
                    Err(_) if !self.buffer.ends_with('\n') => {
                        return Err(ExportFileError::Truncated {
                            read: self.tally.items(),
                            expected: self.header.items,
                        });
                    }
                    Err(_) => return Err(self.bad(format!("not an export item: {item_error}"))),
                },
            };
            if let Some(problem) = item.problem() {
                return Err(self.bad(problem.into()));
            }
            let key = item.key();
            if !self.keys.insert(key.clone()) {
                return Err(ExportFileError::Duplicate {
                    line: self.line,
                    key,
                });
            }
            // The digest hashes the canonical line, so a file re-indented or with its
            // fields reordered still checks.
            let line = item
                .line()
                .map_err(|err| self.bad(format!("cannot be encoded: {err}")))?;
            self.tally.add(&item, &line);
            return Ok(Some(item));
        }
    }

    fn bad(&self, problem: String) -> ExportFileError {
        ExportFileError::BadLine {
            line: self.line,
            problem,
        }
    }

    fn check_end(&mut self) -> Result<(), ExportFileError> {
        let Some(trailer) = &self.trailer else {
            return Ok(());
        };
        let read = std::mem::take(&mut self.tally).finish();
        if trailer.items != self.header.items || read.items != self.header.items {
            return Err(ExportFileError::Mismatch(format!(
                "the header announces {} items, the closing line {}, and the file holds {}",
                self.header.items, trailer.items, read.items
            )));
        }
        if trailer.counts != read.counts {
            return Err(ExportFileError::Mismatch(format!(
                "the closing line's counts {:?} differ from the items' {:?}",
                trailer.counts, read.counts
            )));
        }
        if trailer.digest != read.digest {
            return Err(ExportFileError::Mismatch(format!(
                "the items' digest is {}, the closing line says {}",
                read.digest, trailer.digest
            )));
        }
        // Keep the tally readable after the end: `finish` consumed a copy.
        self.tally = Tally {
            items: read.items,
            counts: read.counts,
            digest: ItemDigest::default(),
        };
        Ok(())
    }

    /// The closing line, once it has been read and checked.
    pub fn trailer(&self) -> Option<&ExportTrailer> {
        self.trailer.as_ref()
    }
}

/// What [`check_export`] found in a good file.
#[derive(Debug, Clone)]
pub struct CheckedExport {
    /// The header.
    pub header: ExportHeader,
    /// The closing line (counts and digest), matched against every item.
    pub trailer: ExportTrailer,
}

/// Reads a whole export and checks it, keeping no item.
pub fn check_export(reader: impl BufRead) -> Result<CheckedExport, ExportFileError> {
    let mut export = ExportReader::open(reader)?;
    while export.next_item()?.is_some() {}
    let trailer = export
        .trailer()
        .cloned()
        .ok_or(ExportFileError::Truncated {
            read: 0,
            expected: export.header.items,
        })?;
    Ok(CheckedExport {
        header: export.header,
        trailer,
    })
}

/// A restore under way: written before the first item and removed after the check, so a
/// rerun of an interrupted restore carries on, and `serve` refuses a half-restored store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMarker {
    /// The digest of the export being restored.
    pub digest: String,
    /// How many items it holds.
    pub items: u64,
    /// Whether items already in the store were to be kept (`--merge`).
    pub merge: bool,
    /// Epoch seconds the restore began.
    pub started_at: EpochSecs,
}

/// What became of one item a restore offered a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The store did not hold the key; the item was written.
    Written,
    /// The store already held the key; this is what it holds, left as it was.
    Present(Box<BackupItem>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExternalId, NewSandbox, SandboxId, SandboxName, SandboxStatus};

    fn row(id: &str, status: SandboxStatus) -> BackupItem {
        let new = NewSandbox {
            sandbox_id: SandboxId::parse("id", id).unwrap(),
            name: SandboxName::parse("name", &format!("lab-{id}")).unwrap(),
            external_id: ExternalId::parse("ext", "identity/accounts/x").unwrap(),
            sfdc_account_id: None,
        };
        BackupItem::Sandbox(Sandbox {
            status,
            ..new.into_available_row(EpochSecs::new(1))
        })
    }

    fn export_of(items: &[BackupItem]) -> Vec<u8> {
        let header = Export::header(
            "embedded",
            Consistency::Snapshot,
            EpochSecs::new(5),
            items.len() as u64,
        );
        let mut out = ExportWriter::header_line(&header).unwrap();
        let mut writer = ExportWriter::default();
        for item in items {
            writer.item(item, &mut out).unwrap();
        }
        out.extend(writer.finish().unwrap());
        out
    }

    fn items() -> Vec<BackupItem> {
        vec![
            row("1", SandboxStatus::Available),
            row("2", SandboxStatus::Allocated),
            BackupItem::AllocationKey(AllocationKeyItem::from_encoded("stu\u{1f}k", "2".into())),
        ]
    }

    #[test]
    fn a_written_export_reads_back_with_its_counts_and_an_order_free_digest() {
        let file = export_of(&items());
        let checked = check_export(file.as_slice()).unwrap();
        assert_eq!(checked.header.items, 3);
        assert_eq!(checked.trailer.counts["sandbox:allocated"], 1);
        assert_eq!(checked.trailer.counts["allocation_key"], 1);
        let mut reversed = items();
        reversed.reverse();
        let other = check_export(export_of(&reversed).as_slice()).unwrap();
        assert_eq!(other.trailer.digest, checked.trailer.digest);
        let key = AllocationKeyItem::from_encoded("stu\u{1f}k", "2".into());
        assert_eq!(
            (key.holder.as_str(), key.idempotency_key.as_deref()),
            ("stu", Some("k"))
        );
        assert_eq!(key.encoded(), "stu\u{1f}k");
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let file = String::from_utf8(export_of(&items())).unwrap();
        let lines: Vec<&str> = file.lines().collect();
        let check = |text: String| check_export(text.as_bytes()).unwrap_err().to_string();

        assert!(check(String::new()).contains("empty"));
        assert!(check("{\"hello\":1}\n".into()).contains("not an export header"));
        let truncated = format!("{}\n{}\n", lines[0], lines[1]);
        assert!(check(truncated).contains("ends after 1 of the 3 items"));
        let cut_mid_line = format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..10]);
        assert!(check(cut_mid_line).contains("truncated"));
        let edited = file.replace("lab-1", "lab-9");
        assert!(
            check(edited).contains("digest"),
            "an edited item changes the digest"
        );
        let twice = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[1]);
        assert!(check(twice).contains("appears twice"));
        let garbage = format!("{}\nnot json\n", lines[0]);
        assert!(check(garbage).contains("line 2"));
        let newer = file.replacen("\"version\":1", "\"version\":9", 1);
        assert!(check(newer).contains("version 9"));
        let after = format!("{file}{}\n", lines[1]);
        assert!(check(after).contains("after the closing line"));
        let no_last_newline = file.trim_end().to_owned();
        assert!(
            check_export(no_last_newline.as_bytes()).is_ok(),
            "a complete file whose editor dropped the last newline is whole"
        );
    }
}
