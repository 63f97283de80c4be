//! The operators' alert rules (docs/alerts.yml) and Grafana dashboard
//! (docs/grafana-dashboard.json): they parse, cover what an operator must be woken for,
//! and name only series a live instance exports (checked on each store by the suite that
//! runs it), and `promtool check rules` and `promtool test rules` (Debian's Prometheus,
//! installed when missing) over the rules and their unit tests.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::TestApp;

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

/// `promtool` (Debian's `prometheus` package, installed when missing) on `args`.
fn promtool(args: &[&str]) -> std::process::Output {
    let promtool = crate::helpers::tools::debian_binary("promtool", "prometheus");
    Command::new(promtool)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"))
        .output()
        .expect("run promtool")
}

#[test]
fn promtool_accepts_the_rules_and_every_alert_passes_its_unit_tests() {
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let output = promtool(&args);
        assert!(
            output.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every alert has a test in which it fires, and is checked silent on a healthy service.
    let tests: Value = serde_yaml_ng::from_str(&doc("alerts.test.yml")).expect("YAML");
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_array().unwrap())
        .collect();
    let healthy = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|test| test["name"] == "healthy")
        .expect("a healthy test");
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            cases.iter().any(|case| case["alertname"] == name
                && case["exp_alerts"]
                    .as_array()
                    .is_some_and(|fired| !fired.is_empty())),
            "{name} is never tested firing"
        );
        assert!(
            healthy["alert_rule_test"]
                .as_array()
                .unwrap()
                .iter()
                .any(|case| case["alertname"] == name && case.get("exp_alerts").is_none()),
            "{name} is not checked silent on a healthy service"
        );
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = runbook
            .strip_prefix("docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {runbook:?}"));
        let runbooks = doc("runbooks.md");
        assert!(
            runbooks
                .lines()
                .filter_map(|line| line.strip_prefix("## "))
                .any(|heading| github_anchor(heading) == anchor),
            "{name}: docs/runbooks.md has no section #{anchor}"
        );
    }
}

/// The anchor GitHub gives a heading: lower case, spaces to `-`, other punctuation dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
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
    let app = TestApp::builder()
        .pool_prefixes("lab-")
        .config(|c| {
            c.http.pool_low_watermarks =
                sandbox_broker::http::config::PoolWatermarks::parse("lab-:5").unwrap();
            c.csp.allow_http_upstreams = true;
            c.webhooks.allow_private_webhooks = true;
        })
        .spawn()
        .await;
    app.seed("lab-", 0, 2).await;
    // An endpoint nobody listens at: the allocation's event is attempted, and fails.
    let endpoint = app
        .admin(reqwest::Method::POST, "/v1/admin/webhooks")
        .json(&serde_json::json!({"url": "http://127.0.0.1:9/hooks", "events": ["sandbox.allocated"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), reqwest::StatusCode::CREATED);
    app.allocate("stu").await;
    app.expire_now().await;
    let mut text = app.metrics_text().await;
    for _ in 0..100 {
        if text.contains("broker_webhook_deliveries_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        text = app.metrics_text().await;
    }
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
