//! The KV table: entries, tombstones and the indexes Consul derives from them.
//!
//! Follows `agent/consul/state/kvs.go`: a single get answers with the table's max index (entries and
//! tombstones) when the key is missing and with the entry's `ModifyIndex` otherwise; a list answers
//! with the max index of entries and tombstones under the prefix (the table index for the empty
//! prefix or when nothing matched); a write of an entry equal to the stored one (same value, flags,
//! session, lock index) changes nothing and keeps `ModifyIndex`.
//!
//! Mutations can be journalled so a `/v1/txn` rolls back exactly.
//!
//! Cost. Consul computes a listing's index by visiting every entry under the prefix
//! (`kvsListTxn`), and `KVSEndpoint.ListKeys` cuts every key at the separator. The answers here
//! are the same, but cheaper, so that a benchmark with 100,000 stored keys measures the
//! controller rather than this emulator: a prefix's index is kept once asked for (updated by
//! every write under it: a write always carries the newest raft index, so the max is that
//! index; cleared on a txn rollback, the only change that lowers it), and a `?keys&separator=`
//! listing visits one key per folder (it seeks past each folder's keys) instead of every key.
//! `tests::fast_listings_answer_as_the_naive_scan_does` checks both against the plain scan.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

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
    /// Max ModifyIndex of entries and tombstones under each prefix a listing asked for (0 when
    /// none): see the module docs. At most [`PREFIX_CACHE_MAX`] prefixes.
    #[serde(skip)]
    prefix_max: Mutex<HashMap<String, u64>>,
}

/// Prefixes whose index is kept at most (the cache is dropped when full; it refills on demand).
const PREFIX_CACHE_MAX: usize = 4096;

/// The smallest string above every string that starts with `folder` (string order is code
/// point order): `folder` cut after its last character below `char::MAX`, that character
/// replaced by the next one; `None` when every character is `char::MAX`.
fn past(folder: &str) -> Option<String> {
    folder.char_indices().rev().find_map(|(at, c)| {
        let next = (c as u32 + 1..=char::MAX as u32).find_map(char::from_u32)?;
        let mut s = folder[..at].to_string();
        s.push(next);
        Some(s)
    })
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

    /// The index of a listing of `prefix` (module docs: max over entries and tombstones under
    /// it, the table index when there is none or the prefix is empty).
    fn prefix_index(&self, prefix: &str) -> u64 {
        if prefix.is_empty() {
            return self.index;
        }
        let mut cache = self.prefix_max.lock().unwrap_or_else(|p| p.into_inner());
        let max = match cache.get(prefix) {
            Some(m) => *m,
            None => {
                let entries = under(&self.entries, prefix).map(|(_, e)| e.modify_index);
                let graves = under(&self.tombstones, prefix).map(|(_, i)| *i);
                let m = entries.chain(graves).max().unwrap_or(0);
                if cache.len() >= PREFIX_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(prefix.to_string(), m);
                m
            }
        };
        match max {
            0 => self.index,
            i => i,
        }
    }

    /// A write at `idx` under `key`: every kept prefix of `key` now has index `idx`.
    fn touch(&mut self, key: &str, idx: u64) {
        let cache = self.prefix_max.get_mut().unwrap_or_else(|p| p.into_inner());
        if cache.is_empty() {
            return;
        }
        let ends = key.char_indices().map(|(i, _)| i).skip(1);
        for end in ends.chain([key.len()]) {
            if let Some(m) = cache.get_mut(&key[..end]) {
                *m = (*m).max(idx);
            }
        }
    }

    /// Recursive get: `(index, entries under prefix in key order)`.
    pub fn list(&self, prefix: &str) -> (u64, Vec<DirEntry>) {
        let entries: Vec<DirEntry> = under(&self.entries, prefix)
            .map(|(_, e)| e.clone())
            .collect();
        (self.prefix_index(prefix), entries)
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
        let mut from = Bound::Included(prefix.to_string());
        'scan: loop {
            let mut range = self
                .entries
                .range::<str, _>((from.as_ref().map(String::as_str), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix));
            while let Some((k, _)) = range.next() {
                let rest = &k[prefix.len()..];
                let folder = match (separator.is_empty(), rest.find(separator)) {
                    (false, Some(pos)) => &k[..prefix.len() + pos + separator.len()],
                    _ => {
                        if keep(k) {
                            out.push(k.clone());
                        }
                        continue;
                    }
                };
                // A folder is listed when any key in it may be read (ACL filtering happens
                // before the cut, as in `KVSEndpoint.ListKeys`); then seek past its keys.
                let listed = keep(k)
                    || range
                        .by_ref()
                        .take_while(|(k2, _)| k2.starts_with(folder))
                        .any(|(k2, _)| keep(k2));
                if listed {
                    out.push(folder.to_string());
                }
                match past(folder) {
                    Some(next) => {
                        from = Bound::Included(next);
                        continue 'scan;
                    }
                    // No string is above the folder's keys: they run to the end.
                    None => break 'scan,
                }
            }
            break;
        }
        (self.prefix_index(prefix), out)
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
            // The only change that can lower a prefix's index: forget them all.
            self.prefix_max
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
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
        self.touch(&entry.key, idx);
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
        self.touch(key, idx);
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

    /// The plain scan Consul does (`kvsListTxn` + `KVSEndpoint.ListKeys`), for comparison.
    fn naive_keys(
        s: &KvStore,
        prefix: &str,
        separator: &str,
        keep: impl Fn(&str) -> bool,
    ) -> (u64, Vec<String>) {
        let mut out: Vec<String> = Vec::new();
        let mut max = 0;
        for (k, e) in under(&s.entries, prefix) {
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
        let graves = under(&s.tombstones, prefix).map(|(_, i)| *i).max();
        let idx = match (prefix.is_empty(), max.max(graves.unwrap_or(0))) {
            (true, _) | (false, 0) => s.index,
            (false, i) => i,
        };
        (idx, out)
    }

    #[test]
    fn past_is_above_every_string_of_the_folder() {
        assert_eq!(past("a/").as_deref(), Some("a0"));
        assert_eq!(past("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(past("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(past("\u{10FFFF}"), None);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Set(String, u8),
            Delete(String),
            /// A txn of these writes, rolled back.
            RolledBack(Vec<(String, u8)>),
            /// Ask for a listing (fills the prefix cache between writes).
            List(String, String),
        }

        fn key() -> impl Strategy<Value = String> {
            proptest::collection::vec(prop_oneof!["a", "b", "/", "-", "\u{10FFFF}", "é"], 0..6)
                .prop_map(|p| p.concat())
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (key(), any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
                2 => key().prop_map(Op::Delete),
                1 => proptest::collection::vec((key(), any::<u8>()), 1..4).prop_map(Op::RolledBack),
                2 => (key(), prop_oneof!["", "/", "-", "a/", "\u{10FFFF}"].prop_map(String::from))
                    .prop_map(|(p, sep)| Op::List(p, sep)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            /// The kept prefix indexes and the folder skip-scan answer exactly what the plain
            /// scan answers, for every prefix and separator, with and without an ACL filter.
            #[test]
            fn fast_listings_answer_as_the_naive_scan_does(ops in proptest::collection::vec(op(), 1..40),
                                                           prefixes in proptest::collection::vec(key(), 1..6)) {
                let mut s = KvStore::default();
                let mut idx = 0;
                let readable = |k: &str| !k.contains('-');
                for op in ops {
                    idx += 1;
                    match op {
                        Op::Set(k, v) => { s.set(idx, entry(&k, &[v]), false); }
                        Op::Delete(k) => { s.delete(idx, &k); }
                        Op::RolledBack(writes) => {
                            s.begin();
                            for (k, v) in writes { s.set(idx, entry(&k, &[v]), false); }
                            s.rollback();
                        }
                        Op::List(p, sep) => {
                            prop_assert_eq!(s.keys(&p, &sep), naive_keys(&s, &p, &sep, |_| true));
                        }
                    }
                    for p in &prefixes {
                        for sep in ["", "/", "-", "a/", "\u{10FFFF}"] {
                            prop_assert_eq!(s.keys(p, sep), naive_keys(&s, p, sep, |_| true));
                            prop_assert_eq!(s.keys_where(p, sep, readable), naive_keys(&s, p, sep, readable));
                        }
                        prop_assert_eq!(s.list(p).0, naive_keys(&s, p, "", |_| true).0);
                    }
                }
            }
        }
    }
}
