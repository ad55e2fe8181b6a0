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
    /// only on writes to `target`. Returns the last `(index, result)`.
    pub(crate) async fn blocking<T>(
        &self,
        target: WatchTarget,
        min_index: u64,
        wait: Duration,
        query: impl Fn(&mut Db) -> (u64, T),
    ) -> (u64, T) {
        if min_index == 0 {
            return query(&mut self.lock());
        }
        let deadline = Instant::now() + wait;
        let (id, notify) = self.lock().watchers.add(&target);
        let _guard = WaiterGuard {
            state: self,
            target: &target,
            id,
        };
        loop {
            let (index, result) = query(&mut self.lock());
            if index > min_index {
                return (index, result);
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return query(&mut self.lock());
                }
            }
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
