//! jobforge's development stack: loopback emulators of the Consul, Nomad and Vault HTTP API subsets
//! that jobforge uses. The Nomad emulator's `raw_exec`/`exec` drivers run real processes.
//!
//! The emulators follow the real APIs as documented (see `docs/consul-nomad-vault-semantics.md`,
//! and `docs/devstack.md` for what each enforces and knowingly does not): status codes, headers,
//! blocking queries, CAS, sessions, lock-delay, log framing. Nothing in jobforge knows it talks to an emulator.
//!
//! Use [`DevStack::start`] in tests (bind to port 0 and read the real addresses back), or the
//! `jobforge-devstack` binary.
//!
//! Cross-cutting, in [`http_guard`]: every emulator writes header names in Go's canonical form
//! (`X-Consul-Knownleader`, as `net/http` sends them) and refuses browser-originated requests
//! (an `Origin` header, or a `Host` that is not its loopback address). Consul ACLs
//! ([`consul::acl`]) are off by default, as in `consul agent -dev`, and enforced with default
//! policy `deny` when [`DevStackConfig::consul_acl_initial_management`] is set. What is enforced
//! and what is knowingly not is listed in `docs/devstack.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use http_guard::serve;

pub mod consul;
pub mod http_guard;
pub mod nomad;
pub mod vault;

/// Which emulators to run, and where.
#[derive(Debug, Clone)]
pub struct DevStackConfig {
    /// Consul HTTP address; `None` = do not run Consul. Port 0 picks a free port.
    pub consul_addr: Option<SocketAddr>,
    /// Nomad HTTP address; `None` = do not run Nomad.
    pub nomad_addr: Option<SocketAddr>,
    /// Vault HTTP address; `None` = do not run Vault.
    pub vault_addr: Option<SocketAddr>,
    /// Persist Consul state (and hold Nomad allocation dirs) here; memory only when `None`.
    pub data_dir: Option<PathBuf>,
    /// Vault dev root token. The Nomad emulator derives task tokens with it; no task sees it.
    pub vault_token: String,
    /// Workload-identity Vault roles → policies of the tokens Nomad tasks with `vault { role }`
    /// get (the dev stack's stand-in for Vault's JWT auth roles; see `nomad::vault_hook`).
    pub vault_roles: std::collections::BTreeMap<String, Vec<String>>,
    /// Vault address the Nomad emulator's templates read from when Vault runs elsewhere.
    pub external_vault_addr: Option<String>,
    /// Tasks run under a mock driver for this long instead of as processes
    /// (see [`nomad::NomadOptions::mock_run_for`]); `None` runs real processes.
    pub mock_run_for: Option<std::time::Duration>,
    /// Consul ACLs: `Some(secret)` enables them with default policy `deny` and this initial
    /// management token (`acl.tokens.initial_management`); `None` = ACLs off, as `-dev`.
    pub consul_acl_initial_management: Option<String>,
    /// Docker Engine API address of the Nomad `docker` driver (`unix:///…`); `None` = no driver.
    pub docker_host: Option<String>,
    /// The docker driver's `gc { image_delay }`; Nomad's default (3m) when `None`.
    pub docker_image_delay: Option<std::time::Duration>,
}

impl DevStackConfig {
    /// All three emulators on loopback port 0, memory only, root token `root`.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        DevStackConfig {
            consul_addr: Some(any),
            nomad_addr: Some(any),
            vault_addr: Some(any),
            data_dir: None,
            vault_token: "root".to_string(),
            vault_roles: std::collections::BTreeMap::new(),
            external_vault_addr: None,
            mock_run_for: None,
            consul_acl_initial_management: None,
            docker_host: None,
            docker_image_delay: None,
        }
    }
}

/// A running dev stack. Dropping it without [`DevStack::shutdown`] cancels the servers but does not
/// wait for child processes; call `shutdown` in tests.
pub struct DevStack {
    /// Bound Consul address, if running.
    pub consul_addr: Option<SocketAddr>,
    /// Bound Nomad address, if running.
    pub nomad_addr: Option<SocketAddr>,
    /// Bound Vault address, if running.
    pub vault_addr: Option<SocketAddr>,
    /// Consul emulator state (for tests that inspect it).
    pub consul: Option<Arc<consul::ConsulState>>,
    /// Nomad emulator state (for tests that inspect the job registry).
    pub nomad: Option<Arc<nomad::NomadState>>,
    /// Vault emulator state.
    pub vault: Option<Arc<vault::VaultState>>,
    cancel: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

impl DevStack {
    /// Binds every configured listener, then serves. Returns once all are accepting.
    ///
    /// Errors: a bind failure (address in use, permission) or a data dir that cannot be read.
    pub async fn start(cfg: DevStackConfig) -> anyhow::Result<DevStack> {
        let cancel = CancellationToken::new();
        let mut servers = Vec::new();
        let mut stack = DevStack {
            consul_addr: None,
            nomad_addr: None,
            vault_addr: None,
            consul: None,
            nomad: None,
            vault: None,
            cancel: cancel.clone(),
            servers: Vec::new(),
        };
        if let Some(addr) = cfg.vault_addr {
            let state = vault::VaultState::new(&cfg.vault_token);
            let (bound, h) =
                serve(addr, vault::router(state.clone()), cancel.clone(), "vault").await?;
            stack.vault_addr = Some(bound);
            stack.vault = Some(state);
            servers.push(h);
        }
        if let Some(addr) = cfg.consul_addr {
            let state = consul::ConsulState::open(cfg.data_dir.as_ref().map(|d| d.join("consul")))?;
            if let Some(secret) = &cfg.consul_acl_initial_management {
                state.enable_acl(secret);
            }
            let (bound, h) = serve(
                addr,
                consul::router(state.clone()),
                cancel.clone(),
                "consul",
            )
            .await?;
            stack.consul_addr = Some(bound);
            stack.consul = Some(state);
            servers.push(h);
        }
        if let Some(addr) = cfg.nomad_addr {
            let vault_addr = cfg
                .external_vault_addr
                .clone()
                .or_else(|| stack.vault_addr.map(|a| format!("http://{a}")));
            let state = nomad::NomadState::new(nomad::NomadOptions {
                data_dir: cfg.data_dir.as_ref().map(|d| d.join("nomad")),
                vault_addr,
                vault_token: Some(cfg.vault_token.clone()),
                vault_roles: cfg.vault_roles.clone(),
                mock_run_for: cfg.mock_run_for,
                docker_host: cfg.docker_host.clone(),
                docker_image_delay: cfg.docker_image_delay,
            })?;
            let (bound, h) =
                serve(addr, nomad::router(state.clone()), cancel.clone(), "nomad").await?;
            stack.nomad_addr = Some(bound);
            stack.nomad = Some(state);
            servers.push(h);
        }
        stack.servers = servers;
        Ok(stack)
    }

    /// `http://<consul addr>`; panics if Consul is not running (test helper).
    pub fn consul_url(&self) -> String {
        format!(
            "http://{}",
            self.consul_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
        )
    }

    /// `http://<nomad addr>`.
    pub fn nomad_url(&self) -> String {
        format!(
            "http://{}",
            self.nomad_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
        )
    }

    /// `http://<vault addr>`.
    pub fn vault_url(&self) -> String {
        format!(
            "http://{}",
            self.vault_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
        )
    }

    /// The readiness line the binary prints: `jobforge-devstack ready consul=… nomad=… vault=…`.
    pub fn readiness_line(&self) -> String {
        let mut line = String::from("jobforge-devstack ready");
        for (name, addr) in [
            ("consul", self.consul_addr),
            ("nomad", self.nomad_addr),
            ("vault", self.vault_addr),
        ] {
            if let Some(a) = addr {
                line.push_str(&format!(" {name}=http://{a}"));
            }
        }
        line
    }

    /// Stops the servers, kills every task the Nomad emulator started and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Some(n) = &self.nomad {
            n.shutdown().await;
        }
        for h in self.servers {
            let _ = h.await;
        }
    }
}
