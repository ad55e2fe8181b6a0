# Consul ACL policy for the jobforge CLI and the MCP facade: they only read and write KV records.
# To restrict a team to its namespace, narrow requests/ to requests/<namespace>/.
key_prefix "jobforge/requests/" {
  policy = "write"
}
key_prefix "jobforge/status/" {
  policy = "read"
}
key_prefix "jobforge/logs/" {
  policy = "read"
}
key "jobforge/config" {
  policy = "read"
}
