# CloudWatch alarms for what AWS sees of the service (the service's own alerts are
# Prometheus rules, docs/alerts.yml): 5xx at the load balancer, unhealthy targets, a
# throttling table, and fewer running tasks than the autoscaling floor. Each notifies one
# SNS topic, encrypted with the deployment's key; subscribe to it (alarm_email, or route
# its ARN, an output, to a pager).
resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.broker.arn
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  alarm_name          = "${var.name}-5xx"
  alarm_description   = "The service answered 5xx more than 10 times a minute for 5 minutes (docs/runbooks.md#errors-5xx)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  dimensions          = { LoadBalancer = aws_lb.broker.arn_suffix }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 10
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  alarm_name          = "${var.name}-unhealthy-targets"
  alarm_description   = "A task has failed the load balancer's /readyz check for 5 minutes: its store is unreachable (docs/runbooks.md#store-down)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.broker.arn_suffix, TargetGroup = aws_lb_target_group.broker.arn_suffix }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "table_throttled" {
  alarm_name          = "${var.name}-table-throttled"
  alarm_description   = "DynamoDB throttled the table's reads or writes in 3 of 5 minutes: allocations slow down (docs/runbooks.md#slow-allocations)."
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "throttled"
    expression  = "reads + writes"
    label       = "Throttle events"
    return_data = true
  }
  metric_query {
    id = "reads"
    metric {
      namespace   = "AWS/DynamoDB"
      metric_name = "ReadThrottleEvents"
      dimensions  = { TableName = aws_dynamodb_table.pool.name }
      stat        = "Sum"
      period      = 60
    }
  }
  metric_query {
    id = "writes"
    metric {
      namespace   = "AWS/DynamoDB"
      metric_name = "WriteThrottleEvents"
      dimensions  = { TableName = aws_dynamodb_table.pool.name }
      stat        = "Sum"
      period      = 60
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "too_few_tasks" {
  alarm_name          = "${var.name}-too-few-tasks"
  alarm_description   = "Fewer tasks run than the autoscaling floor (min_count) for 5 minutes: tasks keep failing to start or stay up (the deployment circuit breaker, the task logs)."
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  dimensions          = { ClusterName = aws_ecs_cluster.broker.name, ServiceName = aws_ecs_service.broker.name }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.min_count
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Optional service discovery: every task registers an A record <name>.<namespace>, so a
# Prometheus inside the VPC (metrics_scraper_cidrs) finds each one to scrape.
resource "aws_service_discovery_private_dns_namespace" "broker" {
  count       = var.service_discovery_namespace == null ? 0 : 1
  name        = var.service_discovery_namespace
  description = "${var.name}: tasks for Prometheus to scrape"
  vpc         = local.vpc_id
}

resource "aws_service_discovery_service" "broker" {
  count = var.service_discovery_namespace == null ? 0 : 1
  name  = var.name
  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.broker[0].id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {
    failure_threshold = 1
  }
}
