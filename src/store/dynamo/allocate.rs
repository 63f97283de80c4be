//! Allocation on a shared table: at most two single-item conditional writes on the happy
//! path, no transaction, correct across any number of instances.
//!
//! The allocation key (student, `Idempotency-Key`) has its own item, `ALLOC#<key>`, whose
//! `sandbox_id` names the one sandbox the key may claim. The protocol:
//!
//! 1. Take a candidate from the shared pool and `PutItem` the key item pointing at it,
//!    conditional on the key item not existing. (Write 1.)
//! 2. Claim that sandbox: `UpdateItem` to `allocated`, conditional on `status = available`.
//!    (Write 2.) Done: 201.
//!
//! If the key item already exists, read it and its sandbox (both consistently):
//! - the sandbox is `allocated` to this key → replay, 200;
//! - the sandbox is still `available` (its claimer is mid-flight or died) → claim it for
//!   this key ourselves; a racing twin doing the same loses the condition and then sees
//!   the sandbox held by the key → 200;
//! - anything else (taken by another key, released, gone) → re-point the key item to a new
//!   candidate, conditional on it still naming the dead sandbox, then claim that.
//!
//! Why one key never gets two sandboxes: a claim only ever targets the sandbox the key item
//! names, and the key item only moves away from a sandbox once that sandbox is seen not
//! available — and a sandbox never becomes available again, so a late claim of the old one
//! always fails its condition.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::DynamoStore;
use super::error::{DynamoError, classify, internal};
use super::item::{Item, allocation_key, n, returned_row, s, sandbox_key};
use crate::domain::{Sandbox, SandboxStatus};
use crate::store::{Allocation, AllocationRequest, StoreError};

/// What one step of the protocol concluded: the allocation, or `None` to read the key
/// item again and continue.
type Step = Option<Allocation>;

impl DynamoStore {
    /// Runs the protocol for `request`.
    pub(super) async fn allocate_sandbox(
        &self,
        request: &AllocationRequest,
    ) -> Result<Allocation, StoreError> {
        let key = request.key.encoded();
        let prefix = request.name_prefix.as_ref().map_or("", |p| p.as_str());
        let mut conflicts = 0u32;
        if let Some(candidate) = self
            .candidates
            .take(&self.client, &self.table, prefix)
            .await?
        {
            match self.create_key(&key, &candidate, request.now).await {
                Ok(()) => {
                    if let Some(done) = self
                        .claim_for_own_key(&key, candidate, request, prefix, &mut conflicts)
                        .await?
                    {
                        return Ok(done);
                    }
                }
                // The key exists: most likely a replay. The candidate stays unused.
                Err(DynamoError::Conflict) => self.candidates.give_back(prefix, candidate),
                Err(DynamoError::Store(err)) => {
                    self.candidates.give_back(prefix, candidate);
                    return Err(err);
                }
            }
        }
        for _ in 0..self.k_candidates {
            if let Some(done) = self
                .follow_key(&key, request, prefix, &mut conflicts)
                .await?
            {
                return Ok(done);
            }
        }
        // Only collisions, never an empty pool, end here: say "busy", not "none left".
        Err(StoreError::Unavailable(
            format!("allocation lost {conflicts} races in a row; try again").into(),
        ))
    }

    /// The fast path after creating the key item: claim its sandbox; when another key took
    /// it first (a failed claim reports the row, so we know it is not held by this key),
    /// re-point and claim the next candidate without re-reading. Gives up to the slow path
    /// if a twin moves the key meanwhile.
    async fn claim_for_own_key(
        &self,
        key: &str,
        mut pointer: String,
        request: &AllocationRequest,
        prefix: &str,
        conflicts: &mut u32,
    ) -> Result<Step, StoreError> {
        for _ in 0..self.k_candidates {
            if let Some(done) = self.claim(&pointer, request, conflicts).await? {
                return Ok(Some(done));
            }
            let Some(next) = self
                .candidates
                .take(&self.client, &self.table, prefix)
                .await?
            else {
                return Ok(None);
            };
            match self.repoint_key(key, &pointer, &next, request.now).await {
                Ok(()) => pointer = next,
                Err(DynamoError::Conflict) => {
                    self.candidates.give_back(prefix, next);
                    return Ok(None);
                }
                Err(DynamoError::Store(err)) => return Err(err),
            }
        }
        Ok(None)
    }

    /// One round of the slow path: read the key item and act on what its sandbox is.
    async fn follow_key(
        &self,
        key: &str,
        request: &AllocationRequest,
        prefix: &str,
        conflicts: &mut u32,
    ) -> Result<Step, StoreError> {
        let Some(pointer) = self.read_key(key).await? else {
            // No key item (never made, or freed by a mark just now): start one.
            let candidate = self.candidate_or_empty(prefix).await?;
            return match self.create_key(key, &candidate, request.now).await {
                Ok(()) => self.claim(&candidate, request, conflicts).await,
                Err(DynamoError::Conflict) => {
                    self.candidates.give_back(prefix, candidate);
                    Ok(None)
                }
                Err(DynamoError::Store(err)) => Err(err),
            };
        };
        let row = self.row(&pointer).await?;
        match row {
            Some(row) if row.status == SandboxStatus::Allocated && held_by_key(&row, request) => {
                Ok(Some(Allocation {
                    sandbox: row,
                    newly_allocated: false,
                    conflicts: *conflicts,
                }))
            }
            Some(row) if row.status == SandboxStatus::Available => {
                self.claim(&row.sandbox_id, request, conflicts).await
            }
            _ => {
                let candidate = self.candidate_or_empty(prefix).await?;
                match self
                    .repoint_key(key, &pointer, &candidate, request.now)
                    .await
                {
                    Ok(()) => self.claim(&candidate, request, conflicts).await,
                    Err(DynamoError::Conflict) => {
                        self.candidates.give_back(prefix, candidate);
                        Ok(None)
                    }
                    Err(DynamoError::Store(err)) => Err(err),
                }
            }
        }
    }

    /// A candidate for a key that needs a (new) sandbox; none means the pool has no match: 409.
    async fn candidate_or_empty(&self, prefix: &str) -> Result<String, StoreError> {
        self.candidates
            .take(&self.client, &self.table, prefix)
            .await?
            .ok_or(StoreError::NoSandboxAvailable)
    }

    /// Write 2: `available` → `allocated` for this key, or a conflict to retry on.
    async fn claim(
        &self,
        id: &str,
        request: &AllocationRequest,
        conflicts: &mut u32,
    ) -> Result<Step, StoreError> {
        let mut set = String::from(
            "SET #s = :allocated, allocated_to_track = :student, allocated_at = :now, \
             lab_duration_hours = :hours, updated_at = :now",
        );
        let mut remove = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(sandbox_key(id)))
            .condition_expression("#s = :available")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":available", s(SandboxStatus::Available.as_str()))
            .expression_attribute_values(":allocated", s(SandboxStatus::Allocated.as_str()))
            .expression_attribute_values(":student", s(request.key.student.as_str()))
            .expression_attribute_values(":now", n(request.now))
            .expression_attribute_values(":hours", n(request.lab_duration_hours))
            .return_values(ReturnValue::AllNew);
        match &request.key.idempotency_key {
            Some(idem) => {
                set.push_str(", idempotency_key = :idem");
                update = update.expression_attribute_values(":idem", s(idem.as_str()));
            }
            None => remove.push("idempotency_key"),
        }
        match &request.track_name {
            Some(track) => {
                set.push_str(", track_name = :track");
                update = update.expression_attribute_values(":track", s(track.as_str()));
            }
            None => remove.push("track_name"),
        }
        if !remove.is_empty() {
            set.push_str(" REMOVE ");
            set.push_str(&remove.join(", "));
        }
        let sent = update
            .update_expression(set)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(output) => {
                let sandbox = returned_row(output.attributes)?;
                Ok(Some(Allocation {
                    sandbox,
                    newly_allocated: true,
                    conflicts: *conflicts,
                }))
            }
            Err(err) => {
                let failed_condition = match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                        Some(failed.item().map(Sandbox::try_from))
                    }
                    _ => None,
                };
                let Some(current) = failed_condition else {
                    return Err(classify(err).into_store_error());
                };
                // Not available any more: maybe because a twin request (or our own attempt,
                // retried by the SDK) already claimed it for this very key. Only a row held
                // by another key is a lost race; ours must never be abandoned.
                let current = match current {
                    Some(Ok(row)) => Some(row),
                    _ => self.row(id).await?,
                };
                if let Some(row) = current
                    && row.status == SandboxStatus::Allocated
                    && held_by_key(&row, request)
                {
                    return Ok(Some(Allocation {
                        sandbox: row,
                        newly_allocated: false,
                        conflicts: *conflicts,
                    }));
                }
                *conflicts += 1;
                Ok(None)
            }
        }
    }

    /// Write 1: the key item, only if the key has none.
    async fn create_key(&self, key: &str, sandbox_id: &str, now: i64) -> Result<(), DynamoError> {
        let mut item: Item = allocation_key(key);
        item.insert("sandbox_id".into(), s(sandbox_id));
        item.insert("created_at".into(), n(now));
        item.insert("updated_at".into(), n(now));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map(drop)
            .map_err(classify)
    }

    /// Moves the key item from a dead sandbox to `next`, only if it still names `dead`.
    async fn repoint_key(
        &self,
        key: &str,
        dead: &str,
        next: &str,
        now: i64,
    ) -> Result<(), DynamoError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(allocation_key(key)))
            .update_expression("SET sandbox_id = :next, updated_at = :now")
            .condition_expression("sandbox_id = :dead")
            .expression_attribute_values(":next", s(next))
            .expression_attribute_values(":dead", s(dead))
            .expression_attribute_values(":now", n(now))
            .send()
            .await
            .map(drop)
            .map_err(classify)
    }

    /// The sandbox id the key item names, read consistently.
    async fn read_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(allocation_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| classify(err).into_store_error())?;
        match got.item() {
            None => Ok(None),
            Some(item) => match item.get("sandbox_id") {
                Some(aws_sdk_dynamodb::types::AttributeValue::S(id)) => Ok(Some(id.clone())),
                _ => Err(internal(format!(
                    "allocation key item {key:?} names no sandbox"
                ))),
            },
        }
    }
}

/// Whether `row` was allocated for this request's key (student and idempotency key).
fn held_by_key(row: &Sandbox, request: &AllocationRequest) -> bool {
    row.is_held_by(&request.key.student)
        && row.idempotency_key.as_deref()
            == request.key.idempotency_key.as_ref().map(|k| k.as_str())
}
