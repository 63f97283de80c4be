//! The real binary as a child process, for the tests that run it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_sandbox-broker");

/// A running `sandbox-broker` subcommand (`serve`, `simulate-provider`) that logs JSON
/// on stdout; killed and waited for when the test ends, however it ends.
pub struct Server {
    pub child: Child,
    /// `http://` and the address its "listening" line named.
    pub address: String,
    pub lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` (stdout piped) and waits for the JSON log line whose message is
/// `listening`, which carries the address.
pub fn start_until_listening(mut command: Command, listening: &str) -> Server {
    let (sender, lines) = mpsc::channel();
    // Owned by the guard at once, so every path below kills and waits for it.
    let mut server = Server {
        child: command.spawn().expect("spawn sandbox-broker"),
        address: String::new(),
        lines,
    };
    let stdout = server.child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = server
            .lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {listening:?} line: it did not start"));
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        if event["message"] == listening {
            server.address = format!("http://{}", event["address"].as_str().unwrap());
            return server;
        }
    }
}

/// How a command that ends by itself ended, and what it printed.
pub struct Exited {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end; one still running after two minutes is killed and fails
/// the test instead of hanging the suite.
pub fn run_to_end(mut command: Command) -> Exited {
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run sandbox-broker");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sandbox-broker") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sandbox-broker did not exit within two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The binary on the embedded store in `dir`, with the test tokens, JSON logs on stdout and
/// no rate limit in the way.
pub fn on_embedded(args: &[&str], dir: &std::path::Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("BROKER_STORE", "embedded")
        .env("BROKER_DATA_DIR", dir)
        .env("BROKER_LISTEN_ADDR", "127.0.0.1:0")
        .env("BROKER_API_TOKEN", super::LAB_TOKEN)
        .env("BROKER_ADMIN_TOKEN", super::ADMIN_TOKEN)
        .env("RATE_LIMIT_PER_SEC", "100000")
        .env("RATE_LIMIT_BURST", "100000")
        .env("LOG_FORMAT", "json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    command
}

/// The items of the export at `path` by key, after checking the whole file.
pub fn export_items(
    path: &std::path::Path,
) -> std::collections::BTreeMap<String, sandbox_broker::store::backup::BackupItem> {
    use sandbox_broker::store::backup::ExportReader;
    let file = std::fs::File::open(path).expect("open the export");
    let mut export = ExportReader::open(BufReader::new(file)).expect("an export header");
    let mut items = std::collections::BTreeMap::new();
    while let Some(item) = export.next_item().expect("a good export") {
        items.insert(item.key(), item);
    }
    items
}

/// Starts `command` (a restore), waits for its first progress line and kills it with
/// SIGKILL; fails unless it was still running.
pub fn kill_after_first_progress(mut command: std::process::Command) {
    command.stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("the restore ended before its first progress line")
            .unwrap();
        if line.starts_with("restored ") {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal, mid-way");
}

/// Writes an export of `count` available rows to `path`, as the `export` command would.
pub fn write_export_of_rows(path: &std::path::Path, count: u64) {
    use sandbox_broker::domain::time::EpochSecs;
    use sandbox_broker::domain::{ExternalId, NewSandbox, SandboxId, SandboxName};
    use sandbox_broker::store::backup::{BackupItem, Consistency, Export, ExportWriter};
    let header = Export::header("embedded", Consistency::Snapshot, EpochSecs::new(1), count);
    let mut out = ExportWriter::header_line(&header).unwrap();
    let mut writer = ExportWriter::default();
    for n in 0..count {
        let row = NewSandbox {
            sandbox_id: SandboxId::parse("id", &format!("{n:07}")).unwrap(),
            name: SandboxName::parse("name", &format!("lab-{n:07}")).unwrap(),
            external_id: ExternalId::parse("ext", &format!("identity/accounts/{n}")).unwrap(),
            sfdc_account_id: None,
        };
        let item = BackupItem::Sandbox(row.into_available_row(EpochSecs::new(1_700_000_000)));
        writer.item(&item, &mut out).unwrap();
    }
    out.extend(writer.finish().unwrap());
    std::fs::write(path, out).unwrap();
}

/// Imports rows `ids` (`{n:06}`, named `lab-{n:06}`) through the admin API of the server
/// at `address`, 1,000 a request.
pub async fn import_over_http(address: &str, ids: std::ops::Range<u64>) {
    let client = reqwest::Client::new();
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(1000) {
        let rows: Vec<Value> = chunk
            .iter()
            .map(|n| serde_json::json!({"sandbox_id": format!("{n:06}"), "name": format!("lab-{n:06}"), "external_id": format!("identity/accounts/{n}")}))
            .collect();
        let response = client
            .post(format!("{address}/v1/admin/sandboxes"))
            .bearer_auth(super::ADMIN_TOKEN)
            .json(&serde_json::json!({"sandboxes": rows}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
    }
}
