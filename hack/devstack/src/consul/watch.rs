//! Blocking-query waiters: a registry of exact-key and prefix watches, each with its own
//! [`Notify`], so a write wakes only the queries whose result could have changed.
//!
//! The registry lives under the state mutex: a query registers before it reads (so no write is
//! missed between the read and the wait) and writers notify while they still hold the lock.
//! `Notify::notify_one` stores a permit, so a wake-up that lands before `notified().await` is kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::Notify;

/// What a blocking query watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// One key (single get).
    Key(String),
    /// Every key starting with the prefix (recurse / keys; "" = the whole table).
    Prefix(String),
    /// Any change to the session table.
    Sessions,
    /// Any change to the catalog (nodes, services, checks).
    Catalog,
}

/// Registry of waiters; ids are unique for the process.
#[derive(Debug, Default)]
pub struct Watchers {
    next_id: u64,
    keys: HashMap<String, Vec<(u64, Arc<Notify>)>>,
    prefixes: BTreeMap<String, Vec<(u64, Arc<Notify>)>>,
    sessions: Vec<(u64, Arc<Notify>)>,
    catalog: Vec<(u64, Arc<Notify>)>,
}

impl Watchers {
    /// Registers a waiter; returns its id (for [`Watchers::remove`]) and its notifier.
    pub fn add(&mut self, target: &WatchTarget) -> (u64, Arc<Notify>) {
        self.next_id += 1;
        let id = self.next_id;
        let n = Arc::new(Notify::new());
        let list = match target {
            WatchTarget::Key(k) => self.keys.entry(k.clone()).or_default(),
            WatchTarget::Prefix(p) => self.prefixes.entry(p.clone()).or_default(),
            WatchTarget::Sessions => &mut self.sessions,
            WatchTarget::Catalog => &mut self.catalog,
        };
        list.push((id, n.clone()));
        (id, n)
    }

    /// Unregisters waiter `id`.
    pub fn remove(&mut self, target: &WatchTarget, id: u64) {
        fn drop_id(list: Option<&mut Vec<(u64, Arc<Notify>)>>, id: u64) -> bool {
            match list {
                Some(l) => {
                    l.retain(|(i, _)| *i != id);
                    l.is_empty()
                }
                None => false,
            }
        }
        match target {
            WatchTarget::Key(k) => {
                if drop_id(self.keys.get_mut(k), id) {
                    self.keys.remove(k);
                }
            }
            WatchTarget::Prefix(p) => {
                if drop_id(self.prefixes.get_mut(p), id) {
                    self.prefixes.remove(p);
                }
            }
            WatchTarget::Sessions => {
                self.sessions.retain(|(i, _)| *i != id);
            }
            WatchTarget::Catalog => {
                self.catalog.retain(|(i, _)| *i != id);
            }
        }
    }

    /// Wakes the waiters on `key` and on every prefix of it: O(len(key) · log n) lookups.
    pub fn key_changed(&self, key: &str) {
        if let Some(l) = self.keys.get(key) {
            l.iter().for_each(|(_, n)| n.notify_one());
        }
        if self.prefixes.is_empty() {
            return;
        }
        let mut ends: Vec<usize> = key.char_indices().map(|(i, _)| i).collect();
        ends.push(key.len());
        for end in ends {
            if let Some(l) = self.prefixes.get(&key[..end]) {
                l.iter().for_each(|(_, n)| n.notify_one());
            }
        }
    }

    /// Wakes the session-table waiters.
    pub fn sessions_changed(&self) {
        self.sessions.iter().for_each(|(_, n)| n.notify_one());
    }

    /// Wakes the catalog waiters (health and catalog endpoints).
    pub fn catalog_changed(&self) {
        self.catalog.iter().for_each(|(_, n)| n.notify_one());
    }

    /// True when no query waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of registered waiters (for tests).
    pub fn len(&self) -> usize {
        self.keys.values().map(Vec::len).sum::<usize>()
            + self.prefixes.values().map(Vec::len).sum::<usize>()
            + self.sessions.len()
            + self.catalog.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(n: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(20), n.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn write_wakes_exact_and_prefix_waiters_only() {
        let mut w = Watchers::default();
        let (_, exact) = w.add(&WatchTarget::Key("a/b".into()));
        let (_, prefix) = w.add(&WatchTarget::Prefix("a/".into()));
        let (_, all) = w.add(&WatchTarget::Prefix(String::new()));
        let (_, other) = w.add(&WatchTarget::Key("a/c".into()));
        let (_, other_prefix) = w.add(&WatchTarget::Prefix("b/".into()));
        w.key_changed("a/b");
        assert!(woken(&exact).await);
        assert!(woken(&prefix).await);
        assert!(woken(&all).await);
        assert!(!woken(&other).await);
        assert!(!woken(&other_prefix).await);
    }

    #[test]
    fn remove_forgets_the_waiter() {
        let mut w = Watchers::default();
        let t = WatchTarget::Prefix("x".into());
        let (id, _) = w.add(&t);
        assert_eq!(w.len(), 1);
        w.remove(&t, id);
        assert_eq!(w.len(), 0);
    }
}
