//! The Prometheus series a team's dashboards and alerts were built on: every name, label
//! and label value the Python service exported keeps its meaning (docs/metrics.md), and the
//! series this service adds beside them are pinned here so none appears or goes unnoticed.

use std::collections::{BTreeMap, BTreeSet};

use crate::helpers::TestApp;

/// Family name → label names, from a text exposition (histogram samples folded into their
/// family, `le` left out).
fn families(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut kinds = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    let mut families: BTreeMap<String, BTreeSet<String>> = kinds
        .keys()
        .map(|name| (name.clone(), BTreeSet::new()))
        .collect();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                sample
                    .strip_suffix(suffix)
                    .filter(|base| kinds.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(sample);
        let labels = families.entry(family.to_owned()).or_default();
        if let Some(inside) = line[name_end..]
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map(|(inside, _)| inside)
        {
            for pair in inside.split(',').filter(|p| !p.is_empty()) {
                if let Some((label, _)) = pair.split_once('=')
                    && label != "le"
                {
                    labels.insert(label.to_owned());
                }
            }
        }
    }
    families
}

/// Values `label` takes in the samples of `family`.
fn values(exposition: &str, family: &str, label: &str) -> BTreeSet<String> {
    let prefix = format!("{family}{{");
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let start = rest.find(&format!("{label}=\""))? + label.len() + 2;
            let end = rest[start..].find('"')? + start;
            Some(rest[start..end].to_owned())
        })
        .collect()
}

/// The Python service's series and their label names (docs/metrics.md).
const PYTHON: &[(&str, &[&str])] = &[
    ("broker_allocate_total", &["outcome"]),
    ("broker_allocate_idempotent_hits_total", &[]),
    ("broker_allocate_conflicts_total", &[]),
    ("broker_deletion_marked_total", &["outcome"]),
    ("broker_sync_total", &["outcome"]),
    ("broker_sync_sandboxes_synced_total", &[]),
    ("broker_sync_sandboxes_stale_total", &[]),
    ("broker_cleanup_total", &["outcome"]),
    ("broker_cleanup_deleted_total", &[]),
    ("broker_cleanup_failed_total", &[]),
    ("broker_expiry_total", &["outcome"]),
    ("broker_expiry_orphaned_total", &[]),
    ("broker_pool_available", &[]),
    ("broker_pool_allocated", &[]),
    ("broker_pool_pending_deletion", &[]),
    ("broker_pool_stale", &[]),
    ("broker_pool_deletion_failed", &[]),
    ("broker_pool_total", &[]),
    (
        "broker_request_latency_seconds",
        &["method", "endpoint", "status"],
    ),
    ("broker_allocation_latency_seconds", &["outcome"]),
    ("broker_sync_duration_seconds", &[]),
    ("broker_cleanup_duration_seconds", &[]),
    ("broker_niosxaas_cleanup_total", &["outcome"]),
    ("broker_niosxaas_services_deleted_total", &[]),
    ("broker_niosxaas_auth_total", &["outcome"]),
];

/// The label values the Python service's dashboards and alerts match on.
const PYTHON_VALUES: &[(&str, &[&str])] = &[
    (
        "broker_allocate_total",
        &["success", "idempotent", "no_sandboxes", "error"],
    ),
    (
        "broker_deletion_marked_total",
        &[
            "success",
            "not_found",
            "not_owner",
            "not_allocated",
            "error",
        ],
    ),
    ("broker_sync_total", &["success", "error"]),
    ("broker_cleanup_total", &["success", "error"]),
    ("broker_expiry_total", &["success", "error"]),
    (
        "broker_niosxaas_cleanup_total",
        &["success", "skipped", "failed", "error"],
    ),
];

/// Ours, beside them (the embedded store adds no store series of its own).
const ADDED: &[(&str, &[&str])] = &[
    ("broker_audit_violations", &["check"]),
    ("broker_deletion_unverified_total", &[]),
    ("broker_admin_actions_unrecorded_total", &[]),
    ("broker_pool_quarantined", &[]),
    ("broker_pool_reserved", &[]),
    ("broker_auth_failures_total", &["outcome"]),
    ("broker_connections_open", &[]),
    ("broker_connections_shed_total", &[]),
    ("broker_auto_delete_stale_deleted_total", &[]),
    ("broker_reservation_short_sandboxes", &[]),
    ("broker_webhook_outbox_depth", &[]),
    ("broker_webhook_oldest_pending_seconds", &[]),
    ("broker_auto_delete_stale_total", &["outcome"]),
    ("broker_niosxaas_circuit_state", &[]),
    ("broker_niosxaas_cleanups_total", &["mode", "outcome"]),
    ("broker_niosxaas_services_total", &["mode"]),
    ("broker_provider_circuit_state", &[]),
    ("broker_rate_limit_callers", &[]),
    ("broker_rate_limited_total", &[]),
    ("broker_requests_in_flight", &[]),
    ("broker_store_up", &[]),
    ("broker_wait_queue_depth", &[]),
];

/// Ours that appear with their first call (their label sets are open-ended products).
const ON_FIRST_CALL: &[(&str, &[&str])] = &[
    (
        "broker_niosxaas_request_duration_seconds",
        &["operation", "outcome"],
    ),
    (
        "broker_provider_request_duration_seconds",
        &["operation", "outcome"],
    ),
    ("broker_job_last_finished_timestamp_seconds", &["job"]),
    ("broker_job_next_run_timestamp_seconds", &["job"]),
    ("broker_job_last_outcome", &["job", "outcome"]),
    ("broker_pool_available_by_prefix", &["prefix"]),
    ("broker_webhook_deliveries_total", &["endpoint", "outcome"]),
    ("broker_webhook_pending", &["endpoint"]),
    ("broker_token_allocations_total", &["token", "outcome"]),
    ("broker_wait_seconds", &["outcome"]),
    ("broker_lab_time_to_sandbox_seconds", &["lab"]),
    ("broker_lab_exhausted_total", &["lab"]),
    ("broker_lab_cleanup_seconds", &["lab"]),
    ("broker_pool_allocation_rate", &["prefix"]),
    ("broker_pool_time_to_empty_seconds", &["prefix"]),
    ("broker_pool_below_watermark", &["prefix"]),
];

/// The DynamoDB store's own series, registered beside the service's on that store only.
const DYNAMODB_STORE: &[(&str, &[&str])] = &[
    ("broker_dynamodb_call_duration_seconds", &["outcome"]),
    ("broker_dynamodb_retries_total", &["reason"]),
    ("broker_dynamodb_deadline_exceeded_total", &["where"]),
    ("broker_dynamodb_up", &[]),
    ("broker_dynamodb_queue_depth", &[]),
    ("broker_dynamodb_in_flight", &[]),
    ("broker_dynamodb_concurrency_limit", &[]),
    ("broker_dynamodb_queue_wait_seconds", &[]),
];

/// The embedded store's own series, registered beside the service's on that store only.
const EMBEDDED_STORE: &[(&str, &[&str])] = &[
    ("broker_store_commit_seconds", &[]),
    ("broker_store_writer_queue_depth", &[]),
];

fn as_map(list: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    list.iter()
        .map(|(name, labels)| {
            (
                (*name).to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_python_series_keeps_its_name_labels_and_values_and_ours_are_pinned() {
    let app = TestApp::spawn().await;
    // One request, so the per-request histogram has a series.
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let exposition = app.metrics_text().await;
    let exposed = families(&exposition);

    for (name, labels) in PYTHON {
        let expected: BTreeSet<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(exposed.get(*name), Some(&expected), "{name}");
    }
    for (name, python_values) in PYTHON_VALUES {
        let present = values(&exposition, name, "outcome");
        for value in *python_values {
            assert!(
                present.contains(*value),
                "{name}{{outcome={value:?}}}: {present:?}"
            );
        }
    }
    let mut at_start = as_map(PYTHON);
    at_start.extend(as_map(ADDED));
    if exposed.contains_key("broker_dynamodb_up") {
        at_start.extend(as_map(DYNAMODB_STORE));
    } else {
        at_start.extend(as_map(EMBEDDED_STORE));
    }
    let later = as_map(ON_FIRST_CALL);
    let unpinned: BTreeMap<&String, &BTreeSet<String>> = exposed
        .iter()
        .filter(|(name, labels)| at_start.get(*name).or_else(|| later.get(*name)) != Some(*labels))
        .collect();
    assert!(unpinned.is_empty(), "series not pinned here: {unpinned:?}");
    let missing: Vec<&String> = at_start
        .keys()
        .filter(|name| !exposed.contains_key(*name))
        .collect();
    assert!(missing.is_empty(), "series missing at start: {missing:?}");
}

#[tokio::test]
async fn releases_are_counted_with_the_python_services_outcomes() {
    let app = TestApp::spawn().await;
    app.seed("lab-", 0, 2).await;
    let body: serde_json::Value = app.allocate("stu-1").await.json().await.unwrap();
    let id = body["sandbox_id"].as_str().unwrap().to_owned();

    app.mark(&id, "stu-2").await;
    app.mark(&id, "stu-1").await;
    app.mark(&id, "stu-1").await;
    app.mark("999999", "stu-1").await;

    let metrics = app.metrics_text().await;
    for outcome in ["not_owner", "success", "not_allocated", "not_found"] {
        let line = format!("broker_deletion_marked_total{{outcome=\"{outcome}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
}

#[test]
fn docs_metrics_md_lists_every_series_with_its_labels() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"),
    )
    .unwrap();
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in doc.lines().filter(|line| line.starts_with("| `broker_")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let [name, kind, labels, meaning] = cells[..] else {
            panic!("a row of four cells: {row}")
        };
        assert!(
            ["counter", "gauge", "histogram"].contains(&kind),
            "{name}: type {kind}"
        );
        assert!(!meaning.is_empty(), "{name}: meaning");
        let labels: BTreeSet<String> = labels
            .split(',')
            .map(|label| label.trim().trim_matches('`').to_owned())
            .filter(|label| !label.is_empty() && label != "—")
            .collect();
        let fresh = documented.insert(name.trim_matches('`').to_owned(), labels);
        assert!(fresh.is_none(), "{name} twice");
    }
    let mut registry = as_map(PYTHON);
    for list in [ADDED, ON_FIRST_CALL, DYNAMODB_STORE, EMBEDDED_STORE] {
        registry.extend(as_map(list));
    }
    assert_eq!(
        documented, registry,
        "docs/metrics.md and the registry differ"
    );
}
