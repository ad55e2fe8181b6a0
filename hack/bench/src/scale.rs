//! Scale (issue 17): reaction latency with nothing stored, then with `stored` finished requests
//! across `namespaces` namespaces; Consul bytes read per request (the emulator's `bytes_out`
//! sample of `GET /v1/kv/...`); controller RSS; the idle leader's requests per minute.
//!
//! Seeding is fast and makes no build: `/v1/txn` batches of 64 `set`s write the specs, then
//! batches write a `Succeeded` status for each at its generation (the spec's ModifyIndex, from
//! the txn answer), so the new leader's first pass finds every request finished.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use futures::StreamExt;
use jobforge_tests::Kv;
use serde_json::{Value, json};

use crate::api;
use crate::latency::time_to_job;
use crate::report::{Cmp, Report, quantile};
use crate::stack::{Binaries, Controller, Stack, proc_usage};

/// Operations per `/v1/txn` (Consul's limit).
const TXN_OPS: usize = 64;
/// Concurrent txns while seeding.
const WRITERS: usize = 8;

/// Sizes of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct ScaleSizes {
    /// Finished requests stored.
    pub stored: usize,
    /// Namespaces they are spread over.
    pub namespaces: usize,
    /// Reaction samples, with nothing stored and with everything stored.
    pub samples: usize,
    /// Idle window of the leader.
    pub idle_window: Duration,
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// One `/v1/txn` of `set`s; returns each key's ModifyIndex.
async fn txn_set(
    http: &reqwest::Client,
    consul: &str,
    ops: &[(String, Vec<u8>)],
) -> anyhow::Result<Vec<(String, u64)>> {
    let body: Vec<Value> = ops
        .iter()
        .map(|(k, v)| json!({"KV": {"Verb": "set", "Key": k, "Value": b64(v)}}))
        .collect();
    let r: Value = http
        .put(format!("{consul}/v1/txn"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["Results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| {
            Some((
                x["KV"]["Key"].as_str()?.to_string(),
                x["KV"]["ModifyIndex"].as_u64()?,
            ))
        })
        .collect())
}

/// Writes `n` finished requests across `namespaces` (module docs).
async fn seed(
    http: &reqwest::Client,
    consul: &str,
    repo_url: &str,
    n: usize,
    namespaces: usize,
) -> anyhow::Result<()> {
    let now = chrono_now();
    let specs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let ns = format!("scale-{:03}", i % namespaces);
            let name = format!("r-{i}");
            let body = jobforge_tests::request_json(
                &ns,
                &name,
                json!({"repo_url": repo_url, "image_tags": ["v1"]}),
            );
            (format!("jobforge/requests/{ns}/{name}"), body)
        })
        .collect();
    let batches: Vec<Vec<(String, Vec<u8>)>> = specs.chunks(TXN_OPS).map(<[_]>::to_vec).collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(batches)
        .map(|batch| {
            let (http, consul, now) = (http.clone(), consul.to_string(), now.clone());
            async move {
                let written = txn_set(&http, &consul, &batch).await?;
                let statuses: Vec<(String, Vec<u8>)> = written
                    .into_iter()
                    .map(|(k, gen_)| {
                        let status = json!({"observedGeneration": gen_, "phase": "Succeeded",
                            "attempt": 1, "startTime": now, "completionTime": now});
                        (
                            k.replacen("jobforge/requests/", "jobforge/status/", 1),
                            serde_json::to_vec(&status).unwrap_or_default(),
                        )
                    })
                    .collect();
                txn_set(&http, &consul, &statuses).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(WRITERS)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}

/// RFC 3339 UTC time of now, from the system clock.
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Sum of `jobforge_reconcile_total` on the controller's `/metrics`.
async fn reconciles(ctl: &Controller) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", ctl.http))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("jobforge_reconcile_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum())
}

/// The leader's `jobforge_watch_folders` gauges summed over its watches: `(active, parked)`
/// namespace folders (client-cli/src/consul/watch/sharded.rs, parked folders).
async fn folders(ctl: &Controller) -> anyhow::Result<(f64, f64)> {
    let text = reqwest::get(format!("{}/metrics", ctl.http))
        .await?
        .text()
        .await?;
    let sum = |state: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("jobforge_watch_folders{"))
            .filter(|l| l.contains(&format!("state=\"{state}\"")))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    Ok((sum("active"), sum("parked")))
}

/// Bytes Consul answered to `GET /v1/kv/...` so far.
async fn kv_bytes(http: &reqwest::Client, consul: &str) -> anyhow::Result<f64> {
    let v: Value = http
        .get(format!("{consul}/v1/agent/metrics"))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["Samples"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["Name"] == "consul.http.GET.v1.kv._.bytes_out")
        .and_then(|s| s["Sum"].as_f64())
        .unwrap_or(0.0))
}

/// Consul's counters of KV writes: one `PUT`/`DELETE /v1/kv/...` or one `PUT /v1/txn` is one
/// change (a spec written by a user, a status written by the leader in its fenced txn).
const CHANGE_ROUTES: [&str; 3] = [
    "consul.http.PUT.v1.kv._",
    "consul.http.DELETE.v1.kv._",
    "consul.http.PUT.v1.txn",
];

/// What the reactions of one phase cost.
struct Phase {
    /// PUT → build job registered, ms.
    latencies: Vec<f64>,
    /// `GET /v1/kv` bytes answered meanwhile (to everyone).
    kv_bytes: f64,
    /// KV writes meanwhile ([`CHANGE_ROUTES`]).
    changes: u64,
    /// When the last reaction was seen (its build job registered; its status writes follow
    /// within milliseconds with the mock driver).
    last_change: Instant,
}

/// `samples` reactions in namespace `ns` (one at a time, 150 ms apart), and the KV bytes read and
/// KV changes made by everyone meanwhile.
async fn reactions(
    http: &reqwest::Client,
    stack: &Stack,
    repo_url: &str,
    tag: &str,
    samples: usize,
) -> anyhow::Result<Phase> {
    let kv = Kv::new(stack.consul.clone());
    let consul_m = format!("{}/v1/agent/metrics", stack.consul);
    let b0 = kv_bytes(http, &stack.consul).await?;
    let c0 = api::counters(http, &consul_m).await?;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        tokio::time::sleep(Duration::from_millis(150)).await;
        latencies
            .push(time_to_job(http, &kv, &stack.nomad, &format!("{tag}-{i}"), repo_url).await?);
    }
    let last_change = Instant::now();
    // Let the requests finish (mock tasks run 0 s) so their status writes are counted too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b1 = kv_bytes(http, &stack.consul).await?;
    let c1 = api::counters(http, &consul_m).await?;
    let moved = api::delta(&c0, &c1);
    let changes = CHANGE_ROUTES
        .iter()
        .filter_map(|r| moved.get(*r))
        .sum::<u64>();
    Ok(Phase {
        latencies,
        kv_bytes: b1 - b0,
        changes,
        last_change,
    })
}

/// Runs the scenario (module docs).
pub async fn run(
    bins: &Binaries,
    repo_url: &str,
    sizes: ScaleSizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ScaleSizes {
        stored,
        namespaces,
        samples,
        idle_window,
    } = sizes;
    eprintln!("[scale] reaction with 0, then {stored} stored across {namespaces} namespaces");
    let stack = Stack::start(bins, &[])?;
    stack.warm_up().await?;
    let http = reqwest::Client::new();
    let leader = Controller::start(bins, &stack).await?;
    leader.wait_leader(Duration::from_secs(60)).await?;
    let empty = reactions(&http, &stack, repo_url, "empty", samples).await?;

    let t0 = Instant::now();
    seed(&http, &stack.consul, repo_url, stored, namespaces)
        .await
        .context("seeding")?;
    eprintln!("  seeded {stored} in {:?}", t0.elapsed());
    // A new leader's first pass over everything stored: restart the controller.
    drop(leader);
    let t1 = Instant::now();
    let leader = Controller::start(bins, &stack).await?;
    leader.wait_leader(Duration::from_secs(600)).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while reconciles(&leader).await? < stored as f64 {
        if Instant::now() > deadline {
            bail!("the first pass did not reconcile {stored} requests within 30 min");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let first_pass = t1.elapsed();
    eprintln!("  first pass over {stored} done in {first_pass:?}");
    let full = reactions(&http, &stack, repo_url, "full", samples).await?;
    let usage = proc_usage(leader.pid())?;

    // Idle leader: the steady state starts once every namespace folder of the leader's
    // sharded watches is parked (each parks after 60 s without a change); then requests per
    // minute over the window.
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut active, mut parked) = folders(&leader).await?;
    while active > 0.0 || parked == 0.0 {
        if Instant::now() > deadline {
            bail!(
                "the leader's watch folders did not all park within 10 min: {active} active, {parked} parked"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        (active, parked) = folders(&leader).await?;
    }
    let parked_after = full.last_change.elapsed();
    eprintln!("  every folder parked ({parked}) {parked_after:?} after the last change");
    let consul_m = format!("{}/v1/agent/metrics", stack.consul);
    let nomad_m = format!("{}/v1/metrics", stack.nomad);
    let c0 = api::counters(&http, &consul_m).await?;
    let n0 = api::counters(&http, &nomad_m).await?;
    tokio::time::sleep(idle_window).await;
    let c1 = api::counters(&http, &consul_m).await?;
    let n1 = api::counters(&http, &nomad_m).await?;
    let per_min = 60.0 / idle_window.as_secs_f64();
    let mut by_route = api::delta(&c0, &c1);
    by_route.extend(api::delta(&n0, &n1));
    let moved: u64 = by_route.values().sum();
    let breakdown = by_route
        .iter()
        .map(|(route, n)| format!("{route} {:.1}", *n as f64 * per_min))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("  idle leader over {idle_window:?}, req/min by route: {breakdown}");
    // A first change in a parked namespace (`bench`, parked with the others): the folder-names
    // read answers, a probe round finds the folder, whose read resumes and lists the change.
    let kv = Kv::new(stack.consul.clone());
    let parked_reaction = time_to_job(&http, &kv, &stack.nomad, "parked-0", repo_url).await?;
    eprintln!("  first change in a parked namespace: {parked_reaction:.1} ms to its build job");

    let note0 = format!("n={samples}, nothing stored, one at a time");
    let note =
        format!("n={samples}, {stored} finished requests stored across {namespaces} namespaces");
    report.add(
        "scale.empty.reaction_p50_ms",
        quantile(&empty.latencies, 0.5),
        "ms",
        &note0,
    );
    report.add(
        "scale.empty.reaction_p99_ms",
        quantile(&empty.latencies, 0.99),
        "ms",
        &note0,
    );
    report.add_target(
        "scale.full.reaction_p50_ms",
        quantile(&full.latencies, 0.5),
        "ms",
        Cmp::AtMost,
        15.0,
        &note,
    );
    report.add_target(
        "scale.full.reaction_p99_ms",
        quantile(&full.latencies, 0.99),
        "ms",
        Cmp::AtMost,
        50.0,
        &note,
    );
    let per_change = |p: &Phase| p.kv_bytes / p.changes.max(1) as f64;
    report.add(
        "scale.empty.kv_bytes_per_change",
        per_change(&empty),
        "B",
        format!(
            "GET /v1/kv bytes answered per KV change (PUT/DELETE /v1/kv, PUT /v1/txn: {} changes of {samples} requests), nothing stored",
            empty.changes
        ),
    );
    report.add_target(
        "scale.full.kv_bytes_per_change",
        per_change(&full),
        "B",
        Cmp::AtMost,
        1_048_576.0,
        format!(
            "GET /v1/kv bytes answered per KV change ({} changes of {samples} requests: specs, status writes), {stored} stored",
            full.changes
        ),
    );
    report.add(
        "scale.empty.kv_bytes_per_request",
        empty.kv_bytes / samples.max(1) as f64,
        "B",
        "GET /v1/kv bytes answered per request (all its changes: spec, status writes), nothing stored",
    );
    report.add(
        "scale.full.kv_bytes_per_request",
        full.kv_bytes / samples.max(1) as f64,
        "B",
        "GET /v1/kv bytes per request, all its changes together (the target is per change: kv_bytes_per_change)",
    );
    report.add_target(
        "scale.controller_peak_rss_mb",
        usage.peak_rss_mb,
        "MB",
        Cmp::AtMost,
        250.0,
        "VmHWM of the leader (first pass over everything included)",
    );
    report.add(
        "scale.first_pass_s",
        first_pass.as_secs_f64(),
        "s",
        "new leader: start until every stored request was reconciled once",
    );
    report.add(
        "scale.idle_parked_after_s",
        parked_after.as_secs_f64(),
        "s",
        format!(
            "from the last reaction until every namespace folder of the leader's requests/ and status/ watches was parked ({parked} folders; each parks after 60 s unchanged); the idle window starts then"
        ),
    );
    report.add(
        "scale.parked.reaction_ms",
        parked_reaction,
        "ms",
        format!(
            "one request PUT into a parked namespace after the idle window (n=1): folder names, a probe round of the parked folders, the folder's resumed read, then its build job; {namespaces} namespaces"
        ),
    );
    report.add_target(
        "scale.idle_leader_requests_per_min",
        moved as f64 * per_min,
        "req/min",
        Cmp::AtMost,
        10.0,
        format!(
            "Consul + Nomad requests over {idle_window:?}, every folder parked, with {stored} stored in {namespaces} namespaces; req/min by route: {breakdown}"
        ),
    );
    Ok(())
}
