//! Exports and restores on the shared table: a consistent parallel scan out, and
//! conditional puts in (docs/operations.md).
//!
//! Rule: an export reads every page with `ConsistentRead`, but a scan is not a snapshot:
//! an item written while it runs may or may not be in it, so a move stops the writers
//! first. A restore writes each item with `attribute_not_exists(PK)`, so an item already
//! there (written by an interrupted run, or kept by `--merge`) is never overwritten, and
//! the item the table holds instead comes back with the refusal.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};

use super::audit::{ACTIONS, action_item, action_of};
use super::cordons::{CORDONS, cordon_item, cordon_of};
use super::error::{DynamoError, internal};
use super::item::{
    ALLOCATION_PREFIX, AttributeValuesExt, Item, NIOSXAAS_PREFIX, SANDBOX_PREFIX, USED_PREFIX,
    allocation_key, n, s,
};
use super::jobs::{JOB_PARTITION, job_item, record_from};
use super::outbox::{DELIVERY_PREFIX, delivery_item, delivery_of};
use super::reservations::{RESERVATIONS, reservation_item, reservation_of};
use super::tokens::{TOKENS, token_item, token_of};
use super::webhooks::{WEBHOOKS, webhook_item_with, webhook_use_of};
use super::{BULK_CONCURRENCY, DynamoStore};
use crate::domain::time::EpochSecs;
use crate::domain::used::UsedAccount;
use crate::domain::{NiosxaasHistory, Sandbox, SandboxStatus};
use crate::store::backup::{
    AllocationKeyItem, BackupItem, Consistency, Export, LoggedAction, RestoreMarker, Restored,
};
use crate::store::{StoreError, allocation_key_of_row};

/// Segments of the export's parallel scan: enough to overlap round trips, few enough
/// not to crowd out the service's own calls.
const SCAN_SEGMENTS: i32 = 4;
/// The restore marker's partition and sort key.
const RESTORE_MARKER: &str = "RESTORE";

fn decoding(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Internal(Box::new(err))
}

/// The backup item `item` is, or `None` for items an export leaves out: derived records
/// (the last listing and audit), the readiness probe, the restore marker.
fn backup_item_of(item: &Item) -> Result<Option<BackupItem>, StoreError> {
    let pk = item.text("PK").unwrap_or_default();
    let sk = item.text("SK").unwrap_or_default();
    let backup = if pk.starts_with(SANDBOX_PREFIX) {
        BackupItem::Sandbox(Sandbox::try_from(item).map_err(decoding)?)
    } else if let Some(encoded) = pk.strip_prefix(ALLOCATION_PREFIX) {
        let sandbox_id = item.text("sandbox_id").unwrap_or_default().to_owned();
        BackupItem::AllocationKey(AllocationKeyItem::from_encoded(encoded, sandbox_id))
    } else if pk.starts_with(USED_PREFIX) {
        BackupItem::UsedAccount(UsedAccount::try_from(item).map_err(decoding)?)
    } else if pk.starts_with(NIOSXAAS_PREFIX) {
        BackupItem::NiosxaasHistory(NiosxaasHistory::try_from(item).map_err(decoding)?)
    } else if pk == JOB_PARTITION {
        BackupItem::Job(record_from(item))
    } else if pk == CORDONS {
        BackupItem::Cordon(cordon_of(item)?)
    } else if pk == TOKENS {
        BackupItem::LabToken(token_of(item)?)
    } else if pk == RESERVATIONS {
        BackupItem::Reservation(reservation_of(item)?)
    } else if pk.starts_with(DELIVERY_PREFIX) {
        BackupItem::WebhookDelivery(delivery_of(item)?)
    } else if pk == WEBHOOKS {
        let used = webhook_use_of(item)?;
        BackupItem::Webhook {
            endpoint: used.endpoint,
            state: used.state,
        }
    } else if pk == ACTIONS {
        BackupItem::Action(LoggedAction {
            key: sk.to_owned(),
            entry: action_of(item)?,
        })
    } else {
        return Ok(None);
    };
    Ok(Some(backup))
}

/// The table item of `backup`, as the service writes that kind.
fn item_of(backup: &BackupItem, now: EpochSecs) -> Result<Item, StoreError> {
    Ok(match backup {
        BackupItem::Sandbox(row) => Item::from(row),
        BackupItem::AllocationKey(key) => {
            let mut item = allocation_key(&key.encoded());
            item.insert("sandbox_id".into(), s(&key.sandbox_id));
            item.insert("created_at".into(), n(now));
            item.insert("updated_at".into(), n(now));
            item
        }
        BackupItem::UsedAccount(marker) => Item::from(marker),
        BackupItem::NiosxaasHistory(history) => Item::from(history),
        BackupItem::Job(record) => job_item(record),
        BackupItem::Cordon(cordon) => cordon_item(cordon)?,
        BackupItem::Action(action) => action_item(&action.key, &action.entry)?,
        BackupItem::LabToken(token) => token_item(token)?,
        BackupItem::Reservation(reservation) => reservation_item(reservation)?,
        BackupItem::Webhook { endpoint, state } => webhook_item_with(endpoint, state)?,
        BackupItem::WebhookDelivery(delivery) => delivery_item(delivery)?,
    })
}

fn marker_key() -> Item {
    HashMap::from([
        ("PK".to_owned(), s(RESTORE_MARKER)),
        ("SK".to_owned(), s(RESTORE_MARKER)),
    ])
}

impl DynamoStore {
    /// See [`crate::store::BackupStore::export`].
    pub(super) async fn scan_export(&self, now: EpochSecs) -> Result<Export, StoreError> {
        let segments: Vec<Vec<BackupItem>> =
            futures::stream::iter((0..SCAN_SEGMENTS).map(|segment| self.scan_segment(segment)))
                .buffer_unordered(SCAN_SEGMENTS as usize)
                .try_collect()
                .await?;
        let mut items: Vec<BackupItem> = segments.into_iter().flatten().collect();
        items.extend(implied_keys(&items));
        items.sort_by_key(BackupItem::order);
        let header = Export::header("dynamodb", Consistency::Scan, now, items.len() as u64);
        Ok(Export {
            header,
            items: Box::pin(futures::stream::iter(items.into_iter().map(Ok))),
        })
    }

    /// Reads `scan` page after page, each consistently and under its own call budget (a
    /// whole table does not fit one operation's deadline), handing every page's items to
    /// `page` until it breaks or the scan ends.
    async fn scan_pages(
        &self,
        scan: ScanFluentBuilder,
        mut page: impl FnMut(&[Item]) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        let scan = scan.table_name(&self.table).consistent_read(true);
        let mut start = None;
        loop {
            let request = scan.clone().set_exclusive_start_key(start.take());
            let answer = self
                .calls
                .send(&self.calls.budget(), || self.calls.wire.send(&request))
                .await
                .map_err(DynamoError::into_store_error)?;
            if page(answer.items())?.is_break() {
                return Ok(());
            }
            match answer.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(()),
            }
        }
    }

    /// Every backup item of one segment of the export's parallel scan.
    async fn scan_segment(&self, segment: i32) -> Result<Vec<BackupItem>, StoreError> {
        let scan = self
            .client()
            .scan()
            .segment(segment)
            .total_segments(SCAN_SEGMENTS);
        let mut found = Vec::new();
        self.scan_pages(scan, |items| {
            for item in items {
                found.extend(backup_item_of(item)?);
            }
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(found)
    }

    /// See [`crate::store::BackupStore::restore_items`].
    pub(super) async fn put_restored(
        &self,
        items: Vec<BackupItem>,
        now: EpochSecs,
    ) -> Result<Vec<Restored>, StoreError> {
        // Many puts at once, but never an item before one it points at: the runs of the
        // export's order (tokens and markers, rows, the rest) go one after another, so a
        // restored row finds its lab token written when it records its slot there.
        let mut restored = Vec::with_capacity(items.len());
        for run in items.chunk_by(|a, b| a.order() == b.order()) {
            let written: Vec<Restored> = futures::stream::iter(
                run.iter()
                    .cloned()
                    .map(|item| self.put_if_absent(item, now)),
            )
            .buffered(BULK_CONCURRENCY * 2)
            .try_collect()
            .await?;
            restored.extend(written);
        }
        Ok(restored)
    }

    async fn put_if_absent(
        &self,
        backup: BackupItem,
        now: EpochSecs,
    ) -> Result<Restored, StoreError> {
        let item = item_of(&backup, now)?;
        let key: Item = ["PK", "SK"]
            .into_iter()
            .filter_map(|name| Some((name.to_owned(), item.get(name)?.clone())))
            .collect();
        let budget = self.calls.budget();
        let (sent, returned) = self.put_new_item(&budget, item).await;
        let restored = match sent {
            Ok(()) => Restored::Written,
            Err(DynamoError::Conflict) => {
                let present = match returned {
                    Some(item) => Some(item),
                    None => self.consistent_item(&budget, key).await?,
                };
                let present = present.as_ref().map(backup_item_of).transpose()?.flatten();
                Restored::Present(Box::new(present.ok_or_else(|| {
                    internal(format!(
                        "{} is held by an item of another kind",
                        backup.key()
                    ))
                })?))
            }
            Err(DynamoError::Store(err)) => return Err(err),
        };
        // The row's slot on its lab token, also when an interrupted run wrote the row.
        let ours = match &restored {
            Restored::Written => true,
            Restored::Present(present) => **present == backup,
        };
        if let (true, BackupItem::Sandbox(row)) = (ours, &backup) {
            self.hold_restored_row(&budget, row).await?;
        }
        Ok(restored)
    }

    /// See [`crate::store::BackupStore::any_item`].
    pub(super) async fn first_item(&self) -> Result<Option<String>, StoreError> {
        let mut found = None;
        self.scan_pages(self.client().scan().limit(100), |items| {
            for item in items {
                if let Some(backup) = backup_item_of(item)? {
                    found = Some(backup.key());
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(found)
    }

    /// See [`crate::store::BackupStore::restore_marker`].
    pub(super) async fn read_restore_marker(&self) -> Result<Option<RestoreMarker>, StoreError> {
        let Some(item) = self
            .consistent_item(&self.calls.budget(), marker_key())
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_str(item.text("marker").unwrap_or_default())
            .map(Some)
            .map_err(decoding)
    }

    /// See [`crate::store::BackupStore::set_restore_marker`].
    pub(super) async fn write_restore_marker(
        &self,
        marker: Option<RestoreMarker>,
    ) -> Result<(), StoreError> {
        let budget = self.calls.budget();
        match marker {
            Some(marker) => {
                let json = serde_json::to_string(&marker).map_err(decoding)?;
                let mut item = marker_key();
                // Like the job items: a `sandbox_id` naming no sandbox, and no `status`.
                item.insert("sandbox_id".to_owned(), s(RESTORE_MARKER));
                item.insert("marker".to_owned(), AttributeValue::S(json));
                self.put_record(&budget, item).await
            }
            None => {
                let delete = self
                    .client()
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(marker_key()));
                self.calls
                    .send(&budget, || self.calls.wire.send(&delete))
                    .await
                    .map(drop)
                    .map_err(DynamoError::into_store_error)
            }
        }
    }
}

/// The allocation keys the Python service's allocations imply: it wrote no `ALLOC#` item,
/// only the row's student and `idempotency_key`, which the DynamoDB store looks up
/// through an index. The embedded store finds allocations by their key alone, so the
/// export carries one for each such row (restored here, it is the item this service
/// would have written).
fn implied_keys(items: &[BackupItem]) -> Vec<BackupItem> {
    let mut present: HashSet<String> = items
        .iter()
        .filter_map(|item| match item {
            BackupItem::AllocationKey(key) => Some(key.encoded()),
            _ => None,
        })
        .collect();
    items
        .iter()
        .filter_map(|item| match item {
            BackupItem::Sandbox(row) if row.status == SandboxStatus::Allocated => Some(row),
            _ => None,
        })
        .filter_map(|row| {
            let encoded = allocation_key_of_row(row)?;
            present.insert(encoded.clone()).then(|| {
                BackupItem::AllocationKey(AllocationKeyItem::from_encoded(
                    &encoded,
                    row.sandbox_id.clone(),
                ))
            })
        })
        .collect()
}
