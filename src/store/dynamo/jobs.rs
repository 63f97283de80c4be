//! Job leases and run records on the shared table: one item per job under the partition
//! `JOB` (additive), so `GET /v1/admin/jobs` is one query and no index sees them.
//!
//! Rule: a lease is taken with a conditional write (free, expired, or already ours), so
//! across a fleet one instance runs each job; ending it is conditional on still holding it.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::error::DynamoError;
use super::item::{AttributeValuesExt, Item, n, s};
use crate::domain::lease::{self, LeaseDecision};
use crate::domain::time::EpochMillis;
use crate::domain::time::EpochSecs;
use crate::store::{JobRecord, JobStore, LeaseOutcome, LeaseRequest, StoreError};

/// Partition key of every job item.
pub(super) const JOB_PARTITION: &str = "JOB";

/// The `sandbox_id` a job item carries, naming no sandbox: the Python service's sync reads
/// `sandbox_id` from every item its scan meets (a missing one stops it), then finds no
/// `SBX#JOB#…` row for this one and moves on — so a rollback to it is safe.
fn placeholder_sandbox_id(job: &str) -> AttributeValue {
    s(format!("{JOB_PARTITION}#{job}"))
}

fn job_key(job: &str) -> Item {
    HashMap::from([
        ("PK".to_owned(), s(JOB_PARTITION)),
        ("SK".to_owned(), s(job)),
    ])
}

/// The item of `record`, as the lease and run writes below leave it.
pub(super) fn job_item(record: &JobRecord) -> Item {
    let mut item = job_key(&record.job);
    item.insert("sandbox_id".to_owned(), placeholder_sandbox_id(&record.job));
    item.insert(
        "lease_expires_at_ms".to_owned(),
        n(record.lease_expires_at_ms),
    );
    let counts = record
        .last_counts
        .iter()
        .map(|(name, count)| (name.clone(), n(count)))
        .collect();
    item.insert("last_counts".to_owned(), AttributeValue::M(counts));
    let optional = [
        ("holder", record.instance.as_deref().map(s)),
        ("last_started_at", record.last_started_at.map(n)),
        ("last_finished_at", record.last_finished_at.map(n)),
        ("last_outcome", record.last_outcome.as_deref().map(s)),
        ("next_run_at", record.next_run_at.map(n)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.to_owned(), value);
        }
    }
    item
}

/// The record a job item holds.
pub(super) fn record_from(item: &Item) -> JobRecord {
    let counts = match item.get("last_counts") {
        Some(AttributeValue::M(map)) => map
            .iter()
            .filter_map(|(name, value)| match value {
                AttributeValue::N(number) => Some((name.clone(), number.parse().ok()?)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    JobRecord {
        job: item.text("SK").unwrap_or_default().to_owned(),
        instance: item.text("holder").map(str::to_owned),
        lease_expires_at_ms: EpochMillis::new(item.integer("lease_expires_at_ms").unwrap_or(0)),
        last_started_at: (item.integer("last_started_at")).map(EpochSecs::new),
        last_finished_at: (item.integer("last_finished_at")).map(EpochSecs::new),
        last_outcome: item.text("last_outcome").map(str::to_owned),
        last_counts: counts,
        next_run_at: (item.integer("next_run_at")).map(EpochSecs::new),
    }
}

#[async_trait::async_trait]
impl JobStore for DynamoStore {
    async fn acquire_lease(&self, request: LeaseRequest<'_>) -> Result<LeaseOutcome, StoreError> {
        let LeaseRequest { job, instance, .. } = request;
        let LeaseRequest { now, ttl, .. } = request;
        let budget = self.calls.budget();
        // A lease released between our failed write and our read is simply tried again.
        for _ in 0..3 {
            let update = self
                .client()
                .update_item()
                .table_name(&self.table)
                .set_key(Some(job_key(job)))
                .update_expression(
                    "SET holder = :me, lease_expires_at_ms = :until, sandbox_id = :placeholder",
                )
                .expression_attribute_values(":placeholder", placeholder_sandbox_id(job))
                .condition_expression(lease::TAKE_CONDITION)
                .expression_attribute_values(":me", s(instance))
                .expression_attribute_values(":until", n(now.after(ttl)))
                .expression_attribute_values(":now", n(now));
            let taken = self
                .calls
                .send(&budget, || self.calls.wire.send(&update))
                .await;
            match taken {
                Ok(_) => return Ok(LeaseOutcome::Acquired),
                Err(DynamoError::Conflict) => {
                    let current = self
                        .consistent_item(&budget, job_key(job))
                        .await?
                        .map(|item| record_from(&item));
                    // A refusal is read back through the same rule: a lease released or
                    // run out since our write is simply tried again.
                    if let Some(record) = current
                        && let LeaseDecision::HeldBy { instance, until_ms } = lease::decide(
                            record.instance.as_deref(),
                            record.lease_expires_at_ms,
                            instance,
                            now,
                        )
                    {
                        return Ok(LeaseOutcome::Held { instance, until_ms });
                    }
                }
                Err(DynamoError::Store(err)) => return Err(err),
            }
        }
        Err(StoreError::Unavailable(
            format!("the {job} lease keeps changing hands").into(),
        ))
    }

    async fn finish_job_run(&self, run: JobRecord, instance: &str) -> Result<(), StoreError> {
        let counts: HashMap<String, AttributeValue> = run
            .last_counts
            .iter()
            .map(|(name, count)| (name.clone(), n(count)))
            .collect();
        let mut set = vec!["last_counts = :counts", "sandbox_id = :placeholder"];
        let mut remove = Vec::new();
        let budget = self.calls.budget();
        let mut update = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(&run.job)))
            .expression_attribute_values(":counts", AttributeValue::M(counts))
            .expression_attribute_values(":placeholder", placeholder_sandbox_id(&run.job));
        let optional = [
            ("last_started_at", ":started", run.last_started_at.map(n)),
            ("last_finished_at", ":finished", run.last_finished_at.map(n)),
            (
                "last_outcome",
                ":outcome",
                run.last_outcome.as_deref().map(s),
            ),
            ("next_run_at", ":next", run.next_run_at.map(n)),
        ];
        let mut assignments = Vec::new();
        for (attribute, placeholder, value) in optional {
            match value {
                Some(value) => {
                    assignments.push(format!("{attribute} = {placeholder}"));
                    update = update.expression_attribute_values(placeholder, value);
                }
                None => remove.push(attribute),
            }
        }
        set.extend(assignments.iter().map(String::as_str));
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let update = update.update_expression(expression);
        self.calls
            .send(&budget, || self.calls.wire.send(&update))
            .await
            .map_err(DynamoError::into_store_error)?;
        let release = self
            .client()
            .update_item()
            .table_name(&self.table)
            .set_key(Some(job_key(&run.job)))
            .update_expression("SET lease_expires_at_ms = :zero REMOVE holder")
            .condition_expression(lease::RELEASE_CONDITION)
            .expression_attribute_values(":me", s(instance))
            .expression_attribute_values(":zero", n(0));
        let released = self
            .calls
            .send(&budget, || self.calls.wire.send(&release))
            .await;
        match released {
            Ok(_) | Err(DynamoError::Conflict) => Ok(()),
            Err(DynamoError::Store(err)) => Err(err),
        }
    }

    async fn job_records(&self) -> Result<Vec<JobRecord>, StoreError> {
        let query = self
            .client()
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :jobs")
            .expression_attribute_values(":jobs", s(JOB_PARTITION))
            .consistent_read(true);
        let page = self
            .calls
            .send(&self.calls.budget(), || self.calls.wire.send(&query))
            .await
            .map_err(DynamoError::into_store_error)?;
        Ok(page.items().iter().map(record_from).collect())
    }
}
