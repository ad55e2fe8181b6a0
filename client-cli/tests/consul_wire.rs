//! Request shapes of the Consul client, checked against wiremock: paths, query flags by
//! presence, headers, and how answers (404 with an index, txn 409) are decoded.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use jobforge_client::consul::watch::{WatchEvent, WatchOptions, watch_key};
use jobforge_client::consul::{
    Client, Config, ConsulError, DeleteOptions, PutOptions, QueryOptions, SessionRequest, TxnOp,
    TxnResult,
};
use serde_json::json;
use wiremock::matchers::{
    body_json, body_string, header, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn client(server: &MockServer) -> Client {
    Client::new(
        Config::new(&server.uri())
            .unwrap()
            .with_token("tok")
            .unwrap(),
    )
    .unwrap()
}

fn kv_body(key: &str, value_b64: &str, modify: u64) -> serde_json::Value {
    json!([{"LockIndex":0,"Key":key,"Flags":0,"Value":value_b64,"CreateIndex":1,"ModifyIndex":modify}])
}

#[tokio::test]
async fn get_on_missing_key_returns_the_index_and_none() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/jobforge/requests/a"))
        .and(header("X-Consul-Token", "tok"))
        .and(query_param_is_missing("index"))
        .respond_with(ResponseTemplate::new(404).insert_header("X-Consul-Index", "42"))
        .expect(1)
        .mount(&server)
        .await;
    let (index, pair) = client(&server)
        .kv_get("jobforge/requests/a", QueryOptions::default())
        .await
        .unwrap();
    assert_eq!((index, pair), (42, None));
}

#[tokio::test]
async fn blocking_get_sends_index_wait_and_consistent_by_presence() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/k"))
        .and(query_param("index", "7"))
        .and(query_param("wait", "2000ms"))
        .and(query_param("consistent", ""))
        .and(query_param_is_missing("stale"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Consul-Index", "9")
                .set_body_json(kv_body("k", "aGk=", 9)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let (index, pair) = client(&server)
        .kv_get(
            "k",
            QueryOptions::blocking(7, Duration::from_secs(2)).consistent(),
        )
        .await
        .unwrap();
    assert_eq!(index, 9);
    let pair = pair.unwrap();
    assert_eq!(pair.value, b"hi");
    assert_eq!(pair.modify_index, 9);
}

#[tokio::test]
async fn keys_are_percent_encoded_but_slashes_kept() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/v1/kv/a%20b/c%25d%3F"))
        .and(query_param("cas", "0"))
        .and(query_param("flags", "5"))
        .and(body_string("v"))
        .respond_with(ResponseTemplate::new(200).set_body_string("true"))
        .expect(1)
        .mount(&server)
        .await;
    let ok = client(&server)
        .kv_put(
            "/a b/c%d?",
            b"v",
            PutOptions {
                cas: Some(0),
                flags: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(ok);
}

#[tokio::test]
async fn list_recurses_and_missing_prefix_is_empty_with_index() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/p/"))
        .and(query_param("recurse", ""))
        .respond_with(ResponseTemplate::new(404).insert_header("X-Consul-Index", "3"))
        .mount(&server)
        .await;
    let (i, v) = client(&server)
        .kv_list("p/", QueryOptions::default())
        .await
        .unwrap();
    assert_eq!((i, v.len()), (3, 0));
}

#[tokio::test]
async fn keys_query_sends_separator() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/p/"))
        .and(query_param("keys", ""))
        .and(query_param("separator", "/"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Consul-Index", "4")
                .set_body_json(json!(["p/a", "p/b/"])),
        )
        .mount(&server)
        .await;
    let (i, keys) = client(&server)
        .kv_keys("p/", Some("/"), QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(i, 4);
    assert_eq!(keys, vec!["p/a".to_string(), "p/b/".to_string()]);
}

#[tokio::test]
async fn delete_sends_cas_and_returns_the_boolean() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/v1/kv/k"))
        .and(query_param("cas", "8"))
        .respond_with(ResponseTemplate::new(200).set_body_string("false"))
        .mount(&server)
        .await;
    let deleted = client(&server)
        .kv_delete(
            "k",
            DeleteOptions {
                cas: Some(8),
                recurse: false,
            },
        )
        .await
        .unwrap();
    assert!(!deleted);
}

#[tokio::test]
async fn txn_rollback_reports_op_index_and_reason() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/v1/txn"))
        .and(body_json(json!([
            {"KV": {"Verb": "check-session", "Key": "l", "Session": "s"}},
            {"KV": {"Verb": "cas", "Key": "k", "Value": "eA==", "Flags": 0, "Index": 3}}
        ])))
        .respond_with(ResponseTemplate::new(409).set_body_json(
            json!({"Results": null, "Errors": [{"OpIndex": 1, "What": "failed to set key \"k\", index is stale"}]}),
        ))
        .mount(&server)
        .await;
    let r = client(&server)
        .txn(&[
            TxnOp::CheckSession {
                key: "l".into(),
                session: "s".into(),
            },
            TxnOp::Cas {
                key: "k".into(),
                value: b"x".to_vec(),
                flags: 0,
                index: 3,
            },
        ])
        .await
        .unwrap();
    match r {
        TxnResult::RolledBack(e) => {
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].op_index, 1);
            assert!(e[0].what.contains("stale"));
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[tokio::test]
async fn session_create_sends_consul_field_names_and_renew_adopts_server_ttl() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/v1/session/create"))
        .and(body_json(
            json!({"Name": "n", "TTL": "10s", "LockDelay": "1s", "Behavior": "release"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ID": "abc"})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/session/renew/abc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!([{"ID": "abc", "Name": "n", "LockDelay": 1000000000u64, "Behavior": "release", "TTL": "20s", "CreateIndex": 5}]),
        ))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/session/renew/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_string("Session id 'gone' not found"))
        .mount(&server)
        .await;
    let c = client(&server);
    let id = c
        .session_create(&SessionRequest {
            name: Some("n".into()),
            ttl: Some(Duration::from_secs(10)),
            lock_delay: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(id, "abc");
    let info = c.session_renew("abc").await.unwrap().unwrap();
    assert_eq!(info.ttl, Some(Duration::from_secs(20)));
    assert!(c.session_renew("gone").await.unwrap().is_none());
}

#[tokio::test]
async fn server_errors_are_typed_and_transient() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).set_body_string("rpc error"))
        .mount(&server)
        .await;
    let e = client(&server)
        .kv_get("k", QueryOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, ConsulError::Status { code: 500, .. }), "{e}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn unreachable_agent_is_a_transport_error_naming_the_address() {
    let c = Client::new(Config::new("127.0.0.1:1").unwrap()).unwrap();
    let e = c.kv_get("k", QueryOptions::default()).await.unwrap_err();
    assert!(matches!(e, ConsulError::Transport { .. }), "{e}");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    assert!(e.is_transient());
}

/// Answers a blocking read on `k` with an index that goes backwards once (7 → 3): the watch must
/// then send `index=0` (non-blocking), and never an index below 1 afterwards.
#[tokio::test]
async fn watch_resets_index_to_zero_when_it_goes_backwards() {
    let server = MockServer::start().await;
    let answers = std::sync::Arc::new(std::sync::Mutex::new(vec![7u64, 7, 3, 5, 5, 5, 5, 5, 5]));
    let a2 = answers.clone();
    Mock::given(method("GET"))
        .and(path("/v1/kv/k"))
        .respond_with(move |_: &Request| {
            let mut a = a2.lock().unwrap();
            let idx = if a.len() > 1 { a.remove(0) } else { a[0] };
            ResponseTemplate::new(200)
                .insert_header("X-Consul-Index", idx.to_string().as_str())
                .set_body_json(kv_body("k", "aGk=", idx))
        })
        .mount(&server)
        .await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let opts = WatchOptions {
        wait: Duration::from_millis(100),
        rate_per_sec: 100.0,
        cancel: cancel.clone(),
        ..Default::default()
    };
    let mut s = Box::pin(watch_key(client(&server), "k", opts));
    let first = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, WatchEvent::Initial { index: 7, .. }),
        "{first:?}"
    );
    // 7 → 3 is a change of ModifyIndex (Modified), then 3 → 5.
    let mut seen = vec![];
    while seen.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap();
        if let WatchEvent::Modified(p) = ev {
            seen.push(p.modify_index);
        }
    }
    assert_eq!(seen, vec![3, 5]);
    // Unchanged answers yield nothing; let the watch make a few more (blocking) requests.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.next())
            .await
            .is_err()
    );
    cancel.cancel();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .is_none()
    );
    let indexes: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "index")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| "absent".into())
        })
        .collect();
    // First read without index; then 7, 7 (no change), then after 3 < 7 the index resets (absent = 0), then 5.
    assert_eq!(
        &indexes[..5],
        &["absent", "7", "7", "absent", "5"],
        "{indexes:?}"
    );
}

fn txn_mock(status: u16, body: serde_json::Value) -> Mock {
    Mock::given(method("PUT"))
        .and(path("/v1/txn"))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
}

#[tokio::test]
async fn fence_maps_a_failed_session_check_to_not_leader_and_a_failed_cas_to_conflict() {
    use jobforge_client::consul::leader::{Fence, FencedDelete, FencedWrite};
    let server = MockServer::start().await;
    let fence = Fence::new(client(&server), "jobforge/leader", "s1");

    txn_mock(
        409,
        json!({"Errors": [{"OpIndex": 0, "What": "failed session check"}]}),
    )
    .up_to_n_times(1)
    .mount(&server)
    .await;
    assert_eq!(
        fence.cas_put("st/k", b"v", 4).await.unwrap(),
        FencedWrite::NotLeader
    );

    txn_mock(
        409,
        json!({"Errors": [{"OpIndex": 1, "What": "index is stale"}]}),
    )
    .up_to_n_times(1)
    .mount(&server)
    .await;
    assert_eq!(
        fence.cas_put("st/k", b"v", 4).await.unwrap(),
        FencedWrite::Conflict
    );

    txn_mock(
        200,
        json!({"Results": [
            {"KV": {"Key": "jobforge/leader", "Value": null, "Flags": 0, "Session": "s1", "LockIndex": 1, "CreateIndex": 2, "ModifyIndex": 2}},
            {"KV": {"Key": "st/k", "Value": null, "Flags": 0, "LockIndex": 0, "CreateIndex": 3, "ModifyIndex": 11}}
        ], "Errors": null}),
    )
    .up_to_n_times(1)
    .mount(&server)
    .await;
    assert_eq!(
        fence.cas_put("st/k", b"v", 4).await.unwrap(),
        FencedWrite::Committed { modify_index: 11 }
    );

    txn_mock(
        409,
        json!({"Errors": [{"OpIndex": 0, "What": "failed session check"}]}),
    )
    .up_to_n_times(1)
    .mount(&server)
    .await;
    assert_eq!(
        fence.delete("st/k", Some(11)).await.unwrap(),
        FencedDelete::NotLeader
    );

    // Every request was one txn whose first op checks the session on the leader key.
    for r in server.received_requests().await.unwrap() {
        let ops: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            ops[0],
            json!({"KV": {"Verb": "check-session", "Key": "jobforge/leader", "Session": "s1"}})
        );
    }
}

#[tokio::test]
async fn watch_announces_restarts_and_recovers_after_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/p/"))
        .respond_with(ResponseTemplate::new(500).set_body_string("no leader"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/p/"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Consul-Index", "5")
                .set_body_json(kv_body("p/a", "aGk=", 5))
                .set_delay(Duration::from_millis(50)),
        )
        .mount(&server)
        .await;
    let opts = WatchOptions {
        wait: Duration::from_millis(200),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..Default::default()
    };
    let mut s = Box::pin(jobforge_client::consul::watch::watch_prefix(
        client(&server),
        "p/",
        opts,
    ));
    let mut restarts = 0;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Restarting { transient, .. } => {
                assert!(transient);
                restarts += 1;
            }
            WatchEvent::Initial { index, pairs } => {
                assert_eq!((index, pairs.len()), (5, 1));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(restarts, 2);
}

/// After an error the watch must not block from its old index: Consul may come back unchanged
/// and a blocking read would then say nothing for a whole `wait`. The request after the error
/// carries no `index`, and `Resumed` follows its answer at once, with no spurious change events.
#[tokio::test]
async fn watch_reads_without_index_after_an_error_and_announces_resumed_at_once() {
    let server = MockServer::start().await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = calls.clone();
    Mock::given(method("GET"))
        .and(path("/v1/kv/p/"))
        .respond_with(move |r: &Request| {
            let n = c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let ok = ResponseTemplate::new(200)
                .insert_header("X-Consul-Index", "5")
                .set_body_json(kv_body("p/a", "aGk=", 5));
            match n {
                0 => ok,
                1 => ResponseTemplate::new(500).set_body_string("No cluster leader"),
                // Unchanged Consul: a blocking read from index 5 would hold for the whole wait.
                _ if r.url.query_pairs().any(|(k, _)| k == "index") => {
                    ok.set_delay(Duration::from_secs(60))
                }
                _ => ok,
            }
        })
        .mount(&server)
        .await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let opts = WatchOptions {
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        cancel: cancel.clone(),
        ..Default::default()
    };
    let mut s = Box::pin(jobforge_client::consul::watch::watch_prefix(
        client(&server),
        "p/",
        opts,
    ));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("the watch reported within 5 s")
            .expect("stream open")
    };
    assert!(matches!(next().await, WatchEvent::Initial { index: 5, .. }));
    assert!(matches!(next().await, WatchEvent::Restarting { .. }));
    let ev = next().await;
    assert_eq!(ev, WatchEvent::Resumed { index: 5 }, "no change events");
    cancel.cancel();
    let requests = server.received_requests().await.unwrap();
    let has_index = |i: usize| requests[i].url.query_pairs().any(|(k, _)| k == "index");
    assert!(has_index(1), "the read before the error blocked from 5");
    assert!(
        !has_index(2),
        "the read after the error must not block: {}",
        requests[2].url
    );
}
