//! The task Vault hook: a task with a `vault` block gets a Vault token of its own, as Nomad's
//! `client/allocrunner/taskrunner/vault_hook.go` and the server's `nomad/vault.go` give it.
//!
//! - **Derivation.** Legacy workflow (`Policies` set, no `Role`): the Nomad server creates the
//!   token with its own Vault token through `auth/token/create` — policies = the block's, meta
//!   `AllocationID`, `Task`, `NodeID`, `Namespace`, display name `<alloc id>-<task>`, TTL 72h
//!   (`vault.task_token_ttl`'s default). The token is an orphan, as with the `nomad-cluster`
//!   token role Nomad's docs prescribe (`orphan = true`), so it does not die with the server's
//!   token. Workload-identity workflow (`Role` set, or no `Policies`): the task logs in with its
//!   identity to Vault's JWT auth method and gets the role's `token_policies`; the dev stack has
//!   no JWT auth method, so its configuration maps a role to policies (`--vault-role
//!   NAME=POLICY[,POLICY...]`, see [`VaultClient::policies_for`]); an empty role means
//!   [`DEFAULT_ROLE`] (the agent's `create_from_role` in Nomad's docs). An unknown role fails like
//!   Vault's JWT login (`role "x" could not be found`).
//! - **Failure** to derive kills the task before it starts with a `Killing` event that fails it,
//!   `Vault: failed to derive vault token: <error>` (vault_hook.go `deriveVaultToken`; the
//!   dev stack does not retry).
//! - **Delivery.** The token is written to `secrets/vault_token` (mode 0666 as Nomad writes it)
//!   unless `DisableFile`; it is put in `VAULT_TOKEN` unless `Env = false`
//!   (`client/taskenv/env.go`, where it enters the map before the task's `env` values are
//!   interpolated — so `${VAULT_TOKEN}` in an `env` value becomes the token, as in Nomad); and
//!   templates read Vault with it (`template.go`, `TaskTemplateManagerConfig.VaultToken`), never
//!   with the server's token.
//! - **Revocation.** When the allocation is terminal its tokens are revoked by accessor
//!   (`auth/token/revoke-accessor`), as the Nomad server does on an alloc update
//!   (`nomad/node_endpoint.go`, `revokeVaultAccessorsOnUpdate`).
//!
//! Knowingly not emulated: token renewal and `change_mode` (tokens live 72h, longer than any
//! dev-stack task), Vault namespaces on the request (`Namespace` only sets `VAULT_NAMESPACE`),
//! `allow_unauthenticated = false` (the submitter's own Vault token is not checked).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::spec::VaultSpec;
use super::template::VaultSource;

/// The role a workload-identity task without `Role` logs in with (Nomad's documented default
/// `create_from_role`).
pub const DEFAULT_ROLE: &str = "nomad-workloads";

/// The file, in the task's `secrets/` directory, holding its token.
pub const TOKEN_FILE: &str = "vault_token";

/// TTL of task tokens: Nomad's default `vault.task_token_ttl`.
pub const TASK_TOKEN_TTL: &str = "72h";

/// A token derived for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskToken {
    /// The token.
    pub token: String,
    /// Its accessor (what revocation uses).
    pub accessor: String,
}

/// The Nomad side's Vault client: creates and revokes task tokens with the server's token.
#[derive(Debug, Clone)]
pub struct VaultClient {
    /// `http://host:port`, or `None` when the emulator has no Vault.
    pub addr: Option<String>,
    /// The Nomad server's own Vault token (it may create tokens with any policy).
    pub server_token: Option<String>,
    /// Workload-identity roles → policies.
    pub roles: BTreeMap<String, Vec<String>>,
    /// HTTP client.
    pub http: reqwest::Client,
}

/// Who a token is for (its metadata).
#[derive(Debug, Clone, Copy)]
pub struct TokenFor<'a> {
    /// Allocation ID.
    pub alloc_id: &'a str,
    /// Task name.
    pub task: &'a str,
    /// Node ID.
    pub node_id: &'a str,
    /// Job namespace.
    pub namespace: &'a str,
}

impl VaultClient {
    /// The policies a task's token gets: the block's `Policies` (legacy workflow), or those of
    /// its role by the dev stack's configuration.
    ///
    /// Errors: a role that is not configured, with Vault's JWT login message.
    pub fn policies_for(&self, spec: &VaultSpec) -> Result<Vec<String>, String> {
        if spec.role.is_empty() && !spec.policies.is_empty() {
            return Ok(spec.policies.clone());
        }
        let role = if spec.role.is_empty() {
            DEFAULT_ROLE
        } else {
            spec.role.as_str()
        };
        self.roles
            .get(role)
            .cloned()
            .ok_or_else(|| format!("role {role:?} could not be found"))
    }

    /// A template reader with `token`.
    pub fn source(&self, token: Option<String>) -> VaultSource {
        VaultSource {
            addr: self.addr.clone(),
            token,
            http: self.http.clone(),
        }
    }

    fn url(&self, path: &str) -> Result<String, String> {
        let addr = self
            .addr
            .as_deref()
            .ok_or("Vault is not configured for the Nomad emulator")?;
        Ok(format!("{}/v1/{path}", addr.trim_end_matches('/')))
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let mut req = self.http.post(self.url(path)?).json(&body);
        if let Some(t) = &self.server_token {
            req = req.header("X-Vault-Token", t);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("Vault returned {status}: {}", text.trim()));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    /// Creates the token of one task.
    ///
    /// Errors: an unknown role, Vault unreachable, or Vault refusing (the message says which).
    pub async fn derive(&self, who: TokenFor<'_>, spec: &VaultSpec) -> Result<TaskToken, String> {
        let policies = self.policies_for(spec)?;
        let body = json!({
            "policies": policies,
            "meta": {
                "AllocationID": who.alloc_id,
                "Task": who.task,
                "NodeID": who.node_id,
                "Namespace": who.namespace,
            },
            "ttl": TASK_TOKEN_TTL,
            "no_parent": true,
            "display_name": format!("{}-{}", who.alloc_id, who.task),
        });
        let v = self.post("auth/token/create", body).await?;
        let auth = &v["auth"];
        match (auth["client_token"].as_str(), auth["accessor"].as_str()) {
            (Some(t), Some(a)) => Ok(TaskToken {
                token: t.to_string(),
                accessor: a.to_string(),
            }),
            _ => Err(format!("Vault answered no auth.client_token: {v}")),
        }
    }

    /// Revokes a task token by accessor.
    ///
    /// Errors: Vault unreachable or refusing.
    pub async fn revoke(&self, accessor: &str) -> Result<(), String> {
        self.post(
            "auth/token/revoke-accessor",
            json!({ "accessor": accessor }),
        )
        .await
        .map(|_| ())
    }
}

/// Writes `secrets/vault_token` (mode 0666, as Nomad's `writeToken`). Errors: I/O.
pub fn write_token_file(task_dir: &Path, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = task_dir.join("secrets").join(TOKEN_FILE);
    std::fs::write(&path, token)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn client(roles: &[(&str, &[&str])]) -> VaultClient {
        VaultClient {
            addr: None,
            server_token: None,
            roles: roles
                .iter()
                .map(|(r, ps)| (r.to_string(), ps.iter().map(|p| p.to_string()).collect()))
                .collect(),
            http: reqwest::Client::new(),
        }
    }

    #[test]
    fn policies_come_from_the_block_or_from_the_configured_role() {
        let c = client(&[("builds", &["jobforge"]), (DEFAULT_ROLE, &["base"])]);
        let legacy = VaultSpec {
            policies: vec!["a".into()],
            ..VaultSpec::default()
        };
        assert_eq!(c.policies_for(&legacy).unwrap(), vec!["a"]);
        let wi = VaultSpec {
            role: "builds".into(),
            ..VaultSpec::default()
        };
        assert_eq!(c.policies_for(&wi).unwrap(), vec!["jobforge"]);
        assert_eq!(c.policies_for(&VaultSpec::default()).unwrap(), vec!["base"]);
        let unknown = VaultSpec {
            role: "nope".into(),
            ..VaultSpec::default()
        };
        assert_eq!(
            c.policies_for(&unknown).unwrap_err(),
            "role \"nope\" could not be found"
        );
    }
}
