//! Reservations for scheduled classes, black-box on both stores: the routes, the 409 with
//! the shortfall, a lab drawing on its own sandboxes first while no other lab can take
//! them, what is unused returning at the end or on delete, and one reservation serving a
//! class spread over a fleet of three instances.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use sandbox_broker::domain::clock::{Clock, ManualClock};
use sandbox_broker::domain::now_epoch;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, fleet, json_of};

async fn reserve(app: &TestApp, body: Value) -> reqwest::Response {
    app.admin(Method::POST, "/v1/admin/reservations")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A class of `count` for `lab` starting in ten minutes (inside the 30-minute lead, so it
/// holds at once) and ending in an hour, on `now`.
fn class(lab: &str, count: u64, now: i64) -> Value {
    json!({"track_name": lab, "count": count, "starts_at": now + 600, "ends_at": now + 3600})
}

/// The reservation `id` as `GET /v1/admin/reservations` shows it.
async fn listed(app: &TestApp, id: &str) -> Value {
    let all = json_of(
        app.admin_get("/v1/admin/reservations").await,
        StatusCode::OK,
    )
    .await;
    all["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits (up to ten seconds) until `check` holds of the reservation `id` as listed.
async fn until_listed(app: &TestApp, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let view = listed(app, id).await;
        if check(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "reservation {id} never got there: {}",
        listed(app, id).await
    );
}

/// Every student of `students` (holder, lab) allocates at once, request `n` on instance
/// `n % len`; the status and sandbox id of each, in order.
async fn class_start(
    apps: &[TestApp],
    students: Vec<(String, String)>,
) -> Vec<(String, StatusCode, Value)> {
    futures::stream::iter(students.into_iter().enumerate())
        .map(|(n, (holder, lab))| {
            let app = &apps[n % apps.len()];
            async move {
                let response = app
                    .allocate_with(&holder, &[("X-Instruqt-Track-ID", lab.as_str())])
                    .await;
                let status = response.status();
                (lab, status, response.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

fn students(lab: &str, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|n| (format!("{lab}-stu-{n}"), lab.to_owned()))
        .collect()
}

/// (201s, 409s) of `lab`, failing on any other answer.
fn tally(answers: &[(String, StatusCode, Value)], lab: &str) -> (usize, usize) {
    let mine: Vec<_> = answers.iter().filter(|(l, _, _)| l == lab).collect();
    for (_, status, body) in &mine {
        assert!(
            *status == StatusCode::CREATED || *status == StatusCode::CONFLICT,
            "{lab}: {status} {body}"
        );
    }
    let created = mine
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::CREATED)
        .count();
    (created, mine.len() - created)
}

/// No sandbox went to two students.
fn each_once(answers: &[(String, StatusCode, Value)]) {
    let ids: Vec<&str> = answers
        .iter()
        .filter(|(_, status, _)| *status == StatusCode::CREATED)
        .map(|(_, _, body)| body["sandbox_id"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "a sandbox handed out twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_holds_its_labs_sandboxes_refuses_what_does_not_fit_and_reports_its_use() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 10).await;
    let now = now_epoch();

    let made = json_of(
        reserve(&app, class("lab-a", 6, now)).await,
        StatusCode::CREATED,
    )
    .await;
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("res_"), "{made}");
    assert_eq!(made["status"], "holding");
    assert_eq!(
        (made["count"].as_u64(), made["holds_from"].as_i64()),
        (Some(6), Some(now + 600 - 1800))
    );

    let short = reserve(&app, class("lab-b", 5, now)).await;
    let body = error_of(short, StatusCode::CONFLICT, "RESERVATION_SHORT").await;
    assert_eq!(body["shortfall"], 1, "{body}");
    let later =
        json!({"track_name": "lab-b", "count": 5, "starts_at": now + 7200, "ends_at": now + 9000});
    let fits = json_of(reserve(&app, later).await, StatusCode::CREATED).await;
    assert_eq!(
        fits["status"], "scheduled",
        "it does not overlap the class: it fits"
    );

    for (bad, field) in [
        (
            json!({"track_name": "lab-b", "count": 0, "starts_at": now, "ends_at": now + 60}),
            "count",
        ),
        (
            json!({"track_name": "lab-b", "count": 1, "starts_at": now + 60, "ends_at": now}),
            "ends_at",
        ),
        (
            json!({"count": 1, "starts_at": now, "ends_at": now + 60}),
            "track_name",
        ),
        (
            json!({"track_name": "lab-b", "count": 1, "ends_at": now + 60}),
            "starts_at",
        ),
    ] {
        let body = error_of(
            reserve(&app, bad).await,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }
    let not_an_id = app
        .admin(Method::DELETE, "/v1/admin/reservations/tok_1")
        .send()
        .await
        .unwrap();
    error_of(not_an_id, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let unknown = app
        .admin(Method::DELETE, "/v1/admin/reservations/res_00")
        .send()
        .await
        .unwrap();
    error_of(unknown, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let lab_token = app
        .lab(Method::GET, "/v1/admin/reservations")
        .send()
        .await
        .unwrap();
    assert_eq!(lab_token.status(), StatusCode::FORBIDDEN);

    until_listed(&app, &id, |r| r["held"] == 6).await;
    let apps = [app];
    // As many of lab-a as it reserved: a seventh would also draw on the pool (after its
    // reservation, as any lab), racing lab-b for the last rows.
    let answers = class_start(&apps, [students("lab-b", 6), students("lab-a", 6)].concat()).await;
    assert_eq!(
        tally(&answers, "lab-b"),
        (4, 2),
        "lab-b gets only what is not set aside"
    );
    assert_eq!(tally(&answers, "lab-a"), (6, 0), "lab-a gets its six");
    each_once(&answers);
    let [app] = apps;
    let used = listed(&app, &id).await;
    assert_eq!(
        (
            used["held"].as_u64(),
            used["used"].as_u64(),
            used["short"].as_u64()
        ),
        (Some(0), Some(6), Some(0)),
        "{used}"
    );

    let log = json_of(app.admin_get("/v1/admin/actions").await, StatusCode::OK).await;
    let made = log["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "admin.reservation_create")
        .count();
    assert_eq!(made, 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_unused_returns_to_the_pool_at_the_end_and_on_delete() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::builder().clock(clock.clone()).spawn().await;
    app.seed("lab-", 0, 6).await;
    let now = clock.now().get();
    let ending = json_of(
        reserve(&app, class("lab-a", 3, now)).await,
        StatusCode::CREATED,
    )
    .await;
    let ending = ending["id"].as_str().unwrap().to_owned();
    let deleted =
        json!({"track_name": "lab-c", "count": 3, "starts_at": now, "ends_at": now + 86_400});
    let deleted = json_of(reserve(&app, deleted).await, StatusCode::CREATED).await;
    let deleted = deleted["id"].as_str().unwrap().to_owned();
    until_listed(&app, &ending, |r| r["held"] == 3).await;
    until_listed(&app, &deleted, |r| r["held"] == 3).await;
    let student = app
        .allocate_with("a-1", &[("X-Instruqt-Track-ID", "lab-a")])
        .await;
    json_of(student, StatusCode::CREATED).await;
    error_of(
        app.allocate_with("b-1", &[("X-Instruqt-Track-ID", "lab-b")])
            .await,
        StatusCode::CONFLICT,
        "NO_SANDBOXES_AVAILABLE",
    )
    .await;

    // Deleted: its three return.
    let gone = app
        .admin(Method::DELETE, &format!("/v1/admin/reservations/{deleted}"))
        .send()
        .await
        .unwrap();
    let gone = json_of(gone, StatusCode::OK).await;
    assert_eq!(gone["held"], 3, "what returns: {gone}");
    let stats = until_stats(&app, |s| s["reserved"] == 2).await;
    assert_eq!(stats["available"], 3);

    // Ended: the two it still holds return; the one its student got stays theirs. The
    // clock moves on an interval at a time, as it does by itself: a scheduled run that
    // met the delete's run still under way is skipped until the next one.
    clock.advance(Duration::from_secs(3601));
    let mut ended = listed(&app, &ending).await;
    for _ in 0..200 {
        if ended["held"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        clock.advance(Duration::from_secs(16));
        ended = listed(&app, &ending).await;
    }
    assert_eq!(ended["held"], 0, "{ended}");
    assert_eq!(
        (ended["status"].as_str(), ended["used"].as_u64()),
        (Some("ended"), Some(1))
    );
    let stats = until_stats(&app, |s| s["reserved"] == 0).await;
    assert_eq!(
        (stats["available"].as_u64(), stats["allocated"].as_u64()),
        (Some(5), Some(1))
    );
    for n in 0..5 {
        let other = app
            .allocate_with(&format!("b-{n}"), &[("X-Instruqt-Track-ID", "lab-b")])
            .await;
        json_of(other, StatusCode::CREATED).await;
    }
}

/// Waits (up to ten seconds) until `check` holds of `GET /v1/admin/stats`.
async fn until_stats(app: &TestApp, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let stats = json_of(app.admin_get("/v1/admin/stats").await, StatusCode::OK).await;
        if check(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the stats never got there: {}",
        json_of(app.admin_get("/v1/admin/stats").await, StatusCode::OK).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_made_on_one_instance_serves_its_class_across_a_fleet_of_three() {
    let (apps, _guard) = fleet(3).await;
    apps[0].seed("lab-", 0, 45).await;
    let now = now_epoch();
    let made = json_of(
        reserve(&apps[1], class("lab-a", 30, now)).await,
        StatusCode::CREATED,
    )
    .await;
    let id = made["id"].as_str().unwrap().to_owned();
    until_listed(&apps[2], &id, |r| r["held"] == 30).await;

    let answers = class_start(
        &apps,
        [students("lab-a", 30), students("lab-b", 30)].concat(),
    )
    .await;
    assert_eq!(
        tally(&answers, "lab-a"),
        (30, 0),
        "every lab-a student is served"
    );
    assert_eq!(
        tally(&answers, "lab-b"),
        (15, 15),
        "lab-b gets exactly the 15 not set aside"
    );
    each_once(&answers);
    let used = listed(&apps[0], &id).await;
    assert_eq!(
        (used["held"].as_u64(), used["used"].as_u64()),
        (Some(0), Some(30)),
        "{used}"
    );
}
