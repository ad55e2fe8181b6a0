//! Operating jobforge: readiness through a Consul outage, signed webhooks delivered at least once
//! (deduplicated by delivery id) across failures and failover, retention (`ttl_after_finished`),
//! and metrics that really move.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, free_port, request_json,
    wait_until,
};
use serde_json::{Value, json};
use sha2::Sha256;

const T: Duration = Duration::from_secs(90);

async fn readyz(ctl: &ControllerProcess) -> u16 {
    match reqwest::get(format!("{}/readyz", ctl.http)).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_a_consul_outage_and_no_reconcile_is_lost() {
    let data = tempfile::tempdir().expect("tmp");
    let consul_port = free_port().expect("port");
    let consul_opts = DevStackOptions {
        services: Some("consul".into()),
        consul_port,
        data_dir_path: Some(data.path().to_path_buf()),
        ..DevStackOptions::default()
    };
    let mut consul = DevStackProcess::start(consul_opts.clone()).expect("consul");
    let rest = DevStackProcess::start(DevStackOptions {
        services: Some("nomad,vault".into()),
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("nomad and vault");
    let env = vec![
        (
            "CONSUL_HTTP_ADDR".to_string(),
            format!("127.0.0.1:{consul_port}"),
        ),
        ("NOMAD_ADDR".to_string(), rest.nomad.clone()),
        ("VAULT_ADDR".to_string(), rest.vault.clone()),
        ("VAULT_TOKEN".to_string(), "root".to_string()),
    ];
    let ctl = ControllerProcess::start_env(env, &["--session-ttl", "10s", "--lock-delay", "1s"])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    assert_eq!(readyz(&ctl).await, 200);

    let repo = GitRepo::hello_world().expect("repo");
    let kv = consul.kv();
    for i in 0..5 {
        let n = format!("o{i}");
        kv.put(
            &format!("jobforge/requests/default/{n}"),
            &request_json("default", &n, json!({"repo_url": repo.url})),
        )
        .await
        .unwrap();
    }
    // Consul goes away right after the submissions.
    consul.process().kill();
    wait_until(Duration::from_secs(10), "/readyz answers 503", || async {
        Ok(readyz(&ctl).await == 503)
    })
    .await
    .expect("not ready while consul is down");
    consul = DevStackProcess::start(consul_opts).expect("consul again");
    wait_until(T, "/readyz answers 200 again", || async {
        Ok(readyz(&ctl).await == 200)
    })
    .await
    .expect("ready again");
    let kv = consul.kv();
    for i in 0..5 {
        let st = kv
            .wait_json(&format!("jobforge/status/default/o{i}"), T, |v| {
                v["phase"] == "Succeeded"
            })
            .await
            .expect("request submitted before the outage completes");
        assert_eq!(st["phase"], "Succeeded");
    }
    let metrics = reqwest::get(format!("{}/metrics", ctl.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sum(&metrics, "jobforge_watch_restarts_total") > 0.0,
        "{metrics}"
    );
    assert!(
        sum(&metrics, "jobforge_consul_request_errors_total") > 0.0,
        "{metrics}"
    );
}

/// Sum of every sample of `name` (all label sets) in a Prometheus text page.
fn sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// One accepted delivery: (event header, delivery id, body, signature header).
type Delivery = (String, String, Vec<u8>, String);

#[derive(Clone, Default)]
struct Receiver {
    /// Accepted deliveries: (event header, delivery id, body, signature header).
    accepted: Arc<Mutex<Vec<Delivery>>>,
    /// Attempts per delivery id, to fail the first two of each.
    attempts: Arc<Mutex<std::collections::HashMap<String, u32>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let id = h("x-jobforge-delivery");
    let n = {
        let mut a = r.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let e = a.entry(id.clone()).or_insert(0);
        *e += 1;
        *e
    };
    if n <= 2 {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.accepted.lock().unwrap_or_else(|p| p.into_inner()).push((
        h("x-jobforge-event"),
        id,
        body.to_vec(),
        h("x-jobforge-signature"),
    ));
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_ordered_and_delivered_at_least_once_across_retries_and_failover() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        env: vec![("JOBFORGE_FAKE_BUILD_SLEEP".into(), "4".into())],
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let receiver = Receiver::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    stack
        .put_secret(
            "secret/data/jobforge/default/webhook",
            json!({"secret": "hmac-key-123"}),
        )
        .await
        .expect("secret");
    // The receiver listens on loopback, which webhooks may reach only when allowlisted.
    stack
        .kv()
        .put(
            "jobforge/config",
            br#"{"tenancy":{"webhook_allow_cidrs":["127.0.0.0/8"]}}"#,
        )
        .await
        .unwrap();
    let fast = ["--session-ttl", "10s", "--lock-delay", "1s"];
    // The controllers read the webhook key with a least-privilege token made from the shipped
    // policy (examples/deploy/vault-policy-controller.hcl), not with the root token.
    let env = stack.least_privilege_env().await.expect("controller token");
    let mut a = ControllerProcess::start_env(env.clone(), &fast)
        .await
        .expect("a");
    a.wait_leader(T).await.expect("a leads");
    let b = ControllerProcess::start_env(env, &fast).await.expect("b");
    let repo = GitRepo::hello_world().expect("repo");
    let spec = json!({
        "repo_url": repo.url,
        "webhook": {"url": format!("http://{hook_addr}/hook"), "secret_path": "secret/data/jobforge/default/webhook",
                    "headers": {"X-Team": "a"}, "on": ["started", "succeeded", "failed"]},
    });
    let kv = stack.kv();
    kv.put(
        "jobforge/requests/default/wh",
        &request_json("default", "wh", spec),
    )
    .await
    .unwrap();
    // Fail over in the middle: once `started` is delivered (after two 500s), kill the leader.
    let r = receiver.clone();
    wait_until(T, "the started event is accepted", || {
        let r = r.clone();
        async move {
            Ok(r.accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|d| d.0 == "started"))
        }
    })
    .await
    .expect("started delivered");
    a.process().kill();
    b.wait_leader(T).await.expect("b takes over");
    kv.wait_json("jobforge/status/default/wh", T, |v| {
        v["phase"] == "Succeeded"
    })
    .await
    .expect("succeeded");
    let r = receiver.clone();
    wait_until(T, "the succeeded event is accepted", || {
        let r = r.clone();
        async move {
            Ok(r.accepted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|d| d.0 == "succeeded"))
        }
    })
    .await
    .expect("succeeded delivered");
    // Read the key back from Vault, as a receiver would hold it, and check every signature.
    let secret: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/secret/data/jobforge/default/webhook",
            stack.vault
        ))
        .header("X-Vault-Token", "root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = secret["data"]["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let accepted = receiver
        .accepted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // At least once: the failover may send `started` again, with the same delivery id; a
    // receiver that deduplicates on it sees each event once, in order.
    let mut seen = std::collections::HashSet::new();
    let events: Vec<&str> = accepted
        .iter()
        .filter(|d| seen.insert(d.1.clone()))
        .map(|d| d.0.as_str())
        .collect();
    assert_eq!(
        events,
        vec!["started", "succeeded"],
        "in order, each once after deduplication"
    );
    for (event, _, body, sig) in &accepted {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body);
        assert_eq!(
            sig,
            &format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            "{event}"
        );
        let doc: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(doc["event"], event.as_str());
        assert_eq!(doc["request"]["name"], "wh");
    }
    let status = kv
        .wait_json("jobforge/status/default/wh", T, |v| {
            v["webhook"]["lastDeliveredAt"].is_string()
        })
        .await;
    assert!(status.is_ok(), "delivery is recorded in status");
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_requests_are_collected_after_their_ttl_and_unfinished_ones_never() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let repo = GitRepo::hello_world().expect("repo");
    let kv = stack.kv();
    kv.put(
        "jobforge/requests/default/short",
        &request_json(
            "default",
            "short",
            json!({"repo_url": repo.url, "ttl_after_finished": "2s"}),
        ),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json("jobforge/status/default/short", T, |v| {
            v["phase"] == "Succeeded"
        })
        .await
        .expect("succeeded");
    let finished = std::time::Instant::now();
    assert!(st["completionTime"].is_string());
    let nomad = stack.nomad.clone();
    let kv2 = kv.clone();
    wait_until(
        Duration::from_secs(10),
        "spec, status, logs and jobs are gone",
        || {
            let kv = kv2.clone();
            let nomad = nomad.clone();
            async move {
                let gone = kv.keys("jobforge/requests/default/short").await?.is_empty()
                    && kv.keys("jobforge/status/default/short").await?.is_empty()
                    && kv.keys("jobforge/logs/default/short/").await?.is_empty();
                let jobs: Vec<Value> =
                    reqwest::get(format!("{nomad}/v1/jobs?prefix=jobforge-default-short-"))
                        .await?
                        .json()
                        .await?;
                Ok(gone && jobs.is_empty())
            }
        },
    )
    .await
    .expect("collected");
    assert!(
        finished.elapsed() >= Duration::from_millis(1500),
        "not collected before its TTL"
    );
    let metrics = reqwest::get(format!("{}/metrics", ctl.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "jobforge_reconcile_total",
        "jobforge_reconcile_duration_seconds_count",
        "jobforge_phase_duration_seconds_count",
        "jobforge_builds_finished_total",
        "jobforge_leader",
        "jobforge_leadership_transitions_total",
        "jobforge_consul_request_duration_seconds_count",
        "jobforge_consul_blocking_wait_seconds_count",
        "jobforge_nomad_request_duration_seconds_count",
    ] {
        assert!(
            sum(&metrics, name) > 0.0,
            "{name} is zero or missing:\n{metrics}"
        );
    }
    for name in [
        "jobforge_queue_depth",
        "jobforge_reconciles_in_flight",
        "jobforge_requests",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{metrics}"
        );
    }
    // Durations are Prometheus histograms (what `histogram_quantile` needs), and every series the
    // shipped Grafana dashboard queries exists.
    for h in [
        "jobforge_reconcile_duration_seconds",
        "jobforge_phase_duration_seconds",
        "jobforge_consul_request_duration_seconds",
        "jobforge_consul_blocking_wait_seconds",
        "jobforge_nomad_request_duration_seconds",
    ] {
        let inf: f64 = metrics
            .lines()
            .filter(|l| l.starts_with(&format!("{h}_bucket{{")) && l.contains("le=\"+Inf\""))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum();
        assert!(inf > 0.0, "{h}: no +Inf bucket:\n{metrics}");
        assert_eq!(
            inf,
            sum(&metrics, &format!("{h}_count")),
            "{h}: no +Inf bucket matching its count:\n{metrics}"
        );
    }
    let dashboard = std::fs::read_to_string(
        jobforge_tests::workspace_root().join("examples/deploy/grafana-dashboard.json"),
    )
    .unwrap();
    let queried: std::collections::BTreeSet<&str> = dashboard
        .match_indices("jobforge_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    assert!(queried.len() >= 5, "{queried:?}");
    for name in queried {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "the dashboard queries {name}, which /metrics does not serve:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unfinished_request_with_a_short_ttl_is_never_collected() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        env: vec![("JOBFORGE_FAKE_BUILD_SLEEP".into(), "621".into())],
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let repo = GitRepo::hello_world().expect("repo");
    let kv = stack.kv();
    kv.put(
        "jobforge/requests/default/running",
        &request_json(
            "default",
            "running",
            json!({"repo_url": repo.url, "ttl_after_finished": "1s"}),
        ),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json("jobforge/status/default/running", T, |v| {
            v["phase"] == "Building"
        })
        .await
        .expect("building");
    // Several TTLs pass while it runs: a blocking query on the spec sees no deletion.
    let (_, spec) = kv
        .get("jobforge/requests/default/running", 0, Duration::ZERO)
        .await
        .unwrap();
    let (_, mi) = spec.expect("spec");
    let (_, after) = kv
        .get(
            "jobforge/requests/default/running",
            mi,
            Duration::from_secs(4),
        )
        .await
        .unwrap();
    assert!(after.is_some(), "an unfinished request was collected");
    assert_eq!(st["phase"], "Building");
}

/// Issue 18, item 12: keys under `requests/` at the wrong depth or whose segments are not DNS
/// labels are never reconciled (no status, no job); each is counted once in
/// `jobforge_ignored_keys_total` (exported at 0 before the first), however often it is written,
/// and a real request next to them still succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn keys_that_are_not_requests_are_counted_once_and_never_reconciled() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let metrics_page = || async {
        reqwest::get(format!("{}/metrics", ctl.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let page = metrics_page().await;
    assert!(
        page.lines().any(|l| l == "jobforge_ignored_keys_total 0"),
        "exported at 0:\n{page}"
    );
    let repo = GitRepo::hello_world().expect("repo");
    let kv = stack.kv();
    let bad = [
        ("jobforge/requests/default/a/b", "default", "a"),
        ("jobforge/requests/justns", "default", "justns"),
        ("jobforge/requests/Default/A", "Default", "A"),
    ];
    for round in 0..2 {
        for (key, ns, name) in bad {
            let doc = request_json(
                ns,
                name,
                json!({"repo_url": repo.url, "git_ref": format!("r{round}")}),
            );
            kv.put(key, &doc).await.unwrap();
        }
    }
    kv.put(
        "jobforge/requests/default/ok",
        &request_json("default", "ok", json!({"repo_url": repo.url})),
    )
    .await
    .unwrap();
    kv.wait_json("jobforge/status/default/ok", T, |v| {
        v["phase"] == "Succeeded"
    })
    .await
    .expect("the real request succeeds");
    let http = ctl.http.clone();
    wait_until(T, "jobforge_ignored_keys_total reaches 3", || {
        let http = http.clone();
        async move {
            let page = reqwest::get(format!("{http}/metrics"))
                .await?
                .text()
                .await?;
            Ok(sum(&page, "jobforge_ignored_keys_total") >= 3.0)
        }
    })
    .await
    .expect("counted");
    let page = metrics_page().await;
    assert_eq!(
        sum(&page, "jobforge_ignored_keys_total"),
        3.0,
        "once per key, not per write:\n{page}"
    );
    assert_eq!(
        kv.keys("jobforge/status/").await.unwrap(),
        vec!["jobforge/status/default/ok".to_string()],
        "only the real request has a status"
    );
    let jobs: Vec<Value> = reqwest::get(format!("{}/v1/jobs?prefix=jobforge-", stack.nomad))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jobs.iter().all(|j| j["ID"]
            .as_str()
            .unwrap_or("")
            .starts_with("jobforge-default-ok-")),
        "{jobs:?}"
    );
}
