//! Webhooks, from the receiver's side (issue 16: at least once through a fenced outbox; issue 14:
//! webhooks cannot reach inside).
//!
//! - Internal destinations (cloud metadata, Consul's own API on loopback, a name resolving to
//!   loopback) are never contacted and the status says `destination not allowed`; with the
//!   loopback CIDR allowlisted in `jobforge/config` the same receiver gets its event. The
//!   controller runs with the shipped least-privilege Consul policy, so the outbox keys it
//!   writes and removes are covered by it.
//! - A receiver that holds the first delivery open while the leader is SIGKILLed gets the same
//!   event again from the next leader, with the same `X-Jobforge-Delivery` and a valid signature.
//! - 200 requests with webhooks under 3 leader SIGKILLs: every subscribed event arrives at least
//!   once, none is lost, and duplicates carry the same delivery id and body.
//!
//! - The shipped example receiver (`examples/webhook-receiver/receiver.py`) accepts jobforge's
//!   signatures, refuses a forged one and processes a repeated delivery id once.
//!
//! Tasks run under the dev stack's mock driver (no process), so the control plane alone is timed.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use jobforge_tests::acl::{ConsulAcl, shipped_policy};
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, Kv, ProcessGuard, request_json,
    wait_until, which, workspace_root,
};
use serde_json::{Value, json};
use sha2::Sha256;

const T: Duration = Duration::from_secs(90);
/// Consul's shortest session TTL and a short lock-delay: failover in seconds.
const FAST: &[&str] = &["--session-ttl", "10s", "--lock-delay", "1s"];
const SECRET_PATH: &str = "secret/data/jobforge/default/webhook";
const HMAC_KEY: &str = "hmac-key-123";
const ALLOW_LOOPBACK: &[u8] = br#"{"tenancy":{"webhook_allow_cidrs":["127.0.0.0/8"]}}"#;

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    event: String,
    signature: String,
    body: Bytes,
}

/// A receiver on loopback: records every POST; the first `hold` of them are never answered.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    hold: Arc<Mutex<usize>>,
}

impl Receiver {
    /// Serves on `127.0.0.1:<free port>`; returns the URL of its hook.
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://localhost:{}/hook", addr.port())
    }

    fn got(&self) -> Vec<Delivery> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    r.got
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Delivery {
            id: h("x-jobforge-delivery"),
            event: h("x-jobforge-event"),
            signature: h("x-jobforge-signature"),
            body,
        });
    let hold = {
        let mut hold = r.hold.lock().unwrap_or_else(|p| p.into_inner());
        let now = *hold > 0;
        *hold = hold.saturating_sub(1);
        now
    };
    if hold {
        // Never answered: the sender's connection dies with it.
        std::future::pending::<()>().await;
    }
    StatusCode::OK
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A dev stack whose tasks run under the mock driver and finish at once.
fn mock_stack(acl: Option<&str>) -> DevStackProcess {
    DevStackProcess::start(DevStackOptions {
        env: vec![("JOBFORGE_DEVSTACK_MOCK_DRIVER".into(), "0s".into())],
        consul_acl_initial_management: acl.map(String::from),
        ..DevStackOptions::default()
    })
    .expect("dev stack")
}

fn spec(url: &str, on: &[&str]) -> Value {
    json!({"webhook": {"url": url, "secret_path": SECRET_PATH, "on": on}})
}

/// Index of the replica that reports itself leader with its first list done.
async fn leader_of(ctls: &[Option<ControllerProcess>], timeout: Duration) -> usize {
    let found = Mutex::new(None);
    wait_until(timeout, "a replica leads", || async {
        for (i, c) in ctls.iter().enumerate() {
            if let Some(c) = c
                && let Ok(s) = c.status().await
                && s["role"] == "leader"
                && s["ready"] == true
            {
                *found.lock().unwrap() = Some(i);
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
    .expect("leader");
    found.into_inner().unwrap().unwrap()
}

async fn outbox_keys(kv: &Kv) -> anyhow::Result<Vec<String>> {
    kv.keys("jobforge/outbox/").await
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_to_internal_destinations_are_refused_unless_the_cidr_is_allowlisted() {
    const MANAGEMENT: &str = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b";
    let stack = mock_stack(Some(MANAGEMENT));
    let acl = ConsulAcl::new(stack.consul.clone(), MANAGEMENT);
    acl.create_policy(
        "jobforge-controller",
        &shipped_policy("consul-policy-controller.hcl").unwrap(),
    )
    .await
    .expect("controller policy as shipped");
    let token = acl.create_token("jobforge-controller").await.unwrap();
    stack
        .put_secret(SECRET_PATH, json!({"secret": HMAC_KEY}))
        .await
        .unwrap();
    let mut env = stack.least_privilege_env().await.expect("vault token");
    env.push(("CONSUL_HTTP_TOKEN".into(), token));
    let ctl = ControllerProcess::start_env(env, &[]).await.expect("ctl");
    ctl.wait_leader(T).await.expect("leader");
    let receiver = Receiver::default();
    let local = receiver.serve().await;
    let consul_port = stack.consul.rsplit(':').next().unwrap().to_string();
    let refused = [
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ),
        (
            "consul",
            format!("http://127.0.0.1:{consul_port}/v1/kv/jobforge/pwned"),
        ),
        ("local", local.clone()),
    ];
    for (name, url) in &refused {
        let doc = request_json("default", name, spec(url, &["succeeded"]));
        let (code, text) = acl
            .kv_put(&format!("jobforge/requests/default/{name}"), &doc, None)
            .await
            .unwrap();
        assert_eq!(code, 200, "{text}");
    }
    for (name, url) in &refused {
        let st = acl
            .wait_json(&format!("jobforge/status/default/{name}"), T, |v| {
                v["webhook"]["lastErrorEvent"].is_string()
            })
            .await
            .unwrap_or_else(|e| panic!("{name} ({url}): {e:#}"));
        assert_eq!(st["phase"], "Succeeded", "{st:#}");
        assert_eq!(
            st["webhook"]["lastError"], "destination not allowed",
            "{name} ({url}): {st:#}"
        );
        assert!(st["webhook"]["lastDeliveredAt"].is_null(), "{st:#}");
    }
    assert!(receiver.got().is_empty(), "{:?}", receiver.got());
    assert_eq!(acl.get_json("jobforge/pwned").await.unwrap(), None);

    // The operator allowlists loopback: the same receiver now gets its event.
    let (code, text) = acl
        .kv_put("jobforge/config", ALLOW_LOOPBACK, None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    // The configuration watch is asynchronous: wait until the controller applied it.
    let cfg_index = |s: &Value| s["config_index"].as_u64().unwrap_or(0);
    wait_until(T, "the controller read the new configuration", || async {
        Ok(ctl
            .status()
            .await
            .map(|s| cfg_index(&s) > 0)
            .unwrap_or(false))
    })
    .await
    .expect("config applied");
    let doc = request_json("default", "allowed", spec(&local, &["succeeded"]));
    acl.kv_put("jobforge/requests/default/allowed", &doc, None)
        .await
        .unwrap();
    let st = acl
        .wait_json("jobforge/status/default/allowed", T, |v| {
            v["webhook"]["lastDeliveredEvent"].is_string()
        })
        .await
        .expect("delivered");
    assert!(st["webhook"]["lastError"].is_null(), "{st:#}");
    let got = receiver.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].event, "succeeded");
    assert!(
        got[0].id.starts_with("default/allowed/succeeded:"),
        "{got:?}"
    );
    assert_eq!(got[0].signature, signature(&got[0].body));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_held_open_while_the_leader_dies_is_redelivered_with_the_same_id() {
    let stack = mock_stack(None);
    let kv = stack.kv();
    kv.put("jobforge/config", ALLOW_LOOPBACK).await.unwrap();
    stack
        .put_secret(SECRET_PATH, json!({"secret": HMAC_KEY}))
        .await
        .unwrap();
    let env = stack.least_privilege_env().await.expect("vault token");
    let mut ctls = vec![Some(
        ControllerProcess::start_env(env.clone(), FAST)
            .await
            .expect("a"),
    )];
    assert_eq!(leader_of(&ctls, T).await, 0);
    ctls.push(Some(
        ControllerProcess::start_env(env, FAST).await.expect("b"),
    ));
    let receiver = Receiver::default();
    *receiver.hold.lock().unwrap() = 1;
    let url = receiver.serve().await;
    kv.put(
        "jobforge/requests/default/held",
        &request_json("default", "held", spec(&url, &["succeeded"])),
    )
    .await
    .unwrap();
    let r = receiver.clone();
    wait_until(T, "the first delivery arrives (and is held)", || {
        let r = r.clone();
        async move { Ok(!r.got().is_empty()) }
    })
    .await
    .expect("first delivery");
    ctls[0].take().unwrap().process().kill();
    assert_eq!(leader_of(&ctls, T).await, 1, "b takes over");
    let r = receiver.clone();
    wait_until(T, "the next leader delivers it again", || {
        let r = r.clone();
        async move { Ok(r.got().len() >= 2) }
    })
    .await
    .expect("redelivered");
    let got = receiver.got();
    let (first, again) = (&got[0], &got[1]);
    assert_eq!(first.event, "succeeded");
    assert!(first.id.starts_with("default/held/succeeded:"), "{first:?}");
    assert_eq!(again.id, first.id, "the same X-Jobforge-Delivery");
    assert_eq!(again.body, first.body, "the same body");
    assert_eq!(first.signature, signature(&first.body));
    assert_eq!(again.signature, signature(&again.body), "a valid signature");
    let doc: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(doc["deliveryId"], first.id.as_str());
    assert_eq!(doc["request"]["name"], "held");
    let st = kv
        .wait_json("jobforge/status/default/held", T, |v| {
            v["webhook"]["lastDeliveredEvent"].is_string()
        })
        .await
        .expect("recorded");
    assert_eq!(
        format!(
            "default/held/{}",
            st["webhook"]["lastDeliveredEvent"].as_str().unwrap()
        ),
        first.id
    );
    let kv2 = kv.clone();
    wait_until(T, "the outbox is empty", || {
        let kv = kv2.clone();
        async move { Ok(outbox_keys(&kv).await?.is_empty()) }
    })
    .await
    .expect("outbox drained");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_requests_with_webhooks_lose_no_event_under_three_leader_sigkills() {
    const N: usize = 200;
    const KILLS: usize = 3;
    let stack = mock_stack(None);
    let kv = stack.kv();
    kv.put("jobforge/config", ALLOW_LOOPBACK).await.unwrap();
    stack
        .put_secret(SECRET_PATH, json!({"secret": HMAC_KEY}))
        .await
        .unwrap();
    let env = stack.least_privilege_env().await.expect("vault token");
    let mut ctls = Vec::new();
    for _ in 0..3 {
        ctls.push(Some(
            ControllerProcess::start_env(env.clone(), FAST)
                .await
                .expect("replica"),
        ));
    }
    leader_of(&ctls, T).await;
    let receiver = Receiver::default();
    let url = receiver.serve().await;
    let names: Vec<String> = (0..N).map(|i| format!("w{i:03}")).collect();
    let submitter = {
        let (kv, names, url) = (kv.clone(), names.clone(), url.clone());
        tokio::spawn(async move {
            for name in &names {
                let doc = request_json("default", name, spec(&url, &["started", "succeeded"]));
                assert!(
                    kv.put(&format!("jobforge/requests/default/{name}"), &doc)
                        .await
                        .unwrap()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for k in 0..KILLS {
        // Kill once some deliveries went out since the last kill, so each kill lands mid-stream.
        let seen = receiver.got().len();
        let r = receiver.clone();
        wait_until(Duration::from_secs(120), "deliveries flow", || {
            let r = r.clone();
            async move { Ok(r.got().len() > seen + 5) }
        })
        .await
        .expect("deliveries");
        let leader = leader_of(&ctls, Duration::from_secs(120)).await;
        ctls[leader].take().unwrap().process().kill();
        eprintln!("killed leader {leader} ({}/{KILLS})", k + 1);
        ctls[leader] = Some(
            ControllerProcess::start_env(env.clone(), FAST)
                .await
                .expect("restart"),
        );
    }
    submitter.await.expect("submitter");
    let r = receiver.clone();
    let want = 2 * N;
    wait_until(Duration::from_secs(300), "every event is delivered", || {
        let r = r.clone();
        async move {
            let distinct: BTreeSet<String> = r.got().into_iter().map(|d| d.id).collect();
            Ok(distinct.len() >= want)
        }
    })
    .await
    .unwrap_or_else(|e| {
        let distinct: BTreeSet<String> = receiver.got().into_iter().map(|d| d.id).collect();
        panic!("{e:#}: {} of {want} distinct deliveries", distinct.len())
    });
    let got = receiver.got();
    // Duplicates only with the same id: one body per id, one id per (request, event).
    let mut by_id: BTreeMap<String, &Delivery> = BTreeMap::new();
    for d in &got {
        assert_eq!(d.signature, signature(&d.body), "{}", d.id);
        if let Some(prev) = by_id.insert(d.id.clone(), d) {
            assert_eq!(
                prev.body, d.body,
                "a duplicate of {} with another body",
                d.id
            );
        }
    }
    let mut events: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for d in by_id.values() {
        let doc: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(doc["deliveryId"], d.id.as_str());
        assert_eq!(doc["event"], d.event.as_str());
        let name = doc["request"]["name"].as_str().unwrap().to_string();
        events
            .entry((name, d.event.clone()))
            .or_default()
            .insert(d.id.clone());
    }
    for name in &names {
        for event in ["started", "succeeded"] {
            let ids = events.get(&(name.clone(), event.to_string()));
            assert_eq!(
                ids.map(BTreeSet::len),
                Some(1),
                "{name} {event}: delivered under ids {ids:?}"
            );
        }
    }
    eprintln!(
        "{} POSTs for {} events ({} duplicates)",
        got.len(),
        by_id.len(),
        got.len() - by_id.len()
    );
    let kv2 = kv.clone();
    wait_until(T, "the outbox is empty", || {
        let kv = kv2.clone();
        async move { Ok(outbox_keys(&kv).await?.is_empty()) }
    })
    .await
    .expect("outbox drained");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_receiver_accepts_jobforge_signatures_and_deduplicates() {
    let python = which("python3").expect("python3 on PATH runs the example receiver");
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = ProcessGuard::command(python);
    cmd.arg(workspace_root().join("examples/webhook-receiver/receiver.py"))
        .args(["--port", "0", "--state"])
        .arg(dir.path().join("seen"))
        .env("JOBFORGE_WEBHOOK_SECRET", HMAC_KEY)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let _receiver = ProcessGuard::spawn("receiver.py", cmd).unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until(T, "the example receiver listens", || async {
        Ok(read(&err).contains("listening on"))
    })
    .await
    .expect("listening");
    let port = read(&err)
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    let url = format!("http://127.0.0.1:{port}/hook");

    let stack = mock_stack(None);
    let kv = stack.kv();
    kv.put("jobforge/config", ALLOW_LOOPBACK).await.unwrap();
    stack
        .put_secret(SECRET_PATH, json!({"secret": HMAC_KEY}))
        .await
        .unwrap();
    let ctl = ControllerProcess::start(&stack, &[]).await.expect("ctl");
    ctl.wait_leader(T).await.expect("leader");
    kv.put(
        "jobforge/requests/default/example",
        &request_json("default", "example", spec(&url, &["started", "succeeded"])),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json("jobforge/status/default/example", T, |v| {
            v["webhook"]["lastDeliveredEvent"]
                .as_str()
                .is_some_and(|e| e.starts_with("succeeded:"))
                || v["webhook"]["lastError"].is_string()
        })
        .await
        .expect("delivered or given up");
    assert!(
        st["webhook"]["lastError"].is_null(),
        "the example receiver refused a jobforge delivery: {st:#}"
    );
    let lines: Vec<Value> = read(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(events, ["started", "succeeded"], "{lines:?}");

    // A repeat of a delivery id is answered 200 and not processed again; a forged signature is 401.
    let body = br#"{"event":"succeeded","request":{"namespace":"default","name":"example"}}"#;
    let http = reqwest::Client::new();
    let post = |id: &str, sig: String| {
        http.post(&url)
            .header("x-jobforge-delivery", id)
            .header("x-jobforge-signature", sig)
            .body(body.to_vec())
            .send()
    };
    let id = lines[1]["delivery"].as_str().unwrap();
    let again = post(id, signature(body)).await.unwrap();
    assert_eq!(again.status(), 200);
    let forged = post("default/example/other", "sha256=00".into())
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(read(&out).lines().count(), 2, "{}", read(&out));
}
