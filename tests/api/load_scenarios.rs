//! The k6 load scenarios (k6/): each one parses as the ES module k6 loads, declares
//! latency and error thresholds, and takes its target and tokens from the environment.
//! k6 itself does not run here; Node parses the same JavaScript.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The scenarios users know, by file.
const SCENARIOS: [&str; 4] = [
    "class-start.js",
    "lab-day.js",
    "pool-exhaustion.js",
    "fleet.js",
];

fn k6_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("k6").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Node's verdict on `source` parsed as an ES module: `Err` with its message.
fn parse_as_module(source: &str) -> Result<(), String> {
    let mut node = Command::new("node")
        .args(["--input-type=module", "--check"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is needed to check the k6 scenarios (it also fetches DynamoDB Local)");
    node.stdin
        .take()
        .expect("piped stdin")
        .write_all(source.as_bytes())
        .expect("write to node");
    let output = node.wait_with_output().expect("node runs");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn every_scenario_and_the_shared_library_parse() {
    for name in SCENARIOS.iter().chain(&["lib.js"]) {
        if let Err(message) = parse_as_module(&k6_file(name)) {
            panic!("k6/{name} does not parse:\n{message}");
        }
    }
}

#[test]
fn the_parse_check_catches_a_broken_script() {
    assert!(parse_as_module("export default function () { http.get( }").is_err());
}

#[test]
fn every_scenario_has_thresholds_and_reads_its_target_from_the_environment() {
    let library = k6_file("lib.js");
    for variable in [
        "__ENV.BASE_URLS",
        "__ENV.BASE_URL",
        "__ENV.TRACK_TOKEN",
        "__ENV.ADMIN_TOKEN",
    ] {
        assert!(
            library.contains(variable),
            "lib.js does not read {variable}"
        );
    }
    assert!(
        !library.contains("change-me"),
        "no token is written into the scripts"
    );
    for name in SCENARIOS {
        let script = k6_file(name);
        assert!(script.contains("from './lib.js'"), "{name} shares lib.js");
        let thresholds = script
            .split("thresholds:")
            .nth(1)
            .unwrap_or_else(|| panic!("{name} declares no thresholds"));
        assert!(
            thresholds.contains("http_req_duration"),
            "{name}: a latency threshold"
        );
        assert!(
            thresholds.contains("http_req_failed") || thresholds.contains("status:500"),
            "{name}: an error threshold"
        );
        assert!(thresholds.contains("checks"), "{name}: a checks threshold");
    }
}

#[test]
fn the_class_start_sends_twin_requests_and_checks_one_sandbox_per_student() {
    let class = k6_file("class-start.js");
    assert!(
        class.contains("http.batch"),
        "a share retries the same request at once"
    );
    assert!(class.contains("the same sandbox"));
    assert!(class.contains("checkOneSandboxPerStudent"));
    let fleet = k6_file("fleet.js");
    assert!(
        fleet.contains("bases[(__VU + 1) % bases.length]"),
        "twins go to two instances"
    );
}
