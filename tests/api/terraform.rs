//! `terraform/` as a team would apply it: every file parses, `terraform fmt` and
//! `validate` pass where Terraform and its AWS provider are on the machine, checkov
//! (pinned, from PyPI) finds nothing, every skip says why, and every variable and output
//! is documented.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::tools::python_venv;

/// checkov, pinned: a new release adds checks, which should be a deliberate upgrade.
const CHECKOV: &str = "checkov==3.3.30";

fn module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform")
}

fn tf_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(module_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
        .collect();
    files.sort();
    files
}

/// Every `.tf` file parsed by python-hcl2 (checkov's parser), as JSON.
fn parsed(venv: &Path) -> Vec<(String, Value)> {
    let script = "import hcl2, json, sys\n\
                  print(json.dumps({f: hcl2.load(open(f)) for f in sys.argv[1:]}))";
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .args(tf_files())
        .output()
        .expect("run python-hcl2");
    assert!(
        output.status.success(),
        "a .tf file does not parse:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let all: serde_json::Map<String, Value> = serde_json::from_slice(&output.stdout).unwrap();
    all.into_iter().collect()
}

#[test]
fn every_file_parses_and_every_variable_and_output_is_documented() {
    let venv = python_venv(CHECKOV);
    let files = parsed(&venv);
    assert!(files.len() >= 10, "{} .tf files", files.len());
    let mut documented = 0;
    for (file, body) in &files {
        for kind in ["variable", "output"] {
            for block in body[kind].as_array().into_iter().flatten() {
                for (name, settings) in block.as_object().unwrap() {
                    let description = settings["description"][0].as_str().unwrap_or_default();
                    assert!(
                        description.len() >= 15,
                        "{kind} {name} in {file} has no real description"
                    );
                    documented += 1;
                }
            }
        }
    }
    assert!(documented >= 40, "only {documented} variables and outputs");
}

#[test]
fn terraform_formats_and_validates_the_module_where_it_and_the_provider_exist() {
    let Ok(version) = Command::new("terraform").arg("version").output() else {
        eprintln!(
            "terraform is not installed: fmt and validate not run (hcl2 parse and checkov still are)"
        );
        return;
    };
    assert!(version.status.success());
    let fmt = Command::new("terraform")
        .args(["fmt", "-check", "-diff"])
        .current_dir(module_dir())
        .output()
        .unwrap();
    assert!(
        fmt.status.success(),
        "terraform fmt -check:\n{}",
        String::from_utf8_lossy(&fmt.stdout)
    );
    // Validate a copy, so no .terraform directory or lock file lands in the repository.
    let copy = tempfile::tempdir().unwrap();
    for file in tf_files() {
        std::fs::copy(&file, copy.path().join(file.file_name().unwrap())).unwrap();
    }
    let plugins = std::env::var_os("TF_PLUGIN_DIR")
        .map_or_else(|| PathBuf::from("/opt/tf-plugins"), PathBuf::from);
    let mut init = Command::new("terraform");
    init.args(["init", "-backend=false", "-input=false", "-no-color"])
        .current_dir(copy.path());
    if plugins.is_dir() {
        init.arg(format!("-plugin-dir={}", plugins.display()));
    }
    let init = init.output().unwrap();
    if !init.status.success() {
        eprintln!(
            "the AWS provider cannot be had here (no registry, no plugin dir): validate not run\n{}",
            String::from_utf8_lossy(&init.stderr)
        );
        return;
    }
    let validate = Command::new("terraform")
        .args(["validate", "-no-color"])
        .current_dir(copy.path())
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "terraform validate:\n{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
}

#[test]
fn checkov_passes_and_every_skip_says_why() {
    let venv = python_venv(CHECKOV);
    let output = Command::new(venv.join("bin/checkov"))
        .args(["--directory"])
        .arg(module_dir())
        .args([
            "--framework",
            "terraform",
            "--output",
            "json",
            "--quiet",
            "--compact",
        ])
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .expect("run checkov");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "checkov did not print JSON ({err}):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let results = &report["results"];
    let failed: Vec<String> = results["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["check_name"]))
        .collect();
    assert!(failed.is_empty(), "checkov fails:\n{}", failed.join("\n"));
    assert!(output.status.success(), "checkov exit {:?}", output.status);
    assert!(
        report["summary"]["passed"].as_u64().unwrap() >= 100,
        "{}",
        report["summary"]
    );
    for skip in results["skipped_checks"].as_array().into_iter().flatten() {
        let reason = skip["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reason.split_whitespace().count() >= 8,
            "{} on {} is skipped without a reason: {reason:?}",
            skip["check_id"],
            skip["resource"]
        );
    }
}

/// Settings the module sets itself (or takes as secrets), so `settings` refuses them.
const SET_BY_THE_MODULE: [&str; 21] = [
    "BROKER_STORE",
    "DDB_TABLE_NAME",
    "AWS_REGION",
    "BROKER_LISTEN_ADDR",
    "TRUSTED_PROXIES",
    "LOG_FORMAT",
    "LAB_DURATION_HOURS",
    "NIOSXAAS_ENABLED",
    "NIOSXAAS_SHADOW_MODE",
    "NIOSXAAS_SERVICE_NAME",
    "BROKER_API_TOKEN",
    "BROKER_ADMIN_TOKEN",
    "CSP_API_TOKEN",
    "METRICS_TOKEN",
    "NIOSXAAS_EMAIL",
    "NIOSXAAS_PASSWORD",
    // Not for a fleet on AWS: each task names itself; no plain-HTTP upstreams; no local
    // table or data directory.
    "INSTANCE_ID",
    "ALLOW_HTTP_UPSTREAMS",
    "DDB_ENDPOINT_URL",
    "BROKER_DATA_DIR",
    "SIMULATOR_LISTEN_ADDR",
];

#[test]
fn the_settings_map_takes_every_documented_setting_the_module_does_not_set() {
    let variables = std::fs::read_to_string(module_dir().join("variables.tf")).unwrap();
    let block = variables
        .split("variable \"settings\"")
        .nth(1)
        .and_then(|rest| rest.split("], name)").next())
        .and_then(|rest| rest.split("contains([").nth(1))
        .expect("the settings variable validates its names with contains([...], name)");
    let allowed: std::collections::BTreeSet<String> = block
        .split(',')
        .map(|name| name.trim().trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    let expected: std::collections::BTreeSet<String> = crate::env_example::example_variables()
        .into_keys()
        .filter(|name| !SET_BY_THE_MODULE.contains(&name.as_str()))
        .collect();
    assert_eq!(
        allowed, expected,
        "terraform's settings allowlist and .env.example"
    );
    // What the module sets itself, it sets (or takes from a secret) in the task definition.
    let ecs = std::fs::read_to_string(module_dir().join("ecs.tf")).unwrap();
    for name in &SET_BY_THE_MODULE[..16] {
        assert!(
            ecs.contains(&format!("\"{name}\"")),
            "ecs.tf does not set {name}"
        );
    }
}
