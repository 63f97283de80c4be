output "url" {
  description = "Base URL of the service (point the Instruqt tracks' broker URL here)."
  value       = "https://${aws_lb.broker.dns_name}"
}

output "dashboard_url" {
  description = "The operators' dashboard (asks for the admin token)."
  value       = "https://${aws_lb.broker.dns_name}/dashboard"
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer, for a CNAME or alias record on the certificate's name."
  value       = aws_lb.broker.dns_name
}

output "load_balancer_zone_id" {
  description = "Hosted zone of the load balancer, for a Route 53 alias record."
  value       = aws_lb.broker.zone_id
}

output "table_name" {
  description = "DDB_TABLE_NAME of the service."
  value       = aws_dynamodb_table.pool.name
}

output "table_arn" {
  description = "ARN of the table (what the task role may touch, with its indexes)."
  value       = aws_dynamodb_table.pool.arn
}

output "kms_key_arn" {
  description = "The key encrypting the table, its backups and the logs."
  value       = aws_kms_key.broker.arn
}

output "cluster_name" {
  description = "ECS cluster of the service and of the one-off init-table task."
  value       = aws_ecs_cluster.broker.name
}

output "service_name" {
  description = "ECS service of the broker."
  value       = aws_ecs_service.broker.name
}

output "init_table_task_definition" {
  description = "Task definition to run once with `aws ecs run-task` (see ecs.tf) to create or extend the table."
  value       = aws_ecs_task_definition.init_table.arn
}

output "task_security_group_id" {
  description = "Security group of the tasks (for init-table's run-task, and for scrapers)."
  value       = aws_security_group.tasks.id
}

output "private_subnet_ids" {
  description = "Subnets the tasks run in (for init-table's run-task)."
  value       = local.private_subnet_ids
}

output "vpc_id" {
  description = "The VPC the service runs in (created or given)."
  value       = local.vpc_id
}

output "log_group_name" {
  description = "CloudWatch log group of the service's JSON logs."
  value       = aws_cloudwatch_log_group.broker.name
}

output "web_acl_arn" {
  description = "WAF web ACL in front of the load balancer; null when waf_enabled is false."
  value       = var.waf_enabled ? aws_wafv2_web_acl.broker[0].arn : null
}

output "alarm_topic_arn" {
  description = "The SNS topic every CloudWatch alarm of this deployment notifies; subscribe a pager or chat to it."
  value       = aws_sns_topic.alarms.arn
}

output "service_discovery_name" {
  description = "The DNS name whose A records are the tasks (for a Prometheus in the VPC), or null without service_discovery_namespace."
  value       = var.service_discovery_namespace == null ? null : "${var.name}.${var.service_discovery_namespace}"
}
