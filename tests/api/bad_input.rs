//! Every header, path and query value: too long, control characters, wrong type — always the
//! 400 envelope, never a 500, never a changed row.

use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, error_of};

#[tokio::test]
async fn malformed_headers_are_400_validation_errors_naming_the_header() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 3).await;
    let too_long = "k".repeat(257);
    let prefix_too_long = "p".repeat(129);
    let cases: Vec<(&str, String, &str)> = vec![
        ("X-Instruqt-Sandbox-ID", too_long.clone(), "too long"),
        ("X-Instruqt-Sandbox-ID", "stu\tdent".into(), "inner tab"),
        ("X-Instruqt-Sandbox-ID", "stüdent".into(), "non-ASCII"),
        ("X-Track-ID", too_long.clone(), "legacy too long"),
        ("X-Instruqt-Track-ID", too_long.clone(), "track too long"),
        (
            "X-Instruqt-Track-ID",
            "lab\u{80}x".into(),
            "track obs-text byte",
        ),
        ("X-Sandbox-Name-Prefix", prefix_too_long, "prefix too long"),
        ("X-Sandbox-Name-Prefix", "pré".into(), "prefix non-ASCII"),
        ("Idempotency-Key", too_long, "idempotency too long"),
        ("Idempotency-Key", "a\tb".into(), "idempotency tab"),
    ];
    for (header, value, case) in cases {
        let mut request = app.lab(Method::POST, "/v1/allocate").header(
            header,
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
        if !header.contains("Sandbox-ID") && header != "X-Track-ID" {
            request = request.header("X-Instruqt-Sandbox-ID", "stu");
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        let detail = error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        assert!(
            detail["message"].as_str().unwrap().contains(header),
            "{case}: {detail}"
        );
    }
    assert_eq!(
        app.stats().await["allocated"],
        0,
        "no bad request allocated anything"
    );
}

#[tokio::test]
async fn malformed_sandbox_ids_in_paths_are_400() {
    let app = TestApp::spawn().await;
    let too_long = "9".repeat(257);
    for id in [
        too_long.as_str(),
        "%00",
        "abc%0Adef",
        "%7F",
        "%FF%FE",
        "caf%C3%A9",
    ] {
        for response in [app.get_sandbox(id, "stu").await, app.mark(id, "stu").await] {
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "id {id:?}");
            error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
        }
    }
}

#[tokio::test]
async fn malformed_list_and_bulk_delete_queries_are_400() {
    let app = TestApp::spawn().await;
    let long_prefix = format!("name_prefix={}", "p".repeat(129));
    let long_holder = format!("student={}", "s".repeat(257));
    let long_lab = format!("track_name={}", "t".repeat(257));
    let queries = [
        "status=bogus",
        "status=ALLOCATED",
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=99999999999999999999999",
        "cursor=garbage",
        "cursor=%00",
        long_prefix.as_str(),
        long_holder.as_str(),
        long_lab.as_str(),
        "student=a%07b",
        "track_name=%0A",
        "status=available&status=stale",
        "limit=%ZZ",
    ];
    for query in queries {
        let response = app.admin_get(&format!("/v1/admin/sandboxes?{query}")).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "query {query:?}"
        );
        error_of(response, StatusCode::BAD_REQUEST, "VALIDATION_ERROR").await;
    }
    for query in [
        "status=%00",
        "status=available&status=stale",
        "status=Available",
    ] {
        let response = app
            .admin(Method::POST, &format!("/v1/admin/bulk-delete?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "bulk-delete {query:?}"
        );
    }
}

#[tokio::test]
async fn unparseable_requests_never_reach_a_500() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 2).await;
    let probes = [
        (Method::POST, "/v1/allocate?x=%ZZ"),
        (Method::GET, "/v1/sandboxes/"),
        (Method::GET, "/v1/sandboxes/a/b/c"),
        (Method::POST, "/v1/admin/sandboxes"),
        (Method::PUT, "/v1/admin/stats"),
        (Method::GET, "/v1/admin/sandboxes?limit="),
        (Method::POST, "/v1//allocate"),
    ];
    for (method, path) in probes {
        let response = app
            .admin(method.clone(), path)
            .header("X-Instruqt-Sandbox-ID", "stu")
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(
            status.is_client_error() || status.is_success(),
            "{method} {path} gave {status}"
        );
        if status.is_client_error() {
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(
                body["detail"]["code"].is_string(),
                "{method} {path}: {body}"
            );
        }
    }
}

/// Control bytes in a header are not HTTP: the parser refuses them before any route runs.
/// They must still never produce a 500 or change a row.
#[tokio::test]
async fn control_bytes_in_headers_are_refused_by_the_http_parser_without_side_effects() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 2).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    for bad in [&b"stu\x01dent"[..], b"stu\x7fdent", b"stu\x00"] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let mut request = format!(
            "POST /v1/allocate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-Instruqt-Sandbox-ID: ",
            crate::helpers::LAB_TOKEN
        )
        .into_bytes();
        request.extend_from_slice(bad);
        request.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?} got {answer}");
    }
    assert_eq!(app.stats().await["allocated"], 0);
}
