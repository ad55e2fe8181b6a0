# Consul ACL policy of a jobforge client trusted with EVERY namespace (an operator's CLI, a
# GitOps sync serving all teams): write requests, read status, logs and operator defaults.
# A team's client gets consul-policy-team.hcl instead, which confines it to its namespace.
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
