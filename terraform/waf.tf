# Optional (waf_enabled, on by default), as the Python deployment had: AWS's managed common
# and known-bad-input rules, and a per-address rate rule. Instruqt calls from a handful of
# addresses, so the rate limit is per address over 5 minutes and must stay far above a
# class start (1,500 students allocating, polling and releasing from one egress address).
resource "aws_wafv2_web_acl" "broker" {
  count = var.waf_enabled ? 1 : 0
  name  = var.name
  scope = "REGIONAL"

  default_action {
    allow {}
  }

  rule {
    name     = "common"
    priority = 10
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
        # The admin import takes up to 1 MiB of JSON; the group's 8 KB body limit would
        # block it. The service bounds bodies itself (413 above MAX_BODY_BYTES).
        rule_action_override {
          name = "SizeRestrictions_BODY"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-common"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "known-bad-inputs"
    priority = 20
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "rate"
    priority = 30
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit
        aggregate_key_type = "IP"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-rate"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = var.name
    sampled_requests_enabled   = true
  }
}

resource "aws_wafv2_web_acl_association" "broker" {
  count        = var.waf_enabled ? 1 : 0
  resource_arn = aws_lb.broker.arn
  web_acl_arn  = aws_wafv2_web_acl.broker[0].arn
}

# WAF's log group name must start with aws-waf-logs-.
resource "aws_cloudwatch_log_group" "waf" {
  count             = var.waf_enabled ? 1 : 0
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.broker.arn
}

resource "aws_wafv2_web_acl_logging_configuration" "broker" {
  count                   = var.waf_enabled ? 1 : 0
  resource_arn            = aws_wafv2_web_acl.broker[0].arn
  log_destination_configs = [aws_cloudwatch_log_group.waf[0].arn]
  # Tokens never reach the logs.
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }
}
