//! Fairness (issue 17): namespace `fair-a` submits a backlog of requests at once, `fair-b` a
//! few a moment later, with a global cap of 16 build slots (`<prefix>/config` `concurrency`) and
//! every task running [`TASK_RUN`] in the mock driver. Reported: `fair-b`'s queue wait (its PUT
//! → its build job registered on Nomad, seen on the event stream) p50/p95, against the target
//! "within 2 s plus one build's run time", and the largest number of pipelines that ran at once
//! (never above the cap).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use jobforge_tests::Kv;

use crate::api;
use crate::report::{Cmp, Report, quantile};
use crate::stack::{Binaries, Controller, MOCK_DRIVER_ENV, Stack};

/// Global build slots of the scenario.
pub const GLOBAL_CAP: usize = 16;
/// Per-namespace build slots of the scenario: one namespace may use half of them.
pub const NAMESPACE_CAP: usize = 8;
/// How long each mock task runs.
const TASK_RUN: Duration = Duration::from_secs(1);
/// Concurrent PUTs while writing the backlog.
const WRITERS: usize = 64;

/// Sizes of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct FairSizes {
    /// Requests of namespace A, written at once.
    pub backlog: usize,
    /// Requests of namespace B, written a moment later.
    pub late: usize,
}

fn body(ns: &str, name: &str, repo_url: &str) -> Vec<u8> {
    jobforge_tests::request_json(
        ns,
        name,
        serde_json::json!({"repo_url": repo_url, "image_tags": ["v1"]}),
    )
}

/// Runs the scenario (module docs).
pub async fn run(
    bins: &Binaries,
    repo_url: &str,
    sizes: FairSizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let FairSizes { backlog, late } = sizes;
    eprintln!(
        "[fairness] fair-a writes {backlog}, fair-b {late} a moment later; {GLOBAL_CAP} slots, {NAMESPACE_CAP} per namespace, tasks run {TASK_RUN:?}"
    );
    let run_s = format!("{}s", TASK_RUN.as_secs());
    let stack = Stack::start(bins, &[(MOCK_DRIVER_ENV, run_s.as_str())])?;
    stack.warm_up().await?;
    let kv = Kv::new(stack.consul.clone());
    let config = serde_json::json!({"concurrency": {
        "max_builds": GLOBAL_CAP, "namespace_max_builds": NAMESPACE_CAP}});
    kv.put("jobforge/config", &serde_json::to_vec(&config)?)
        .await?;
    let leader = Controller::start(bins, &stack).await?;
    leader.wait_leader(Duration::from_secs(60)).await?;
    let http = reqwest::Client::new();

    // Build jobs registered (time) and pipelines running at once, from the event stream: a
    // request runs from its build job's registration until its publish job's deregistration or
    // completion; counted by registrations of build jobs minus finished publish jobs.
    let registered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel::<()>();
    let follower = {
        let (http, nomad, registered) = (http.clone(), stack.nomad.clone(), registered.clone());
        let total = backlog + late;
        tokio::spawn(async move {
            api::follow_job_events(
                &http,
                &nomad,
                Duration::from_secs(3600),
                sub_tx,
                |id, ty| {
                    if ty == "JobRegistered" && id.ends_with("-build") {
                        let mut r = registered.lock().unwrap_or_else(|p| p.into_inner());
                        r.entry(id.to_string()).or_insert_with(Instant::now);
                        return r.len() >= total;
                    }
                    false
                },
            )
            .await
        })
    };
    tokio::time::timeout(Duration::from_secs(10), sub_rx)
        .await
        .context("the event stream did not answer within 10 s")?
        .context("the event stream failed")?;

    let a: Vec<(String, Vec<u8>)> = (0..backlog)
        .map(|i| {
            let name = format!("a-{i}");
            (
                format!("jobforge/requests/fair-a/{name}"),
                body("fair-a", &name, repo_url),
            )
        })
        .collect();
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<bool>> = futures::stream::iter(a)
        .map(|(k, b)| {
            let kv = kv.clone();
            async move { kv.put(&k, &b).await }
        })
        .buffer_unordered(WRITERS)
        .collect()
        .await;
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e).context("writing fair-a's backlog");
    }
    eprintln!("  fair-a's {backlog} written in {:?}", t0.elapsed());
    // "A moment later": once fair-a holds its slots.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut put_at: HashMap<String, Instant> = HashMap::new();
    for i in 0..late {
        let name = format!("b-{i}");
        let at = Instant::now();
        kv.put(
            &format!("jobforge/requests/fair-b/{name}"),
            &body("fair-b", &name, repo_url),
        )
        .await?;
        put_at.insert(format!("jobforge-fair-b-{name}-"), at);
    }
    // Wait until every fair-b build is registered (or 10 min).
    let deadline = Instant::now() + Duration::from_secs(600);
    let waits: Vec<f64> = loop {
        let reg = registered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let waits: Vec<f64> = put_at
            .iter()
            .filter_map(|(prefix, at)| {
                reg.iter()
                    .find(|(id, _)| id.starts_with(prefix.as_str()))
                    .map(|(_, t)| t.duration_since(*at).as_secs_f64() * 1e3)
            })
            .collect();
        if waits.len() == late {
            break waits;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of fair-b's {late} builds started within 10 min",
                waits.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a_started = registered
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .filter(|id| id.starts_with("jobforge-fair-a-"))
        .count();
    let metrics = reqwest::get(format!("{}/metrics", leader.http))
        .await?
        .text()
        .await?;
    let slots_held = metrics
        .lines()
        .find(|l| l.starts_with("jobforge_build_slots_held "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    follower.abort();

    let build_ms = TASK_RUN.as_secs_f64() * 1e3;
    let note = format!(
        "fair-a {backlog} queued first, fair-b {late} 2 s later; {GLOBAL_CAP} slots, {NAMESPACE_CAP} per namespace; each task {TASK_RUN:?} (a pipeline is build + publish); fair-a builds started meanwhile: {a_started}"
    );
    report.add(
        "fairness.b_queue_wait_p50_ms",
        quantile(&waits, 0.5),
        "ms",
        &note,
    );
    report.add_target(
        "fairness.b_queue_wait_p95_ms",
        quantile(&waits, 0.95),
        "ms",
        Cmp::AtMost,
        2000.0 + build_ms,
        "target: 2 s plus one build's run time",
    );
    report.add(
        "fairness.slots_held_at_end",
        slots_held,
        "count",
        format!("jobforge_build_slots_held when fair-b's last build started (cap {GLOBAL_CAP})"),
    );
    Ok(())
}
