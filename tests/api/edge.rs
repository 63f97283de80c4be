//! The edge against strangers and students holding the track token: `/metrics` costs no
//! store reads and can be guarded, failed authentication is throttled per address, and the
//! rate-limit bucket map stays bounded whatever keys callers invent.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::{Method, StatusCode};

use crate::helpers::{ADMIN_TOKEN, LAB_TOKEN, TestApp, error_of, json_of, series_sum};

#[tokio::test]
async fn scrapes_within_the_refresh_period_read_nothing_from_the_store() {
    let app = TestApp::builder()
        .config(|c| c.http.metrics_pool_refresh = Duration::from_secs(3600))
        .spawn()
        .await;
    app.seed("lab-", 0, 3).await;

    let first = app.metrics_text().await;
    assert_eq!(series_sum(&first, "broker_pool_available "), 3.0);
    app.seed("lab-", 100, 2).await;
    let before = app.metrics_text().await;
    for _ in 0..20 {
        app.metrics_text().await;
    }
    let after = app.metrics_text().await;

    // The counts are the cached ones, and (on DynamoDB) not one call went to the table.
    assert_eq!(series_sum(&after, "broker_pool_available "), 3.0);
    let calls = "broker_dynamodb_call_duration_seconds_count";
    assert_eq!(series_sum(&before, calls), series_sum(&after, calls));
}

/// `answer` without the time-to-sandbox levels, which this instance measures live and
/// merges into every answer (stu-2's allocation moves them); the rest is what the store
/// said, and must be the cached answer.
fn store_derived(mut answer: serde_json::Value) -> serde_json::Value {
    if let Some(tracks) = answer["tracks"].as_array_mut() {
        for track in tracks
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            track.retain(|key, _| !key.starts_with("time_to_sandbox"));
        }
    }
    answer
}

#[tokio::test]
async fn twenty_dashboards_cost_the_store_what_one_does() {
    let app = TestApp::builder()
        .config(|c| c.http.analytics_cache = Duration::from_secs(3600))
        .spawn()
        .await;
    app.seed("lab-", 0, 5).await;
    app.allocate_with("stu-1", &[("X-Instruqt-Track-ID", "lab-x")])
        .await;
    let routes = ["/v1/admin/tracks", "/v1/admin/usage", "/v1/admin/niosxaas"];
    let mut first = Vec::new();
    for route in routes {
        first.push(json_of(app.admin_get(route).await, StatusCode::OK).await);
    }
    app.allocate_with("stu-2", &[("X-Instruqt-Track-ID", "lab-x")])
        .await;
    let calls = "broker_dynamodb_call_duration_seconds_count";
    // An allocation may start reads of its own in the background (a candidate queue
    // refilled ahead, the fleet's webhook endpoints): count from when they are done.
    let mut before = app.metrics_text().await;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let now = app.metrics_text().await;
        if series_sum(&now, calls) == series_sum(&before, calls) {
            break;
        }
        before = now;
    }

    // Twenty open tabs refresh at once, twice: every answer is the shared one.
    for _ in 0..2 {
        let app = &app;
        let refreshes = (0..20).flat_map(|_| routes).map(|route| async move {
            let answer = app.admin_get(route).await;
            (route, json_of(answer, StatusCode::OK).await)
        });
        for (route, answer) in futures::future::join_all(refreshes).await {
            let index = routes.iter().position(|r| *r == route).unwrap();
            assert_eq!(
                store_derived(answer),
                store_derived(first[index].clone()),
                "{route}"
            );
        }
    }
    let after = app.metrics_text().await;
    assert_eq!(
        first[0]["tracks"][0]["allocated"], 1,
        "the first read, kept"
    );
    assert_eq!(
        series_sum(&before, calls),
        series_sum(&after, calls),
        "no table call for 60 dashboard reads"
    );
}

#[tokio::test]
async fn a_metrics_token_guards_metrics_and_nothing_else() {
    let token = "metrics-token-for-tests";
    let app = TestApp::builder()
        .config(|c| {
            c.auth.metrics_token = sandbox_broker::config::TokenList::parse(token).ok();
        })
        .spawn()
        .await;

    let open = app.client.get(app.url("/metrics")).send().await.unwrap();
    error_of(open, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let wrong = app.client.get(app.url("/metrics")).bearer_auth(LAB_TOKEN);
    let wrong = wrong.send().await.unwrap();
    error_of(wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let scraped = app.client.get(app.url("/metrics")).bearer_auth(token);
    let scraped = scraped.send().await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("broker_pool_available")
    );
    for open_route in ["/healthz", "/readyz"] {
        let answer = app.client.get(app.url(open_route)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{open_route}");
    }
}

#[tokio::test]
async fn failed_authentication_is_throttled_per_client_address() {
    let app = TestApp::builder()
        .config(|c| {
            c.auth.auth_failure_limit = 3.try_into().unwrap();
            c.http.trusted_proxies =
                sandbox_broker::config::TrustedProxies::parse("127.0.0.1/32").unwrap();
        })
        .spawn()
        .await;
    app.seed("edge-", 1, 1).await;
    let from = |address: &str, token: &str| {
        app.client
            .get(app.url("/v1/admin/stats"))
            .header("X-Forwarded-For", address)
            .bearer_auth(token)
    };
    let (guesser, neighbour) = ("198.51.100.7", "198.51.100.8");

    // Successful callers spend nothing: 50 good requests, then still 3 failures allowed.
    for _ in 0..50 {
        let ok = from(guesser, ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }
    // Three failures: a wrong token and the track token (403 on an admin route), no token (401).
    for wrong in ["wrong-token-number-1", LAB_TOKEN] {
        let refused = from(guesser, wrong).send().await.unwrap();
        error_of(refused, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    }
    let anonymous = app
        .client
        .get(app.url("/v1/admin/stats"))
        .header("X-Forwarded-For", guesser);
    let refused = anonymous.send().await.unwrap();
    error_of(refused, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // Now the address's failures are refused with 429; a right token is still served from
    // it, on every route, and spends nothing (a class behind one NAT address is not locked out).
    for _ in 0..2 {
        let throttled = from(guesser, "wrong-token-number-4").send().await.unwrap();
        let retry_after: u64 = throttled.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        error_of(
            throttled,
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMIT_EXCEEDED",
        )
        .await;
        let served = from(guesser, ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
    }
    let lab_route = |token: &str| {
        app.client
            .post(app.url("/v1/allocate"))
            .header("X-Forwarded-For", guesser)
            .header("X-Instruqt-Sandbox-ID", "stu")
            .bearer_auth(token)
    };
    let throttled = lab_route("wrong-track-token-1").send().await.unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let served = lab_route(LAB_TOKEN).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::CREATED);

    // Another address is unaffected, and has its own allowance.
    let ok = from(neighbour, ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = from(neighbour, "wrong-token-number-5")
        .send()
        .await
        .unwrap();
    error_of(refused, StatusCode::FORBIDDEN, "FORBIDDEN").await;

    let metrics = app.metrics_text().await;
    let failures = |outcome: &str| {
        series_sum(
            &metrics,
            &format!("broker_auth_failures_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!((failures("rejected"), failures("throttled")), (4.0, 3.0));
}

#[tokio::test]
async fn a_flood_of_invented_student_keys_leaves_the_bucket_map_bounded_and_the_limited_limited() {
    let app = TestApp::builder()
        .config(|c| {
            c.rate_limit.rate_limit_per_sec = 1.try_into().unwrap();
            c.rate_limit.rate_limit_burst = 50.try_into().unwrap();
            c.rate_limit.rate_limit_max_callers = 64;
            // This is about the per-student buckets: the per-address one stays out of it.
            c.rate_limit.rate_limit_per_address_burst = 100_000.try_into().unwrap();
        })
        .spawn()
        .await;
    // A route that answers 400 after the rate limiter, without touching the store.
    let bad_id = format!("/v1/sandboxes/{}", "x".repeat(300));
    let as_holder = |holder: String| {
        app.lab(Method::GET, &bad_id)
            .header("X-Instruqt-Sandbox-ID", holder)
            .send()
    };
    for _ in 0..50 {
        as_holder("heavy".into()).await.unwrap();
    }
    let limited = as_holder("heavy".into()).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    let answers: Vec<StatusCode> = stream::iter(0..3_000)
        .map(|n| {
            let request = as_holder(format!("invented-{n}"));
            async move { request.await.unwrap().status() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        answers
            .iter()
            .all(|status| *status == StatusCode::BAD_REQUEST)
    );

    let metrics = app.metrics_text().await;
    let callers = series_sum(&metrics, "broker_rate_limit_callers ");
    assert!((1.0..=64.0).contains(&callers), "{callers} buckets kept");
    // The flood did not evict the caller who was limited: its bucket is nearly empty
    // still (a forgotten bucket would be full again, 49 remaining).
    let heavy = as_holder("heavy".into()).await.unwrap();
    let remaining: u32 = heavy
        .headers()
        .get("x-ratelimit-remaining")
        .map_or(0, |value| value.to_str().unwrap().parse().unwrap());
    assert!(
        remaining < 25,
        "heavy caller's bucket was reset: {remaining} remaining"
    );
}

#[tokio::test]
async fn readiness_polled_fast_reads_the_store_at_most_once_a_second() {
    let app = TestApp::builder()
        .config(|c| c.http.metrics_pool_refresh = Duration::from_secs(3600))
        .spawn()
        .await;
    let calls = "broker_dynamodb_call_duration_seconds_count";
    let before = series_sum(&app.metrics_text().await, calls);

    let started = std::time::Instant::now();
    for _ in 0..50 {
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
    }
    let seconds = started.elapsed().as_secs_f64();

    let made = series_sum(&app.metrics_text().await, calls) - before;
    assert!(
        made <= seconds.floor() + 1.0,
        "{made} store reads in {seconds:.1} s"
    );
}
