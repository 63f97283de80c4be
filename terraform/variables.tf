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
  description = "VPC to run in."
  type        = string
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks (private, with a NAT or VPC endpoints for DynamoDB, ECR and logs)."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer."
  type        = list(string)
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
  description = "Instances sharing the table."
  type        = number
  default     = 3
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
  description = "LAB_DURATION_HOURS."
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
