//! Concurrency groups (`spec.concurrency_group`, issue 17): which unfinished request of a
//! namespace's group a newer one supersedes.
//!
//! "Newer" is the higher generation (the spec key's `ModifyIndex`: the request written later).
//! When a member starts its build ([`Groups::started`]), every older unfinished member is
//! superseded by it; a member that asks to start after a newer member already started is
//! superseded at once ([`Groups::superseded_by`]). Members leave when they finish or are
//! deleted ([`Groups::leave`]). Pure; the reconciler keeps one per leadership term, so a new
//! leader learns the groups again on its first pass over every request.

use std::collections::HashMap;

use super::RequestKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    generation: u64,
    started: bool,
}

/// Unfinished members of every group, and which members were superseded by whom.
#[derive(Debug, Default)]
pub struct Groups {
    /// `(namespace, group)` → name → member.
    members: HashMap<(String, String), HashMap<String, Member>>,
    /// Group of each member, to leave without knowing it.
    group_of: HashMap<RequestKey, String>,
    /// Superseded requests → name of the newer one.
    superseded: HashMap<RequestKey, String>,
}

impl Groups {
    /// Records `key` (at `generation`) as an unfinished member of `group`, and whether it has
    /// started its build. A new group or generation replaces the old record.
    pub fn note(&mut self, key: &RequestKey, group: &str, generation: u64, started: bool) {
        if self.group_of.get(key).is_some_and(|g| g != group) {
            self.leave(key);
        }
        self.group_of.insert(key.clone(), group.to_string());
        let m = self
            .members
            .entry((key.namespace.clone(), group.to_string()))
            .or_default();
        let e = m.entry(key.name.clone()).or_insert(Member {
            generation,
            started,
        });
        if e.generation != generation {
            *e = Member {
                generation,
                started,
            };
        } else {
            e.started |= started;
        }
    }

    /// `key` started its build: every older unfinished member of its group is superseded by it.
    /// Returns those members (to be reconciled, so they stop).
    pub fn started(&mut self, key: &RequestKey, group: &str, generation: u64) -> Vec<RequestKey> {
        self.note(key, group, generation, true);
        let Some(m) = self
            .members
            .get(&(key.namespace.clone(), group.to_string()))
        else {
            return Vec::new();
        };
        let older: Vec<RequestKey> = m
            .iter()
            .filter(|(name, o)| **name != key.name && o.generation < generation)
            .map(|(name, _)| RequestKey::new(key.namespace.clone(), name.clone()))
            .collect();
        for o in &older {
            self.superseded.insert(o.clone(), key.name.clone());
        }
        older
    }

    /// The newer request that supersedes `key` (of `group` at `generation`): one recorded by
    /// [`Groups::started`], or a newer member that has already started.
    pub fn superseded_by(&self, key: &RequestKey, group: &str, generation: u64) -> Option<String> {
        if let Some(n) = self.superseded.get(key) {
            return Some(n.clone());
        }
        self.members
            .get(&(key.namespace.clone(), group.to_string()))?
            .iter()
            .filter(|(name, o)| **name != key.name && o.started && o.generation > generation)
            .max_by_key(|(_, o)| o.generation)
            .map(|(name, _)| name.clone())
    }

    /// `key` finished or was deleted: it leaves its group.
    pub fn leave(&mut self, key: &RequestKey) {
        self.superseded.remove(key);
        let Some(group) = self.group_of.remove(key) else {
            return;
        };
        let gk = (key.namespace.clone(), group);
        if let Some(m) = self.members.get_mut(&gk) {
            m.remove(&key.name);
            if m.is_empty() {
                self.members.remove(&gk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> RequestKey {
        RequestKey::new("team-a", n)
    }

    #[test]
    fn a_starting_member_supersedes_older_unfinished_ones_only() {
        let mut g = Groups::default();
        g.note(&k("old"), "main", 5, true);
        g.note(&k("queued-old"), "main", 6, false);
        g.note(&k("other-group"), "release", 4, true);
        g.note(&k("newest"), "main", 9, false);
        let mut sup = g.started(&k("mid"), "main", 7);
        sup.sort();
        assert_eq!(sup, vec![k("old"), k("queued-old")]);
        assert_eq!(g.superseded_by(&k("old"), "main", 5), Some("mid".into()));
        assert_eq!(g.superseded_by(&k("newest"), "main", 9), None);
        assert_eq!(g.superseded_by(&k("other-group"), "release", 4), None);
    }

    #[test]
    fn an_older_member_asking_after_a_newer_one_started_is_superseded() {
        let mut g = Groups::default();
        g.started(&k("new"), "main", 9);
        g.note(&k("old"), "main", 3, false);
        assert_eq!(g.superseded_by(&k("old"), "main", 3), Some("new".into()));
        g.leave(&k("new"));
        assert_eq!(g.superseded_by(&k("old"), "main", 3), None);
    }

    #[test]
    fn namespaces_do_not_share_groups() {
        let mut g = Groups::default();
        g.note(&RequestKey::new("team-b", "old"), "main", 1, true);
        assert!(g.started(&k("new"), "main", 9).is_empty());
    }
}
