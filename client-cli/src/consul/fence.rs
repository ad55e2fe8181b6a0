//! Fenced writes: leader writes that Consul commits only while the writer's session still holds
//! the leader key.
//!
//! Leadership seen locally can be stale (a paused process, a partition, an expired session not
//! yet noticed). Every write a leader makes goes through a [`Fence`]: one `/v1/txn` whose first
//! operation is `check-session` on the leader key, so Consul refuses the whole transaction unless
//! this session holds the lock at commit time (Consul `api-docs/txn`, verb `check-session`).

use super::client::Client;
use super::error::{ConsulError, Result};
use super::kv::{KvPair, key_arg};
use super::txn::{MAX_TXN_OPS, TxnError, TxnOp, TxnResult};

/// Outcome of a fenced single-key write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencedWrite {
    /// Written; the key's new ModifyIndex.
    Committed {
        /// New ModifyIndex of the key.
        modify_index: u64,
    },
    /// The `cas` failed: the key changed (or exists, for create-only) since it was read.
    Conflict,
    /// This session does not hold the leader key: nothing was written.
    NotLeader,
}

/// Outcome of a fenced delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencedDelete {
    /// Deleted (or was already absent, for an unconditional delete).
    Deleted,
    /// The `cas` failed.
    Conflict,
    /// This session does not hold the leader key: nothing was deleted.
    NotLeader,
}

/// Outcome of a fenced transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencedTxn {
    /// Committed; the results of the caller's operations (the check's entry removed).
    Committed(Vec<KvPair>),
    /// One of the caller's operations failed; `op_index` refers to the caller's list.
    RolledBack(Vec<TxnError>),
    /// This session does not hold the leader key: nothing was applied.
    NotLeader,
}

/// Writes that commit only while `session` holds `leader_key` (one `/v1/txn`: `check-session`
/// first, then the caller's operations). Consul is the judge, not local state.
#[derive(Debug, Clone)]
pub struct Fence {
    client: Client,
    leader_key: String,
    session: String,
}

impl Fence {
    /// A fence for `session` on `leader_key`.
    pub fn new(client: Client, leader_key: impl Into<String>, session: impl Into<String>) -> Fence {
        Fence {
            client,
            leader_key: leader_key.into(),
            session: session.into(),
        }
    }

    /// The session this fence checks.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Applies `ops` (at most 63) only if the session holds the leader key.
    ///
    /// Errors: `InvalidArgument` (0 or more than 63 ops), and the client's errors.
    pub async fn txn(&self, ops: &[TxnOp]) -> Result<FencedTxn> {
        if ops.is_empty() || ops.len() >= MAX_TXN_OPS {
            return Err(ConsulError::InvalidArgument {
                field: "ops",
                message: format!(
                    "{} operations; a fenced transaction allows 1 to {}",
                    ops.len(),
                    MAX_TXN_OPS - 1
                ),
            });
        }
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(TxnOp::CheckSession {
            key: self.leader_key.clone(),
            session: self.session.clone(),
        });
        all.extend_from_slice(ops);
        match self.client.txn(&all).await? {
            TxnResult::Committed(mut pairs) => {
                // check-session yields the leader key's entry first.
                if pairs.first().is_some_and(|p| p.key == self.leader_key) {
                    pairs.remove(0);
                }
                Ok(FencedTxn::Committed(pairs))
            }
            TxnResult::RolledBack(errors) => {
                if errors.iter().any(|e| e.op_index == 0) {
                    return Ok(FencedTxn::NotLeader);
                }
                Ok(FencedTxn::RolledBack(
                    errors
                        .into_iter()
                        .map(|e| TxnError {
                            op_index: e.op_index.saturating_sub(1),
                            what: e.what,
                        })
                        .collect(),
                ))
            }
        }
    }

    /// Writes `value` to `key` if its ModifyIndex is `modify_index` (0 = create only) and the
    /// session holds the leader key.
    ///
    /// Errors: the client's errors; `Decode` if Consul's commit lacks the key's entry.
    pub async fn cas_put(&self, key: &str, value: &[u8], modify_index: u64) -> Result<FencedWrite> {
        let key = key_arg("key", key)?.to_string();
        let op = TxnOp::Cas {
            key: key.clone(),
            value: value.to_vec(),
            flags: 0,
            index: modify_index,
        };
        match self.txn(&[op]).await? {
            FencedTxn::Committed(pairs) => pairs
                .iter()
                .find(|p| p.key == key)
                .map(|p| FencedWrite::Committed {
                    modify_index: p.modify_index,
                })
                .ok_or_else(|| ConsulError::Decode {
                    endpoint: "txn",
                    message: format!("committed transaction has no result for {key:?}"),
                }),
            FencedTxn::RolledBack(_) => Ok(FencedWrite::Conflict),
            FencedTxn::NotLeader => Ok(FencedWrite::NotLeader),
        }
    }

    /// Deletes `key` (with `delete-cas` when `cas` is given) if the session holds the leader key.
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> Result<FencedDelete> {
        let key = key_arg("key", key)?.to_string();
        let op = match cas {
            Some(index) => TxnOp::DeleteCas { key, index },
            None => TxnOp::Delete { key },
        };
        Ok(match self.txn(&[op]).await? {
            FencedTxn::Committed(_) => FencedDelete::Deleted,
            FencedTxn::RolledBack(_) => FencedDelete::Conflict,
            FencedTxn::NotLeader => FencedDelete::NotLeader,
        })
    }
}
