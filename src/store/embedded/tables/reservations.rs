//! Reservations, and the rows each holds and used.

use std::collections::HashMap;

use super::*;
use crate::domain::reservations::{Reservation, ReservationCounts};

/// The reservation id an index key starts with (`"<reservation>\0…"`).
fn reservation_of(key: &str) -> &str {
    key.split('\0').next().unwrap_or_default()
}

/// Every reservation kept.
pub(in crate::store::embedded) fn reservations(
    db: &Database,
) -> Result<Vec<Reservation>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(RESERVATIONS).map_err(storage)?;
    let mut all = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        all.push(json::<Reservation>(
            "reservation",
            key.value(),
            value.value(),
        )?);
    }
    Ok(all)
}

/// How many entries of `table` (keyed `"<reservation>\0…"`) each reservation has.
fn per_reservation<V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: TableDefinition<'_, &'static str, V>,
) -> Result<HashMap<String, u64>, StoreError> {
    let mut tally: HashMap<String, u64> = HashMap::new();
    for entry in txn
        .open_table(table)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, _) = entry.map_err(storage)?;
        *tally
            .entry(reservation_of(key.value()).to_owned())
            .or_default() += 1;
    }
    Ok(tally)
}

/// Held and used rows per reservation id, from one snapshot of the two indexes.
pub(in crate::store::embedded) fn reservation_counts(
    db: &Database,
) -> Result<HashMap<String, ReservationCounts>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let mut counts: HashMap<String, ReservationCounts> = HashMap::new();
    for (id, held) in per_reservation(&txn, RESERVED_BY_NAME)? {
        counts.entry(id).or_default().held = held;
    }
    for (id, used) in per_reservation(&txn, RESERVATION_USED)? {
        counts.entry(id).or_default().used = used;
    }
    Ok(counts)
}

/// Rows set aside per reservation id, from the reserved rows' index alone.
pub(in crate::store::embedded) fn held_rows(
    db: &Database,
) -> Result<HashMap<String, u64>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    per_reservation(&txn, RESERVED_BY_NAME)
}

/// Rows available or reserved whose name starts with `prefix`.
pub(in crate::store::embedded) fn reservable(
    db: &Database,
    prefix: &str,
) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let mut count = 0;
    let available = txn.open_table(AVAILABLE_BY_NAME).map_err(storage)?;
    for entry in available.range(prefix..).map_err(storage)? {
        let (key, _) = entry.map_err(storage)?;
        if !key.value().starts_with(prefix) {
            break;
        }
        count += 1;
    }
    for entry in txn
        .open_table(RESERVED_BY_NAME)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (key, _) = entry.map_err(storage)?;
        let name = key.value().split('\0').nth(1).unwrap_or_default();
        count += u64::from(name.starts_with(prefix));
    }
    Ok(count)
}

impl Tables<'_> {
    /// Keeps `reservation`.
    pub(in crate::store::embedded) fn put_reservation(
        &mut self,
        reservation: &Reservation,
    ) -> Result<(), StoreError> {
        let bytes = encode(reservation)?;
        self.reservations
            .write(self.txn)?
            .insert(reservation.id.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Forgets the reservation `id`; what it was.
    pub(in crate::store::embedded) fn remove_reservation(
        &mut self,
        id: &str,
    ) -> Result<Option<Reservation>, StoreError> {
        let removed = self
            .reservations
            .write(self.txn)?
            .remove(id)
            .map_err(storage)?;
        removed
            .map(|value| json::<Reservation>("reservation", id, value.value()))
            .transpose()
    }

    /// The first row set aside for `reservation`, in name order.
    pub(super) fn first_reserved(&self, reservation: &str) -> Result<Option<Sandbox>, StoreError> {
        let start = format!("{reservation}\0");
        let end = format!("{reservation}\u{1}");
        let id = match self
            .reserved
            .read(self.txn)?
            .range(start.as_str()..end.as_str())
            .map_err(storage)?
            .next()
        {
            Some(entry) => entry.map_err(storage)?.1.value().to_owned(),
            None => return Ok(None),
        };
        match self.row(&id)? {
            Some(row) if row.status == SandboxStatus::Reserved => Ok(Some(row)),
            _ => Err(StoreError::Internal(
                format!("reserved index names {id}, which is not reserved").into(),
            )),
        }
    }

    /// Sets up to `count` available rows at `reservation`'s prefix aside for it.
    pub(in crate::store::embedded) fn hold_rows(
        &mut self,
        reservation: &Reservation,
        count: u64,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut held = 0;
        while held < count {
            let Some(row) = self.first_available(&reservation.name_prefix)? else {
                break;
            };
            let change = lifecycle::reserve(&row, &reservation.id, now).ok_or_else(|| {
                StoreError::Internal(
                    format!("available row {} cannot be reserved", row.sandbox_id).into(),
                )
            })?;
            self.put(Some(&row), &change.row)?;
            held += 1;
        }
        Ok(held)
    }

    /// Returns every row set aside for the reservation `id` to the pool.
    pub(in crate::store::embedded) fn return_rows(
        &mut self,
        id: &str,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut returned = 0;
        while let Some(row) = self.first_reserved(id)? {
            let change = lifecycle::unreserve(&row, id, now).ok_or_else(|| {
                StoreError::Internal(
                    format!("reserved row {} cannot be returned", row.sandbox_id).into(),
                )
            })?;
            self.put(Some(&row), &change.row)?;
            returned += 1;
        }
        Ok(returned)
    }
}
