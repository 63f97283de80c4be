//! The pool forecast and low watermarks, black-box on both stores: per name prefix, the
//! last quarter hour's allocation rate, the time to empty, and whether it is below its mark.

use reqwest::StatusCode;

use crate::helpers::{TestApp, json_of, series_sum};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_below_its_watermark_is_flagged_with_its_time_to_empty() {
    let app = TestApp::builder()
        .config(|c| {
            c.http.pool_low_watermarks =
                sandbox_broker::http::config::PoolWatermarks::parse("lab-:3,nios-:1").unwrap();
        })
        .spawn()
        .await;
    app.seed("lab-", 0, 5).await;
    app.seed("nios-", 100, 4).await;
    for n in 0..3 {
        let lab = app
            .allocate_with(&format!("stu-{n}"), &[("X-Sandbox-Name-Prefix", "lab-")])
            .await;
        json_of(lab, StatusCode::CREATED).await;
    }
    let metrics = app.metrics_text().await;
    let value = |series: &str, prefix: &str| {
        series_sum(&metrics, &format!("{series}{{prefix=\"{prefix}\"}}"))
    };
    assert_eq!(
        value("broker_pool_below_watermark", "lab-"),
        1.0,
        "2 left under a mark of 3"
    );
    assert_eq!(value("broker_pool_below_watermark", "nios-"), 0.0);
    let rate = value("broker_pool_allocation_rate", "lab-");
    assert!(
        (rate - 3.0 / 900.0).abs() < 1e-9,
        "three in the last 15 minutes: {rate}"
    );
    let to_empty = value("broker_pool_time_to_empty_seconds", "lab-");
    assert!(
        (to_empty - 600.0).abs() < 1e-6,
        "2 left at 3 per 900 s: {to_empty}"
    );
    let nios = metrics
        .lines()
        .find(|line| line.starts_with("broker_pool_time_to_empty_seconds{prefix=\"nios-\"}"))
        .unwrap_or_default();
    let infinite = nios
        .rsplit(' ')
        .next()
        .and_then(|value| value.parse::<f64>().ok())
        .is_some_and(f64::is_infinite);
    assert!(infinite, "nothing taken: infinite: {nios:?}");
    assert_eq!(value("broker_pool_available_by_prefix", "nios-"), 4.0);
}
