//! Candidate sandboxes for allocation, shared by all concurrent requests of this instance.
//!
//! Rule: one `StatusNameIndex` query at a time per name prefix fills a shuffled queue, and
//! each candidate is handed to one local request only, so this instance's requests never
//! race each other and a burst of hundreds costs one read per page, not one per request.
//! The shuffle spreads instances of a fleet over the page instead of all taking its head.
//! A candidate is only a hint (the index is eventually consistent); the conditional claim
//! decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_dynamodb::Client;
use rand::seq::SliceRandom;

use super::error::classify;
use super::item::{AttributeValuesExt, SANDBOX_PREFIX, s};
use super::schema::STATUS_NAME_INDEX;
use crate::domain::SandboxStatus;
use crate::store::StoreError;

/// Candidates fetched per refill: large enough that a fleet's instances rarely draw the
/// same ones, small enough to be one cheap keys-only page.
const PAGE_SIZE: i32 = 256;

/// Per-prefix queues of candidate sandbox ids.
#[derive(Default)]
pub(super) struct CandidatePool {
    queues: Mutex<HashMap<String, Arc<PrefixQueue>>>,
}

#[derive(Default)]
struct PrefixQueue {
    ids: Mutex<Vec<String>>,
    /// Held while a refill query runs, so concurrent requests wait for it instead of repeating it.
    refill: tokio::sync::Mutex<()>,
}

impl PrefixQueue {
    fn pop(&self) -> Option<String> {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }
}

impl CandidatePool {
    fn queue(&self, prefix: &str) -> Arc<PrefixQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(queues.entry(prefix.to_owned()).or_default())
    }

    /// The next candidate whose name starts with `prefix`, or `None` when the index holds
    /// no available match at all.
    pub(super) async fn take(
        &self,
        client: &Client,
        table: &str,
        prefix: &str,
    ) -> Result<Option<String>, StoreError> {
        let queue = self.queue(prefix);
        if let Some(id) = queue.pop() {
            return Ok(Some(id));
        }
        let _refilling = queue.refill.lock().await;
        // Whoever held the lock before us may have refilled already.
        if let Some(id) = queue.pop() {
            return Ok(Some(id));
        }
        let mut fetched = fetch(client, table, prefix).await?;
        fetched.shuffle(&mut rand::rng());
        let first = fetched.pop();
        queue
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(fetched);
        Ok(first)
    }

    /// Returns an unused candidate (the request turned out to be a replay).
    pub(super) fn give_back(&self, prefix: &str, id: String) {
        self.queue(prefix)
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }
}

/// One page of available sandbox ids whose name starts with `prefix`.
async fn fetch(client: &Client, table: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut query = client
        .query()
        .table_name(table)
        .index_name(STATUS_NAME_INDEX)
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":available", s(SandboxStatus::Available.as_str()))
        .limit(PAGE_SIZE);
    query = if prefix.is_empty() {
        query.key_condition_expression("#s = :available")
    } else {
        query
            .key_condition_expression("#s = :available AND begins_with(#n, :prefix)")
            .expression_attribute_names("#n", "name")
            .expression_attribute_values(":prefix", s(prefix))
    };
    let page = query
        .send()
        .await
        .map_err(|err| classify(err).into_store_error())?;
    Ok(page
        .items()
        .iter()
        .filter_map(|item| {
            item.text("PK")?
                .strip_prefix(SANDBOX_PREFIX)
                .map(str::to_owned)
        })
        .collect())
}
