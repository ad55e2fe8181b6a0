//! The naive reference loop the controller is compared with: every `interval` (1 s), list every
//! request under `jobforge/requests/` (`GET /v1/kv/jobforge/requests/?recurse`), and register a
//! build job (`jobforge-<namespace>-<name>-<ModifyIndex>-build`, a raw_exec `true`) for each
//! (key, ModifyIndex) not seen before. This is the polling design the controller replaces; it is
//! deliberately simple and is only ever run by the benchmark (never in production, and fixed-interval
//! polling is the point of the comparison).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A running polling loop; [`NaiveLoop::stop`] ends it.
pub struct NaiveLoop {
    task: JoinHandle<anyhow::Result<()>>,
}

impl NaiveLoop {
    /// Starts the loop against Consul at `consul` and Nomad at `nomad` (`http://host:port`).
    pub fn spawn(consul: &str, nomad: &str, interval: Duration) -> NaiveLoop {
        let (consul, nomad) = (consul.to_string(), nomad.to_string());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen: HashSet<(String, u64)> = HashSet::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                poll_once(&http, &consul, &nomad, &mut seen).await?;
            }
        });
        NaiveLoop { task }
    }

    /// Stops the loop and returns its first error, if any.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.task.abort();
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(e).context("naive loop task"),
        }
    }
}

async fn poll_once(
    http: &reqwest::Client,
    consul: &str,
    nomad: &str,
    seen: &mut HashSet<(String, u64)>,
) -> anyhow::Result<()> {
    let r = http
        .get(format!("{consul}/v1/kv/jobforge/requests/?recurse"))
        .send()
        .await?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    let entries: Vec<Value> = r.error_for_status()?.json().await?;
    for e in entries {
        let key = e["Key"].as_str().unwrap_or_default().to_string();
        let mi = e["ModifyIndex"].as_u64().unwrap_or(0);
        if !seen.insert((key, mi)) {
            continue;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(e["Value"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let Ok(doc) = serde_json::from_slice::<Value>(&raw) else {
            continue;
        };
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let id = format!("jobforge-{ns}-{name}-{mi}-build");
        let job = json!({"Job": {"ID": id, "Name": id, "Type": "batch", "Datacenters": ["dc1"],
            "TaskGroups": [{"Name": "build", "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Interval": 86_400_000_000_000i64, "Delay": 0, "Mode": "fail"},
                "Tasks": [{"Name": "build", "Driver": "raw_exec",
                    "Config": {"command": "true", "args": []}}]}]}});
        http.post(format!("{nomad}/v1/jobs"))
            .json(&job)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("registering {id}"))?;
    }
    Ok(())
}
