# Sharing the Python service's existing table: import it instead of creating a new one,
#
#   terraform import aws_dynamodb_table.pool SandboxPool
#
# then `terraform plan` shows the one additive change (StatusNameIndex). Alternatively
# leave the table out of Terraform and run `sandbox-broker init-table` once: it adds only
# the missing index and never changes the existing ones.
