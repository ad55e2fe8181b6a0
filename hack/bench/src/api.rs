//! The raw HTTP calls the benchmark observes the system with: Nomad blocking queries
//! (`X-Nomad-Index` / `?index=`), the Nomad event stream, and the emulators' request counters
//! (Consul `GET /v1/agent/metrics`, Nomad `GET /v1/metrics`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Longest single blocking query the benchmark issues.
pub const BLOCK: Duration = Duration::from_secs(30);

/// A Nomad endpoint's JSON and `X-Nomad-Index`; blocking when `index` > 0.
pub async fn nomad_get(
    http: &reqwest::Client,
    url: &str,
    index: u64,
) -> anyhow::Result<(u64, Value)> {
    let mut req = http.get(url);
    if index > 0 {
        req = req.query(&[
            ("index", index.to_string()),
            ("wait", format!("{}ms", BLOCK.as_millis())),
        ]);
    }
    let r = req.send().await.with_context(|| format!("GET {url}"))?;
    let idx = r
        .headers()
        .get("x-nomad-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let status = r.status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok((
        idx,
        r.json().await.with_context(|| format!("GET {url}: JSON"))?,
    ))
}

/// Blocks (from `index`) until Nomad lists at least one job whose ID starts with `prefix`, and
/// returns the first job's ID.
///
/// Errors: transport, or `timeout` passing.
pub async fn wait_job_with_prefix(
    http: &reqwest::Client,
    nomad: &str,
    prefix: &str,
    mut index: u64,
    timeout: Duration,
) -> anyhow::Result<String> {
    let url = format!("{nomad}/v1/jobs?prefix={prefix}");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (idx, v) = tokio::time::timeout_at(deadline, nomad_get(http, &url, index.max(1)))
            .await
            .with_context(|| format!("no job with prefix {prefix} within {timeout:?}"))??;
        if let Some(id) = v
            .as_array()
            .and_then(|a| a.first())
            .and_then(|j| j["ID"].as_str())
        {
            return Ok(id.to_string());
        }
        index = if idx < index { 1 } else { idx };
    }
}

/// Blocks until some allocation of job `id` is terminal (`complete` or `failed`).
pub async fn wait_alloc_terminal(
    http: &reqwest::Client,
    nomad: &str,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let url = format!("{nomad}/v1/job/{id}/allocations");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut index = 0;
    loop {
        let (idx, v) = tokio::time::timeout_at(deadline, nomad_get(http, &url, index))
            .await
            .with_context(|| format!("no terminal allocation of {id} within {timeout:?}"))??;
        let terminal = v.as_array().is_some_and(|a| {
            a.iter()
                .any(|al| matches!(al["ClientStatus"].as_str(), Some("complete" | "failed")))
        });
        if terminal {
            return Ok(());
        }
        index = if idx < index { 1 } else { idx.max(1) };
    }
}

/// Cumulative request counts by metric name from a go-metrics JSON document at `url`.
pub async fn counters(http: &reqwest::Client, url: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let v: Value = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["Counters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| Some((c["Name"].as_str()?.to_string(), c["Count"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default())
}

/// Each counter in `after` minus its value in `before`, leaving out those that did not move.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

/// Reads Nomad's event stream (`topic=Job`), signals `subscribed` once the stream's headers
/// arrived, and calls `on_job(id, type)` for every Job event until it returns `true`.
///
/// Errors: transport, or `timeout` passing.
pub async fn follow_job_events(
    http: &reqwest::Client,
    nomad: &str,
    timeout: Duration,
    subscribed: tokio::sync::oneshot::Sender<()>,
    mut on_job: impl FnMut(&str, &str) -> bool,
) -> anyhow::Result<()> {
    let work = async {
        let mut r = http
            .get(format!("{nomad}/v1/event/stream?topic=Job:*"))
            .send()
            .await?
            .error_for_status()?;
        let _ = subscribed.send(());
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = r.chunk().await? {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                for e in v["Events"].as_array().into_iter().flatten() {
                    if e["Topic"] == "Job"
                        && on_job(
                            e["Key"].as_str().unwrap_or(""),
                            e["Type"].as_str().unwrap_or(""),
                        )
                    {
                        return Ok(());
                    }
                }
            }
        }
        bail!("the event stream ended")
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("event stream: not done within {timeout:?}"))?
}
