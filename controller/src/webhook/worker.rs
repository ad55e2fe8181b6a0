//! The leader's delivery worker: follows `<prefix>/outbox/` and delivers every record in it.
//!
//! A blocking watch of the outbox's key names ([`watch_keys`]) says which requests have events
//! waiting; its first answer lists what earlier leaders left, so a new leader resumes the outbox
//! at once. Each such request gets one drain task that reads the request's outbox entries from
//! Consul (Consul, not the watch, is the source of truth), sends the first one ([`Sender::send`]),
//! then removes it and records the outcome in the status in one fenced transaction, and goes on
//! with the next, until none is left. At most [`MAX_CONCURRENT_DELIVERIES`] sends run at once.
//! When the term ends (cancel) or the fence says this replica no longer leads, everything stops;
//! whatever was not removed is sent again by the next leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use jobforge_client::consul::leader::{Fence, FencedTxn};
use jobforge_client::consul::watch::{WatchEvent, WatchOptions, watch_keys};
use jobforge_client::consul::{Client as ConsulClient, KvPair, QueryOptions, TxnOp};
use jobforge_schema::{BuildStatus, KeyLayout, WebhookStatus};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::{Failure, OutboxRecord, Sender};
use crate::config::EffectiveConfig;

/// Deliveries in flight at once, over all requests.
pub const MAX_CONCURRENT_DELIVERIES: usize = 32;

/// Longest pause between retries of a failing Consul call.
const CONSUL_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Status bookkeeping attempts (fenced CAS) before the record is removed without it.
const RECORD_ATTEMPTS: usize = 10;

/// What the worker of one leadership term uses.
#[derive(Clone)]
pub struct OutboxDeps {
    /// Consul (reads; writes go through `fence`).
    pub consul: ConsulClient,
    /// Fenced writes of this term.
    pub fence: Fence,
    /// KV layout.
    pub keys: KeyLayout,
    /// The sender (HMAC keys, egress client, retries).
    pub sender: Arc<Sender>,
    /// Current configuration (`tenancy.webhook_allow_cidrs`).
    pub config: watch::Receiver<Arc<EffectiveConfig>>,
}

/// The delivery worker of one leadership term.
pub struct Outbox {
    deps: OutboxDeps,
    /// Requests with a drain task; `true` when the watch saw a new entry since it last listed.
    active: Mutex<HashMap<(String, String), bool>>,
    permits: Semaphore,
    cancel: CancellationToken,
}

/// Why a drain stops early.
#[derive(Debug)]
enum Stop {
    /// The term ended.
    Cancelled,
    /// This replica no longer holds the leader key.
    NotLeader,
}

impl Outbox {
    /// Starts the worker; it runs until `cancel` fires.
    pub fn spawn(deps: OutboxDeps, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let outbox = Arc::new(Outbox {
            deps,
            active: Mutex::new(HashMap::new()),
            permits: Semaphore::new(MAX_CONCURRENT_DELIVERIES),
            cancel,
        });
        tokio::spawn(outbox.run())
    }

    async fn run(self: Arc<Self>) {
        // The allowlist lives in `<prefix>/config`: the leader term spawns this worker only after
        // that document was read once (`HealthState::wait_config_read` in `runtime::leader_term`).
        let opts = WatchOptions {
            cancel: self.cancel.clone(),
            max_backoff: CONSUL_MAX_BACKOFF,
            // Consul's longest wait: a change answers at once, an idle read is re-armed less.
            wait: jobforge_client::consul::MAX_WAIT,
            ..WatchOptions::default()
        };
        let mut stream = Box::pin(watch_keys(
            self.deps.consul.clone(),
            self.deps.keys.outbox_prefix(),
            opts,
        ));
        while let Some(ev) = stream.next().await {
            match ev {
                WatchEvent::Initial { pairs, .. } => {
                    if !pairs.is_empty() {
                        tracing::info!(
                            events = pairs.len(),
                            "resuming webhook deliveries left in the outbox"
                        );
                    }
                    for p in &pairs {
                        self.trigger(&p.key);
                    }
                }
                WatchEvent::Added(p) | WatchEvent::Modified(p) => self.trigger(&p.key),
                WatchEvent::Deleted(_) | WatchEvent::Resumed { .. } => {}
                WatchEvent::Restarting { error, .. } => {
                    metrics::counter!("jobforge_watch_restarts_total", "watch" => "outbox")
                        .increment(1);
                    tracing::warn!(%error, "outbox watch restarting");
                }
            }
        }
    }

    /// Makes sure the request of outbox key `key` has a drain task that will list it.
    fn trigger(self: &Arc<Self>, key: &str) {
        let Some((ns, name)) = self.deps.keys.parse_outbox_key(key) else {
            return;
        };
        let k = (ns.to_string(), name.to_string());
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(again) = active.get_mut(&k) {
            *again = true;
            return;
        }
        active.insert(k.clone(), false);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = this.drain(&k.0, &k.1).await;
            if let Err(stop) = outcome {
                tracing::debug!(request = %format!("{}/{}", k.0, k.1), ?stop, "outbox drain stopped");
                this.active
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&k);
            }
        });
    }

    /// Whether the drain of `k` should stop (nothing new since its last listing); if so it is no
    /// longer active, else the next listing is due.
    fn finished(&self, k: &(String, String)) -> bool {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        match active.get_mut(k) {
            Some(again) if *again => {
                *again = false;
                false
            }
            _ => {
                active.remove(k);
                true
            }
        }
    }

    /// Delivers the outbox entries of `ns/name` in order until none is left.
    async fn drain(&self, ns: &str, name: &str) -> Result<(), Stop> {
        let k = (ns.to_string(), name.to_string());
        let prefix = self.deps.keys.request_outbox_prefix(ns, name);
        loop {
            let entries = self
                .consul_retry(|| self.deps.consul.kv_list(&prefix, QueryOptions::default()))
                .await?
                .1;
            let Some(first) = entries.into_iter().min_by(|a, b| a.key.cmp(&b.key)) else {
                if self.finished(&k) {
                    return Ok(());
                }
                continue;
            };
            self.deliver_one(first).await?;
        }
    }

    /// Sends one entry and removes it with its outcome recorded.
    async fn deliver_one(&self, pair: KvPair) -> Result<(), Stop> {
        let record: OutboxRecord = match serde_json::from_slice(&pair.value) {
            Ok(r) => r,
            Err(e) => {
                // Only the leader writes here; an unreadable entry would block its request's
                // outbox for good.
                tracing::error!(key = %pair.key, error = %e, "removing an unreadable outbox entry");
                return self.remove(&pair.key, None, None).await;
            }
        };
        let outcome = {
            let _permit = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
                p = self.permits.acquire() => p.map_err(|_| Stop::Cancelled)?,
            };
            let tenancy = self.deps.config.borrow().tenancy.clone();
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
                o = self.deps.sender.send(&record, &tenancy) => o,
            }
        };
        let label = if outcome.is_ok() {
            "delivered"
        } else {
            "failed"
        };
        metrics::counter!("jobforge_webhook_deliveries_total", "outcome" => label).increment(1);
        let request = format!("{}/{}", record.namespace, record.name);
        match &outcome {
            Ok(()) => {
                tracing::debug!(%request, delivery = %record.delivery_id, "webhook delivered")
            }
            Err(f) => {
                tracing::warn!(%request, delivery = %record.delivery_id, failure = %f, "webhook delivery given up")
            }
        }
        self.remove(&pair.key, Some(&record), Some(outcome)).await
    }

    /// Removes outbox entry `key` and, when `record` is given, records `outcome` in its request's
    /// status, in one fenced transaction (the status by CAS, re-read on conflict; after
    /// [`RECORD_ATTEMPTS`] conflicts the entry is removed alone).
    async fn remove(
        &self,
        key: &str,
        record: Option<&OutboxRecord>,
        outcome: Option<Result<(), Failure>>,
    ) -> Result<(), Stop> {
        let delete = TxnOp::Delete {
            key: key.to_string(),
        };
        if let (Some(record), Some(outcome)) = (record, &outcome) {
            let status_key = self.deps.keys.status_key(&record.namespace, &record.name);
            for _ in 0..RECORD_ATTEMPTS {
                let (_, pair) = self
                    .consul_retry(|| {
                        self.deps
                            .consul
                            .kv_get(&status_key, QueryOptions::default())
                    })
                    .await?;
                let Some(pair) = pair else { break };
                let Ok(mut status) = serde_json::from_slice::<BuildStatus>(&pair.value) else {
                    break;
                };
                note(&mut status, &record.event_id, outcome);
                let Ok(value) = serde_json::to_vec(&status) else {
                    break;
                };
                let ops = [
                    delete.clone(),
                    TxnOp::Cas {
                        key: status_key.clone(),
                        value,
                        flags: 0,
                        index: pair.modify_index,
                    },
                ];
                match self.consul_retry(|| self.deps.fence.txn(&ops)).await? {
                    FencedTxn::Committed(_) => return Ok(()),
                    FencedTxn::NotLeader => return Err(Stop::NotLeader),
                    FencedTxn::RolledBack(_) => continue,
                }
            }
        }
        match self
            .consul_retry(|| self.deps.fence.txn(std::slice::from_ref(&delete)))
            .await?
        {
            FencedTxn::NotLeader => Err(Stop::NotLeader),
            FencedTxn::Committed(_) | FencedTxn::RolledBack(_) => Ok(()),
        }
    }

    /// Runs `call` until it answers, backing off (250 ms doubling to [`CONSUL_MAX_BACKOFF`])
    /// while Consul fails; stops when the term ends.
    async fn consul_retry<T, F, Fut>(&self, mut call: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = jobforge_client::consul::Result<T>>,
    {
        let mut delay = Duration::from_millis(250);
        loop {
            let res = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
                r = call() => r,
            };
            match res {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "outbox: Consul call failed");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(Stop::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(CONSUL_MAX_BACKOFF);
                }
            }
        }
    }
}

/// Records the outcome of the delivery of `event_id` in `status.webhook`.
fn note(status: &mut BuildStatus, event_id: &str, outcome: &Result<(), Failure>) {
    let book = status.webhook.get_or_insert_with(WebhookStatus::default);
    match outcome {
        Ok(()) => {
            book.last_delivered_at = Some(Utc::now());
            book.last_delivered_event = Some(event_id.to_string());
        }
        Err(f) => {
            book.last_error = Some(f.to_string());
            book.last_error_event = Some(event_id.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_noted_with_their_event_and_errors_stay_until_another_failure() {
        let mut s = BuildStatus::default();
        note(&mut s, "started:7:1", &Err(Failure::NotAllowed));
        note(&mut s, "succeeded:7:1", &Ok(()));
        let w = s.webhook.expect("book");
        assert_eq!(w.last_error.as_deref(), Some("destination not allowed"));
        assert_eq!(w.last_error_event.as_deref(), Some("started:7:1"));
        assert_eq!(w.last_delivered_event.as_deref(), Some("succeeded:7:1"));
        assert!(w.last_delivered_at.is_some());
    }
}
