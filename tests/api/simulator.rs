//! `sandbox-broker simulate-provider`, the compose file's stand-in CSP, as a real process:
//! a broker syncs its demo pool over HTTP, and a released sandbox is deleted there.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::csp::{cleanup, sync};
use crate::helpers::process::{BINARY, Server, start_until_listening};
use crate::helpers::{TestApp, json_of};

const TOKEN: &str = "simulator-token-for-tests";

/// Starts the simulator on a free port; killed when the test ends.
fn start_simulator() -> Server {
    let mut command = Command::new(BINARY);
    command
        .arg("simulate-provider")
        .env_clear()
        .env("SIMULATOR_LISTEN_ADDR", "127.0.0.1:0")
        .env("CSP_API_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    start_until_listening(command, "simulated provider listening")
}

/// Every account the simulator lists, page by page (it answers at most 100 a page).
async fn listed(simulator: &Server) -> Vec<Value> {
    let mut accounts: Vec<Value> = Vec::new();
    loop {
        let body: Value = reqwest::Client::new()
            .get(format!(
                "{}/v2/current_user/accounts?_offset={}&_limit=1000",
                simulator.address,
                accounts.len()
            ))
            .header("Authorization", format!("Token {TOKEN}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = body["results"].as_array().unwrap();
        assert!(page.len() <= 100, "pages are capped: {}", page.len());
        if page.is_empty() {
            return accounts;
        }
        accounts.extend(page.iter().cloned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_syncs_from_the_simulator_process_and_deletes_there() {
    let simulator = start_simulator();
    let client = reqwest::Client::new();
    let refused = client
        .get(format!("{}/v2/current_user/accounts", simulator.address))
        .header("Authorization", "Token wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let base = format!("{}/v2", simulator.address);
    let app = TestApp::builder()
        .config(|c| {
            c.csp.csp_base_url = base;
            c.csp.csp_api_token = Some(TOKEN.into());
            c.jobs.sync_interval = Duration::from_secs(3600);
            c.jobs.cleanup_interval = Duration::from_secs(3600);
        })
        .spawn()
        .await;

    let synced = json_of(sync(&app).await, StatusCode::OK).await;
    assert_eq!(
        (synced["synced"].as_u64(), synced["skipped"].as_u64()),
        (Some(300), Some(0))
    );
    let held = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    let id = held["sandbox_id"].as_str().unwrap().to_owned();
    app.mark(&id, "stu-1").await;
    let cleaned = cleanup(&app).await;
    assert_eq!(
        (cleaned["deleted"].as_u64(), cleaned["failed"].as_u64()),
        (Some(1), Some(0))
    );

    // The account is gone at the provider (its listing also turned over by one, as the
    // simulator does on every listing after the first).
    let accounts = listed(&simulator).await;
    assert!(
        !accounts
            .iter()
            .any(|a| a["csp_id"].as_u64() == id.parse().ok())
    );
    assert_eq!(accounts.len(), 299);
    assert!(
        accounts
            .iter()
            .all(|a| a["account_type"] == "sandbox" && a["state"] == "active")
    );
}
