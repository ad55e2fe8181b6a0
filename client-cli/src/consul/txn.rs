//! `/v1/txn` operations and results (Consul `api-docs/txn`).

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::kv::{KvPair, WireKvPair};

/// Consul's limit on operations in one transaction (more is answered 413).
pub const MAX_TXN_OPS: usize = 64;

/// One KV operation of a transaction. Each variant is one documented `Verb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// `set`: write unconditionally.
    Set {
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Flags.
        flags: u64,
    },
    /// `cas`: write if the ModifyIndex equals `index` (0 = create only).
    Cas {
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Flags.
        flags: u64,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `lock`: acquire with `session` and write.
    Lock {
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Session.
        session: String,
    },
    /// `unlock`: release the lock held by `session` and write.
    Unlock {
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Session.
        session: String,
    },
    /// `get`: read the key; fails the transaction if it is missing.
    Get {
        /// Key.
        key: String,
    },
    /// `get-or-empty`: read the key; no result if missing.
    GetOrEmpty {
        /// Key.
        key: String,
    },
    /// `get-tree`: read every key under the prefix.
    GetTree {
        /// Prefix.
        key: String,
    },
    /// `check-index`: fail unless the ModifyIndex equals `index`.
    CheckIndex {
        /// Key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
    /// `check-session`: fail unless `session` holds the key's lock.
    CheckSession {
        /// Key.
        key: String,
        /// Session.
        session: String,
    },
    /// `check-not-exists`: fail if the key exists.
    CheckNotExists {
        /// Key.
        key: String,
    },
    /// `delete`: delete unconditionally.
    Delete {
        /// Key.
        key: String,
    },
    /// `delete-tree`: delete every key under the prefix.
    DeleteTree {
        /// Prefix.
        key: String,
    },
    /// `delete-cas`: delete if the ModifyIndex equals `index`.
    DeleteCas {
        /// Key.
        key: String,
        /// Expected ModifyIndex.
        index: u64,
    },
}

impl TxnOp {
    /// The key (or prefix) the operation touches.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Set { key, .. }
            | TxnOp::Cas { key, .. }
            | TxnOp::Lock { key, .. }
            | TxnOp::Unlock { key, .. }
            | TxnOp::Get { key }
            | TxnOp::GetOrEmpty { key }
            | TxnOp::GetTree { key }
            | TxnOp::CheckIndex { key, .. }
            | TxnOp::CheckSession { key, .. }
            | TxnOp::CheckNotExists { key }
            | TxnOp::Delete { key }
            | TxnOp::DeleteTree { key }
            | TxnOp::DeleteCas { key, .. } => key,
        }
    }

    /// The wire shape `{"KV": {"Verb": ..., "Key": ..., ...}}`.
    pub fn to_json(&self) -> Value {
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        let mut kv = Map::new();
        let (verb, value, flags, index, session) = match self {
            TxnOp::Set { value, flags, .. } => ("set", Some(value), Some(*flags), None, None),
            TxnOp::Cas {
                value,
                flags,
                index,
                ..
            } => ("cas", Some(value), Some(*flags), Some(*index), None),
            TxnOp::Lock { value, session, .. } => ("lock", Some(value), None, None, Some(session)),
            TxnOp::Unlock { value, session, .. } => {
                ("unlock", Some(value), None, None, Some(session))
            }
            TxnOp::Get { .. } => ("get", None, None, None, None),
            TxnOp::GetOrEmpty { .. } => ("get-or-empty", None, None, None, None),
            TxnOp::GetTree { .. } => ("get-tree", None, None, None, None),
            TxnOp::CheckIndex { index, .. } => ("check-index", None, None, Some(*index), None),
            TxnOp::CheckSession { session, .. } => {
                ("check-session", None, None, None, Some(session))
            }
            TxnOp::CheckNotExists { .. } => ("check-not-exists", None, None, None, None),
            TxnOp::Delete { .. } => ("delete", None, None, None, None),
            TxnOp::DeleteTree { .. } => ("delete-tree", None, None, None, None),
            TxnOp::DeleteCas { index, .. } => ("delete-cas", None, None, Some(*index), None),
        };
        kv.insert("Verb".into(), json!(verb));
        kv.insert("Key".into(), json!(self.key()));
        if let Some(v) = value {
            kv.insert("Value".into(), json!(b64(v)));
        }
        if let Some(f) = flags {
            kv.insert("Flags".into(), json!(f));
        }
        if let Some(i) = index {
            kv.insert("Index".into(), json!(i));
        }
        if let Some(s) = session {
            kv.insert("Session".into(), json!(s));
        }
        json!({ "KV": kv })
    }
}

/// Why a transaction rolled back: the failing operation's position and Consul's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnError {
    /// Index of the failing operation in the submitted list.
    pub op_index: usize,
    /// Consul's description, e.g. `failed to lock key "k": ...`.
    pub what: String,
}

/// Outcome of a `/v1/txn` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    /// HTTP 200: every operation applied. One entry per operation that yields one (reads,
    /// writes and checks return the key; deletes return nothing), in operation order; values
    /// are only filled in for reads.
    Committed(Vec<KvPair>),
    /// HTTP 409: nothing applied.
    RolledBack(Vec<TxnError>),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireTxnResponse {
    #[serde(default)]
    pub(crate) results: Option<Vec<WireTxnResult>>,
    #[serde(default)]
    pub(crate) errors: Option<Vec<WireTxnError>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireTxnResult {
    #[serde(rename = "KV", default)]
    pub(crate) kv: Option<WireKvPair>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireTxnError {
    #[serde(default)]
    pub(crate) op_index: usize,
    #[serde(default)]
    pub(crate) what: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cas_op_renders_verb_base64_value_and_index() {
        let op = TxnOp::Cas {
            key: "a/b".into(),
            value: b"hi".to_vec(),
            flags: 0,
            index: 0,
        };
        assert_eq!(
            op.to_json(),
            json!({"KV": {"Verb": "cas", "Key": "a/b", "Value": "aGk=", "Flags": 0, "Index": 0}})
        );
    }

    #[test]
    fn check_session_op_carries_the_session() {
        let op = TxnOp::CheckSession {
            key: "l".into(),
            session: "s1".into(),
        };
        assert_eq!(
            op.to_json(),
            json!({"KV": {"Verb": "check-session", "Key": "l", "Session": "s1"}})
        );
    }
}
