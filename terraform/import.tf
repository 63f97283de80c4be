# Sharing the Python service's existing table: import it instead of creating a new one,
#
#   terraform import aws_dynamodb_table.pool SandboxPool
#
# then `terraform plan` shows only online changes, none of which touches an item or
# blocks a request: the additive StatusNameIndex, point-in-time recovery, deletion
# protection, and encryption moving to this module's key (DynamoDB re-encrypts in the
# background). Alternatively leave the table out of Terraform and run
# `sandbox-broker init-table` once: it adds only the missing index and never changes the
# existing ones (docs/migrating.md).
