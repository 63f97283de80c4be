resource "aws_security_group" "alb" {
  # checkov:skip=CKV_AWS_260: port 80 only answers a 301 to HTTPS (aws_lb_listener.http); clients that type http:// are sent to TLS instead of timing out.
  name        = "${var.name}-alb"
  description = "The load balancer of ${var.name}: HTTPS in, the tasks out"
  vpc_id      = local.vpc_id
  ingress {
    description = "HTTPS from the allowed clients"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }
  ingress {
    description = "HTTP from the allowed clients, only to be redirected to HTTPS"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }
  egress {
    description = "To the tasks and their health checks"
    from_port   = 8080
    to_port     = 8080
    protocol    = "tcp"
    cidr_blocks = [local.vpc_cidr]
  }
}

resource "aws_lb" "broker" {
  # checkov:skip=CKV2_AWS_76: the web ACL (waf.tf) has AWSManagedRulesKnownBadInputsRuleSet, which holds the Log4j rules; the check also demands the anonymous-IP list, whose hosting-provider rule would block Instruqt, which calls from cloud-hosted addresses.
  # checkov:skip=CKV_AWS_91: access logs need an S3 bucket with its own policy and lifecycle; WAF logs (waf.tf) and the service's JSON request log already record every call.
  name                       = var.name
  load_balancer_type         = "application"
  subnets                    = local.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  enable_deletion_protection = var.deletion_protection
  lifecycle {
    precondition {
      condition     = var.vpc_id == null || (length(var.public_subnet_ids) > 0 && length(var.private_subnet_ids) > 0)
      error_message = "With vpc_id set, give public_subnet_ids and private_subnet_ids too."
    }
  }
  # Must stay below the tasks' KEEP_ALIVE_TIMEOUT_SEC (75), or the ALB reuses connections
  # the task has just closed.
  idle_timeout = 60
  # Requests with header names HTTP does not allow are dropped here, not passed on.
  drop_invalid_header_fields = true
}

resource "aws_lb_target_group" "broker" {
  name                 = var.name
  port                 = 8080
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = local.vpc_id
  deregistration_delay = 35
  # Readiness: a task whose table is unreachable leaves rotation and comes back by itself.
  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.broker.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.broker.arn
  }
}

# Plain HTTP only redirects to HTTPS.
resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.broker.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

# /metrics is for Prometheus inside the VPC (it scrapes the tasks directly on 8080; see
# aws_security_group.tasks), never for the internet: the public listener answers it 404.
resource "aws_lb_listener_rule" "no_public_metrics" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 1
  condition {
    path_pattern {
      values = ["/metrics", "/metrics/*"]
    }
  }
  action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      status_code  = "404"
      message_body = jsonencode({ detail = { code = "NOT_FOUND", message = "Not found" } })
    }
  }
}
