//! Reads from a snapshot: one row, a page of the admin list, per-lab statistics; and the bulk delete.

use super::*;
use crate::domain::time::EpochSecs;

/// Available rows by name prefix, from a fresh snapshot: one range of the available index
/// per prefix.
pub(in crate::store::embedded) fn available_by_prefix(
    db: &Database,
    prefixes: &[NamePrefix],
) -> Result<Vec<u64>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let available = txn.open_table(AVAILABLE_BY_NAME).map_err(storage)?;
    let mut counts = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        let mut count = 0;
        for entry in available.range(prefix.as_str()..).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            if !key.value().starts_with(prefix.as_str()) {
                break;
            }
            count += 1;
        }
        counts.push(count);
    }
    Ok(counts)
}

/// The row with this id from a fresh snapshot.
pub(in crate::store::embedded) fn read_row(
    db: &Database,
    id: &str,
) -> Result<Option<Sandbox>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(SANDBOXES).map_err(storage)?;
    let guard = table.get(id).map_err(storage)?;
    guard.map(|value| decode(id, value.value())).transpose()
}

/// The sandbox `request`'s allocation key holds now (`keys`, then a fresh snapshot of its
/// row): what a replay would answer, without allocating (and without a write transaction).
pub(in crate::store::embedded) fn read_held_by(
    db: &Database,
    keys: &KeyIndex,
    request: &AllocationRequest,
) -> Result<Option<Sandbox>, StoreError> {
    let Some(id) = keys.get(&request.key.encoded()) else {
        return Ok(None);
    };
    // Read after the index: a row the index names was committed before this snapshot.
    let row = read_row(db, &id)?;
    Ok(row.filter(|row| super::allocate::still_held(request, row)))
}

/// The NIOSXaaS history item of `id` from a fresh snapshot, unless it expired.
pub(in crate::store::embedded) fn read_niosxaas_history(
    db: &Database,
    id: &str,
    now: EpochSecs,
) -> Result<Option<NiosxaasHistory>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(NIOSXAAS_HISTORY).map_err(storage)?;
    let Some(value) = table.get(id).map_err(storage)? else {
        return Ok(None);
    };
    let history = decode_history(id, value.value())?;
    Ok((history.ttl > now).then_some(history))
}

/// Every NIOSXaaS history item not expired by `now`.
pub(in crate::store::embedded) fn read_niosxaas_histories(
    db: &Database,
    now: EpochSecs,
) -> Result<Vec<NiosxaasHistory>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(NIOSXAAS_HISTORY).map_err(storage)?;
    let mut items = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let history = decode_history(key.value(), value.value())?;
        if history.ttl > now {
            items.push(history);
        }
    }
    Ok(items)
}

fn decode_history(id: &str, value: &[u8]) -> Result<NiosxaasHistory, StoreError> {
    serde_json::from_slice(value).map_err(|err| {
        StoreError::Internal(format!("history of {id} cannot be decoded: {err}").into())
    })
}

/// One page in `sandbox_id` order, starting after the cursor. With a status filter only
/// that status's rows are read, through the status index.
pub(in crate::store::embedded) fn list_page(
    db: &Database,
    query: &ListQuery,
) -> Result<SandboxPage, StoreError> {
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
pub(super) struct PageBuilder<'q> {
    query: &'q ListQuery,
    rows: Vec<Sandbox>,
    more: bool,
}

impl<'q> PageBuilder<'q> {
    pub(super) fn new(query: &'q ListQuery) -> Self {
        Self {
            query,
            rows: Vec::with_capacity(query.limit),
            more: false,
        }
    }

    /// Takes `row` if it matches; `true` once the page is full and another match was seen.
    pub(super) fn offer(&mut self, row: Sandbox) -> bool {
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

    pub(super) fn finish(self) -> SandboxPage {
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

/// The allocation facts of every row that has any (see [`crate::store::AnalyticsStore::allocation_facts`]).
pub(in crate::store::embedded) fn allocation_facts(
    db: &Database,
) -> Result<Vec<AllocationFacts>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(SANDBOXES).map_err(storage)?;
    let mut facts = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        facts.extend(AllocationFacts::of(&decode(key.value(), value.value())?));
    }
    Ok(facts)
}

impl Tables<'_> {
    /// Removes each of `ids` still in `status` (a bulk delete); counts them.
    pub(in crate::store::embedded) fn remove_in_status(
        &mut self,
        ids: &[String],
        status: SandboxStatus,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        for id in ids {
            if let Some(old) = self.row(id)?
                && old.status == status
            {
                self.remove(&old, now)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
