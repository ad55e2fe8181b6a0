//! Throughput (N requests written at once → all build jobs registered, all `Succeeded`; controller
//! peak RSS and CPU) and, on the same stack with those N finished requests stored, the idle cost of
//! a leader and of a standby (requests per minute, from the emulators' request counters).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use futures::StreamExt;
use jobforge_tests::Kv;

use crate::api;
use crate::latency::{request, request_key};
use crate::report::{Cmp, Report};
use crate::stack::{Binaries, Controller, Stack, proc_usage};

/// Concurrent PUTs while writing the requests "at once".
const WRITERS: usize = 64;

/// Sizes of the load scenario.
#[derive(Debug, Clone, Copy)]
pub struct LoadSizes {
    /// Requests written at once.
    pub requests: usize,
    /// Idle measuring window, per replica configuration.
    pub idle_window: Duration,
    /// Longest wait for all requests to finish.
    pub finish_timeout: Duration,
}

/// Runs throughput then idle cost (see the module docs).
pub async fn run(
    bins: &Binaries,
    repo_url: &str,
    sizes: LoadSizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = sizes.requests;
    eprintln!("[throughput] {n} requests written at once ({WRITERS} concurrent PUTs)");
    let stack = Stack::start(bins, &[])?;
    stack.warm_up().await?;
    let leader = Controller::start(bins, &stack).await?;
    leader.wait_leader(Duration::from_secs(60)).await?;
    let http = reqwest::Client::new();
    let kv = Kv::new(stack.consul.clone());
    let before = proc_usage(leader.pid())?;

    // Follow registrations on the event stream (subscribed before the first PUT).
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel::<()>();
    let registered = {
        let (http, nomad) = (http.clone(), stack.nomad.clone());
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            api::follow_job_events(&http, &nomad, sizes.finish_timeout, sub_tx, |id, _| {
                if id.starts_with("jobforge-bench-tp-") && id.ends_with("-build") {
                    seen.insert(id.to_string());
                }
                seen.len() >= n
            })
            .await
            .map(|_| Instant::now())
        })
    };
    tokio::time::timeout(Duration::from_secs(10), sub_rx)
        .await
        .context("the event stream did not answer within 10 s")?
        .context("the event stream failed")?;

    let t0 = Instant::now();
    let bodies: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let name = format!("tp-{i}");
            (request_key(&name), request(&name, repo_url))
        })
        .collect();
    let kv2 = kv.clone();
    let results: Vec<anyhow::Result<bool>> = futures::stream::iter(bodies)
        .map(|(k, b)| {
            let kv = kv2.clone();
            async move { kv.put(&k, &b).await }
        })
        .buffer_unordered(WRITERS)
        .collect()
        .await;
    let written = t0.elapsed();
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e).context("writing the requests");
    }
    let t_registered = registered.await.context("event task")??;
    let all_registered = t_registered.duration_since(t0);
    eprintln!("  all {n} build jobs registered after {all_registered:?}");
    let (succeeded, failed) = wait_all_terminal(&kv, n, t0, sizes.finish_timeout).await?;
    let all_done = t0.elapsed();
    let after = proc_usage(leader.pid())?;

    let note = format!("n={n}");
    report.add("throughput.write_s", written.as_secs_f64(), "s", &note);
    report.add_target(
        "throughput.all_registered_s",
        all_registered.as_secs_f64(),
        "s",
        Cmp::AtMost,
        20.0,
        &note,
    );
    report.add(
        "throughput.all_succeeded_s",
        succeeded
            .map(|t| t.duration_since(t0).as_secs_f64())
            .unwrap_or(f64::NAN),
        "s",
        format!(
            "n={n}, failed {failed}, all terminal after {:.1} s",
            all_done.as_secs_f64()
        ),
    );
    report.add("throughput.failed", failed as f64, "count", &note);
    report.add_target(
        "controller.peak_rss_mb",
        after.peak_rss_mb,
        "MB",
        Cmp::AtMost,
        150.0,
        "VmHWM over the whole run",
    );
    report.add(
        "controller.cpu_s",
        after.cpu_s - before.cpu_s,
        "s",
        format!("utime+stime from first PUT to all terminal, n={n}"),
    );

    idle(bins, &stack, leader, sizes.idle_window, n, report).await
}

/// Waits (blocking queries on the status prefix, at most one list per second: each list of N
/// statuses is large) until every `tp-*` status is terminal. Returns when all were `Succeeded`
/// (`None` if some failed) and how many failed.
async fn wait_all_terminal(
    kv: &Kv,
    n: usize,
    t0: Instant,
    timeout: Duration,
) -> anyhow::Result<(Option<Instant>, usize)> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/kv/jobforge/status/bench/?recurse", kv.base);
    let mut index = 1u64;
    loop {
        if t0.elapsed() > timeout {
            bail!("not all {n} requests finished within {timeout:?}");
        }
        let started = Instant::now();
        let r = http
            .get(&url)
            .query(&[("index", index.to_string()), ("wait", "30s".into())])
            .send()
            .await?;
        let now = Instant::now();
        let idx = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let entries: Vec<serde_json::Value> = if r.status() == reqwest::StatusCode::NOT_FOUND {
            Vec::new()
        } else {
            r.error_for_status()?.json().await?
        };
        let (mut ok, mut bad) = (0usize, 0usize);
        for e in &entries {
            if !e["Key"].as_str().unwrap_or("").contains("/tp-") {
                continue;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(e["Value"].as_str().unwrap_or_default())
                .unwrap_or_default();
            let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            match doc["phase"].as_str() {
                Some("Succeeded") => ok += 1,
                Some("Failed" | "Cancelled") => bad += 1,
                _ => {}
            }
        }
        if ok + bad >= n {
            return Ok(((bad == 0).then_some(now), bad));
        }
        index = if idx < index { 1 } else { idx.max(1) };
        // Coalesce: a 10,000-entry list per status write would load the emulator we measure.
        let spent = started.elapsed();
        if spent < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1) - spent).await;
        }
    }
}

/// Idle cost: requests per minute seen by the emulators over `window`, first with the leader
/// alone, then with a standby added (standby = total − leader).
async fn idle(
    bins: &Binaries,
    stack: &Stack,
    leader: Controller,
    window: Duration,
    stored: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("[idle] {stored} finished requests stored; measuring {window:?} per configuration");
    let http = reqwest::Client::new();
    let consul_m = format!("{}/v1/agent/metrics", stack.consul);
    let nomad_m = format!("{}/v1/metrics", stack.nomad);
    // Let the leader settle (garbage collection, last status writes) before measuring.
    settle(&http, &consul_m, &nomad_m, Duration::from_secs(3)).await?;
    let (lc, ln, leader_routes) = window_rates(&http, &consul_m, &nomad_m, window).await?;
    let standby = Controller::start(bins, stack).await?;
    settle(&http, &consul_m, &nomad_m, Duration::from_secs(3)).await?;
    let (tc, tn, both_routes) = window_rates(&http, &consul_m, &nomad_m, window).await?;
    if !leader.is_ready_leader().await {
        bail!("the first controller lost leadership during the idle measurement");
    }
    let note = format!("{stored} stored, window {} s", window.as_secs());
    report.add("idle.leader.consul_req_per_min", lc, "req/min", &note);
    report.add("idle.leader.nomad_req_per_min", ln, "req/min", &note);
    report.add_target(
        "idle.leader.total_req_per_min",
        lc + ln,
        "req/min",
        Cmp::AtMost,
        10.0,
        format!("{note}; {leader_routes}"),
    );
    report.add(
        "idle.standby.total_req_per_min",
        ((tc + tn) - (lc + ln)).max(0.0),
        "req/min",
        format!("{note}; (leader+standby) − leader; both: {both_routes}"),
    );
    drop(standby);
    drop(leader);
    Ok(())
}

/// Waits until a `quiet` interval passes with the request counters moving by at most 2 (blocking
/// queries re-armed by their wait timer), for at most 60 s; then returns either way.
async fn settle(
    http: &reqwest::Client,
    consul_m: &str,
    nomad_m: &str,
    quiet: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (c, n) = window_counts(http, consul_m, nomad_m, quiet).await?;
        let moved: u64 = c.values().chain(n.values()).sum();
        if moved <= 2 {
            return Ok(());
        }
    }
    Ok(())
}

async fn window_counts(
    http: &reqwest::Client,
    consul_m: &str,
    nomad_m: &str,
    window: Duration,
) -> anyhow::Result<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let c0 = api::counters(http, consul_m).await?;
    let n0 = api::counters(http, nomad_m).await?;
    tokio::time::sleep(window).await;
    let c1 = api::counters(http, consul_m).await?;
    let n1 = api::counters(http, nomad_m).await?;
    Ok((api::delta(&c0, &c1), api::delta(&n0, &n1)))
}

/// Requests per minute (Consul, Nomad) over `window`, and the routes that were called with their
/// rates (`consul.http.PUT.v1.session.renew._=12/min, …`).
async fn window_rates(
    http: &reqwest::Client,
    consul_m: &str,
    nomad_m: &str,
    window: Duration,
) -> anyhow::Result<(f64, f64, String)> {
    let (c, n) = window_counts(http, consul_m, nomad_m, window).await?;
    let per_min = 60.0 / window.as_secs_f64();
    let routes = c
        .iter()
        .chain(n.iter())
        .map(|(k, v)| format!("{k}={:.1}/min", *v as f64 * per_min))
        .collect::<Vec<_>>()
        .join(", ");
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>() as f64 * per_min;
    Ok((total(&c), total(&n), routes))
}
