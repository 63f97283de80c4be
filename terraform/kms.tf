# One customer-managed key, rotated yearly, for everything the service stores at rest:
# the table (and its backups), the service's, WAF's and the VPC's logs, and the alarm topic.
data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_111: this is a key policy, where resource "*" means this key alone; the account statement is AWS's default, which lets IAM policies govern the key.
  # checkov:skip=CKV_AWS_356: as above: in a key policy "*" is the key itself.
  # checkov:skip=CKV_AWS_109: as above: the account root statement is the default key policy AWS itself writes.
  # The account administers the key through IAM, as with any key.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  # CloudWatch Logs encrypts this deployment's log groups with it, and only those.
  statement {
    sid       = "LogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
    }
  }
  # CloudWatch alarms publish to the encrypted alarm topic (alarms.tf), from this account.
  statement {
    sid       = "AlarmsPublish"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_kms_key" "broker" {
  description             = "${var.name}: table, backups, logs and alarms"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "broker" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.broker.key_id
}
