//! How a sandbox row is stored: a compact binary form (a version byte, then every field in
//! a fixed order), read back field by field. Rows an earlier build wrote as JSON still
//! read, and [`migrate_rows`] rewrites them in this form when the store opens.
//!
//! Why: an allocation reads one row and writes one, and their JSON decode and encode were
//! about 23,000 instructions of the writer's work per allocation (docs/benchmarks.md).

use super::*;

/// The first byte of a row in this form (a JSON row starts with `{`).
const BINARY_V1: u8 = 0xB1;
/// The [`RECORDS`] key present once every row of the file is in this form.
const ROWS_BINARY: &str = "rows_binary_v1";
/// Rows [`migrate_rows`] rewrites per transaction.
const MIGRATION_BATCH: usize = 10_000;

/// `row` as stored.
pub(super) fn encode_row(row: &Sandbox) -> Result<Vec<u8>, StoreError> {
    // Every field by name: a field added to `Sandbox` does not compile here until stored.
    let Sandbox {
        sandbox_id,
        name,
        external_id,
        status,
        holder,
        allocated_at,
        lab_duration_hours,
        allocated_by,
        deletion_requested_at,
        deletion_retry_count,
        last_synced,
        idempotency_key,
        lab,
        created_at,
        updated_at,
        sfdc_account_id,
        deleted_at,
        ttl,
        next_deletion_attempt_at,
        deletion_claimed_by,
        deletion_claimed_until,
        first_deletion_failure_at,
        deletion_transient_failures,
        last_deletion_error,
        niosxaas,
        quarantine_reason,
        token_id,
        reserved_for,
    } = row;
    let mut out = Out(Vec::with_capacity(
        64 + sandbox_id.len() + name.len() + external_id.len(),
    ));
    out.0.push(BINARY_V1);
    out.str(sandbox_id);
    out.str(name);
    out.str(external_id);
    out.str(status.as_str());
    out.opt_str(holder.as_deref());
    out.opt_secs(*allocated_at);
    out.opt_u32(*lab_duration_hours);
    out.opt_str(allocated_by.as_deref());
    out.opt_secs(*deletion_requested_at);
    out.varint(u64::from(*deletion_retry_count));
    out.opt_secs(*last_synced);
    out.opt_str(idempotency_key.as_deref());
    out.opt_str(lab.as_deref());
    out.secs(*created_at);
    out.secs(*updated_at);
    out.opt_str(sfdc_account_id.as_deref());
    out.opt_secs(*deleted_at);
    out.opt_secs(*ttl);
    out.opt_secs(*next_deletion_attempt_at);
    out.opt_str(deletion_claimed_by.as_deref());
    out.opt_secs(*deletion_claimed_until);
    out.opt_secs(*first_deletion_failure_at);
    out.varint(u64::from(*deletion_transient_failures));
    out.opt_str(last_deletion_error.as_deref());
    // Rare (a deletion's NIOSXaaS outcome): kept as its JSON.
    match niosxaas {
        Some(cleanup) => out.opt_bytes(Some(&encode(cleanup)?)),
        None => out.opt_bytes(None),
    }
    out.opt_str(quarantine_reason.as_deref());
    out.opt_str(token_id.as_deref());
    out.opt_str(reserved_for.as_deref());
    Ok(out.0)
}

/// The row stored under `id`, in this form or as an earlier build's JSON.
pub(super) fn decode_row(id: &str, bytes: &[u8]) -> Result<Sandbox, StoreError> {
    let malformed = || StoreError::Internal(format!("row {id} cannot be decoded").into());
    match bytes.split_first() {
        Some((&BINARY_V1, fields)) => {
            let mut input = In(fields);
            let row = read_row_fields(&mut input).ok_or_else(malformed)?;
            if !input.0.is_empty() {
                return Err(malformed());
            }
            Ok(row)
        }
        _ => serde_json::from_slice(bytes).map_err(|err| {
            StoreError::Internal(format!("row {id} cannot be decoded: {err}").into())
        }),
    }
}

fn read_row_fields(input: &mut In<'_>) -> Option<Sandbox> {
    Some(Sandbox {
        sandbox_id: input.str()?,
        name: input.str()?,
        external_id: input.str()?,
        status: input.str()?.parse().ok()?,
        holder: input.opt_str()?,
        allocated_at: input.opt_secs()?,
        lab_duration_hours: input.opt_u32()?,
        allocated_by: input.opt_str()?,
        deletion_requested_at: input.opt_secs()?,
        deletion_retry_count: u32::try_from(input.varint()?).ok()?,
        last_synced: input.opt_secs()?,
        idempotency_key: input.opt_str()?,
        lab: input.opt_str()?,
        created_at: input.secs()?,
        updated_at: input.secs()?,
        sfdc_account_id: input.opt_str()?,
        deleted_at: input.opt_secs()?,
        ttl: input.opt_secs()?,
        next_deletion_attempt_at: input.opt_secs()?,
        deletion_claimed_by: input.opt_str()?,
        deletion_claimed_until: input.opt_secs()?,
        first_deletion_failure_at: input.opt_secs()?,
        deletion_transient_failures: u32::try_from(input.varint()?).ok()?,
        last_deletion_error: input.opt_str()?,
        niosxaas: match input.opt_bytes()? {
            Some(json) => Some(serde_json::from_slice(json).ok()?),
            None => None,
        },
        quarantine_reason: input.opt_str()?,
        token_id: input.opt_str()?,
        reserved_for: input.opt_str()?,
    })
}

/// Rewrites every row still stored as JSON in the binary form, [`MIGRATION_BATCH`] rows a
/// transaction, then records that the file is done (so later opens skip the scan); answers
/// how many it rewrote. Cut short, it resumes at the next open; rows read either way.
pub(in crate::store::embedded) fn migrate_rows(db: &Database) -> Result<u64, redb::Error> {
    let corrupt = |err: StoreError| redb::Error::Corrupted(err.to_string());
    {
        let txn = db.begin_read()?;
        if txn.open_table(RECORDS)?.get(ROWS_BINARY)?.is_some() {
            return Ok(0);
        }
    }
    let mut rewritten = 0;
    let mut after: Option<String> = None;
    loop {
        let txn = db.begin_write()?;
        let done = {
            let mut sandboxes = txn.open_table(SANDBOXES)?;
            let mut batch = Vec::new();
            let range = match after.as_deref() {
                Some(last) => sandboxes.range::<&str>((Bound::Excluded(last), Bound::Unbounded))?,
                None => sandboxes.range::<&str>(..)?,
            };
            let mut looked = 0;
            let mut last = None;
            for entry in range {
                let (key, value) = entry?;
                looked += 1;
                last = Some(key.value().to_owned());
                if value.value().first() != Some(&BINARY_V1) {
                    batch.push(decode_row(key.value(), value.value()).map_err(corrupt)?);
                }
                if looked == MIGRATION_BATCH {
                    break;
                }
            }
            for row in &batch {
                let bytes = encode_row(row).map_err(corrupt)?;
                sandboxes.insert(row.sandbox_id.as_str(), bytes.as_slice())?;
            }
            rewritten += batch.len() as u64;
            after = last;
            looked < MIGRATION_BATCH
        };
        if done {
            txn.open_table(RECORDS)?
                .insert(ROWS_BINARY, [].as_slice())?;
        }
        txn.commit()?;
        if done {
            return Ok(rewritten);
        }
    }
}

/// A row being written.
struct Out(Vec<u8>);

impl Out {
    /// LEB128.
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    /// Absent is 0; present is 1 and the value, as `write` writes it.
    fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            Some(value) => {
                self.0.push(1);
                write(self, value);
            }
            None => self.0.push(0),
        }
    }

    fn opt_bytes(&mut self, bytes: Option<&[u8]>) {
        self.optional(bytes, Self::bytes);
    }

    fn opt_str(&mut self, text: Option<&str>) {
        self.opt_bytes(text.map(str::as_bytes));
    }

    /// Zigzag, then LEB128.
    fn secs(&mut self, secs: EpochSecs) {
        let value = secs.get();
        self.varint(((value << 1) ^ (value >> 63)) as u64);
    }

    fn opt_secs(&mut self, secs: Option<EpochSecs>) {
        self.optional(secs, Self::secs);
    }

    fn opt_u32(&mut self, value: Option<u32>) {
        self.optional(value, |out, value| out.varint(u64::from(value)));
    }
}

/// A stored row being read; `None` from any reader means it is malformed.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }

    fn str(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }

    /// What [`Out::optional`] wrote, read with `read`: `Some(None)` when absent, `None`
    /// when malformed.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.byte()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }

    fn opt_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        self.optional(Self::bytes)
    }

    fn opt_str(&mut self) -> Option<Option<String>> {
        self.optional(Self::str)
    }

    fn secs(&mut self) -> Option<EpochSecs> {
        let zigzag = self.varint()?;
        Some(EpochSecs::new(
            ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64),
        ))
    }

    fn opt_secs(&mut self) -> Option<Option<EpochSecs>> {
        self.optional(Self::secs)
    }

    fn opt_u32(&mut self) -> Option<Option<u32>> {
        self.optional(|input| u32::try_from(input.varint()?).ok())
    }
}
