//! Integration tests of the Vault emulator over HTTP: KV v2 envelope, CAS, versions, soft delete,
//! LIST, and Vault's 403/404 bodies.
#![allow(clippy::unwrap_used)]

use jobforge_devstack::{DevStack, DevStackConfig};
use serde_json::{Value, json};

#[tokio::test]
async fn kv2_write_read_cas_versions_delete_list_and_auth_errors() {
    let stack = DevStack::start(DevStackConfig::ephemeral()).await.unwrap();
    let v = stack.vault_url();
    let http = reqwest::Client::new();
    let w = http
        .post(format!("{v}/v1/secret/data/a/b"))
        .header("X-Vault-Token", "root")
        .json(&json!({"data": {"k": "1"}, "options": {"cas": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 200);
    let w: Value = w.json().await.unwrap();
    assert_eq!(w["data"]["version"], 1);
    let conflict = http
        .post(format!("{v}/v1/secret/data/a/b"))
        .header("X-Vault-Token", "root")
        .json(&json!({"data": {"k": "x"}, "options": {"cas": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 400);
    http.put(format!("{v}/v1/secret/data/a/b"))
        .bearer_auth("root")
        .json(&json!({"data": {"k": "2"}}))
        .send()
        .await
        .unwrap();
    let r: Value = http
        .get(format!("{v}/v1/secret/data/a/b"))
        .bearer_auth("root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(r.get(k).is_some(), "envelope misses {k}");
    }
    assert_eq!(r["data"]["data"]["k"], "2");
    assert_eq!(r["data"]["metadata"]["version"], 2);
    let r1: Value = http
        .get(format!("{v}/v1/secret/data/a/b?version=1"))
        .bearer_auth("root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r1["data"]["data"]["k"], "1");
    let list = http
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            format!("{v}/v1/secret/metadata/a"),
        )
        .bearer_auth("root")
        .send()
        .await
        .unwrap();
    assert_eq!(
        list.json::<Value>().await.unwrap()["data"]["keys"],
        json!(["b"])
    );
    let list2: Value = http
        .get(format!("{v}/v1/secret/metadata/?list=true"))
        .bearer_auth("root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list2["data"]["keys"], json!(["a/"]));
    let d = http
        .delete(format!("{v}/v1/secret/data/a/b"))
        .bearer_auth("root")
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 204);
    let gone = http
        .get(format!("{v}/v1/secret/data/a/b"))
        .bearer_auth("root")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let gone: Value = gone.json().await.unwrap();
    assert!(gone["data"]["data"].is_null());
    assert!(
        !gone["data"]["metadata"]["deletion_time"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let meta: Value = http
        .get(format!("{v}/v1/secret/metadata/a/b"))
        .bearer_auth("root")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["data"]["current_version"], 2);
    let missing = http
        .get(format!("{v}/v1/secret/data/nope"))
        .bearer_auth("root")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap(),
        json!({"errors": []})
    );
    for token in [None, Some("wrong")] {
        let mut req = http.get(format!("{v}/v1/secret/data/a/b"));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"errors": ["permission denied"]})
        );
    }
    let health = http.get(format!("{v}/v1/sys/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    stack.shutdown().await;
}
