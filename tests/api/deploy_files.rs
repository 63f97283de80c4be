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
        let dns =
            rule.contains("from_port   = 53") && rule.contains("data.aws_vpc.selected.cidr_block");
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
