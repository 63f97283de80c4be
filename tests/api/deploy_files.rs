//! The deployment files, checked statically (Terraform and Docker do not run here): the
//! hardening the threat model (docs/security.md) relies on is present and stays present.

use std::path::Path;

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The text of the block that starts at `header` (through its matching closing brace).
fn block<'a>(text: &'a str, header: &str) -> &'a str {
    let start = text
        .find(header)
        .unwrap_or_else(|| panic!("no block {header:?}"));
    let mut depth = 0;
    for (offset, character) in text[start..].char_indices() {
        match character {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[start..=start + offset];
                }
            }
            _ => {}
        }
    }
    panic!("block {header:?} is not closed")
}

/// Every `egress { ... }` block inside `text`.
fn egress_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("egress {") {
        let found = block(&rest[at..], "egress {");
        blocks.push(found);
        rest = &rest[at + found.len()..];
    }
    blocks
}

#[test]
fn the_load_balancer_drops_invalid_headers_and_keeps_metrics_off_the_public_listener() {
    let alb = read("terraform/alb.tf");
    let lb = block(&alb, r#"resource "aws_lb" "broker""#);
    assert!(lb.contains("drop_invalid_header_fields = true"), "{lb}");
    let rule = block(
        &alb,
        r#"resource "aws_lb_listener_rule" "no_public_metrics""#,
    );
    assert!(
        rule.contains(r#""/metrics""#) && rule.contains("fixed-response"),
        "{rule}"
    );
    assert!(rule.contains(r#"status_code  = "404""#), "{rule}");
}

#[test]
fn tasks_run_read_only_and_talk_out_only_on_https_and_dns() {
    let ecs = read("terraform/ecs.tf");
    let service = block(&ecs, r#"resource "aws_ecs_task_definition" "broker""#);
    assert!(
        service.contains("readonlyRootFilesystem = true"),
        "{service}"
    );
    assert!(
        service.contains(r#"containerPath = "/tmp""#),
        "a writable /tmp"
    );
    let tasks = block(&ecs, r#"resource "aws_security_group" "tasks""#);
    let egress = egress_blocks(tasks);
    assert_eq!(egress.len(), 3, "{tasks}");
    for rule in egress {
        let https = rule.contains("from_port   = 443") && rule.contains(r#"protocol    = "tcp""#);
        let dns = rule.contains("from_port   = 53") && rule.contains("local.vpc_cidr");
        assert!(
            https || dns,
            "egress beyond HTTPS and the VPC's DNS: {rule}"
        );
        assert!(!rule.contains(r#""-1""#), "{rule}");
    }
}

#[test]
fn only_the_init_table_role_may_create_or_change_the_table() {
    let iam = read("terraform/iam.tf");
    let service = block(&iam, r#"data "aws_iam_policy_document" "table""#);
    for forbidden in ["CreateTable", "UpdateTable", "DeleteTable", "dynamodb:*"] {
        assert!(
            !service.contains(forbidden),
            "the task role holds {forbidden}"
        );
    }
    let init = block(&iam, r#"data "aws_iam_policy_document" "init_table""#);
    assert!(init.contains("dynamodb:CreateTable") && init.contains("dynamodb:UpdateTable"));
    let ecs = read("terraform/ecs.tf");
    let task = block(&ecs, r#"resource "aws_ecs_task_definition" "init_table""#);
    assert!(task.contains("aws_iam_role.init_table.arn"), "{task}");
    let service_task = block(&ecs, r#"resource "aws_ecs_task_definition" "broker""#);
    assert!(service_task.contains("task_role_arn            = aws_iam_role.task.arn"));
}

#[test]
fn the_image_must_be_pinned_by_digest() {
    let variables = read("terraform/variables.tf");
    let image = block(&variables, r#"variable "image""#);
    assert!(image.contains("@sha256:[0-9a-f]{64}$"), "{image}");
}

#[test]
fn cargo_run_runs_the_service_not_the_benchmark() {
    // The README's first command is `cargo run -- demo`; with two binaries in the
    // package, cargo needs to be told which one that is.
    let manifest = read("Cargo.toml");
    let package = block_until_next_table(&manifest, "[package]");
    assert!(
        package.contains(r#"default-run = "sandbox-broker""#),
        "{package}"
    );
}

/// A TOML table's text, from its header to the next header.
fn block_until_next_table<'a>(text: &'a str, header: &str) -> &'a str {
    let start = text.find(header).unwrap_or_else(|| panic!("no {header}"));
    let body = &text[start + header.len()..];
    let end = body.find("\n[").unwrap_or(body.len());
    &body[..end]
}

/// The compose file, parsed.
fn compose() -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn environment<'a>(service: &'a serde_yaml_ng::Value, name: &str) -> Option<&'a str> {
    service["environment"][name].as_str()
}

#[test]
fn compose_brings_up_dynamodb_local_the_table_the_provider_and_the_broker_on_it() {
    let compose = compose();
    let services = &compose["services"];
    let command = |name: &str| services[name]["command"][0].as_str().map(str::to_owned);
    assert!(
        services["dynamodb-local"]["image"]
            .as_str()
            .unwrap()
            .starts_with("amazon/dynamodb-local:")
    );
    // init-table runs once, and the broker waits for it and for a healthy provider.
    assert_eq!(command("init-table").as_deref(), Some("init-table"));
    assert_eq!(services["init-table"]["restart"], "on-failure");
    assert_eq!(command("provider").as_deref(), Some("simulate-provider"));
    assert!(services["provider"]["healthcheck"]["test"].is_sequence());
    let broker = &services["broker"];
    assert_eq!(command("broker").as_deref(), Some("serve"));
    assert_eq!(
        broker["depends_on"]["init-table"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(
        broker["depends_on"]["provider"]["condition"],
        "service_healthy"
    );
    assert_eq!(environment(broker, "BROKER_STORE"), Some("dynamodb"));
    // Tokens are required from the environment, never written into the file:
    // `cp .env.example .env` leaves them unset, and compose then stops at once naming
    // the variable and how to make one, instead of a broker restarting on a placeholder.
    for token in ["BROKER_API_TOKEN", "BROKER_ADMIN_TOKEN"] {
        let demanded = environment(broker, token).unwrap_or_default();
        assert!(
            demanded.starts_with(&format!("${{{token}:?set {token} in .env"))
                && demanded.contains("openssl rand -hex 24"),
            "{token}: {demanded}"
        );
        let example = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example"),
        )
        .unwrap();
        assert!(
            example.lines().any(|line| line == format!("# {token}=")),
            ".env.example leaves {token} for the user to set"
        );
        assert!(
            !example
                .lines()
                .any(|line| line.starts_with(&format!("{token}="))),
            ".env.example sets no placeholder {token}"
        );
    }
    assert_eq!(
        environment(broker, "DDB_ENDPOINT_URL"),
        Some("http://dynamodb-local:8000")
    );
    assert_eq!(
        environment(broker, "CSP_BASE_URL"),
        Some("http://provider:9000/v2")
    );
    // The provider accepts exactly the token the broker sends.
    assert_eq!(
        environment(broker, "CSP_API_TOKEN"),
        environment(&services["provider"], "CSP_API_TOKEN")
    );
    assert_eq!(
        environment(&services["provider"], "SIMULATOR_LISTEN_ADDR"),
        Some("0.0.0.0:9000")
    );
    // Every image but ours is pinned to a version; ours is built here, never pulled.
    for (name, service) in services.as_mapping().unwrap() {
        let image = service["image"].as_str().unwrap_or_default();
        if image == "sandbox-broker:local" {
            assert_eq!(service["build"], ".", "{name:?} must build the image");
        }
        assert!(
            image == "sandbox-broker:local" || (image.contains(':') && !image.ends_with(":latest")),
            "{name:?} image {image:?} is not pinned"
        );
    }
}

#[test]
fn compose_offers_prometheus_and_grafana_with_the_alerts_and_the_dashboard() {
    let compose = compose();
    let services = &compose["services"];
    for name in ["prometheus", "grafana"] {
        assert_eq!(
            services[name]["profiles"][0], "observability",
            "{name} is optional"
        );
    }
    let mounts = |name: &str| -> Vec<String> {
        services[name]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let all: Vec<String> = [mounts("prometheus"), mounts("grafana")].concat();
    for wanted in [
        "./docs/alerts.yml:/etc/prometheus/alerts.yml:ro",
        "./docs/grafana-dashboard.json:/var/lib/grafana/dashboards/sandbox-broker.json:ro",
    ] {
        assert!(all.iter().any(|m| m == wanted), "{wanted} not mounted");
    }
    // Every mounted file exists, and the Prometheus config scrapes the broker and loads
    // the rules where they are mounted.
    for mount in &all {
        let local = mount.split(':').next().unwrap();
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(local).is_file(),
            "{local} is mounted but missing"
        );
    }
    let prometheus: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("docs/compose/prometheus.yml")).unwrap();
    assert_eq!(prometheus["rule_files"][0], "/etc/prometheus/alerts.yml");
    assert_eq!(
        prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "broker:8080"
    );
    let datasource: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("docs/compose/grafana-datasource.yml")).unwrap();
    assert_eq!(
        datasource["datasources"][0]["url"],
        "http://prometheus:9090"
    );
    let dashboards: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("docs/compose/grafana-dashboards.yml")).unwrap();
    assert_eq!(
        dashboards["providers"][0]["options"]["path"],
        "/var/lib/grafana/dashboards"
    );
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile").replace("\\\n", " ");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
            (instruction.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_image_builds_dependencies_in_their_own_layer_and_runs_slim_as_a_non_root_user() {
    let steps = dockerfile();
    let from: Vec<&str> = steps
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    assert!(from[0].starts_with("rust:") && from[0].ends_with(" AS build"));
    assert!(
        from[1].contains("-slim") || from[1].contains("distroless"),
        "runtime {}",
        from[1]
    );
    // The manifests are copied and built before the sources arrive.
    let position = |wanted: &dyn Fn(&(String, String)) -> bool| {
        steps.iter().position(wanted).expect("step present")
    };
    let manifests = position(&|(i, r)| i == "COPY" && r.starts_with("Cargo.toml Cargo.lock"));
    let deps_build = position(&|(i, r)| i == "RUN" && r.contains("cargo build --release --locked"));
    let sources = position(&|(i, r)| i == "COPY" && r.starts_with("src"));
    assert!(manifests < deps_build && deps_build < sources, "{steps:?}");
    let runtime = steps.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let user = steps[runtime..]
        .iter()
        .find(|(i, _)| i == "USER")
        .map(|(_, who)| who.as_str())
        .expect("a USER in the runtime stage");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(
        !steps
            .iter()
            .any(|(i, r)| i == "ENV" && (r.contains("TOKEN") || r.contains("SECRET"))),
        "no secret baked into the image"
    );
    assert!(steps.iter().any(|(i, _)| i == "HEALTHCHECK"));
}

#[test]
fn the_module_holds_what_a_production_deployment_needs() {
    let table = read("terraform/dynamodb.tf");
    let table = block(&table, r#"resource "aws_dynamodb_table" "pool""#);
    for wanted in [
        r#"billing_mode = "PAY_PER_REQUEST""#,
        r#"name            = "StatusIndex""#,
        r#"name            = "TrackIndex""#,
        r#"name            = "IdempotencyIndex""#,
        r#"attribute_name = "ttl""#,
        "deletion_protection_enabled = true",
        "kms_key_arn = aws_kms_key.broker.arn",
    ] {
        assert!(table.contains(wanted), "the table lacks {wanted}");
    }
    assert!(block(table, "point_in_time_recovery").contains("enabled = true"));
    let scaling = read("terraform/autoscaling.tf");
    assert_eq!(
        scaling
            .matches(r#"policy_type        = "TargetTrackingScaling""#)
            .count(),
        2
    );
    assert!(
        scaling.contains("ALBRequestCountPerTarget")
            && scaling.contains("ECSServiceAverageCPUUtilization")
    );
    let waf = read("terraform/waf.tf");
    for wanted in [
        "AWSManagedRulesCommonRuleSet",
        "rate_based_statement",
        "count = var.waf_enabled ? 1 : 0",
    ] {
        assert!(waf.contains(wanted), "the WAF lacks {wanted}");
    }
    let alb = read("terraform/alb.tf");
    assert!(
        block(&alb, r#"resource "aws_lb_target_group" "broker""#)
            .contains(r#"path                = "/readyz""#)
    );
    assert!(
        block(&alb, r#"resource "aws_lb_listener" "https""#)
            .contains(r#"protocol          = "HTTPS""#)
    );
    let network = read("terraform/network.tf");
    assert!(network.contains("create_vpc         = var.vpc_id == null"));
    // Tokens reach the tasks only as secrets, never as plain environment values.
    let ecs = read("terraform/ecs.tf");
    let task = block(&ecs, r#"resource "aws_ecs_task_definition" "broker""#);
    let environment =
        &task[task.find("environment = ").unwrap()..task.find("readonlyRootFilesystem").unwrap()];
    assert!(
        !environment.contains("TOKEN") && !environment.contains("PASSWORD"),
        "{environment}"
    );
    assert!(
        task.contains(r#"{ name = "BROKER_ADMIN_TOKEN", valueFrom = var.admin_token_secret_arn }"#)
    );
    assert!(
        block(&ecs, r#"resource "aws_cloudwatch_log_group" "broker""#)
            .contains("retention_in_days = var.log_retention_days")
    );
}
