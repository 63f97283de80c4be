//! Lab routes, as the Instruqt lifecycle scripts use them.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, error_of, json_of};

#[tokio::test]
async fn allocation_returns_201_with_the_fields_lab_scripts_read() {
    let app = TestApp::builder()
        .config(|c| c.lab.lab_duration_hours = 3)
        .spawn()
        .await;
    app.seed("lab-a-", 1000, 1).await;

    let body = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;

    assert_eq!(body["sandbox_id"], "1001");
    assert_eq!(body["name"], "lab-a-00001");
    let external_id = body["external_id"].as_str().unwrap();
    assert_eq!(external_id.rsplit('/').next(), Some("uuid-1001"));
    let allocated_at = body["allocated_at"]
        .as_i64()
        .expect("allocated_at is an integer");
    let expires_at = body["expires_at"]
        .as_i64()
        .expect("expires_at is an integer");
    assert_eq!(expires_at, allocated_at + 3 * 3600);
    assert_eq!(
        body["sfdc_account_id"], "",
        "unknown SFDC id must be an empty string"
    );
}

#[tokio::test]
async fn a_rerun_of_the_allocation_step_gets_the_same_sandbox_with_200() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 5).await;

    let first = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    let again = json_of(app.allocate("stu-1").await, StatusCode::OK).await;

    assert_eq!(first, again);
}

#[tokio::test]
async fn post_bodies_empty_null_or_empty_object_are_all_accepted() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 5).await;
    for (n, body) in ["", "null", "{}"].into_iter().enumerate() {
        let response = app
            .lab(Method::POST, "/v1/allocate")
            .header("Content-Type", "application/json")
            .header("X-Instruqt-Sandbox-ID", format!("stu-{n}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "body {body:?}");
    }
}

#[tokio::test]
async fn sfdc_account_id_is_returned_as_a_string_when_known() {
    let app = TestApp::spawn().await;
    let with_sfdc = json!({"sandboxes": [{"sandbox_id": "7", "name": "lab-7", "external_id": "x/7", "sfdc_account_id": "001SFDC7"}]});
    json_of(app.import(&with_sfdc).await, StatusCode::OK).await;

    let body = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;

    assert_eq!(body["sfdc_account_id"], "001SFDC7");
}

#[tokio::test]
async fn the_name_prefix_header_picks_only_matching_sandboxes() {
    let app = TestApp::spawn().await;
    app.seed("lab-dns-", 0, 2).await;
    app.seed("lab-sec-", 100, 1).await;

    let body = json_of(
        app.allocate_with("stu-1", &[("X-Sandbox-Name-Prefix", "lab-sec-")])
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(body["name"], "lab-sec-00001");

    let exhausted = app
        .allocate_with("stu-2", &[("X-Sandbox-Name-Prefix", "lab-sec-")])
        .await;
    error_of(exhausted, StatusCode::CONFLICT, "NO_SANDBOXES_AVAILABLE").await;
    let case_differs = app
        .allocate_with("stu-3", &[("X-Sandbox-Name-Prefix", "LAB-DNS-")])
        .await;
    error_of(case_differs, StatusCode::CONFLICT, "NO_SANDBOXES_AVAILABLE").await;
}

#[tokio::test]
async fn a_blank_prefix_header_from_an_unset_script_variable_means_no_prefix() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 1).await;

    let response = app
        .allocate_with("stu-1", &[("X-Sandbox-Name-Prefix", " ")])
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn an_empty_pool_answers_409_with_retry_after() {
    let app = TestApp::spawn().await;

    let response = app.allocate("stu-1").await;

    assert_eq!(response.headers()["retry-after"], "30");
    let detail = error_of(response, StatusCode::CONFLICT, "NO_SANDBOXES_AVAILABLE").await;
    assert_eq!(detail["retry_after"], 30);
}

#[tokio::test]
async fn the_legacy_track_header_identifies_the_student_when_the_new_one_is_blank() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 2).await;

    let legacy = app
        .lab(Method::POST, "/v1/allocate")
        .header("X-Instruqt-Sandbox-ID", "  ")
        .header("X-Track-ID", "legacy-stu")
        .send()
        .await
        .unwrap();
    let body = json_of(legacy, StatusCode::CREATED).await;

    let owner_view = app
        .get_sandbox(body["sandbox_id"].as_str().unwrap(), "legacy-stu")
        .await;
    let view = json_of(owner_view, StatusCode::OK).await;
    assert_eq!(view["allocated_to_track"], "legacy-stu");
}

#[tokio::test]
async fn without_any_student_header_allocation_is_400_naming_both_headers() {
    let app = TestApp::spawn().await;

    let response = app.lab(Method::POST, "/v1/allocate").send().await.unwrap();

    let detail = error_of(response, StatusCode::BAD_REQUEST, "MISSING_SANDBOX_ID").await;
    let message = detail["message"].as_str().unwrap();
    assert!(
        message.contains("X-Instruqt-Sandbox-ID") && message.contains("X-Track-ID"),
        "{message}"
    );
}

#[tokio::test]
async fn different_idempotency_keys_are_separate_allocations_and_each_replays() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 3).await;

    let a = json_of(
        app.allocate_with("stu", &[("Idempotency-Key", "a")]).await,
        StatusCode::CREATED,
    )
    .await;
    let b = json_of(
        app.allocate_with("stu", &[("Idempotency-Key", "b")]).await,
        StatusCode::CREATED,
    )
    .await;
    let a_again = json_of(
        app.allocate_with("stu", &[("Idempotency-Key", "a")]).await,
        StatusCode::OK,
    )
    .await;
    let other = json_of(
        app.allocate_with("other", &[("Idempotency-Key", "a")])
            .await,
        StatusCode::CREATED,
    )
    .await;

    assert_ne!(a["sandbox_id"], b["sandbox_id"]);
    assert_eq!(a, a_again);
    assert_ne!(
        other["sandbox_id"], a["sandbox_id"],
        "a key must never reach another student's sandbox"
    );
}

#[tokio::test]
async fn the_owner_sees_its_sandbox_and_others_get_403_without_learning_who_holds_it() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 2).await;
    let body = json_of(
        app.allocate_with("stu-1", &[("X-Instruqt-Track-ID", "dns-lab")])
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = body["sandbox_id"].as_str().unwrap();

    let view = json_of(app.get_sandbox(id, "stu-1").await, StatusCode::OK).await;
    assert_eq!(view["status"], "allocated");
    assert_eq!(view["track_name"], "dns-lab");
    assert_eq!(view["expires_at"], body["expires_at"]);

    let foreign = app.get_sandbox(id, "stu-2").await;
    let detail = error_of(foreign, StatusCode::FORBIDDEN, "NOT_SANDBOX_OWNER").await;
    assert!(
        !detail.to_string().contains("stu-1"),
        "leaks the holder: {detail}"
    );
}

#[tokio::test]
async fn an_unknown_sandbox_is_404_and_an_unallocated_one_is_403() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 1).await;

    error_of(
        app.get_sandbox("999999", "stu").await,
        StatusCode::NOT_FOUND,
        "SANDBOX_NOT_FOUND",
    )
    .await;
    error_of(
        app.get_sandbox("1", "stu").await,
        StatusCode::FORBIDDEN,
        "NOT_SANDBOX_OWNER",
    )
    .await;
    error_of(
        app.mark("999999", "stu").await,
        StatusCode::NOT_FOUND,
        "SANDBOX_NOT_FOUND",
    )
    .await;
    error_of(
        app.mark("1", "stu").await,
        StatusCode::FORBIDDEN,
        "NOT_SANDBOX_OWNER",
    )
    .await;
}

#[tokio::test]
async fn marking_is_owner_only_idempotent_and_frees_the_key_for_a_new_sandbox() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 3).await;
    let first = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    let id = first["sandbox_id"].as_str().unwrap();

    error_of(
        app.mark(id, "stu-2").await,
        StatusCode::FORBIDDEN,
        "NOT_SANDBOX_OWNER",
    )
    .await;
    let marked = json_of(app.mark(id, "stu-1").await, StatusCode::OK).await;
    let repeated = json_of(app.mark(id, "stu-1").await, StatusCode::OK).await;

    assert_eq!(marked["status"], "pending_deletion");
    assert!(marked["deletion_requested_at"].as_i64().is_some());
    assert_eq!(marked, repeated, "a repeated mark returns the same body");
    let view = json_of(app.get_sandbox(id, "stu-1").await, StatusCode::OK).await;
    assert_eq!(
        view["status"], "pending_deletion",
        "the owner still sees a released sandbox"
    );
    let next = json_of(app.allocate("stu-1").await, StatusCode::CREATED).await;
    assert_ne!(
        next["sandbox_id"], first["sandbox_id"],
        "a released sandbox is never handed out again"
    );
}

#[tokio::test]
async fn auth_is_checked_before_anything_else() {
    let app = TestApp::spawn().await;
    let admin_on_lab_routes = format!("Bearer {}", crate::helpers::ADMIN_TOKEN);
    let cases = [
        (None, "no token"),
        (Some("Bearer wrong"), "wrong token"),
        (
            Some(admin_on_lab_routes.as_str()),
            "admin token on a track route",
        ),
        (Some("Basic dXNlcjpwYXNz"), "basic auth"),
        (Some("Bearer a b"), "two tokens"),
    ];
    for (authorization, case) in cases {
        // No student header and a bad sandbox id: validation would be 400 if it ran first.
        let mut request = app
            .client
            .get(app.url(&format!("/v1/sandboxes/{}", "x".repeat(300))));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{case}");
        error_of(response, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 1).await;

    let response = app
        .client
        .post(app.url("/v1/allocate"))
        .header(
            "Authorization",
            format!("bearer {}", crate::helpers::LAB_TOKEN),
        )
        .header("X-Instruqt-Sandbox-ID", "stu")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn rotated_tokens_are_all_accepted() {
    let app = TestApp::builder()
        .config(|c| {
            c.auth.api_token = sandbox_broker::config::TokenList::parse(
                "old-track-token-2025,new-track-token-2026",
            )
            .ok();
        })
        .spawn()
        .await;
    app.seed("lab-", 0, 2).await;
    for (n, token) in ["old-track-token-2025", "new-track-token-2026"]
        .into_iter()
        .enumerate()
    {
        let response = app
            .client
            .post(app.url("/v1/allocate"))
            .bearer_auth(token)
            .header("X-Instruqt-Sandbox-ID", format!("stu-{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{token}");
    }
}
