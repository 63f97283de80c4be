//! The `sandbox-broker` binary on DynamoDB: `init-table`, and start-up refusals.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_broker::domain::time::EpochSecs;

use crate::local::{self, BINARY};

#[test]
fn init_table_creates_the_table_once_and_is_idempotent() {
    let endpoint = &local::shared().endpoint;
    let table = local::table_name();

    let first = local::broker(&["init-table"], endpoint, &table)
        .output()
        .unwrap();
    let second = local::broker(&["init-table"], endpoint, &table)
        .output()
        .unwrap();

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("created table"));
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("nothing to do"));
}

#[test]
fn serve_refuses_to_start_without_its_table_naming_the_variable() {
    let endpoint = &local::shared().endpoint;

    let output = local::broker(&["serve"], endpoint, "no_such_table")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DDB_TABLE_NAME") && stderr.contains("init-table"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_to_start_when_dynamodb_is_unreachable() {
    let closed = format!("http://127.0.0.1:{}", local::free_port());
    let started = Instant::now();

    let output = local::broker(&["serve"], &closed, "any").output().unwrap();

    assert!(!output.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up only after {:?}",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("unreachable"));
}

/// The environment an ECS task of the Python service has (its variable names and
/// values; no `BROKER_STORE`), on `table` at `endpoint`, listening on a loopback port.
fn python_environment(endpoint: &str, table: &str, log_level: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .env_clear()
        .env("BROKER_API_TOKEN", "track-token-of-the-python-service")
        .env("BROKER_ADMIN_TOKEN", "admin-token-of-the-python-service")
        .env("API_BASE_PATH", "/v1")
        .env("DDB_TABLE_NAME", table)
        .env("DDB_GSI1_NAME", "StatusIndex")
        .env("DDB_GSI2_NAME", "TrackIndex")
        .env("DDB_GSI3_NAME", "IdempotencyIndex")
        .env("DDB_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("LAB_DURATION_HOURS", "48")
        .env("GRACE_PERIOD_MINUTES", "30")
        .env("LOG_LEVEL", log_level)
        .env("LOG_FORMAT", "json")
        .env("METRICS_PORT", "9090")
        .env("ENABLE_REQUEST_ID", "true")
        // Not the Python service's: a test must not bind 0.0.0.0:8080.
        .env("BROKER_LISTEN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_services_environment_unchanged_starts_on_its_table() {
    let endpoint = local::shared().endpoint.clone();
    let (store, table) = local::fresh_table_store().await;
    store
        .admin
        .import(crate::helpers::sandboxes("lab-", 0, 3), EpochSecs::new(0))
        .await
        .unwrap();

    let mut child = python_environment(&endpoint, &table, "INFO")
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let listening = line.contains("sandbox-broker listening");
            seen.push(line);
            if listening {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .expect("the service did not start")
        .unwrap();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let selected = events
        .iter()
        .find(|e| e["message"] == "store selected")
        .expect("the store choice is logged");
    let address = events.last().unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{address}/v1/admin/stats"))
        .bearer_auth("admin-token-of-the-python-service")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(selected["store"], "Dynamodb", "{selected}");
    assert!(
        selected["reason"]
            .as_str()
            .unwrap()
            .contains("DDB_TABLE_NAME"),
        "{selected}"
    );
    assert_eq!(stats["available"], 3, "the pool is the table's: {stats}");
}

#[test]
fn python_log_levels_are_accepted_and_a_bad_one_or_a_renamed_index_is_refused_by_name() {
    let closed = format!("http://127.0.0.1:{}", local::free_port());
    for level in ["WARNING", "CRITICAL", "error", "Debug"] {
        let output = python_environment(&closed, "any", level).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("LOG_LEVEL") && stderr.contains("unreachable"),
            "{level}: {stderr}"
        );
    }
    let output = python_environment(&closed, "any", "LOUD").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("LOG_LEVEL"), "{stderr}");

    let output = python_environment(&closed, "any", "INFO")
        .env("DDB_GSI2_NAME", "StudentIndex")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("DDB_GSI2_NAME") && stderr.contains("TrackIndex"),
        "{stderr}"
    );
}
