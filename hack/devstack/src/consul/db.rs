//! The emulator's replicated state machine: KV table, sessions, lock-delays, the raft index and
//! the blocking-query waiters, all behind one mutex (never held across an await).
//!
//! Every committed change takes the next raft index (`raft_index + 1`); operations that change
//! nothing (a failed CAS, an identical write, deleting a missing key) consume no index, so the
//! indexes clients see are exactly the KV / session table indexes Consul would report.

use std::collections::{BTreeMap, HashMap};
use tokio::time::Instant;

use super::acl::{AclError, AclStore, Authorizer};
use super::catalog::{Catalog, Check, Health, Registration, Service};
use super::sessions::{Behavior, CreateRequest, LockDelays, Session};
use super::store::{DirEntry, KvStore};
use super::watch::Watchers;

/// Errors of KV writes that Consul reports as errors rather than `false`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// `acquire`/`lock` named a session that does not exist (kvs.go `kvsLockTxn`).
    #[error("invalid session {0:?}")]
    InvalidSession(String),
}

/// How a PUT writes (`?cas`, `?acquire`, `?release` are mutually exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Plain set (keeps any lock holder).
    Set,
    /// Check-and-set against `ModifyIndex` (0 = create only).
    Cas(u64),
    /// Acquire the lock for the session.
    Acquire(String),
    /// Release the lock held by the session.
    Release(String),
}

/// How a DELETE deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteMode {
    /// One key.
    Key,
    /// Every key under the prefix (`?recurse`).
    Tree,
    /// One key if its `ModifyIndex` equals the value (`?cas`; 0 never deletes an existing key).
    Cas(u64),
}

/// The raft index of a fresh emulator, before any commit.
///
/// Real Consul's raft log already holds entries (leader election, node registration) when KV is
/// first used, so its first KV write never gets index 1. An empty KV table answers
/// `X-Consul-Index: 1` (0 raised to 1, `agent/consul/rpc.go` blockingQuery); if the first write
/// also got 1, a blocking read from index 1 would never wake on it. Starting here makes the first
/// commit take 2.
pub const INITIAL_RAFT_INDEX: u64 = 1;

/// The state behind the mutex.
#[derive(Debug)]
pub struct Db {
    /// KV table.
    pub kv: KvStore,
    /// Live sessions by ID.
    pub sessions: BTreeMap<String, Session>,
    /// Invalidation deadline per TTL session (2×TTL after the last renewal).
    pub deadlines: HashMap<String, Instant>,
    /// Sessions table index.
    pub sessions_index: u64,
    /// Last committed raft index.
    pub raft_index: u64,
    /// Lock-delays per key.
    pub lock_delays: LockDelays,
    /// Blocking-query waiters.
    pub watchers: Watchers,
    /// ACL policies and tokens; `None` = ACLs disabled (the `-dev` default).
    pub acl: Option<AclStore>,
    /// The node's services and checks (agent and catalog alike on this one-node emulator).
    pub catalog: Catalog,
}

impl Default for Db {
    /// An empty state whose raft index is [`INITIAL_RAFT_INDEX`], so the first commit takes 2.
    fn default() -> Self {
        Db {
            kv: KvStore::default(),
            sessions: BTreeMap::new(),
            deadlines: HashMap::new(),
            sessions_index: 0,
            raft_index: INITIAL_RAFT_INDEX,
            lock_delays: LockDelays::default(),
            watchers: Watchers::default(),
            acl: None,
            catalog: Catalog::new(INITIAL_RAFT_INDEX),
        }
    }
}

impl Db {
    /// The authorizer of a token secret: everything allowed while ACLs are disabled.
    ///
    /// Errors: [`AclError::NotFound`] when ACLs are on and the secret names no token.
    pub fn authorize(&self, token: Option<&str>) -> Result<Authorizer, AclError> {
        match &self.acl {
            None => Ok(Authorizer::allow_all()),
            Some(acl) => acl.resolve(token),
        }
    }

    /// Commits an ACL write: the next raft index (Consul's ACL writes are raft commits).
    pub fn commit_acl(&mut self) -> u64 {
        self.raft_index += 1;
        self.raft_index
    }

    /// The index the next commit will use.
    pub fn next_index(&self) -> u64 {
        self.raft_index + 1
    }

    /// Marks `idx` committed for the KV table and wakes the watchers of `keys`.
    pub fn commit_kv<'a>(&mut self, idx: u64, keys: impl IntoIterator<Item = &'a str>) {
        self.raft_index = self.raft_index.max(idx);
        for k in keys {
            self.watchers.key_changed(k);
        }
    }

    /// Builds the entry a PUT stores.
    pub fn new_entry(key: &str, value: Vec<u8>, flags: u64) -> DirEntry {
        DirEntry {
            lock_index: 0,
            key: key.to_string(),
            flags,
            value,
            session: None,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// Applies one KV write at `idx` without committing (txn building block). Returns the stored
    /// entry on success, `None` when the condition failed (Consul answers `false`).
    ///
    /// Errors: [`KvError::InvalidSession`] for `Acquire` with an unknown session.
    pub fn apply_put(
        &mut self,
        idx: u64,
        entry: DirEntry,
        mode: &PutMode,
        now: Instant,
    ) -> Result<Option<(DirEntry, bool)>, KvError> {
        let existing = self.kv.entry(&entry.key);
        match mode {
            PutMode::Set => Ok(Some(self.kv.set(idx, entry, false))),
            PutMode::Cas(cas) => {
                let ok = match existing {
                    None => *cas == 0,
                    Some(e) => *cas != 0 && e.modify_index == *cas,
                };
                Ok(ok.then(|| self.kv.set(idx, entry, false)))
            }
            PutMode::Acquire(session) => {
                // agent/consul/kvs_endpoint.go kvsPreApply: lock-delay first, then the state store.
                if self.lock_delays.active(&entry.key, now) {
                    return Ok(None);
                }
                if !self.sessions.contains_key(session) {
                    return Err(KvError::InvalidSession(session.clone()));
                }
                let lock_index = match existing {
                    None => 1,
                    Some(e) => match &e.session {
                        Some(holder) if holder != session => return Ok(None),
                        Some(_) => e.lock_index,
                        None => e.lock_index + 1,
                    },
                };
                let entry = DirEntry {
                    lock_index,
                    session: Some(session.clone()),
                    ..entry
                };
                Ok(Some(self.kv.set(idx, entry, true)))
            }
            PutMode::Release(session) => match existing {
                Some(e) if e.session.as_deref() == Some(session.as_str()) => {
                    let entry = DirEntry {
                        lock_index: e.lock_index,
                        session: None,
                        ..entry
                    };
                    Ok(Some(self.kv.set(idx, entry, true)))
                }
                _ => Ok(None),
            },
        }
    }

    /// A committed KV PUT: returns Consul's boolean answer.
    ///
    /// Errors: [`KvError::InvalidSession`].
    pub fn put(&mut self, entry: DirEntry, mode: &PutMode, now: Instant) -> Result<bool, KvError> {
        let idx = self.next_index();
        let key = entry.key.clone();
        match self.apply_put(idx, entry, mode, now)? {
            Some((_, changed)) => {
                if changed {
                    self.commit_kv(idx, [key.as_str()]);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A committed KV DELETE: returns Consul's boolean answer (`true` for a missing key; for
    /// `Cas`, `true` only when the key is missing or its `ModifyIndex` matched).
    pub fn delete(&mut self, key: &str, mode: &DeleteMode) -> bool {
        let idx = self.next_index();
        let (ok, keys) = self.apply_delete(idx, key, mode);
        if !keys.is_empty() {
            self.commit_kv(idx, keys.iter().map(String::as_str));
        }
        ok
    }

    /// Applies a delete at `idx` without committing: `(answer, deleted keys)`.
    pub fn apply_delete(&mut self, idx: u64, key: &str, mode: &DeleteMode) -> (bool, Vec<String>) {
        match mode {
            DeleteMode::Key => {
                let deleted = self.kv.delete(idx, key);
                (
                    true,
                    if deleted {
                        vec![key.to_string()]
                    } else {
                        vec![]
                    },
                )
            }
            DeleteMode::Tree => (true, self.kv.delete_tree(idx, key)),
            DeleteMode::Cas(cas) => match self.kv.entry(key) {
                // kvs.go kvsDeleteCASTxn: a missing key is already "deleted".
                None => (true, vec![]),
                Some(e) if e.modify_index == *cas => {
                    self.kv.delete(idx, key);
                    (true, vec![key.to_string()])
                }
                Some(_) => (false, vec![]),
            },
        }
    }

    /// Creates a session; returns it.
    pub fn create_session(&mut self, req: CreateRequest, now: Instant) -> Session {
        let idx = self.next_index();
        let s = Session {
            id: uuid::Uuid::new_v4().to_string(),
            name: req.name,
            node: req.node,
            lock_delay: req.lock_delay,
            behavior: req.behavior,
            ttl: req.ttl,
            create_index: idx,
            modify_index: idx,
            node_checks: req.node_checks,
            service_checks: req.service_checks,
        };
        if let Some(d) = s.deadline(now) {
            self.deadlines.insert(s.id.clone(), d);
        }
        self.sessions.insert(s.id.clone(), s.clone());
        self.sessions_index = idx;
        self.raft_index = idx;
        self.watchers.sessions_changed();
        s
    }

    /// Renews a session's TTL timer; `None` when unknown.
    pub fn renew_session(&mut self, id: &str, now: Instant) -> Option<Session> {
        let s = self.sessions.get(id)?.clone();
        if let Some(d) = s.deadline(now) {
            self.deadlines.insert(s.id.clone(), d);
        }
        Some(s)
    }

    /// Invalidates a session (destroy or TTL expiry): releases or deletes every key it holds,
    /// per its Behavior, and sets its lock-delay on each (`state/session.go deleteSessionTxn`).
    /// Returns whether it existed.
    pub fn invalidate_session(&mut self, id: &str, now: Instant) -> bool {
        let Some(s) = self.sessions.remove(id) else {
            return false;
        };
        self.deadlines.remove(id);
        let idx = self.next_index();
        let held = self.kv.held_by(id);
        for key in &held {
            match s.behavior {
                Behavior::Release => {
                    if let Some(e) = self.kv.entry(key) {
                        let released = DirEntry {
                            session: None,
                            ..e.clone()
                        };
                        self.kv.set(idx, released, true);
                    }
                }
                Behavior::Delete => {
                    self.kv.delete(idx, key);
                }
            }
            self.lock_delays.set(key, now, s.lock_delay);
        }
        self.sessions_index = idx;
        self.commit_kv(idx, held.iter().map(String::as_str));
        self.watchers.sessions_changed();
        true
    }

    /// Invalidates every session whose deadline passed; returns the earliest remaining deadline.
    pub fn expire_sessions(&mut self, now: Instant) -> Option<Instant> {
        let due: Vec<String> = self
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            tracing::debug!(session = %id, "consul emulator: session TTL expired");
            self.invalidate_session(&id, now);
        }
        self.deadlines.values().min().copied()
    }

    /// Commits a catalog change: the next raft index, which becomes the catalog's index.
    fn commit_catalog(&mut self) -> u64 {
        let idx = self.next_index();
        self.raft_index = idx;
        self.catalog.index = idx;
        self.watchers.catalog_changed();
        idx
    }

    /// Invalidates every session that lists one of `checks` (`ensureCheckTxn` /
    /// `deleteCheckTxn` in `state/catalog.go`), with each session's behavior and lock-delay.
    fn invalidate_sessions_of(&mut self, checks: &[String], now: Instant) {
        let ids: Vec<String> = self
            .sessions
            .values()
            .filter(|s| checks.iter().any(|c| s.lists_check(c)))
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            tracing::debug!(session = %id, ?checks, "consul emulator: session invalidated by its check");
            self.invalidate_session(&id, now);
        }
    }

    /// Registers (or replaces) a service and its checks. Checks the new registration no longer
    /// has are removed; a check that is critical after the registration invalidates the
    /// sessions listing it. Returns the checks to run (HTTP checks of this service).
    pub fn register_service(&mut self, reg: Registration, now: Instant) -> Vec<Check> {
        let idx = self.commit_catalog();
        let Registration {
            mut service,
            mut checks,
        } = reg;
        service.create_index = self
            .catalog
            .services
            .get(&service.id)
            .map_or(idx, |s| s.create_index);
        service.modify_index = idx;
        let stale: Vec<String> = self
            .catalog
            .service_checks(&service.id)
            .filter(|c| !checks.iter().any(|n| n.id == c.id))
            .map(|c| c.id.clone())
            .collect();
        for id in &stale {
            self.catalog.checks.remove(id);
        }
        let mut critical = stale;
        for c in &mut checks {
            c.create_index = self
                .catalog
                .checks
                .get(&c.id)
                .map_or(idx, |old| old.create_index);
            c.modify_index = idx;
            if c.status == Health::Critical {
                critical.push(c.id.clone());
            }
            self.catalog.checks.insert(c.id.clone(), c.clone());
        }
        self.catalog.services.insert(service.id.clone(), service);
        self.invalidate_sessions_of(&critical, now);
        checks
    }

    /// Deregisters service `id` and its checks, invalidating the sessions that list them.
    /// Returns the removed service, `None` when unknown.
    pub fn deregister_service(&mut self, id: &str, now: Instant) -> Option<Service> {
        let svc = self
            .catalog
            .services
            .get(id)
            .filter(|s| !s.builtin)?
            .clone();
        self.commit_catalog();
        self.catalog.services.remove(id);
        let checks: Vec<String> = self
            .catalog
            .service_checks(id)
            .map(|c| c.id.clone())
            .collect();
        for c in &checks {
            self.catalog.checks.remove(c);
        }
        self.invalidate_sessions_of(&checks, now);
        Some(svc)
    }

    /// Records a check run: `status` and `output`. A status change is a catalog write (new
    /// index); turning critical invalidates the sessions that list the check. Returns false
    /// when the check no longer exists (its runner then stops).
    pub fn set_check_status(
        &mut self,
        id: &str,
        status: Health,
        output: String,
        now: Instant,
    ) -> bool {
        let Some(c) = self.catalog.checks.get_mut(id) else {
            return false;
        };
        c.output = output;
        if c.status == status {
            return true;
        }
        c.status = status;
        let idx = self.commit_catalog();
        if let Some(c) = self.catalog.checks.get_mut(id) {
            c.modify_index = idx;
        }
        if status == Health::Critical {
            self.invalidate_sessions_of(&[id.to_string()], now);
        }
        true
    }

    /// Restarts every TTL timer from `now` (after loading a snapshot, as a new Consul leader does).
    pub fn restart_timers(&mut self, now: Instant) {
        self.deadlines = self
            .sessions
            .values()
            .filter_map(|s| s.deadline(now).map(|d| (s.id.clone(), d)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::sessions::parse_create;

    fn put(db: &mut Db, key: &str, v: &[u8], mode: PutMode) -> Result<bool, KvError> {
        db.put(Db::new_entry(key, v.to_vec(), 0), &mode, Instant::now())
    }

    #[test]
    fn cas_zero_creates_only_once() {
        let mut db = Db::default();
        assert_eq!(put(&mut db, "k", b"1", PutMode::Cas(0)), Ok(true));
        assert_eq!(put(&mut db, "k", b"2", PutMode::Cas(0)), Ok(false));
        let mi = db.kv.entry("k").map(|e| e.modify_index).unwrap_or(0);
        assert_eq!(put(&mut db, "k", b"3", PutMode::Cas(mi)), Ok(true));
        assert_eq!(put(&mut db, "k", b"4", PutMode::Cas(mi)), Ok(false));
        assert_eq!(put(&mut db, "missing", b"4", PutMode::Cas(7)), Ok(false));
    }

    #[test]
    fn acquire_rules_and_lock_delay_after_invalidation() {
        let mut db = Db::default();
        let now = Instant::now();
        let a = db
            .create_session(
                parse_create(br#"{"LockDelay":"10s"}"#).expect("test input"),
                now,
            )
            .id;
        let b = db
            .create_session(parse_create(b"").expect("test input"), now)
            .id;
        assert_eq!(
            put(&mut db, "l", b"x", PutMode::Acquire("nope".into())),
            Err(KvError::InvalidSession("nope".into()))
        );
        assert_eq!(
            put(&mut db, "l", b"a", PutMode::Acquire(a.clone())),
            Ok(true)
        );
        assert_eq!(db.kv.entry("l").map(|e| e.lock_index), Some(1));
        assert_eq!(
            put(&mut db, "l", b"b", PutMode::Acquire(b.clone())),
            Ok(false)
        );
        assert_eq!(
            put(&mut db, "l", b"a2", PutMode::Acquire(a.clone())),
            Ok(true)
        );
        assert_eq!(db.kv.entry("l").map(|e| e.lock_index), Some(1));
        assert_eq!(
            put(&mut db, "l", b"", PutMode::Release(b.clone())),
            Ok(false)
        );
        assert_eq!(
            put(&mut db, "l", b"r", PutMode::Release(a.clone())),
            Ok(true)
        );
        // Release sets no lock-delay.
        assert_eq!(
            put(&mut db, "l", b"b", PutMode::Acquire(b.clone())),
            Ok(true)
        );
        assert_eq!(db.kv.entry("l").map(|e| e.lock_index), Some(2));
        db.invalidate_session(&b, now);
        assert_eq!(db.kv.entry("l").and_then(|e| e.session.clone()), None);
        // b's lock-delay is the default 15s.
        assert_eq!(put(&mut db, "l", b"a", PutMode::Acquire(a)), Ok(false));
    }

    #[test]
    fn delete_behavior_deletes_held_keys() {
        let mut db = Db::default();
        let now = Instant::now();
        let s = db
            .create_session(
                parse_create(br#"{"Behavior":"delete"}"#).expect("test input"),
                now,
            )
            .id;
        put(&mut db, "d", b"x", PutMode::Acquire(s.clone())).expect("test input");
        db.invalidate_session(&s, now);
        assert!(db.kv.entry("d").is_none());
    }

    #[test]
    fn first_write_of_a_fresh_store_takes_an_index_above_the_empty_answer() {
        let mut db = Db::default();
        // The empty table answers 0, raised to 1 on the wire.
        assert_eq!(db.kv.get("k").0.max(1), 1);
        put(&mut db, "k", b"1", PutMode::Set).expect("test input");
        assert_eq!(db.kv.entry("k").map(|e| e.modify_index), Some(2));
        assert_eq!(db.raft_index, 2);
    }

    #[test]
    fn failed_writes_consume_no_index() {
        let mut db = Db::default();
        put(&mut db, "k", b"1", PutMode::Set).expect("test input");
        let before = db.raft_index;
        put(&mut db, "k", b"1", PutMode::Set).expect("test input");
        put(&mut db, "k", b"2", PutMode::Cas(0)).expect("test input");
        assert!(!db.delete("k", &DeleteMode::Cas(0)));
        assert!(db.delete("missing", &DeleteMode::Key));
        assert_eq!(db.raft_index, before);
    }

    mod props {
        use super::*;
        use crate::consul::txn::{KvOp, Verb, execute};
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Put(u8, u8, Option<u64>),
            Delete(u8, Option<u64>),
            DeleteTree(u8),
            Acquire(u8, bool),
            Release(u8, bool),
            Invalidate(bool),
            FailingTxn(u8, u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..6, any::<u8>(), proptest::option::of(0u64..40))
                    .prop_map(|(k, v, c)| Op::Put(k, v, c)),
                (0u8..6, proptest::option::of(0u64..40)).prop_map(|(k, c)| Op::Delete(k, c)),
                (0u8..3).prop_map(Op::DeleteTree),
                (0u8..6, any::<bool>()).prop_map(|(k, s)| Op::Acquire(k, s)),
                (0u8..6, any::<bool>()).prop_map(|(k, s)| Op::Release(k, s)),
                any::<bool>().prop_map(Op::Invalidate),
                (0u8..6, any::<u8>()).prop_map(|(k, v)| Op::FailingTxn(k, v)),
            ]
        }

        fn key(k: u8) -> String {
            format!("{}/{}", k % 3, k)
        }

        proptest! {
            /// Indexes never go backwards, every entry's indexes are within the raft index, a
            /// holder's session exists, and a failing txn changes nothing.
            #[test]
            fn indexes_stay_monotonic_and_consistent(ops in proptest::collection::vec(op(), 1..60)) {
                let mut db = Db::default();
                let now = Instant::now();
                let mut sessions = [String::new(), String::new()];
                for (i, s) in sessions.iter_mut().enumerate() {
                    let body = format!(r#"{{"LockDelay":"{}s"}}"#, i);
                    *s = db.create_session(parse_create(body.as_bytes()).expect("valid"), now).id;
                }
                for op in ops {
                    let before = db.raft_index;
                    let sid = |b: bool| sessions[usize::from(b)].clone();
                    match op {
                        Op::Put(k, v, cas) => {
                            let mode = cas.map_or(PutMode::Set, PutMode::Cas);
                            let _ = db.put(Db::new_entry(&key(k), vec![v], 0), &mode, now);
                        }
                        Op::Delete(k, cas) => {
                            db.delete(&key(k), &cas.map_or(DeleteMode::Key, DeleteMode::Cas));
                        }
                        Op::DeleteTree(p) => {
                            db.delete(&format!("{p}/"), &DeleteMode::Tree);
                        }
                        Op::Acquire(k, s) => {
                            let _ = db.put(Db::new_entry(&key(k), vec![1], 0), &PutMode::Acquire(sid(s)), now);
                        }
                        Op::Release(k, s) => {
                            let _ = db.put(Db::new_entry(&key(k), vec![], 0), &PutMode::Release(sid(s)), now);
                        }
                        Op::Invalidate(s) => {
                            let id = sid(s);
                            db.invalidate_session(&id, now);
                            let body = format!(r#"{{"LockDelay":"{}s"}}"#, usize::from(s));
                            sessions[usize::from(s)] =
                                db.create_session(parse_create(body.as_bytes()).expect("valid"), now).id;
                        }
                        Op::FailingTxn(k, v) => {
                            let snapshot = db.kv.list("");
                            let out = execute(&mut db, vec![
                                KvOp { verb: Verb::Put(PutMode::Set), key: key(k), value: vec![v, 1], flags: 0 },
                                KvOp { verb: Verb::Delete(DeleteMode::Tree), key: String::new(), value: vec![], flags: 0 },
                                KvOp { verb: Verb::Get, key: "never/exists".into(), value: vec![], flags: 0 },
                            ], now);
                            prop_assert!(!out.committed());
                            prop_assert_eq!(db.kv.list(""), snapshot);
                            prop_assert_eq!(db.raft_index, before);
                        }
                    }
                    prop_assert!(db.raft_index >= before);
                    prop_assert!(db.kv.table_index() <= db.raft_index);
                    for e in db.kv.list("").1 {
                        prop_assert!(e.create_index <= e.modify_index);
                        prop_assert!(e.modify_index <= db.kv.table_index());
                        if let Some(s) = &e.session {
                            prop_assert!(db.sessions.contains_key(s), "holder {} is gone", s);
                            // No LockIndex invariant: as kvs.go kvsSetTxn, a plain PUT keeps the
                            // holder but stores the request's LockIndex (0).
                        }
                    }
                }
            }
        }
    }
}
