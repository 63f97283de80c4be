//! The allocation-key index: which sandbox each allocation key holds now.
//!
//! Rule: it is derived from the rows. Every `allocated` row names itself under its key
//! ([`allocation_key_of_row`]), and nothing else is in it. So it is kept in memory, built
//! from the rows when the store opens, and kept in step by the one place rows change
//! (`Tables::put`/`remove`): a transaction's changes wait in [`KeyChanges`] and reach the
//! shared index only after the commit succeeds, as the status counts do.
//!
//! Why not a table: the keys are the students' keys, random, so every allocation wrote a
//! different leaf of a B-tree. redb rebuilt and checksummed that leaf and wrote it at
//! commit: about 22,000 instructions, an eighth of an allocation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{PoisonError, RwLock};

use crate::domain::{Sandbox, SandboxStatus};
use crate::store::allocation_key_of_row;

/// The committed index: encoded allocation key → `sandbox_id` of the allocated row that
/// holds it.
#[derive(Debug, Default)]
pub(super) struct KeyIndex(RwLock<HashMap<String, String>>);

impl From<KeyChanges> for KeyIndex {
    /// The index of an empty store after `changes`: at open, every row added.
    fn from(changes: KeyChanges) -> Self {
        let index = Self::default();
        index.apply(changes);
        index
    }
}

impl KeyIndex {
    /// The sandbox `key` holds, as of the last commit.
    pub(super) fn get(&self, key: &str) -> Option<String> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(key).cloned()
    }

    /// Whether the committed index holds `key`.
    pub(super) fn contains(&self, key: &str) -> bool {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.contains_key(key)
    }

    /// Makes a committed transaction's changes visible.
    pub(super) fn apply(&self, changes: KeyChanges) {
        if changes.0.is_empty() {
            return;
        }
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for (key, id) in changes.0 {
            match id {
                Some(id) => map.insert(key, id),
                None => map.remove(&key),
            };
        }
    }
}

/// One transaction's changes to the index: `Some(id)` puts a key, `None` removes it.
#[derive(Debug, Default)]
pub(super) struct KeyChanges(HashMap<String, Option<String>>);

impl KeyChanges {
    /// The sandbox `key` holds in the transaction: its own change if it made one, else
    /// the committed index's.
    pub(super) fn get(&self, committed: &KeyIndex, key: &str) -> Option<String> {
        match self.0.get(key) {
            Some(change) => change.clone(),
            None => committed.get(key),
        }
    }

    /// The keys these changes put, each with its sandbox: from an empty index, the index.
    pub(super) fn into_held(self) -> BTreeMap<String, String> {
        self.0
            .into_iter()
            .filter_map(|(key, id)| Some((key, id?)))
            .collect()
    }

    /// `row` was written: an allocated row holds its key.
    pub(super) fn row_added(&mut self, row: &Sandbox) {
        if row.status != SandboxStatus::Allocated {
            return;
        }
        if let Some(key) = allocation_key_of_row(row) {
            self.0.insert(key, Some(row.sandbox_id.clone()));
        }
    }

    /// `row` was replaced or deleted: its key no longer names it (a key another row holds
    /// since is left alone).
    pub(super) fn row_removed(&mut self, committed: &KeyIndex, row: &Sandbox) {
        if row.status != SandboxStatus::Allocated {
            return;
        }
        let Some(key) = allocation_key_of_row(row) else {
            return;
        };
        if self.get(committed, &key).as_deref() == Some(row.sandbox_id.as_str()) {
            self.0.insert(key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::EpochSecs;
    use crate::domain::{ExternalId, NewSandbox, SandboxId, SandboxName};

    fn row(id: &str, holder: Option<&str>) -> Sandbox {
        let mut row = NewSandbox {
            sandbox_id: SandboxId::parse("id", id).unwrap(),
            name: SandboxName::parse("name", &format!("lab-{id}")).unwrap(),
            external_id: ExternalId::parse("ext", "x").unwrap(),
            sfdc_account_id: None,
        }
        .into_available_row(EpochSecs::new(0));
        if let Some(holder) = holder {
            row.status = SandboxStatus::Allocated;
            row.holder = Some(holder.into());
        }
        row
    }

    fn of_rows(rows: &[Sandbox]) -> KeyIndex {
        let mut changes = KeyChanges::default();
        rows.iter().for_each(|row| changes.row_added(row));
        KeyIndex::from(changes)
    }

    #[test]
    fn only_allocated_rows_name_themselves_under_their_key() {
        let mut keyed = row("3", Some("stu"));
        keyed.idempotency_key = Some("lab-2".into());
        let index = of_rows(&[row("1", Some("stu")), row("2", None), keyed]);
        assert_eq!(index.get("stu").as_deref(), Some("1"));
        assert_eq!(index.get("stu\u{1f}lab-2").as_deref(), Some("3"));
        let mut released = row("1", Some("stu"));
        released.status = SandboxStatus::PendingDeletion;
        assert!(!of_rows(&[released]).contains("stu"));
    }

    #[test]
    fn changes_are_seen_by_their_transaction_and_by_others_only_once_applied() {
        let index = of_rows(&[row("1", Some("stu"))]);
        let mut changes = KeyChanges::default();
        changes.row_removed(&index, &row("1", Some("stu")));
        changes.row_added(&row("2", Some("other")));
        assert_eq!(changes.get(&index, "stu"), None);
        assert_eq!(changes.get(&index, "other").as_deref(), Some("2"));
        assert_eq!(index.get("stu").as_deref(), Some("1"), "not committed yet");
        index.apply(changes);
        assert_eq!(index.get("stu"), None);
        assert_eq!(index.get("other").as_deref(), Some("2"));
    }

    #[test]
    fn a_row_that_no_longer_holds_its_key_leaves_the_holder_since_alone() {
        let index = of_rows(&[row("2", Some("stu"))]);
        let mut changes = KeyChanges::default();
        changes.row_removed(&index, &row("1", Some("stu")));
        assert_eq!(changes.get(&index, "stu").as_deref(), Some("2"));
    }
}
