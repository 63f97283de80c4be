//! The OpenAPI document against the live service: schemathesis (from PyPI, cached under
//! `target/`) generates requests for every operation — valid, edge-case and malformed —
//! and checks that no answer is a status the document does not declare, breaks its
//! schema or content type, or is a server error.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::csp::{account, csp, use_csp};
use crate::helpers::{ADMIN_TOKEN, LAB_TOKEN, TestApp};

/// The pinned schemathesis release.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The checks docs/api.md promises: documented statuses, schema, content type, headers,
/// and no 5xx for any request.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";

/// The schemathesis binary, installed on first use.
fn schemathesis() -> PathBuf {
    crate::helpers::tools::python_venv(SCHEMATHESIS).join("bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_undocumented_status_and_no_answer_breaking_the_schema() {
    let binary = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    // A provider that lists sandboxes and deletes any, so sync and cleanup can succeed.
    let provider = csp(
        (1..=50)
            .map(|n| account(n, &format!("lab-csp-{n}")))
            .collect(),
        Duration::ZERO,
    )
    .await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .config(|c| use_csp(c, &provider))
        .spawn()
        .await;
    app.seed("lab-", 0, 200).await;
    let spec = app.url("/v1/openapi.json");
    let workdir = tempfile::tempdir().unwrap();

    for (tag, token) in [
        ("track", LAB_TOKEN),
        ("admin", ADMIN_TOKEN),
        ("ops", "none"),
    ] {
        let (binary, spec, dir) = (binary.clone(), spec.clone(), workdir.path().to_owned());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .args(["run", &spec, "--checks", CHECKS, "--include-tag", tag])
                .args(["--max-examples", "30", "--seed", "20261202"])
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .current_dir(dir)
                .env("NO_COLOR", "1")
                .output()
                .expect("run schemathesis")
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "schemathesis on the {tag} routes:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
