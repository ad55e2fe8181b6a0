//! Request counters: Consul's `GET /v1/agent/metrics` and Nomad's `GET /v1/metrics` count every
//! request by method and route (go-metrics JSON), and not requests to themselves.

#![allow(clippy::unwrap_used)]

use jobforge_devstack::{DevStack, DevStackConfig};
use serde_json::Value;

async fn count(http: &reqwest::Client, url: &str, name: &str) -> u64 {
    let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    v["Counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Name"] == name)
        .and_then(|c| c["Count"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_counted_by_method_and_route_except_metrics_reads() {
    let stack = DevStack::start(DevStackConfig {
        vault_addr: None,
        ..DevStackConfig::ephemeral()
    })
    .await
    .expect("start");
    let http = reqwest::Client::new();
    let consul = stack.consul_url();
    let nomad = stack.nomad_url();
    let cm = format!("{consul}/v1/agent/metrics");
    let nm = format!("{nomad}/v1/metrics");

    for i in 0..3 {
        let r = http
            .put(format!("{consul}/v1/kv/a/{i}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    http.get(format!("{consul}/v1/kv/a/0"))
        .send()
        .await
        .unwrap();
    http.get(format!("{consul}/v1/no/such/route"))
        .send()
        .await
        .unwrap();
    http.get(format!("{nomad}/v1/jobs")).send().await.unwrap();
    http.get(format!("{nomad}/v1/job/x/allocations"))
        .send()
        .await
        .unwrap();

    assert_eq!(count(&http, &cm, "consul.http.PUT.v1.kv._").await, 3);
    assert_eq!(count(&http, &cm, "consul.http.GET.v1.kv._").await, 1);
    assert_eq!(count(&http, &cm, "consul.http.GET.unmatched").await, 1);
    assert_eq!(count(&http, &nm, "nomad.http.GET.v1.jobs").await, 1);
    assert_eq!(
        count(&http, &nm, "nomad.http.GET.v1.job._.allocations").await,
        1
    );
    // Reading the metrics (four times above) is not counted.
    let v: Value = http.get(&cm).send().await.unwrap().json().await.unwrap();
    assert!(
        !v["Counters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Name"].as_str().unwrap().contains("metrics")),
        "{v:#}"
    );
    stack.shutdown().await;
}
