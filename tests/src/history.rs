//! Watching every status write, and checking the invariants fault and failover tests assert:
//! no phase regression within a generation, and exactly-once Nomad jobs.
//!
//! The watcher reads Consul directly (never through a fault proxy) with blocking queries on
//! `jobforge/status/`, following Consul's index rules (reset to 0 when it goes backwards, ≥ 1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Order of phases within an attempt: `Pending` < `Building` < `Testing` < `Publishing` < terminal.
pub fn phase_rank(phase: &str) -> u32 {
    match phase {
        "Pending" => 0,
        "Building" => 1,
        "Testing" => 2,
        "Publishing" => 3,
        _ => 4,
    }
}

/// Every status value seen by the watch: within a generation, `(attempt, phase)` never moves
/// backwards.
#[derive(Debug, Default)]
pub struct History {
    /// Last `(observedGeneration, attempt, phase rank)` per status key.
    pub last: HashMap<String, (u64, u32, u32)>,
    /// Each regression seen, as `key: before -> after`.
    pub regressions: Vec<String>,
    /// Status writes observed (distinct ModifyIndex per key).
    pub writes: u64,
}

/// A running status watch; stop it with [`StatusWatch::finish`] (or drop it).
pub struct StatusWatch {
    history: Arc<Mutex<History>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StatusWatch {
    /// Starts watching `jobforge/status/` on the Consul at `consul` (`http://host:port`).
    pub fn start(consul: &str) -> StatusWatch {
        let history = Arc::new(Mutex::new(History::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_statuses(
            consul.to_string(),
            history.clone(),
            stop.clone(),
        ));
        StatusWatch {
            history,
            stop,
            task: Some(task),
        }
    }

    /// Stops the watch and returns what it saw.
    pub async fn finish(mut self) -> History {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *h)
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn watch_statuses(consul: String, history: Arc<Mutex<History>>, stop: CancellationToken) {
    let client = reqwest::Client::new();
    let mut index = 0u64;
    let mut seen: HashMap<String, u64> = HashMap::new();
    loop {
        let req = client
            .get(format!("{consul}/v1/kv/jobforge/status/?recurse"))
            .query(&[("index", index.to_string()), ("wait", "2s".to_string())])
            .send();
        let resp = tokio::select! {
            _ = stop.cancelled() => return,
            r = req => r,
        };
        let Ok(resp) = resp else {
            // Consul itself is down (an outage test): wait for it to come back.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        };
        let got: u64 = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries: Vec<Value> = resp.json().await.unwrap_or_default();
        let mut h = history.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            let key = e["Key"].as_str().unwrap_or("").to_string();
            let mi = e["ModifyIndex"].as_u64().unwrap_or(0);
            if seen.get(&key) == Some(&mi) {
                continue;
            }
            seen.insert(key.clone(), mi);
            h.writes += 1;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(e["Value"].as_str().unwrap_or(""))
                .unwrap_or_default();
            let Ok(doc) = serde_json::from_slice::<Value>(&raw) else {
                continue;
            };
            let cur = (
                doc["observedGeneration"].as_u64().unwrap_or(0),
                doc["attempt"].as_u64().unwrap_or(0) as u32,
                phase_rank(doc["phase"].as_str().unwrap_or("")),
            );
            if let Some(prev) = h.last.get(&key)
                && prev.0 == cur.0
                && (cur.1, cur.2) < (prev.1, prev.2)
            {
                let msg = format!("{key}: {prev:?} -> {cur:?}");
                h.regressions.push(msg);
            }
            h.last.insert(key, cur);
        }
        index = if got < index { 0 } else { got.max(1) };
    }
}

/// Checks exactly-once in the Nomad registry at `nomad` (`http://host:port`): the jobs whose ID
/// starts with `prefix` number `expected`, and each was registered once (`Version` 0) and ran
/// exactly one allocation.
///
/// Errors: a count that differs, naming the job; Nomad unreachable.
pub async fn assert_exactly_once(nomad: &str, prefix: &str, expected: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let jobs: Vec<Value> = client
        .get(format!("{nomad}/v1/jobs"))
        .query(&[("prefix", prefix)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(
        jobs.len() == expected,
        "{} Nomad jobs with prefix {prefix}, expected {expected}",
        jobs.len()
    );
    for j in &jobs {
        let id = j["ID"].as_str().unwrap_or("");
        let job: Value = client
            .get(format!("{nomad}/v1/job/{id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(
            job["Version"].as_u64() == Some(0),
            "{id} was registered more than once (Version {})",
            job["Version"]
        );
        let allocs: Vec<Value> = client
            .get(format!("{nomad}/v1/job/{id}/allocations"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(allocs.len() == 1, "{id} ran {} times", allocs.len());
    }
    Ok(())
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
///
/// Errors: the process is gone or the field is missing.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}
