//! Tables the Python service created and filled: `init-table` adds only what is missing,
//! its rows are served, and its NIOSXaaS history items are never taken for sandboxes.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use reqwest::{Method, StatusCode};
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo::{self, DynamoStore};
use serde_json::Value;

use crate::helpers::{json_of, spawn_app_on};
use crate::local;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

/// The table as the Python service creates it: the contract's keys and three GSIs only.
async fn create_python_table(client: &aws_sdk_dynamodb::Client, table: &str) {
    let attr = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    };
    let gsi = |name: &str, hash: &str| {
        GlobalSecondaryIndex::builder()
            .index_name(name)
            .key_schema(key(hash, KeyType::Hash))
            .key_schema(key("allocated_at", KeyType::Range))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("PK", ScalarAttributeType::S))
        .attribute_definitions(attr("SK", ScalarAttributeType::S))
        .attribute_definitions(attr("status", ScalarAttributeType::S))
        .attribute_definitions(attr("allocated_at", ScalarAttributeType::N))
        .attribute_definitions(attr("allocated_to_track", ScalarAttributeType::S))
        .attribute_definitions(attr("idempotency_key", ScalarAttributeType::S))
        .key_schema(key("PK", KeyType::Hash))
        .key_schema(key("SK", KeyType::Range))
        .global_secondary_indexes(gsi("StatusIndex", "status"))
        .global_secondary_indexes(gsi("TrackIndex", "allocated_to_track"))
        .global_secondary_indexes(gsi("IdempotencyIndex", "idempotency_key"))
        .send()
        .await
        .unwrap();
}

/// Items as the Python service writes them: some attributes missing, numbers as N with
/// fractions, plus its NIOSXaaS cleanup history.
async fn write_python_items(client: &aws_sdk_dynamodb::Client, table: &str) {
    let rows: Vec<HashMap<String, AttributeValue>> = vec![
        HashMap::from([
            ("PK".into(), s("SBX#2009521")),
            ("SK".into(), s("META")),
            ("sandbox_id".into(), s("2009521")),
            ("name".into(), s("lab-py-0001")),
            ("external_id".into(), s("identity/accounts/aaaa")),
            ("status".into(), s("available")),
            ("allocated_at".into(), n("0")),
            ("last_synced".into(), n("1728054123.5")),
        ]),
        HashMap::from([
            ("PK".into(), s("SBX#2009522")),
            ("SK".into(), s("META")),
            ("sandbox_id".into(), s("2009522")),
            ("name".into(), s("lab-py-0002")),
            ("external_id".into(), s("identity/accounts/bbbb")),
            ("status".into(), s("allocated")),
            ("allocated_to_track".into(), s("py-student")),
            ("allocated_at".into(), n("1728054123")),
            ("lab_duration_hours".into(), n("4")),
        ]),
        HashMap::from([
            ("PK".into(), s("SBX#2009523")),
            ("SK".into(), s("META")),
            ("sandbox_id".into(), s("2009523")),
            ("name".into(), s("lab-py-0003")),
            ("external_id".into(), s("identity/accounts/cccc")),
            ("status".into(), s("deleted")),
            ("allocated_at".into(), n("1728000000")),
        ]),
        HashMap::from([
            ("PK".into(), s("NIOSXAAS#2009523")),
            ("SK".into(), s("CLEANUP")),
            ("sandbox_id".into(), s("2009523")),
            ("sandbox_name".into(), s("lab-py-0003")),
            (
                "niosxaas_cleanup_skipped".into(),
                AttributeValue::Bool(true),
            ),
            ("ttl".into(), n("1730000000")),
        ]),
    ];
    for item in rows {
        client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_table_adds_only_the_missing_index_and_the_service_serves_python_rows() {
    let endpoint = &local::shared().endpoint;
    let table = local::table_name();
    let settings = local::settings(endpoint, &table);
    let client = dynamo::client(&settings).await;
    create_python_table(&client, &table).await;
    write_python_items(&client, &table).await;

    let report = dynamo::schema::ensure_table(&client, &table).await.unwrap();
    let again = dynamo::schema::ensure_table(&client, &table).await.unwrap();

    assert!(!report.created_table);
    assert_eq!(report.added_indexes, ["StatusNameIndex"]);
    assert!(again.added_indexes.is_empty(), "init-table is idempotent");
    let described = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let mut indexes: Vec<String> = described
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name().map(str::to_owned))
        .collect();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "IdempotencyIndex",
            "StatusIndex",
            "StatusNameIndex",
            "TrackIndex"
        ]
    );

    let store: SharedStore = Arc::new(DynamoStore::new(&client, &settings));
    let app = spawn_app_on(store, Box::new(()), |_| {}).await;
    let stats = app.stats().await;
    assert_eq!(
        stats["total"], 3,
        "the NIOSXaaS item is not a sandbox: {stats}"
    );
    assert_eq!(
        (
            stats["available"].as_u64(),
            stats["allocated"].as_u64(),
            stats["deleted"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );

    let held = json_of(
        app.get_sandbox("2009522", "py-student").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        held["sfdc_account_id"], "",
        "a missing SFDC id is an empty string"
    );
    assert_eq!(held["track_name"], Value::Null);
    assert_eq!(held["expires_at"], 1_728_054_123 + 4 * 3600);

    let fresh = json_of(app.allocate("new-student").await, StatusCode::CREATED).await;
    assert_eq!(fresh["sandbox_id"], "2009521");
    assert_eq!(fresh["sfdc_account_id"], "");

    let listed = json_of(
        app.admin_get("/v1/admin/sandboxes?limit=100").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["count"], 3);
    let deleted = app
        .admin(Method::POST, "/v1/admin/bulk-delete?status=deleted")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(deleted, StatusCode::OK).await["deleted"], 1);
    let history = client
        .get_item()
        .table_name(&table)
        .key("PK", s("NIOSXAAS#2009523"))
        .key("SK", s("CLEANUP"))
        .send()
        .await
        .unwrap();
    assert!(
        history.item().is_some(),
        "bulk delete never removes NIOSXaaS history"
    );
    let read = app
        .store
        .niosxaas_history(
            &sandbox_broker::domain::SandboxId::parse("id", "2009523").unwrap(),
            1_729_000_000,
        )
        .await
        .unwrap()
        .expect("the Python service's history item reads");
    assert_eq!(
        (
            read.sandbox_name.as_str(),
            read.cleanup.niosxaas_cleanup_skipped,
            read.ttl
        ),
        ("lab-py-0003", true, 1_730_000_000)
    );
}

#[tokio::test]
async fn a_cursor_from_another_listing_is_400_not_500() {
    let (store, _table) = local::fresh_table_store().await;
    let app = spawn_app_on(store, Box::new(()), |_| {}).await;
    app.seed("lab-", 0, 5).await;
    let page = json_of(
        app.admin_get("/v1/admin/sandboxes?limit=2").await,
        StatusCode::OK,
    )
    .await;
    let scan_cursor = page["cursor"].as_str().unwrap().to_owned();
    let page = json_of(
        app.admin_get("/v1/admin/sandboxes?limit=2&status=available")
            .await,
        StatusCode::OK,
    )
    .await;
    let index_cursor = page["cursor"].as_str().unwrap().to_owned();

    for path in [
        format!("/v1/admin/sandboxes?status=available&cursor={scan_cursor}"),
        format!("/v1/admin/sandboxes?cursor={index_cursor}"),
    ] {
        let response = app.admin_get(&path).await;
        crate::helpers::error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    }
}
