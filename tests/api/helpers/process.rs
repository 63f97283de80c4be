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
