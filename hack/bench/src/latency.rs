//! Latency scenarios: the loopback floor, reaction latency (KV PUT → build job registered, one
//! request at a time), status update after an allocation change, and the same reaction workload
//! through the naive polling loop of [`crate::naive`].

use std::time::{Duration, Instant};

use anyhow::Context;
use jobforge_tests::Kv;

use crate::api;
use crate::report::{Cmp, Report, quantile};
use crate::stack::{Binaries, Controller, Stack};

/// Time allowed for one request to be picked up (generous: a MISS is reported, a hang is not).
const PER_REQUEST: Duration = Duration::from_secs(60);

/// A BuildRequest for `bench/<name>` cloning `repo_url`.
pub fn request(name: &str, repo_url: &str) -> Vec<u8> {
    jobforge_tests::request_json(
        "bench",
        name,
        serde_json::json!({"repo_url": repo_url, "image_tags": ["v1"]}),
    )
}

/// The request key of `bench/<name>`.
pub fn request_key(name: &str) -> String {
    format!("jobforge/requests/bench/{name}")
}

/// The status key of `bench/<name>`.
pub fn status_key(name: &str) -> String {
    format!("jobforge/status/bench/{name}")
}

/// Submits `bench/<name>` and returns the time from just before the PUT until a blocking query on
/// Nomad's job list (index taken before the PUT) shows a job of the request, in ms.
pub async fn time_to_job(
    http: &reqwest::Client,
    kv: &Kv,
    nomad: &str,
    name: &str,
    repo_url: &str,
) -> anyhow::Result<f64> {
    let prefix = format!("jobforge-bench-{name}-");
    let (index, _) = api::nomad_get(http, &format!("{nomad}/v1/jobs?prefix={prefix}"), 0).await?;
    let waiter = {
        let (http, nomad, prefix) = (http.clone(), nomad.to_string(), prefix.clone());
        tokio::spawn(async move {
            api::wait_job_with_prefix(&http, &nomad, &prefix, index, PER_REQUEST)
                .await
                .map(|_| Instant::now())
        })
    };
    let body = request(name, repo_url);
    let t0 = Instant::now();
    kv.put(&request_key(name), &body).await?;
    let t1 = waiter.await.context("waiter task")??;
    Ok(t1.duration_since(t0).as_secs_f64() * 1e3)
}

/// One PUT + one blocking GET round trip: a blocking GET on a key (index taken first), then the
/// PUT; time from the PUT's start until the GET returns, in ms.
pub async fn floor(stack: &Stack, n: usize, report: &mut Report) -> anyhow::Result<()> {
    eprintln!("[floor] {n} PUT + blocking GET round trips");
    let kv = Kv::new(stack.consul.clone());
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = "bench/floor";
        let (index, _) = kv.get(key, 0, Duration::ZERO).await?;
        let waiter = {
            let kv = kv.clone();
            tokio::spawn(async move {
                let mut idx = index.max(1);
                loop {
                    let (new, v) = kv.get(key, idx, api::BLOCK).await?;
                    if new != idx && v.is_some() {
                        return anyhow::Ok(Instant::now());
                    }
                    idx = new.max(1);
                }
            })
        };
        let t0 = Instant::now();
        kv.put(key, i.to_string().as_bytes()).await?;
        let t1 = waiter.await.context("waiter task")??;
        samples.push(t1.duration_since(t0).as_secs_f64() * 1e3);
    }
    let note = format!("n={n}");
    report.add_p50_p99("floor.put_blocking_get", &samples, "ms", &note);
    Ok(())
}

/// Reaction latency through the controller: `n` requests, one at a time. Returns the p50 (ms).
pub async fn reaction(
    bins: &Binaries,
    repo_url: &str,
    n: usize,
    report: &mut Report,
) -> anyhow::Result<f64> {
    eprintln!("[reaction] {n} requests one at a time through the controller");
    let stack = Stack::start(bins, &[])?;
    stack.warm_up().await?;
    let ctl = Controller::start(bins, &stack).await?;
    ctl.wait_leader(Duration::from_secs(60)).await?;
    let http = reqwest::Client::new();
    let kv = Kv::new(stack.consul.clone());
    // One at a time, as independent events: a pause longer than the refill interval of the
    // requests watch's token bucket (10/s, burst 2) before each request, so every submission finds
    // the watch idle, as a user's or a CI system's submissions do.
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep(Duration::from_millis(150)).await;
        samples.push(time_to_job(&http, &kv, &stack.nomad, &format!("lat-{i}"), repo_url).await?);
    }
    let note = format!("n={n}, one at a time, 150 ms apart");
    let p50 = quantile(&samples, 0.5);
    report.add_target("reaction.p50_ms", p50, "ms", Cmp::AtMost, 10.0, &note);
    report.add_target(
        "reaction.p99_ms",
        quantile(&samples, 0.99),
        "ms",
        Cmp::AtMost,
        50.0,
        &note,
    );
    report.add("reaction.max_ms", quantile(&samples, 1.0), "ms", &note);

    // Back to back: each request written the moment the previous one's job appeared. This is
    // sustained churn of hundreds of writes a second, which the watch's token bucket deliberately
    // turns into ~10 listings a second (Consul's blocking-query guidance), so each request waits for
    // the next token: the figure shows the bucket, not a reaction time.
    let m = (n / 4).max(3);
    let mut b2b = Vec::with_capacity(m);
    for i in 0..m {
        b2b.push(time_to_job(&http, &kv, &stack.nomad, &format!("b2b-{i}"), repo_url).await?);
    }
    let note = format!("n={m}, back to back: bounded by the watch's token bucket (10/s)");
    report.add_p50_p99("reaction.back_to_back", &b2b, "ms", &note);
    Ok(p50)
}

/// Reaction latency through the naive polling loop (no controller): `n` requests, one at a time,
/// each after a random pause of 0–1 s so that submissions do not lock onto the poll phase.
/// Returns the p50 (ms).
pub async fn baseline(
    bins: &Binaries,
    repo_url: &str,
    n: usize,
    report: &mut Report,
) -> anyhow::Result<f64> {
    eprintln!("[baseline] {n} requests one at a time through the 1 s polling loop");
    let stack = Stack::start(bins, &[])?;
    stack.warm_up().await?;
    let naive = crate::naive::NaiveLoop::spawn(&stack.consul, &stack.nomad, Duration::from_secs(1));
    let http = reqwest::Client::new();
    let kv = Kv::new(stack.consul.clone());
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let pause = Duration::from_millis(rand::random_range(0..1000));
        tokio::time::sleep(pause).await;
        samples.push(time_to_job(&http, &kv, &stack.nomad, &format!("naive-{i}"), repo_url).await?);
    }
    naive.stop().await?;
    let note = format!("n={n}, poll every 1 s");
    Ok(report.add_p50_p99("baseline.polling", &samples, "ms", &note))
}

/// Status update after an allocation change: for `n` requests (builds made to last 1 s so both
/// watches are in place), the time from the build allocation turning terminal (blocking on
/// `/v1/job/<id>/allocations`) to the status key showing a later phase (blocking on the key with
/// its index from before), in ms.
pub async fn alloc_to_status(
    bins: &Binaries,
    repo_url: &str,
    n: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    eprintln!("[status] {n} build allocations finishing → status update");
    // Builds that last 1 s: the mock driver's run_for, or the no-op buildah sleeping.
    let stack = Stack::start(
        bins,
        &[
            ("JOBFORGE_FAKE_BUILD_SLEEP", "1"),
            (crate::stack::MOCK_DRIVER_ENV, "1s"),
        ],
    )?;
    stack.warm_up().await?;
    let ctl = Controller::start(bins, &stack).await?;
    ctl.wait_leader(Duration::from_secs(60)).await?;
    let http = reqwest::Client::new();
    let kv = Kv::new(stack.consul.clone());
    let mut samples = Vec::with_capacity(n);
    let mut skipped = 0;
    for i in 0..n {
        let name = format!("alloc-{i}");
        kv.put(&request_key(&name), &request(&name, repo_url))
            .await?;
        let st = kv
            .wait_json(&status_key(&name), PER_REQUEST, |v| {
                v["phases"]["build"]["nomadJobId"].is_string()
            })
            .await?;
        if !matches!(st["phase"].as_str(), Some("Pending" | "Building")) {
            skipped += 1;
            continue;
        }
        let job = st["phases"]["build"]["nomadJobId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (index, _) = kv.get(&status_key(&name), 0, Duration::ZERO).await?;
        let alloc = async {
            api::wait_alloc_terminal(&http, &stack.nomad, &job, PER_REQUEST).await?;
            anyhow::Ok(Instant::now())
        };
        let status = async {
            let key = status_key(&name);
            let mut idx = index.max(1);
            loop {
                let (new, v) = kv.get(&key, idx, api::BLOCK).await?;
                let now = Instant::now();
                if let Some((bytes, _)) = v
                    && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes)
                    && doc["phase"] != "Building"
                    && doc["phase"] != "Pending"
                {
                    return anyhow::Ok(now);
                }
                idx = if new < idx { 1 } else { new.max(1) };
            }
        };
        let (ta, ts) = tokio::try_join!(alloc, status)?;
        samples.push(ts.saturating_duration_since(ta).as_secs_f64() * 1e3);
    }
    let note = format!(
        "n={}, skipped {skipped} (build over before watching)",
        samples.len()
    );
    report.add_target(
        "alloc_to_status.p50_ms",
        quantile(&samples, 0.5),
        "ms",
        Cmp::AtMost,
        20.0,
        &note,
    );
    report.add(
        "alloc_to_status.p99_ms",
        quantile(&samples, 0.99),
        "ms",
        &note,
    );
    drop(ctl);
    Ok(())
}
