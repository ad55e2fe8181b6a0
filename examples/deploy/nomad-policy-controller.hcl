# Nomad ACL policy for jobforge-controller: register, read, stop and read logs of its batch jobs
# in the namespace it builds in. The CLI and MCP facade need no Nomad policy at all.
namespace "default" {
  capabilities = ["submit-job", "read-job", "list-jobs", "read-logs", "read-fs"]
}
