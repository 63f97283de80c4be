variable "region" {
  description = "AWS region of the service and its table."
  type        = string
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "sandbox-broker"
}

variable "image" {
  description = "Container image of sandbox-broker (built from the repository's Dockerfile), pinned by digest: repository@sha256:<64 hex>."
  type        = string
  validation {
    # A tag can be moved to other bytes; a digest cannot.
    condition     = can(regex("@sha256:[0-9a-f]{64}$", var.image))
    error_message = "image must be pinned by digest (repository@sha256:<64 hex digits>), not by tag."
  }
}

variable "vpc_id" {
  description = "An existing VPC to run in (then give both subnet lists). Null (the default) creates a VPC of its own (network.tf)."
  type        = string
  default     = null
}

variable "private_subnet_ids" {
  description = "With vpc_id: subnets of the tasks (private, with a NAT or VPC endpoints for DynamoDB, ECR, Secrets Manager and logs, and a route to the CSP API)."
  type        = list(string)
  default     = []
}

variable "public_subnet_ids" {
  description = "With vpc_id: subnets of the load balancer."
  type        = list(string)
  default     = []
}

variable "vpc_cidr" {
  description = "Without vpc_id: the address range of the VPC created (public subnets take its first /20s, private ones from the ninth /20)."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Without vpc_id: availability zones the VPC created spans (a public and a private subnet in each)."
  type        = number
  default     = 2
  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be from 2 (the load balancer needs two) to 4."
  }
}

variable "single_nat_gateway" {
  description = "Without vpc_id: one NAT gateway for all zones (cheaper) instead of one per zone (survives a zone outage)."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "table_name" {
  description = "DynamoDB table (DDB_TABLE_NAME). Point it at the Python service's table to share it; see import.tf."
  type        = string
  default     = "SandboxPool"
}

variable "desired_count" {
  description = "Instances sharing the table at the first apply; autoscaling owns the count afterwards."
  type        = number
  default     = 3
}

variable "min_count" {
  description = "Fewest instances autoscaling keeps (one per zone survives a task failure)."
  type        = number
  default     = 2
}

variable "max_count" {
  description = "Most instances autoscaling starts."
  type        = number
  default     = 12
}

variable "cpu_target_percent" {
  description = "Target average CPU of the tasks; autoscaling adds tasks above it."
  type        = number
  default     = 60
}

variable "requests_per_task_per_minute" {
  description = "Target ALB requests per task per minute; a class start raises it and autoscaling adds tasks."
  type        = number
  default     = 6000
}

variable "waf_enabled" {
  description = "Put a WAF web ACL in front of the load balancer: AWS managed common and known-bad-input rules plus a per-address rate rule."
  type        = bool
  default     = true
}

variable "waf_rate_limit" {
  description = "Requests per client address per 5 minutes before WAF blocks it. Instruqt calls from few addresses: keep it far above a class start's traffic."
  type        = number
  default     = 100000
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the service's, WAF's and the VPC's logs."
  type        = number
  default     = 365
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer (the table is always protected)."
  type        = bool
  default     = true
}

variable "cpu" {
  description = "Fargate CPU units per task."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Fargate memory (MiB) per task."
  type        = number
  default     = 1024
}

variable "api_token_secret_arn" {
  description = "Secrets Manager secret holding BROKER_API_TOKEN (comma-separated tokens)."
  type        = string
}

variable "admin_token_secret_arn" {
  description = "Secrets Manager secret holding BROKER_ADMIN_TOKEN (comma-separated tokens)."
  type        = string
}

variable "lab_duration_hours" {
  description = "LAB_DURATION_HOURS: how long a lab lasts before auto-expiry releases its sandbox."
  type        = number
  default     = 48
}

variable "allowed_cidrs" {
  description = "Who may reach the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "csp_api_token_secret_arn" {
  description = "Secrets Manager secret holding CSP_API_TOKEN; without it sync and cleanup are off and only imports fill the pool."
  type        = string
  default     = null
}

variable "niosxaas_enabled" {
  description = "NIOSXAAS_ENABLED: run the NIOSXaaS pre-delete hook."
  type        = bool
  default     = false
}

variable "niosxaas_shadow_mode" {
  description = "NIOSXAAS_SHADOW_MODE: the hook only lists, logs and counts."
  type        = bool
  default     = true
}

variable "niosxaas_service_name" {
  description = "NIOSXAAS_SERVICE_NAME: universal services to delete (* for all)."
  type        = string
  default     = ""
}

variable "metrics_scraper_cidrs" {
  description = "CIDRs inside the VPC from which Prometheus scrapes the tasks' /metrics on 8080 (the public listener answers /metrics 404)."
  type        = list(string)
  default     = []
}

variable "metrics_token_secret_arn" {
  description = "Secrets Manager secret holding METRICS_TOKEN; when set, /metrics needs it as a bearer token."
  type        = string
  default     = null
}

variable "niosxaas_credentials_secret_arn" {
  description = "Secrets Manager secret (JSON with keys email and password) for the hook's service account."
  type        = string
  default     = null
}

variable "settings" {
  description = "Any documented setting of .env.example as NAME = value (e.g. SYNC_INTERVAL_SEC, METRICS_POOL_PREFIXES, LOG_LEVEL), passed to the service's environment. The module sets the store, table, region, listener, trusted proxies, log format, lab duration, NIOSXaaS switches and every secret itself, so those are refused here, as are INSTANCE_ID (each task names itself in leases) and ALLOW_HTTP_UPSTREAMS (never in production). The service checks each value at start-up and names a bad one."
  type        = map(string)
  default     = {}
  validation {
    condition = alltrue([for name in keys(var.settings) : contains([
      "ALLOCATE_DEADLINE_SEC",
      "ALLOW_STATIC_TRACK_TOKEN",
      "ANALYTICS_CACHE_SEC",
      "API_BASE_PATH",
      "AUDIT_INTERVAL_SEC",
      "RESERVATIONS_INTERVAL_SEC",
      "RESERVATION_LEAD_MINUTES",
      "ALLOW_PRIVATE_WEBHOOKS",
      "WEBHOOK_RETRY_HOURS",
      "WEBHOOK_TIMEOUT_SEC",
      "WEBHOOK_DISPATCH_INTERVAL_SEC",
      "MAX_WEBHOOKS",
      "AUTH_FAILURE_LIMIT",
      "AUTH_FAILURE_WINDOW_SEC",
      "AUTO_DELETE_STALE_GRACE_HOURS",
      "AUTO_DELETE_STALE_INTERVAL_SEC",
      "AUTO_EXPIRY_INTERVAL_SEC",
      "BACKOFF_BASE_MS",
      "BACKOFF_MAX_MS",
      "CIRCUIT_BREAKER_THRESHOLD",
      "CIRCUIT_BREAKER_TIMEOUT_SEC",
      "CLEANUP_BATCH_DELAY_SEC",
      "CLEANUP_BATCH_SIZE",
      "CLEANUP_INTERVAL_SEC",
      "CLEANUP_PER_SANDBOX_DELAY_SEC",
      "CORS_ALLOWED_ORIGINS",
      "CSP_BASE_URL",
      "CSP_TIMEOUT_CONNECT_SEC",
      "CSP_TIMEOUT_READ_SEC",
      "DDB_ATTEMPT_TIMEOUT_MS",
      "DDB_CANDIDATE_PREFIXES",
      "DDB_CONNECT_TIMEOUT_MS",
      "DDB_GSI1_NAME",
      "DDB_GSI2_NAME",
      "DDB_GSI3_NAME",
      "DDB_LATENCY_TARGET_MS",
      "DDB_MAX_CONCURRENCY",
      "DDB_STALL_TIMEOUT_MS",
      "DELETED_TTL_DAYS",
      "DELETION_GIVE_UP_HOURS",
      "DELETION_OVERDUE_MINUTES",
      "DELETION_RETRY_BACKOFF_SEC",
      "DELETION_RETRY_MAX_ATTEMPTS",
      "DELETION_VERIFY_GRACE_SEC",
      "GRACE_PERIOD_MINUTES",
      "HEADER_READ_TIMEOUT_SEC",
      "JOB_LEASE_SEC",
      "KEEP_ALIVE_TIMEOUT_SEC",
      "K_CANDIDATES",
      "LAB_METRICS_MAX",
      "LOG_LEVEL",
      "MAX_CONNECTIONS",
      "MAX_TOKENS",
      "METRICS_POOL_PREFIXES",
      "METRICS_POOL_REFRESH_SEC",
      "NIOSXAAS_BASE_URL",
      "NIOSXAAS_TIMEOUT_SEC",
      "POOL_LOW_WATERMARKS",
      "RATE_LIMIT_BURST",
      "RATE_LIMIT_MAX_CALLERS",
      "RATE_LIMIT_PER_ADDRESS_BURST",
      "RATE_LIMIT_PER_ADDRESS_PER_SEC",
      "RATE_LIMIT_PER_SEC",
      "REQUEST_TIMEOUT_SEC",
      "SYNC_INTERVAL_SEC",
      "SYNC_MAX_STALE_FRACTION",
      "SYNC_MIN_GAP_SEC",
      "WAIT_QUEUE_MAX",
    ], name)])
    error_message = "settings takes the documented settings of .env.example only; the module sets the store, table, region, listener, proxies, log format, lab duration, NIOSXaaS switches, secrets and INSTANCE_ID itself."
  }
}

variable "alarm_email" {
  description = "An address subscribed to the alarms' SNS topic (confirm the subscription mail); null subscribes nothing, and the topic's ARN is an output to route elsewhere."
  type        = string
  default     = null
}

variable "service_discovery_namespace" {
  description = "A private DNS namespace (e.g. broker.internal) in which the tasks register as <name>.<namespace>, A records, so a Prometheus in the VPC finds every task to scrape; null registers nothing."
  type        = string
  default     = null
}
