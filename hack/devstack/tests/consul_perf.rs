//! Throughput of the Consul emulator: the controller's benchmarks send 10,000 requests in at most
//! 20 s, and with `--data-dir` every write must be durable before its answer (group commit keeps
//! that fast).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobforge_devstack::{DevStack, DevStackConfig};

async fn run(url: Arc<String>, workers: usize, per_worker: usize, read_every: usize) -> Duration {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_worker {
                let read = read_every > 0 && i % read_every == 1;
                // A read targets the key the previous iteration wrote.
                let slot = if read { (i - 1) % 20 } else { i % 20 };
                let key = format!("{url}/v1/kv/perf/{w}/{slot}");
                let r = if read {
                    http.get(&key).send().await.expect("get")
                } else {
                    http.put(&key)
                        .body(format!("v{i}"))
                        .send()
                        .await
                        .expect("put")
                };
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_complete_within_twenty_seconds() {
    let stack = DevStack::start(DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        ..DevStackConfig::ephemeral()
    })
    .await
    .expect("start");
    let took = run(Arc::new(stack.consul_url()), 50, 200, 2).await;
    stack.shutdown().await;
    assert!(
        took < Duration::from_secs(20),
        "10,000 requests took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_with_data_dir_are_group_committed_and_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        data_dir: Some(dir.path().to_path_buf()),
        ..DevStackConfig::ephemeral()
    };
    let stack = DevStack::start(cfg.clone()).await.expect("start");
    let took = run(Arc::new(stack.consul_url()), 20, 100, 0).await;
    let index = stack.consul.as_ref().expect("consul").raft_index();
    stack.shutdown().await;
    assert!(
        took < Duration::from_secs(20),
        "2,000 durable writes took {took:?}"
    );
    let stack = DevStack::start(cfg).await.expect("restart");
    let consul = stack.consul.clone().expect("consul");
    assert_eq!(
        consul.raft_index(),
        index,
        "every acknowledged write survived"
    );
    assert_eq!(consul.kv_len(), 20 * 20);
    drop(consul);
    stack.shutdown().await;
}
