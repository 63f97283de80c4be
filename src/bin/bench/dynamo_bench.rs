//! The DynamoDB side of the benchmark: a seeded table, and the raw `UpdateItem` ceiling
//! measured at the same concurrency in the same run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use sandbox_broker::config::Config;
use sandbox_broker::domain::NewSandbox;
use sandbox_broker::store::dynamo::{self, DynamoSettings, DynamoStore};

use super::{Args, Figures};

type BenchError = Box<dyn std::error::Error>;

fn settings(args: &Args, table: &str) -> Result<DynamoSettings, BenchError> {
    let endpoint = args
        .ddb_endpoint
        .clone()
        .ok_or("--store dynamodb needs --ddb-endpoint")?;
    let config = Config::for_tests("unused".into(), "t", "a");
    Ok(DynamoSettings {
        table: table.to_owned(),
        endpoint_url: Some(endpoint),
        max_concurrency: args.ddb_max_concurrency,
        latency_target: std::time::Duration::from_millis(args.ddb_latency_target_ms),
        ..config.store.dynamo.settings()
    })
}

/// A fresh table holding `rows` as available sandboxes, written with `BatchWriteItem`.
pub(super) async fn seeded_table(
    args: &Args,
    rows: &[NewSandbox],
) -> Result<(Client, DynamoSettings), BenchError> {
    let table = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let settings = settings(args, &table)?;
    let client = dynamo::client(&settings).await;
    dynamo::schema::ensure_table(&client, &table).await?;
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let zero = AttributeValue::N("0".into());
    for chunk in rows.chunks(25) {
        let mut writes = Vec::new();
        for row in chunk {
            let id = row.sandbox_id.as_str();
            let item = HashMap::from([
                ("PK".to_owned(), s(&format!("SBX#{id}"))),
                ("SK".to_owned(), s("META")),
                ("sandbox_id".to_owned(), s(id)),
                ("name".to_owned(), s(row.name.as_str())),
                ("external_id".to_owned(), s(row.external_id.as_str())),
                ("status".to_owned(), s("available")),
                ("allocated_at".to_owned(), zero.clone()),
                ("created_at".to_owned(), zero.clone()),
                ("updated_at".to_owned(), zero.clone()),
            ]);
            writes.push(
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build()?)
                    .build(),
            );
        }
        let mut pending = HashMap::from([(table.clone(), writes)]);
        while !pending.values().all(Vec::is_empty) {
            let out = client
                .batch_write_item()
                .set_request_items(Some(pending))
                .send()
                .await?;
            pending = out.unprocessed_items.unwrap_or_default();
        }
    }
    Ok((client, settings))
}

/// `instances` stores (each its own client, queue and candidates, as separate
/// processes have) on one freshly seeded table.
pub(super) async fn seeded_stores(
    args: &Args,
    rows: &[NewSandbox],
    instances: usize,
) -> Result<(Vec<Arc<DynamoStore>>, Client), BenchError> {
    let (client, settings) = seeded_table(args, rows).await?;
    let mut stores = Vec::new();
    for _ in 0..instances.max(1) {
        let own = dynamo::client(&settings).await;
        stores.push(Arc::new(DynamoStore::new(&own, &settings).await?));
    }
    Ok((stores, client))
}

/// What one operation of a raw ceiling run sends.
#[derive(Debug, Clone, Copy)]
pub(super) enum RawShape {
    /// The allocation's claim alone: one conditional `UpdateItem`.
    Claim,
    /// The allocation's two writes back to back, without the service: the key item's
    /// conditional `PutItem`, then the claim writing the attributes an allocation's claim
    /// writes and returning the row — the protocol's own ceiling.
    KeyThenClaim,
}

/// `concurrency` tasks each claiming its own rows with the allocation's conditional
/// `UpdateItem` (available → allocated), `shape` says with what before it, for `seconds`.
pub(super) fn raw_ceiling(
    args: &Args,
    concurrency: usize,
    seconds: u64,
    shape: RawShape,
) -> Result<Figures, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let rows = super::pool("bench-", 3_000_000, super::pool_size(args).max(20_000))?;
        let (client, settings) = seeded_table(args, &rows).await?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|worker| {
                let client = client.clone();
                let table = settings.table.clone();
                let pool = rows.len() as u64;
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failures = 0;
                    let mut id = worker as u64;
                    while Instant::now() < deadline && id < pool {
                        let sent = Instant::now();
                        let sandbox = 3_000_000 + id;
                        let keyed = match shape {
                            RawShape::Claim => true,
                            RawShape::KeyThenClaim => client
                                .put_item()
                                .table_name(&table)
                                .item("PK", AttributeValue::S(format!("ALLOC#raw-{sandbox}")))
                                .item("SK", AttributeValue::S("META".into()))
                                .item("sandbox_id", AttributeValue::S(sandbox.to_string()))
                                .item("request_id", AttributeValue::S(format!("raw-{worker}-{id}")))
                                .item("created_at", AttributeValue::N("1".into()))
                                .item("updated_at", AttributeValue::N("1".into()))
                                .condition_expression("attribute_not_exists(PK)")
                                .send()
                                .await
                                .is_ok(),
                        };
                        let claim = client
                            .update_item()
                            .table_name(&table)
                            .key("PK", AttributeValue::S(format!("SBX#{sandbox}")))
                            .key("SK", AttributeValue::S("META".into()))
                            .condition_expression("#s = :available")
                            .expression_attribute_names("#s", "status")
                            .expression_attribute_values(":allocated", AttributeValue::S("allocated".into()))
                            .expression_attribute_values(":available", AttributeValue::S("available".into()))
                            .expression_attribute_values(":who", AttributeValue::S(format!("raw-{worker}")))
                            .expression_attribute_values(":now", AttributeValue::N("1".into()));
                        // The key-then-claim shape writes what an allocation's claim writes:
                        // the same attributes (so the same indexes, `IdempotencyIndex` too),
                        // returning the row.
                        let claim = match shape {
                            RawShape::Claim => claim.update_expression(
                                "SET #s = :allocated, allocated_to_track = :who, allocated_at = :now, updated_at = :now",
                            ),
                            RawShape::KeyThenClaim => claim
                                .update_expression(
                                    "SET #s = :allocated, allocated_to_track = :who, allocated_at = :now, updated_at = :now, \
                                     idempotency_key = :who, allocated_by = :by, lab_duration_hours = :hours REMOVE track_name",
                                )
                                .expression_attribute_values(":by", AttributeValue::S("bench".into()))
                                .expression_attribute_values(":hours", AttributeValue::N("48".into()))
                                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew),
                        };
                        let claimed = keyed && claim.send().await.is_ok();
                        if claimed {
                            latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                        } else {
                            failures += 1;
                        }
                        id += concurrency as u64;
                    }
                    (latencies, failures)
                })
            })
            .collect();
        Ok(Figures::collect(concurrency, started, workers).await)
    })
}
