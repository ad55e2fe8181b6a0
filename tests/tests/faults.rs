//! Fault injection: runs of requests through the fake pipeline (instant no-op buildah/skopeo tasks)
//! while Consul or Nomad goes away, answers errors, or slows down, and while controllers are
//! SIGKILLed. After each fault: every request `Succeeded`, none lost, none duplicated (each Nomad
//! job registered once, one allocation), no status regression within a generation (watched on
//! Consul directly, never through the proxy), and no leak (the leader's tokio task count and RSS
//! back near their level before the run).
//!
//! The controller reaches Consul and Nomad through a [`FaultProxy`] each; clients write requests
//! to Consul directly. CI mode is the default; `JOBFORGE_LONG_TESTS=1` scales every test up (see
//! `docs/faults.md`).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use jobforge_tests::history::{StatusWatch, assert_exactly_once, rss_kib};
use jobforge_tests::proxy::FaultProxy;
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, Kv, free_port, request_json,
    wait_until,
};
use serde_json::{Value, json};

/// Short session TTL (Consul's minimum) and lock-delay so failover takes seconds, not minutes.
const FAST: &[&str] = &["--session-ttl", "10s", "--lock-delay", "1s"];

/// Tokio tasks no open connection explains that the leader may hold above its pre-run level once
/// idle again.
const TASK_TOLERANCE: u64 = 16;
/// Open sockets allowed once idle: listeners, the blocking watches, and reqwest's pool of idle
/// connections (at most one per request that ran concurrently); a connection leak passes it.
const SOCKET_LIMIT: u64 = 200;
/// RSS growth allowed over the pre-run level: allocator caches and the per-request state a leader
/// keeps (one entry per stored request) are not leaks.
const RSS_TOLERANCE_KIB: u64 = 32 * 1024;

/// CI mode (default) or long mode (`JOBFORGE_LONG_TESTS=1`).
#[derive(Clone, Copy)]
struct Mode {
    long: bool,
}

impl Mode {
    fn get(test: &str) -> Mode {
        let long = std::env::var("JOBFORGE_LONG_TESTS").is_ok_and(|v| v == "1");
        eprintln!(
            "{test}: {} mode{}",
            if long { "long" } else { "CI" },
            if long {
                ""
            } else {
                " (JOBFORGE_LONG_TESTS=1 for the long mode)"
            }
        );
        Mode { long }
    }

    fn pick<T>(self, ci: T, long: T) -> T {
        if self.long { long } else { ci }
    }
}

/// Resource use of one controller process.
///
/// Every open HTTP connection holds one tokio task (hyper's connection task, client or server),
/// and reqwest keeps idle connections pooled for 90 s to 3 min after a burst, so the raw task count
/// follows the pool. The leak measure is `tasks - sockets`: tasks that no connection explains.
#[derive(Debug, Clone, Copy)]
struct Usage {
    tasks: u64,
    sockets: u64,
    rss_kib: u64,
}

impl Usage {
    fn unexplained_tasks(&self) -> u64 {
        self.tasks.saturating_sub(self.sockets)
    }
}

/// Open sockets of `pid` (fds linking to `socket:[…]`).
fn sockets(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count() as u64
        })
        .unwrap_or(0)
}

async fn usage(ctl: &mut ControllerProcess) -> Usage {
    let pid = ctl.process().pid();
    usage_of(&ctl.http, pid).await
}

/// Resource use of the controller process `pid` whose endpoints are at `http`.
async fn usage_of(http: &str, pid: u32) -> Usage {
    let s: Value = reqwest::get(format!("{http}/status"))
        .await
        .expect("controller /status")
        .json()
        .await
        .expect("/status JSON");
    let tasks = s["tokio_tasks"]
        .as_u64()
        .unwrap_or_else(|| panic!("/status has no tokio_tasks: {s}"));
    let rss = rss_kib(pid).expect("rss");
    Usage {
        tasks,
        sockets: sockets(pid),
        rss_kib: rss,
    }
}

/// A dev stack with a fault proxy in front of Consul and of Nomad, and controller replicas that
/// reach the emulators only through them — or, with [`Rig::start_split`], a Consul of its own
/// (a separate process on a fixed port with a data dir, to kill and restart) reached directly.
struct Rig {
    /// Nomad and Vault (and Consul unless split).
    stack: DevStackProcess,
    /// The separate Consul process and the options to restart it with.
    split_consul: Option<(DevStackProcess, DevStackOptions, tempfile::TempDir)>,
    /// `http://127.0.0.1:<port>` of Consul itself.
    consul_url: String,
    consul_proxy: FaultProxy,
    nomad_proxy: FaultProxy,
    repo: GitRepo,
    ctls: Vec<Option<ControllerProcess>>,
    kv: Kv,
}

impl Rig {
    async fn start(replicas: usize) -> Rig {
        let stack = DevStackProcess::start(DevStackOptions {
            fake_tools: true,
            ..DevStackOptions::default()
        })
        .expect("dev stack");
        Rig::assemble(stack, None, replicas).await
    }

    /// Consul in a process of its own (fixed port, data dir), which the controllers reach directly.
    async fn start_split(replicas: usize) -> Rig {
        let data = tempfile::tempdir().expect("tmp");
        let consul_opts = DevStackOptions {
            services: Some("consul".into()),
            consul_port: free_port().expect("port"),
            data_dir_path: Some(data.path().to_path_buf()),
            ..DevStackOptions::default()
        };
        let consul = DevStackProcess::start(consul_opts.clone()).expect("consul");
        let stack = DevStackProcess::start(DevStackOptions {
            services: Some("nomad,vault".into()),
            fake_tools: true,
            ..DevStackOptions::default()
        })
        .expect("nomad and vault");
        Rig::assemble(stack, Some((consul, consul_opts, data)), replicas).await
    }

    async fn assemble(
        stack: DevStackProcess,
        split_consul: Option<(DevStackProcess, DevStackOptions, tempfile::TempDir)>,
        replicas: usize,
    ) -> Rig {
        let consul_url = match &split_consul {
            Some((c, _, _)) => c.consul.clone(),
            None => stack.consul.clone(),
        };
        let consul_proxy = FaultProxy::start(&consul_url).await.expect("proxy");
        let nomad_proxy = FaultProxy::start(&stack.nomad).await.expect("proxy");
        let repo = GitRepo::hello_world().expect("repo");
        let kv = Kv::new(consul_url.clone());
        let mut rig = Rig {
            stack,
            split_consul,
            consul_url,
            consul_proxy,
            nomad_proxy,
            repo,
            ctls: Vec::new(),
            kv,
        };
        for _ in 0..replicas {
            let c = rig.start_controller().await;
            rig.ctls.push(Some(c));
        }
        rig
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CONSUL_HTTP_ADDR".into(),
                if self.split_consul.is_some() {
                    self.consul_url.trim_start_matches("http://").to_string()
                } else {
                    self.consul_proxy.host_port()
                },
            ),
            ("NOMAD_ADDR".into(), self.nomad_proxy.url.clone()),
            ("VAULT_ADDR".into(), self.stack.vault.clone()),
            ("VAULT_TOKEN".into(), "root".into()),
        ]
    }

    async fn start_controller(&self) -> ControllerProcess {
        ControllerProcess::start_env(self.env(), FAST)
            .await
            .expect("controller")
    }

    fn spec(&self) -> Value {
        json!({"repo_url": self.repo.url, "test": {"commands": ["true"]}})
    }

    async fn submit(&self, ns: &str, name: &str) {
        assert!(
            self.kv
                .put(
                    &format!("jobforge/requests/{ns}/{name}"),
                    &request_json(ns, name, self.spec()),
                )
                .await
                .unwrap()
        );
    }

    /// Index of the replica that leads with its first list done.
    async fn leader(&self) -> Option<usize> {
        for (i, c) in self.ctls.iter().enumerate() {
            if let Some(c) = c
                && let Ok(s) = c.status().await
                && s["role"] == "leader"
                && s["ready"] == true
            {
                return Some(i);
            }
        }
        None
    }

    async fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs three requests to the end (namespace `warm`) so pools and caches exist, then returns
    /// the leader's resource use as the pre-run level.
    async fn warm_up(&mut self) -> Usage {
        let l = self.wait_leader(Duration::from_secs(60)).await;
        let names: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
        for n in &names {
            self.submit("warm", n).await;
        }
        wait_all_succeeded(&self.kv, "warm", &names, Duration::from_secs(60)).await;
        let ctl = self.ctls[l].as_mut().unwrap();
        wait_idle(ctl).await;
        let u = usage(ctl).await;
        eprintln!(
            "pre-run: tokio tasks {} ({} sockets), RSS {} KiB",
            u.tasks, u.sockets, u.rss_kib
        );
        u
    }

    /// The checks every fault test ends with.
    async fn verify(&mut self, ns: &str, names: &[String], watch: StatusWatch, before: Usage) {
        let started = Instant::now();
        wait_all_succeeded(&self.kv, ns, names, Duration::from_secs(240)).await;
        eprintln!(
            "{ns}: all {} requests Succeeded ({:?} after the last fault)",
            names.len(),
            started.elapsed()
        );
        let h = watch.finish().await;
        assert!(
            h.regressions.is_empty(),
            "status went backwards within a generation: {:?}",
            h.regressions
        );
        for n in names {
            let key = format!("jobforge/status/{ns}/{n}");
            assert!(h.last.contains_key(&key), "the watch never saw {key}");
        }
        eprintln!("{ns}: {} status writes watched, no regression", h.writes);
        assert_exactly_once(
            &self.stack.nomad,
            &format!("jobforge-{ns}-"),
            names.len() * 3,
        )
        .await
        .expect("each build, test and publish job registered once with one allocation");

        let l = self.wait_leader(Duration::from_secs(60)).await;
        let ctl = self.ctls[l].as_mut().unwrap();
        wait_idle(ctl).await;
        let rss_limit = before.rss_kib + RSS_TOLERANCE_KIB.max(before.rss_kib / 2);
        let task_limit = before.unexplained_tasks() + TASK_TOLERANCE;
        // Tasks of finished work end asynchronously: give them up to 15 s to wind down (a timeout
        // here is not a failure; the assertions below judge the last figures).
        let last = std::sync::Mutex::new(usage(ctl).await);
        let pid = ctl.process().pid();
        let http = ctl.http.clone();
        let _ = wait_until(Duration::from_secs(15), "the leader winds down", || async {
            let u = usage_of(&http, pid).await;
            *last.lock().unwrap() = u;
            Ok(u.unexplained_tasks() <= task_limit
                && u.sockets <= SOCKET_LIMIT
                && u.rss_kib <= rss_limit)
        })
        .await;
        let after = *last.lock().unwrap();
        eprintln!(
            "{ns}: leak check: tokio tasks {} -> {} with sockets {} -> {} (tasks beyond sockets {} -> {}, limit {task_limit}; sockets limit {SOCKET_LIMIT}), RSS {} KiB -> {} KiB (limit {rss_limit} KiB)",
            before.tasks,
            after.tasks,
            before.sockets,
            after.sockets,
            before.unexplained_tasks(),
            after.unexplained_tasks(),
            before.rss_kib,
            after.rss_kib
        );
        assert!(
            after.unexplained_tasks() <= task_limit,
            "tokio tasks beyond open connections grew from {} to {} (limit {task_limit}): a task leak",
            before.unexplained_tasks(),
            after.unexplained_tasks()
        );
        assert!(
            after.sockets <= SOCKET_LIMIT,
            "{} sockets open when idle (limit {SOCKET_LIMIT}): a connection leak",
            after.sockets
        );
        assert!(
            after.rss_kib <= rss_limit,
            "RSS grew from {} KiB to {} KiB (limit {rss_limit} KiB)",
            before.rss_kib,
            after.rss_kib
        );
        eprintln!(
            "{ns}: proxies: consul {} requests ({} injected errors, {} refused connections), nomad {} requests ({} injected errors, {} refused connections)",
            self.consul_proxy.faults().requests(),
            self.consul_proxy.faults().injected_errors(),
            self.consul_proxy.faults().refused_connections(),
            self.nomad_proxy.faults().requests(),
            self.nomad_proxy.faults().injected_errors(),
            self.nomad_proxy.faults().refused_connections(),
        );
    }
}

/// Waits until the controller runs no reconcile (its queue keeps finished requests scheduled for
/// retention, so `queue_depth` never drops to 0).
async fn wait_idle(ctl: &ControllerProcess) {
    let url = format!("{}/status", ctl.http);
    wait_until(Duration::from_secs(30), "the controller is idle", || {
        let url = url.clone();
        async move {
            let s: Value = match reqwest::get(&url).await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => return Ok(false),
            };
            Ok(s["in_flight"] == 0)
        }
    })
    .await
    .expect("idle");
}

/// Waits (blocking queries on `jobforge/status/<ns>/`) until every request of `names` is
/// `Succeeded`; fails at once when one is `Failed` or `Cancelled`.
async fn wait_all_succeeded(kv: &Kv, ns: &str, names: &[String], timeout: Duration) {
    use base64::Engine as _;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    let mut index = 0u64;
    let mut phases: std::collections::BTreeMap<String, String> = Default::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let pending: Vec<&String> = names
            .iter()
            .filter(|n| phases.get(*n).map(String::as_str) != Some("Succeeded"))
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(
            !left.is_zero(),
            "timed out after {timeout:?}: {} of {} requests not Succeeded, e.g. {:?}",
            pending.len(),
            names.len(),
            pending
                .iter()
                .take(5)
                .map(|n| (n, phases.get(*n)))
                .collect::<Vec<_>>()
        );
        let r = client
            .get(format!("{}/v1/kv/jobforge/status/{ns}/?recurse", kv.base))
            .query(&[
                ("index", index.to_string()),
                (
                    "wait",
                    format!("{}ms", left.min(Duration::from_secs(5)).as_millis()),
                ),
            ])
            .send()
            .await;
        let Ok(r) = r else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let got: u64 = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries: Vec<Value> = r.json().await.unwrap_or_default();
        for e in entries {
            let key = e["Key"].as_str().unwrap_or("");
            let Some(name) = key.rsplit('/').next() else {
                continue;
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(e["Value"].as_str().unwrap_or(""))
                .unwrap_or_default();
            let doc: Value = serde_json::from_slice(&raw).unwrap_or_default();
            let phase = doc["phase"].as_str().unwrap_or("").to_string();
            assert!(
                phase != "Failed" && phase != "Cancelled",
                "{key} ended {phase}: {doc}"
            );
            phases.insert(name.to_string(), phase);
        }
        index = if got < index { 0 } else { got.max(1) };
    }
}

/// Waits until at least `n` requests of `ns` have a status (the run is under way).
async fn wait_started(kv: &Kv, ns: &str, n: usize) {
    wait_until(
        Duration::from_secs(60),
        "the run is under way",
        || async move { Ok(kv.keys(&format!("jobforge/status/{ns}/")).await?.len() >= n) },
    )
    .await
    .expect("started");
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:03}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_down_ten_seconds_mid_run_loses_duplicates_and_regresses_nothing() {
    let mode = Mode::get("consul_down");
    let n = mode.pick(30, 200);
    let mut rig = Rig::start(1).await;
    let before = rig.warm_up().await;
    let watch = StatusWatch::start(&rig.consul_url);
    let all = names("c", n);
    let (first, second) = all.split_at(n / 2);
    for name in first {
        rig.submit("consul-down", name).await;
    }
    wait_started(&rig.kv, "consul-down", 3).await;
    // The controller loses Consul (every connection cut, new ones refused) while clients keep
    // writing requests; 10 s is about the session TTL, so leadership may be lost and regained.
    rig.consul_proxy.faults().set_down(true);
    let outage = Instant::now();
    for name in second {
        rig.submit("consul-down", name).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    rig.consul_proxy.faults().set_down(false);
    rig.verify("consul-down", &all, watch, before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_process_killed_and_restarted_after_ten_seconds_loses_duplicates_and_regresses_nothing()
 {
    let mode = Mode::get("consul_restart");
    let n = mode.pick(30, 200);
    let mut rig = Rig::start_split(1).await;
    let before = rig.warm_up().await;
    let watch = StatusWatch::start(&rig.consul_url);
    let all = names("r", n);
    let (first, second) = all.split_at(n / 2);
    for name in first {
        rig.submit("consul-restart", name).await;
    }
    wait_started(&rig.kv, "consul-restart", 3).await;
    // The Consul process dies (SIGKILL: no goodbye) and comes back on the same port with its
    // data dir after 10 s; requests submitted during the outage are written once it is back.
    let (mut consul, opts, data) = rig.split_consul.take().unwrap();
    consul.process().kill();
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let consul = DevStackProcess::start(opts.clone()).expect("consul again");
    eprintln!("consul_restart: Consul back after {:?}", outage.elapsed());
    rig.split_consul = Some((consul, opts, data));
    for name in second {
        rig.submit("consul-restart", name).await;
    }
    rig.verify("consul-restart", &all, watch, before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nomad_down_ten_seconds_mid_run_loses_duplicates_and_regresses_nothing() {
    let mode = Mode::get("nomad_down");
    let n = mode.pick(30, 200);
    let mut rig = Rig::start(1).await;
    let before = rig.warm_up().await;
    let watch = StatusWatch::start(&rig.consul_url);
    let all = names("n", n);
    let (first, second) = all.split_at(n / 2);
    for name in first {
        rig.submit("nomad-down", name).await;
    }
    wait_started(&rig.kv, "nomad-down", 3).await;
    // Nomad is unreachable for the controller; the emulator (and the tasks it runs) keeps going,
    // as a real cluster does behind a partition.
    rig.nomad_proxy.faults().set_down(true);
    let outage = Instant::now();
    for name in second {
        rig.submit("nomad-down", name).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    rig.nomad_proxy.faults().set_down(false);
    rig.verify("nomad-down", &all, watch, before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nomad_answering_500_to_a_fifth_of_requests_loses_duplicates_and_regresses_nothing() {
    let mode = Mode::get("nomad_errors");
    let window = mode.pick(Duration::from_secs(15), Duration::from_secs(60));
    let n = mode.pick(30, 200);
    let mut rig = Rig::start(1).await;
    let before = rig.warm_up().await;
    let watch = StatusWatch::start(&rig.consul_url);
    let all = names("e", n);
    rig.nomad_proxy.faults().set_error_rate(0.2);
    let start = Instant::now();
    // Submissions spread over the window so every phase of the pipeline meets the errors.
    for (i, name) in all.iter().enumerate() {
        let at = window.mul_f64(i as f64 / n as f64);
        tokio::time::sleep(at.saturating_sub(start.elapsed())).await;
        rig.submit("nomad-errors", name).await;
    }
    tokio::time::sleep(window.saturating_sub(start.elapsed())).await;
    rig.nomad_proxy.faults().set_error_rate(0.0);
    let injected = rig.nomad_proxy.faults().injected_errors();
    eprintln!(
        "nomad_errors: {injected} injected 500s of {} Nomad requests in {window:?}",
        rig.nomad_proxy.faults().requests()
    );
    assert!(injected > 0, "the fault never hit a request");
    rig.verify("nomad-errors", &all, watch, before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_of_50_to_200_ms_to_both_emulators_loses_duplicates_and_regresses_nothing() {
    let mode = Mode::get("latency");
    let n = mode.pick(20, 200);
    let mut rig = Rig::start(1).await;
    let before = rig.warm_up().await;
    let watch = StatusWatch::start(&rig.consul_url);
    rig.consul_proxy.faults().set_latency(50..200);
    rig.nomad_proxy.faults().set_latency(50..200);
    let all = names("l", n);
    for name in &all {
        rig.submit("latency", name).await;
    }
    wait_all_succeeded(&rig.kv, "latency", &all, Duration::from_secs(240)).await;
    rig.consul_proxy.faults().set_latency(0..0);
    rig.nomad_proxy.faults().set_latency(0..0);
    rig.verify("latency", &all, watch, before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn controllers_sigkilled_at_random_points_lose_duplicate_and_regress_nothing() {
    let mode = Mode::get("sigkill");
    let n = mode.pick(100, 500);
    let kills = mode.pick(5, 20);
    let mut rig = Rig::start(3).await;
    let before = rig.warm_up().await;
    let watch = StatusWatch::start(&rig.consul_url);
    let all = names("k", n);
    // Submissions run on their own while replicas die.
    let submitter = {
        let kv = rig.kv.clone();
        let spec = rig.spec();
        let all = all.clone();
        let pace = mode.pick(Duration::from_millis(150), Duration::from_millis(100));
        tokio::spawn(async move {
            for name in &all {
                let doc = request_json("sigkill", name, spec.clone());
                assert!(
                    kv.put(&format!("jobforge/requests/sigkill/{name}"), &doc)
                        .await
                        .unwrap()
                );
                tokio::time::sleep(pace).await;
            }
        })
    };
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rand::random_range(300..2500))).await;
        // Every other kill hits the leader mid-reconcile (waiting out a failover in progress);
        // the rest hit a random replica, which may be the leader or a standby.
        let target = if k % 2 == 0 {
            rig.wait_leader(Duration::from_secs(60)).await
        } else {
            rand::random_range(0..rig.ctls.len())
        };
        let was_leader = rig.leader().await == Some(target);
        if let Some(mut c) = rig.ctls[target].take() {
            c.process().kill();
        }
        eprintln!(
            "sigkill: kill {}/{kills}: replica {target}{}",
            k + 1,
            if was_leader { " (leader)" } else { "" }
        );
        let c = rig.start_controller().await;
        rig.ctls[target] = Some(c);
    }
    submitter.await.expect("submitter");
    // The leader at the end may be a restarted process; it is held to the first leader's level.
    rig.verify("sigkill", &all, watch, before).await;
}

/// RSS a leader may gain between the end of the first round and the end of the last one of
/// [`repeated_rounds_of_work_leave_rss_and_tasks_on_a_plateau`] (allocator noise; the pools and
/// caches are sized by the first round).
const PLATEAU_TOLERANCE_KIB: u64 = 4 * 1024;

/// No leak across rounds of work, with nothing but the work itself changing: each round submits N
/// requests, runs them to `Succeeded` (tasks under the dev stack's mock driver, so rounds take
/// seconds) and deletes them, which makes the controller purge their Nomad jobs and delete their
/// status. After each round the idle leader's RSS and its tokio tasks beyond open sockets are
/// read. The first round sizes the allocator's pools and the caches; every later round must end
/// within [`PLATEAU_TOLERANCE_KIB`] of the first one's RSS and [`TASK_TOLERANCE`] of its tasks —
/// a leak of a few hundred bytes per request would grow past that over the rounds.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_rounds_of_work_leave_rss_and_tasks_on_a_plateau() {
    let mode = Mode::get("plateau");
    let (rounds, n) = mode.pick((5, 200), (10, 1_000));
    let stack = DevStackProcess::start(DevStackOptions {
        env: vec![("JOBFORGE_DEVSTACK_MOCK_DRIVER".into(), "0s".into())],
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let mut ctl = ControllerProcess::start(&stack, FAST)
        .await
        .expect("controller");
    ctl.wait_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let kv = stack.kv();
    let repo = GitRepo::hello_world().expect("repo");
    let spec = json!({"repo_url": repo.url, "test": {"commands": ["true"]}});
    let http = reqwest::Client::new();
    let mut after_round: Vec<Usage> = Vec::new();
    for round in 0..rounds {
        let ns = format!("round{round}");
        let names = names("r", n);
        let started = Instant::now();
        {
            use futures::StreamExt as _;
            futures::stream::iter(names.iter().map(|name| {
                let (kv, doc) = (kv.clone(), request_json(&ns, name, spec.clone()));
                let key = format!("jobforge/requests/{ns}/{name}");
                async move { assert!(kv.put(&key, &doc).await.unwrap()) }
            }))
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
        }
        wait_all_succeeded(&kv, &ns, &names, Duration::from_secs(240)).await;
        kv.delete(&format!("jobforge/requests/{ns}/"), true)
            .await
            .unwrap();
        let status_prefix = format!("jobforge/status/{ns}/");
        let jobs = format!("{}/v1/jobs?prefix=jobforge-{ns}-", stack.nomad);
        wait_until(
            Duration::from_secs(120),
            "deleted requests leave no status and no Nomad job",
            || async {
                let left: Vec<Value> = http.get(&jobs).send().await?.json().await?;
                Ok(kv.keys(&status_prefix).await?.is_empty() && left.is_empty())
            },
        )
        .await
        .expect("deleted");
        wait_idle(&ctl).await;
        let u = usage(&mut ctl).await;
        eprintln!(
            "plateau: round {round}: {n} requests run and deleted in {:?}; tokio tasks {} ({} sockets), RSS {} KiB",
            started.elapsed(),
            u.tasks,
            u.sockets,
            u.rss_kib
        );
        after_round.push(u);
    }
    let first = after_round[0];
    let task_limit = first.unexplained_tasks() + TASK_TOLERANCE;
    let rss_limit = first.rss_kib + PLATEAU_TOLERANCE_KIB;
    // Tasks of finished work end asynchronously: judge the last figures after up to 15 s.
    let pid = ctl.process().pid();
    let last = std::sync::Mutex::new(*after_round.last().unwrap());
    let _ = wait_until(Duration::from_secs(15), "the leader winds down", || async {
        let u = usage_of(&ctl.http, pid).await;
        *last.lock().unwrap() = u;
        Ok(u.unexplained_tasks() <= task_limit && u.rss_kib <= rss_limit)
    })
    .await;
    let last = *last.lock().unwrap();
    let rss: Vec<u64> = after_round.iter().map(|u| u.rss_kib).collect();
    let tasks: Vec<u64> = after_round.iter().map(Usage::unexplained_tasks).collect();
    eprintln!(
        "plateau: RSS after each round {rss:?} KiB, last {} KiB (limit {rss_limit}); tasks beyond sockets {tasks:?}, last {} (limit {task_limit})",
        last.rss_kib,
        last.unexplained_tasks()
    );
    assert!(
        last.unexplained_tasks() <= task_limit,
        "tokio tasks beyond open connections grew over {rounds} rounds: {tasks:?}, last {}",
        last.unexplained_tasks()
    );
    assert!(
        last.rss_kib <= rss_limit,
        "RSS grew over {rounds} rounds of {n} requests: {rss:?} KiB, last {} KiB (limit {rss_limit} KiB)",
        last.rss_kib
    );
}
