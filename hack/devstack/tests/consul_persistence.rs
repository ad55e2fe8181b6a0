//! `--data-dir` persistence of the Consul emulator: a restart keeps every key, its indexes and
//! sessions, and the raft index continues from the snapshot (indexes stay monotonic).

use jobforge_devstack::{DevStack, DevStackConfig};
use serde_json::{Value, json};

async fn start(dir: &std::path::Path) -> DevStack {
    DevStack::start(DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        data_dir: Some(dir.to_path_buf()),
        ..DevStackConfig::ephemeral()
    })
    .await
    .expect("start consul emulator")
}

fn index(r: &reqwest::Response) -> u64 {
    r.headers()["x-consul-index"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn restart_with_data_dir_keeps_every_key_and_indexes_stay_monotonic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let stack = start(dir.path()).await;
    let url = stack.consul_url();
    for i in 0..50 {
        let r = http
            .put(format!("{url}/v1/kv/keep/{i:02}?flags={i}"))
            .body(format!("value-{i}"))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 200);
    }
    let r = http
        .delete(format!("{url}/v1/kv/keep/07"))
        .send()
        .await
        .expect("del");
    assert_eq!(r.status(), 200);
    let r = http
        .put(format!("{url}/v1/session/create"))
        .body(json!({"TTL": "30s"}).to_string())
        .send()
        .await
        .expect("session");
    let session = r.json::<Value>().await.expect("json")["ID"].clone();
    let r = http
        .get(format!("{url}/v1/kv/keep/?recurse"))
        .send()
        .await
        .expect("list");
    let before_idx = index(&r);
    let before: Value = r.json().await.expect("json");
    stack.shutdown().await;

    let stack = start(dir.path()).await;
    let url = stack.consul_url();
    let r = http
        .get(format!("{url}/v1/kv/keep/?recurse"))
        .send()
        .await
        .expect("list");
    assert_eq!(
        index(&r),
        before_idx,
        "the list index (with the tombstone) survives"
    );
    let after: Value = r.json().await.expect("json");
    assert_eq!(after, before, "every key, value, flag and index survives");
    assert_eq!(after.as_array().map(Vec::len), Some(49));
    let r = http
        .get(format!(
            "{url}/v1/session/info/{}",
            session.as_str().expect("id")
        ))
        .send()
        .await
        .expect("info");
    assert_eq!(r.json::<Value>().await.expect("json")[0]["ID"], session);
    let r = http
        .put(format!("{url}/v1/kv/keep/new"))
        .body("n")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{url}/v1/kv/keep/new"))
        .send()
        .await
        .expect("get");
    let e: Value = r.json().await.expect("json");
    assert!(
        e[0]["ModifyIndex"].as_u64().expect("index") > before_idx,
        "raft index continues after the snapshot"
    );
    stack.shutdown().await;
}
