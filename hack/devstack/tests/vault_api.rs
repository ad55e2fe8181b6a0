//! Integration tests of the Vault emulator over HTTP: KV v2 envelope, CAS, versions, soft delete,
//! LIST, Vault's 403/404 bodies, ACL policies and tokens.
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
            json!({"errors": ["1 error occurred:\n\t* permission denied\n\n"]})
        );
    }
    let health = http.get(format!("{v}/v1/sys/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    stack.shutdown().await;
}

const DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";

struct V {
    stack: DevStack,
    url: String,
    http: reqwest::Client,
}

impl V {
    async fn start() -> V {
        let stack = DevStack::start(DevStackConfig::ephemeral()).await.unwrap();
        let url = stack.vault_url();
        V {
            stack,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.url))
            .header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn policy(&self, name: &str, hcl: &str) {
        let (s, b) = self
            .call(
                "PUT",
                &format!("sys/policies/acl/{name}"),
                "root",
                Some(json!({"policy": hcl})),
            )
            .await;
        assert_eq!(s, 204, "{b}");
    }

    async fn token(&self, parent: &str, body: Value) -> String {
        let (s, b) = self
            .call("POST", "auth/token/create", parent, Some(body))
            .await;
        assert_eq!(s, 200, "{b}");
        b["auth"]["client_token"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn globs_plus_segments_and_deny_decide_kv_access_over_http() {
    let v = V::start().await;
    v.policy(
        "team",
        r#"
        path "secret/data/jobforge/*" { capabilities = ["read"] }
        path "secret/data/jobforge/+/ci" { capabilities = ["read", "create", "update"] }
        path "secret/data/jobforge/team-b/*" { capabilities = ["deny"] }
        path "secret/metadata/jobforge/*" { capabilities = ["list"] }
        "#,
    )
    .await;
    for p in ["jobforge/team-a/git", "jobforge/team-b/git", "other/git"] {
        let (s, _) = v
            .call(
                "POST",
                &format!("secret/data/{p}"),
                "root",
                Some(json!({"data": {"k": p}})),
            )
            .await;
        assert_eq!(s, 200);
    }
    let t = v.token("root", json!({"policies": ["team"]})).await;
    let read = |p: &'static str| {
        let v = &v;
        let t = t.clone();
        async move { v.call("GET", &format!("secret/data/{p}"), &t, None).await }
    };
    assert_eq!(read("jobforge/team-a/git").await.0, 200);
    let (s, body) = read("jobforge/team-b/git").await;
    assert_eq!((s, body), (403, json!({"errors": [DENIED]})), "deny wins");
    assert_eq!(read("other/git").await.0, 403);
    // Not found is only told to a token that may read the path.
    assert_eq!(read("jobforge/team-a/nothing").await.0, 404);
    assert_eq!(read("other/nothing").await.0, 403);
    // `+/ci` grants create on a new secret, the glob alone does not.
    let w = |p: &'static str| {
        let v = &v;
        let t = t.clone();
        async move {
            v.call(
                "POST",
                &format!("secret/data/{p}"),
                &t,
                Some(json!({"data": {"k": 1}})),
            )
            .await
            .0
        }
    };
    assert_eq!(w("jobforge/team-a/ci").await, 200);
    assert_eq!(w("jobforge/team-a/git").await, 403);
    assert_eq!(
        w("jobforge/team-b/ci").await,
        403,
        "deny still wins: it sorts higher"
    );
    let (s, keys) = v.call("LIST", "secret/metadata/jobforge", &t, None).await;
    assert_eq!(
        (s, keys["data"]["keys"].clone()),
        (200, json!(["team-a/", "team-b/"]))
    );
    assert_eq!(
        v.call("LIST", "secret/metadata/other", &t, None).await.0,
        403
    );
    v.stack.shutdown().await;
}

#[tokio::test]
async fn tokens_expire_with_their_ttl_and_revocation_reaches_children() {
    let v = V::start().await;
    v.policy(
        "p",
        r#"
        path "secret/data/p/*" { capabilities = ["read"] }
        path "auth/token/create" { capabilities = ["update"] }
        "#,
    )
    .await;
    let short = v
        .token("root", json!({"policies": ["p"], "ttl": "1s"}))
        .await;
    let (s, me) = v.call("GET", "auth/token/lookup-self", &short, None).await;
    assert_eq!(s, 200);
    assert!(me["data"]["ttl"].as_i64().unwrap() <= 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (s, body) = v.call("GET", "auth/token/lookup-self", &short, None).await;
        if s == 403 {
            assert_eq!(body, json!({"errors": [DENIED]}));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 1s token never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let parent = v.token("root", json!({"policies": ["p"]})).await;
    let child = v.token(&parent, json!({})).await;
    let (_, me) = v.call("GET", "auth/token/lookup-self", &child, None).await;
    assert_eq!(me["data"]["policies"], json!(["default", "p"]), "inherited");
    let (s, _) = v
        .call(
            "POST",
            "auth/token/create",
            &parent,
            Some(json!({"policies": ["other"]})),
        )
        .await;
    assert_eq!(s, 400, "not a subset of the parent's policies");
    let (s, _) = v
        .call("POST", "auth/token/revoke-self", &parent, None)
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        v.call("GET", "auth/token/lookup-self", &child, None)
            .await
            .0,
        403
    );
    // The default policy: a token looks itself up but reads nothing else.
    let plain = v.token("root", json!({"policies": ["default"]})).await;
    assert_eq!(
        v.call("GET", "auth/token/lookup-self", &plain, None)
            .await
            .0,
        200
    );
    assert_eq!(
        v.call("GET", "sys/policies/acl/default", &plain, None)
            .await
            .0,
        403
    );
    assert_eq!(
        v.call("LIST", "sys/policies/acl", &plain, None).await.0,
        403
    );
    assert_eq!(v.call("GET", "sys/mounts", &plain, None).await.0, 403);
    let (s, _) = v
        .call("POST", "auth/token/create", &plain, Some(json!({})))
        .await;
    assert_eq!(s, 403, "the default policy does not allow creating tokens");
    v.stack.shutdown().await;
}

#[tokio::test]
async fn the_shipped_policies_give_tasks_and_the_controller_what_they_need_only() {
    let v = V::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy");
    // The namespace template, loaded as hack/vault-team-policy.sh loads it.
    let team = std::fs::read_to_string(root.join("vault-policy-namespace.hcl"))
        .unwrap()
        .replace("<namespace>", "team-a");
    v.policy("jobforge-team-a", &team).await;
    v.policy(
        "jobforge-controller",
        &std::fs::read_to_string(root.join("vault-policy-controller.hcl")).unwrap(),
    )
    .await;
    for path in [
        "secret/data/jobforge/team-a/git",
        "secret/data/jobforge/team-b/git",
    ] {
        let (s, _) = v
            .call("POST", path, "root", Some(json!({"data": {"k": 1}})))
            .await;
        assert_eq!(s, 200);
    }
    let t = v
        .token("root", json!({"policies": ["jobforge-team-a"]}))
        .await;
    assert_eq!(
        v.call("GET", "secret/data/jobforge/team-b/git", &t, None)
            .await
            .0,
        403,
        "a team's tasks read no other team's secrets"
    );
    for policy in ["jobforge-team-a", "jobforge-controller"] {
        let t = v.token("root", json!({"policies": [policy]})).await;
        assert_eq!(
            v.call("GET", "secret/data/jobforge/team-a/git", &t, None)
                .await
                .0,
            200,
            "{policy}"
        );
        let (s, _) = v
            .call(
                "POST",
                "secret/data/jobforge/team-a/git",
                &t,
                Some(json!({"data": {"k": 2}})),
            )
            .await;
        assert_eq!(s, 403, "{policy} may not write secrets");
        assert_eq!(
            v.call("GET", "secret/data/elsewhere", &t, None).await.0,
            403
        );
        assert_eq!(
            v.call("PUT", "sys/policies/acl/x", &t, Some(json!({"policy": ""})))
                .await
                .0,
            403
        );
    }
    v.stack.shutdown().await;
}
