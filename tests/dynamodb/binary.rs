//! The `sandbox-broker` binary on DynamoDB: `init-table`, and start-up refusals.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::local;

const BINARY: &str = env!("CARGO_BIN_EXE_sandbox-broker");

/// The binary with a clean environment on `table` at `endpoint`.
pub fn broker(args: &[&str], endpoint: &str, table: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("BROKER_STORE", "dynamodb")
        .env("DDB_ENDPOINT_URL", endpoint)
        .env("DDB_TABLE_NAME", table)
        .env("BROKER_API_TOKEN", "track")
        .env("BROKER_ADMIN_TOKEN", "admin")
        .env("BROKER_LISTEN_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null());
    command
}

#[test]
fn init_table_creates_the_table_once_and_is_idempotent() {
    let endpoint = &local::shared().endpoint;
    let table = local::table_name();

    let first = broker(&["init-table"], endpoint, &table).output().unwrap();
    let second = broker(&["init-table"], endpoint, &table).output().unwrap();

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

    let output = broker(&["serve"], endpoint, "no_such_table")
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

    let output = broker(&["serve"], &closed, "any").output().unwrap();

    assert!(!output.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up only after {:?}",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("unreachable"));
}
