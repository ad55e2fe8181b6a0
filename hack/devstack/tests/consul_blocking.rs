//! Blocking-query edge cases of the Consul emulator (`api/features/blocking.mdx`), over plain
//! reqwest against an in-process dev stack that runs only Consul on port 0: a fresh store's first
//! write wakes a read from the 404's index, a prefix query ignores writes outside its prefix, and
//! an `index` above the current one blocks rather than answering at once.

use std::time::{Duration, Instant};

use jobforge_devstack::{DevStack, DevStackConfig};

struct Consul {
    stack: DevStack,
    url: String,
    http: reqwest::Client,
}

impl Consul {
    async fn start() -> Consul {
        let stack = DevStack::start(DevStackConfig {
            nomad_addr: None,
            vault_addr: None,
            ..DevStackConfig::ephemeral()
        })
        .await
        .expect("start consul emulator");
        let url = stack.consul_url();
        Consul {
            stack,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET")
    }

    async fn put(&self, key: &str, body: &'static str) {
        let r = self
            .http
            .put(format!("{}/v1/kv/{key}", self.url))
            .body(body)
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 200, "PUT {key}");
        assert!(r.json::<bool>().await.expect("bool body"), "PUT {key}");
    }

    /// Waits (bounded) until `n` blocking queries are registered, so a following write cannot
    /// land before the query started waiting.
    async fn until_waiters(&self, n: usize) {
        let consul = self.stack.consul.as_ref().expect("consul runs");
        tokio::time::timeout(Duration::from_secs(5), async {
            while consul.waiter_count() != n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("blocking query registered");
    }

    async fn shutdown(self) {
        self.stack.shutdown().await;
    }
}

fn index(r: &reqwest::Response) -> u64 {
    r.headers()["x-consul-index"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn blocking_get_from_the_empty_stores_index_wakes_on_the_first_write() {
    let c = Consul::start().await;
    let r = c.get("/v1/kv/first").await;
    assert_eq!(r.status(), 404);
    assert_eq!(index(&r), 1, "the empty store answers index 1");
    let (answer, ()) = tokio::join!(
        async {
            let r = c.get("/v1/kv/first?index=1&wait=30s").await;
            (r.status(), index(&r))
        },
        async {
            c.until_waiters(1).await;
            c.put("first", "v").await;
        }
    );
    let (status, idx) = answer;
    assert_eq!(status, 200, "the first write woke the query");
    assert!(idx >= 2, "the first write's index {idx} must pass 1");
    c.shutdown().await;
}

#[tokio::test]
async fn blocking_get_on_a_prefix_does_not_wake_on_writes_outside_it() {
    let c = Consul::start().await;
    c.put("app/a", "1").await;
    c.put("other/b", "1").await;
    let idx = index(&c.get("/v1/kv/app/?recurse").await);
    let path = format!("/v1/kv/app/?recurse&index={idx}&wait=30s");
    let mut query = Box::pin(c.get(&path));
    tokio::select! {
        r = &mut query => panic!("answered before any write: {}", r.status()),
        () = c.until_waiters(1) => {}
    }
    // Writes outside the prefix (including one sharing its first letters) do not answer it.
    c.put("other/b", "2").await;
    c.put("apple", "1").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut query)
            .await
            .is_err(),
        "the prefix query answered on a write outside its prefix"
    );
    let written = Instant::now();
    c.put("app/c", "1").await;
    let r = tokio::time::timeout(Duration::from_secs(2), query)
        .await
        .expect("a write inside the prefix answers the query");
    assert!(written.elapsed() < Duration::from_secs(1));
    assert!(index(&r) > idx);
    let keys: Vec<String> = r
        .json::<serde_json::Value>()
        .await
        .expect("json")
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Key"].as_str().expect("Key").to_string())
        .collect();
    assert_eq!(keys, ["app/a", "app/c"]);
    c.shutdown().await;
}

/// Consul answers when the result's index passes the requested one, so an index from the future
/// (for example one remembered from before a restart) blocks until the wait ends; the client then
/// sees the index went backwards and resets to 0.
#[tokio::test]
async fn blocking_get_with_an_index_above_the_current_one_blocks_until_the_wait_ends() {
    let c = Consul::start().await;
    c.put("k", "1").await;
    let idx = index(&c.get("/v1/kv/k").await);
    let future = idx + 1000;
    let path = format!("/v1/kv/k?index={future}&wait=1s");
    let start = Instant::now();
    let (r, ()) = tokio::join!(c.get(&path), async {
        c.until_waiters(1).await;
        // A change that does not reach the requested index does not answer it either.
        c.put("k", "2").await;
    });
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "answered after {took:?}, before the wait ended"
    );
    assert!(
        took < Duration::from_millis(1000 + 1000 / 16 + 500),
        "took {took:?}"
    );
    assert_eq!(r.status(), 200);
    let now_idx = index(&r);
    assert!(
        now_idx > idx && now_idx < future,
        "answers the current index {now_idx}"
    );
    c.shutdown().await;
}
