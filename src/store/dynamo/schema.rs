//! `init-table`: the table and its indexes (docs/dynamodb.md), created if missing.
//!
//! Rule: idempotent and additive. An existing table (the Python service's included) keeps
//! its keys, indexes and data; only indexes it lacks are added, one per `UpdateTable` as
//! DynamoDB requires, and the call waits until everything is `ACTIVE`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus,
};

use super::error::{classify, internal};
use crate::store::StoreError;

/// The status index (docs/dynamodb.md): every sandbox row by `status`, then `allocated_at`.
pub(crate) const STATUS_INDEX: &str = "StatusIndex";
/// The index of rows by holder (docs/dynamodb.md).
pub(crate) const LAB_INDEX: &str = "TrackIndex";
/// The index of rows by idempotency key (docs/dynamodb.md).
pub(crate) const IDEMPOTENCY_INDEX: &str = "IdempotencyIndex";
/// Ours, additive: rows by `status`, then `name`, so prefix allocation reads only matches.
pub(crate) const STATUS_NAME_INDEX: &str = "StatusNameIndex";
/// Ours, additive and sparse: only rows with webhook events pending (`outbox` set, one of
/// [`OUTBOX_SHARDS`] values so no index partition runs hot), by when the first was
/// announced; the dispatcher reads it, the row's own write puts a row there.
pub(crate) const OUTBOX_INDEX: &str = "OutboxIndex";
/// How many `outbox` key values rows with pending events are spread over.
pub(crate) const OUTBOX_SHARDS: u32 = 16;

/// How long `ensure_table` waits for the table and indexes to become active.
const ACTIVE_WAIT: Duration = Duration::from_secs(300);

struct IndexSpec {
    name: &'static str,
    hash: (&'static str, ScalarAttributeType),
    range: (&'static str, ScalarAttributeType),
    projection: ProjectionType,
}

fn index_specs() -> [IndexSpec; 5] {
    use ScalarAttributeType::{N, S};
    [
        IndexSpec {
            name: STATUS_INDEX,
            hash: ("status", S),
            range: ("allocated_at", N),
            projection: ProjectionType::All,
        },
        IndexSpec {
            name: LAB_INDEX,
            hash: ("allocated_to_track", S),
            range: ("allocated_at", N),
            projection: ProjectionType::All,
        },
        IndexSpec {
            name: IDEMPOTENCY_INDEX,
            hash: ("idempotency_key", S),
            range: ("allocated_at", N),
            projection: ProjectionType::All,
        },
        // Candidates need only keys; KEYS_ONLY keeps this index cheap to maintain.
        IndexSpec {
            name: STATUS_NAME_INDEX,
            hash: ("status", S),
            range: ("name", S),
            projection: ProjectionType::KeysOnly,
        },
        // The dispatcher reads the row's pending events consistently: keys suffice.
        IndexSpec {
            name: OUTBOX_INDEX,
            hash: ("outbox", S),
            range: ("outbox_at", N),
            projection: ProjectionType::KeysOnly,
        },
    ]
}

fn attribute(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|err| StoreError::Internal(Box::new(err)))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|err| StoreError::Internal(Box::new(err)))
}

fn projection(kind: &ProjectionType) -> Projection {
    Projection::builder().projection_type(kind.clone()).build()
}

fn index_attributes(spec: &IndexSpec) -> Result<Vec<AttributeDefinition>, StoreError> {
    Ok(vec![
        attribute(spec.hash.0, spec.hash.1.clone())?,
        attribute(spec.range.0, spec.range.1.clone())?,
    ])
}

fn index_keys(spec: &IndexSpec) -> Result<Vec<KeySchemaElement>, StoreError> {
    Ok(vec![
        key(spec.hash.0, KeyType::Hash)?,
        key(spec.range.0, KeyType::Range)?,
    ])
}

/// What `ensure_table` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableReport {
    /// The table did not exist and was created with every index.
    pub created_table: bool,
    /// Indexes added to an existing table.
    pub added_indexes: Vec<String>,
}

/// Creates `table` with the table layout's keys and indexes (docs/dynamodb.md), or adds the indexes it lacks.
pub async fn ensure_table(client: &Client, table: &str) -> Result<TableReport, StoreError> {
    let mut report = TableReport::default();
    let existing = match client.describe_table().table_name(table).send().await {
        Ok(described) => described.table,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(err) => return Err(classify(err).into_store_error()),
    };
    let Some(existing) = existing else {
        create_table(client, table).await?;
        report.created_table = true;
        wait_until_active(client, table).await?;
        return Ok(report);
    };
    let per_request = billed_per_request(&existing);
    for spec in index_specs() {
        if !lacks(&existing, spec.name) {
            continue;
        }
        add_index(client, table, &spec, per_request).await?;
        report.added_indexes.push(spec.name.to_owned());
        wait_until_active(client, table).await?;
    }
    Ok(report)
}

/// The indexes the service needs that `table` lacks (none: it can serve). `serve` refuses
/// to start on a table that lacks any, rather than answer 500 to every allocation.
pub async fn missing_indexes(
    client: &Client,
    table: &str,
) -> Result<Vec<&'static str>, StoreError> {
    let existing = describe(client, table).await?;
    Ok(index_specs()
        .iter()
        .map(|spec| spec.name)
        .filter(|name| lacks(&existing, name))
        .collect())
}

/// `DescribeTable` of an existing table.
async fn describe(client: &Client, table: &str) -> Result<TableDescription, StoreError> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|err| classify(err).into_store_error())?
        .table
        .ok_or_else(|| internal("DescribeTable returned no table"))
}

fn lacks(table: &TableDescription, index: &str) -> bool {
    !table
        .global_secondary_indexes()
        .iter()
        .any(|gsi| gsi.index_name() == Some(index))
}

/// Whether `table` is billed per request (on-demand), so a new index takes no capacity.
/// The billing summary says so when present; DynamoDB Local leaves it out for tables
/// created `PROVISIONED` (as the Python service's `create_table` makes them), and real
/// tables that were never switched may too, so otherwise the throughput decides: an
/// on-demand table reports 0 capacity units, a provisioned one its units.
fn billed_per_request(table: &TableDescription) -> bool {
    if let Some(mode) = table.billing_mode_summary().and_then(|b| b.billing_mode()) {
        return *mode == BillingMode::PayPerRequest;
    }
    table.provisioned_throughput().is_none_or(|throughput| {
        throughput.read_capacity_units().unwrap_or(0) == 0
            && throughput.write_capacity_units().unwrap_or(0) == 0
    })
}

async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let mut attributes = vec![
        attribute("PK", ScalarAttributeType::S)?,
        attribute("SK", ScalarAttributeType::S)?,
    ];
    let mut indexes = Vec::new();
    for spec in index_specs() {
        for definition in index_attributes(&spec)? {
            if !attributes
                .iter()
                .any(|a| a.attribute_name() == definition.attribute_name())
            {
                attributes.push(definition);
            }
        }
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(spec.name)
                .set_key_schema(Some(index_keys(&spec)?))
                .projection(projection(&spec.projection))
                .build()
                .map_err(|err| StoreError::Internal(Box::new(err)))?,
        );
    }
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attributes))
        .key_schema(key("PK", KeyType::Hash)?)
        .key_schema(key("SK", KeyType::Range)?)
        .set_global_secondary_indexes(Some(indexes))
        .send()
        .await
        .map_err(|err| classify(err).into_store_error())?;
    Ok(())
}

async fn add_index(
    client: &Client,
    table: &str,
    spec: &IndexSpec,
    per_request: bool,
) -> Result<(), StoreError> {
    let mut create = CreateGlobalSecondaryIndexAction::builder()
        .index_name(spec.name)
        .set_key_schema(Some(index_keys(spec)?))
        .projection(projection(&spec.projection));
    if !per_request {
        // A provisioned table needs explicit index capacity; start small, let autoscaling grow it.
        create = create.provisioned_throughput(
            aws_sdk_dynamodb::types::ProvisionedThroughput::builder()
                .read_capacity_units(5)
                .write_capacity_units(5)
                .build()
                .map_err(|err| StoreError::Internal(Box::new(err)))?,
        );
    }
    let create = create
        .build()
        .map_err(|err| StoreError::Internal(Box::new(err)))?;
    client
        .update_table()
        .table_name(table)
        .set_attribute_definitions(Some(index_attributes(spec)?))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder().create(create).build(),
        )
        .send()
        .await
        .map_err(|err| classify(err).into_store_error())?;
    Ok(())
}

async fn wait_until_active(client: &Client, table: &str) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WAIT;
    loop {
        let table_info = describe(client, table).await?;
        let table_active = table_info.table_status() == Some(&TableStatus::Active);
        let indexes_active = table_info
            .global_secondary_indexes()
            .iter()
            .all(|gsi| gsi.index_status() == Some(&IndexStatus::Active));
        if table_active && indexes_active {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(StoreError::Unavailable(
                format!("table {table} did not become active in time").into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::{
        BillingModeSummary, ProvisionedThroughputDescription, TableDescription,
    };

    use super::*;

    fn throughput(read: i64, write: i64) -> ProvisionedThroughputDescription {
        ProvisionedThroughputDescription::builder()
            .read_capacity_units(read)
            .write_capacity_units(write)
            .build()
    }

    #[test]
    fn billing_is_read_from_the_summary_else_from_the_throughput() {
        let summary = |mode| BillingModeSummary::builder().billing_mode(mode).build();
        let cases = [
            // As DynamoDB Local describes the Python service's PROVISIONED 5/5 table.
            (None, Some(throughput(5, 5)), false),
            (None, Some(throughput(0, 0)), true),
            (None, None, true),
            (
                Some(BillingMode::PayPerRequest),
                Some(throughput(0, 0)),
                true,
            ),
            (
                Some(BillingMode::Provisioned),
                Some(throughput(5, 5)),
                false,
            ),
            // A table switched to on-demand keeps reporting its old units.
            (
                Some(BillingMode::PayPerRequest),
                Some(throughput(5, 5)),
                true,
            ),
        ];
        for (mode, units, expected) in cases {
            let table = TableDescription::builder()
                .set_billing_mode_summary(mode.clone().map(summary))
                .set_provisioned_throughput(units.clone())
                .build();
            assert_eq!(billed_per_request(&table), expected, "{mode:?} {units:?}");
        }
    }
}
