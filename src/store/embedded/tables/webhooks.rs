//! Webhook endpoints and their delivery state.

use super::*;
use crate::domain::webhooks::{DeliveryState, WebhookEndpoint, WebhookUse};

/// How an endpoint is kept: the endpoint and its state side by side, so a rotation and a
/// delivery's record each change only their half.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    endpoint: WebhookEndpoint,
    #[serde(default)]
    state: DeliveryState,
}

/// Every endpoint with its state, from one snapshot.
pub(in crate::store::embedded) fn webhook_uses(
    db: &Database,
) -> Result<Vec<WebhookUse>, StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(WEBHOOKS).map_err(storage)?;
    let mut all = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (key, value) = entry.map_err(storage)?;
        let Kept { endpoint, state } = json::<Kept>("webhook", key.value(), value.value())?;
        all.push(WebhookUse { endpoint, state });
    }
    Ok(all)
}

/// The backup item of a kept endpoint.
pub(super) fn backup_item(
    id: &str,
    bytes: &[u8],
) -> Result<crate::store::backup::BackupItem, StoreError> {
    let Kept { endpoint, state } = json::<Kept>("webhook", id, bytes)?;
    Ok(crate::store::backup::BackupItem::Webhook { endpoint, state })
}

impl Tables<'_> {
    /// Keeps an endpoint with its state as a restore brings it.
    pub(in crate::store::embedded) fn restore_webhook(
        &mut self,
        endpoint: &WebhookEndpoint,
        state: &DeliveryState,
    ) -> Result<(), StoreError> {
        self.keep_webhook(&Kept {
            endpoint: endpoint.clone(),
            state: state.clone(),
        })
    }

    fn kept_webhook(&self, id: &str) -> Result<Option<Kept>, StoreError> {
        let guard = self.webhooks.read(self.txn)?.get(id).map_err(storage)?;
        guard
            .map(|value| json::<Kept>("webhook", id, value.value()))
            .transpose()
    }

    fn keep_webhook(&mut self, kept: &Kept) -> Result<(), StoreError> {
        let bytes = encode(kept)?;
        self.webhooks
            .write(self.txn)?
            .insert(kept.endpoint.id.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Keeps a new endpoint.
    pub(in crate::store::embedded) fn add_webhook(
        &mut self,
        endpoint: &WebhookEndpoint,
    ) -> Result<(), StoreError> {
        self.keep_webhook(&Kept {
            endpoint: endpoint.clone(),
            state: DeliveryState::default(),
        })
    }

    /// Replaces an endpoint, keeping its state; whether it was there.
    pub(in crate::store::embedded) fn replace_webhook(
        &mut self,
        endpoint: &WebhookEndpoint,
    ) -> Result<bool, StoreError> {
        let Some(kept) = self.kept_webhook(&endpoint.id)? else {
            return Ok(false);
        };
        self.keep_webhook(&Kept {
            endpoint: endpoint.clone(),
            state: kept.state,
        })?;
        Ok(true)
    }

    /// Removes an endpoint; what it was.
    pub(in crate::store::embedded) fn remove_webhook(
        &mut self,
        id: &str,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let removed = self.webhooks.write(self.txn)?.remove(id).map_err(storage)?;
        removed
            .map(|value| json::<Kept>("webhook", id, value.value()).map(|kept| kept.endpoint))
            .transpose()
    }

    /// Records an endpoint's delivery state, if it is still there.
    pub(in crate::store::embedded) fn record_delivery(
        &mut self,
        id: &str,
        state: &DeliveryState,
    ) -> Result<(), StoreError> {
        if let Some(kept) = self.kept_webhook(id)? {
            self.keep_webhook(&Kept {
                endpoint: kept.endpoint,
                state: state.clone(),
            })?;
        }
        Ok(())
    }
}
