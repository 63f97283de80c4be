//! Provider sync on the shared table.
//!
//! Rule: each provider sandbox is one conditional upsert that only applies to a missing,
//! `available` or `stale` row (reporting the status it replaced), and each `available`
//! row the provider no longer lists turns `stale` only if it is still `available`; an
//! allocation racing the sync always wins.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::ReturnValue;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::error::DynamoError;
use super::item::{AttributeValuesExt, SANDBOX_PREFIX, n, s, sandbox_key};
use super::update::unread_available;
use super::{BULK_CONCURRENCY, DynamoStore};
use crate::domain::SandboxStatus;
use crate::domain::lifecycle::{self, SyncStep};
use crate::domain::{NewSandbox, ProviderSandbox};
use crate::store::{ImportSummary, StoreError, SyncSummary};

impl DynamoStore {
    /// See [`crate::store::Store::sync_provider`].
    pub(super) async fn sync_provider(
        &self,
        listing: Vec<ProviderSandbox>,
        now: i64,
    ) -> Result<SyncSummary, StoreError> {
        let listed: HashSet<String> = listing
            .iter()
            .map(|sandbox| sandbox.sandbox_id.as_str().to_owned())
            .collect();
        let steps: Vec<SyncStep> = stream::iter(listing)
            .map(|sandbox| self.upsert_listed(sandbox, now))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        let mut summary = SyncSummary::default();
        for step in steps {
            summary.record(step);
        }
        let missing: Vec<String> = self
            .keys_in_status(SandboxStatus::Available)
            .await?
            .iter()
            .filter_map(|key| {
                key.text("PK")?
                    .strip_prefix(SANDBOX_PREFIX)
                    .map(str::to_owned)
            })
            .filter(|id| !listed.contains(id))
            .collect();
        let staled: Vec<bool> = stream::iter(missing)
            .map(|id| self.mark_stale(id, now))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        summary.marked_stale = staled.into_iter().filter(|done| *done).count() as u64;
        Ok(summary)
    }

    async fn upsert_listed(
        &self,
        sandbox: ProviderSandbox,
        now: i64,
    ) -> Result<SyncStep, StoreError> {
        let mut set = String::from(
            "SET sandbox_id = :id, #n = :name, external_id = :ext, #s = :available, \
             last_synced = :now, updated_at = :now, \
             allocated_at = if_not_exists(allocated_at, :zero), \
             deletion_retry_count = if_not_exists(deletion_retry_count, :zero), \
             created_at = if_not_exists(created_at, :now)",
        );
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        // The condition lists exactly the statuses `lifecycle::SYNC_REPLACES` names.
        let replaceable: Vec<String> = (0..lifecycle::SYNC_REPLACES.len())
            .map(|i| format!(":replaces{i}"))
            .collect();
        let mut update = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(sandbox.sandbox_id.as_str())))
            .condition_expression(format!(
                "attribute_not_exists(PK) OR #s IN ({})",
                replaceable.join(", ")
            ))
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":available", s(SandboxStatus::Available.as_str()));
        for (placeholder, status) in replaceable.iter().zip(lifecycle::SYNC_REPLACES) {
            update = update.expression_attribute_values(placeholder, s(status.as_str()));
        }
        update = update
            .expression_attribute_values(":id", s(sandbox.sandbox_id.as_str()))
            .expression_attribute_values(":name", s(sandbox.name.as_str()))
            .expression_attribute_values(":ext", s(sandbox.external_id.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::UpdatedOld);
        if let Some(sfdc) = sandbox.sfdc_account_id {
            set.push_str(", sfdc_account_id = :sfdc");
            update = update.expression_attribute_values(":sfdc", s(sfdc));
        }
        let update = update.update_expression(set);
        match self.calls.send(&budget, || update.clone().send()).await {
            // What the row was decides the step, as it does on the embedded store; a row
            // in a status the sync may not replace failed the condition.
            Ok(output) => {
                let old = output.attributes.unwrap_or_default();
                let status = old.text("status").and_then(|status| status.parse().ok());
                Ok(lifecycle::sync_step(status))
            }
            Err(DynamoError::Conflict) => Ok(SyncStep::Untouched),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    async fn mark_stale(&self, id: String, now: i64) -> Result<bool, StoreError> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        // Only keys were read: the update is derived from the domain's decision on the row
        // as an unread write must assume it, and its expectation (still available) is the
        // condition.
        let unread = unread_available(&id)?;
        let Some(change) = lifecycle::mark_stale(&unread, now) else {
            return Ok(false);
        };
        let update = self.apply_change(&unread, &change);
        let result = self.calls.send(&budget, || update.clone().send()).await;
        match result {
            Ok(_) => Ok(true),
            Err(DynamoError::Conflict) => Ok(false),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }
}

impl DynamoStore {
    /// Imports `rows` (see [`crate::store::Store::import`]), `BULK_CONCURRENCY` at once.
    pub(super) async fn import(
        &self,
        rows: Vec<NewSandbox>,
        now: i64,
    ) -> Result<ImportSummary, StoreError> {
        let outcomes: Vec<bool> = stream::iter(rows)
            .map(|row| self.import_row(row, now))
            .buffer_unordered(BULK_CONCURRENCY)
            .try_collect()
            .await?;
        let imported = outcomes.iter().filter(|ok| **ok).count() as u64;
        Ok(ImportSummary {
            imported,
            skipped: outcomes.len() as u64 - imported,
        })
    }

    /// Upserts one import row as `available` unless it exists in another status.
    async fn import_row(&self, row: NewSandbox, now: i64) -> Result<bool, StoreError> {
        let budget = self.calls.budget();
        let _turn = self.calls.turn(&budget).await?;
        let mut update = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(row.sandbox_id.as_str())))
            .condition_expression("attribute_not_exists(PK) OR #s = :available")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":available", s(SandboxStatus::Available.as_str()))
            .expression_attribute_values(":id", s(row.sandbox_id.as_str()))
            .expression_attribute_values(":name", s(row.name.as_str()))
            .expression_attribute_values(":ext", s(row.external_id.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now));
        let mut set = String::from(
            "SET sandbox_id = :id, #n = :name, external_id = :ext, #s = :available, \
             allocated_at = if_not_exists(allocated_at, :zero), \
             deletion_retry_count = if_not_exists(deletion_retry_count, :zero), \
             created_at = if_not_exists(created_at, :now), updated_at = :now",
        );
        if let Some(sfdc) = row.sfdc_account_id {
            set.push_str(", sfdc_account_id = :sfdc");
            update = update.expression_attribute_values(":sfdc", s(sfdc));
        }
        let update = update.update_expression(set);
        match self.calls.send(&budget, || update.clone().send()).await {
            Ok(_) => Ok(true),
            Err(DynamoError::Conflict) => Ok(false),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }
}
