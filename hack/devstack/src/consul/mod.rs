//! Consul emulator: the KV, session, txn, status and agent HTTP API subset jobforge uses, with
//! Consul's semantics (`docs/consul-nomad-vault-semantics.md`; hashicorp/consul
//! `agent/kvs_endpoint.go`, `agent/consul/state/kvs.go`, `api-docs/{kv,txn,session}.mdx`,
//! `features/blocking.mdx`).
//!
//! Concepts, one file each:
//! - `store`: the KV table, tombstones and the indexes Consul reports;
//! - `db`: the state machine (KV writes with CAS / acquire / release, sessions, lock-delay, raft index);
//! - `watch`: blocking-query waiters woken per key / prefix;
//! - `sessions`: session create parsing, TTL and lock-delay rules;
//! - `txn`: `/v1/txn`;
//! - `acl`: ACL policies, tokens and the authorizer (off unless enabled, as in `consul agent -dev`);
//! - `catalog`: the agent's services and checks (= the one-node catalog), sessions bound to checks;
//! - `checks`: the runners of HTTP checks, one task per check at its interval;
//! - `persist`: `--data-dir` snapshots;
//! - `http`: the axum handlers.
//!
//! One [`std::sync::Mutex`] guards the state; it is never held across an await. A background
//! reaper task sleeps until the earliest session deadline (2×TTL after the last renewal) and
//! invalidates expired sessions; it stops when the state is dropped.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod acl;
pub mod catalog;
pub mod checks;
pub mod db;
pub mod duration;
pub mod http;
pub mod persist;
pub mod sessions;
pub mod store;
pub mod txn;
pub mod watch;

pub use http::router;

use db::Db;
use persist::{PersistError, Persister};
use watch::WatchTarget;

/// Shared state of the Consul emulator.
#[derive(Debug)]
pub struct ConsulState {
    db: Mutex<Db>,
    persister: Option<Persister>,
    /// Wakes the session reaper when a deadline may have moved earlier.
    reaper_wake: Arc<Notify>,
    cancel: CancellationToken,
    /// The running check runners by check ID (cancelled on deregistration or replacement).
    runners: Mutex<std::collections::HashMap<String, CancellationToken>>,
}

impl Drop for ConsulState {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl ConsulState {
    /// Creates the state, loading `data_dir`'s snapshot (`state.json`) when given (the directory
    /// is created if missing), and starts the session reaper on the current tokio runtime.
    ///
    /// Errors: called outside a tokio runtime; the data dir cannot be created; the snapshot is
    /// unreadable or corrupt.
    pub fn open(data_dir: Option<PathBuf>) -> anyhow::Result<Arc<ConsulState>> {
        let handle = tokio::runtime::Handle::try_current()
            .context("the Consul emulator must be opened inside a tokio runtime")?;
        let mut db = Db::default();
        let persister = match data_dir {
            Some(dir) => {
                let (p, snap) = Persister::open(dir.clone())
                    .with_context(|| format!("opening Consul data dir {}", dir.display()))?;
                if let Some(snap) = snap {
                    db.kv = snap.kv;
                    // Never below the fresh store's index, so a snapshot taken before any commit
                    // still numbers the next commit 2 or more.
                    db.raft_index = snap
                        .raft_index
                        .max(db.kv.table_index())
                        .max(db::INITIAL_RAFT_INDEX);
                    db.sessions_index = snap.sessions_index;
                    db.sessions = snap
                        .sessions
                        .into_iter()
                        .map(|s| (s.id.clone(), s))
                        .collect();
                    db.restart_timers(Instant::now());
                }
                Some(p)
            }
            None => None,
        };
        let state = Arc::new(ConsulState {
            db: Mutex::new(db),
            persister,
            reaper_wake: Arc::new(Notify::new()),
            cancel: CancellationToken::new(),
            runners: Mutex::new(std::collections::HashMap::new()),
        });
        handle.spawn(reaper(
            Arc::downgrade(&state),
            state.reaper_wake.clone(),
            state.cancel.clone(),
        ));
        Ok(state)
    }

    /// Turns ACLs on, as `acl { enabled = true, default_policy = "deny", tokens {
    /// initial_management = "<secret>" } }`: the initial management token gets the secret
    /// `initial_management`; every other request needs a token whose policies allow it.
    pub fn enable_acl(&self, initial_management: &str) {
        let mut db = self.lock();
        let index = db.commit_acl();
        db.acl = Some(acl::AclStore::new(initial_management, index));
    }

    /// Locks the state (a poisoned lock is recovered: every mutation leaves it consistent).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the reaper (after a session was created or renewed).
    pub(crate) fn sessions_touched(&self) {
        self.reaper_wake.notify_one();
    }

    /// Makes every commit up to `index` durable (no-op without a data dir).
    ///
    /// Errors: writing the snapshot failed.
    pub(crate) async fn durable(&self, index: u64) -> Result<(), PersistError> {
        let Some(p) = &self.persister else {
            return Ok(());
        };
        p.durable(index, || {
            let db = self.lock();
            let snap = SnapshotRef {
                version: 1,
                raft_index: db.raft_index,
                sessions_index: db.sessions_index,
                kv: &db.kv,
                sessions: db.sessions.values().collect(),
            };
            Ok((db.raft_index, serde_json::to_vec(&snap)?))
        })
        .await
    }

    /// Runs `query` as a blocking query (`features/blocking.mdx`): with `min_index` 0 it answers at
    /// once; otherwise it waits until the query's index exceeds `min_index` or `wait` passes, waking
    /// only on writes to `target`. Returns the last `(index, result)`, once every commit up to the
    /// raft index it was taken at is durable (see `persist`: Consul reads only committed state).
    pub(crate) async fn blocking<T>(
        &self,
        target: WatchTarget,
        min_index: u64,
        wait: Duration,
        query: impl Fn(&mut Db) -> (u64, T),
    ) -> (u64, T) {
        if min_index == 0 {
            let (raft, answer) = self.query_at(&query);
            return self.committed(raft, answer).await;
        }
        let deadline = Instant::now() + wait;
        let (id, notify) = self.lock().watchers.add(&target);
        let _guard = WaiterGuard {
            state: self,
            target: &target,
            id,
        };
        loop {
            let (raft, (index, result)) = self.query_at(&query);
            if index > min_index {
                return self.committed(raft, (index, result)).await;
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let (raft, answer) = self.query_at(&query);
                    return self.committed(raft, answer).await;
                }
            }
        }
    }

    /// Runs `query` under the lock; returns the raft index it saw with its answer.
    fn query_at<R>(&self, query: &impl Fn(&mut Db) -> R) -> (u64, R) {
        let mut db = self.lock();
        let answer = query(&mut db);
        (db.raft_index, answer)
    }

    /// `answer`, once every commit up to `raft` is durable. A failed snapshot is logged and the
    /// answer given anyway (the writer that failed has answered 500).
    async fn committed<R>(&self, raft: u64, answer: R) -> R {
        if let Err(e) = self.durable(raft).await {
            tracing::error!(error = %e, "consul emulator: persisting before a read failed");
        }
        answer
    }

    /// Test hook: holds persistence (a slow disk) until the guard is dropped; `None` without a
    /// data dir.
    #[cfg(test)]
    pub(crate) async fn hold_persistence(&self) -> Option<tokio::sync::MutexGuard<'_, u64>> {
        match &self.persister {
            Some(p) => Some(p.hold().await),
            None => None,
        }
    }

    /// Inspection for tests: the stored entry at `key` as `(value, flags, session, lock_index,
    /// create_index, modify_index)`.
    pub fn kv_entry(&self, key: &str) -> Option<store::DirEntry> {
        self.lock().kv.entry(key).cloned()
    }

    /// Inspection for tests: number of live keys.
    pub fn kv_len(&self) -> usize {
        self.lock().kv.len()
    }

    /// Inspection for tests: the last committed raft index.
    pub fn raft_index(&self) -> u64 {
        self.lock().raft_index
    }

    /// Inspection for tests: number of live sessions.
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Inspection for tests: number of blocking queries currently waiting.
    pub fn waiter_count(&self) -> usize {
        self.lock().watchers.len()
    }
}

/// Borrowing twin of [`Snapshot`], so persisting does not clone the table.
#[derive(serde::Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    raft_index: u64,
    sessions_index: u64,
    kv: &'a store::KvStore,
    sessions: Vec<&'a sessions::Session>,
}

/// Unregisters a blocking query's waiter however the query ends (answer, timeout, client gone).
struct WaiterGuard<'a> {
    state: &'a ConsulState,
    target: &'a WatchTarget,
    id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.state.lock().watchers.remove(self.target, self.id);
    }
}

/// Invalidates TTL sessions at their deadline. Sleeps until the earliest deadline or until a
/// session is created / renewed; holds only a weak reference while sleeping.
async fn reaper(state: std::sync::Weak<ConsulState>, wake: Arc<Notify>, cancel: CancellationToken) {
    loop {
        let next = {
            let Some(s) = state.upgrade() else { return };
            let (next, index) = {
                let mut db = s.lock();
                let before = db.raft_index;
                let next = db.expire_sessions(Instant::now());
                (next, (db.raft_index > before).then_some(db.raft_index))
            };
            if let Some(index) = index
                && let Err(e) = s.durable(index).await
            {
                tracing::error!(error = %e, "consul emulator: persisting session expiry failed");
            }
            next
        };
        let sleep = async {
            match next {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = sleep => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Serves `state` on a loopback port; returns its base URL.
    async fn serve(state: Arc<ConsulState>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(state)).await;
        });
        format!("http://{addr}")
    }

    /// A commit is applied in memory before its snapshot is on disk; until then no answer may
    /// reflect it (Consul's FSM applies committed Raft entries only): not a read, not a blocking
    /// read woken by it, not a read-only txn, not a failed CAS. With persistence held (a slow
    /// disk), each of them must still be waiting; once released, each sees the write.
    #[tokio::test]
    async fn no_answer_reflects_a_write_before_it_is_durable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = ConsulState::open(Some(dir.path().to_path_buf())).expect("open");
        let url = serve(state.clone()).await;
        let http = reqwest::Client::new();
        let put = |v: &'static str| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.put(format!("{url}/v1/kv/k"))
                    .body(v)
                    .send()
                    .await
                    .expect("put")
            }
        };
        assert_eq!(put("v1").await.status(), 200);
        let index: u64 = http
            .get(format!("{url}/v1/kv/k"))
            .send()
            .await
            .expect("get")
            .headers()["x-consul-index"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("index");

        let hold = state.hold_persistence().await.expect("a data dir");
        let writer = tokio::spawn(put("v2"));
        // Applied in memory, not durable.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.kv_entry("k").map(|e| e.value) != Some(b"v2".to_vec()) {
            assert!(Instant::now() < deadline, "the write was never applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let get = |path: String| {
            let http = http.clone();
            tokio::spawn(async move {
                http.get(path)
                    .send()
                    .await
                    .expect("get")
                    .text()
                    .await
                    .expect("body")
            })
        };
        let read = get(format!("{url}/v1/kv/k?raw"));
        let blocking = get(format!("{url}/v1/kv/k?raw&index={index}&wait=30s"));
        let txn = {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                http.put(format!("{url}/v1/txn"))
                    .body(r#"[{"KV":{"Verb":"get","Key":"k"}}]"#)
                    .send()
                    .await
                    .expect("txn")
                    .text()
                    .await
                    .expect("body")
            })
        };
        let cas = {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                http.put(format!("{url}/v1/kv/k?cas={index}"))
                    .body("v3")
                    .send()
                    .await
                    .expect("cas")
                    .text()
                    .await
                    .expect("body")
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (what, finished) in [
            ("a read", read.is_finished()),
            ("a blocking read", blocking.is_finished()),
            ("a read-only txn", txn.is_finished()),
            ("a failed CAS", cas.is_finished()),
            ("the writer", writer.is_finished()),
        ] {
            assert!(
                !finished,
                "{what} was answered while the write it would reflect was not durable"
            );
        }
        drop(hold);
        assert_eq!(writer.await.expect("writer").status(), 200);
        assert_eq!(read.await.expect("read"), "v2");
        assert_eq!(blocking.await.expect("blocking"), "v2");
        let txn = txn.await.expect("txn");
        assert!(txn.contains(r#""Value":"djI=""#), "txn answer: {txn}");
        assert_eq!(cas.await.expect("cas"), "false");
    }
}
