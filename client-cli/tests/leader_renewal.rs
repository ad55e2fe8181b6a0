//! A leader whose renewals keep failing steps down once TTL has passed since the last success
//! (hashicorp/consul `api/lock.go`: renew every TTL/2, retry each 1 s until TTL), not before.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use jobforge_client::consul::leader::{LeaderConfig, LeaderState, Leadership};
use jobforge_client::consul::{Client, Config};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

#[tokio::test]
async fn leader_steps_down_when_renewals_fail_for_a_whole_ttl() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/v1/session/create"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ID": "s1"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/session/create"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ID": "s2"})))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/session/renew/s1"))
        .respond_with(ResponseTemplate::new(500).set_body_string("rpc error: no leader"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/session/destroy/s1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("true"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/v1/kv/l"))
        .respond_with(ResponseTemplate::new(200).set_body_string("true"))
        .mount(&server)
        .await;
    // First read: the key is free.
    Mock::given(method("GET"))
        .and(path("/v1/kv/l"))
        .and(query_param_is_missing("index"))
        .respond_with(ResponseTemplate::new(404).insert_header("X-Consul-Index", "1"))
        .mount(&server)
        .await;
    // Blocking reads afterwards: the key stays held by s1 (the server still thinks it is alive).
    Mock::given(method("GET"))
        .and(path("/v1/kv/l"))
        .respond_with(|_: &Request| {
            ResponseTemplate::new(200)
                .insert_header("X-Consul-Index", "2")
                .set_body_json(
                    json!([{"Key": "l", "Value": null, "Flags": 0, "Session": "s1",
                    "LockIndex": 1, "CreateIndex": 2, "ModifyIndex": 2}]),
                )
                .set_delay(Duration::from_millis(500))
        })
        .mount(&server)
        .await;

    let client = Client::new(Config::new(&server.uri()).unwrap()).unwrap();
    let mut cfg = LeaderConfig::new("l", b"me".to_vec());
    cfg.ttl = Duration::from_secs(10);
    cfg.lock_delay = Duration::from_secs(1);
    let started = Instant::now();
    let l = Leadership::start(client, cfg, CancellationToken::new()).unwrap();
    let mut rx = l.subscribe();
    tokio::time::timeout(Duration::from_secs(3), rx.wait_for(LeaderState::is_leader))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|s| !s.is_leader()))
        .await
        .expect("still leader 15 s after renewals started failing")
        .unwrap();
    let stepped_down = started.elapsed();
    assert!(
        stepped_down >= Duration::from_millis(9500),
        "stepped down after {stepped_down:?}, before the TTL"
    );
    assert!(stepped_down < Duration::from_secs(12), "{stepped_down:?}");
    // It replaced the session and now stands by behind the (server-side) holder s1.
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|s| matches!(s, LeaderState::Standby { session, .. } if session == "s2")),
    )
    .await
    .unwrap()
    .unwrap();
    let renews = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/session/renew/s1")
        .count();
    // First renewal at TTL/2 (5 s), then one retry per second until TTL: about 5 attempts.
    assert!((4..=7).contains(&renews), "{renews} renewal attempts");
    l.shutdown().await;
}
