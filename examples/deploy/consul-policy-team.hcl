# Consul ACL policy template of one team: the jobforge CLI and MCP facade acting for namespace
# <namespace>. Replace every <namespace> with the team's namespace (a DNS label), e.g. with
# hack/consul-team-token.sh, which also creates the team's token. tests/tests/consul_acl.rs loads
# this file as is and substitutes <namespace> the same way.
#
# The team submits, replaces, cancels and deletes its own requests, and reads their status and
# log tails. `jobforge list` reads the whole requests/ and status/ trees; Consul drops the keys
# this token cannot read, so a team sees only its own requests. Writing into another namespace
# is refused (403 Permission denied). It reads the operator's defaults, jobforge/config, so that
# `jobforge submit` and `jobforge validate` check a request against the tenancy rules in force
# (docs/tenancy.md) before writing it.

key_prefix "jobforge/requests/<namespace>/" {
  policy = "write"
}
key_prefix "jobforge/status/<namespace>/" {
  policy = "read"
}
key_prefix "jobforge/logs/<namespace>/" {
  policy = "read"
}
key "jobforge/config" {
  policy = "read"
}
