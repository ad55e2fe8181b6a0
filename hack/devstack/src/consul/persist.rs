//! `--data-dir` persistence: one JSON snapshot (`<dir>/state.json`) of the KV table (entries,
//! tombstones, table index), the sessions and the raft index, replaced atomically (write a temp
//! file, fsync it, rename it over the snapshot, fsync the directory).
//!
//! Writers call [`Persister::durable`] with the raft index of their commit before answering; the
//! first of a group writes one snapshot that covers every commit up to then, the others find their
//! index already durable (group commit), so hundreds of writes a second cost few fsyncs. Readers
//! call it too, with the raft index their answer was taken at (`ConsulState::blocking`, txn): a
//! commit is applied in memory before it is durable, and Consul never shows one in that state —
//! its FSM applies a Raft log entry only once the entry is committed, i.e. on disk on a quorum
//! (hashicorp/raft `Apply`: "the future … returns … once the log is committed"; hashicorp/consul
//! `agent/consul/fsm/fsm.go` applies committed logs only), and every read is served from the FSM.
//! Without that wait a reader could see a write that a crash then lost (seen in the fault test
//! that SIGKILLs the emulator: a status watch saw `Building`, then `Pending` after the restart).
//!
//! After a restart, keys, tombstones and indexes are as committed, and the raft index continues
//! from the snapshot. Sessions are kept with their TTL timers restarted (Consul keeps sessions in
//! raft, and a new leader resets every session timer); lock-delays are not kept (Consul holds them
//! in memory only).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::sessions::Session;
use super::store::KvStore;

/// File name of the snapshot inside the data dir.
pub const SNAPSHOT_FILE: &str = "state.json";

/// Errors reading or writing the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// File system error, with the path.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The snapshot is not valid JSON of the expected shape.
    #[error("decoding snapshot {path}: {source}")]
    Decode {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: serde_json::Error,
    },
    /// Encoding failed (should not happen).
    #[error("encoding snapshot: {0}")]
    Encode(#[from] serde_json::Error),
    /// The blocking writer task panicked or was cancelled.
    #[error("snapshot writer task failed: {0}")]
    Task(String),
}

/// The persisted state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version (1).
    pub version: u32,
    /// Last committed raft index.
    pub raft_index: u64,
    /// Sessions table index.
    pub sessions_index: u64,
    /// KV table.
    pub kv: KvStore,
    /// Live sessions.
    pub sessions: Vec<Session>,
}

/// Writes snapshots to a directory.
#[derive(Debug)]
pub struct Persister {
    dir: PathBuf,
    /// Raft index known durable; its lock is held while a snapshot is written.
    durable: Mutex<u64>,
    /// The same index, readable without waiting for a snapshot being written (most callers'
    /// index is already covered).
    durable_hint: AtomicU64,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Persister {
    /// Opens `dir` (created if missing) and loads its snapshot, if any.
    ///
    /// Errors: the directory cannot be created, or the snapshot cannot be read or decoded.
    pub fn open(dir: PathBuf) -> Result<(Persister, Option<Snapshot>), PersistError> {
        std::fs::create_dir_all(&dir).map_err(io("creating data dir", &dir))?;
        let path = dir.join(SNAPSHOT_FILE);
        let snap =
            match std::fs::read(&path) {
                Ok(bytes) => Some(serde_json::from_slice::<Snapshot>(&bytes).map_err(
                    |source| PersistError::Decode {
                        path: path.clone(),
                        source,
                    },
                )?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io("reading snapshot", &path)(e)),
            };
        let durable = snap.as_ref().map_or(0, |s| s.raft_index);
        Ok((
            Persister {
                dir,
                durable: Mutex::new(durable),
                durable_hint: AtomicU64::new(durable),
            },
            snap,
        ))
    }

    /// Makes every commit up to `index` durable. `encode` is called (at most once) to take a
    /// snapshot of the current state: it returns `(raft index covered, JSON bytes)`.
    ///
    /// Errors: writing or syncing the snapshot failed.
    pub async fn durable(
        &self,
        index: u64,
        encode: impl FnOnce() -> Result<(u64, Vec<u8>), PersistError>,
    ) -> Result<(), PersistError> {
        if self.durable_hint.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        let mut durable = self.durable.lock().await;
        if *durable >= index {
            return Ok(());
        }
        let (covered, bytes) = encode()?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomic(&dir, &bytes))
            .await
            .map_err(|e| PersistError::Task(e.to_string()))??;
        *durable = covered;
        self.durable_hint.store(covered, Ordering::Release);
        Ok(())
    }

    /// Test hook: holds the snapshot lock, as a slow disk would, until the guard is dropped.
    #[cfg(test)]
    pub async fn hold(&self) -> tokio::sync::MutexGuard<'_, u64> {
        self.durable.lock().await
    }
}

/// Replaces `<dir>/state.json` atomically and durably.
fn write_atomic(dir: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let dst = dir.join(SNAPSHOT_FILE);
    let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &dst).map_err(io("renaming into", &dst))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))?;
    Ok(())
}
