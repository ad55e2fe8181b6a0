//! `/v1/txn`: parsing the KV operations and applying them atomically (`txn.mdx`,
//! `agent/txn_endpoint.go`, `agent/consul/state/txn.go`).
//!
//! All writes of a transaction share one raft index. On the first failing operation every change
//! is rolled back and the answer is 409 `{Results: null, Errors: [{OpIndex, What}]}`; otherwise 200
//! `{Results: [{KV: entry}], Errors: null}`. Write verbs return the entry without its value, read
//! verbs with it, deletes and `check-not-exists` return nothing.
//!
//! With ACLs on, every op is checked first ([`acl_precheck`]); one denied op fails the whole
//! transaction with 409 before anything runs, each denied op named in `Errors`.

use base64::Engine;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::acl::Authorizer;
use super::db::{Db, DeleteMode, PutMode};
use super::store::DirEntry;

/// Most operations in one transaction (txn.mdx: 64).
pub const MAX_TXN_OPS: usize = 64;

/// A KV verb with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `set`, `cas`, `lock`, `unlock`.
    Put(PutMode),
    /// `get`.
    Get,
    /// `get-or-empty`.
    GetOrEmpty,
    /// `get-tree`.
    GetTree,
    /// `check-index` against `Index`.
    CheckIndex(u64),
    /// `check-session` against `Session`.
    CheckSession(String),
    /// `check-not-exists`.
    CheckNotExists,
    /// `delete`, `delete-tree`, `delete-cas`.
    Delete(DeleteMode),
}

/// One KV operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    /// The verb.
    pub verb: Verb,
    /// Key (or prefix for the tree verbs).
    pub key: String,
    /// Value bytes (decoded from base64).
    pub value: Vec<u8>,
    /// Flags.
    pub flags: u64,
}

/// Why a txn body was rejected before running (400, or 413 for size).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnParseError {
    /// Not JSON / wrong shape.
    #[error("Failed to parse body: {0}")]
    Body(String),
    /// More than 64 operations.
    #[error("Transaction contains too many operations ({0} > {MAX_TXN_OPS})")]
    TooManyOps(usize),
    /// A value above the KV size limit.
    #[error("Value for key {0:?} is too large ({1} > {2} bytes)")]
    ValueTooLarge(String, usize, usize),
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn text(obj: &Map<String, Value>, name: &str, op: usize) -> Result<String, TxnParseError> {
    match field(obj, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(TxnParseError::Body(format!(
            "op {op}: {name} must be a string, got {v}"
        ))),
    }
}

fn number(obj: &Map<String, Value>, name: &str, op: usize) -> Result<u64, TxnParseError> {
    match field(obj, name) {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            TxnParseError::Body(format!(
                "op {op}: {name} must be an unsigned integer, got {v}"
            ))
        }),
    }
}

/// Parses the txn body: an array of `{"KV": {Verb, Key, Value (base64), Flags, Index, Session}}`
/// (field names case-insensitive). `max_value` is the KV value limit in bytes.
///
/// Errors: [`TxnParseError`] (too many ops → 413, too-large value → 413, else 400).
pub fn parse_ops(body: &[u8], max_value: usize) -> Result<Vec<KvOp>, TxnParseError> {
    let raw: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| TxnParseError::Body(e.to_string()))?;
    if raw.len() > MAX_TXN_OPS {
        return Err(TxnParseError::TooManyOps(raw.len()));
    }
    let mut ops = Vec::with_capacity(raw.len());
    for (i, op) in raw.iter().enumerate() {
        let obj = op
            .as_object()
            .ok_or_else(|| TxnParseError::Body(format!("op {i}: expected an object")))?;
        let kv = match field(obj, "KV") {
            Some(Value::Object(kv)) => kv,
            _ => {
                return Err(TxnParseError::Body(format!(
                    "op {i}: only KV operations are supported (Node, Service, Check, Session are not)"
                )));
            }
        };
        let key = text(kv, "Key", i)?;
        let value_b64 = text(kv, "Value", i)?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(value_b64.as_bytes())
            .map_err(|e| TxnParseError::Body(format!("op {i}: Value is not base64: {e}")))?;
        if value.len() > max_value {
            return Err(TxnParseError::ValueTooLarge(key, value.len(), max_value));
        }
        let flags = number(kv, "Flags", i)?;
        let index = number(kv, "Index", i)?;
        let session = text(kv, "Session", i)?;
        let verb_name = text(kv, "Verb", i)?;
        let verb = match verb_name.as_str() {
            "set" => Verb::Put(PutMode::Set),
            "cas" => Verb::Put(PutMode::Cas(index)),
            "lock" => Verb::Put(PutMode::Acquire(session)),
            "unlock" => Verb::Put(PutMode::Release(session)),
            "get" => Verb::Get,
            "get-or-empty" => Verb::GetOrEmpty,
            "get-tree" => Verb::GetTree,
            "check-index" => Verb::CheckIndex(index),
            "check-session" => Verb::CheckSession(session),
            "check-not-exists" => Verb::CheckNotExists,
            "delete" => Verb::Delete(DeleteMode::Key),
            "delete-tree" => Verb::Delete(DeleteMode::Tree),
            "delete-cas" => Verb::Delete(DeleteMode::Cas(index)),
            other => {
                return Err(TxnParseError::Body(format!(
                    "op {i}: unknown KV verb {other:?}; allowed: set, cas, lock, unlock, get, \
                     get-or-empty, get-tree, check-index, check-session, check-not-exists, delete, \
                     delete-tree, delete-cas"
                )));
            }
        };
        ops.push(KvOp {
            verb,
            key,
            value,
            flags,
        });
    }
    Ok(ops)
}

/// Outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Committed: one result entry per op that yields one (values stripped for writes).
    Committed(Vec<DirEntry>),
    /// Rolled back: `(OpIndex, What)`.
    RolledBack(Vec<(usize, String)>),
}

impl TxnOutcome {
    /// True when the transaction wrote something that must be persisted.
    pub fn committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed(_))
    }
}

/// The ACL pre-check of every op (`Txn.preCheck` → `kvsPreApply` in
/// `agent/consul/{txn,kvs}_endpoint.go`): `delete-tree` needs write on the whole prefix; `get`,
/// `get-tree` and `get-or-empty` are filtered on the way out instead; `check-index` and
/// `check-session` need `key:read`; every other verb needs `key:write`. Returns one
/// `(OpIndex, What)` per denied op; empty = every op may run.
pub fn acl_precheck(authz: &Authorizer, ops: &[KvOp]) -> Vec<(usize, String)> {
    ops.iter()
        .enumerate()
        .filter_map(|(i, op)| {
            let check = match op.verb {
                Verb::Delete(DeleteMode::Tree) => authz.key_write_prefix(&op.key),
                Verb::Get | Verb::GetTree | Verb::GetOrEmpty => Ok(()),
                Verb::CheckIndex(_) | Verb::CheckSession(_) => authz.key_read(&op.key),
                _ => authz.key_write(&op.key),
            };
            check.err().map(|e| (i, e.to_string()))
        })
        .collect()
}

impl TxnOutcome {
    /// Drops the results `authz` may not read (`FilterTxnResults`).
    pub fn readable_by(self, authz: &Authorizer) -> TxnOutcome {
        match self {
            TxnOutcome::Committed(mut r) if !authz.is_unrestricted() => {
                r.retain(|e| authz.can_read_key(&e.key));
                TxnOutcome::Committed(r)
            }
            other => other,
        }
    }
}

/// Runs `ops` atomically on `db`.
pub fn execute(db: &mut Db, ops: Vec<KvOp>, now: Instant) -> TxnOutcome {
    let idx = db.next_index();
    let mut results = Vec::new();
    let mut changed: Vec<String> = Vec::new();
    db.kv.begin();
    for (i, op) in ops.into_iter().enumerate() {
        match run_op(db, idx, op, now, &mut results, &mut changed) {
            Ok(()) => {}
            Err(what) => {
                db.kv.rollback();
                return TxnOutcome::RolledBack(vec![(i, what)]);
            }
        }
    }
    db.kv.commit();
    if !changed.is_empty() {
        db.commit_kv(idx, changed.iter().map(String::as_str));
    }
    TxnOutcome::Committed(results)
}

fn stripped(e: &DirEntry) -> DirEntry {
    DirEntry {
        value: Vec::new(),
        ..e.clone()
    }
}

fn run_op(
    db: &mut Db,
    idx: u64,
    op: KvOp,
    now: Instant,
    results: &mut Vec<DirEntry>,
    changed: &mut Vec<String>,
) -> Result<(), String> {
    let key = op.key;
    let missing = || format!("key {key:?} doesn't exist");
    match op.verb {
        Verb::Put(mode) => {
            let delayed = matches!(mode, PutMode::Acquire(_)) && db.lock_delays.active(&key, now);
            if delayed {
                return Err(format!("failed to lock key {key:?} due to lock delay"));
            }
            let entry = Db::new_entry(&key, op.value, op.flags);
            match db
                .apply_put(idx, entry, &mode, now)
                .map_err(|e| e.to_string())?
            {
                Some((stored, was_changed)) => {
                    if was_changed {
                        changed.push(key);
                    }
                    results.push(stripped(&stored));
                    Ok(())
                }
                None => Err(match mode {
                    PutMode::Cas(_) => format!("failed to set key {key:?}, index is stale"),
                    PutMode::Acquire(_) => {
                        format!("failed to lock key {key:?}, lock is already held")
                    }
                    PutMode::Release(_) => format!(
                        "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                    ),
                    PutMode::Set => format!("failed to set key {key:?}"),
                }),
            }
        }
        Verb::Get => {
            let e = db.kv.entry(&key).ok_or_else(missing)?;
            results.push(e.clone());
            Ok(())
        }
        Verb::GetOrEmpty => {
            results.push(
                db.kv
                    .entry(&key)
                    .cloned()
                    .unwrap_or_else(|| Db::new_entry(&key, Vec::new(), 0)),
            );
            Ok(())
        }
        Verb::GetTree => {
            results.extend(db.kv.list(&key).1);
            Ok(())
        }
        Verb::CheckIndex(want) => {
            let e = db.kv.entry(&key).ok_or_else(missing)?;
            if e.modify_index != want {
                return Err(format!("current modify index {} != {want}", e.modify_index));
            }
            results.push(stripped(e));
            Ok(())
        }
        Verb::CheckSession(want) => {
            let e = db.kv.entry(&key).ok_or_else(missing)?;
            let holder = e.session.clone().unwrap_or_default();
            if holder != want {
                return Err(format!("current session {holder:?} != {want:?}"));
            }
            results.push(stripped(e));
            Ok(())
        }
        Verb::CheckNotExists => match db.kv.entry(&key) {
            Some(_) => Err(format!("key {key:?} exists")),
            None => Ok(()),
        },
        Verb::Delete(mode) => {
            let (ok, deleted) = db.apply_delete(idx, &key, &mode);
            changed.extend(deleted);
            if ok {
                Ok(())
            } else {
                Err(format!("failed to delete key {key:?}, index is stale"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(json: &str) -> Vec<KvOp> {
        parse_ops(json.as_bytes(), 512 * 1024).expect("test input")
    }

    #[test]
    fn commit_shares_one_index_and_strips_write_values() {
        let mut db = Db::default();
        let out = execute(
            &mut db,
            ops(
                r#"[{"KV":{"Verb":"set","Key":"a","Value":"eA=="}},{"KV":{"Verb":"set","Key":"b","Value":"eQ=="}},{"KV":{"Verb":"get","Key":"a"}}]"#,
            ),
            Instant::now(),
        );
        let TxnOutcome::Committed(r) = out else {
            panic!("rolled back")
        };
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].modify_index, r[1].modify_index);
        assert!(r[0].value.is_empty());
        assert_eq!(r[2].value, b"x");
    }

    #[test]
    fn failure_rolls_back_everything_and_names_the_op() {
        let mut db = Db::default();
        let out = execute(
            &mut db,
            ops(
                r#"[{"KV":{"Verb":"set","Key":"a","Value":"eA=="}},{"KV":{"Verb":"cas","Key":"a","Index":999}}]"#,
            ),
            Instant::now(),
        );
        assert!(matches!(out, TxnOutcome::RolledBack(ref e) if e[0].0 == 1));
        assert!(db.kv.entry("a").is_none());
        assert_eq!(db.raft_index, crate::consul::db::INITIAL_RAFT_INDEX);
    }

    #[test]
    fn too_many_ops_and_unknown_verbs_are_rejected() {
        let many = format!(
            "[{}]",
            vec![r#"{"KV":{"Verb":"get","Key":"a"}}"#; 65].join(",")
        );
        assert_eq!(
            parse_ops(many.as_bytes(), 10),
            Err(TxnParseError::TooManyOps(65))
        );
        assert!(parse_ops(br#"[{"KV":{"Verb":"frob","Key":"a"}}]"#, 10).is_err());
    }
}
