//! Reservations on the shared table: one item each under `PK = "RESERVATION"` (additive,
//! no `status`, as the cordons), and the rows they hold: `status = reserved`,
//! `reserved_for = <id>` and `allocated_to_track = reservation#<id>`, so `TrackIndex` lists
//! a reservation's rows with one query (docs/dynamodb.md).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::calls::Budget;
use super::candidates::{prefix_end, prefix_start};
use super::error::{DynamoError, internal};
use super::item::{AttributeValuesExt, Item, SANDBOX_PREFIX, reservation_track, s};
use super::schema::{LAB_INDEX, STATUS_NAME_INDEX};
use super::update::unread_available;
use crate::domain::lifecycle::{self, Change};
use crate::domain::reservations::{Reservation, ReservationCounts};
use crate::domain::time::EpochSecs;
use crate::domain::{Sandbox, SandboxStatus};
use crate::store::StoreError;

/// The partition of the reservation items; each one's sort key is its id.
pub(super) const RESERVATIONS: &str = "RESERVATION";

fn key(id: &str) -> Item {
    HashMap::from([("PK".to_owned(), s(RESERVATIONS)), ("SK".to_owned(), s(id))])
}

pub(super) fn reservation_of(item: &Item) -> Result<Reservation, StoreError> {
    serde_json::from_str(item.text("reservation").unwrap_or_default())
        .map_err(|err| StoreError::Internal(Box::new(err)))
}

/// The item of `reservation`.
pub(super) fn reservation_item(reservation: &Reservation) -> Result<Item, StoreError> {
    let json =
        serde_json::to_string(reservation).map_err(|err| StoreError::Internal(Box::new(err)))?;
    let mut item = key(&reservation.id);
    item.insert("sandbox_id".to_owned(), s(RESERVATIONS));
    item.insert("reservation".to_owned(), AttributeValue::S(json));
    Ok(item)
}

/// A row set aside for `reservation` as a write that has not read it must assume it (see
/// [`unread_available`]).
pub(super) fn unread_reserved(id: &str, reservation: &str) -> Result<Sandbox, StoreError> {
    let mut row = unread_available(id)?;
    row.status = SandboxStatus::Reserved;
    row.reserved_for = Some(reservation.to_owned());
    Ok(row)
}

impl DynamoStore {
    /// See [`crate::store::ReservationStore::reservations`].
    pub(super) async fn read_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        self.partition_items(RESERVATIONS)
            .await?
            .iter()
            .map(reservation_of)
            .collect()
    }

    /// See [`crate::store::ReservationStore::add_reservation`].
    pub(super) async fn put_reservation(
        &self,
        reservation: &Reservation,
    ) -> Result<(), StoreError> {
        self.put_record(&self.calls.budget(), reservation_item(reservation)?)
            .await
    }

    /// See [`crate::store::ReservationStore::remove_reservation`].
    pub(super) async fn delete_reservation(
        &self,
        id: &str,
    ) -> Result<Option<Reservation>, StoreError> {
        self.delete_partition_item(RESERVATIONS, id)
            .await?
            .as_ref()
            .map(reservation_of)
            .transpose()
    }

    /// Ids of rows set aside for `reservation`, from `TrackIndex` (at most `limit`, or all).
    pub(super) async fn reserved_ids(
        &self,
        budget: &Budget,
        reservation: &str,
        limit: Option<i32>,
    ) -> Result<Vec<String>, StoreError> {
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .index_name(LAB_INDEX)
            .key_condition_expression("allocated_to_track = :reservation")
            .expression_attribute_values(":reservation", s(reservation_track(reservation)))
            .projection_expression("PK");
        let items = match limit {
            Some(limit) => {
                let query = query.limit(limit);
                let page = self
                    .calls
                    .send(budget, || self.calls.wire.send(&query))
                    .await
                    .map_err(DynamoError::into_store_error)?;
                page.items.unwrap_or_default()
            }
            None => self.query_every_page(budget, query).await?,
        };
        Ok(items
            .iter()
            .filter_map(|item| {
                item.text("PK")?
                    .strip_prefix(SANDBOX_PREFIX)
                    .map(str::to_owned)
            })
            .collect())
    }

    /// See [`crate::store::ReservationStore::reservation_counts`]: one projected scan of
    /// the rows that name a reservation.
    pub(super) async fn count_reservation_rows(
        &self,
    ) -> Result<HashMap<String, ReservationCounts>, StoreError> {
        let scan = self
            .client()
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(PK, :sbx) AND attribute_exists(reserved_for)")
            .projection_expression("PK, #s, reserved_for")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":sbx", s(SANDBOX_PREFIX));
        let mut counts: HashMap<String, ReservationCounts> = HashMap::new();
        for item in self.scan_every_page(&self.calls.budget(), scan).await? {
            let Some(reservation) = item.text("reserved_for") else {
                continue;
            };
            let entry = counts.entry(reservation.to_owned()).or_default();
            if item.text("status") == Some(SandboxStatus::Reserved.as_str()) {
                entry.held += 1;
            } else {
                entry.used += 1;
            }
        }
        Ok(counts)
    }

    /// See [`crate::store::ReservationStore::held_rows`]: the `reserved` rows through
    /// `StatusIndex`, only their `reserved_for` read.
    pub(super) async fn count_held_rows(&self) -> Result<HashMap<String, u64>, StoreError> {
        let query = self
            .in_status(SandboxStatus::Reserved)
            .projection_expression("reserved_for");
        let mut held: HashMap<String, u64> = HashMap::new();
        for item in self.query_every_page(&self.calls.budget(), query).await? {
            if let Some(reservation) = item.text("reserved_for") {
                *held.entry(reservation.to_owned()).or_default() += 1;
            }
        }
        Ok(held)
    }

    /// See [`crate::store::ReservationStore::reservable`]: two counts on `StatusNameIndex`.
    pub(super) async fn count_reservable(&self, prefix: &str) -> Result<u64, StoreError> {
        let budget = self.calls.budget();
        let mut total = 0;
        for status in [SandboxStatus::Available, SandboxStatus::Reserved] {
            let query = self
                .client()
                .query()
                .table_name(&self.table)
                .index_name(STATUS_NAME_INDEX)
                .key_condition_expression("#s = :status AND #n BETWEEN :from AND :to")
                .expression_attribute_names("#s", "status")
                .expression_attribute_names("#n", "name")
                .expression_attribute_values(":status", s(status.as_str()))
                .expression_attribute_values(":from", s(prefix_start(prefix)))
                .expression_attribute_values(":to", s(prefix_end(prefix)));
            total += self.count(&budget, query, u64::MAX).await?;
        }
        Ok(total)
    }

    /// Applies one decided change to a row the write has not read; whether it landed
    /// (`false`: its condition found the row otherwise).
    async fn land(
        &self,
        budget: &Budget,
        unread: &Sandbox,
        change: &Change,
    ) -> Result<bool, StoreError> {
        let update = self.apply_change(unread, change);
        match self
            .calls
            .send(budget, || self.calls.wire.send(&update))
            .await
        {
            Ok(_) => Ok(true),
            Err(DynamoError::Conflict) => Ok(false),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    /// See [`crate::store::ReservationStore::hold_rows`]: candidates from this instance's
    /// shared pool (so its own allocations never race the job), each a conditional update.
    pub(super) async fn hold_available(
        &self,
        reservation: &Reservation,
        count: u64,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let mut held = 0;
        while held < count {
            let budget = self.calls.budget();
            let Some(id) = self
                .candidates
                .take(self, &budget, &reservation.name_prefix)
                .await?
            else {
                break;
            };
            let unread = unread_available(&id)?;
            let change = lifecycle::reserve(&unread, &reservation.id, now)
                .ok_or_else(|| internal("an unread candidate is assumed available"))?;
            if self.land(&budget, &unread, &change).await? {
                held += 1;
            }
        }
        Ok(held)
    }

    /// See [`crate::store::ReservationStore::return_rows`].
    pub(super) async fn return_reserved(
        &self,
        id: &str,
        now: EpochSecs,
    ) -> Result<u64, StoreError> {
        let budget = self.calls.budget();
        let mut returned = Vec::new();
        for sandbox in self.reserved_ids(&budget, id, None).await? {
            let budget = self.calls.budget();
            let unread = unread_reserved(&sandbox, id)?;
            let change = lifecycle::unreserve(&unread, id, now)
                .ok_or_else(|| internal("an unread reserved row is assumed reserved"))?;
            if self.land(&budget, &unread, &change).await? {
                returned.push(sandbox);
            }
        }
        // This instance may have set them aside moments ago: they are candidates again.
        self.candidates.forget_handed_out(&returned);
        Ok(returned.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::Grant;
    use crate::store::dynamo::update::row_update;

    #[test]
    fn a_reserved_row_is_indexed_by_its_reservation_and_never_read_as_held() {
        let unread = unread_available("42").unwrap();
        let reserved = lifecycle::reserve(&unread, "res_1", EpochSecs::new(10)).unwrap();
        let item = Item::from(&reserved.row);
        assert_eq!(item.text("allocated_to_track"), Some("reservation#res_1"));
        assert_eq!(item.text("reserved_for"), Some("res_1"));
        assert_eq!(item.text("status"), Some("reserved"));
        let read = Sandbox::try_from(&item).unwrap();
        assert_eq!(
            (read.holder, read.reserved_for.as_deref()),
            (None, Some("res_1"))
        );

        let update = row_update(&unread, &reserved, true);
        assert!(
            update.condition.ends_with("= :expect_status"),
            "{}",
            update.condition
        );

        let grant = Grant {
            token_id: None,
            reservation: Some("res_1"),
            holder: "stu",
            idempotency_key: "stu",
            lab: Some("lab-a"),
            lab_duration_hours: 4,
            now: EpochSecs::new(20),
        };
        let before = unread_reserved("42", "res_1").unwrap();
        let claim = lifecycle::allocate(&before, &grant).unwrap();
        let update = row_update(&before, &claim, true);
        assert!(
            update.condition.contains("= :expect_reservation"),
            "only a row still set aside for it: {}",
            update.condition
        );
        assert_eq!(update.values[":expect_status"], s("reserved"));
        let holder = update
            .names
            .iter()
            .find(|(_, attribute)| *attribute == "allocated_to_track")
            .map(|(placeholder, _)| placeholder.clone())
            .unwrap();
        assert!(
            update.expression.contains(&format!("{holder} = ")),
            "the student holds it now"
        );
        let allocated = Item::from(&claim.row);
        assert_eq!(allocated.text("allocated_to_track"), Some("stu"));
        assert_eq!(
            allocated.text("reserved_for"),
            Some("res_1"),
            "counted as used"
        );
    }
}
