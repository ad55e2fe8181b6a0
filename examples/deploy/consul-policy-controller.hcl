# Consul ACL policy of jobforge-controller: least privilege for the default prefix "jobforge".
# tests/tests/consul_acl.rs runs the controller with a token made from this file, as is, on a
# Consul that enforces ACLs (default policy deny). Another --prefix: replace "jobforge/" below.

# Desired state: every replica watches every request; the leader deletes a request whose
# ttl_after_finished expired (with its status and logs, in one fenced transaction).
key_prefix "jobforge/requests/" {
  policy = "write"
}

# Observed state and log tails, written only by the leader through fenced transactions.
key_prefix "jobforge/status/" {
  policy = "write"
}
key_prefix "jobforge/logs/" {
  policy = "write"
}

# Webhook outbox: the leader writes each event in the same fenced transaction as the status that
# produced it, lists and watches the outbox, and removes an event (fenced) once delivered or given
# up. Tenants never need this prefix.
key_prefix "jobforge/outbox/" {
  policy = "write"
}

# Leader election: the lock key (acquire/release with the replica's session, check-session in
# every fence). Exact key: nothing else under the prefix.
key "jobforge/leader" {
  policy = "write"
}

# Operator defaults, re-read whenever they change; written by operators, not by the controller.
key "jobforge/config" {
  policy = "read"
}

# Each replica registers itself with the local agent as service "jobforge" (--service-name) with an
# HTTP check on its /healthz, binds its leader session to that check, and deregisters on shutdown
# (agent service register / deregister need service:write on the name). Another --service-name:
# replace "jobforge" below.
service_prefix "jobforge" {
  policy = "write"
}

# Leader election holds a session. A session is created on the local agent's node, and replicas
# run on whichever Nomad client the scheduler picks, so no single node name fits every replica.
# With one token per replica host, narrow this to: session "<node name>" { policy = "write" }.
session_prefix "" {
  policy = "write"
}
