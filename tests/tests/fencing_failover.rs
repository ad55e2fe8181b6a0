//! Fencing beyond KV and fast failover (issues 14 and 16), with real controller processes:
//! the orphan sweep stops a job registered for a deleted request (matched by Meta, never by ID
//! alone), and an idle leader's sweep waits on a blocking job list instead of listing every
//! interval (issue 17); every replica is in Consul's catalog with a `/healthz` check that goes critical when
//! the replica dies, and a SIGKILLed leader is replaced within seconds; a frozen Consul turns
//! `/readyz` 503 within the documented bound and makes the CLI fail with a timeout naming the
//! address.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use jobforge_tests::{ControllerProcess, DevStackOptions, DevStackProcess, bin, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// A batch job that sleeps, with `meta` as its Meta.
fn sleeper(id: &str, meta: Value) -> Value {
    json!({"Job": {
        "ID": id, "Name": id, "Type": "batch", "Datacenters": ["dc1"], "Meta": meta,
        "TaskGroups": [{"Name": "build", "Count": 1,
            "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
            "Tasks": [{"Name": "build", "Driver": "raw_exec",
                "Config": {"command": "/bin/sleep", "args": ["300"]},
                "Resources": {"CPU": 100, "MemoryMB": 64}}]}]}})
}

async fn job(client: &reqwest::Client, nomad: &str, id: &str) -> Value {
    client
        .get(format!("{nomad}/v1/job/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_stops_a_job_registered_for_a_deleted_request_and_nothing_else() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let ctl = ControllerProcess::start(&stack, &["--sweep-interval", "2s"])
        .await
        .expect("controller");
    ctl.wait_leader(Duration::from_secs(30))
        .await
        .expect("leads");
    let client = reqwest::Client::new();
    // A late register by a deposed leader, for a request that does not exist (any more).
    let ghost = "jobforge-default-ghost-5-build";
    // A job whose ID looks like ours but without jobforge's Meta: not ours, never touched.
    let decoy = "jobforge-default-decoy-7-build";
    for (id, meta) in [
        (
            ghost,
            json!({"jobforge.request": "default/ghost", "jobforge.generation": "5",
                   "jobforge.phase": "build", "jobforge.attempt": "1"}),
        ),
        (decoy, json!({"owner": "someone else"})),
    ] {
        let r = client
            .post(format!("{}/v1/jobs", stack.nomad))
            .json(&sleeper(id, meta))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "register {id}: {}", r.status());
    }
    let started = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the sweep stops the ghost job",
        || {
            let (client, nomad) = (client.clone(), stack.nomad.clone());
            async move { Ok(job(&client, &nomad, ghost).await["Stop"] == true) }
        },
    )
    .await
    .expect("swept");
    // Within one interval (2 s) of the first sweep after the register, plus a run's slack.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "sweep took {:?}",
        started.elapsed()
    );
    // Two more sweeps: the decoy keeps running.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let d = job(&client, &stack.nomad, decoy).await;
    assert_ne!(
        d["Stop"], true,
        "a job without jobforge's Meta was stopped: {d}"
    );
}

/// `GET /v1/jobs` requests the Nomad emulator answered so far (its telemetry counter).
async fn job_lists(nomad: &str) -> u64 {
    let url = format!("{nomad}/v1/metrics");
    jobforge_tests::telemetry(&url, "Counters", "nomad.http.GET.v1.jobs", "Count")
        .await
        .unwrap() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_leader_sweeps_only_when_the_job_list_moved_and_still_stops_a_late_register() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let ctl = ControllerProcess::start(&stack, &["--sweep-interval", "1s"])
        .await
        .expect("controller");
    ctl.wait_leader(Duration::from_secs(30))
        .await
        .expect("leads");
    let client = reqwest::Client::new();
    // The first sweep lists the jobs one interval after the term starts; after it, the loop
    // blocks on the job list's index.
    wait_until(Duration::from_secs(10), "the first sweep", || {
        let nomad = stack.nomad.clone();
        async move { Ok(job_lists(&nomad).await >= 2) }
    })
    .await
    .expect("first sweep and its blocking list");
    let before = job_lists(&stack.nomad).await;
    // Six intervals of an idle stack: the blocking list (wait 5 min) is not re-armed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let made = job_lists(&stack.nomad).await - before;
    assert_eq!(
        made, 0,
        "an idle leader listed Nomad's jobs {made} times in 6 s"
    );
    // A deposed leader's late register moves the index: it is swept within about an interval.
    let ghost = "jobforge-default-ghost-9-build";
    let meta = json!({"jobforge.request": "default/ghost", "jobforge.generation": "9",
                      "jobforge.phase": "build", "jobforge.attempt": "1"});
    let r = client
        .post(format!("{}/v1/jobs", stack.nomad))
        .json(&sleeper(ghost, meta))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "register: {}", r.status());
    wait_until(
        Duration::from_secs(10),
        "the sweep stops the ghost job",
        || {
            let (client, nomad) = (client.clone(), stack.nomad.clone());
            async move { Ok(job(&client, &nomad, ghost).await["Stop"] == true) }
        },
    )
    .await
    .expect("swept");
}

async fn catalog(client: &reqwest::Client, consul: &str) -> Vec<Value> {
    client
        .get(format!("{consul}/v1/catalog/service/jobforge"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The status of the `/healthz` check of the replica whose meta identity is `identity`.
async fn check_of(client: &reqwest::Client, consul: &str, identity: &str) -> Option<String> {
    let entries: Vec<Value> = client
        .get(format!("{consul}/v1/health/service/jobforge"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let e = entries
        .iter()
        .find(|e| e["Service"]["Meta"]["identity"] == identity)?;
    e["Checks"]
        .as_array()?
        .iter()
        .find(|c| c["ServiceID"] != "")
        .and_then(|c| c["Status"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_replica_is_in_the_catalog_and_a_killed_leader_is_replaced_within_seconds() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    // Shipped defaults: TTL 15 s, lock-delay 0, check every 1 s with a 1 s timeout.
    let mut a = ControllerProcess::start(&stack, &["--identity", "replica-a"])
        .await
        .expect("a");
    a.wait_leader(Duration::from_secs(30))
        .await
        .expect("a leads");
    let b = ControllerProcess::start(&stack, &["--identity", "replica-b"])
        .await
        .expect("b");
    let client = reqwest::Client::new();
    wait_until(
        Duration::from_secs(10),
        "both replicas in the catalog, checks passing",
        || {
            let (client, consul) = (client.clone(), stack.consul.clone());
            async move {
                let mut ids: Vec<String> = catalog(&client, &consul)
                    .await
                    .iter()
                    .filter_map(|e| e["ServiceMeta"]["identity"].as_str().map(String::from))
                    .collect();
                ids.sort();
                Ok(ids == ["replica-a", "replica-b"]
                    && check_of(&client, &consul, "replica-a").await.as_deref() == Some("passing")
                    && check_of(&client, &consul, "replica-b").await.as_deref() == Some("passing"))
            }
        },
    )
    .await
    .expect("catalog");
    let entry = catalog(&client, &stack.consul)
        .await
        .into_iter()
        .find(|e| e["ServiceMeta"]["identity"] == "replica-a")
        .unwrap();
    assert_eq!(entry["ServiceMeta"]["version"], env!("CARGO_PKG_VERSION"));

    let killed = Instant::now();
    a.process().kill();
    b.wait_leader(Duration::from_secs(5))
        .await
        .expect("b leads within 5 s of the kill");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    assert_eq!(
        check_of(&client, &stack.consul, "replica-a")
            .await
            .as_deref(),
        Some("critical"),
        "the killed replica's check"
    );
    assert_eq!(
        check_of(&client, &stack.consul, "replica-b")
            .await
            .as_deref(),
        Some("passing")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_consul_turns_readyz_503_within_the_bound_and_the_cli_times_out_naming_it() {
    // Consul in a process of its own, so it can be frozen alone.
    let mut consul = DevStackProcess::start(DevStackOptions {
        services: Some("consul".into()),
        ..DevStackOptions::default()
    })
    .expect("consul");
    let stack = DevStackProcess::start(DevStackOptions {
        services: Some("nomad,vault".into()),
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("nomad and vault");
    let consul_addr = consul.consul.trim_start_matches("http://").to_string();
    let mut env = stack.env();
    env.retain(|(k, _)| k != "CONSUL_HTTP_ADDR");
    env.push(("CONSUL_HTTP_ADDR".into(), consul_addr.clone()));
    let ctl = ControllerProcess::start_env(env, &[])
        .await
        .expect("controller");
    ctl.wait_leader(Duration::from_secs(30))
        .await
        .expect("leads");
    let client = reqwest::Client::new();
    let readyz = format!("{}/readyz", ctl.http);
    assert_eq!(client.get(&readyz).send().await.unwrap().status(), 200);

    consul
        .process()
        .signal(Signal::SIGSTOP)
        .expect("freeze consul");
    let frozen = Instant::now();
    wait_until(Duration::from_secs(15), "/readyz turns 503", || {
        let (client, url) = (client.clone(), readyz.clone());
        async move { Ok(client.get(&url).send().await?.status() == 503) }
    })
    .await
    .expect("503");
    let took = frozen.elapsed();
    // The documented bound (health::consul_answer_bound: TTL/2 + 2 s = 9.5 s with the default
    // TTL) plus the poll's slack.
    assert!(
        took <= Duration::from_millis(10_500),
        "/readyz noticed after {took:?}"
    );
    let body = client
        .get(&readyz)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("consul"), "{body}");

    let cli_started = Instant::now();
    let out = tokio::process::Command::new(bin("jobforge").unwrap())
        .args(["list", "--timeout", "2s"])
        .env("CONSUL_HTTP_ADDR", &consul_addr)
        .env_remove("CONSUL_HTTP_TOKEN")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("the CLI does not hang")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(
        cli_started.elapsed() < Duration::from_secs(10),
        "the CLI took {:?}",
        cli_started.elapsed()
    );
    assert!(
        stderr.contains("timed out") && stderr.contains(&consul_addr),
        "the error names the wait and the address: {stderr}"
    );

    consul
        .process()
        .signal(Signal::SIGCONT)
        .expect("thaw consul");
    wait_until(Duration::from_secs(20), "/readyz ready again", || {
        let (client, url) = (client.clone(), readyz.clone());
        async move { Ok(client.get(&url).send().await?.status() == 200) }
    })
    .await
    .expect("ready again");
}
