# Two jobforge-controller replicas: one leads (Consul session lock on jobforge/leader), the other
# stands by and takes over within about two seconds if the leader dies (each replica registers
# itself with the local Consul agent as service "jobforge" with a /healthz check, and the leader's
# session is bound to that check), or at once on a graceful stop. Both serve /healthz, /readyz and
# /metrics on the "http" port; Prometheus finds them as service "jobforge" (prometheus.yml).
job "jobforge-controller" {
  type        = "service"
  datacenters = ["dc1"]

  group "controller" {
    count = 2

    # Never run both replicas on one node: a node loss must leave a standby.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "http" {}
    }

    # No Nomad service stanza: each replica registers itself with the local Consul agent (service
    # "jobforge", an HTTP check on /healthz every 1 s), binds its leader session to that check and
    # deregisters on shutdown (docs/operations.md). Its token needs service:write on "jobforge".

    task "controller" {
      driver = "exec"

      config {
        command = "/usr/local/bin/jobforge-controller"
        args = [
          "--http-addr", "0.0.0.0:${NOMAD_PORT_http}",
          # The address the local Consul agent runs the /healthz check against.
          "--service-address", "${NOMAD_IP_http}",
          "--profile", "docker",
          "--log-format", "json",
        ]
      }

      # Tokens come from Vault (workload identity or the vault block); the controller reads the
      # same variables as HashiCorp's own tools.
      vault {
        policies = ["jobforge-controller"]
      }

      template {
        destination = "secrets/tokens.env"
        env         = true
        data        = <<EOT
CONSUL_HTTP_TOKEN={{ with secret "secret/data/jobforge/controller" }}{{ .Data.data.consul_token }}{{ end }}
NOMAD_TOKEN={{ with secret "secret/data/jobforge/controller" }}{{ .Data.data.nomad_token }}{{ end }}
EOT
      }

      env {
        CONSUL_HTTP_ADDR = "127.0.0.1:8500"
        NOMAD_ADDR       = "http://${attr.unique.network.ip-address}:4646"
        VAULT_ADDR       = "https://vault.service.consul:8200"
      }

      # SIGTERM: finish or abandon in-flight reconciles safely and release leadership.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
