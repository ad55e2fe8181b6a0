//! Consul ACL helpers for tests on a dev stack started with an initial management token
//! ([`crate::DevStackOptions::consul_acl_initial_management`]): create policies from the files
//! shipped in `examples/deploy/` (read as they are), tokens linked to them, and KV reads and
//! waits with a token.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{wait_until, workspace_root};

/// The text of `examples/deploy/<file>`, exactly as shipped.
///
/// Errors: the file cannot be read.
pub fn shipped_policy(file: &str) -> anyhow::Result<String> {
    let path = workspace_root().join("examples/deploy").join(file);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// `examples/deploy/consul-policy-team.hcl` for `namespace` (every `<namespace>` replaced, as
/// `hack/consul-team-token.sh` does).
///
/// Errors: the file cannot be read, or it has no `<namespace>` placeholder.
pub fn team_policy(namespace: &str) -> anyhow::Result<String> {
    let text = shipped_policy("consul-policy-team.hcl")?;
    if !text.contains("<namespace>") {
        bail!("consul-policy-team.hcl has no <namespace> placeholder");
    }
    Ok(text.replace("<namespace>", namespace))
}

/// Consul's ACL and KV API used with a management token.
#[derive(Debug, Clone)]
pub struct ConsulAcl {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The management token's secret.
    pub management: String,
    http: reqwest::Client,
}

impl ConsulAcl {
    /// ACL access to the Consul at `base` with the management token `management`.
    pub fn new(base: impl Into<String>, management: impl Into<String>) -> ConsulAcl {
        ConsulAcl {
            base: base.into(),
            management: management.into(),
            http: reqwest::Client::new(),
        }
    }

    async fn put_json(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .header("X-Consul-Token", &self.management)
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("PUT {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Creates policy `name` with `rules`; returns its ID.
    ///
    /// Errors: Consul refused it (the rules do not parse, the name is taken).
    pub async fn create_policy(&self, name: &str, rules: &str) -> anyhow::Result<String> {
        let p = self
            .put_json("/v1/acl/policy", json!({"Name": name, "Rules": rules}))
            .await?;
        p["ID"]
            .as_str()
            .map(str::to_string)
            .context("policy answer without ID")
    }

    /// Creates a token linked to the policy named `policy`; returns its secret.
    ///
    /// Errors: Consul refused it.
    pub async fn create_token(&self, policy: &str) -> anyhow::Result<String> {
        let t = self
            .put_json(
                "/v1/acl/token",
                json!({"Description": policy, "Policies": [{"Name": policy}]}),
            )
            .await?;
        t["SecretID"]
            .as_str()
            .map(str::to_string)
            .context("token answer without SecretID")
    }

    /// `PUT /v1/kv/<key>` with `token` (the management token when `None`); returns the status
    /// and body.
    ///
    /// Errors: no HTTP answer.
    pub async fn kv_put(
        &self,
        key: &str,
        value: &[u8],
        token: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let r = self
            .http
            .put(format!("{}/v1/kv/{key}", self.base))
            .header("X-Consul-Token", token.unwrap_or(&self.management))
            .body(value.to_vec())
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// The JSON value at `key` read with the management token; `None` when missing.
    ///
    /// Errors: Consul answered neither 200 nor 404, or the value is not JSON.
    pub async fn get_json(&self, key: &str) -> anyhow::Result<Option<Value>> {
        let r = self
            .http
            .get(format!("{}/v1/kv/{key}?raw", self.base))
            .header("X-Consul-Token", &self.management)
            .send()
            .await?;
        match r.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(serde_json::from_slice(&r.bytes().await?)?)),
            s => bail!("GET {key}: {s} {}", r.text().await.unwrap_or_default()),
        }
    }

    /// Waits until the JSON at `key` satisfies `pred`; returns it.
    ///
    /// Errors: the timeout.
    pub async fn wait_json(
        &self,
        key: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let found = std::sync::Mutex::new(None);
        let (found_ref, pred_ref) = (&found, &pred);
        wait_until(
            timeout,
            &format!("{key} satisfies the condition"),
            || async move {
                let v = self.get_json(key).await.unwrap_or(None);
                let ok = v.as_ref().is_some_and(pred_ref);
                if ok && let Ok(mut f) = found_ref.lock() {
                    *f = v;
                }
                Ok(ok)
            },
        )
        .await?;
        found
            .into_inner()
            .ok()
            .flatten()
            .context("the value vanished")
    }
}
