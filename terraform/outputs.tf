output "url" {
  description = "Base URL of the service."
  value       = "https://${aws_lb.broker.dns_name}"
}

output "table_name" {
  description = "DDB_TABLE_NAME of the service."
  value       = aws_dynamodb_table.pool.name
}
