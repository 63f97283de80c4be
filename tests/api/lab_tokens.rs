//! Scoped lab tokens, black-box on both stores: minted, listed and revoked by an admin;
//! allocating only inside their scope, under their cap and rate; the static track token
//! unchanged beside them.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use sandbox_broker::domain::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, json_of};

/// Mints a token with `body`; its id and secret.
async fn mint(app: &TestApp, body: Value) -> (String, String) {
    let response = app
        .admin(Method::POST, "/v1/admin/tokens")
        .json(&body)
        .send()
        .await
        .unwrap();
    let minted = json_of(response, StatusCode::CREATED).await;
    (
        minted["id"].as_str().unwrap().to_owned(),
        minted["token"].as_str().unwrap().to_owned(),
    )
}

/// `POST /v1/allocate` with `secret` as `holder`, with `headers`.
async fn allocate(
    app: &TestApp,
    secret: &str,
    holder: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/allocate"))
        .bearer_auth(secret)
        .header("X-Instruqt-Sandbox-ID", holder);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `method path` with the lab token `secret` as `holder`.
async fn as_token(
    app: &TestApp,
    secret: &str,
    method: Method,
    path: &str,
    holder: &str,
) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(secret)
        .header("X-Instruqt-Sandbox-ID", holder)
        .send()
        .await
        .unwrap()
}

async fn tokens(app: &TestApp) -> Value {
    json_of(app.admin_get("/v1/admin/tokens").await, StatusCode::OK).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_mints_lists_and_revokes_lab_tokens_and_never_sees_a_secret_twice() {
    let app = TestApp::spawn().await;
    let response = app
        .admin(Method::POST, "/v1/admin/tokens")
        .json(&json!({"name": "class-a", "track_names": ["lab-a"], "max_active": 5, "per_minute": 60}))
        .send()
        .await
        .unwrap();
    let minted = json_of(response, StatusCode::CREATED).await;
    let secret = minted["token"].as_str().unwrap().to_owned();
    let id = minted["id"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("sbx_lab_") && secret.len() >= 8 + 43,
        "{secret}"
    );
    assert_eq!(minted["max_active"], 5);
    assert_eq!(minted["status"], "active");

    let listed = tokens(&app).await;
    let text = listed.to_string();
    assert!(!text.contains(&secret), "the list holds no secret");
    assert!(!text.contains(&secret[8..20]), "not even part of it");
    let token = &listed["tokens"][0];
    assert_eq!(
        (&token["id"], &token["name"], &token["held"]),
        (&json!(id), &json!("class-a"), &json!(0))
    );
    assert_eq!(token["track_names"], json!(["lab-a"]));

    for (body, field) in [
        (json!({"name": "x"}), "track_names"),
        (json!({"track_names": ["lab-a"]}), "name"),
        (
            json!({"name": "x", "track_names": ["caf\u{e9}"]}),
            "track_names",
        ),
        (
            json!({"name": "x", "name_prefixes": ["lab-"], "max_active": 0}),
            "max_active",
        ),
        (
            json!({"name": "x", "name_prefixes": ["lab-"], "expires_at": 1}),
            "expires_at",
        ),
    ] {
        let response = app
            .admin(Method::POST, "/v1/admin/tokens")
            .json(&body)
            .send()
            .await
            .unwrap();
        let error = error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error}"
        );
    }
    let taken = app
        .admin(Method::POST, "/v1/admin/tokens")
        .json(&json!({"name": "class-a", "track_names": ["lab-b"]}))
        .send()
        .await
        .unwrap();
    error_of(taken, StatusCode::CONFLICT, "TOKEN_NAME_TAKEN").await;
    let as_lab = app
        .client
        .get(app.url("/v1/admin/tokens"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        as_lab.status(),
        StatusCode::FORBIDDEN,
        "a lab token is no admin"
    );

    let revoked = app
        .admin(Method::DELETE, &format!("/v1/admin/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(revoked, StatusCode::OK).await["status"], "revoked");
    let refused = allocate(&app, &secret, "stu", &[("X-Instruqt-Track-ID", "lab-a")]).await;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "revoked: at once here"
    );
    let unknown = app
        .admin(Method::DELETE, "/v1/admin/tokens/tok_00")
        .send()
        .await
        .unwrap();
    error_of(unknown, StatusCode::NOT_FOUND, "NOT_FOUND").await;
    let malformed = app
        .admin(Method::DELETE, "/v1/admin/tokens/cordon-1")
        .send()
        .await
        .unwrap();
    error_of(malformed, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    let actions = json_of(app.admin_get("/v1/admin/actions").await, StatusCode::OK).await;
    let logged: Vec<&str> = actions["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(logged.contains(&"admin.token_mint") && logged.contains(&"admin.token_revoke"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_token_allocates_reads_and_releases_only_inside_its_scope() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 4).await;
    app.seed("aws-", 100, 2).await;
    let (_, secret) = mint(
        &app,
        json!({"name": "class-a", "track_names": ["lab-a"], "name_prefixes": ["lab-"]}),
    )
    .await;
    let lab_a = [("X-Instruqt-Track-ID", "lab-a")];

    let mine = json_of(
        allocate(&app, &secret, "stu-1", &lab_a).await,
        StatusCode::CREATED,
    )
    .await;
    assert!(
        mine["name"].as_str().unwrap().starts_with("lab-"),
        "its only prefix: {mine}"
    );
    let other_lab = allocate(&app, &secret, "stu-2", &[("X-Instruqt-Track-ID", "lab-b")]).await;
    let error = error_of(other_lab, StatusCode::FORBIDDEN, "OUT_OF_SCOPE").await;
    assert!(
        error["message"].as_str().unwrap().contains("lab lab-a"),
        "names the scope: {error}"
    );
    let no_lab = allocate(&app, &secret, "stu-2", &[]).await;
    error_of(no_lab, StatusCode::FORBIDDEN, "OUT_OF_SCOPE").await;
    let other_prefix = allocate(
        &app,
        &secret,
        "stu-2",
        &[
            ("X-Instruqt-Track-ID", "lab-a"),
            ("X-Sandbox-Name-Prefix", "aws-"),
        ],
    )
    .await;
    error_of(other_prefix, StatusCode::FORBIDDEN, "OUT_OF_SCOPE").await;

    // The static track token works as before, and its sandboxes are not the token's.
    let static_one = json_of(app.allocate("stu-static").await, StatusCode::CREATED).await;
    let static_id = static_one["sandbox_id"].as_str().unwrap();
    let read = as_token(
        &app,
        &secret,
        Method::GET,
        &format!("/v1/sandboxes/{static_id}"),
        "stu-static",
    )
    .await;
    error_of(read, StatusCode::FORBIDDEN, "NOT_SANDBOX_OWNER").await;
    let replay = allocate(&app, &secret, "stu-static", &lab_a).await;
    error_of(replay, StatusCode::FORBIDDEN, "OUT_OF_SCOPE").await;

    let id = mine["sandbox_id"].as_str().unwrap();
    let read = as_token(
        &app,
        &secret,
        Method::GET,
        &format!("/v1/sandboxes/{id}"),
        "stu-1",
    )
    .await;
    json_of(read, StatusCode::OK).await;
    let replayed = json_of(
        allocate(&app, &secret, "stu-1", &lab_a).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(replayed["sandbox_id"], id);
    let released = as_token(
        &app,
        &secret,
        Method::POST,
        &format!("/v1/sandboxes/{id}/mark-for-deletion"),
        "stu-1",
    )
    .await;
    json_of(released, StatusCode::OK).await;
    // The static token may still act on any row, as it always could.
    json_of(app.get_sandbox(id, "stu-1").await, StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_students_at_once_under_a_token_capped_at_ten_get_exactly_ten_sandboxes() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 30).await;
    let (id, secret) = mint(
        &app,
        json!({"name": "class-a", "name_prefixes": ["lab-"], "max_active": 10}),
    )
    .await;
    let answers = join_all((0..50).map(|n| {
        let (app, secret) = (&app, &secret);
        async move { allocate(app, secret, &format!("stu-{n}"), &[]).await }
    }))
    .await;
    let mut granted = Vec::new();
    let mut capped = 0;
    for (n, response) in answers.into_iter().enumerate() {
        match response.status() {
            StatusCode::CREATED => granted.push(n),
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                error_of(response, StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED").await;
                capped += 1;
            }
            other => panic!("stu-{n}: {other}"),
        }
    }
    assert_eq!((granted.len(), capped), (10, 40));
    let listed = tokens(&app).await;
    assert_eq!(listed["tokens"][0]["held"], 10, "{listed}");

    // At the cap a replay is still answered, and a release frees a slot.
    let first = format!("stu-{}", granted[0]);
    let replay = json_of(allocate(&app, &secret, &first, &[]).await, StatusCode::OK).await;
    let held = replay["sandbox_id"].as_str().unwrap().to_owned();
    let more = allocate(&app, &secret, "stu-late", &[]).await;
    error_of(more, StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED").await;
    let released = as_token(
        &app,
        &secret,
        Method::POST,
        &format!("/v1/sandboxes/{held}/mark-for-deletion"),
        &first,
    )
    .await;
    json_of(released, StatusCode::OK).await;
    json_of(
        allocate(&app, &secret, "stu-late", &[]).await,
        StatusCode::CREATED,
    )
    .await;
    let listed = tokens(&app).await;
    assert_eq!(
        (&listed["tokens"][0]["id"], &listed["tokens"][0]["held"]),
        (&json!(id), &json!(10))
    );
    let metrics = app.metrics_text().await;
    let count = |outcome: &str| {
        crate::helpers::series_sum(
            &metrics,
            &format!("broker_token_allocations_total{{outcome=\"{outcome}\",token=\"class-a\"}}"),
        )
    };
    assert_eq!(
        (
            count("success"),
            count("idempotent"),
            count("quota_exceeded")
        ),
        (11.0, 1.0, 41.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stops_at_its_expiry_and_at_its_rate() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::builder().clock(clock.clone()).spawn().await;
    app.seed("lab-", 0, 10).await;
    let expires_at = sandbox_broker::domain::clock::Clock::now(&*clock).get() + 60;
    let (_, secret) = mint(
        &app,
        json!({"name": "short", "name_prefixes": ["lab-"], "per_minute": 2, "expires_at": expires_at}),
    )
    .await;
    json_of(
        allocate(&app, &secret, "stu-1", &[]).await,
        StatusCode::CREATED,
    )
    .await;
    json_of(
        allocate(&app, &secret, "stu-2", &[]).await,
        StatusCode::CREATED,
    )
    .await;
    let third = allocate(&app, &secret, "stu-3", &[]).await;
    assert!(third.headers().contains_key("retry-after"));
    error_of(third, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED").await;

    clock.advance(Duration::from_secs(61));
    let expired = allocate(&app, &secret, "stu-4", &[]).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(tokens(&app).await["tokens"][0]["status"], "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_static_track_token_only_lab_tokens_allocate() {
    let app = TestApp::builder()
        .config(|c| c.auth.allow_static_track_token = false)
        .spawn()
        .await;
    app.seed("lab-", 0, 2).await;
    assert_eq!(app.allocate("stu").await.status(), StatusCode::UNAUTHORIZED);
    let (_, secret) = mint(&app, json!({"name": "only", "name_prefixes": ["lab-"]})).await;
    json_of(
        allocate(&app, &secret, "stu", &[]).await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_flood_the_track_routes_with_invented_student_keys() {
    let app = TestApp::builder()
        .config(|c| {
            c.rate_limit.rate_limit_per_address_per_sec = std::num::NonZeroU32::new(1).unwrap();
            c.rate_limit.rate_limit_per_address_burst = std::num::NonZeroU32::new(20).unwrap();
        })
        .spawn()
        .await;
    app.seed("lab-", 0, 100).await;
    let answers = join_all((0..40).map(|n| {
        let app = &app;
        async move { app.allocate(&format!("invented-{n}")).await.status() }
    }))
    .await;
    let served = answers
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let limited = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // The burst of 20, and at most one more as the second passes.
    assert!((20..=21).contains(&served), "{answers:?}");
    assert_eq!(served + limited, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_of_five_hundred_behind_one_address_is_served_under_the_default_address_limit() {
    let defaults = sandbox_broker::config::Config::declared_defaults().unwrap();
    let app = TestApp::builder()
        .config(|c| c.rate_limit = defaults.rate_limit.clone())
        .spawn()
        .await;
    app.seed("lab-", 0, 500).await;
    let holders = (0..500).map(|n| (format!("stu-{n:03}"), None)).collect();
    let answers = crate::helpers::burst(std::slice::from_ref(&app), holders, 500).await;
    let served = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert_eq!(
        served, 500,
        "every student of the class starts at once from 127.0.0.1"
    );
}
