//! Admin controls for a bad day, each in the append-only action log: releasing any
//! student's sandbox, quarantine (and its way out), cordons, and the log itself. On both
//! stores, black-box over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, error_of, json_of};

async fn release(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.admin(Method::POST, &format!("/v1/admin/sandboxes/{id}/release"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn action_log(app: &TestApp, query: &str) -> Value {
    json_of(
        app.admin_get(&format!("/v1/admin/actions{query}")).await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn an_admin_releases_any_students_sandbox_with_a_reason_and_the_log_says_who_and_why() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 2).await;
    let held = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    let id = held["sandbox_id"].as_str().unwrap().to_owned();

    let no_reason = release(&app, &id, json!({})).await;
    let refused = error_of(no_reason, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert!(
        refused["message"].as_str().unwrap().contains("reason"),
        "{refused}"
    );
    let blank = release(&app, &id, json!({"reason": "   "})).await;
    error_of(blank, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let unknown = release(&app, "999999", json!({"reason": "x"})).await;
    error_of(unknown, StatusCode::NOT_FOUND, "SANDBOX_NOT_FOUND").await;
    assert_eq!(
        app.stats().await["allocated"],
        1,
        "a refused release changes nothing"
    );

    let released = release(
        &app,
        &id,
        json!({"reason": "student reported a broken account"}),
    )
    .await;
    let released = json_of(released, StatusCode::OK).await;
    assert_eq!(released["status"], "pending_deletion", "{released}");
    let again = release(&app, &id, json!({"reason": "twice"})).await;
    let conflict = error_of(again, StatusCode::CONFLICT, "NOT_ALLOCATED").await;
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("pending_deletion"),
        "{conflict}"
    );

    // The student's key is free again: their next start gets a new sandbox.
    let next = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    assert_ne!(next["sandbox_id"], id.as_str());

    let log = action_log(&app, "").await;
    let entry = &log["actions"][0];
    assert_eq!(entry["action"], "admin.release", "{log}");
    assert_eq!(entry["target"], id.as_str());
    assert_eq!(entry["reason"], "student reported a broken account");
    assert_eq!(entry["detail"], "released from stu-1");
    let actor = entry["actor"].as_str().unwrap();
    assert!(actor.starts_with("admin:") && actor.len() == 18, "{actor}");
    assert!(
        !log.to_string().contains(ADMIN_TOKEN),
        "the token is never logged"
    );
    assert!(entry["at"].as_i64().unwrap() > 0);
    assert_eq!(
        log["actions"].as_array().unwrap().len(),
        1,
        "refusals are not actions"
    );
}

#[tokio::test]
async fn every_admin_write_is_recorded_and_the_log_pages_newest_first() {
    let app = TestApp::spawn().await;
    let rows: Vec<Value> = (1..=3)
        .map(|n| json!({"sandbox_id": n.to_string(), "name": format!("lab-{n}"), "external_id": format!("x/{n}")}))
        .collect();
    let imported = app.import(&json!({ "sandboxes": rows })).await;
    json_of(imported, StatusCode::OK).await; // the first entry
    for path in [
        "/v1/admin/expire",
        "/v1/admin/audit",
        "/v1/admin/auto-delete-stale?grace_period_hours=1",
        "/v1/admin/bulk-delete?status=stale",
    ] {
        let done = app.admin(Method::POST, path).send().await.unwrap();
        json_of(done, StatusCode::OK).await;
    }
    // Reads are not writes.
    app.stats().await;
    action_log(&app, "").await;

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = action_log(&app, &query).await;
        let entries = page["actions"].as_array().unwrap();
        assert!(entries.len() <= 2);
        seen.extend(
            entries
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_owned()),
        );
        match page["cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "admin.bulk_delete",
            "admin.auto_delete_stale",
            "admin.audit",
            "admin.expire",
            "admin.import_sandboxes",
        ],
        "newest first, each once"
    );
    let first = action_log(&app, "?limit=100").await;
    let bulk = &first["actions"][0];
    assert_eq!(
        (&bulk["target"], &bulk["detail"]),
        (&json!("status=stale"), &json!("deleted 0"))
    );
    let import = &first["actions"][4];
    assert_eq!(import["detail"], "imported 3, skipped 0");

    for bad in ["?limit=0", "?limit=101", "?cursor=not-ours"] {
        let refused = app.admin_get(&format!("/v1/admin/actions{bad}")).await;
        error_of(refused, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    }
}

async fn post_reason(app: &TestApp, path: &str, reason: &str) -> reqwest::Response {
    app.admin(Method::POST, path)
        .json(&json!({ "reason": reason }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_quarantined_sandbox_leaves_the_pool_stays_visible_and_returns_only_if_never_used() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 2).await;
    let stats = app.stats().await;
    assert_eq!(
        (stats["available"].as_u64(), stats["quarantined"].as_u64()),
        (Some(2), Some(0))
    );
    let list = json_of(
        app.admin_get("/v1/admin/sandboxes?status=available").await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<String> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["sandbox_id"].as_str().unwrap().to_owned())
        .collect();
    let (suspect, other) = (&ids[0], &ids[1]);

    let path = |verb: &str, id: &str| format!("/v1/admin/sandboxes/{id}/{verb}");
    let quarantined = post_reason(&app, &path("quarantine", suspect), "odd sign-ins").await;
    let quarantined = json_of(quarantined, StatusCode::OK).await;
    assert_eq!(quarantined["status"], "quarantined", "{quarantined}");
    let stats = app.stats().await;
    assert_eq!(
        (stats["available"].as_u64(), stats["quarantined"].as_u64()),
        (Some(1), Some(1))
    );
    let listed = json_of(
        app.admin_get("/v1/admin/sandboxes?status=quarantined")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["sandboxes"][0]["sandbox_id"], suspect.as_str());
    // Students never get it: the pool holds one sandbox now.
    let first = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    assert_eq!(first["sandbox_id"], other.as_str());
    error_of(
        app.allocate("stu-2").await,
        StatusCode::CONFLICT,
        "NO_SANDBOXES_AVAILABLE",
    )
    .await;
    // Twice, or an allocated one: refused, nothing changed.
    let again = post_reason(&app, &path("quarantine", suspect), "again").await;
    error_of(again, StatusCode::CONFLICT, "NOT_QUARANTINABLE").await;
    let held = post_reason(&app, &path("quarantine", other), "held").await;
    error_of(held, StatusCode::CONFLICT, "NOT_QUARANTINABLE").await;
    let not_quarantined = post_reason(&app, &path("unquarantine", other), "x").await;
    error_of(not_quarantined, StatusCode::CONFLICT, "NOT_QUARANTINED").await;

    // Never handed out: it returns, and the waiting student gets it.
    let back = post_reason(&app, &path("unquarantine", suspect), "checked: fine").await;
    assert_eq!(json_of(back, StatusCode::OK).await["status"], "available");
    let second = json_of(app.allocate("stu-2").await, StatusCode::CREATED).await;
    assert_eq!(second["sandbox_id"], suspect.as_str());

    let log = action_log(&app, "").await;
    let recorded: Vec<(String, String)> = log["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [
            ("admin.unquarantine".to_owned(), "checked: fine".to_owned()),
            ("admin.quarantine".to_owned(), "odd sign-ins".to_owned()),
        ]
    );
}

async fn allocate_from(app: &TestApp, holder: &str, prefix: &str) -> reqwest::Response {
    app.allocate_with(holder, &[("X-Sandbox-Name-Prefix", prefix)])
        .await
}

#[tokio::test]
async fn a_cordon_pauses_new_allocations_there_keeps_replays_and_lifts_cleanly() {
    let app = TestApp::spawn().await;
    app.seed("lab-a-", 0, 3).await;
    app.seed("lab-b-", 100, 3).await;
    let held = json_of(
        allocate_from(&app, "stu-held", "lab-a-").await,
        StatusCode::CREATED,
    )
    .await;
    let done = json_of(
        allocate_from(&app, "stu-done", "lab-a-").await,
        StatusCode::CREATED,
    )
    .await;
    let done = done["sandbox_id"].as_str().unwrap();
    json_of(app.mark(done, "stu-done").await, StatusCode::OK).await;

    let refused = app
        .admin(Method::POST, "/v1/admin/cordon")
        .json(&json!({"reason": "x"}));
    let refused = refused.send().await.unwrap();
    error_of(refused, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let no_reason = app
        .admin(Method::POST, "/v1/admin/cordon")
        .json(&json!({"name_prefix": "lab-a-"}));
    error_of(
        no_reason.send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
    )
    .await;

    let placed = app
        .admin(Method::POST, "/v1/admin/cordon")
        .json(&json!({"name_prefix": "lab-a-", "reason": "fixing the lab-a accounts"}));
    let cordon = json_of(placed.send().await.unwrap(), StatusCode::CREATED).await;
    let id = cordon["id"].as_str().unwrap().to_owned();
    assert!(cordon["actor"].as_str().unwrap().starts_with("admin:"));

    // New students of lab-a are paused, with the reason and a Retry-After.
    let paused = allocate_from(&app, "stu-new", "lab-a-").await;
    assert!(paused.headers().contains_key("retry-after"));
    let paused = error_of(paused, StatusCode::SERVICE_UNAVAILABLE, "CORDONED").await;
    assert!(
        paused["message"]
            .as_str()
            .unwrap()
            .contains("fixing the lab-a accounts"),
        "{paused}"
    );
    // The student who holds a lab-a sandbox gets it back; other prefixes are served.
    let replay = json_of(
        allocate_from(&app, "stu-held", "lab-a-").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(replay["sandbox_id"], held["sandbox_id"]);
    // A student whose sandbox was released holds nothing there: paused like a new one.
    let released = allocate_from(&app, "stu-done", "lab-a-").await;
    error_of(released, StatusCode::SERVICE_UNAVAILABLE, "CORDONED").await;
    json_of(
        allocate_from(&app, "stu-b", "lab-b-").await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        app.stats().await["allocated"],
        2,
        "nothing allocated while paused"
    );

    let listed = json_of(app.admin_get("/v1/admin/cordon").await, StatusCode::OK).await;
    assert_eq!(listed["cordons"][0]["id"], id.as_str());
    assert_eq!(listed["cordons"][0]["name_prefix"], "lab-a-");

    let lifted = app
        .admin(Method::DELETE, &format!("/v1/admin/cordon/{id}"))
        .send()
        .await
        .unwrap();
    json_of(lifted, StatusCode::OK).await;
    let gone = app
        .admin(Method::DELETE, &format!("/v1/admin/cordon/{id}"))
        .send()
        .await
        .unwrap();
    error_of(gone, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    json_of(
        allocate_from(&app, "stu-new", "lab-a-").await,
        StatusCode::CREATED,
    )
    .await;

    let log = action_log(&app, "").await;
    let actions: Vec<&str> = log["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["admin.uncordon", "admin.cordon"]);
}

async fn in_lab(app: &TestApp, holder: &str) -> reqwest::Response {
    app.allocate_with(holder, &[("X-Instruqt-Track-ID", "dns")])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_cordoned_on_one_instance_is_paused_on_the_others_within_five_seconds() {
    let (stores, guard) = crate::flavor::fleet_stores(2).await;
    let mut fleet = Vec::new();
    for store in stores {
        fleet.push(
            crate::helpers::TestApp::builder()
                .store(store, Box::new(()))
                .spawn()
                .await,
        );
    }
    let _guard = guard;
    fleet[0].seed("lab-", 0, 40).await;
    // The other instance has read (and keeps for a moment) the cordons: none.
    json_of(in_lab(&fleet[1], "stu-1").await, StatusCode::CREATED).await;
    let placed = fleet[0]
        .admin(Method::POST, "/v1/admin/cordon")
        .json(&json!({"track_name": "dns", "reason": "maintenance"}));
    json_of(placed.send().await.unwrap(), StatusCode::CREATED).await;
    // At once where it was placed.
    error_of(
        in_lab(&fleet[0], "stu-2").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "CORDONED",
    )
    .await;
    // On the other instance within its 5 s refresh: fresh students until one is paused.
    let started = std::time::Instant::now();
    for attempt in 0.. {
        let sent_after = started.elapsed();
        let answer = in_lab(&fleet[1], &format!("stu-late-{attempt}")).await;
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            error_of(answer, StatusCode::SERVICE_UNAVAILABLE, "CORDONED").await;
            break;
        }
        assert_eq!(answer.status(), StatusCode::CREATED);
        // Served although sent more than 5 s after the cordon was placed: too late.
        assert!(
            sent_after <= std::time::Duration::from_millis(5_500),
            "the cordon had not reached the other instance {sent_after:?} after it was placed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_retired_quarantined_sandbox_is_deleted_at_the_provider_and_never_served() {
    let provider = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("DELETE"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .expect(1)
        .mount(&provider)
        .await;
    let app = crate::helpers::TestApp::builder()
        .config(|c| crate::helpers::csp::use_csp(c, &provider))
        .spawn()
        .await;
    app.seed("lab-", 700, 2).await;
    let (suspect, other) = ("701", "702");
    let path = |verb: &str, id: &str| format!("/v1/admin/sandboxes/{id}/{verb}");

    // Only a quarantined sandbox is retired; a reason is required.
    let not_quarantined = post_reason(&app, &path("retire", other), "x").await;
    error_of(not_quarantined, StatusCode::CONFLICT, "NOT_QUARANTINED").await;
    json_of(
        post_reason(&app, &path("quarantine", suspect), "odd sign-ins").await,
        StatusCode::OK,
    )
    .await;
    let no_reason = app
        .admin(Method::POST, &path("retire", suspect))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    error_of(no_reason, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;

    let retired = post_reason(&app, &path("retire", suspect), "not ours").await;
    let retired = json_of(retired, StatusCode::OK).await;
    assert_eq!(retired["status"], "pending_deletion", "{retired}");
    let stats = app.stats().await;
    assert_eq!(
        (
            stats["quarantined"].as_u64(),
            stats["pending_deletion"].as_u64(),
            stats["available"].as_u64()
        ),
        (Some(0), Some(1), Some(1))
    );

    // The cleanup job deletes it at the provider like a released one.
    let report = crate::helpers::csp::cleanup(&app).await;
    assert_eq!(report["deleted"], 1, "{report}");
    let deleted: Vec<String> = provider
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(deleted, [format!("/v2/sandbox/accounts/uuid-{suspect}")]);
    assert_eq!(app.stats().await["deleted"], 1);
    // The pool keeps the other one only: the retired account is never served.
    let first = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    assert_eq!(first["sandbox_id"], other);
    error_of(
        app.allocate("stu-2").await,
        StatusCode::CONFLICT,
        "NO_SANDBOXES_AVAILABLE",
    )
    .await;

    let log = action_log(&app, "").await;
    let recorded: Vec<_> = log["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (&a["action"], &a["target"], &a["reason"]))
        .collect();
    assert_eq!(
        recorded[..2],
        [
            (&json!("admin.cleanup"), &Value::Null, &Value::Null),
            (&json!("admin.retire"), &json!(suspect), &json!("not ours")),
        ],
        "{log}"
    );
}

#[tokio::test]
async fn an_admin_write_the_log_cannot_record_stands_and_is_counted() {
    let (inner, guard) = crate::helpers::fresh_store().await;
    let store = std::sync::Arc::new(crate::helpers::doubles::GatedStore {
        inner,
        entered: tokio::sync::Notify::new(),
        gate: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
        refuse_actions: true,
    });
    let app = crate::helpers::TestApp::builder()
        .store(store.shared(), guard)
        .spawn()
        .await;
    app.seed("lab-", 0, 1).await;
    let held = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    let id = held["sandbox_id"].as_str().unwrap().to_owned();

    let released = release(&app, &id, json!({"reason": "broken"})).await;
    assert_eq!(
        json_of(released, StatusCode::OK).await["status"],
        "pending_deletion",
        "the write stands"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("broker_admin_actions_unrecorded_total 1"),
        "{metrics}"
    );
}
