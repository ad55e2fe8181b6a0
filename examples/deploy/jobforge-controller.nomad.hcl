# Two jobforge-controller replicas: one leads (Consul session lock on jobforge/leader), the other
# stands by and takes over within 2 x session TTL + lock-delay if the leader dies, or at once on a
# graceful stop. Both serve /healthz, /readyz and /metrics on the "http" port.
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

    service {
      name = "jobforge-controller-metrics"
      port = "http"
      tags = ["metrics"]
      meta {
        metrics_path = "/metrics"
      }
      check {
        name     = "alive"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "controller" {
      driver = "exec"

      config {
        command = "/usr/local/bin/jobforge-controller"
        args = [
          "--http-addr", "0.0.0.0:${NOMAD_PORT_http}",
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
