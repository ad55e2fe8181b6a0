//! Raw Consul KV access for tests, independent of the client under test, and request documents.

use std::time::{Duration, Instant};

use anyhow::bail;

/// Minimal raw Consul KV access for tests (independent of the client under test).
#[derive(Clone)]
pub struct Kv {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    http: reqwest::Client,
}

impl Kv {
    /// KV access to the Consul at `base`.
    pub fn new(base: impl Into<String>) -> Kv {
        Kv {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    /// `PUT /v1/kv/<key>`; returns Consul's boolean.
    pub async fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<bool> {
        let r = self
            .http
            .put(format!("{}/v1/kv/{key}", self.base))
            .body(value.to_vec())
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        if !status.is_success() {
            bail!("PUT {key}: {status} {body}");
        }
        Ok(body.trim() == "true")
    }

    /// `DELETE /v1/kv/<key>[?recurse]`.
    pub async fn delete(&self, key: &str, recurse: bool) -> anyhow::Result<()> {
        let url = if recurse {
            format!("{}/v1/kv/{key}?recurse", self.base)
        } else {
            format!("{}/v1/kv/{key}", self.base)
        };
        self.http.delete(url).send().await?.error_for_status()?;
        Ok(())
    }

    /// `(X-Consul-Index, Some((value, modify_index)))`, or `(index, None)` on 404; blocking when
    /// `index` > 0 (wait `wait`).
    pub async fn get(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> anyhow::Result<(u64, Option<(Vec<u8>, u64)>)> {
        let r = self
            .http
            .get(format!("{}/v1/kv/{key}", self.base))
            .query(&[
                ("index", index.to_string()),
                ("wait", format!("{}ms", wait.as_millis())),
            ])
            .send()
            .await?;
        let idx = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok((idx, None));
        }
        let v: serde_json::Value = r.error_for_status()?.json().await?;
        let entry = &v[0];
        use base64::Engine as _;
        let value = entry["Value"]
            .as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
            .transpose()?
            .unwrap_or_default();
        let mi = entry["ModifyIndex"].as_u64().unwrap_or(0);
        Ok((idx, Some((value, mi))))
    }

    /// Keys under `prefix` (`?keys`).
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let r = self
            .http
            .get(format!("{}/v1/kv/{prefix}?keys", self.base))
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        Ok(r.error_for_status()?.json().await?)
    }

    /// Waits (blocking queries, `timeout` overall) until the JSON document at `key` satisfies
    /// `pred`, and returns it.
    ///
    /// Errors: timeout, with the last value seen.
    pub async fn wait_json(
        &self,
        key: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut index = 0;
        let mut last = serde_json::Value::Null;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out after {timeout:?} waiting on {key}; last value: {last}");
            }
            let (idx, v) = self
                .get(key, index, left.min(Duration::from_secs(5)))
                .await?;
            if let Some((bytes, _)) = v
                && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                if pred(&doc) {
                    return Ok(doc);
                }
                last = doc;
            }
            index = if idx < index { 0 } else { idx.max(1) };
        }
    }
}

/// A BuildRequest document (JSON) for `namespace/name` with `spec` merged over a minimal valid spec.
pub fn request_json(namespace: &str, name: &str, spec: serde_json::Value) -> Vec<u8> {
    let mut base = serde_json::json!({
        "owner": "tests",
        "repo_url": "https://git.example.invalid/tests/app.git",
        "git_ref": "main",
        "image_name": "app",
        "registry_url": "127.0.0.1:5000/tests",
    });
    if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "jobforge/v1alpha1",
        "kind": "BuildRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }))
    .unwrap_or_default()
}
