# The table exactly as `sandbox-broker init-table` creates it (docs/dynamodb.md plus the
# additive StatusNameIndex and OutboxIndex). TTL on `ttl` lets DynamoDB drop deletion
# tombstones.
resource "aws_dynamodb_table" "pool" {
  name         = var.table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "PK"
  range_key    = "SK"

  attribute {
    name = "PK"
    type = "S"
  }
  attribute {
    name = "SK"
    type = "S"
  }
  attribute {
    name = "status"
    type = "S"
  }
  attribute {
    name = "allocated_at"
    type = "N"
  }
  attribute {
    name = "allocated_to_track"
    type = "S"
  }
  attribute {
    name = "idempotency_key"
    type = "S"
  }
  attribute {
    name = "name"
    type = "S"
  }
  attribute {
    name = "outbox"
    type = "S"
  }
  attribute {
    name = "outbox_at"
    type = "N"
  }

  global_secondary_index {
    name            = "StatusIndex"
    hash_key        = "status"
    range_key       = "allocated_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "TrackIndex"
    hash_key        = "allocated_to_track"
    range_key       = "allocated_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "IdempotencyIndex"
    hash_key        = "idempotency_key"
    range_key       = "allocated_at"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "StatusNameIndex"
    hash_key        = "status"
    range_key       = "name"
    projection_type = "KEYS_ONLY"
  }
  # Sparse: only rows with webhook events not yet fanned out (docs/webhooks.md).
  global_secondary_index {
    name            = "OutboxIndex"
    hash_key        = "outbox"
    range_key       = "outbox_at"
    projection_type = "KEYS_ONLY"
  }

  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  # Refused by DynamoDB itself, whatever a plan or a console click says.
  deletion_protection_enabled = true

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.broker.arn
  }

  lifecycle {
    prevent_destroy = true
  }
}
