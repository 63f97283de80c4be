//! Allocation keys: who asks for a sandbox, and how a key is stored on rows and encoded.

use super::*;

/// Who asks for a sandbox: the same key always gets the same active allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllocationKey {
    /// The student.
    pub holder: HolderKey,
    /// Separates several allocations of one student.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl AllocationKey {
    /// The key of a request. An `Idempotency-Key` equal to the holder key is the same as
    /// none: the Python service stored exactly that for allocations without the header, so
    /// on a row the two cannot be told apart.
    pub fn new(holder: HolderKey, idempotency_key: Option<IdempotencyKey>) -> Self {
        let idempotency_key = idempotency_key.filter(|key| key.as_str() != holder.as_str());
        Self {
            holder,
            idempotency_key,
        }
    }

    /// The `idempotency_key` a row holding this key's allocation carries, whichever
    /// service made it: the `Idempotency-Key`, or the holder key when there was none (the
    /// Python service's rule, so it finds this service's allocations after a rollback).
    pub fn stored_idempotency_key(&self) -> &str {
        self.idempotency_key
            .as_ref()
            .map_or(self.holder.as_str(), IdempotencyKey::as_str)
    }

    /// Whether `row` was allocated for this key: its holder is the student and it carries
    /// [`Self::stored_idempotency_key`] — or none at all, for a key without an
    /// `Idempotency-Key`, as this service's rows from before it stored one do.
    pub fn holds(&self, row: &Sandbox) -> bool {
        row.is_held_by(&self.holder)
            && match row.idempotency_key.as_deref() {
                Some(stored) => stored == self.stored_idempotency_key(),
                None => self.idempotency_key.is_none(),
            }
    }

    /// Whether `row` is this key's allocation made by another service on the same table
    /// (the Python one): it has no allocation-key item, only the row's holder and
    /// `idempotency_key` say whose it is.
    pub fn holds_foreign(&self, row: &Sandbox) -> bool {
        row.status == SandboxStatus::Allocated && !row.allocated_here() && self.holds(row)
    }

    /// One string per key; the separator cannot occur in either (printable ASCII) part.
    pub fn encoded(&self) -> String {
        encode_allocation_key(
            self.holder.as_str(),
            self.idempotency_key.as_ref().map(IdempotencyKey::as_str),
        )
    }
}

/// The encoded key of the allocation `row` holds, read back from its `allocated_to_track`
/// and `idempotency_key` (the holder key there means "no `Idempotency-Key`").
pub fn allocation_key_of_row(row: &Sandbox) -> Option<String> {
    let holder = row.holder.as_deref()?;
    let idempotency_key = row.idempotency_key.as_deref().filter(|key| *key != holder);
    Some(encode_allocation_key(holder, idempotency_key))
}

/// The string form of an allocation key, from a request or from a stored row's
/// `allocated_to_track` and `idempotency_key`.
pub fn encode_allocation_key(holder: &str, idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        Some(key) => format!("{holder}\u{1f}{key}"),
        None => holder.to_owned(),
    }
}
