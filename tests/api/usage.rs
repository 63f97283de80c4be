//! The dashboards' admin routes: `/v1/admin/usage` (allocations over time, lab
//! durations), hold times on `/v1/admin/tracks`, and the breakers on `/v1/admin/jobs`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sandbox_broker::domain::clock::{Clock, ManualClock};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, json_of};

async fn allocate_for(app: &crate::helpers::TestApp, holder: &str, lab: &str) -> String {
    let held = json_of(
        app.allocate_with(holder, &[("X-Instruqt-Track-ID", lab)])
            .await,
        StatusCode::CREATED,
    )
    .await;
    held["sandbox_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn usage_buckets_allocations_and_releases_and_times_the_labs() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::builder().clock(clock.clone()).spawn().await;
    app.seed("lab-", 0, 10).await;
    let first = allocate_for(&app, "stu-0", "dns").await;
    allocate_for(&app, "stu-1", "dns").await;
    clock.advance(Duration::from_secs(2 * 3600));
    let third = allocate_for(&app, "stu-2", "sec").await;
    clock.advance(Duration::from_secs(1800));
    app.mark(&first, "stu-0").await;
    app.mark(&third, "stu-2").await;
    let now = clock.now().get();

    let usage = json_of(
        app.admin_get("/v1/admin/usage?hours=3&bucket_minutes=60")
            .await,
        StatusCode::OK,
    )
    .await;

    let hour = 3600;
    let current = now - now.rem_euclid(hour);
    assert_eq!(
        (&usage["from"], &usage["to"], &usage["bucket_seconds"]),
        (
            &json!(current - 3 * hour),
            &json!(current + hour),
            &json!(hour)
        )
    );
    let per_bucket = |field: &str| -> Vec<u64> {
        let mut counts = vec![0; 4];
        for (i, bucket) in usage["buckets"].as_array().unwrap().iter().enumerate() {
            assert_eq!(bucket["start"], json!(current - 3 * hour + i as i64 * hour));
            counts[i] = bucket[field].as_u64().unwrap();
        }
        counts
    };
    let started = now - 2 * hour - 1800;
    let bucket_of = |at: i64| usize::try_from((at - (current - 3 * hour)) / hour).unwrap();
    let mut allocated = vec![0; 4];
    allocated[bucket_of(started)] += 2;
    allocated[bucket_of(now - 1800)] += 1;
    let mut released = vec![0; 4];
    released[bucket_of(now)] += 2;
    assert_eq!(per_bucket("allocated"), allocated);
    assert_eq!(per_bucket("released"), released);
    assert_eq!(
        (&usage["allocated"], &usage["released"], &usage["held_now"]),
        (&json!(3), &json!(2), &json!(1))
    );
    // Held 2.5 h and 0.5 h: nearest-rank median is the shorter one.
    assert_eq!(
        usage["lab_duration"],
        json!({"count": 2, "mean_seconds": 5400, "p50_seconds": 1800, "p90_seconds": 9000, "max_seconds": 9000})
    );

    let labs = json_of(app.admin_get("/v1/admin/tracks").await, StatusCode::OK).await;
    let held: Vec<(&Value, &Value, &Value)> = labs["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (&t["track_name"], &t["released"], &t["mean_held_seconds"]))
        .collect();
    assert_eq!(
        held,
        [
            (&json!("dns"), &json!(1), &json!(9000)),
            (&json!("sec"), &json!(1), &json!(1800))
        ]
    );
}

#[tokio::test]
async fn usage_defaults_to_a_day_of_hours_and_refuses_bad_windows() {
    let app = TestApp::spawn().await;
    let usage = json_of(app.admin_get("/v1/admin/usage").await, StatusCode::OK).await;
    assert_eq!(usage["bucket_seconds"], 3600);
    assert_eq!(usage["buckets"].as_array().unwrap().len(), 25);
    assert_eq!(
        usage["lab_duration"],
        json!({"count": 0, "mean_seconds": 0, "p50_seconds": 0, "p90_seconds": 0, "max_seconds": 0})
    );
    for (query, field) in [
        ("hours=0", "hours"),
        ("hours=721", "hours"),
        ("hours=abc", "hours"),
        ("hours=-1", "hours"),
        ("bucket_minutes=0", "bucket_minutes"),
        ("hours=720&bucket_minutes=1", "bucket_minutes"),
    ] {
        let error = error_of(
            app.admin_get(&format!("/v1/admin/usage?{query}")).await,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            error.to_string().contains(field),
            "{query}: the error names {field}: {error}"
        );
    }
}

#[tokio::test]
async fn niosxaas_overview_reports_a_disabled_hook_and_checks_its_limit() {
    let app = TestApp::spawn().await;
    let overview = json_of(app.admin_get("/v1/admin/niosxaas").await, StatusCode::OK).await;
    assert_eq!(
        overview,
        json!({"enabled": false, "shadow_mode": false, "breaker": null,
               "counts": {"cleaned": 0, "skipped": 0, "failed": 0, "pending": 0},
               "total_records": 0, "records": []})
    );
    for bad in ["0", "1001", "x"] {
        error_of(
            app.admin_get(&format!("/v1/admin/niosxaas?limit={bad}"))
                .await,
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
        )
        .await;
    }
    let jobs = json_of(app.admin_get("/v1/admin/jobs").await, StatusCode::OK).await;
    assert_eq!(
        jobs["breakers"],
        json!({"provider": null, "niosxaas": null})
    );
}
