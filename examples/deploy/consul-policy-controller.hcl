# Consul ACL policy for jobforge-controller (least privilege).
# Reads requests, writes status/logs/leader under the prefix, and holds a session for leader election.
key_prefix "jobforge/" {
  policy = "write"
}
session_prefix "" {
  policy = "write"
}
# The session is tied to the local agent's node.
node_prefix "" {
  policy = "read"
}
