data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Pulls the image, writes logs, reads the two token secrets at start-up.
resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "secrets" {
  statement {
    actions = ["secretsmanager:GetSecretValue"]
    resources = compact([
      var.api_token_secret_arn,
      var.admin_token_secret_arn,
      var.csp_api_token_secret_arn,
      var.niosxaas_credentials_secret_arn,
      var.metrics_token_secret_arn,
    ])
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "read-tokens"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets.json
}

# What the service itself may do: the data-plane calls of docs/dynamodb.md on its table
# and indexes (TransactWriteItems is authorised by the Put/Update it carries), and
# DescribeTable, with which `serve` checks the table's indexes at start. It can neither
# create nor change the table: that is `init-table`'s role below.
data "aws_iam_policy_document" "table" {
  statement {
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:Query",
      "dynamodb:Scan",
      "dynamodb:DescribeTable",
    ]
    resources = [
      aws_dynamodb_table.pool.arn,
      "${aws_dynamodb_table.pool.arn}/index/*",
    ]
  }
  # The table is encrypted with the deployment's key; DynamoDB uses it on the caller's
  # behalf, and only through DynamoDB.
  statement {
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = [aws_kms_key.broker.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${var.region}.amazonaws.com"]
    }
  }
}

# The one-off `init-table` task: create the table or add a missing index, nothing else.
data "aws_iam_policy_document" "init_table" {
  statement {
    actions = [
      "dynamodb:CreateTable",
      "dynamodb:UpdateTable",
      "dynamodb:DescribeTable",
    ]
    resources = [aws_dynamodb_table.pool.arn]
  }
  statement {
    actions   = ["kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt", "kms:GenerateDataKey*"]
    resources = [aws_kms_key.broker.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "init_table" {
  name               = "${var.name}-init-table"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy" "init_table" {
  name   = "create-or-extend-table"
  role   = aws_iam_role.init_table.id
  policy = data.aws_iam_policy_document.init_table.json
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy" "task_table" {
  name   = "sandbox-pool"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.table.json
}
