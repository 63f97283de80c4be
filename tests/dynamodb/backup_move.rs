//! The move between the stores through the binary, on DynamoDB Local: a populated
//! embedded store exported, restored into a fresh table, served there and moved back,
//! compared row by row at each step, with students mid-lab noticing nothing; and a
//! restore into a table killed halfway and run again.

use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};
use sandbox_broker::store::backup::{Consistency, check_export};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::csp::account;
use crate::helpers::process::{
    Exited, Server, export_items, kill_after_first_progress, on_embedded, run_to_end,
    start_until_listening,
};
use crate::helpers::{ADMIN_TOKEN, LAB_TOKEN};
use crate::local::{self, broker};

const TABLE_TRACK_TOKEN: &str = "track-token-for-binary-tests";
const TABLE_ADMIN_TOKEN: &str = "admin-token-for-binary-tests";

/// A running broker and the tokens it was started with.
struct Broker {
    server: Server,
    lab: &'static str,
    admin: &'static str,
}

impl Broker {
    async fn call(&self, method: Method, path: &str, holder: Option<&str>) -> (StatusCode, Value) {
        let token = if path.starts_with("/v1/admin") {
            self.admin
        } else {
            self.lab
        };
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.server.address))
            .bearer_auth(token);
        if let Some(holder) = holder {
            request = request.header("X-Instruqt-Sandbox-ID", holder);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, method: Method, path: &str) -> Value {
        let (status, body) = self.call(method, path, None).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn ids_in(&self, status: &str) -> Vec<String> {
        let body = self
            .admin(
                Method::GET,
                &format!("/v1/admin/sandboxes?status={status}&limit=100"),
            )
            .await;
        body["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["sandbox_id"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn sync_record(&self) -> Value {
        let jobs = self.admin(Method::GET, "/v1/admin/jobs").await;
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["job"] == "sync")
            .cloned()
            .unwrap()
    }
}

/// Points a `serve` command at a provider (a wiremock CSP) and keeps its scheduled jobs
/// out of the way: the test triggers them.
pub fn with_provider(command: &mut Command, csp_uri: &str) {
    command
        .env("CSP_BASE_URL", format!("{csp_uri}/v2"))
        .env("CSP_API_TOKEN", "csp-token")
        .env("ALLOW_HTTP_UPSTREAMS", "true")
        .env("DELETION_VERIFY_GRACE_SEC", "86400");
    for interval in [
        "SYNC_INTERVAL_SEC",
        "CLEANUP_INTERVAL_SEC",
        "AUTO_EXPIRY_INTERVAL_SEC",
        "AUTO_DELETE_STALE_INTERVAL_SEC",
        "AUDIT_INTERVAL_SEC",
    ] {
        command.env(interval, "3600");
    }
}

fn serve_embedded(dir: &Path, csp: &MockServer) -> Broker {
    let mut command = on_embedded(&["serve"], dir);
    with_provider(&mut command, &csp.uri());
    Broker {
        server: start_until_listening(command, "sandbox-broker listening"),
        lab: LAB_TOKEN,
        admin: ADMIN_TOKEN,
    }
}

fn serve_table(table: &str, csp: &MockServer) -> Broker {
    let mut command = broker(&["serve"], &local::shared().endpoint, table);
    with_provider(&mut command, &csp.uri());
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    Broker {
        server: start_until_listening(command, "sandbox-broker listening"),
        lab: TABLE_TRACK_TOKEN,
        admin: TABLE_ADMIN_TOKEN,
    }
}

fn on_table(args: &[&str], table: &str) -> Exited {
    let exited = run_to_end(broker(args, &local::shared().endpoint, table));
    assert_eq!(exited.code, Some(0), "{args:?}: {}", exited.stderr);
    exited
}

fn on_dir(args: &[&str], dir: &Path) -> Exited {
    let exited = run_to_end(on_embedded(args, dir));
    assert_eq!(exited.code, Some(0), "{args:?}: {}", exited.stderr);
    exited
}

fn path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `POST /v1/allocate` as `holder` with the lab token `secret`; its status.
async fn with_lab_token(broker: &Broker, secret: &str, holder: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("{}/v1/allocate", broker.server.address))
        .bearer_auth(secret)
        .header("X-Instruqt-Sandbox-ID", holder)
        .send()
        .await
        .unwrap()
        .status()
}

/// A provider listing `lab-1`..`lab-12`, accepting every deletion (and counting them).
async fn provider() -> MockServer {
    let csp = MockServer::start().await;
    let accounts: Vec<Value> = (1..=12).map(|n| account(n, &format!("lab-{n}"))).collect();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "results": accounts })))
        .mount(&csp)
        .await;
    crate::helpers::csp::accept_deletions(&csp).await;
    csp
}

/// How many deletions of `external_id` the provider was asked for.
async fn deletions_of(csp: &MockServer, external_id: &str) -> usize {
    let uuid = external_id.rsplit('/').next().unwrap();
    csp.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::DELETE && r.url.path().ends_with(uuid))
        .count()
}

/// The students' view before a move: their sandbox and its expiry.
type Held = Vec<(String, String, Value)>;

async fn replayed_unchanged(broker: &Broker, held: &Held) {
    for (holder, id, expires_at) in held {
        let (status, body) = broker
            .call(Method::POST, "/v1/allocate", Some(holder))
            .await;
        assert_eq!(status, StatusCode::OK, "{holder}: a replay, {body}");
        assert_eq!(
            body["sandbox_id"],
            id.as_str(),
            "{holder} keeps their sandbox"
        );
        assert_eq!(
            &body["expires_at"], expires_at,
            "{holder}'s expiry is unchanged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_moves_to_dynamodb_and_back_and_nobody_mid_lab_notices() {
    let csp = provider().await;
    let (first, back, files) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );

    // One machine: a synced pool, four students mid-lab, one used account whose row is
    // gone (its marker remains), one released sandbox not yet deleted, a cordon.
    let single = serve_embedded(first.path(), &csp);
    single.admin(Method::POST, "/v1/admin/sync").await;
    let (_, used) = single
        .call(Method::POST, "/v1/allocate", Some("stu-used"))
        .await;
    let used_id = used["sandbox_id"].as_str().unwrap().to_owned();
    single
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{used_id}/mark-for-deletion"),
            Some("stu-used"),
        )
        .await;
    single.admin(Method::POST, "/v1/admin/cleanup").await;
    single
        .admin(Method::POST, "/v1/admin/bulk-delete?status=deleted")
        .await;
    let mut held: Held = Vec::new();
    for n in 1..=4 {
        let holder = format!("stu-{n}");
        let (status, body) = single
            .call(Method::POST, "/v1/allocate", Some(&holder))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        held.push((
            holder,
            body["sandbox_id"].as_str().unwrap().to_owned(),
            body["expires_at"].clone(),
        ));
    }
    let (_, released) = single
        .call(Method::POST, "/v1/allocate", Some("stu-done"))
        .await;
    let released_id = released["sandbox_id"].as_str().unwrap().to_owned();
    let released_external = released["external_id"].as_str().unwrap().to_owned();
    single
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{released_id}/mark-for-deletion"),
            Some("stu-done"),
        )
        .await;
    reqwest::Client::new()
        .post(format!("{}/v1/admin/cordon", single.server.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name_prefix": "zzz-", "reason": "the move test"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // A lab's scoped token, at its cap of one.
    let minted = reqwest::Client::new()
        .post(format!("{}/v1/admin/tokens", single.server.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "move-lab", "name_prefixes": ["lab-"], "max_active": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), StatusCode::CREATED);
    let lab_token = minted.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        with_lab_token(&single, &lab_token, "stu-tok").await,
        StatusCode::CREATED
    );
    let sync_before = single.sync_record().await;
    let available_before = single.ids_in("available").await;
    drop(single);

    // Export, init-table, restore: the move to a fleet.
    let table = local::table_name();
    let exported = files.path().join("embedded.ndjson");
    on_dir(&["export", "--to", &path(&exported)], first.path());
    on_table(&["init-table"], &table);
    let restored = on_table(&["restore", "--from", &path(&exported)], &table);
    assert!(restored.stdout.contains("verified"), "{}", restored.stdout);
    let on_table_file = files.path().join("table.ndjson");
    on_table(&["export", "--to", &path(&on_table_file)], &table);
    assert_eq!(
        export_items(&on_table_file),
        export_items(&exported),
        "the table holds every row exactly as the embedded store did"
    );

    let fleet = serve_table(&table, &csp);
    assert_eq!(
        fleet.sync_record().await,
        sync_before,
        "the jobs resume from their records"
    );
    // The lab's token works on the fleet, holding what it held: its cap still counts it.
    assert_eq!(
        with_lab_token(&fleet, &lab_token, "stu-tok").await,
        StatusCode::OK
    );
    assert_eq!(
        with_lab_token(&fleet, &lab_token, "stu-tok-2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    replayed_unchanged(&fleet, &held).await;
    assert!(
        fleet
            .ids_in("pending_deletion")
            .await
            .contains(&released_id)
    );
    fleet.admin(Method::POST, "/v1/admin/cleanup").await;
    assert!(fleet.ids_in("deleted").await.contains(&released_id));
    fleet.admin(Method::POST, "/v1/admin/sync").await;
    assert_eq!(
        deletions_of(&csp, &released_external).await,
        1,
        "deleted once"
    );
    assert_eq!(
        fleet.ids_in("available").await.len(),
        available_before.len(),
        "no handed-out account came back"
    );
    assert!(!fleet.ids_in("available").await.contains(&used_id));
    let (status, _) = fleet.call(Method::GET, "/v1/admin/cordon", None).await;
    assert_eq!(status, StatusCode::OK);
    // The fleet exports online too: a consistent scan, said so in the header.
    let online = reqwest::Client::new()
        .get(format!("{}/v1/admin/export", fleet.server.address))
        .bearer_auth(TABLE_ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let checked = check_export(online.as_ref()).unwrap();
    assert_eq!(checked.header.store, "dynamodb");
    assert_eq!(checked.header.consistency, Consistency::Scan);
    assert_eq!(
        checked.trailer.counts["sandbox:allocated"], 5,
        "four students and the token's"
    );
    drop(fleet);

    // And back to one machine.
    let from_table = files.path().join("fleet.ndjson");
    on_table(&["export", "--to", &path(&from_table)], &table);
    on_dir(&["restore", "--from", &path(&from_table)], back.path());
    let round_trip = files.path().join("back.ndjson");
    on_dir(&["export", "--to", &path(&round_trip)], back.path());
    assert_eq!(export_items(&round_trip), export_items(&from_table));
    let single_again = serve_embedded(back.path(), &csp);
    replayed_unchanged(&single_again, &held).await;
    single_again.admin(Method::POST, "/v1/admin/cleanup").await;
    single_again.admin(Method::POST, "/v1/admin/sync").await;
    assert_eq!(
        deletions_of(&csp, &released_external).await,
        1,
        "still deleted once"
    );
    assert!(!single_again.ids_in("available").await.contains(&used_id));
}

#[test]
fn a_restore_into_a_table_killed_halfway_finishes_when_run_again() {
    let (source, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // 2,000 rows, written straight into an embedded store by a restore of a generated file.
    let generated = files.path().join("generated.ndjson");
    crate::helpers::process::write_export_of_rows(&generated, 2_000);
    on_dir(&["restore", "--from", &path(&generated)], source.path());
    let file = files.path().join("source.ndjson");
    on_dir(&["export", "--to", &path(&file)], source.path());

    let table = local::table_name();
    on_table(&["init-table"], &table);
    let args = ["restore", "--from", &path(&file)];
    kill_after_first_progress(broker(&args, &local::shared().endpoint, &table));
    let serve = run_to_end(broker(&["serve"], &local::shared().endpoint, &table));
    assert_ne!(serve.code, Some(0));
    assert!(
        serve.stderr.contains("unfinished restore"),
        "{}",
        serve.stderr
    );

    let finished = on_table(&args, &table);
    assert!(
        finished.stdout.contains("carrying on"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("= the file's"),
        "{}",
        finished.stdout
    );
    let back = files.path().join("back.ndjson");
    on_table(&["export", "--to", &path(&back)], &table);
    assert_eq!(export_items(&back), export_items(&file), "each row once");
}

/// Allocates as `holder` with an `Idempotency-Key`, expecting a replay.
async fn replay_with_key(broker: &Broker, holder: &str, key: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/allocate", broker.server.address))
        .bearer_auth(broker.lab)
        .header("X-Instruqt-Sandbox-ID", holder)
        .header("Idempotency-Key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{holder}/{key}: a replay"
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_era_allocations_move_to_one_machine_and_their_students_keep_them() {
    let csp = provider().await;
    let (dir, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let table = local::table_name();
    on_table(&["init-table"], &table);
    let endpoint = &local::shared().endpoint;
    let client = sandbox_broker::store::dynamo::client(&local::settings(endpoint, &table)).await;
    let now = sandbox_broker::domain::now_epoch();
    // Two of the Python service's allocations: no ALLOC# item, only the rows.
    local::put_items(
        &client,
        &table,
        vec![
            local::python_allocation("5001", "stu-py", "stu-py", now - 3600),
            local::python_allocation("5002", "stu-k", "lab-7", now - 1800),
        ],
    )
    .await;
    let fleet = serve_table(&table, &csp);
    let (status, before) = fleet
        .call(Method::POST, "/v1/allocate", Some("stu-py"))
        .await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let keyed_before = replay_with_key(&fleet, "stu-k", "lab-7").await;
    drop(fleet);

    let file = files.path().join("python-era.ndjson");
    on_table(&["export", "--to", &path(&file)], &table);
    let items = export_items(&file);
    for key in [
        r#"allocation_key "stu-py""#,
        "allocation_key \"stu-k\\u{1f}lab-7\"",
    ] {
        assert!(
            items.contains_key(key),
            "{key} implied by its row: {:?}",
            items.keys()
        );
    }
    on_dir(&["restore", "--from", &path(&file)], dir.path());

    let single = serve_embedded(dir.path(), &csp);
    let (status, after) = single
        .call(Method::POST, "/v1/allocate", Some("stu-py"))
        .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["sandbox_id"], "5001");
    assert_eq!(
        after["expires_at"], before["expires_at"],
        "a Python-era allocation keeps expiring as it did"
    );
    let keyed_after = replay_with_key(&single, "stu-k", "lab-7").await;
    assert_eq!(keyed_after["sandbox_id"], "5002");
    assert_eq!(keyed_after["expires_at"], keyed_before["expires_at"]);
}
