//! An in-memory [`Kv`] with Consul's index semantics (one raft-like index incremented per write,
//! `ModifyIndex` per key, CAS, blocking reads that wake on any later write). For unit tests of
//! the store and of the CLI's pure parts; not a Consul emulator (that is `jobforge-devstack`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::{Blocking, Kv, KvEntry, KvError};

#[derive(Debug, Default)]
struct Inner {
    index: u64,
    data: BTreeMap<String, (Vec<u8>, u64)>,
}

/// In-memory KV; clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryKv {
    inner: Arc<Mutex<Inner>>,
    tx: Arc<watch::Sender<u64>>,
}

impl Default for MemoryKv {
    fn default() -> Self {
        let (tx, _) = watch::channel(1);
        MemoryKv {
            inner: Arc::new(Mutex::new(Inner {
                index: 1,
                data: BTreeMap::new(),
            })),
            tx: Arc::new(tx),
        }
    }
}

impl MemoryKv {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a test panicked while holding it; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn wait_past(&self, blocking: Blocking) {
        if blocking.index == 0 {
            return;
        }
        let mut rx = self.tx.subscribe();
        let wait = blocking.wait.unwrap_or(Duration::from_secs(300));
        let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > blocking.index)).await;
    }

    fn bump(&self, inner: &mut Inner) -> u64 {
        inner.index += 1;
        self.tx.send_replace(inner.index);
        inner.index
    }
}

impl Kv for MemoryKv {
    async fn get(&self, key: &str, blocking: Blocking) -> Result<(u64, Option<KvEntry>), KvError> {
        self.wait_past(blocking).await;
        let inner = self.lock();
        Ok((
            inner.index,
            inner.data.get(key).map(|(v, m)| KvEntry {
                key: key.to_string(),
                value: v.clone(),
                modify_index: *m,
            }),
        ))
    }

    async fn list(&self, prefix: &str, blocking: Blocking) -> Result<(u64, Vec<KvEntry>), KvError> {
        self.wait_past(blocking).await;
        let inner = self.lock();
        let items = inner
            .data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, m))| KvEntry {
                key: k.clone(),
                value: v.clone(),
                modify_index: *m,
            })
            .collect();
        Ok((inner.index, items))
    }

    async fn put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool, KvError> {
        let mut inner = self.lock();
        let current = inner.data.get(key).map(|(_, m)| *m).unwrap_or(0);
        if cas.is_some_and(|c| c != current) {
            return Ok(false);
        }
        let idx = self.bump(&mut inner);
        inner.data.insert(key.to_string(), (value.to_vec(), idx));
        Ok(true)
    }

    async fn delete(&self, key: &str, cas: Option<u64>, recurse: bool) -> Result<bool, KvError> {
        let mut inner = self.lock();
        if recurse {
            let keys: Vec<String> = inner
                .data
                .keys()
                .filter(|k| k.starts_with(key))
                .cloned()
                .collect();
            for k in keys {
                inner.data.remove(&k);
            }
        } else {
            let current = inner.data.get(key).map(|(_, m)| *m).unwrap_or(0);
            if cas.is_some_and(|c| c != current) {
                return Ok(false);
            }
            inner.data.remove(key);
        }
        self.bump(&mut inner);
        Ok(true)
    }
}
