//! Nothing is lost, on both stores: the service is killed (SIGKILL) with webhook events
//! pending — their receiver is down — and started again on the same store; once the
//! receiver is up, every event arrives, verified by the reference library, each id once.

use std::net::TcpListener;

use serde_json::{Value, json};

use crate::flavor::{ServicePlace, serve_command};
use crate::helpers::process::{import_over_http, start_until_listening};
use crate::helpers::{ADMIN_TOKEN, LAB_TOKEN};
use crate::webhooks::{Receiver, until_received};

fn serve(place: &ServicePlace) -> crate::helpers::process::Server {
    let mut command = serve_command(place);
    command
        .env("ALLOW_HTTP_UPSTREAMS", "true")
        .env("ALLOW_PRIVATE_WEBHOOKS", "true")
        .env("WEBHOOK_DISPATCH_INTERVAL_SEC", "0.2")
        // The killed instance may hold the dispatcher's lease: the next one takes over
        // once it runs out.
        .env("JOB_LEASE_SEC", "3");
    start_until_listening(command, "sandbox-broker listening")
}

async fn call(address: &str, path: &str, holder: Option<&str>, admin_body: Option<Value>) -> Value {
    let client = reqwest::Client::new();
    let request = match (holder, admin_body) {
        (Some(holder), _) => client
            .post(format!("{address}{path}"))
            .bearer_auth(LAB_TOKEN)
            .header("X-Instruqt-Sandbox-ID", holder),
        (None, Some(body)) => client
            .post(format!("{address}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body),
        (None, None) => client
            .post(format!("{address}{path}"))
            .bearer_auth(ADMIN_TOKEN),
    };
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_with_events_pending_loses_none_and_delivers_each_once() {
    let place = crate::flavor::service_place().await;
    // A port nobody listens at yet: the receiver comes up only after the crash.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = serve(&place);
    import_over_http(&server.address, 0..20).await;
    let made = call(
        &server.address,
        "/v1/admin/webhooks",
        None,
        Some(json!({"url": format!("http://127.0.0.1:{port}/hooks"), "events": ["sandbox.allocated", "sandbox.released"]})),
    )
    .await;
    let secret = made["secret"].as_str().unwrap().to_owned();
    for n in 0..10 {
        let got = call(
            &server.address,
            "/v1/allocate",
            Some(&format!("stu-{n}")),
            None,
        )
        .await;
        if n < 5 {
            let id = got["sandbox_id"].as_str().unwrap();
            call(
                &server.address,
                &format!("/v1/sandboxes/{id}/mark-for-deletion"),
                Some(&format!("stu-{n}")),
                None,
            )
            .await;
        }
    }
    // Let the dispatcher fan out and fail against the closed port, then kill it mid-way.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    drop(server);

    let receiver = Receiver::start_on(0, port);
    let again = serve(&place);
    let seen = until_received(&receiver, &[&secret], 15).await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let seen_after = receiver.verified(&[&secret]).await;
    assert_eq!(
        seen_after.len(),
        seen.len(),
        "nothing more arrived: each event once"
    );
    assert!(seen.iter().all(|d| d["verified_with"] == 0), "{seen:?}");
    let ids: std::collections::HashSet<&str> =
        seen.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 15, "15 events, each id once: {seen:?}");
    let count = |kind: &str| seen.iter().filter(|d| d["type"] == kind).count();
    assert_eq!(
        (count("sandbox.allocated"), count("sandbox.released")),
        (10, 5)
    );
    let shown: Value = reqwest::Client::new()
        .get(format!("{}/v1/admin/webhooks", again.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["webhooks"][0]["pending"], 0, "{shown}");
}
