//! Webhook delivery (`spec.webhook`).
//!
//! A JSON POST per event with headers `X-Jobforge-Event: <event>`, `X-Jobforge-Delivery: <id>` and,
//! when `secret_path` names a Vault KV v2 secret with a `secret` field,
//! `X-Jobforge-Signature: sha256=<hex HMAC-SHA256 of the exact body>`. Delivery runs on its own task
//! (never blocking a reconcile), retried with exponential backoff and jitter (backon: 200 ms doubling
//! to 10 s, 6 attempts) on connection errors, 429 and 5xx; any other 4xx is final.
//!
//! **At most once per transition, across failover.** The state machine puts the event's identity
//! (`<event>:<generation>:<attempt>`) into the status's `webhook.lastEvent`, and the reconciler hands
//! the event to this module only after that status write committed through the leader fence. A new
//! leader sees the identity already recorded and never sends it again; a leader that dies between its
//! write and the delivery loses that one event (at most once, not at least once). The outcome is then
//! recorded in `webhook.lastDeliveredAt` / `webhook.lastError` with another fenced CAS, if the status
//! still names the same event.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use hmac::{Hmac, Mac};
use jobforge_client::consul::leader::{Fence, FencedWrite};
use jobforge_client::consul::{Client as ConsulClient, QueryOptions};
use jobforge_schema::{BuildRequest, BuildStatus, KeyLayout, WebhookEvent};
use serde_json::json;
use sha2::Sha256;

use crate::machine::webhook_event_name;
use crate::vault::VaultChecker;

/// Delivers webhook events for one leadership term.
pub struct Webhooks {
    http: reqwest::Client,
    vault: Option<Arc<VaultChecker>>,
    consul: ConsulClient,
    fence: Fence,
    keys: KeyLayout,
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Final(String),
}

impl Webhooks {
    /// A deliverer using `vault` for HMAC keys and `fence` to record outcomes.
    pub fn new(
        vault: Option<Arc<VaultChecker>>,
        consul: ConsulClient,
        fence: Fence,
        keys: KeyLayout,
    ) -> Arc<Webhooks> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Webhooks {
            http,
            vault,
            consul,
            fence,
            keys,
        })
    }

    /// The JSON body of an event.
    pub fn payload(
        req: &BuildRequest,
        generation: u64,
        status: &BuildStatus,
        event: WebhookEvent,
        id: &str,
    ) -> serde_json::Value {
        json!({
            "event": webhook_event_name(event),
            "id": id,
            "request": {
                "namespace": req.metadata.namespace,
                "name": req.metadata.name,
                "generation": generation,
                "labels": req.metadata.labels,
            },
            "phase": status.phase,
            "attempt": status.attempt,
            "status": status.succeeded_condition().map(|c| json!({
                "status": c.status, "reason": c.reason, "message": c.message,
            })),
            "owner": req.spec.owner,
            "repo_url": req.spec.repo_url,
            "git_ref": req.spec.git_ref,
            "commit_sha": status.source.as_ref().map(|s| s.commit_sha.clone()),
            "image_name": req.spec.image_name,
            "image_tags": req.spec.image_tags,
            "image": status.image,
            "failure": status.failure,
            "startTime": status.start_time,
            "completionTime": status.completion_time,
            "sentAt": Utc::now(),
        })
    }

    /// Starts delivering `event` on its own task. No-op when the request has no webhook or does
    /// not subscribe to the event (the machine already filters; this is defence in depth).
    pub fn deliver(
        self: &Arc<Self>,
        req: &BuildRequest,
        generation: u64,
        status: &BuildStatus,
        event: WebhookEvent,
        id: String,
    ) {
        let Some(hook) = req.spec.webhook.clone() else {
            return;
        };
        let on = if hook.on.is_empty() {
            vec![WebhookEvent::Succeeded, WebhookEvent::Failed]
        } else {
            hook.on.clone()
        };
        if !on.contains(&event) {
            return;
        }
        let body = Webhooks::payload(req, generation, status, event, &id);
        let this = Arc::clone(self);
        let (ns, name) = (req.metadata.namespace.clone(), req.metadata.name.clone());
        tokio::spawn(async move {
            let outcome = this.send(&hook, event, &id, &body).await;
            let label = if outcome.is_ok() {
                "delivered"
            } else {
                "failed"
            };
            metrics::counter!("jobforge_webhook_deliveries_total", "outcome" => label).increment(1);
            if let Err(e) = &outcome {
                tracing::warn!(request = %format!("{ns}/{name}"), event = %id, error = %e, "webhook delivery failed");
            }
            this.record(&ns, &name, &id, outcome.err()).await;
        });
    }

    async fn send(
        &self,
        hook: &jobforge_schema::WebhookSpec,
        event: WebhookEvent,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<(), String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let signature = match (&hook.secret_path, &self.vault) {
            (Some(path), Some(vault)) => {
                let secret = vault
                    .read_secret(path)
                    .await
                    .map_err(|e| format!("reading the webhook secret {path}: {e}"))?
                    .and_then(|m| m.get("secret").cloned())
                    .ok_or_else(|| format!("webhook secret {path} has no `secret` field"))?;
                Some(sign(secret.as_bytes(), &bytes))
            }
            (Some(path), None) => {
                return Err(format!(
                    "webhook secret {path} set but VAULT_ADDR is not configured"
                ));
            }
            _ => None,
        };
        let attempt = || async {
            let mut rb = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-jobforge-event", webhook_event_name(event))
                .header("x-jobforge-delivery", id)
                .body(bytes.clone());
            if let Some(sig) = &signature {
                rb = rb.header("x-jobforge-signature", sig.as_str());
            }
            for (k, v) in &hook.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            let resp = rb
                .send()
                .await
                .map_err(|e| AttemptError::Retryable(format!("POST {}: {e}", hook.url)))?;
            let st = resp.status();
            if st.is_success() {
                Ok(())
            } else if st.is_server_error() || st.as_u16() == 429 {
                Err(AttemptError::Retryable(format!("POST {}: {st}", hook.url)))
            } else {
                Err(AttemptError::Final(format!("POST {}: {st}", hook.url)))
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(5)
                    .with_jitter(),
            )
            .when(|e| matches!(e, AttemptError::Retryable(_)))
            .await
            .map_err(|e| e.to_string())
    }

    /// Records the outcome in the status (fenced CAS), if the status still names this event.
    async fn record(&self, ns: &str, name: &str, id: &str, error: Option<String>) {
        let key = self.keys.status_key(ns, name);
        for _ in 0..5 {
            let Ok((_, Some(pair))) = self.consul.kv_get(&key, QueryOptions::default()).await
            else {
                return;
            };
            let Ok(mut status) = serde_json::from_slice::<BuildStatus>(&pair.value) else {
                return;
            };
            let Some(w) = status.webhook.as_mut() else {
                return;
            };
            if w.last_event.as_deref() != Some(id) {
                return;
            }
            match &error {
                None => {
                    w.last_delivered_at = Some(Utc::now());
                    w.last_error = None;
                }
                Some(e) => w.last_error = Some(e.clone()),
            }
            let Ok(bytes) = serde_json::to_vec(&status) else {
                return;
            };
            match self.fence.cas_put(&key, &bytes, pair.modify_index).await {
                Ok(FencedWrite::Conflict) => continue,
                _ => return,
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256(key, body)>`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_test_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
