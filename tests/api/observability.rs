//! The operators' alert rules (docs/alerts.yml) and Grafana dashboard
//! (docs/grafana-dashboard.json): they parse, cover what an operator must be woken for,
//! and name only series a live instance exports (checked on each store by the suite that
//! runs it; `promtool check rules` runs too where Prometheus is installed).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::spawn_app_counting_prefixes;

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn alert_rules() -> Vec<Value> {
    let file: Value = serde_yaml_ng::from_str(&doc("alerts.yml")).expect("alerts.yml is YAML");
    file["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&doc("grafana-dashboard.json")).expect("the dashboard is JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().expect("targets").clone())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// The `broker_…` series names an expression mentions.
fn series_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("broker_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn the_alert_rules_cover_the_pool_deletions_breakers_errors_latency_and_jobs() {
    let rules = alert_rules();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: expr"
        );
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{name}: severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation].as_str().is_some(),
                "{name}: {annotation}"
            );
        }
    }
    let alerting_on = |series: &str| {
        rules
            .iter()
            .any(|rule| rule["expr"].as_str().unwrap_or_default().contains(series))
    };
    for series in [
        "broker_pool_available_by_prefix",
        "broker_pool_available)",
        "broker_pool_deletion_failed",
        "broker_provider_circuit_state",
        "broker_niosxaas_circuit_state",
        r#"status=~"5..""#,
        "histogram_quantile(0.99",
        "broker_job_next_run_timestamp_seconds",
        "broker_job_last_outcome",
        "broker_store_up",
    ] {
        assert!(alerting_on(series), "no alert on {series}");
    }
}

#[test]
fn promtool_accepts_the_rules_where_prometheus_is_installed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts.yml");
    match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        // Without Prometheus the parse and series checks here stand in for it.
        Err(err) => eprintln!("promtool not run: {err}"),
    }
}

#[test]
fn the_dashboard_has_a_panel_for_every_alerted_series() {
    let dashboard = dashboard_exprs().join("\n");
    for rule in alert_rules() {
        for series in series_in(rule["expr"].as_str().unwrap_or_default()) {
            assert!(
                dashboard.contains(&series),
                "{}: the dashboard shows no {series}",
                rule["alert"]
            );
        }
    }
}

#[tokio::test]
async fn every_series_the_rules_and_dashboard_name_is_exported() {
    let app = spawn_app_counting_prefixes("lab-").await;
    app.seed("lab-", 0, 2).await;
    app.allocate("stu").await;
    app.expire_now().await;
    let text = app.metrics_text().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    let on_dynamodb = exported.iter().any(|n| n.starts_with("broker_dynamodb_"));

    let mut expressions: Vec<String> = alert_rules()
        .iter()
        .map(|rule| rule["expr"].as_str().unwrap_or_default().to_owned())
        .collect();
    expressions.extend(dashboard_exprs());
    for expr in expressions {
        for series in series_in(&expr) {
            // The DynamoDB store's own series are checked when the DynamoDB suite runs this.
            if series.starts_with("broker_dynamodb_") && !on_dynamodb {
                continue;
            }
            let histogram = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| series.strip_suffix(suffix))
                .filter(|base| exported.contains(base));
            assert!(
                exported.contains(series.as_str()) || histogram.is_some(),
                "{series} (in `{expr}`) is not exported"
            );
            assert!(
                text.lines().any(|line| line.starts_with(series.as_str())),
                "{series} has no sample yet"
            );
        }
    }
}
