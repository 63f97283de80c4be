//! The fleet's schedule: each scheduled job runs once per interval across a
//! fleet, and a run that loses its lease stops and records nothing. On both stores.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use sandbox_broker::domain::clock::{Clock, ManualClock};
use sandbox_broker::store::LeaseOutcome;
use sandbox_broker::store::LeaseRequest;
use serde_json::Value;

use crate::helpers::csp::{account, csp, listings, use_csp};
use crate::helpers::{TestApp, error_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_with_a_two_second_interval_list_the_provider_at_most_six_times_in_ten_seconds()
 {
    let provider = csp(
        (1..=3).map(|n| account(n, &format!("lab-{n}"))).collect(),
        Duration::ZERO,
    )
    .await;
    let (stores, guard) = crate::flavor::fleet_stores(3).await;
    let mut fleet = Vec::new();
    for store in stores {
        let app = TestApp::builder()
            .store(store, Box::new(()))
            .config(|c| {
                use_csp(c, &provider);
                c.jobs.sync_interval = Duration::from_secs(2);
                c.jobs.cleanup_interval = Duration::from_secs(3600);
            })
            .spawn()
            .await;
        fleet.push(app);
    }
    let _guard = guard;

    tokio::time::sleep(Duration::from_secs(10)).await;
    let listed = listings(&provider).await;
    assert!(
        (2..=6).contains(&listed),
        "{listed} listings in 10 s from 3 instances at a 2 s interval"
    );
    let job = fleet[0].job("sync").await;
    assert_eq!(job["last_outcome"], "completed", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_taken_over_stops_and_records_nothing() {
    // The listing takes two seconds: time enough to take the lease over mid-run.
    let provider = csp(
        (1..=3).map(|n| account(n, &format!("lab-{n}"))).collect(),
        Duration::from_secs(2),
    )
    .await;
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::builder()
        .clock(clock.clone())
        .config(|c| {
            use_csp(c, &provider);
            c.jobs.job_lease = Duration::from_secs(6);
        })
        .spawn()
        .await;
    let running = {
        let request = app.admin(Method::POST, "/v1/admin/sync");
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    let mut job = Value::Null;
    for _ in 0..200 {
        job = app.job("sync").await;
        if job["lease_holder"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ours = job["lease_holder"]
        .as_str()
        .expect("the run took the lease")
        .to_owned();

    // Another instance takes the lease over once it would have run out (as after a long
    // pause of ours), then our run's next renewal — a third of a lease on — finds it.
    let after_ours_ran_out = clock.now_ms() + 6_001;
    let taken = app
        .store
        .jobs
        .acquire_lease(LeaseRequest {
            job: "sync",
            instance: "intruder",
            now: after_ours_ran_out,
            ttl: std::time::Duration::from_millis(60_000),
        })
        .await
        .unwrap();
    assert_eq!(taken, LeaseOutcome::Acquired);
    clock.advance(Duration::from_secs(2));

    let answer = running.await.unwrap();
    let refused = error_of(answer, StatusCode::CONFLICT, "JOB_ALREADY_RUNNING").await;
    assert!(
        refused["message"].as_str().unwrap().contains("intruder"),
        "{refused}"
    );
    // The listing it was waiting for is never applied, and the job's record stays the
    // intruder's: nothing of the fenced run is written.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(app.stats().await["total"], 0);
    let job = app.job("sync").await;
    assert_eq!(job["lease_holder"], "intruder", "{job}");
    assert_eq!(job["last_outcome"], Value::Null, "{job}");
    assert_ne!(ours, "intruder");
}
