//! HTTP check runners: one task per registered HTTP check, which really sends `GET <url>` every
//! interval and records the outcome (hashicorp/consul `agent/checks/check.go`, `CheckHTTP`):
//! - the first run comes after a random stagger within one interval (`lib.RandomStagger`), then
//!   one run per interval;
//! - headers `User-Agent: Consul Health Check` and `Accept: text/plain, text/*, */*`;
//! - 2xx → `passing`, 429 → `warning`, any other status → `critical`, output
//!   `HTTP GET <url>: <code> <reason> Output: <body, at most 4 KiB>`;
//! - no answer within the check's timeout, or a transport error → `critical`, the error as output.
//!
//! A status change goes through [`super::db::Db::set_check_status`], which invalidates the
//! sessions listing a check that turned critical. A runner stops when its check is deregistered
//! or replaced ([`ConsulState::stop_runner`]) or the emulator stops.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ConsulState;
use super::catalog::{Check, CheckKind, Health, MAX_OUTPUT};

impl ConsulState {
    /// Starts the runner of `check` when it is an HTTP check, replacing a runner of the same ID.
    pub(crate) fn start_runner(self: &Arc<Self>, check: &Check) {
        let CheckKind::Http {
            url,
            interval,
            timeout,
        } = &check.kind
        else {
            self.stop_runner(&check.id);
            return;
        };
        let token = self.cancel.child_token();
        let old = self
            .runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(check.id.clone(), token.clone());
        if let Some(old) = old {
            old.cancel();
        }
        tokio::spawn(run(
            Arc::downgrade(self),
            check.id.clone(),
            url.clone(),
            *interval,
            *timeout,
            token,
        ));
    }

    /// Stops the runner of check `id`, if any.
    pub(crate) fn stop_runner(&self, id: &str) {
        if let Some(t) = self
            .runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            t.cancel();
        }
    }
}

/// One check's loop; holds only a weak reference to the state between runs.
async fn run(
    state: Weak<ConsulState>,
    id: String,
    url: String,
    interval: Duration,
    timeout: Duration,
    cancel: CancellationToken,
) {
    // Go's proxy-from-environment never proxies loopback, where the dev stack's checks point.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, check = %id, "consul emulator: building the check's HTTP client failed");
            return;
        }
    };
    let stagger_ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    let first = Duration::from_nanos(rand::rng().random_range(0..stagger_ns.max(1)));
    let mut next = Instant::now() + first;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = Instant::now() + interval;
        let (status, output) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe(&client, &url) => r,
        };
        let Some(s) = state.upgrade() else { return };
        let (known, before, after) = {
            let mut db = s.lock();
            let before = db.raft_index;
            let known = db.set_check_status(&id, status, output, Instant::now());
            (known, before, db.raft_index)
        };
        if after > before
            && let Err(e) = s.durable(after).await
        {
            tracing::error!(error = %e, "consul emulator: persisting a check's status failed");
        }
        if !known {
            return;
        }
    }
}

/// One `GET` of the check URL: its status and output.
async fn probe(client: &reqwest::Client, url: &str) -> (Health, String) {
    let resp = client
        .get(url)
        .header("User-Agent", "Consul Health Check")
        .header("Accept", "text/plain, text/*, */*")
        .send()
        .await;
    match resp {
        Err(e) => (Health::Critical, format!("Get {url:?}: {e}")),
        Ok(r) => {
            let code = r.status();
            let mut body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            body.truncate(MAX_OUTPUT);
            (
                Health::of_http_status(code.as_u16()),
                format!(
                    "HTTP GET {url}: {} {} Output: {}",
                    code.as_u16(),
                    code.canonical_reason().unwrap_or(""),
                    String::from_utf8_lossy(&body)
                ),
            )
        }
    }
}
