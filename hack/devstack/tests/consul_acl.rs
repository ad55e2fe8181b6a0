//! Consul ACL enforcement of the emulator over HTTP: ACL endpoints, KV, txn, sessions and locks,
//! the three ways a token travels, and the answers Consul gives (`agent/http.go`,
//! `agent/consul/{kvs,txn,session}_endpoint.go`, `acl/errors.go`).

use jobforge_devstack::{DevStack, DevStackConfig};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const ROOT: &str = "root-secret";

struct Acl {
    stack: DevStack,
    http: Client,
}

impl Acl {
    async fn start(acl: bool) -> Acl {
        let stack = DevStack::start(DevStackConfig {
            nomad_addr: None,
            vault_addr: None,
            consul_acl_initial_management: acl.then(|| ROOT.to_string()),
            ..DevStackConfig::ephemeral()
        })
        .await
        .expect("start consul");
        Acl {
            stack,
            http: Client::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, String) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.stack.consul_url()));
        if let Some(t) = token {
            r = r.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        (status, resp.text().await.expect("body"))
    }

    async fn ok_json(&self, method: Method, path: &str, token: Option<&str>, body: Value) -> Value {
        let (s, b) = self
            .call(method, path, token, Some(body.to_string().into_bytes()))
            .await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        serde_json::from_str(&b).expect("json")
    }

    /// A policy with `rules` and a token linked to it by name; returns the token's secret.
    async fn token_with(&self, name: &str, rules: &str) -> String {
        self.ok_json(
            Method::PUT,
            "/v1/acl/policy",
            Some(ROOT),
            json!({"Name": name, "Rules": rules}),
        )
        .await;
        let t = self
            .ok_json(
                Method::PUT,
                "/v1/acl/token",
                Some(ROOT),
                json!({"Description": name, "Policies": [{"Name": name}]}),
            )
            .await;
        t["SecretID"].as_str().expect("secret").to_string()
    }

    async fn put(&self, key: &str, token: Option<&str>) -> (StatusCode, String) {
        self.call(
            Method::PUT,
            &format!("/v1/kv/{key}"),
            token,
            Some(b"v".to_vec()),
        )
        .await
    }
}

const TEAM_A: &str = r#"
key_prefix "app/team-a/" { policy = "write" }
key "app/shared" { policy = "read" }
session_prefix "" { policy = "write" }
"#;

#[tokio::test]
async fn acls_are_off_by_default_like_a_dev_agent() {
    let s = Acl::start(false).await;
    assert_eq!(s.put("any/key", None).await.0, StatusCode::OK);
    let (status, body) = s.call(Method::GET, "/v1/acl/policies", None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "ACL support disabled")
    );
    s.stack.shutdown().await;
}

#[tokio::test]
async fn policy_and_token_endpoints_round_trip() {
    let s = Acl::start(true).await;
    let p = s
        .ok_json(
            Method::PUT,
            "/v1/acl/policy",
            Some(ROOT),
            json!({"Name": "team-a", "Description": "d", "Rules": TEAM_A}),
        )
        .await;
    let id = p["ID"].as_str().expect("id").to_string();
    assert_eq!(p["Rules"], TEAM_A);
    let (st, by_id) = s
        .call(
            Method::GET,
            &format!("/v1/acl/policy/{id}"),
            Some(ROOT),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(by_id.contains("\"team-a\""), "{by_id}");
    let (st, by_name) = s
        .call(Method::GET, "/v1/acl/policy/name/team-a", Some(ROOT), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{by_name}");
    let (_, list) = s
        .call(Method::GET, "/v1/acl/policies", Some(ROOT), None)
        .await;
    let list: Value = serde_json::from_str(&list).expect("json");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["Name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"global-management") && names.contains(&"team-a"));

    let t = s
        .ok_json(
            Method::PUT,
            "/v1/acl/token",
            Some(ROOT),
            json!({"Policies": [{"ID": id}]}),
        )
        .await;
    let secret = t["SecretID"].as_str().expect("secret");
    let accessor = t["AccessorID"].as_str().expect("accessor");
    let (st, me) = s
        .call(Method::GET, "/v1/acl/token/self", Some(secret), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{me}");
    let me: Value = serde_json::from_str(&me).expect("json");
    assert_eq!(me["AccessorID"], accessor);
    assert_eq!(me["Policies"][0]["Name"], "team-a");
    // The team token may not manage ACLs.
    let (st, body) = s
        .call(Method::GET, "/v1/acl/tokens", Some(secret), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("lacks permission 'acl:read'"), "{body}");
    // Deleting the policy takes the token's grants away.
    assert_eq!(s.put("app/team-a/x", Some(secret)).await.0, StatusCode::OK);
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/acl/policy/{id}"),
            Some(ROOT),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        s.put("app/team-a/x", Some(secret)).await.0,
        StatusCode::FORBIDDEN
    );
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/v1/acl/token/{accessor}"),
            Some(ROOT),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = s.put("app/team-a/x", Some(secret)).await;
    assert_eq!(
        (st, body.as_str()),
        (StatusCode::FORBIDDEN, "ACL not found")
    );
    s.stack.shutdown().await;
}

#[tokio::test]
async fn kv_reads_and_writes_follow_the_token_policy() {
    let s = Acl::start(true).await;
    let team = s.token_with("team-a", TEAM_A).await;
    for k in [
        "app/team-a/one",
        "app/team-b/two",
        "app/shared",
        "app/team-a/sub/three",
    ] {
        assert_eq!(s.put(k, Some(ROOT)).await.0, StatusCode::OK);
    }
    // Inside the prefix: read and write.
    assert_eq!(s.put("app/team-a/new", Some(&team)).await.0, StatusCode::OK);
    // Read-only key and other team: 403 with Consul's text.
    let (st, body) = s.put("app/shared", Some(&team)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        body.starts_with("Permission denied: token with AccessorID '")
            && body.ends_with("' lacks permission 'key:write' on \"app/shared\""),
        "{body}"
    );
    let (st, _) = s
        .call(Method::GET, "/v1/kv/app/team-b/two", Some(&team), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Even a missing key is 403, not 404, without read permission.
    let (st, _) = s
        .call(Method::GET, "/v1/kv/app/team-b/missing", Some(&team), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Recursive reads drop what the token cannot read.
    let (st, body) = s
        .call(Method::GET, "/v1/kv/app/?recurse", Some(&team), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let keys: Vec<String> = serde_json::from_str::<Vec<Value>>(&body)
        .expect("json")
        .iter()
        .filter_map(|e| e["Key"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        keys,
        [
            "app/shared",
            "app/team-a/new",
            "app/team-a/one",
            "app/team-a/sub/three"
        ]
    );
    let filtered = s
        .http
        .get(format!("{}/v1/kv/app/?recurse", s.stack.consul_url()))
        .header("X-Consul-Token", &team)
        .send()
        .await
        .expect("send");
    assert_eq!(
        filtered
            .headers()
            .get("x-consul-results-filtered-by-acls")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let (_, body) = s
        .call(
            Method::GET,
            "/v1/kv/app/?keys&separator=/",
            Some(&team),
            None,
        )
        .await;
    assert_eq!(body, r#"["app/shared","app/team-a/"]"#);
    // Nothing readable under a prefix: 404, as for an empty prefix.
    let (st, _) = s
        .call(Method::GET, "/v1/kv/app/team-b/?recurse", Some(&team), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // A recursive delete needs write on everything under the prefix.
    let (st, _) = s
        .call(Method::DELETE, "/v1/kv/app/?recurse", Some(&team), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call(
            Method::DELETE,
            "/v1/kv/app/team-a/?recurse",
            Some(&team),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        s.stack
            .consul
            .as_ref()
            .expect("state")
            .kv_entry("app/team-b/two")
            .is_some()
    );
    s.stack.shutdown().await;
}

#[tokio::test]
async fn the_token_travels_as_header_query_or_bearer_and_defaults_to_anonymous() {
    let s = Acl::start(true).await;
    let team = s.token_with("team-a", TEAM_A).await;
    let url = |p: &str| format!("{}{p}", s.stack.consul_url());
    let status = |r: reqwest::Response| r.status();
    let q = s
        .http
        .put(url(&format!("/v1/kv/app/team-a/q?token={team}")))
        .body("v")
        .send()
        .await
        .expect("send");
    assert_eq!(status(q), StatusCode::OK);
    let b = s
        .http
        .put(url("/v1/kv/app/team-a/b"))
        .bearer_auth(&team)
        .body("v")
        .send()
        .await
        .expect("send");
    assert_eq!(status(b), StatusCode::OK);
    let (st, body) = s.put("app/team-a/anon", None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        body.starts_with("Permission denied: anonymous token lacks permission 'key:write'"),
        "{body}"
    );
    // The status endpoints check no token, as Consul's.
    let (st, _) = s
        .call(Method::GET, "/v1/status/leader", Some("bogus"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.call(Method::GET, "/v1/agent/self", None, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    s.stack.shutdown().await;
}

#[tokio::test]
async fn a_txn_with_a_denied_op_fails_whole_and_names_every_denied_op() {
    let s = Acl::start(true).await;
    let team = s.token_with("team-a", TEAM_A).await;
    assert_eq!(s.put("app/team-b/two", Some(ROOT)).await.0, StatusCode::OK);
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "app/team-a/t", "Value": "YQ=="}},
        {"KV": {"Verb": "set", "Key": "app/team-b/t", "Value": "Yg=="}},
        {"KV": {"Verb": "check-index", "Key": "app/team-b/two", "Index": 1}},
        {"KV": {"Verb": "get", "Key": "app/team-b/two"}},
    ]);
    let (st, body) = s
        .call(
            Method::PUT,
            "/v1/txn",
            Some(&team),
            Some(ops.to_string().into_bytes()),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["Results"], Value::Null);
    let errs = v["Errors"].as_array().expect("errors");
    let idx: Vec<u64> = errs.iter().filter_map(|e| e["OpIndex"].as_u64()).collect();
    assert_eq!(idx, [1, 2], "{body}");
    assert!(
        errs[1]["What"]
            .as_str()
            .unwrap_or_default()
            .contains("'key:read'")
    );
    assert!(
        s.stack
            .consul
            .as_ref()
            .expect("state")
            .kv_entry("app/team-a/t")
            .is_none()
    );
    // Reads of unreadable keys are dropped from the results, not refused.
    let ops = json!([
        {"KV": {"Verb": "set", "Key": "app/team-a/t", "Value": "YQ=="}},
        {"KV": {"Verb": "get", "Key": "app/team-b/two"}},
    ]);
    let (st, body) = s
        .call(
            Method::PUT,
            "/v1/txn",
            Some(&team),
            Some(ops.to_string().into_bytes()),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["Results"].as_array().map(Vec::len), Some(1), "{body}");
    s.stack.shutdown().await;
}

#[tokio::test]
async fn sessions_need_session_write_and_locks_need_key_write() {
    let s = Acl::start(true).await;
    let team = s.token_with("team-a", TEAM_A).await;
    let no_sessions = s
        .token_with(
            "kv-only",
            r#"key_prefix "app/team-a/" { policy = "write" }"#,
        )
        .await;
    let (st, body) = s
        .call(
            Method::PUT,
            "/v1/session/create",
            Some(&no_sessions),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        body.ends_with("lacks permission 'session:write' on \"jobforge-devstack\""),
        "{body}"
    );
    let sid = s
        .ok_json(
            Method::PUT,
            "/v1/session/create",
            Some(&team),
            json!({"TTL": "30s"}),
        )
        .await["ID"]
        .as_str()
        .expect("id")
        .to_string();
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/kv/app/team-a/lock?acquire={sid}"),
            Some(&team),
            None,
        )
        .await;
    assert_eq!((st, body.as_str()), (StatusCode::OK, "true"));
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/kv/app/shared?acquire={sid}"),
            Some(&team),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Renew and destroy need session:write on the session's node too.
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/session/renew/{sid}"),
            Some(&no_sessions),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A token without session:read sees no sessions.
    let (_, list) = s
        .call(Method::GET, "/v1/session/list", Some(&no_sessions), None)
        .await;
    assert_eq!(list, "[]");
    let (_, list) = s
        .call(Method::GET, "/v1/session/list", Some(&team), None)
        .await;
    assert!(list.contains(&sid), "{list}");
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/session/destroy/{sid}"),
            Some(&team),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    s.stack.shutdown().await;
}

#[tokio::test]
async fn invalid_policies_are_refused_with_the_reason() {
    let s = Acl::start(true).await;
    let (st, body) = s
        .call(
            Method::PUT,
            "/v1/acl/policy",
            Some(ROOT),
            Some(
                json!({"Name": "bad", "Rules": "key_prefix \"a\" { policy = \"sudo\" }"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("Invalid key_prefix policy"), "{body}");
    let (st, body) = s
        .call(
            Method::PUT,
            "/v1/acl/token",
            Some(ROOT),
            Some(
                json!({"Policies": [{"Name": "nope"}]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.contains("No such ACL policy with name \"nope\""),
        "{body}"
    );
    s.stack.shutdown().await;
}

#[tokio::test]
async fn services_need_service_write_and_lists_show_only_readable_services() {
    let s = Acl::start(true).await;
    let svc = s
        .token_with(
            "jobforge-svc",
            r#"service_prefix "jobforge" { policy = "write" }
node_prefix "" { policy = "read" }"#,
        )
        .await;
    let kv_only = s.token_with("kv-only", TEAM_A).await;
    let body = |name: &str| {
        Some(
            json!({"Name": name, "ID": format!("{name}-1"), "Check": {"TTL": "30s", "Status": "passing"}})
                .to_string()
                .into_bytes(),
        )
    };
    let (st, text) = s
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(&kv_only),
            body("jobforge"),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{text}");
    assert!(
        text.ends_with("lacks permission 'service:write' on \"jobforge\""),
        "{text}"
    );
    let (st, text) = s
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(&svc),
            body("jobforge"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{text}");
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(&svc),
            body("other"),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/agent/service/register",
            Some(ROOT),
            body("other"),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // Lists drop what the token cannot read.
    let (_, listed) = s
        .call(Method::GET, "/v1/catalog/services", Some(&svc), None)
        .await;
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert!(
        listed.get("jobforge").is_some() && listed.get("other").is_none(),
        "{listed}"
    );
    let (_, listed) = s
        .call(Method::GET, "/v1/agent/services", Some(&kv_only), None)
        .await;
    assert_eq!(listed.trim(), "{}");
    // Deregistering needs service:write on the registered service's name; unknown IDs are 404.
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/agent/service/deregister/other-1",
            Some(&svc),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, text) = s
        .call(
            Method::PUT,
            "/v1/agent/service/deregister/nope",
            Some(ROOT),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(text.starts_with("Unknown service ID \"nope\""), "{text}");
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/agent/service/deregister/jobforge-1",
            Some(&svc),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
}
