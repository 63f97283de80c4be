//! The DynamoDB suite's shared helpers: DynamoDB Local (started once per test process on a
//! free loopback port, fetched and cached by `sandbox_broker::store::dynamo::local`, stopped
//! when the test process exits), fresh tables and stores, the binary on a table, and items
//! written as the Python service writes them.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo::local::{self as emulator, EmulatorProcess};
use sandbox_broker::store::dynamo::{self, DynamoSettings, DynamoStore};

/// A running emulator.
pub struct DynamoLocal {
    pub endpoint: String,
    _process: EmulatorProcess,
}

/// The shared emulator of this test process.
pub fn shared() -> &'static DynamoLocal {
    static LOCAL: OnceLock<DynamoLocal> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let port = free_port();
        let process = start_emulator(port, None);
        DynamoLocal {
            endpoint: format!("http://127.0.0.1:{port}"),
            _process: process,
        }
    })
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    emulator::free_port().expect("a free port")
}

/// Starts DynamoDB Local on `port` (in memory, or persisted in `db_path`).
pub fn start_emulator(port: u16, db_path: Option<&Path>) -> EmulatorProcess {
    emulator::start(port, db_path).expect("start DynamoDB Local (are java and npm installed?)")
}

/// Settings for a table on the emulator at `endpoint`: the production defaults, with
/// more patience. The emulator shares two cores with a debug build and every test running
/// at once, and starts cold (a JVM that has not compiled its write path yet answers its
/// first writes in seconds). The shared suites test behaviour — exact counts, one sandbox
/// per key — so their store must wait that out rather than call it an outage: a deadline
/// (`ALLOCATE_DEADLINE_SEC`) of two minutes and a stall timeout of five seconds. The
/// outage tests (`outage.rs`) use the production values, which they are about.
pub fn settings(endpoint: &str, table: &str) -> DynamoSettings {
    let config = sandbox_broker::config::Config::for_tests("unused".into(), "t", "a");
    DynamoSettings {
        table: table.to_owned(),
        endpoint_url: Some(endpoint.to_owned()),
        deadline: Duration::from_secs(120),
        stall_timeout: Duration::from_secs(5),
        ..config.store.dynamo.settings()
    }
}

/// A unique table name for one test.
pub fn table_name() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// A store on a fresh table (created by the same code as `init-table`) of the shared emulator.
pub async fn fresh_table_store() -> (SharedStore, String) {
    let (mut stores, table) = fleet_table_stores(1).await;
    (stores.remove(0), table)
}

/// `count` stores, each with its own client, on one fresh table (created by the same
/// code as `init-table`) of the shared emulator.
pub async fn fleet_table_stores(count: usize) -> (Vec<SharedStore>, String) {
    let local = shared();
    let table = table_name();
    let settings = settings(&local.endpoint, &table);
    let client = dynamo::client(&settings).await;
    dynamo::schema::ensure_table(&client, &table)
        .await
        .expect("create the test table");
    let mut stores: Vec<SharedStore> = Vec::new();
    for _ in 0..count {
        let client = dynamo::client(&settings).await;
        stores.push(SharedStore::new(
            DynamoStore::new(&client, &settings)
                .await
                .expect("the store opens"),
        ));
    }
    (stores, table)
}

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_sandbox-broker");

/// The binary with a clean environment on `table` at `endpoint`.
pub fn broker(args: &[&str], endpoint: &str, table: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("BROKER_STORE", "dynamodb")
        .env("DDB_ENDPOINT_URL", endpoint)
        .env("DDB_TABLE_NAME", table)
        .env("BROKER_API_TOKEN", "track-token-for-binary-tests")
        .env("BROKER_ADMIN_TOKEN", "admin-token-for-binary-tests")
        .env("BROKER_LISTEN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null());
    command
}

/// An allocated row exactly as the Python service leaves it: the model default
/// `lab_duration_hours = 4` its sync writes on every row, and `idempotency_key` = the
/// request's `Idempotency-Key` or, without one, the holder key.
pub fn python_allocation(
    id: &str,
    holder: &str,
    idempotency_key: &str,
    allocated_at: i64,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("PK".into(), s(&format!("SBX#{id}"))),
        ("SK".into(), s("META")),
        ("sandbox_id".into(), s(id)),
        ("name".into(), s(&format!("lab-py-{id}"))),
        ("external_id".into(), s(&format!("identity/accounts/{id}"))),
        ("status".into(), s("allocated")),
        ("lab_duration_hours".into(), n("4")),
        ("deletion_retry_count".into(), n("0")),
        ("allocated_at".into(), n(&allocated_at.to_string())),
        ("allocated_to_track".into(), s(holder)),
        ("idempotency_key".into(), s(idempotency_key)),
        ("last_synced".into(), n(&(allocated_at - 600).to_string())),
        ("created_at".into(), n(&(allocated_at - 86_400).to_string())),
        ("updated_at".into(), n(&allocated_at.to_string())),
    ])
}

/// Writes `items` straight into `table`, as another writer (the Python service) would.
pub async fn put_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) {
    for item in items {
        client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
}

/// A string attribute.
pub fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// A number attribute.
pub fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}
