//! The KV table: entries, tombstones and the indexes Consul derives from them.
//!
//! Follows `agent/consul/state/kvs.go`: a single get answers with the table's max index (entries and
//! tombstones) when the key is missing and with the entry's `ModifyIndex` otherwise; a list answers
//! with the max index of entries and tombstones under the prefix (the table index for the empty
//! prefix or when nothing matched); a write of an entry equal to the stored one (same value, flags,
//! session, lock index) changes nothing and keeps `ModifyIndex`.
//!
//! Mutations can be journalled so a `/v1/txn` rolls back exactly.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// One KV entry, as Consul's `structs.DirEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Times the lock on this key has been acquired (by a new session).
    pub lock_index: u64,
    /// The key.
    pub key: String,
    /// Opaque client flags (uint64).
    pub flags: u64,
    /// The value bytes (base64 in the snapshot).
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    /// Session holding the lock, if any.
    pub session: Option<String>,
    /// Raft index that created the key.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

impl DirEntry {
    /// Consul's `DirEntry.Equal`: everything but the indexes.
    fn same_content(&self, other: &DirEntry) -> bool {
        self.lock_index == other.lock_index
            && self.key == other.key
            && self.flags == other.flags
            && self.value == other.value
            && self.session == other.session
    }
}

/// Undo record of one mutation.
#[derive(Debug)]
struct Undo {
    key: String,
    entry: Option<DirEntry>,
    tombstone: Option<u64>,
}

/// The KV table with its tombstones ("graveyard") and table index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<String, DirEntry>,
    tombstones: BTreeMap<String, u64>,
    /// Max index of the kvs and tombstones tables.
    index: u64,
    #[serde(skip)]
    journal: Option<(u64, Vec<Undo>)>,
}

/// Iterates `map` entries whose key starts with `prefix`.
fn under<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl KvStore {
    /// The table index (max over entries and tombstones, 0 when never written).
    pub fn table_index(&self) -> u64 {
        self.index
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `key`.
    pub fn entry(&self, key: &str) -> Option<&DirEntry> {
        self.entries.get(key)
    }

    /// Keys whose lock `session` holds (a scan without cloning values; invalidation is rare).
    pub fn held_by(&self, session: &str) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.session.as_deref() == Some(session))
            .map(|e| e.key.clone())
            .collect()
    }

    /// Single get: `(index, entry)` with the index rule of the module docs.
    pub fn get(&self, key: &str) -> (u64, Option<&DirEntry>) {
        match self.entries.get(key) {
            Some(e) => (e.modify_index, Some(e)),
            None => (self.index, None),
        }
    }

    fn prefix_index(&self, prefix: &str, entries_max: u64) -> u64 {
        if prefix.is_empty() {
            return self.index;
        }
        let graves = under(&self.tombstones, prefix)
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        match entries_max.max(graves) {
            0 => self.index,
            i => i,
        }
    }

    /// Recursive get: `(index, entries under prefix in key order)`.
    pub fn list(&self, prefix: &str) -> (u64, Vec<DirEntry>) {
        let entries: Vec<DirEntry> = under(&self.entries, prefix)
            .map(|(_, e)| e.clone())
            .collect();
        let max = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        (self.prefix_index(prefix, max), entries)
    }

    /// `?keys`: keys under `prefix`, cut after the first `separator` following the prefix (and
    /// deduplicated), as `kvsKeysTxn`.
    pub fn keys(&self, prefix: &str, separator: &str) -> (u64, Vec<String>) {
        self.keys_where(prefix, separator, |_| true)
    }

    /// [`KvStore::keys`] over only the keys `keep` accepts (ACL filtering happens before the
    /// keys are cut at the separator, as `KVS.ListKeys` does); the index counts every key.
    pub fn keys_where(
        &self,
        prefix: &str,
        separator: &str,
        keep: impl Fn(&str) -> bool,
    ) -> (u64, Vec<String>) {
        let mut out: Vec<String> = Vec::new();
        let mut max = 0;
        for (k, e) in under(&self.entries, prefix) {
            max = max.max(e.modify_index);
            if !keep(k) {
                continue;
            }
            let rest = &k[prefix.len()..];
            let key = match (separator.is_empty(), rest.find(separator)) {
                (false, Some(pos)) => &k[..prefix.len() + pos + separator.len()],
                _ => k.as_str(),
            };
            if out.last().map(String::as_str) != Some(key) {
                out.push(key.to_string());
            }
        }
        (self.prefix_index(prefix, max), out)
    }

    /// Starts journalling mutations (for a txn).
    pub fn begin(&mut self) {
        self.journal = Some((self.index, Vec::new()));
    }

    /// Stops journalling and keeps the mutations.
    pub fn commit(&mut self) {
        self.journal = None;
    }

    /// Undoes every mutation since [`KvStore::begin`].
    pub fn rollback(&mut self) {
        if let Some((index, undo)) = self.journal.take() {
            for u in undo.into_iter().rev() {
                match u.entry {
                    Some(e) => self.entries.insert(u.key.clone(), e),
                    None => self.entries.remove(&u.key),
                };
                match u.tombstone {
                    Some(t) => self.tombstones.insert(u.key, t),
                    None => self.tombstones.remove(&u.key),
                };
            }
            self.index = index;
        }
    }

    fn record(&mut self, key: &str) {
        if let Some((_, undo)) = &mut self.journal {
            undo.push(Undo {
                key: key.to_string(),
                entry: self.entries.get(key).cloned(),
                tombstone: self.tombstones.get(key).copied(),
            });
        }
    }

    /// `kvsSetTxn`: stores `entry` at raft index `idx`, keeping `CreateIndex`; unless
    /// `update_session`, keeps the stored session. Returns the stored entry and whether it changed.
    pub fn set(&mut self, idx: u64, mut entry: DirEntry, update_session: bool) -> (DirEntry, bool) {
        let existing = self.entries.get(&entry.key);
        entry.create_index = existing.map_or(idx, |e| e.create_index);
        if !update_session {
            entry.session = existing.and_then(|e| e.session.clone());
        }
        if let Some(e) = existing
            && e.same_content(&entry)
        {
            return (e.clone(), false);
        }
        entry.modify_index = idx;
        self.record(&entry.key);
        self.tombstones.remove(&entry.key);
        self.entries.insert(entry.key.clone(), entry.clone());
        self.index = self.index.max(idx);
        (entry, true)
    }

    /// Deletes `key` at `idx`, leaving a tombstone. Returns whether a key was deleted.
    pub fn delete(&mut self, idx: u64, key: &str) -> bool {
        if !self.entries.contains_key(key) {
            return false;
        }
        self.record(key);
        self.entries.remove(key);
        self.tombstones.insert(key.to_string(), idx);
        self.index = self.index.max(idx);
        true
    }

    /// Deletes every key under `prefix` at `idx`. Returns the deleted keys.
    pub fn delete_tree(&mut self, idx: u64, prefix: &str) -> Vec<String> {
        let keys: Vec<String> = under(&self.entries, prefix)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.delete(idx, k);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &[u8]) -> DirEntry {
        DirEntry {
            lock_index: 0,
            key: key.to_string(),
            flags: 0,
            value: value.to_vec(),
            session: None,
            create_index: 0,
            modify_index: 0,
        }
    }

    #[test]
    fn identical_write_keeps_modify_index() {
        let mut s = KvStore::default();
        assert!(s.set(5, entry("a", b"x"), false).1);
        let (e, changed) = s.set(6, entry("a", b"x"), false);
        assert!(!changed);
        assert_eq!((e.create_index, e.modify_index), (5, 5));
        assert_eq!(s.table_index(), 5);
    }

    #[test]
    fn missing_key_answers_table_index_and_list_counts_tombstones() {
        let mut s = KvStore::default();
        s.set(3, entry("p/a", b"1"), false);
        s.set(4, entry("q", b"1"), false);
        s.delete(7, "p/a");
        assert_eq!(s.get("zzz").0, 7);
        assert_eq!(s.list("p/").0, 7);
        assert_eq!(s.list("q").0, 4);
        assert_eq!(s.list("nothing/").0, 7);
    }

    #[test]
    fn keys_cut_at_separator_and_dedup() {
        let mut s = KvStore::default();
        for (i, k) in ["a/b/c", "a/b/d", "a/e", "b"].iter().enumerate() {
            s.set(i as u64 + 1, entry(k, b""), false);
        }
        assert_eq!(s.keys("a/", "/").1, vec!["a/b/", "a/e"]);
        assert_eq!(s.keys("", "").1.len(), 4);
    }

    #[test]
    fn rollback_restores_entries_tombstones_and_index() {
        let mut s = KvStore::default();
        s.set(1, entry("a", b"1"), false);
        s.begin();
        s.set(2, entry("a", b"2"), false);
        s.delete(2, "a");
        s.set(2, entry("b", b"3"), false);
        s.rollback();
        assert_eq!(s.entry("a").map(|e| e.value.clone()), Some(b"1".to_vec()));
        assert!(s.entry("b").is_none());
        assert_eq!(s.table_index(), 1);
        assert_eq!(s.list("a").0, 1);
    }
}
