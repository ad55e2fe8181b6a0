//! Our Consul client against the dev stack's Consul emulator: blocking reads, CAS races, txn,
//! locks with sessions, and the watch stream's request budget.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jobforge_client::consul::watch::{
    WatchEvent, WatchOptions, watch_keys_sharded, watch_prefix, watch_prefix_sharded,
};
use jobforge_client::consul::{
    Client, Config, DeleteOptions, KvPair, PutOptions, QueryOptions, SessionBehavior,
    SessionRequest, TxnOp, TxnResult,
};
use jobforge_devstack::{DevStack, DevStackConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn consul_only() -> DevStack {
    let cfg = DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        ..DevStackConfig::ephemeral()
    };
    DevStack::start(cfg).await.unwrap()
}

fn client_for(url: &str) -> Client {
    Client::new(Config::new(url).unwrap()).unwrap()
}

#[tokio::test]
async fn blocking_get_returns_promptly_after_a_write_and_not_before() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    assert!(c.kv_put("t/k", b"v1", PutOptions::default()).await.unwrap());
    let (index, pair) = c.kv_get("t/k", QueryOptions::default()).await.unwrap();
    assert_eq!(pair.unwrap().value, b"v1");

    let c2 = c.clone();
    let mut blocked = tokio::spawn(async move {
        let r = c2
            .kv_get(
                "t/k",
                QueryOptions::blocking(index, Duration::from_secs(20)),
            )
            .await;
        (Instant::now(), r)
    });
    // No change yet: the read must still be waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut blocked)
            .await
            .is_err(),
        "the blocking read returned without a change"
    );
    let written = Instant::now();
    assert!(c.kv_put("t/k", b"v2", PutOptions::default()).await.unwrap());
    let (woke, r) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap();
    let (new_index, pair) = r.unwrap();
    assert!(new_index > index);
    assert_eq!(pair.unwrap().value, b"v2");
    assert!(
        woke.duration_since(written) < Duration::from_secs(1),
        "woke {:?} after the write",
        woke.duration_since(written)
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn blocking_get_without_change_returns_at_the_wait_end_with_the_same_index() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    assert!(c.kv_put("t/k", b"v", PutOptions::default()).await.unwrap());
    let (index, _) = c.kv_get("t/k", QueryOptions::default()).await.unwrap();
    let wait = Duration::from_millis(1500);
    let started = Instant::now();
    let (again, pair) = c
        .kv_get("t/k", QueryOptions::blocking(index, wait))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(again, index);
    assert_eq!(pair.unwrap().value, b"v");
    assert!(
        took >= wait,
        "returned after {took:?}, before the wait of {wait:?}"
    );
    assert!(
        took < wait + wait / 16 + Duration::from_secs(1),
        "took {took:?}"
    );
    stack.shutdown().await;
}

async fn missing_key_wakes_on_create(c: &Client, key: &str) {
    let (index, pair) = c.kv_get(key, QueryOptions::default()).await.unwrap();
    assert!(pair.is_none());
    assert!(index >= 1, "404 must carry an index >= 1, got {index}");
    let c2 = c.clone();
    let k2 = key.to_string();
    let blocked = tokio::spawn(async move {
        c2.kv_get(&k2, QueryOptions::blocking(index, Duration::from_secs(20)))
            .await
    });
    assert!(c.kv_put(key, b"here", PutOptions::default()).await.unwrap());
    let (_, pair) = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("the blocking read on the missing key did not wake on its creation")
        .unwrap()
        .unwrap();
    assert_eq!(pair.unwrap().value, b"here");
}

#[tokio::test]
async fn blocking_get_on_missing_key_wakes_on_create() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    assert!(
        c.kv_put("t/other", b"x", PutOptions::default())
            .await
            .unwrap()
    );
    missing_key_wakes_on_create(&c, "t/missing").await;
    stack.shutdown().await;
}

/// In a store with no write yet, a 404 carries `X-Consul-Index: 1` (0 raised to 1); the first
/// write must take a higher index (as in real Consul, whose raft index is past 1 before KV is
/// used) or a blocking read from 1 would never see it.
#[tokio::test]
async fn blocking_get_on_missing_key_in_a_fresh_store_wakes_on_the_first_write() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    missing_key_wakes_on_create(&c, "t/missing").await;
    stack.shutdown().await;
}

/// 100 writers race per round; Consul's CAS lets exactly one through.
#[tokio::test]
async fn cas_create_only_and_update_races_have_exactly_one_winner_per_round() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    for round in 0..3 {
        let key = format!("race/create-{round}");
        let wins = race(&c, &key, 0).await;
        assert_eq!(wins.len(), 1, "create-only round {round}: winners {wins:?}");
        let (_, pair) = c.kv_get(&key, QueryOptions::default()).await.unwrap();
        assert_eq!(
            pair.unwrap().value,
            format!("{key}#0-w{}", wins[0]).into_bytes()
        );
    }
    let key = "race/update";
    assert!(
        c.kv_put(key, b"start", PutOptions::default())
            .await
            .unwrap()
    );
    for round in 0..3 {
        let (_, pair) = c.kv_get(key, QueryOptions::default()).await.unwrap();
        let modify_index = pair.unwrap().modify_index;
        let wins = race(&c, key, modify_index).await;
        assert_eq!(wins.len(), 1, "update round {round}: winners {wins:?}");
        let (_, pair) = c.kv_get(key, QueryOptions::default()).await.unwrap();
        let pair = pair.unwrap();
        assert_eq!(
            pair.value,
            format!("{key}#{modify_index}-w{}", wins[0]).into_bytes()
        );
        assert!(pair.modify_index > modify_index);
    }
    stack.shutdown().await;
}

async fn race(c: &Client, key: &str, cas: u64) -> Vec<usize> {
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let c = c.clone();
            let key = key.to_string();
            tokio::spawn(async move {
                let ok = c
                    .kv_put(
                        &key,
                        format!("{key}#{cas}-w{i}").as_bytes(),
                        PutOptions::cas(cas),
                    )
                    .await
                    .unwrap();
                (i, ok)
            })
        })
        .collect();
    let mut wins = Vec::new();
    for t in tasks {
        let (i, ok) = t.await.unwrap();
        if ok {
            wins.push(i);
        }
    }
    wins
}

#[tokio::test]
async fn txn_commits_every_op_or_rolls_back_all() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    let set = |k: &str, v: &[u8]| TxnOp::Set {
        key: k.into(),
        value: v.to_vec(),
        flags: 0,
    };
    match c
        .txn(&[set("tx/a", b"1"), set("tx/b", b"2")])
        .await
        .unwrap()
    {
        TxnResult::Committed(r) => assert_eq!(r.len(), 2),
        other => panic!("expected a commit, got {other:?}"),
    }
    let ops = [
        set("tx/c", b"3"),
        TxnOp::Cas {
            key: "tx/a".into(),
            value: b"x".to_vec(),
            flags: 0,
            index: 999_999,
        },
    ];
    match c.txn(&ops).await.unwrap() {
        TxnResult::RolledBack(errors) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].op_index, 1);
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    let (_, c_pair) = c.kv_get("tx/c", QueryOptions::default()).await.unwrap();
    assert!(c_pair.is_none(), "a rolled-back txn must write nothing");
    let (_, a_pair) = c.kv_get("tx/a", QueryOptions::default()).await.unwrap();
    assert_eq!(a_pair.unwrap().value, b"1");
    // Deletes and lists through the same client.
    let (_, listed) = c.kv_list("tx/", QueryOptions::default()).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        c.kv_delete(
            "tx/",
            DeleteOptions {
                cas: None,
                recurse: true
            }
        )
        .await
        .unwrap()
    );
    let (_, listed) = c.kv_list("tx/", QueryOptions::default()).await.unwrap();
    assert!(listed.is_empty());
    stack.shutdown().await;
}

#[tokio::test]
async fn acquire_is_exclusive_and_release_frees_without_lock_delay() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    let req = SessionRequest {
        ttl: Some(Duration::from_secs(10)),
        lock_delay: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let s1 = c.session_create(&req).await.unwrap();
    let s2 = c.session_create(&req).await.unwrap();
    let acquire = |s: &str| PutOptions {
        acquire: Some(s.to_string()),
        ..Default::default()
    };
    assert!(c.kv_put("lock/k", b"one", acquire(&s1)).await.unwrap());
    assert!(!c.kv_put("lock/k", b"two", acquire(&s2)).await.unwrap());
    let (_, pair) = c.kv_get("lock/k", QueryOptions::default()).await.unwrap();
    let pair = pair.unwrap();
    assert_eq!(pair.session.as_deref(), Some(s1.as_str()));
    assert_eq!(pair.lock_index, 1);
    let release = PutOptions {
        release: Some(s1.clone()),
        ..Default::default()
    };
    assert!(c.kv_put("lock/k", b"one", release).await.unwrap());
    // Release applies no lock-delay: the other session acquires at once.
    assert!(c.kv_put("lock/k", b"two", acquire(&s2)).await.unwrap());
    // Destroying the holder's session invalidates it: the key is released and lock-delay applies.
    assert!(c.session_destroy(&s2).await.unwrap());
    let (_, pair) = c.kv_get("lock/k", QueryOptions::default()).await.unwrap();
    assert_eq!(pair.unwrap().session, None);
    assert!(
        !c.kv_put("lock/k", b"one", acquire(&s1)).await.unwrap(),
        "lock-delay must refuse"
    );
    assert!(c.session_info(&s2).await.unwrap().is_none());
    let renewed = c.session_renew(&s1).await.unwrap().unwrap();
    assert!(renewed.ttl.unwrap() >= Duration::from_secs(10));
    assert!(c.session_renew(&s2).await.unwrap().is_none());
    stack.shutdown().await;
}

/// Blocks on `key` (from its current index) until `done` holds for the read; returns the last
/// read. Bounded by `within`.
async fn block_until(
    c: &Client,
    key: &str,
    within: Duration,
    done: impl Fn(Option<&KvPair>) -> bool,
) -> Option<KvPair> {
    let (mut index, mut pair) = c.kv_get(key, QueryOptions::default()).await.unwrap();
    tokio::time::timeout(within, async {
        while !done(pair.as_ref()) {
            (index, pair) = c
                .kv_get(key, QueryOptions::blocking(index, Duration::from_secs(30)))
                .await
                .unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{key}: condition not reached within {within:?}"));
    pair
}

/// A TTL session that is not renewed is invalidated between TTL and 2×TTL (Consul's
/// `session_ttl.go`); its locks are released (Behavior release) or deleted (Behavior delete),
/// and the session's lock-delay then refuses acquires until it ends.
#[tokio::test]
async fn session_ttl_expiry_releases_or_deletes_the_lock_and_lock_delay_then_ends() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    let ttl = Duration::from_secs(10);
    let lock_delay = Duration::from_secs(1);
    let session = |behavior| SessionRequest {
        ttl: Some(ttl),
        lock_delay: Some(lock_delay),
        behavior,
        ..Default::default()
    };
    let releasing = c
        .session_create(&session(SessionBehavior::Release))
        .await
        .unwrap();
    let deleting = c
        .session_create(&session(SessionBehavior::Delete))
        .await
        .unwrap();
    let other = c
        .session_create(&SessionRequest {
            ttl: Some(Duration::from_secs(60)),
            ..Default::default()
        })
        .await
        .unwrap();
    let acquire = |s: &str| PutOptions {
        acquire: Some(s.to_string()),
        ..Default::default()
    };
    let started = Instant::now();
    assert!(
        c.kv_put("ttl/rel", b"r", acquire(&releasing))
            .await
            .unwrap()
    );
    assert!(c.kv_put("ttl/del", b"d", acquire(&deleting)).await.unwrap());

    let released = block_until(&c, "ttl/rel", 2 * ttl + Duration::from_secs(5), |p| {
        p.is_some_and(|p| p.session.is_none())
    })
    .await;
    let released_at = started.elapsed();
    assert_eq!(released.unwrap().value, b"r", "release keeps the value");
    assert!(
        !c.kv_put("ttl/rel", b"o", acquire(&other)).await.unwrap(),
        "the expired session's lock-delay refuses an acquire"
    );
    let deleted = block_until(&c, "ttl/del", 2 * ttl + Duration::from_secs(5), |p| {
        p.is_none()
    })
    .await;
    assert!(deleted.is_none());
    let deleted_at = started.elapsed();
    for (what, at) in [("release", released_at), ("delete", deleted_at)] {
        assert!(
            at >= ttl && at <= 2 * ttl + Duration::from_secs(1),
            "{what} after {at:?} (TTL {ttl:?})"
        );
    }
    assert!(c.session_info(&releasing).await.unwrap().is_none());
    assert!(c.session_info(&deleting).await.unwrap().is_none());
    // The lock-delay is time-based: wait it out, then the key is free for another session.
    tokio::time::sleep(lock_delay + Duration::from_millis(100)).await;
    assert!(c.kv_put("ttl/rel", b"o", acquire(&other)).await.unwrap());
    assert!(c.session_destroy(&other).await.unwrap());
    stack.shutdown().await;
}

#[tokio::test]
async fn watch_prefix_reports_initial_listing_then_only_real_changes() {
    let stack = consul_only().await;
    let c = client_for(&stack.consul_url());
    assert!(c.kv_put("w/a", b"1", PutOptions::default()).await.unwrap());
    let cancel = CancellationToken::new();
    let opts = WatchOptions {
        wait: Duration::from_secs(10),
        cancel: cancel.clone(),
        ..Default::default()
    };
    let mut s = Box::pin(watch_prefix(c.clone(), "w/", opts));
    match next_event(&mut s).await {
        WatchEvent::Initial { pairs, .. } => {
            assert_eq!(pairs.len(), 1);
            assert_eq!(pairs[0].key, "w/a");
        }
        other => panic!("expected the initial listing, got {other:?}"),
    }
    assert!(c.kv_put("w/b", b"2", PutOptions::default()).await.unwrap());
    assert!(matches!(next_event(&mut s).await, WatchEvent::Added(p) if p.key == "w/b"));
    // An unrelated write outside the prefix and an identical write yield nothing; a real change does.
    assert!(
        c.kv_put("other", b"x", PutOptions::default())
            .await
            .unwrap()
    );
    assert!(c.kv_put("w/a", b"1", PutOptions::default()).await.unwrap());
    assert!(
        c.kv_put("w/a", b"changed", PutOptions::default())
            .await
            .unwrap()
    );
    match next_event(&mut s).await {
        WatchEvent::Modified(p) => assert_eq!(
            (p.key.as_str(), p.value.as_slice()),
            ("w/a", &b"changed"[..])
        ),
        other => panic!("expected w/a modified, got {other:?}"),
    }
    assert!(c.kv_delete("w/b", DeleteOptions::default()).await.unwrap());
    assert!(matches!(next_event(&mut s).await, WatchEvent::Deleted(p) if p.key == "w/b"));
    cancel.cancel();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), StreamExt::next(&mut s))
            .await
            .unwrap()
            .is_none()
    );
    stack.shutdown().await;
}

/// Bytes the emulator answered on `GET /v1/kv/...` so far (its `bytes_out` sample).
async fn kv_bytes_out(consul_url: &str) -> u64 {
    let url = format!("{consul_url}/v1/agent/metrics");
    jobforge_tests::telemetry(&url, "Samples", "consul.http.GET.v1.kv._.bytes_out", "Sum")
        .await
        .unwrap() as u64
}

#[tokio::test]
async fn sharded_watch_merges_folders_and_a_change_rereads_only_its_folder() {
    let stack = consul_only().await;
    let url = stack.consul_url();
    let c = client_for(&url);
    let put = |k: String, v: Vec<u8>| {
        let c = c.clone();
        async move { assert!(c.kv_put(&k, &v, PutOptions::default()).await.unwrap()) }
    };
    for i in 0..200 {
        put(format!("r/big/k{i:03}"), vec![b'x'; 1000]).await;
    }
    put("r/small/a".into(), b"1".to_vec()).await;
    put("r/stray".into(), b"1".to_vec()).await;
    let cancel = CancellationToken::new();
    let opts = WatchOptions {
        wait: Duration::from_secs(10),
        cancel: cancel.clone(),
        ..Default::default()
    };
    let mut s = Box::pin(watch_prefix_sharded(c.clone(), "r/", opts));
    match next_event(&mut s).await {
        WatchEvent::Initial { pairs, .. } => {
            assert_eq!(pairs.len(), 202);
            assert!(pairs.windows(2).all(|w| w[0].key < w[1].key), "sorted");
            // The merged first listing keeps keys and indexes, not the 200 KB of values.
            assert!(pairs.iter().all(|p| p.value.is_empty()));
            let in_folders: Vec<_> = pairs
                .iter()
                .filter(|p| p.key.matches('/').count() == 2)
                .collect();
            assert_eq!(in_folders.len(), 201);
            assert!(in_folders.iter().all(|p| p.modify_index > 0));
            assert_eq!(pairs.last().map(|p| p.key.as_str()), Some("r/stray"));
        }
        other => panic!("expected the initial listing, got {other:?}"),
    }
    // A change in small/ reads the folder names and small/, not big/'s 200 KB.
    let before = kv_bytes_out(&url).await;
    put("r/small/a".into(), b"2".to_vec()).await;
    assert!(matches!(next_event(&mut s).await, WatchEvent::Modified(p) if p.key == "r/small/a"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = kv_bytes_out(&url).await - before;
    assert!(read < 10_000, "one change in small/ read {read} bytes");
    // A new folder reports its keys as Added; emptying it reports them Deleted.
    put("r/new/x".into(), b"1".to_vec()).await;
    assert!(matches!(next_event(&mut s).await, WatchEvent::Added(p) if p.key == "r/new/x"));
    assert!(
        c.kv_delete("r/new/x", DeleteOptions::default())
            .await
            .unwrap()
    );
    assert!(matches!(next_event(&mut s).await, WatchEvent::Deleted(p) if p.key == "r/new/x"));
    // And a new key in a folder that was never empty.
    put("r/big/zzz".into(), b"1".to_vec()).await;
    assert!(matches!(next_event(&mut s).await, WatchEvent::Added(p) if p.key == "r/big/zzz"));
    cancel.cancel();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), StreamExt::next(&mut s))
            .await
            .unwrap()
            .is_none()
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn sharded_keys_watch_lists_names_and_a_write_rereads_only_its_folders_names() {
    let stack = consul_only().await;
    let url = stack.consul_url();
    let c = client_for(&url);
    let put = |k: String, v: Vec<u8>| {
        let c = c.clone();
        async move { assert!(c.kv_put(&k, &v, PutOptions::default()).await.unwrap()) }
    };
    // 1,000 key names of ~20 bytes in big/: ~20 KB per listing of big/.
    for i in 0..1000 {
        put(format!("s/big/key-{i:05}"), b"1".to_vec()).await;
    }
    put("s/small/a".into(), b"1".to_vec()).await;
    let cancel = CancellationToken::new();
    let opts = WatchOptions {
        wait: Duration::from_secs(10),
        cancel: cancel.clone(),
        ..Default::default()
    };
    let mut s = Box::pin(watch_keys_sharded(c.clone(), "s/", opts));
    match next_event(&mut s).await {
        WatchEvent::Initial { pairs, .. } => {
            assert_eq!(pairs.len(), 1001);
            assert!(pairs.windows(2).all(|w| w[0].key < w[1].key), "sorted");
            assert!(
                pairs
                    .iter()
                    .all(|p| p.value.is_empty() && p.modify_index == 0),
                "names only"
            );
        }
        other => panic!("expected the initial listing, got {other:?}"),
    }
    // A value written in small/ is no event (names only) and reads small/'s names, not big/'s.
    let before = kv_bytes_out(&url).await;
    put("s/small/a".into(), b"2".to_vec()).await;
    put("s/small/b".into(), b"1".to_vec()).await;
    assert!(matches!(next_event(&mut s).await, WatchEvent::Added(p) if p.key == "s/small/b"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = kv_bytes_out(&url).await - before;
    assert!(read < 2_000, "two writes in small/ read {read} bytes");
    // A deletion in big/ is seen by name.
    assert!(
        c.kv_delete("s/big/key-00007", DeleteOptions::default())
            .await
            .unwrap()
    );
    assert!(
        matches!(next_event(&mut s).await, WatchEvent::Deleted(p) if p.key == "s/big/key-00007")
    );
    cancel.cancel();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), StreamExt::next(&mut s))
            .await
            .unwrap()
            .is_none()
    );
    stack.shutdown().await;
}

async fn next_event<S: futures::Stream<Item = WatchEvent> + Unpin>(s: &mut S) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("no watch event within 5 s")
        .expect("the watch ended")
}

/// A TCP proxy that counts HTTP requests (request lines) from client to upstream.
struct CountingProxy {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn counting_proxy(upstream: SocketAddr) -> CountingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let (from, to) = (
        addr.to_string().into_bytes(),
        upstream.to_string().into_bytes(),
    );
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut down, _)) = listener.accept().await {
            let counter = counter.clone();
            let (from, to) = (from.clone(), to.clone());
            conns.spawn(async move {
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut down_r, mut down_w) = down.split();
                let (mut up_r, mut up_w) = up.split();
                let to_up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = match down_r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // Requests are GETs without bodies: count request lines, across reads.
                        let mut window = std::mem::take(&mut tail);
                        window.extend_from_slice(&buf[..n]);
                        counter.fetch_add(
                            window
                                .windows(11)
                                .filter(|w| *w == b" HTTP/1.1\r\n")
                                .count(),
                            Ordering::SeqCst,
                        );
                        tail = window[window.len().saturating_sub(10)..].to_vec();
                        // The emulator refuses a Host that is not its own address (DNS
                        // rebinding guard), so rewrite it as a reverse proxy would.
                        let chunk = jobforge_tests::proxy::replace_bytes(&buf[..n], &from, &to);
                        if up_w.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    let _ = up_w.shutdown().await;
                };
                let to_down = async {
                    let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                    let _ = down_w.shutdown().await;
                };
                tokio::join!(to_up, to_down);
            });
        }
    });
    CountingProxy {
        addr,
        requests,
        task,
    }
}

#[tokio::test]
async fn idle_watch_makes_at_most_two_requests_per_wait_period() {
    let stack = consul_only().await;
    let proxy = counting_proxy(stack.consul_addr.unwrap()).await;
    let c = client_for(&format!("http://{}", proxy.addr));
    assert!(
        c.kv_put("idle/a", b"1", PutOptions::default())
            .await
            .unwrap()
    );
    let before = proxy.requests.load(Ordering::SeqCst);
    assert_eq!(before, 1, "the proxy must count the PUT");
    let cancel = CancellationToken::new();
    let wait = Duration::from_secs(2);
    let opts = WatchOptions {
        wait,
        cancel: cancel.clone(),
        ..Default::default()
    };
    let mut s = Box::pin(watch_prefix(c.clone(), "idle/", opts));
    let first = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchEvent::Initial { .. }), "{first:?}");
    let idle = Duration::from_secs(10);
    let extra = tokio::time::timeout(idle, s.next()).await;
    assert!(extra.is_err(), "an idle watch yielded {extra:?}");
    let made = proxy.requests.load(Ordering::SeqCst) - before;
    let periods = (idle.as_secs_f64() / wait.as_secs_f64()).ceil() as usize;
    assert!(
        made >= periods / 2,
        "the watch made only {made} requests: is it blocking at all?"
    );
    assert!(
        made <= 2 * periods,
        "idle watch made {made} requests in {idle:?} (wait {wait:?}), more than 2 per wait period"
    );
    cancel.cancel();
    drop(s);
    drop(proxy);
    stack.shutdown().await;
}
