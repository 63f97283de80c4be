//! The real binary as a child process: start-up refusals, the data-dir lock, SIGTERM,
//! JSON logs, and a SIGKILL in the middle of an allocation burst.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::process::{
    BINARY, Server, import_over_http, run_to_end, start_until_listening,
};
use crate::helpers::{ADMIN_TOKEN, LAB_TOKEN};

fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .env_clear()
        .env("BROKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("BROKER_DATA_DIR", data_dir)
        .env("BROKER_API_TOKEN", LAB_TOKEN)
        .env("BROKER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RATE_LIMIT_PER_SEC", "100000")
        .env("RATE_LIMIT_BURST", "100000")
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts the server and waits for its "listening" log line, which carries the port.
fn start(data_dir: &Path) -> Server {
    start_command(command(data_dir))
}

fn start_command(command: Command) -> Server {
    start_until_listening(command, "sandbox-broker listening")
}

/// Runs a command expected to exit by itself (a refused start-up): its exit code and stderr.
fn run_to_exit(command: Command) -> (Option<i32>, String) {
    let exited = run_to_end(command);
    (exited.code, exited.stderr)
}

#[test]
fn serve_without_tokens_refuses_to_start_and_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for missing in ["BROKER_API_TOKEN", "BROKER_ADMIN_TOKEN"] {
        let mut command = command(dir.path());
        command.env_remove(missing);
        let (code, stderr) = run_to_exit(command);
        assert_ne!(code, Some(0));
        assert!(
            stderr.contains(missing),
            "stderr does not name {missing}: {stderr}"
        );
    }
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("RATE_LIMIT_PER_SEC", "fast"),
        ("BROKER_LISTEN_ADDR", "nowhere"),
        ("LAB_DURATION_HOURS", "-1"),
        ("BROKER_STORE", "mongo"),
        ("TRUSTED_PROXIES", "10.0.0.0/99"),
        ("CORS_ALLOWED_ORIGINS", "labs.example.com"),
        ("API_BASE_PATH", "v1"),
    ] {
        let mut command = command(dir.path());
        command.env(variable, value);
        let (code, stderr) = run_to_exit(command);
        assert_ne!(code, Some(0), "{variable}={value} was accepted");
        assert!(
            stderr.contains(variable),
            "stderr does not name {variable}: {stderr}"
        );
    }
}

#[test]
fn the_shipped_env_example_starts_the_service_once_its_tokens_are_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"),
        dir.path().join(".env"),
    )
    .unwrap();
    let env_example = |tokens: Option<(&str, &str)>| {
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("BROKER_LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((lab, admin)) = tokens {
            command
                .env("BROKER_API_TOKEN", lab)
                .env("BROKER_ADMIN_TOKEN", admin);
        }
        command
    };

    // The example leaves the tokens for the user: `serve` says which one to set.
    let (code, stderr) = run_to_exit(env_example(None));
    assert_ne!(code, Some(0), "no token, no service");
    assert!(stderr.contains("BROKER_API_TOKEN must be set"), "{stderr}");

    let server = start_command(env_example(Some((LAB_TOKEN, ADMIN_TOKEN))));

    assert!(server.address.starts_with("http://127.0.0.1:"));
    assert!(
        dir.path().join("data").is_dir(),
        "BROKER_DATA_DIR from .env was used"
    );
}

#[test]
fn a_bad_token_stops_start_up_naming_the_variable_and_the_rule_never_the_value() {
    let dir = tempfile::tempdir().unwrap();
    for (lab, rule) in [
        ("only-15-chars-x", "16 characters"),
        ("a-long-enough-token with-a-space", "spaces"),
        ("hunter2", "16 characters"),
    ] {
        let mut refused = command(dir.path());
        refused.env("BROKER_API_TOKEN", lab);

        let (code, stderr) = run_to_exit(refused);

        assert_ne!(code, Some(0));
        assert!(
            stderr.contains("BROKER_API_TOKEN") && stderr.contains(rule),
            "{stderr}"
        );
        for part in lab.split(' ') {
            assert!(!stderr.contains(part), "{part:?} reached stderr: {stderr}");
        }
    }
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start(dir.path());

    let (code, stderr) = run_to_exit(command(dir.path()));

    assert_ne!(code, Some(0));
    assert!(stderr.contains("in use"), "{stderr}");
}

#[tokio::test]
async fn sigterm_exits_zero_and_logs_are_json_with_the_operator_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/allocate", server.address))
        .bearer_auth(LAB_TOKEN)
        .header("X-Instruqt-Sandbox-ID", "stu")
        .header("X-Request-ID", "log-probe-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);

    let access = loop {
        let line = server
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("access log line");
        let event: Value = serde_json::from_str(&line).expect("JSON log line");
        if event["request_id"] == "log-probe-1" {
            break event;
        }
    };
    for field in [
        "timestamp",
        "level",
        "message",
        "request_id",
        "action",
        "outcome",
        "latency_ms",
    ] {
        assert!(!access[field].is_null(), "{field} missing from {access}");
    }
    // The Python service's shape, so its CloudWatch filters keep matching.
    assert_eq!(access["action"], "POST /v1/allocate");
    assert_eq!(access["outcome"], "failure");
    assert_eq!(access["message"], "POST /v1/allocate - 409");
    assert_eq!(access["track_id"], "stu");
    assert_eq!(access["level"], "WARN", "a 4xx is a warning, 5xx an error");
    assert!(access["latency_ms"].is_u64(), "{access}");
    assert_eq!(
        access["error"], "No sandboxes available in pool",
        "{access}"
    );
    // Ours, beside them.
    assert_eq!(access["operation"], "allocate");
    assert_eq!(access["result"], "no_sandboxes");

    let expired = client
        .post(format!("{}/v1/admin/expire", server.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), StatusCode::OK);
    let job = loop {
        let line = server
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("job log line");
        let event: Value = serde_json::from_str(&line).expect("JSON log line");
        if event["action"] == "background_expiry" {
            break event;
        }
    };
    assert_eq!(
        (job["outcome"].as_str(), job["level"].as_str()),
        (Some("success"), Some("INFO")),
        "{job}"
    );
    assert!(
        !access.to_string().contains(LAB_TOKEN),
        "a token reached the logs"
    );

    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_burst_loses_no_acknowledged_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let client = reqwest::Client::new();
    import_over_http(&server.address, 0..8000).await;

    // 64 students at a time allocate until the server dies under them.
    let address = server.address.clone();
    let acknowledged_so_far = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let burst = (0..64).map(|worker| {
        let client = client.clone();
        let address = address.clone();
        let acknowledged_so_far = Arc::clone(&acknowledged_so_far);
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                let holder = format!("w{worker}-s{n}");
                let sent = client
                    .post(format!("{address}/v1/allocate"))
                    .bearer_auth(LAB_TOKEN)
                    .header("X-Instruqt-Sandbox-ID", &holder)
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                acknowledged.push((holder, body["sandbox_id"].as_str().unwrap().to_owned()));
                acknowledged_so_far.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            acknowledged
        })
    });
    let burst = tokio::spawn(join_all(burst));
    let mut server = server;
    // The kill comes once the burst is well under way (a loaded machine may take a while
    // to get there), at a different moment each run: the claim is "at any moment", not at
    // one lucky one.
    let under_way = std::time::Instant::now() + Duration::from_secs(60);
    while acknowledged_so_far.load(std::sync::atomic::Ordering::Relaxed) <= 100
        && std::time::Instant::now() < under_way
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kill_after_ms = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 600,
    );
    tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let acknowledged: Vec<(String, String)> = burst
        .await
        .unwrap()
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert!(
        acknowledged.len() > 100,
        "the burst barely ran ({} allocations)",
        acknowledged.len()
    );
    eprintln!(
        "SIGKILL after {kill_after_ms} ms, {} allocations acknowledged",
        acknowledged.len()
    );

    let restarted = start(dir.path());
    for (holder, sandbox_id) in &acknowledged {
        let response = client
            .get(format!("{}/v1/sandboxes/{sandbox_id}", restarted.address))
            .bearer_auth(LAB_TOKEN)
            .header("X-Instruqt-Sandbox-ID", holder)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "acknowledged allocation {holder} → {sandbox_id} lost"
        );
    }
    let mut holders: HashMap<String, String> = HashMap::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{}/v1/admin/sandboxes?status=allocated&limit=100{cursor}",
                restarted.address
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for row in page["sandboxes"].as_array().unwrap() {
            let holder = row["allocated_to_track"].as_str().unwrap().to_owned();
            let previous = holders.insert(
                holder.clone(),
                row["sandbox_id"].as_str().unwrap().to_owned(),
            );
            assert!(
                previous.is_none(),
                "{holder} holds two sandboxes after the crash"
            );
        }
        match page["cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let stats: Value = client
        .get(format!("{}/v1/admin/stats", restarted.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["allocated"],
        holders.len(),
        "stats disagree with the rows after recovery"
    );
    assert_eq!(stats["total"], 8000);
    let acknowledged_ids: HashSet<&String> = acknowledged.iter().map(|(_, id)| id).collect();
    assert_eq!(
        acknowledged_ids.len(),
        acknowledged.len(),
        "a sandbox was acknowledged twice"
    );
}

#[tokio::test]
async fn demo_prints_its_tokens_and_serves_a_pool_filled_by_the_first_sync() {
    let mut child = Command::new(BINARY)
        .arg("demo")
        .env_clear()
        .env("BROKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut printed = String::new();
    for line in lines.by_ref() {
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("API docs:") {
            break;
        }
    }
    let token_after = |label: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let (lab, admin) = (token_after("track token:"), token_after("admin token:"));
    let port = printed
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    assert!(printed.contains("300 sandboxes synced"), "{printed}");
    assert!(
        printed.contains("curl -s -X POST"),
        "a ready-to-paste curl line: {printed}"
    );

    let client = reqwest::Client::new();
    let stats: Value = client
        .get(format!("http://127.0.0.1:{port}/v1/admin/stats"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let allocated = client
        .post(format!("http://127.0.0.1:{port}/v1/allocate"))
        .bearer_auth(&lab)
        .header("X-Instruqt-Sandbox-ID", "newcomer")
        .header("X-Sandbox-Name-Prefix", "lab-dns-")
        .send()
        .await
        .unwrap();

    assert_eq!(stats["available"], 300, "{stats}");
    assert_eq!(allocated.status(), StatusCode::CREATED);
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
