//! Vault policies and tokens of the test stacks, set up through Vault's HTTP API as an operator
//! does (`vault policy write`, `vault token create`): the dev stack's Vault enforces ACLs, so a
//! task of namespace `<ns>` reads only what its namespace's policy `jobforge-<ns>` grants (the
//! shipped template `examples/deploy/vault-policy-namespace.hcl` with `<namespace>` replaced, as
//! `hack/vault-team-policy.sh` loads it), and the controller can run with the least-privilege
//! token of `examples/deploy/vault-policy-controller.hcl`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{DevStackProcess, workspace_root};

/// The namespaces whose task policy every test stack loads at start (the namespaces the tests'
/// requests use); another namespace's is loaded with [`DevStackProcess::install_team_policy`].
pub const TEST_NAMESPACES: &[&str] = &["default", "team-a", "team-b"];

/// The Vault policy the controller puts in the vault block of namespace `ns`'s tasks (the default
/// `tenancy.vault_policy`, `jobforge-{namespace}`).
pub fn task_policy(ns: &str) -> String {
    format!("jobforge-{ns}")
}
/// Name of the controller's policy.
pub const CONTROLLER_POLICY: &str = "jobforge-controller";
/// The dev stack's root token (`--vault-token` default).
pub const ROOT_TOKEN: &str = "root";

/// A shipped policy file under `examples/deploy/`.
pub fn shipped(file: &str) -> PathBuf {
    workspace_root().join("examples/deploy").join(file)
}

/// `PUT /v1/sys/policies/acl/<name>` with the text of `file`.
///
/// Errors: the file cannot be read, or Vault refuses (status and body in the message).
pub async fn write_policy(
    vault: &str,
    token: &str,
    name: &str,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the policy file {}", file.display()))?;
    write_policy_text(vault, token, name, &text).await
}

/// `POST /v1/auth/token/create {"policies": …}` with `token`; returns the new token.
///
/// Errors: Vault refuses (status and body in the message) or answers no token.
pub async fn create_token(vault: &str, token: &str, policies: &[&str]) -> anyhow::Result<String> {
    let resp = reqwest::Client::new()
        .post(format!("{vault}/v1/auth/token/create"))
        .header("X-Vault-Token", token)
        .json(&serde_json::json!({ "policies": policies }))
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("creating a Vault token with {policies:?}: {status} {body}");
    }
    body["auth"]["client_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no auth.client_token in {body}"))
}

/// The shipped namespace policy template (`examples/deploy/vault-policy-namespace.hcl`) with every
/// `<namespace>` replaced by `ns`, as `hack/vault-team-policy.sh` makes it.
///
/// Errors: the file cannot be read, or has no `<namespace>` placeholder.
pub fn team_policy_text(ns: &str) -> anyhow::Result<String> {
    let file = shipped("vault-policy-namespace.hcl");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the policy file {}", file.display()))?;
    if !text.contains("<namespace>") {
        bail!("{} has no <namespace> placeholder", file.display());
    }
    Ok(text.replace("<namespace>", ns))
}

/// `PUT /v1/sys/policies/acl/<name>` with `text`.
///
/// Errors: Vault refuses (status and body in the message).
pub async fn write_policy_text(
    vault: &str,
    token: &str,
    name: &str,
    text: &str,
) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .put(format!("{vault}/v1/sys/policies/acl/{name}"))
        .header("X-Vault-Token", token)
        .json(&serde_json::json!({ "policy": text }))
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "writing Vault policy {name}: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Loads namespace `ns`'s task policy `jobforge-<ns>` from the shipped template.
///
/// Errors: see [`team_policy_text`] and [`write_policy_text`].
pub async fn install_team_policy(vault: &str, root: &str, ns: &str) -> anyhow::Result<()> {
    write_policy_text(vault, root, &task_policy(ns), &team_policy_text(ns)?).await
}

/// Loads the shipped controller policy and the task policy of every [`TEST_NAMESPACES`] entry
/// into `vault` with the root token `root`.
///
/// Errors: see [`write_policy`].
pub async fn install_shipped_policies(vault: &str, root: &str) -> anyhow::Result<()> {
    for ns in TEST_NAMESPACES {
        install_team_policy(vault, root, ns).await?;
    }
    write_policy(
        vault,
        root,
        CONTROLLER_POLICY,
        &shipped("vault-policy-controller.hcl"),
    )
    .await
}

/// [`install_shipped_policies`] from synchronous code (such as [`DevStackProcess::start`], which
/// may run inside a test's runtime): on a thread of its own with its own runtime, 30 s at most.
///
/// Errors: see [`write_policy`], or the timeout.
pub fn install_shipped_policies_blocking(vault: &str, root: &str) -> anyhow::Result<()> {
    let vault = vault.to_string();
    let root = root.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(install_shipped_policies(&vault, &root)));
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(30))
        .context("loading the Vault policies took more than 30 s")?
}

impl DevStackProcess {
    /// Loads namespace `ns`'s task policy (see [`install_team_policy`]) with the root token, for
    /// a namespace outside [`TEST_NAMESPACES`].
    ///
    /// Errors: see [`install_team_policy`].
    pub async fn install_team_policy(&self, ns: &str) -> anyhow::Result<()> {
        install_team_policy(&self.vault, ROOT_TOKEN, ns).await
    }

    /// A least-privilege token for the controller (policy `jobforge-controller`, from the
    /// shipped `examples/deploy/vault-policy-controller.hcl`).
    ///
    /// Errors: Vault refuses.
    pub async fn controller_vault_token(&self) -> anyhow::Result<String> {
        create_token(&self.vault, ROOT_TOKEN, &[CONTROLLER_POLICY]).await
    }

    /// [`DevStackProcess::env`] with `VAULT_TOKEN` replaced by the controller's least-privilege
    /// token.
    ///
    /// Errors: see [`DevStackProcess::controller_vault_token`].
    pub async fn least_privilege_env(&self) -> anyhow::Result<Vec<(String, String)>> {
        let token = self.controller_vault_token().await?;
        Ok(self
            .env()
            .into_iter()
            .map(|(k, v)| {
                if k == "VAULT_TOKEN" {
                    (k, token.clone())
                } else {
                    (k, v)
                }
            })
            .collect())
    }
}
