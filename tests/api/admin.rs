//! Admin routes: import, list, stats, tracks, bulk delete.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use sandbox_broker::domain::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::{LAB_TOKEN, TestApp, error_of, json_of};

fn rows(ids: std::ops::Range<u64>, prefix: &str) -> Value {
    let rows: Vec<Value> = ids
        .map(|n| json!({"sandbox_id": n.to_string(), "name": format!("{prefix}{n:04}"), "external_id": format!("identity/accounts/u-{n}")}))
        .collect();
    json!({ "sandboxes": rows })
}

#[tokio::test]
async fn admin_routes_need_an_admin_token() {
    let app = TestApp::spawn().await;

    let missing = app
        .client
        .get(app.url("/v1/admin/stats"))
        .send()
        .await
        .unwrap();
    error_of(missing, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let lab = app
        .client
        .get(app.url("/v1/admin/stats"))
        .bearer_auth(LAB_TOKEN)
        .send()
        .await
        .unwrap();
    error_of(lab, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    let unknown = app
        .client
        .get(app.url("/v1/admin/stats"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    error_of(unknown, StatusCode::FORBIDDEN, "FORBIDDEN").await;
}

#[tokio::test]
async fn import_upserts_available_rows_and_skips_rows_in_other_states() {
    let app = TestApp::spawn().await;
    let first = json_of(app.import(&rows(1..4, "lab-")).await, StatusCode::OK).await;
    assert_eq!(first, json!({"imported": 3, "skipped": 0}));
    let allocated = json_of(app.allocate("stu").await, StatusCode::CREATED).await;

    // Any row but the allocated one (stores may hand rows out in any order).
    let other: u64 = (1..4)
        .find(|n| allocated["sandbox_id"] != n.to_string().as_str())
        .unwrap();
    let renamed = json!({"sandboxes": [
        {"sandbox_id": allocated["sandbox_id"], "name": "renamed", "external_id": "x/y"},
        {"sandbox_id": other, "name": "renamed-2", "external_id": "x/2", "sfdc_account_id": "001X"},
    ]});
    let second = json_of(app.import(&renamed).await, StatusCode::OK).await;

    assert_eq!(second, json!({"imported": 1, "skipped": 1}));
    let view = json_of(
        app.get_sandbox(allocated["sandbox_id"].as_str().unwrap(), "stu")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        view["name"], allocated["name"],
        "an allocated row is never touched by import"
    );
    let listed = json_of(
        app.admin_get("/v1/admin/sandboxes?name_prefix=renamed")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["sandboxes"][0]["sfdc_account_id"], "001X");
    assert_eq!(listed["sandboxes"][0]["status"], "available");
}

#[tokio::test]
async fn import_refuses_bad_bodies_with_clear_4xx() {
    let app = TestApp::spawn().await;
    let too_many = rows(0..1001, "lab-");
    let huge_name = json!({"sandboxes": [{"sandbox_id": "1", "name": "n".repeat(2 * 1024 * 1024), "external_id": "e"}]});
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (too_many, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        (
            huge_name,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            json!({"sandboxes": [{"sandbox_id": "1", "name": "a"}]}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (
            json!({"sandboxes": [{"sandbox_id": "", "name": "a", "external_id": "e"}]}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (
            json!({"sandboxes": [{"sandbox_id": "1\u{7}", "name": "a", "external_id": "e"}]}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (
            json!({"sandboxes": [{"sandbox_id": "1", "name": "a", "external_id": "e"}, {"sandbox_id": "1", "name": "b", "external_id": "f"}]}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (
            json!({"sandboxes": "nope"}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        ),
        (json!([]), StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
    ];
    for (body, status, code) in cases {
        let shown = body.to_string().chars().take(80).collect::<String>();
        let response = app.import(&body).await;
        assert_eq!(response.status(), status, "body {shown}");
        error_of(response, status, code).await;
    }
    let not_json = app
        .admin(Method::POST, "/v1/admin/sandboxes")
        .body("{nope")
        .send()
        .await
        .unwrap();
    error_of(not_json, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    assert_eq!(
        app.stats().await["total"],
        0,
        "a refused import writes nothing"
    );
}

#[tokio::test]
async fn following_cursors_visits_every_matching_row_exactly_once() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 120).await;
    for n in 0..7 {
        app.allocate(&format!("stu-{n}")).await;
    }
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/sandboxes?limit=50&cursor={c}"),
            None => "/v1/admin/sandboxes?limit=50".to_owned(),
        };
        let page = json_of(app.admin_get(&path).await, StatusCode::OK).await;
        pages += 1;
        let ids: Vec<String> = page["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sandbox_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(page["count"], ids.len());
        seen.extend(ids);
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 120);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        120,
        "a row was listed twice"
    );
}

#[tokio::test]
async fn list_filters_combine() {
    let app = TestApp::spawn().await;
    app.seed("lab-a-", 0, 5).await;
    app.seed("lab-b-", 100, 5).await;
    app.allocate_with(
        "stu-1",
        &[
            ("X-Sandbox-Name-Prefix", "lab-b-"),
            ("X-Instruqt-Track-ID", "dns"),
        ],
    )
    .await;
    app.allocate_with(
        "stu-2",
        &[
            ("X-Sandbox-Name-Prefix", "lab-a-"),
            ("X-Instruqt-Track-ID", "dns"),
        ],
    )
    .await;

    let count = |path: &'static str| {
        let app = &app;
        async move {
            json_of(app.admin_get(path).await, StatusCode::OK).await["count"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(count("/v1/admin/sandboxes?status=allocated").await, 2);
    assert_eq!(
        count("/v1/admin/sandboxes?status=available&name_prefix=lab-b-").await,
        4
    );
    assert_eq!(count("/v1/admin/sandboxes?student=stu-1").await, 1);
    assert_eq!(
        count("/v1/admin/sandboxes?track_name=dns&name_prefix=lab-a-").await,
        1
    );
    assert_eq!(count("/v1/admin/sandboxes?status=stale").await, 0);
    let never = json_of(
        app.admin_get("/v1/admin/sandboxes?status=available&limit=1")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(never["sandboxes"][0]["allocated_at"], Value::Null);
    assert_eq!(never["sandboxes"][0]["expires_at"], Value::Null);
}

#[tokio::test]
async fn stats_and_tracks_count_exactly() {
    // A still clock: the released sandbox is held exactly 0 s even when the
    // allocation and the release fall either side of a second boundary.
    let app = TestApp::builder()
        .clock(Arc::new(ManualClock::starting_now()))
        .spawn()
        .await;
    app.seed("lab-", 0, 10).await;
    for n in 0..3 {
        app.allocate_with(&format!("stu-{n}"), &[("X-Instruqt-Track-ID", "dns")])
            .await;
    }
    let held = json_of(
        app.allocate_with("stu-9", &[("X-Instruqt-Track-ID", "sec")])
            .await,
        StatusCode::CREATED,
    )
    .await;
    app.mark(held["sandbox_id"].as_str().unwrap(), "stu-9")
        .await;

    let stats = app.stats().await;
    let mut labs = json_of(app.admin_get("/v1/admin/tracks").await, StatusCode::OK).await;
    // Times to sandbox are measured, not counted: present, then set aside.
    for lab in labs["tracks"].as_array_mut().unwrap() {
        for percentile in [
            "time_to_sandbox_p50",
            "time_to_sandbox_p95",
            "time_to_sandbox_p99",
        ] {
            let seconds = lab.as_object_mut().unwrap().remove(percentile).unwrap();
            assert!(
                seconds.as_f64().is_some_and(|s| s >= 0.0),
                "{percentile}: {seconds}"
            );
        }
    }

    assert_eq!(
        stats,
        json!({"total": 10, "available": 6, "allocated": 3, "pending_deletion": 1, "stale": 0, "deletion_failed": 0, "deleted": 0, "quarantined": 0, "reserved": 0})
    );
    assert_eq!(
        labs,
        json!({"tracks": [
            {"track_name": "dns", "allocated": 3, "pending_deletion": 0, "deleted": 0, "total": 3, "released": 0, "mean_held_seconds": null, "exhausted": 0},
            {"track_name": "sec", "allocated": 0, "pending_deletion": 1, "deleted": 0, "total": 1, "released": 1, "mean_held_seconds": 0, "exhausted": 0},
        ]})
    );
}

#[tokio::test]
async fn bulk_delete_needs_a_removable_status_and_removes_only_it() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 5).await;
    app.allocate("stu").await;

    for bad in [
        "",
        "?status=",
        "?status=allocated",
        "?status=pending_deletion",
        "?status=everything",
    ] {
        let response = app
            .admin(Method::POST, &format!("/v1/admin/bulk-delete{bad}"))
            .send()
            .await
            .unwrap();
        error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    }
    assert_eq!(
        app.stats().await["total"],
        5,
        "a refused bulk delete removes nothing"
    );

    let response = app
        .admin(Method::POST, "/v1/admin/bulk-delete?status=available")
        .send()
        .await
        .unwrap();
    let body = json_of(response, StatusCode::OK).await;

    assert_eq!(body["status"], "completed");
    assert_eq!(body["deleted"], 4);
    assert!(body["duration_ms"].is_u64());
    assert_eq!(
        app.stats().await,
        json!({"total": 1, "available": 0, "allocated": 1, "pending_deletion": 0, "stale": 0, "deletion_failed": 0, "deleted": 0, "quarantined": 0, "reserved": 0})
    );
    error_of(
        app.allocate("stu-2").await,
        StatusCode::CONFLICT,
        "NO_SANDBOXES_AVAILABLE",
    )
    .await;
}
