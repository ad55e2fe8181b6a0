//! The Consul emulator's HTTP API, driven with plain reqwest against an in-process dev stack that
//! runs only Consul on port 0. Each test states the Consul behaviour it checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use jobforge_devstack::{DevStack, DevStackConfig};
use serde_json::{Value, json};

/// Dev stack with only the Consul emulator; shut down explicitly (or dropped with the runtime).
struct Consul {
    stack: Option<DevStack>,
    url: String,
    http: reqwest::Client,
}

impl Consul {
    async fn start() -> Consul {
        let cfg = DevStackConfig {
            nomad_addr: None,
            vault_addr: None,
            ..DevStackConfig::ephemeral()
        };
        let stack = DevStack::start(cfg).await.expect("start consul emulator");
        let url = stack.consul_url();
        Consul {
            stack: Some(stack),
            url,
            http: reqwest::Client::new(),
        }
    }

    fn u(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    async fn put(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .put(self.u(path))
            .body(body)
            .send()
            .await
            .expect("PUT")
    }

    async fn put_bool(&self, path: &str, body: &'static str) -> bool {
        let r = self.put(path, body).await;
        assert_eq!(r.status(), 200, "PUT {path}");
        r.json::<bool>().await.expect("bool body")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.u(path)).send().await.expect("GET")
    }

    async fn session(&self, body: Value) -> String {
        let r = self.put("/v1/session/create", body.to_string()).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("json")["ID"]
            .as_str()
            .expect("ID")
            .to_string()
    }

    fn waiters(&self) -> usize {
        self.stack
            .as_ref()
            .and_then(|s| s.consul.as_ref())
            .map_or(0, |s| s.waiter_count())
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stack.take() {
            s.shutdown().await;
        }
    }
}

async fn shutdown_shared(c: Arc<Consul>) {
    if let Ok(c) = Arc::try_unwrap(c) {
        c.shutdown().await;
    }
}

fn index(r: &reqwest::Response) -> u64 {
    r.headers()
        .get("x-consul-index")
        .expect("X-Consul-Index present")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

fn b64(v: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

async fn entry(c: &Consul, key: &str) -> Value {
    let r = c.get(&format!("/v1/kv/{key}")).await;
    assert_eq!(r.status(), 200, "GET {key}");
    r.json::<Value>().await.expect("json")[0].clone()
}

#[tokio::test]
async fn not_found_carries_a_nonzero_index_and_consul_headers() {
    let c = Consul::start().await;
    let r = c.get("/v1/kv/missing").await;
    assert_eq!(r.status(), 404);
    assert_eq!(index(&r), 1, "empty table index is clamped to 1");
    assert_eq!(r.headers()["x-consul-knownleader"], "true");
    assert_eq!(r.headers()["x-consul-lastcontact"], "0");
    assert_eq!(r.headers()["x-consul-effective-consistency"], "leader");
    assert!(r.bytes().await.expect("body").is_empty());
    assert!(c.put_bool("/v1/kv/a", "1").await);
    assert!(c.put_bool("/v1/kv/b", "2").await);
    let b_index = entry(&c, "b").await["ModifyIndex"]
        .as_u64()
        .expect("ModifyIndex");
    let r = c.get("/v1/kv/missing").await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        index(&r),
        b_index,
        "missing key answers the table's max index"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn blocking_get_returns_promptly_after_a_write_and_never_before() {
    let c = Arc::new(Consul::start().await);
    assert!(c.put_bool("/v1/kv/watch/me", "v1").await);
    let idx = index(&c.get("/v1/kv/watch/me").await);
    let c2 = c.clone();
    let mut waiter = tokio::spawn(async move {
        let r = c2
            .get(&format!("/v1/kv/watch/me?index={idx}&wait=30s"))
            .await;
        let at = Instant::now();
        (at, index(&r), r.json::<Value>().await.expect("json"))
    });
    // No change yet: the query must still be waiting (an unrelated key does not count).
    assert!(c.put_bool("/v1/kv/watch/other", "x").await);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiter)
            .await
            .is_err(),
        "answered without a change"
    );
    let written = Instant::now();
    assert!(c.put_bool("/v1/kv/watch/me", "v2").await);
    let (answered, new_idx, body) = waiter.await.expect("join");
    let latency = answered.saturating_duration_since(written);
    assert!(
        latency < Duration::from_millis(100),
        "reaction took {latency:?}"
    );
    assert!(new_idx > idx);
    assert_eq!(body[0]["Value"], b64("v2"));
    shutdown_shared(c).await;
}

#[tokio::test]
async fn blocking_get_without_change_returns_at_the_wait_end_with_the_same_index() {
    let c = Consul::start().await;
    assert!(c.put_bool("/v1/kv/quiet", "v").await);
    let idx = index(&c.get("/v1/kv/quiet").await);
    let start = Instant::now();
    let r = c.get(&format!("/v1/kv/quiet?index={idx}&wait=1s")).await;
    let took = start.elapsed();
    assert_eq!(r.status(), 200);
    assert_eq!(index(&r), idx);
    assert!(
        took >= Duration::from_secs(1),
        "returned early after {took:?}"
    );
    assert!(
        took < Duration::from_millis(1000 + 1000 / 16 + 500),
        "took {took:?}"
    );
    assert_eq!(c.waiters(), 0, "waiter unregistered");
    c.shutdown().await;
}

#[tokio::test]
async fn blocking_get_on_missing_key_wakes_on_create() {
    let c = Arc::new(Consul::start().await);
    assert!(c.put_bool("/v1/kv/x", "1").await);
    let r = c.get("/v1/kv/later").await;
    assert_eq!(r.status(), 404);
    let idx = index(&r);
    let c2 = c.clone();
    let waiter = tokio::spawn(async move {
        let r = c2.get(&format!("/v1/kv/later?index={idx}&wait=30s")).await;
        (r.status(), index(&r))
    });
    tokio::time::timeout(Duration::from_secs(5), async {
        while c.waiters() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("waiter registered");
    assert!(c.put_bool("/v1/kv/later", "now").await);
    let (status, new_idx) = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(status, 200);
    assert!(new_idx > idx);
    shutdown_shared(c).await;
}

#[tokio::test]
async fn flags_count_by_presence_and_bad_parameters_are_400() {
    let c = Consul::start().await;
    for k in ["p/a", "p/b/c", "p/b/d", "q"] {
        assert!(c.put_bool(&format!("/v1/kv/{k}"), "v").await);
    }
    let r = c.get("/v1/kv/p/?recurse=false").await;
    assert_eq!(
        r.json::<Value>()
            .await
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let r = c.get("/v1/kv/p/?keys&separator=/").await;
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!(["p/a", "p/b/"])
    );
    let r = c.get("/v1/kv/p/?keys&seperator=/").await;
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!(["p/a", "p/b/"]),
        "the historic spelling is accepted"
    );
    let r = c.get("/v1/kv/p/a?raw").await;
    assert_eq!(r.text().await.expect("text"), "v");
    let r = c.get("/v1/kv/none/?keys").await;
    assert_eq!(r.status(), 404);
    let r = c
        .http
        .delete(c.u("/v1/kv/?recurse"))
        .send()
        .await
        .expect("delete all");
    assert_eq!(r.status(), 200);
    let r = c.get("/v1/kv/?keys").await;
    assert_eq!(
        (r.status().as_u16(), r.text().await.expect("t")),
        (200, "[]".to_string())
    );
    for (path, msg) in [
        ("/v1/kv/q?wait=10", "Invalid wait time"),
        ("/v1/kv/q?index=x", "Invalid index"),
        ("/v1/kv/", "Missing key name"),
        (
            "/v1/kv/q?stale&consistent",
            "Cannot specify ?stale with ?consistent",
        ),
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        assert!(r.text().await.expect("text").starts_with(msg), "{path}");
    }
    let r = c.get("/v1/kv/q?stale").await;
    assert_eq!(r.headers()["x-consul-effective-consistency"], "stale");
    c.shutdown().await;
}

#[tokio::test]
async fn identical_write_does_not_bump_modify_index_and_flags_are_stored() {
    let c = Consul::start().await;
    assert!(c.put_bool("/v1/kv/same?flags=42", "v").await);
    let first = entry(&c, "same").await;
    assert!(c.put_bool("/v1/kv/same?flags=42", "v").await);
    let second = entry(&c, "same").await;
    assert_eq!(first, second);
    assert_eq!(second["Flags"], 42);
    assert!(c.put_bool("/v1/kv/same?flags=42", "w").await);
    let third = entry(&c, "same").await;
    assert!(third["ModifyIndex"].as_u64() > first["ModifyIndex"].as_u64());
    assert_eq!(third["CreateIndex"], first["CreateIndex"]);
    c.shutdown().await;
}

#[tokio::test]
async fn cas_races_have_exactly_one_winner_per_round() {
    let c = Arc::new(Consul::start().await);
    let mut cas = 0u64;
    for round in 0..4 {
        let mut tasks = Vec::new();
        for w in 0..100 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let r = c
                    .put(
                        &format!("/v1/kv/race?cas={cas}"),
                        format!("round{round}-writer{w}"),
                    )
                    .await;
                r.json::<bool>().await.expect("bool")
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.expect("join"));
        }
        assert_eq!(wins, 1, "round {round} (cas={cas})");
        let e = entry(&c, "race").await;
        let now = e["ModifyIndex"].as_u64().expect("index");
        assert!(now > cas);
        cas = now;
    }
    shutdown_shared(c).await;
}

#[tokio::test]
async fn values_above_512_kib_are_413_and_conflicting_flags_400() {
    let c = Consul::start().await;
    let r = c.put("/v1/kv/big", vec![b'x'; 512 * 1024]).await;
    assert_eq!(r.status(), 200);
    let r = c.put("/v1/kv/big", vec![b'x'; 512 * 1024 + 1]).await;
    assert_eq!(r.status(), 413);
    let r = c.put("/v1/kv/k?cas=0&acquire=abc", "v").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("t").starts_with("Conflicting flags"));
    let r = c.put("/v1/kv/k?acquire=no-such-session", "v").await;
    assert_eq!(r.status(), 500, "an invalid session is an error, not false");
    c.shutdown().await;
}

#[tokio::test]
async fn delete_honours_cas_recurse_and_keeps_tombstone_indexes() {
    let c = Consul::start().await;
    for k in ["t/a", "t/b", "u"] {
        assert!(c.put_bool(&format!("/v1/kv/{k}"), "v").await);
    }
    let del = |p: &str| c.http.delete(c.u(p)).send();
    let r = del("/v1/kv/t/a?cas=0").await.expect("del");
    assert!(
        !r.json::<bool>().await.expect("bool"),
        "cas=0 never deletes"
    );
    let r = del("/v1/kv/t?recurse&cas=1").await.expect("del");
    assert_eq!(r.status(), 400);
    let mi = entry(&c, "t/a").await["ModifyIndex"].as_u64().expect("i");
    let r = del(&format!("/v1/kv/t/a?cas={mi}")).await.expect("del");
    assert!(r.json::<bool>().await.expect("bool"));
    let r = c.get("/v1/kv/t/?recurse").await;
    let after_delete = index(&r);
    assert!(after_delete > mi, "list index includes the tombstone");
    let r = del("/v1/kv/t/?recurse").await.expect("del");
    assert!(r.json::<bool>().await.expect("bool"));
    let r = c.get("/v1/kv/t/?recurse").await;
    assert_eq!(r.status(), 404);
    assert!(index(&r) > after_delete);
    assert_eq!(c.get("/v1/kv/u").await.status(), 200);
    c.shutdown().await;
}

#[tokio::test]
async fn percent_encoded_key_paths_are_decoded() {
    let c = Consul::start().await;
    assert!(c.put_bool("/v1/kv/a%2Fb%2Fc", "v").await);
    let r = c.get("/v1/kv/a/b/c").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")[0]["Key"], "a/b/c");
    let r = c
        .http
        .put(c.u("/v1/kv/sp%20ace?token=t"))
        .header("X-Consul-Token", "anything")
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200, "tokens are accepted");
    assert_eq!(entry(&c, "sp%20ace").await["Key"], "sp ace");
    c.shutdown().await;
}

#[tokio::test]
async fn txn_commits_atomically_and_rolls_back_with_409() {
    let c = Consul::start().await;
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "tx/a", "Value": b64("1")}},
        {"KV": {"Verb": "cas", "Key": "tx/b", "Value": b64("2"), "Index": 0}},
        {"KV": {"Verb": "get", "Key": "tx/a"}},
    ]);
    let r = c.put("/v1/txn", ops.to_string()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["Errors"], Value::Null);
    assert_eq!(body["Results"][0]["KV"]["Value"], Value::Null);
    assert_eq!(body["Results"][2]["KV"]["Value"], b64("1"));
    assert_eq!(
        body["Results"][0]["KV"]["ModifyIndex"],
        body["Results"][1]["KV"]["ModifyIndex"]
    );
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "tx/c", "Value": b64("3")}},
        {"KV": {"Verb": "delete", "Key": "tx/a"}},
        {"KV": {"Verb": "check-not-exists", "Key": "tx/b"}},
    ]);
    let r = c.put("/v1/txn", ops.to_string()).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["Results"], Value::Null);
    assert_eq!(body["Errors"][0]["OpIndex"], 2);
    assert_eq!(c.get("/v1/kv/tx/c").await.status(), 404, "rolled back");
    assert_eq!(c.get("/v1/kv/tx/a").await.status(), 200, "rolled back");
    let many: Vec<Value> = (0..65)
        .map(|i| json!({"KV": {"Verb": "get", "Key": format!("k{i}")}}))
        .collect();
    let r = c.put("/v1/txn", Value::Array(many).to_string()).await;
    assert_eq!(r.status(), 413);
    c.shutdown().await;
}

#[tokio::test]
async fn acquire_release_and_lock_delay_follow_consul() {
    let c = Consul::start().await;
    let a = c.session(json!({"Name": "a", "LockDelay": "1s"})).await;
    let b = c.session(json!({"name": "b", "lockdelay": "1s"})).await;
    assert!(c.put_bool(&format!("/v1/kv/lock?acquire={a}"), "a").await);
    let e = entry(&c, "lock").await;
    assert_eq!(
        (e["LockIndex"].as_u64(), e["Session"].as_str()),
        (Some(1), Some(a.as_str()))
    );
    assert!(!c.put_bool(&format!("/v1/kv/lock?acquire={b}"), "b").await);
    assert!(
        c.put_bool(&format!("/v1/kv/lock?acquire={a}"), "a2").await,
        "holder updates"
    );
    assert_eq!(entry(&c, "lock").await["LockIndex"], 1);
    assert!(
        !c.put_bool(&format!("/v1/kv/lock?release={b}"), "").await,
        "only the holder releases"
    );
    assert!(
        c.put_bool(&format!("/v1/kv/lock?release={a}"), "free")
            .await
    );
    assert!(
        c.put_bool(&format!("/v1/kv/lock?acquire={b}"), "b").await,
        "release sets no lock-delay"
    );
    assert_eq!(entry(&c, "lock").await["LockIndex"], 2);
    let destroyed = Instant::now();
    assert!(c.put_bool(&format!("/v1/session/destroy/{b}"), "").await);
    assert!(
        c.put_bool(&format!("/v1/session/destroy/{b}"), "").await,
        "idempotent"
    );
    assert!(entry(&c, "lock").await.get("Session").is_none());
    assert!(
        !c.put_bool(&format!("/v1/kv/lock?acquire={a}"), "a").await,
        "lock-delay after invalidation"
    );
    tokio::time::sleep_until((destroyed + Duration::from_millis(1050)).into()).await;
    assert!(
        c.put_bool(&format!("/v1/kv/lock?acquire={a}"), "a").await,
        "lock-delay over"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn session_endpoints_validate_and_report() {
    let c = Consul::start().await;
    let r = c.put("/v1/session/create", r#"{"ttl":"5s"}"#).await;
    assert_eq!(r.status(), 400);
    let r = c.put("/v1/session/create", r#"{"Behavior":"keep"}"#).await;
    assert_eq!(r.status(), 400);
    let id = c
        .session(json!({"name": "s", "ttl": "30s", "behavior": "delete", "lockdelay": "5m"}))
        .await;
    let info: Value = c
        .get(&format!("/v1/session/info/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(info[0]["TTL"], "30s");
    assert_eq!(info[0]["Behavior"], "delete");
    assert_eq!(
        info[0]["LockDelay"], 60_000_000_000u64,
        "lock-delay capped at 60s"
    );
    let r = c.put(&format!("/v1/session/renew/{id}"), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.expect("json")[0]["ID"], id.as_str());
    let unknown = "00000000-0000-0000-0000-000000000000";
    let r = c.put(&format!("/v1/session/renew/{unknown}"), "").await;
    assert_eq!(r.status(), 404);
    let r = c.get(&format!("/v1/session/info/{unknown}")).await;
    assert_eq!(r.text().await.expect("t"), "[]");
    let list: Value = c.get("/v1/session/list").await.json().await.expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(
        c.get("/v1/status/leader").await.text().await.expect("t"),
        "\"127.0.0.1:8300\""
    );
    let me: Value = c.get("/v1/agent/self").await.json().await.expect("json");
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    c.shutdown().await;
}

#[tokio::test]
async fn session_ttl_expiry_releases_or_deletes_the_lock_within_twice_the_ttl() {
    let c = Consul::start().await;
    let rel = c.session(json!({"TTL": "10s", "LockDelay": "0s"})).await;
    let del = c.session(json!({"TTL": "10s", "Behavior": "delete"})).await;
    assert!(
        c.put_bool(&format!("/v1/kv/ttl/rel?acquire={rel}"), "x")
            .await
    );
    assert!(
        c.put_bool(&format!("/v1/kv/ttl/del?acquire={del}"), "x")
            .await
    );
    let start = Instant::now();
    let rel_idx = index(&c.get("/v1/kv/ttl/rel").await);
    let del_idx = index(&c.get("/v1/kv/ttl/del").await);
    let rel_path = format!("/v1/kv/ttl/rel?index={rel_idx}&wait=25s");
    let del_path = format!("/v1/kv/ttl/del?index={del_idx}&wait=25s");
    let (r1, r2) = tokio::join!(c.get(&rel_path), c.get(&del_path));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(10),
        "expired before the TTL: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(21),
        "expired after 2xTTL: {took:?}"
    );
    let released: Value = r1.json().await.expect("json");
    assert!(released[0].get("Session").is_none(), "released: {released}");
    assert_eq!(r2.status(), 404, "deleted");
    assert!(index(&r2) > del_idx);
    assert_eq!(
        c.get(&format!("/v1/session/info/{rel}"))
            .await
            .text()
            .await
            .expect("t"),
        "[]"
    );
    c.shutdown().await;
}

/// The per-namespace watch of the controller relies on these (Consul `agent/kvs_endpoint.go`
/// `KVSEndpoint.ListKeys`/`List`, `state/kvs.go` `kvsListTxn`/`kvsListKeysTxn`): a prefix listing's
/// `X-Consul-Index` is the highest ModifyIndex under that prefix (tombstones included), not the
/// table's, so a blocking query on one prefix does not answer on writes under another; and
/// `?keys&separator=/` lists the "folders" one level down, blocking on the whole prefix.
/// The probe of a parked folder (`client-cli/src/consul/watch/sharded/park.rs`): a `?keys&separator=/`
/// listing of a folder's name *without* its slash lists the folder and every sibling whose name
/// starts with it, and answers the highest ModifyIndex of every key and tombstone under that
/// string prefix (Consul `agent/consul/kvs_endpoint.go` `KVS.ListKeys` over
/// `state/kvs.go` `kvsListTxn`: memdb prefix scan plus the graveyard's max index under the prefix).
#[tokio::test]
async fn a_keys_listing_of_a_name_without_slash_counts_siblings_and_tombstones() {
    let c = Consul::start().await;
    assert!(c.put_bool("/v1/kv/r/team/1", "x").await);
    assert!(c.put_bool("/v1/kv/r/team-a/1", "x").await);
    assert!(c.put_bool("/v1/kv/r/other/1", "x").await);
    let r = c.get("/v1/kv/r/team?keys&separator=/").await;
    let probe = index(&r);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!(["r/team-a/", "r/team/"])
    );
    assert_eq!(
        probe,
        entry(&c, "r/team-a/1").await["ModifyIndex"]
            .as_u64()
            .unwrap_or(0),
        "the sibling team-a/ counts"
    );
    // A write elsewhere does not move it; a write in the folder does; a delete does (tombstone).
    assert!(c.put_bool("/v1/kv/r/other/2", "x").await);
    assert_eq!(index(&c.get("/v1/kv/r/team?keys&separator=/").await), probe);
    assert!(c.put_bool("/v1/kv/r/team/2", "x").await);
    let after_put = index(&c.get("/v1/kv/r/team?keys&separator=/").await);
    assert!(after_put > probe);
    let d = c
        .http
        .delete(c.u("/v1/kv/r/team/2"))
        .send()
        .await
        .expect("DELETE");
    assert!(d.status().is_success());
    let after_delete = index(&c.get("/v1/kv/r/team?keys&separator=/").await);
    assert!(after_delete > after_put, "the tombstone counts");
    c.shutdown().await;
}

#[tokio::test]
async fn prefix_indexes_are_per_prefix_and_separator_lists_one_level() {
    let c = Arc::new(Consul::start().await);
    assert!(c.put_bool("/v1/kv/r/a/1", "x").await);
    assert!(c.put_bool("/v1/kv/r/b/1", "x").await);
    let a = c.get("/v1/kv/r/a/?recurse").await;
    let a_idx = index(&a);
    let b_idx = index(&c.get("/v1/kv/r/b/?recurse").await);
    assert!(a_idx < b_idx, "index of r/a/ is r/a/1's ModifyIndex");
    assert_eq!(
        a_idx,
        entry(&c, "r/a/1").await["ModifyIndex"]
            .as_u64()
            .unwrap_or(0)
    );
    let r = c.get("/v1/kv/r/?keys&separator=/").await;
    let folders_idx = index(&r);
    assert_eq!(folders_idx, b_idx);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!(["r/a/", "r/b/"])
    );

    // A blocking list of r/a/ waits through writes under r/b/ and answers a write under r/a/.
    let c2 = c.clone();
    let mut waiter = tokio::spawn(async move {
        let r = c2
            .get(&format!("/v1/kv/r/a/?recurse&index={a_idx}&wait=30s"))
            .await;
        index(&r)
    });
    assert!(c.put_bool("/v1/kv/r/b/2", "x").await);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiter)
            .await
            .is_err(),
        "a write under r/b/ answered a blocking list of r/a/"
    );
    assert!(c.put_bool("/v1/kv/r/a/2", "x").await);
    let woke = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken")
        .expect("join");
    assert!(woke > a_idx);

    // The folder listing blocks on the whole prefix: a new namespace wakes it.
    let idx = index(&c.get("/v1/kv/r/?keys&separator=/").await);
    let c2 = c.clone();
    let waiter = tokio::spawn(async move {
        let r = c2
            .get(&format!("/v1/kv/r/?keys&separator=/&index={idx}&wait=30s"))
            .await;
        r.json::<Value>().await.expect("json")
    });
    assert!(c.put_bool("/v1/kv/r/c/1", "x").await);
    let listed = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(listed, json!(["r/a/", "r/b/", "r/c/"]));
    // Deleting the last key of a folder keeps a tombstone: the prefix index does not go back.
    let before = index(&c.get("/v1/kv/r/c/?recurse").await);
    let del = c
        .http
        .delete(c.u("/v1/kv/r/c/1"))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 200);
    let gone = c.get("/v1/kv/r/c/?recurse").await;
    assert_eq!(gone.status(), 404);
    assert!(index(&gone) > before, "tombstone index counts");
    shutdown_shared(c).await;
}
