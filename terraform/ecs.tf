resource "aws_cloudwatch_log_group" "broker" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.broker.arn
}

resource "aws_ecs_cluster" "broker" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

locals {
  # What both containers (the service and the one-off init-table) need to find the table.
  table_environment = [
    { name = "BROKER_STORE", value = "dynamodb" },
    { name = "DDB_TABLE_NAME", value = aws_dynamodb_table.pool.name },
    { name = "AWS_REGION", value = var.region },
    { name = "LOG_FORMAT", value = "json" },
  ]
  log_options = {
    awslogs-group  = aws_cloudwatch_log_group.broker.name
    awslogs-region = var.region
  }
}

resource "aws_ecs_task_definition" "broker" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([{
    name         = "broker"
    image        = var.image
    command      = ["serve"]
    essential    = true
    portMappings = [{ containerPort = 8080, protocol = "tcp" }]
    environment = concat(local.table_environment, [
      { name = "NIOSXAAS_ENABLED", value = tostring(var.niosxaas_enabled) },
      { name = "NIOSXAAS_SHADOW_MODE", value = tostring(var.niosxaas_shadow_mode) },
      { name = "NIOSXAAS_SERVICE_NAME", value = var.niosxaas_service_name },
      { name = "BROKER_LISTEN_ADDR", value = "0.0.0.0:8080" },
      { name = "LAB_DURATION_HOURS", value = tostring(var.lab_duration_hours) },
      # The load balancer is the only peer; believe its X-Forwarded-For.
      { name = "TRUSTED_PROXIES", value = local.vpc_cidr },
      ],
      # Every other documented setting, as the operator gives it (validated in variables.tf).
      [for name in sort(keys(var.settings)) : { name = name, value = var.settings[name] }],
    )
    # Nothing in the image is written at run time; /tmp is the one writable place.
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    secrets = concat(
      [
        { name = "BROKER_API_TOKEN", valueFrom = var.api_token_secret_arn },
        { name = "BROKER_ADMIN_TOKEN", valueFrom = var.admin_token_secret_arn },
      ],
      var.csp_api_token_secret_arn == null ? [] : [
        { name = "CSP_API_TOKEN", valueFrom = var.csp_api_token_secret_arn },
      ],
      var.niosxaas_credentials_secret_arn == null ? [] : [
        { name = "NIOSXAAS_EMAIL", valueFrom = "${var.niosxaas_credentials_secret_arn}:email::" },
        { name = "NIOSXAAS_PASSWORD", valueFrom = "${var.niosxaas_credentials_secret_arn}:password::" },
      ],
      var.metrics_token_secret_arn == null ? [] : [
        { name = "METRICS_TOKEN", valueFrom = var.metrics_token_secret_arn },
      ],
    )
    # Liveness only: a DynamoDB outage must not get healthy tasks replaced (readiness is
    # the load balancer's /readyz check, which takes a task out of rotation instead).
    healthCheck = {
      command     = ["CMD-SHELL", "curl -fsS http://127.0.0.1:8080/healthz || exit 1"]
      interval    = 15
      timeout     = 3
      retries     = 3
      startPeriod = 10
    }
    # SIGTERM drains in-flight requests; REQUEST_TIMEOUT_SEC (30) bounds the drain.
    stopTimeout = 35
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "broker" })
    }
  }])

  volume {
    name = "tmp"
  }
}

# `init-table` as a one-off task with its own role, the only one that may create or
# change the table (the service's role cannot):
#
#   aws ecs run-task --cluster <name> --launch-type FARGATE --task-definition <name>-init-table \
#     --network-configuration 'awsvpcConfiguration={subnets=[...],securityGroups=[<tasks sg>]}'
resource "aws_ecs_task_definition" "init_table" {
  family                   = "${var.name}-init-table"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.init_table.arn

  container_definitions = jsonencode([{
    name                   = "init-table"
    image                  = var.image
    command                = ["init-table"]
    essential              = true
    readonlyRootFilesystem = true
    environment            = local.table_environment
    logConfiguration = {
      logDriver = "awslogs"
      options   = merge(local.log_options, { awslogs-stream-prefix = "init-table" })
    }
  }])
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "The tasks of ${var.name}: the load balancer (and Prometheus) in, HTTPS and DNS out"
  vpc_id      = local.vpc_id
  ingress {
    description     = "The load balancer"
    from_port       = 8080
    to_port         = 8080
    protocol        = "tcp"
    security_groups = [aws_security_group.alb.id]
  }
  # Prometheus inside the VPC scrapes /metrics on the tasks directly.
  dynamic "ingress" {
    for_each = length(var.metrics_scraper_cidrs) > 0 ? [1] : []
    content {
      description = "Prometheus scrapes /metrics"
      from_port   = 8080
      to_port     = 8080
      protocol    = "tcp"
      cidr_blocks = var.metrics_scraper_cidrs
    }
  }
  # HTTPS only: DynamoDB, the CSP API, Secrets Manager, ECR and CloudWatch are all 443.
  egress {
    description = "HTTPS to AWS APIs and the CSP"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  # The VPC's resolver (the base address plus two) is inside the VPC's CIDR.
  egress {
    description = "DNS (udp)"
    from_port   = 53
    to_port     = 53
    protocol    = "udp"
    cidr_blocks = [local.vpc_cidr]
  }
  egress {
    description = "DNS (tcp)"
    from_port   = 53
    to_port     = 53
    protocol    = "tcp"
    cidr_blocks = [local.vpc_cidr]
  }
}

resource "aws_ecs_service" "broker" {
  name            = var.name
  cluster         = aws_ecs_cluster.broker.id
  task_definition = aws_ecs_task_definition.broker.arn
  desired_count   = var.desired_count
  launch_type     = "FARGATE"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.broker.arn
    container_name   = "broker"
    container_port   = 8080
  }

  # Optional: every task as an A record, for a Prometheus in the VPC (alarms.tf).
  dynamic "service_registries" {
    for_each = var.service_discovery_namespace == null ? [] : [1]
    content {
      registry_arn = aws_service_discovery_service.broker[0].arn
    }
  }

  # Autoscaling (autoscaling.tf) owns the count after the first apply.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https]
}
