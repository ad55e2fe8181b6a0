//! Storage quota per namespace (issue 17): how many requests a namespace may store
//! (`<prefix>/config` `concurrency.namespace_max_requests`, `namespaces.<ns>.max_requests`).
//!
//! The requests watch tells [`StoredRequests`] which requests exist and when each was created
//! (its key's `CreateIndex`). A request is over the quota when at least `quota` requests of its
//! namespace were created before it: the oldest `quota` requests are within it, whatever order
//! the controller reconciles them in. A request over the quota that has not started ends
//! `Failed`/`InvalidSpec` with the quota in its message (and is deleted after its TTL like any
//! finished request, which frees the place); a running one is never stopped by a lowered quota.

use std::collections::{BTreeSet, HashMap};

use super::RequestKey;

/// Requests stored per namespace, ordered by creation.
#[derive(Debug, Default)]
pub struct StoredRequests {
    by_ns: HashMap<String, Namespace>,
}

#[derive(Debug, Default)]
struct Namespace {
    order: BTreeSet<(u64, String)>,
    created: HashMap<String, u64>,
}

impl StoredRequests {
    /// The CreateIndex `key` was stored with, when known: its arrival order.
    pub fn create_index(&self, key: &RequestKey) -> Option<u64> {
        self.by_ns
            .get(&key.namespace)?
            .created
            .get(&key.name)
            .copied()
    }

    /// `key` exists, created at `create_index`.
    pub fn present(&mut self, key: &RequestKey, create_index: u64) {
        let ns = self.by_ns.entry(key.namespace.clone()).or_default();
        if let Some(old) = ns.created.insert(key.name.clone(), create_index) {
            ns.order.remove(&(old, key.name.clone()));
        }
        ns.order.insert((create_index, key.name.clone()));
    }

    /// `key` was deleted.
    pub fn deleted(&mut self, key: &RequestKey) {
        let Some(ns) = self.by_ns.get_mut(&key.namespace) else {
            return;
        };
        if let Some(old) = ns.created.remove(&key.name) {
            ns.order.remove(&(old, key.name.clone()));
        }
        if ns.created.is_empty() {
            self.by_ns.remove(&key.namespace);
        }
    }

    /// Requests stored in `namespace`.
    pub fn count(&self, namespace: &str) -> usize {
        self.by_ns.get(namespace).map_or(0, |n| n.created.len())
    }

    /// How many requests of its namespace were created before `key` (`None` when unknown).
    pub fn created_before(&self, key: &RequestKey) -> Option<usize> {
        let ns = self.by_ns.get(&key.namespace)?;
        let ci = *ns.created.get(&key.name)?;
        Some(ns.order.range(..(ci, key.name.clone())).count())
    }

    /// The refusal message when `key` is over `quota` (module docs), else `None`.
    pub fn over_quota(&self, key: &RequestKey, quota: usize) -> Option<String> {
        let before = self.created_before(key)?;
        (before >= quota).then(|| {
            format!(
                "namespace {ns} stores {n} requests and its quota is {quota} (<prefix>/config concurrency); \
                 this request is past it. Delete finished requests (`jobforge delete NAME -n {ns}`) \
                 or ask the operator for a larger quota, then submit it again",
                ns = key.namespace,
                n = self.count(&key.namespace),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> RequestKey {
        RequestKey::new("team-a", n)
    }

    #[test]
    fn the_oldest_requests_are_within_the_quota_and_a_deletion_frees_a_place() {
        let mut s = StoredRequests::default();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            s.present(&k(n), 10 + i as u64);
        }
        s.present(&RequestKey::new("team-b", "x"), 1);
        assert_eq!(s.over_quota(&k("a"), 2), None);
        assert_eq!(s.over_quota(&k("b"), 2), None);
        let msg = s.over_quota(&k("c"), 2).expect("over");
        assert!(
            msg.contains("quota is 2") && msg.contains("stores 3"),
            "{msg}"
        );
        s.deleted(&k("a"));
        assert_eq!(s.over_quota(&k("c"), 2), None);
        assert_eq!(s.over_quota(&k("unknown"), 0), None);
    }
}
