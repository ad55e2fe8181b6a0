//! `jobforge-devstack`: runs the Consul, Nomad and Vault emulators on loopback.
//!
//! Prints one readiness line (`jobforge-devstack ready consul=http://… nomad=http://… vault=http://…`)
//! once every listener accepts; port 0 works and the line shows the real port. SIGINT/SIGTERM stop
//! it, killing every task the Nomad emulator started.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use jobforge_devstack::{DevStack, DevStackConfig};

/// Loopback emulators of the Consul, Nomad and Vault HTTP APIs jobforge uses.
#[derive(Debug, Parser)]
#[command(name = "jobforge-devstack", version, about)]
struct Args {
    /// Consul HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8500")]
    consul_addr: SocketAddr,
    /// Nomad HTTP API address.
    #[arg(long, default_value = "127.0.0.1:4646")]
    nomad_addr: SocketAddr,
    /// Vault HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8200")]
    vault_addr: SocketAddr,
    /// Run only these emulators (comma-separated: consul,nomad,vault).
    #[arg(long, value_delimiter = ',', default_value = "consul,nomad,vault")]
    services: Vec<String>,
    /// Persist state here (Consul KV and sessions survive a restart); memory only when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Vault dev root token.
    #[arg(long, env = "VAULT_DEV_ROOT_TOKEN_ID", default_value = "root")]
    vault_token: String,
    /// A workload-identity Vault role for Nomad tasks: `NAME=POLICY[,POLICY...]` (repeatable). A
    /// task whose `vault` block names `role = NAME` (or, without a role and without policies,
    /// the default role `nomad-workloads`) gets a token with these policies, as Vault's JWT auth
    /// role would give it (`token_policies`).
    #[arg(long = "vault-role", value_name = "NAME=POLICIES", value_parser = parse_role)]
    vault_roles: Vec<(String, Vec<String>)>,
    /// Vault address the Nomad emulator's templates read secrets from, when Vault runs elsewhere.
    #[arg(long)]
    external_vault_addr: Option<String>,
    /// Run every Nomad task under a mock driver that exits 0 after this long (`0s`, `1s`, `250ms`)
    /// instead of starting its command: benchmarks of the control plane, where task processes
    /// would only compete for the CPU. Allocations, task states, events and blocking queries are
    /// those of a real run. Nomad's own tests use its `mock_driver` the same way.
    #[arg(long, env = "JOBFORGE_DEVSTACK_MOCK_DRIVER", value_parser = humantime::parse_duration)]
    mock_driver: Option<std::time::Duration>,
    /// Enable Consul ACLs with default policy `deny`, this secret being the initial management
    /// token (Consul's `acl { enabled = true, default_policy = "deny", tokens {
    /// initial_management = "<secret>" } }`). Off by default, as `consul agent -dev`.
    #[arg(long, value_name = "SECRET")]
    consul_acl_initial_management: Option<String>,
    /// Docker Engine API of the Nomad `docker` driver (`unix:///run/podman.sock`,
    /// `tcp://host:port`), found the way Docker clients find it. Without one, or when nothing
    /// answers there at start, the node has no `docker` driver ("missing drivers").
    #[arg(long, env = "DOCKER_HOST")]
    docker_host: Option<String>,
    /// The docker driver's `gc { image_delay }`: how long an image no task uses stays in the
    /// engine before it is removed (Nomad's default 3m).
    #[arg(long, env = "JOBFORGE_DEVSTACK_DOCKER_IMAGE_DELAY", value_parser = humantime::parse_duration)]
    docker_image_delay: Option<std::time::Duration>,
}

/// `NAME=POLICY[,POLICY...]`.
fn parse_role(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, policies) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=POLICY[,POLICY...], got {s:?}"))?;
    let policies: Vec<String> = policies
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if name.is_empty() || policies.is_empty() {
        return Err(format!("expected NAME=POLICY[,POLICY...], got {s:?}"));
    }
    Ok((name.to_string(), policies))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    for s in &args.services {
        if !matches!(s.as_str(), "consul" | "nomad" | "vault") {
            anyhow::bail!("--services: unknown service {s:?}; allowed: consul, nomad, vault");
        }
    }
    let want = |s: &str| args.services.iter().any(|x| x == s);
    let cfg = DevStackConfig {
        consul_addr: want("consul").then_some(args.consul_addr),
        nomad_addr: want("nomad").then_some(args.nomad_addr),
        vault_addr: want("vault").then_some(args.vault_addr),
        data_dir: args.data_dir,
        vault_token: args.vault_token,
        vault_roles: args.vault_roles.into_iter().collect(),
        external_vault_addr: args.external_vault_addr,
        mock_run_for: args.mock_driver,
        consul_acl_initial_management: args.consul_acl_initial_management,
        docker_host: args.docker_host,
        docker_image_delay: args.docker_image_delay,
    };
    let stack = DevStack::start(cfg).await?;
    println!("{}", stack.readiness_line());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stack.shutdown().await;
    Ok(())
}
