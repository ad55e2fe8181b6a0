//! A `Stream` of KV changes for a key, a prefix, or the key names under a prefix, driven by
//! blocking queries. The entry points ([`watch_key`], [`watch_prefix`], [`watch_keys`],
//! [`watch_folders`]) share one state machine; only the read differs. [`watch_prefix_sharded`]
//! and [`watch_keys_sharded`] merge one such watch per folder under a prefix.
//!
//! The loop follows Consul's client rules for blocking queries (`features/blocking`):
//! - the index returned by a read is the next request's `index`; if it goes backwards (snapshot
//!   restore, tombstone reaping) it is reset to 0 (one non-blocking read, then blocking again);
//!   it is kept ≥ 1 so a read always blocks after the first;
//! - requests are rate-limited by a token bucket (burst 2, refill [`WatchOptions::rate_per_sec`]),
//!   so a key that changes constantly degrades to polling at that rate instead of a hot loop;
//! - errors are retried with exponential backoff with jitter (backon), each announced as
//!   [`WatchEvent::Restarting`] so callers can count restarts; the request after an error uses
//!   index 0, so it answers at once instead of blocking a whole `wait` when Consul comes back
//!   unchanged, and its success is announced as [`WatchEvent::Resumed`] (the per-key ModifyIndex
//!   diff still yields only the keys that really changed meanwhile);
//! - only real changes are yielded: each key's ModifyIndex is compared with the last one seen.
//!
//! There is no fixed-interval polling: an idle watch makes one request per `wait` period.
//! The stream ends when the [`CancellationToken`] is cancelled; dropping it cancels too.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod sharded;

pub use sharded::{watch_keys_sharded, watch_prefix_sharded};

use super::client::Client;
use super::error::Result;
use super::kv::{KvPair, QueryOptions};

/// Tuning of a watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Blocking `wait` of each request (default 5 min, Consul's default).
    pub wait: Duration,
    /// Token-bucket refill rate, requests per second (default 10).
    pub rate_per_sec: f64,
    /// Token-bucket capacity (default 2).
    pub burst: u32,
    /// Use `consistent` reads.
    pub consistent: bool,
    /// First delay after an error (default 250 ms); doubles up to `max_backoff`, with jitter.
    pub min_backoff: Duration,
    /// Longest delay after repeated errors (default 30 s).
    pub max_backoff: Duration,
    /// Ends the stream when cancelled.
    pub cancel: CancellationToken,
    /// Sharded watches only ([`watch_prefix_sharded`], [`watch_keys_sharded`]): park a folder
    /// whose blocking read stayed unchanged this long (its read then waits this long instead of
    /// Consul's longest wait), and watch it with probes instead of a blocking read of its own
    /// (module docs of `sharded`). `None` (the default): every folder keeps its blocking read.
    pub park_after: Option<Duration>,
    /// Sharded watches with `park_after`: the shortest time between two probe rounds of the
    /// parked folders (default 1 s); a change inside that time is probed right after it.
    pub probe_interval: Duration,
    /// Sharded watches: the `watch` label of the `jobforge_watch_folders{watch, state}` gauge
    /// (folders `active` and `parked`); `None` sets no gauge.
    pub metrics_label: Option<&'static str>,
    /// Sharded watches: told the numbers of active and parked folders after each change (for
    /// tests and callers that wait until every folder is parked).
    pub folder_states: Option<tokio::sync::watch::Sender<FolderStates>>,
}

/// How many folders of a sharded watch are parked ([`WatchOptions::park_after`]) and how many
/// are not (yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FolderStates {
    /// Folders with a blocking read of their own, or parked but not yet confirmed by their
    /// first probe.
    pub active: usize,
    /// Parked folders whose first probe confirmed them: they make no request until a change.
    pub parked: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            wait: Duration::from_secs(300),
            rate_per_sec: 10.0,
            burst: 2,
            consistent: false,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            cancel: CancellationToken::new(),
            park_after: None,
            probe_interval: Duration::from_secs(1),
            metrics_label: None,
            folder_states: None,
        }
    }
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The first complete listing (possibly empty), sorted by key, and its index. Always the
    /// first item of a stream; change events follow.
    Initial {
        /// `X-Consul-Index` of the listing.
        index: u64,
        /// Every key present.
        pairs: Vec<KvPair>,
    },
    /// A key that did not exist before.
    Added(KvPair),
    /// A key whose ModifyIndex changed (value, flags or lock holder).
    Modified(KvPair),
    /// A key that disappeared: the last version seen, without its value (a watch keeps only
    /// each key's indexes, flags and session, so its memory does not grow with the values
    /// stored: 100,000 requests of ~600 B would otherwise be kept twice, issue 17).
    Deleted(KvPair),
    /// A request failed; the watch retries after `retry_in` keeping its state.
    Restarting {
        /// The error, rendered.
        error: String,
        /// Whether the error is transient ([`super::ConsulError::is_transient`]).
        transient: bool,
        /// Delay before the next request.
        retry_in: Duration,
    },
    /// The first successful read after one or more [`WatchEvent::Restarting`]: Consul answers
    /// again. Comes after that read's own events (the `Initial` listing or the changes missed
    /// while failing), at most once per outage.
    Resumed {
        /// `X-Consul-Index` of the read that succeeded.
        index: u64,
    },
}

/// Next `index` after a read answered `got` when the previous request used `prev`
/// (Consul `features/blocking`, "Implementation details"): backwards → 0, otherwise `got`
/// kept ≥ 1.
/// The index of the next blocking read after an answer with index `got` to a read at `prev`:
/// 0 (a fresh read) when the index went backwards, else at least 1 (Consul's client rules).
pub fn next_index(prev: u64, got: u64) -> u64 {
    if got < prev { 0 } else { got.max(1) }
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
struct TokenBucket {
    capacity: f64,
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `rate` ≤ 0 is treated as 1 per second; `burst` 0 as 1.
    fn new(burst: u32, rate: f64, now: Instant) -> TokenBucket {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            tokens: capacity,
            rate: if rate > 0.0 { rate } else { 1.0 },
            last: now,
        }
    }

    /// Takes one token at `now`; returns how long the caller must wait before proceeding
    /// (zero when a token was available).
    fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// `p` without its value: what a watch remembers of a key (its ModifyIndex tells a change).
pub(crate) fn without_value(p: &KvPair) -> KvPair {
    KvPair {
        key: p.key.clone(),
        value: Vec::new(),
        flags: p.flags,
        create_index: p.create_index,
        modify_index: p.modify_index,
        lock_index: p.lock_index,
        session: p.session.clone(),
    }
}

/// Compares a new listing with the known state and returns the change events, updating `known`
/// (which keeps pairs without their values: [`WatchEvent::Deleted`]).
pub fn diff(known: &mut HashMap<String, KvPair>, listing: Vec<KvPair>) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    let mut seen: BTreeMap<String, KvPair> = BTreeMap::new();
    for p in listing {
        seen.insert(p.key.clone(), p);
    }
    let mut gone: Vec<String> = known
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .cloned()
        .collect();
    gone.sort();
    for k in gone {
        if let Some(p) = known.remove(&k) {
            events.push(WatchEvent::Deleted(p));
        }
    }
    for (k, p) in seen {
        match known.get(&k) {
            None => {
                known.insert(k, without_value(&p));
                events.push(WatchEvent::Added(p));
            }
            Some(old) if old.modify_index != p.modify_index => {
                known.insert(k, without_value(&p));
                events.push(WatchEvent::Modified(p));
            }
            Some(_) => {}
        }
    }
    events
}

#[derive(Debug, Clone)]
enum Target {
    Key(String),
    Prefix(String),
    /// Key names only (`?keys`): pairs carry just `key`, so only `Added`/`Deleted` are seen.
    Keys(String),
    /// Key names cut one level below the prefix (`?keys&separator=/`): the "folders" (ending in
    /// `/`) and the keys directly under the prefix.
    Folders(String),
}

struct State {
    client: Client,
    target: Target,
    opts: WatchOptions,
    index: u64,
    known: HashMap<String, KvPair>,
    synced: bool,
    bucket: TokenBucket,
    backoff: Option<backon::ExponentialBackoff>,
    delay: Duration,
    /// A request failed since the last success: the next success emits `Resumed`.
    failing: bool,
    /// The last step was a blocking read (index ≥ 1, after the first listing) that answered
    /// with the index it was sent with: nothing under the target changed while it waited.
    quiet: bool,
    /// `X-Consul-Index` of the last successful read (`None` after a failed one).
    answered: Option<u64>,
}

impl State {
    /// A watch that starts with a listing: its first success is the `Initial` event.
    fn new(client: Client, target: Target, opts: WatchOptions) -> State {
        State::seeded(client, target, opts, 0, None)
    }

    /// A watch of `target` that already knows its keys (`known`, as a watch keeps them: pairs
    /// without values) as of `index` (0: read at once without blocking): no `Initial`, its
    /// first read's listing is diffed against `known`. `None`: a fresh watch ([`State::new`]).
    fn seeded(
        client: Client,
        target: Target,
        opts: WatchOptions,
        index: u64,
        known: Option<HashMap<String, KvPair>>,
    ) -> State {
        let bucket = TokenBucket::new(opts.burst, opts.rate_per_sec, Instant::now());
        let synced = known.is_some();
        State {
            client,
            target,
            opts,
            index: if synced { index } else { 0 },
            known: known.unwrap_or_default(),
            synced,
            bucket,
            backoff: None,
            delay: Duration::ZERO,
            failing: false,
            quiet: false,
            answered: None,
        }
    }

    async fn fetch(&self, q: QueryOptions) -> Result<(u64, Vec<KvPair>)> {
        match &self.target {
            Target::Key(k) => {
                let (i, p) = self.client.kv_get(k, q).await?;
                Ok((i, p.into_iter().collect()))
            }
            Target::Prefix(p) => self.client.kv_list(p, q).await,
            Target::Keys(p) => {
                let (i, keys) = self.client.kv_keys(p, None, q).await?;
                Ok((i, keys.into_iter().map(key_only).collect()))
            }
            Target::Folders(p) => {
                let (i, keys) = self.client.kv_keys(p, Some("/"), q).await?;
                Ok((i, keys.into_iter().map(key_only).collect()))
            }
        }
    }

    fn backoff_builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.opts.min_backoff)
            .with_max_delay(self.opts.max_backoff)
            .without_max_times()
    }

    /// One step: wait (backoff, rate limit), one request, its events. `None` = cancelled.
    async fn step(&mut self) -> Option<Vec<WatchEvent>> {
        let cancel = self.opts.cancel.clone();
        let pause = std::mem::take(&mut self.delay);
        let limit = self.bucket.take(Instant::now());
        let until = Instant::now() + pause.max(limit);
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep_until(until) => {}
        }
        let q = QueryOptions {
            index: self.index,
            wait: Some(self.opts.wait),
            consistent: self.opts.consistent,
            stale: false,
        };
        let r = tokio::select! {
            _ = cancel.cancelled() => return None,
            r = self.fetch(q) => r,
        };
        self.quiet = false;
        self.answered = None;
        match r {
            Ok((got, listing)) => {
                self.backoff = None;
                let prev = self.index;
                self.quiet = self.synced && prev >= 1 && got == prev;
                self.answered = Some(got);
                self.index = next_index(prev, got);
                if self.index == 0 {
                    tracing::debug!(prev, got, "consul watch index went backwards; resetting");
                }
                let mut events = if self.synced {
                    diff(&mut self.known, listing)
                } else {
                    self.synced = true;
                    let mut pairs = listing;
                    pairs.sort_by(|a, b| a.key.cmp(&b.key));
                    for p in &pairs {
                        self.known.insert(p.key.clone(), without_value(p));
                    }
                    vec![WatchEvent::Initial { index: got, pairs }]
                };
                if std::mem::take(&mut self.failing) {
                    tracing::info!(index = got, "consul watch resumed");
                    events.push(WatchEvent::Resumed { index: got });
                }
                Some(events)
            }
            Err(e) => {
                // Consul may come back unchanged: a blocking read from the old index would then
                // wait a whole `wait` before telling us it is back, so read once without blocking.
                self.index = 0;
                self.failing = true;
                let builder = self.backoff_builder();
                let b = self.backoff.get_or_insert_with(|| builder.build());
                let retry_in = b.next().unwrap_or(self.opts.max_backoff);
                self.delay = retry_in;
                tracing::warn!(error = %e, ?retry_in, "consul watch request failed; retrying");
                Some(vec![WatchEvent::Restarting {
                    error: e.to_string(),
                    transient: e.is_transient(),
                    retry_in,
                }])
            }
        }
    }
}

/// A pair that stands for a key name from a `?keys` listing: no value, every index 0, so the
/// per-key diff reports it `Added` or `Deleted`, never `Modified`.
fn key_only(key: String) -> KvPair {
    KvPair {
        key,
        value: Vec::new(),
        flags: 0,
        create_index: 0,
        modify_index: 0,
        lock_index: 0,
        session: None,
    }
}

fn watch(client: Client, target: Target, opts: WatchOptions) -> impl Stream<Item = WatchEvent> {
    let state = State::new(client, target, opts);
    futures::stream::unfold(state, |mut s| async move {
        let events = s.step().await?;
        Some((futures::stream::iter(events), s))
    })
    .flatten()
}

/// Watches every key under `prefix` (`recurse` blocking reads). First item:
/// [`WatchEvent::Initial`]; then `Added`/`Modified`/`Deleted` per changed key, `Restarting`
/// on errors and `Resumed` after the first success that follows them. Ends when `opts.cancel`
/// is cancelled.
pub fn watch_prefix(
    client: Client,
    prefix: impl Into<String>,
    opts: WatchOptions,
) -> impl Stream<Item = WatchEvent> {
    watch(client, Target::Prefix(prefix.into()), opts)
}

/// Watches one key; same events as [`watch_prefix`] (the initial listing has 0 or 1 entry).
pub fn watch_key(
    client: Client,
    key: impl Into<String>,
    opts: WatchOptions,
) -> impl Stream<Item = WatchEvent> {
    watch(client, Target::Key(key.into()), opts)
}

/// Watches the key *names* under `prefix` (blocking `?keys` reads: no values travel, so a listing
/// of thousands of keys stays small). Same events as [`watch_prefix`], except that each pair
/// carries only its `key` (empty value, indexes 0), so changes of a value are not seen: only
/// `Added` and `Deleted`.
pub fn watch_keys(
    client: Client,
    prefix: impl Into<String>,
    opts: WatchOptions,
) -> impl Stream<Item = WatchEvent> {
    watch(client, Target::Keys(prefix.into()), opts)
}

/// Watches the names one level below `prefix` (blocking `?keys&separator=/` reads): each folder
/// `prefix<name>/` and each key directly under `prefix`, as key-only pairs (see [`watch_keys`]):
/// `Added` when the first key under a folder appears, `Deleted` when its last one goes. The
/// listing is small (one name per folder), but Consul answers it whenever anything under
/// `prefix` changes (its index is the prefix's highest ModifyIndex), so each change costs one
/// such listing.
pub fn watch_folders(
    client: Client,
    prefix: impl Into<String>,
    opts: WatchOptions,
) -> impl Stream<Item = WatchEvent> {
    watch(client, Target::Folders(prefix.into()), opts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(k: &str, m: u64) -> KvPair {
        KvPair {
            key: k.into(),
            value: vec![],
            flags: 0,
            create_index: 1,
            modify_index: m,
            lock_index: 0,
            session: None,
        }
    }

    #[test]
    fn index_going_backwards_resets_to_zero_and_zero_becomes_one() {
        assert_eq!(next_index(0, 0), 1);
        assert_eq!(next_index(0, 7), 7);
        assert_eq!(next_index(7, 7), 7);
        assert_eq!(next_index(7, 9), 9);
        assert_eq!(next_index(9, 3), 0);
    }

    proptest! {
        #[test]
        fn next_index_is_zero_only_when_going_backwards(prev in 0u64..1000, got in 0u64..1000) {
            let n = next_index(prev, got);
            prop_assert_eq!(n == 0, got < prev);
            if got >= prev { prop_assert!(n >= 1 && n >= got); }
        }
    }

    #[test]
    fn token_bucket_allows_a_burst_of_two_then_paces_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 10.0, t0);
        assert_eq!(b.take(t0), Duration::ZERO);
        assert_eq!(b.take(t0), Duration::ZERO);
        let w = b.take(t0);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-6, "{w:?}");
        // After a long idle period the bucket is full again, but never above its capacity.
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(b.take(t1), Duration::ZERO);
        assert_eq!(b.take(t1), Duration::ZERO);
        assert!(b.take(t1) > Duration::ZERO);
    }

    #[test]
    fn key_only_pairs_are_added_and_deleted_never_modified() {
        let mut known = HashMap::new();
        let ev = diff(&mut known, vec![key_only("a".into()), key_only("b".into())]);
        assert_eq!(ev.len(), 2);
        assert!(diff(&mut known, vec![key_only("a".into()), key_only("b".into())]).is_empty());
        let ev = diff(&mut known, vec![key_only("b".into()), key_only("c".into())]);
        assert_eq!(
            ev,
            vec![
                WatchEvent::Deleted(key_only("a".into())),
                WatchEvent::Added(key_only("c".into())),
            ]
        );
    }

    #[test]
    fn known_pairs_are_kept_without_values() {
        let mut known = HashMap::new();
        let mut big = pair("a", 1);
        big.value = vec![b'x'; 1000];
        let ev = diff(&mut known, vec![big.clone()]);
        assert_eq!(ev, vec![WatchEvent::Added(big)], "events carry the value");
        assert!(known["a"].value.is_empty(), "the watch does not keep it");
        let ev = diff(&mut known, vec![]);
        assert_eq!(ev, vec![WatchEvent::Deleted(pair("a", 1))]);
    }

    #[test]
    fn diff_reports_only_real_changes() {
        let mut known = HashMap::new();
        let ev = diff(&mut known, vec![pair("a", 1), pair("b", 2)]);
        assert_eq!(ev.len(), 2);
        // Same indexes: nothing.
        assert!(diff(&mut known, vec![pair("a", 1), pair("b", 2)]).is_empty());
        let ev = diff(&mut known, vec![pair("a", 5), pair("c", 6)]);
        assert_eq!(
            ev,
            vec![
                WatchEvent::Deleted(pair("b", 2)),
                WatchEvent::Modified(pair("a", 5)),
                WatchEvent::Added(pair("c", 6)),
            ]
        );
    }
}
