//! Leadership and fencing under failure, with real controller processes: a deposed leader writes
//! nothing, and killing leaders loses, duplicates and regresses nothing.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use jobforge_tests::history::{StatusWatch, assert_exactly_once};
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, request_json, wait_until,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Short session TTL (Consul's minimum) and lock-delay so failover takes seconds, not minutes.
const FAST: &[&str] = &["--session-ttl", "10s", "--lock-delay", "1s"];

async fn leader_of(ctls: &mut [Option<ControllerProcess>]) -> Option<usize> {
    for (i, c) in ctls.iter().enumerate() {
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

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_requests_survive_three_leader_kills_exactly_once() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let mut ctls: Vec<Option<ControllerProcess>> = Vec::new();
    for _ in 0..3 {
        ctls.push(Some(
            ControllerProcess::start(&stack, FAST)
                .await
                .expect("controller"),
        ));
    }
    let watch = StatusWatch::start(&stack.consul);

    let kv = stack.kv();
    let spec = json!({"repo_url": repo.url, "test": {"commands": ["true"]}});
    let names: Vec<String> = (0..200).map(|i| format!("r{i:03}")).collect();
    let mut kills = 0;
    for (i, name) in names.iter().enumerate() {
        assert!(
            kv.put(
                &format!("jobforge/requests/default/{name}"),
                &request_json("default", name, spec.clone())
            )
            .await
            .unwrap()
        );
        if i % 60 == 30 && kills < 3 {
            // SIGKILL whoever leads now (no release: the session must expire).
            let deadline = Instant::now() + Duration::from_secs(60);
            let leader = loop {
                if let Some(l) = leader_of(&mut ctls).await {
                    break l;
                }
                assert!(Instant::now() < deadline, "no leader");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if let Some(mut c) = ctls[leader].take() {
                c.process().kill();
            }
            ctls[leader] = Some(
                ControllerProcess::start(&stack, FAST)
                    .await
                    .expect("restart"),
            );
            kills += 1;
        }
    }
    assert_eq!(kills, 3);

    wait_until(
        Duration::from_secs(240),
        "every request is terminal",
        || {
            let kv = kv.clone();
            let names = names.clone();
            async move {
                for n in &names {
                    let (_, v) = kv
                        .get(&format!("jobforge/status/default/{n}"), 0, Duration::ZERO)
                        .await?;
                    let done = v
                        .and_then(|(b, _)| serde_json::from_slice::<Value>(&b).ok())
                        .is_some_and(|d| d["phase"] == "Succeeded");
                    if !done {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await
    .expect("all succeeded");
    let h = watch.finish().await;

    // Each (request, generation, phase) ran at most once: one registration (Version 0) and one
    // allocation per job in the emulator's registry.
    assert_exactly_once(&stack.nomad, "jobforge-default-r", 200 * 3)
        .await
        .expect("exactly once");
    assert!(
        h.regressions.is_empty(),
        "status went backwards: {:?}",
        h.regressions
    );
    assert_eq!(h.last.len(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn deposed_leader_paused_past_its_session_ttl_writes_nothing() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let mut a = ControllerProcess::start(&stack, FAST).await.expect("a");
    a.wait_leader(Duration::from_secs(30))
        .await
        .expect("a leads");
    let b = ControllerProcess::start(&stack, FAST).await.expect("b");
    let kv = stack.kv();
    let spec = json!({"repo_url": repo.url});
    for i in 0..20 {
        let n = format!("p{i:02}");
        kv.put(
            &format!("jobforge/requests/default/{n}"),
            &request_json("default", &n, spec.clone()),
        )
        .await
        .unwrap();
    }
    // Freeze A in the middle of its work, past its session TTL (expiry between TTL and 2×TTL).
    a.process().signal(Signal::SIGSTOP).expect("stop");
    b.wait_leader(Duration::from_secs(60))
        .await
        .expect("b takes over");
    wait_until(Duration::from_secs(120), "B finishes every request", || {
        let kv = kv.clone();
        async move {
            for i in 0..20 {
                let (_, v) = kv
                    .get(
                        &format!("jobforge/status/default/p{i:02}"),
                        0,
                        Duration::ZERO,
                    )
                    .await?;
                if !v
                    .and_then(|(b, _)| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|d| d["phase"] == "Succeeded")
                {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await
    .expect("done");
    let client = reqwest::Client::new();
    let listing = client
        .get(format!("{}/v1/kv/jobforge/status/?recurse", stack.consul))
        .send()
        .await
        .unwrap();
    let index: u64 = listing.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Nomad's job table before A wakes: every job's modify index and stop flag.
    let jobs_before = nomad_jobs(&client, &stack.nomad).await;
    assert!(!jobs_before.is_empty(), "B ran the requests' jobs");
    // Resume A: whatever it was about to write is fenced off. A blocking query on status/ from the
    // last index must see no write at all while A wakes up and steps down.
    a.process().signal(Signal::SIGCONT).expect("cont");
    let started = Instant::now();
    let r = client
        .get(format!("{}/v1/kv/jobforge/status/?recurse", stack.consul))
        .query(&[("index", index.to_string()), ("wait", "8s".to_string())])
        .send()
        .await
        .unwrap();
    let after: u64 = r.headers()["x-consul-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "a write woke the status watch"
    );
    assert_eq!(after, index, "a deposed leader's write reached status/");
    let s = a.status().await.expect("a answers");
    assert_eq!(s["role"], "standby", "{s}");
    // Nor did A register, stop or purge any Nomad job (issue 14: Nomad actions are fenced too).
    assert_eq!(
        nomad_jobs(&client, &stack.nomad).await,
        jobs_before,
        "a deposed leader changed Nomad's job table"
    );
}

/// Nomad's job table: ID → (ModifyIndex, Stop), from `GET /v1/jobs`.
async fn nomad_jobs(
    client: &reqwest::Client,
    nomad: &str,
) -> std::collections::BTreeMap<String, (u64, bool)> {
    let jobs: Vec<Value> = client
        .get(format!("{nomad}/v1/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jobs.iter()
        .map(|j| {
            (
                j["ID"].as_str().unwrap_or_default().to_string(),
                (j["ModifyIndex"].as_u64().unwrap_or(0), j["Stop"] == true),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_hands_leadership_over_to_the_standby_at_once() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    // Default TTL (15 s): only a release (or the check-bound session) makes the handover fast.
    let mut a = ControllerProcess::start(&stack, &[]).await.expect("a");
    a.wait_leader(Duration::from_secs(30))
        .await
        .expect("a leads");
    let b = ControllerProcess::start(&stack, &[]).await.expect("b");
    let started = Instant::now();
    let status = a.process().terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "graceful exit: {status:?}"
    );
    b.wait_leader(Duration::from_secs(5))
        .await
        .expect("b leads at once");
    let kv = stack.kv();
    kv.put(
        "jobforge/requests/default/h",
        &request_json("default", "h", json!({"repo_url": repo.url})),
    )
    .await
    .unwrap();
    kv.wait_json("jobforge/status/default/h", Duration::from_secs(30), |v| {
        v["phase"] == "Succeeded"
    })
    .await
    .expect("b serves");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "handover took {:?}",
        started.elapsed()
    );
}
