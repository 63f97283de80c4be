//! The webhook outbox and the deliveries it fans out into.

use super::*;
use crate::domain::webhooks::WebhookEndpoint;
use crate::domain::webhooks::outbox::{Delivery, Pending, sequence};

/// The [`DELIVERIES`] key of `delivery`: by endpoint, then event time, then event id.
pub(super) fn delivery_key(delivery: &Delivery) -> String {
    format!(
        "{}\0{:012}\0{:020}\0{}",
        delivery.endpoint,
        delivery.event.at.get().max(0),
        delivery.sequence,
        delivery.event.id
    )
}

/// Up to `limit` deliveries to `endpoint`, in event order.
pub(in crate::store::embedded) fn deliveries(
    db: &Database,
    endpoint: &str,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(DELIVERIES).map_err(storage)?;
    let (start, end) = (format!("{endpoint}\0"), format!("{endpoint}\u{1}"));
    let mut found = Vec::new();
    for entry in table
        .range(start.as_str()..end.as_str())
        .map_err(storage)?
        .take(limit)
    {
        let (key, value) = entry.map_err(storage)?;
        found.push(json("delivery", key.value(), value.value())?);
    }
    Ok(found)
}

/// Events not yet fanned out: how many, and the oldest one's time.
pub(in crate::store::embedded) fn outbox_backlog(
    db: &Database,
) -> Result<(u64, Option<EpochSecs>), StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(OUTBOX).map_err(storage)?;
    let oldest = match table.first().map_err(storage)? {
        Some((key, value)) => Some(json::<Pending>("event", key.value(), value.value())?.at()),
        None => None,
    };
    Ok((table.len().map_err(storage)?, oldest))
}

impl Tables<'_> {
    /// Puts the event `event` makes (if any) at the end of the outbox, when a webhook
    /// endpoint is registered. Without one an event has nobody to go to (a fan-out would
    /// drop it), so nothing is written and `event` is not even made: a row change then
    /// costs one look at the endpoint table's length.
    pub(in crate::store::embedded) fn enqueue(
        &mut self,
        event: impl FnOnce() -> Option<Pending>,
    ) -> Result<(), StoreError> {
        if self.webhooks.read(self.txn)?.is_empty().map_err(storage)? {
            return Ok(());
        }
        let Some(pending) = event() else {
            return Ok(());
        };
        let last = match self
            .records
            .read(self.txn)?
            .get(OUTBOX_SEQUENCE)
            .map_err(storage)?
        {
            Some(value) => {
                let bytes: [u8; 8] = value.value().try_into().map_err(|_| {
                    StoreError::Internal("the outbox sequence is not 8 bytes".into())
                })?;
                u64::from_be_bytes(bytes)
            }
            None => 0,
        };
        let next = last + 1;
        self.records
            .write(self.txn)?
            .insert(OUTBOX_SEQUENCE, next.to_be_bytes().as_slice())
            .map_err(storage)?;
        self.outbox
            .write(self.txn)?
            .insert(format!("{next:020}").as_str(), encode(&pending)?.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// See [`crate::store::OutboxStore::fan_out`].
    pub(in crate::store::embedded) fn fan_out(
        &mut self,
        endpoints: &[WebhookEndpoint],
        limit: usize,
        now: crate::domain::time::EpochMillis,
    ) -> Result<u64, StoreError> {
        let mut taken = Vec::new();
        for entry in self
            .outbox
            .read(self.txn)?
            .iter()
            .map_err(storage)?
            .take(limit)
        {
            let (key, value) = entry.map_err(storage)?;
            taken.push((
                key.value().to_owned(),
                json::<Pending>("event", key.value(), value.value())?,
            ));
        }
        for (place, (key, pending)) in taken.iter().enumerate() {
            let wanting: Vec<&WebhookEndpoint> = endpoints
                .iter()
                .filter(|e| e.receives(pending.kind(), pending.at()))
                .collect();
            if !wanting.is_empty() {
                let row = match pending.sandbox_id() {
                    Some(id) => self.row(id)?,
                    None => None,
                };
                let event = pending
                    .event(row.as_ref())
                    .map_err(|err| StoreError::Internal(Box::new(err)))?;
                for endpoint in wanting {
                    let delivery = Delivery::first(&endpoint.id, &event, sequence(now, place));
                    self.deliveries
                        .write(self.txn)?
                        .insert(
                            delivery_key(&delivery).as_str(),
                            encode(&delivery)?.as_slice(),
                        )
                        .map_err(storage)?;
                }
            }
            self.outbox
                .write(self.txn)?
                .remove(key.as_str())
                .map_err(storage)?;
        }
        Ok(taken.len() as u64)
    }

    /// See [`crate::store::OutboxStore::settle_delivery`].
    pub(in crate::store::embedded) fn settle_delivery(
        &mut self,
        delivery: &Delivery,
        next: Option<&Delivery>,
    ) -> Result<(), StoreError> {
        let key = delivery_key(delivery);
        match next {
            None => {
                self.deliveries
                    .write(self.txn)?
                    .remove(key.as_str())
                    .map_err(storage)?;
            }
            // Only while it is still there: an endpoint removed meanwhile took it along.
            Some(next)
                if self
                    .deliveries
                    .read(self.txn)?
                    .get(key.as_str())
                    .map_err(storage)?
                    .is_some() =>
            {
                self.deliveries
                    .write(self.txn)?
                    .insert(key.as_str(), encode(next)?.as_slice())
                    .map_err(storage)?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Keeps `delivery` as a restore brings it.
    pub(in crate::store::embedded) fn restore_delivery(
        &mut self,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        self.deliveries
            .write(self.txn)?
            .insert(
                delivery_key(delivery).as_str(),
                encode(delivery)?.as_slice(),
            )
            .map_err(storage)?;
        Ok(())
    }

    /// See [`crate::store::OutboxStore::drop_deliveries`].
    pub(in crate::store::embedded) fn drop_deliveries(
        &mut self,
        endpoint: &str,
    ) -> Result<u64, StoreError> {
        let (start, end) = (format!("{endpoint}\0"), format!("{endpoint}\u{1}"));
        let mut keys = Vec::new();
        for entry in self
            .deliveries
            .read(self.txn)?
            .range(start.as_str()..end.as_str())
            .map_err(storage)?
        {
            keys.push(entry.map_err(storage)?.0.value().to_owned());
        }
        for key in &keys {
            self.deliveries
                .write(self.txn)?
                .remove(key.as_str())
                .map_err(storage)?;
        }
        Ok(keys.len() as u64)
    }
}
