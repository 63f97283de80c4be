//! Tables the Python service created and filled: `init-table` adds only what is missing,
//! its rows are served, and its NIOSXaaS history items are never taken for sandboxes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ProvisionedThroughput, ScalarAttributeType,
};
use reqwest::{Method, StatusCode};
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo::{self, DynamoStore};
use serde_json::Value;

use crate::helpers::{TestApp, json_of};
use crate::local::{self, n, s};

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .unwrap()
}

/// The table exactly as the Python service's `create_table` makes it (its docker-compose
/// and local setup): `PROVISIONED` 5/5, the documented keys and its three GSIs at 5/5.
pub async fn create_python_table(client: &aws_sdk_dynamodb::Client, table: &str) {
    let units = || {
        ProvisionedThroughput::builder()
            .read_capacity_units(5)
            .write_capacity_units(5)
            .build()
            .unwrap()
    };
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
            .provisioned_throughput(units())
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(units())
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
    local::put_items(client, table, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_table_adds_only_the_missing_indexes_and_the_service_serves_python_rows() {
    let endpoint = &local::shared().endpoint;
    let table = local::table_name();
    let settings = local::settings(endpoint, &table);
    let client = dynamo::client(&settings).await;
    create_python_table(&client, &table).await;
    write_python_items(&client, &table).await;

    let report = dynamo::schema::ensure_table(&client, &table).await.unwrap();
    let again = dynamo::schema::ensure_table(&client, &table).await.unwrap();

    assert!(!report.created_table);
    assert_eq!(report.added_indexes, ["StatusNameIndex", "OutboxIndex"]);
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
            "OutboxIndex",
            "StatusIndex",
            "StatusNameIndex",
            "TrackIndex"
        ]
    );

    let store: SharedStore = SharedStore::new(
        DynamoStore::new(&client, &settings)
            .await
            .expect("the store opens"),
    );
    let app = TestApp::builder().store(store, Box::new(())).spawn().await;
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
    assert_eq!(
        held["expires_at"],
        1_728_054_123 + 48 * 3600,
        "a Python allocation lasts LAB_DURATION_HOURS, not its row's 4"
    );

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
        .analytics
        .niosxaas_history(
            &sandbox_broker::domain::SandboxId::parse("id", "2009523").unwrap(),
            EpochSecs::new(1_729_000_000),
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
        ("lab-py-0003", true, EpochSecs::new(1_730_000_000))
    );
}

#[tokio::test]
async fn a_cursor_from_another_listing_is_400_not_500() {
    let (store, _table) = local::fresh_table_store().await;
    let app = TestApp::builder().store(store, Box::new(())).spawn().await;
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

/// A table as the Python service made and filled it, after `init-table`, with `rows`
/// and `available` free sandboxes; and the service on it with the default settings.
async fn python_table_app(
    rows: Vec<HashMap<String, AttributeValue>>,
    available: u64,
) -> (crate::helpers::TestApp, aws_sdk_dynamodb::Client, String) {
    let endpoint = &local::shared().endpoint;
    let table = local::table_name();
    let settings = local::settings(endpoint, &table);
    let client = dynamo::client(&settings).await;
    create_python_table(&client, &table).await;
    dynamo::schema::ensure_table(&client, &table).await.unwrap();
    local::put_items(&client, &table, rows).await;
    let store: SharedStore = SharedStore::new(
        DynamoStore::new(&client, &settings)
            .await
            .expect("the store opens"),
    );
    let app = TestApp::builder().store(store, Box::new(())).spawn().await;
    if available > 0 {
        app.seed("lab-new-", 0, available).await;
    }
    (app, client, table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_allocations_last_the_configured_lab_duration_not_their_rows_4_hours() {
    let now = sandbox_broker::domain::now_epoch();
    let hour = 3600;
    let mut no_duration = local::python_allocation("3003", "stu-c", "stu-c", now - hour);
    no_duration.remove("lab_duration_hours");
    let (app, _client, _table) = python_table_app(
        vec![
            local::python_allocation("3001", "stu-a", "stu-a", now - 5 * hour),
            local::python_allocation("3002", "stu-b", "stu-b", now - 49 * hour),
            no_duration,
        ],
        0,
    )
    .await;

    let expired = json_of(
        app.admin(Method::POST, "/v1/admin/expire")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;

    assert_eq!(
        expired["expired"], 1,
        "only the 49 h old allocation: {expired}"
    );
    for (id, holder, status) in [
        ("3001", "stu-a", "allocated"),
        ("3002", "stu-b", "pending_deletion"),
        ("3003", "stu-c", "allocated"),
    ] {
        let view = json_of(app.get_sandbox(id, holder).await, StatusCode::OK).await;
        assert_eq!(view["status"], status, "{id}: {view}");
    }
    let kept = json_of(app.get_sandbox("3001", "stu-a").await, StatusCode::OK).await;
    assert_eq!(
        kept["expires_at"],
        now - 5 * hour + 48 * hour,
        "LAB_DURATION_HOURS (48) from allocated_at"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_the_python_service_served_gets_the_same_sandbox_back_and_can_release_it() {
    let now = sandbox_broker::domain::now_epoch();
    let (app, client, table) = python_table_app(
        vec![
            local::python_allocation("4001", "stu-plain", "stu-plain", now - 3600),
            local::python_allocation("4002", "stu-keyed", "lab-2-attempt", now - 3600),
        ],
        3,
    )
    .await;

    // The setup script runs again after the switch, with the same headers.
    let plain = json_of(app.allocate("stu-plain").await, StatusCode::OK).await;
    let again = json_of(app.allocate("stu-plain").await, StatusCode::OK).await;
    let keyed = json_of(
        app.allocate_with("stu-keyed", &[("Idempotency-Key", "lab-2-attempt")])
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (plain["sandbox_id"].as_str(), again["sandbox_id"].as_str()),
        (Some("4001"), Some("4001"))
    );
    assert_eq!(keyed["sandbox_id"], "4002");
    assert_eq!(plain["expires_at"], now - 3600 + 48 * 3600);
    // Another key of the same student is another allocation; so is another student.
    let other_key = app
        .allocate_with("stu-keyed", &[("Idempotency-Key", "lab-3")])
        .await;
    assert_eq!(other_key.status(), StatusCode::CREATED);
    let stranger = json_of(app.allocate("stu-new").await, StatusCode::CREATED).await;
    assert!(stranger["name"].as_str().unwrap().starts_with("lab-new-"));

    let read = json_of(app.get_sandbox("4001", "stu-plain").await, StatusCode::OK).await;
    assert_eq!(read["status"], "allocated");
    let released = json_of(app.mark("4001", "stu-plain").await, StatusCode::OK).await;
    assert_eq!(released["status"], "pending_deletion");
    let next_lab = json_of(app.allocate("stu-plain").await, StatusCode::CREATED).await;
    assert_ne!(
        next_lab["sandbox_id"], "4001",
        "a released sandbox is never handed out again"
    );

    let stats = app.stats().await;
    assert_eq!(
        (
            stats["allocated"].as_u64(),
            stats["pending_deletion"].as_u64()
        ),
        (Some(4), Some(1)),
        "4002, lab-3, stu-new, the next lab; 4001 released: {stats}"
    );
    let row = client
        .get_item()
        .table_name(&table)
        .key("PK", s("SBX#4002"))
        .key("SK", s("META"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        row.item().unwrap().get("allocated_by"),
        None,
        "a replay leaves the Python row as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_the_python_table_before_init_table_refuses_to_start_and_says_what_to_run() {
    let endpoint = local::shared().endpoint.clone();
    let table = local::table_name();
    let client = dynamo::client(&local::settings(&endpoint, &table)).await;
    create_python_table(&client, &table).await;

    let run = |args: &'static [&'static str]| {
        let (endpoint, table) = (endpoint.clone(), table.clone());
        tokio::task::spawn_blocking(move || {
            local::broker(args, &endpoint, &table).output().unwrap()
        })
    };
    let refused = run(&["serve"]).await.unwrap();
    let prepared = run(&["init-table"]).await.unwrap();

    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("StatusNameIndex")
            && stderr.contains("OutboxIndex")
            && stderr.contains("init-table"),
        "{stderr}"
    );
    assert!(
        prepared.status.success(),
        "init-table on a PROVISIONED table: {}",
        String::from_utf8_lossy(&prepared.stderr)
    );
    let stdout = String::from_utf8_lossy(&prepared.stdout);
    assert!(
        stdout.contains("added StatusNameIndex, OutboxIndex"),
        "{stdout}"
    );
    let missing = dynamo::schema::missing_indexes(&client, &table)
        .await
        .unwrap();
    assert!(missing.is_empty(), "{missing:?}");
}

/// Every item of `table`, all pages.
async fn scan_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

/// The statuses the Python service's `SandboxStatus` knows.
const PYTHON_STATUSES: [&str; 5] = [
    "available",
    "allocated",
    "pending_deletion",
    "stale",
    "deletion_failed",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_this_service_ran_on_the_table_the_python_service_can_be_put_back() {
    let now = sandbox_broker::domain::now_epoch();
    let (app, client, table) = python_table_app(
        vec![local::python_allocation(
            "5001",
            "stu-py",
            "stu-py",
            now - 3600,
        )],
        8,
    )
    .await;
    // A day of this service: allocations with and without a key, a replay of a Python
    // allocation, a release, and every job that needs no provider.
    json_of(app.allocate("stu-a").await, StatusCode::CREATED).await;
    json_of(
        app.allocate_with("stu-b", &[("Idempotency-Key", "lab-7")])
            .await,
        StatusCode::CREATED,
    )
    .await;
    json_of(app.allocate("stu-py").await, StatusCode::OK).await;
    let released = json_of(app.allocate("stu-c").await, StatusCode::CREATED).await;
    let released = released["sandbox_id"].as_str().unwrap().to_owned();
    json_of(app.mark(&released, "stu-c").await, StatusCode::OK).await;
    for job in ["/v1/admin/expire", "/v1/admin/auto-delete-stale"] {
        let response = app.admin(Method::POST, job).send().await.unwrap();
        json_of(response, StatusCode::OK).await;
    }
    // A lab token, and a student allocated under it (the row carries `token_id`).
    let minted = app
        .admin(Method::POST, "/v1/admin/tokens")
        .json(&serde_json::json!({"name": "class", "name_prefixes": ["lab-"], "max_active": 5}))
        .send()
        .await
        .unwrap();
    let minted = json_of(minted, StatusCode::CREATED).await;
    let scoped = app
        .client
        .post(app.url("/v1/allocate"))
        .bearer_auth(minted["token"].as_str().unwrap())
        .header("X-Instruqt-Sandbox-ID", "stu-tok")
        .send()
        .await
        .unwrap();
    json_of(scoped, StatusCode::CREATED).await;
    // A class's reservation: one student drew on it, and a second reservation still holds
    // a sandbox. As the rollback steps say, both are deleted and their rows return.
    let mut reservations = Vec::new();
    for lab in ["class-a", "class-b"] {
        let made = app
            .admin(Method::POST, "/v1/admin/reservations")
            .json(&serde_json::json!({"track_name": lab, "count": 1, "starts_at": now, "ends_at": now + 3600}))
            .send()
            .await
            .unwrap();
        reservations.push(
            json_of(made, StatusCode::CREATED).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let held = until_stats(&app, |stats| stats["reserved"] == 2).await;
    assert_eq!(held["reserved"], 2);
    let drawn = app
        .allocate_with("stu-class", &[("X-Instruqt-Track-ID", "class-a")])
        .await;
    let drawn = json_of(drawn, StatusCode::CREATED).await["sandbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let items = scan_all(&client, &table).await;
    let reservation_item = items
        .iter()
        .find(|item| item.get("PK") == Some(&s("RESERVATION")))
        .expect("a reservation item");
    assert_eq!(
        (
            reservation_item.get("sandbox_id"),
            reservation_item.get("status")
        ),
        (Some(&s("RESERVATION")), None),
        "the Python sync reads its sandbox_id; no status index sees it"
    );
    for id in &reservations {
        let deleted = app
            .admin(Method::DELETE, &format!("/v1/admin/reservations/{id}"))
            .send()
            .await
            .unwrap();
        json_of(deleted, StatusCode::OK).await;
    }
    until_stats(&app, |stats| stats["reserved"] == 0).await;
    // A bad day: a lab cordoned (left in place), two accounts quarantined. As the rollback
    // steps say, the fine one is returned and the other retired.
    let cordon = app
        .admin(Method::POST, "/v1/admin/cordon")
        .json(&serde_json::json!({"name_prefix": "lab-", "reason": "fixing"}))
        .send()
        .await
        .unwrap();
    json_of(cordon, StatusCode::CREATED).await;
    let pool = json_of(
        app.admin_get("/v1/admin/sandboxes?status=available").await,
        StatusCode::OK,
    )
    .await;
    let fine = pool["sandboxes"][0]["sandbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let retired = pool["sandboxes"][1]["sandbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (id, verb) in [
        (&fine, "quarantine"),
        (&retired, "quarantine"),
        (&fine, "unquarantine"),
        (&retired, "retire"),
    ] {
        let response = app
            .admin(Method::POST, &format!("/v1/admin/sandboxes/{id}/{verb}"))
            .json(&serde_json::json!({"reason": "a look"}))
            .send()
            .await
            .unwrap();
        json_of(response, StatusCode::OK).await;
    }
    // The released and the retired sandboxes are deleted at the provider, and their
    // tombstones removed as the rollback steps say: used-account markers take their place.
    for id in [&released, &retired] {
        let id = sandbox_broker::domain::SandboxId::parse("id", id).unwrap();
        let now = EpochSecs::new(now);
        let outcome = sandbox_broker::store::DeletionOutcome::Deleted { ttl: now + 86_400 };
        crate::helpers::finish_deletion_of(&app.store, &id, outcome, None, now, now).await;
    }
    let bulk = app
        .admin(Method::POST, "/v1/admin/bulk-delete?status=deleted")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(bulk, StatusCode::OK).await["deleted"], 2);
    // A sync records its listing, and an audit its report: the auditor's records.
    app.store
        .lifecycle
        .sync_provider(
            Vec::new(),
            crate::helpers::sync_rules(true),
            EpochSecs::new(now),
        )
        .await
        .unwrap()
        .unwrap();
    let audit = app
        .admin(Method::POST, "/v1/admin/audit")
        .send()
        .await
        .unwrap();
    json_of(audit, StatusCode::OK).await;
    // A webhook endpoint, with a delivery state.
    let endpoint = sandbox_broker::domain::webhooks::WebhookEndpoint::parse(
        sandbox_broker::domain::webhooks::RawEndpointSpec {
            url: Some("https://hooks.example.com/in".into()),
            events: Some(vec!["sandbox.allocated".into()]),
            description: None,
        },
        false,
        "wh_1".into(),
        sandbox_broker::domain::webhooks::new_secret([1; 24]),
        EpochSecs::new(now),
    )
    .unwrap();
    app.store.webhooks.add_webhook(&endpoint).await.unwrap();
    app.store
        .webhooks
        .record_delivery("wh_1", &Default::default())
        .await
        .unwrap();
    // A restore of an export was begun on the table and not finished: its marker stays.
    let marker = sandbox_broker::store::backup::RestoreMarker {
        digest: "sha256:0".into(),
        items: 1,
        merge: false,
        started_at: EpochSecs::new(now),
    };
    app.store
        .backup
        .set_restore_marker(Some(marker))
        .await
        .unwrap();

    // What the Python service's code meets on the table (app/db/dynamodb.py and
    // app/services/admin.py): its sync reads `sandbox_id` from every item a scan returns;
    // its stats count `status`; its lists and lookups build a Sandbox from `sandbox_id`,
    // `name`, `external_id`, a known `status` and integer numbers.
    let items = scan_all(&client, &table).await;
    let marker = items
        .iter()
        .find(|item| item.get("PK") == Some(&s(&format!("USED#{released}"))))
        .expect("the removed tombstone left its used-account marker");
    assert_eq!(marker.get("sandbox_id"), Some(&s(&released)));
    assert!(
        items
            .iter()
            .any(|item| item.get("PK") == Some(&s(&format!("USED#{retired}")))),
        "the retired account left its marker"
    );
    for record in [
        "LISTING#last",
        "AUDIT#last",
        "ACTIONS",
        "CORDON",
        "RESTORE",
        "TOKEN",
        "WEBHOOK",
    ] {
        assert!(
            items.iter().any(|item| item.get("PK") == Some(&s(record))),
            "{record} was written"
        );
    }
    assert!(
        items.len() > 7,
        "rows, key items and job items: {}",
        items.len()
    );
    for item in &items {
        let pk = match item.get("PK") {
            Some(AttributeValue::S(pk)) => pk.as_str(),
            other => panic!("PK {other:?}"),
        };
        assert!(
            matches!(item.get("sandbox_id"), Some(AttributeValue::S(_))),
            "{pk}: the Python sync reads sandbox_id from every item: {item:?}"
        );
        if let Some(row) = pk.strip_prefix("SBX#") {
            for text in ["name", "external_id", "status"] {
                assert!(
                    matches!(item.get(text), Some(AttributeValue::S(_))),
                    "{row}: {text}"
                );
            }
            let Some(AttributeValue::S(status)) = item.get("status") else {
                unreachable!()
            };
            assert!(
                PYTHON_STATUSES.contains(&status.as_str()),
                "{row}: {status}"
            );
            for number in ["allocated_at", "lab_duration_hours", "deletion_retry_count"] {
                if let Some(value) = item.get(number) {
                    let AttributeValue::N(value) = value else {
                        panic!("{row}: {number} is not a number: {value:?}")
                    };
                    assert!(value.parse::<i64>().is_ok(), "{row}: {number} = {value}");
                }
            }
        } else {
            assert!(
                !item.contains_key("status"),
                "{pk}: an item of this service with a status would count as a sandbox"
            );
        }
    }
    // Python's idempotency lookup (IdempotencyIndex, the request's key or else the student
    // key) finds this service's allocations, so a mid-lab student keeps the sandbox.
    for (idempotency_key, holder) in [("stu-a", "stu-a"), ("lab-7", "stu-b")] {
        let found = client
            .query()
            .table_name(&table)
            .index_name("IdempotencyIndex")
            .key_condition_expression("idempotency_key = :k")
            .expression_attribute_values(":k", s(idempotency_key))
            .limit(1)
            .send()
            .await
            .unwrap();
        let item = &found.items()[0];
        assert_eq!(
            (item.get("status"), item.get("allocated_to_track")),
            (Some(&s("allocated")), Some(&s(holder))),
            "{idempotency_key}"
        );
    }
    // The student who drew on the reservation holds a plain allocation; the rows the
    // reservations held are plain available rows again.
    let drawn_item = items
        .iter()
        .find(|item| item.get("PK") == Some(&s(&format!("SBX#{drawn}"))))
        .unwrap();
    assert_eq!(
        (
            drawn_item.get("status"),
            drawn_item.get("allocated_to_track")
        ),
        (Some(&s("allocated")), Some(&s("stu-class")))
    );
    for item in items
        .iter()
        .filter(|item| item.get("status") == Some(&s("available")))
    {
        assert!(
            !item.contains_key("reserved_for")
                && !matches!(item.get("allocated_to_track"), Some(AttributeValue::S(t)) if t.starts_with("reservation#")),
            "a returned row carries nothing of its reservation: {item:?}"
        );
    }
    assert!(
        !items
            .iter()
            .any(|item| item.get("PK") == Some(&s("RESERVATION"))),
        "deleted"
    );
}

/// Waits (up to ten seconds) until `check` holds of `GET /v1/admin/stats`.
async fn until_stats(
    app: &crate::helpers::TestApp,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..200 {
        let stats = json_of(app.admin_get("/v1/admin/stats").await, StatusCode::OK).await;
        if check(&stats) {
            return stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the stats never got there")
}

/// A Python-era allocation with a lab, and one row this service cannot read (a status it
/// does not know): the dashboard's analytics count the first and leave the second out,
/// rather than failing for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_analytics_count_python_rows_and_leave_out_a_row_they_cannot_read() {
    let now = sandbox_broker::domain::now_epoch();
    let mut with_lab = local::python_allocation("9001", "stu-py", "stu-py", now - 600);
    with_lab.insert("track_name".into(), s("dns"));
    let mut unreadable = local::python_allocation("9002", "stu-odd", "stu-odd", now - 600);
    unreadable.insert("status".into(), s("frozen"));
    unreadable.insert("track_name".into(), s("dns"));
    let (app, _client, _table) = python_table_app(vec![with_lab, unreadable], 0).await;

    let labs =
        crate::helpers::json_of(app.admin_get("/v1/admin/tracks").await, StatusCode::OK).await;
    let usage =
        crate::helpers::json_of(app.admin_get("/v1/admin/usage").await, StatusCode::OK).await;

    assert_eq!(labs["tracks"][0]["track_name"], "dns");
    assert_eq!(labs["tracks"][0]["allocated"], 1);
    assert_eq!(labs["tracks"][0]["total"], 1);
    assert_eq!(
        (usage["allocated"].as_u64(), usage["held_now"].as_u64()),
        (Some(1), Some(1))
    );
}
