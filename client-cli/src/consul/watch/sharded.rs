//! [`watch_prefix_sharded`] and [`watch_keys_sharded`]: prefix watches whose cost per change is
//! proportional to one *folder* under the prefix, not to everything stored under it (issue 17).
//!
//! Consul has no delta watch for KV: a blocking `?recurse` read answers the whole listing of its
//! prefix whenever anything under it changes. This watch therefore splits the prefix into its
//! folders (`<prefix><name>/`, one per namespace for `requests/`):
//!
//! - one blocking `?keys&separator=/` read of the prefix discovers the folders
//!   ([`super::watch_folders`]); it answers on every change under the prefix too, but its
//!   listing holds one short name per folder;
//! - one blocking read per folder: `?recurse` ([`super::watch_prefix`]) for
//!   [`watch_prefix_sharded`], `?keys` ([`super::watch_keys`], names only) for
//!   [`watch_keys_sharded`]; a folder's index is the highest ModifyIndex under it, tombstones
//!   included (Consul `agent/kvs_endpoint.go` `KVSEndpoint.List` / `ListKeys`, `state/kvs.go`
//!   `kvsListTxn`), so a change in one folder answers that folder's read alone.
//!
//! One change thus costs two reads: the folder names, and the changed folder's listing. Without
//! parking the price is paid when idle: each folder's read is re-armed once per `wait`, so
//! folder reads block for Consul's longest wait (10 min, plus up to wait/16 of jitter):
//! `folders / 10.3` requests per minute, ~20 a minute for the two prefixes at 100 namespaces.
//!
//! # Parked folders ([`WatchOptions::park_after`])
//!
//! With `park_after` set, a folder's blocking read waits `park_after`; when it answers with the
//! index it was sent with (a *quiet* wait: nothing under the folder changed), the read stops and
//! hands what it knew to the merger (each key without its value: its ModifyIndex tells a later
//! listing what was Added, Modified or Deleted), and the folder is **parked**. A parked folder
//! has no read of its own; it is watched by **probes**: a non-blocking
//! `GET /v1/kv/<prefix><name>?keys&separator=/` (the folder *without* its trailing slash), whose
//! body is one short name per folder starting with `<name>` and whose `X-Consul-Index` is the
//! highest ModifyIndex of every key and tombstone under `<prefix><name>` (Consul
//! `agent/consul/kvs_endpoint.go` `KVS.ListKeys`, `state/kvs.go` `kvsListTxn`; a sibling such as
//! `<name>-a/` counts too, which can only make a probe answer "changed" when the folder did not).
//!
//! - Right after a folder parks, it is probed once; it stays parked at that probe's index
//!   (its *base*) only if the probe proves it unchanged since its quiet answer: the probe index
//!   equals the quiet answer's, or equals a probe taken before the quiet read was sent. Otherwise
//!   its read starts again (`park::verdict`).
//! - Each time the folder-names read answers with a new index, every parked folder is probed
//!   (one round at a time, rounds at least [`WatchOptions::probe_interval`] apart; a change
//!   during a round or that interval is probed right after). A probe index other than the
//!   base (higher; or lower, after Consul reaped tombstones) *resumes* the folder: its blocking
//!   read starts again from its last index, and its first answer is diffed against what it knew,
//!   so the merged stream reports the changed keys as if the folder had never been parked. It
//!   parks again after its next quiet wait. A probe that fails resumes the folder too (its own
//!   read then reports the errors and retries).
//!
//! **No change is lost.** Let a key in folder F change at index c after F's quiet answer
//! (at index L). Consul's indexes only grow, and a change is always visible in the index of a
//! listing that covers it (a deletion leaves a tombstone), so:
//! - if c happened before F's first probe after parking ran, that probe's index is ≥ c > L,
//!   and ≠ any probe taken before the quiet read was sent (those are < c): F resumes;
//! - otherwise c happened after that probe, so c is greater than every index any read had
//!   answered before it, in particular than the folder-names read's last index known when F was
//!   parked. That read (its prefix covers F) answers with an index ≥ c, and the merger handles
//!   that answer after c, when F is already parked; it probes F after that, the probe's index
//!   is ≥ c > base, and F resumes. The resumed read's first answer (index > L) lists c.
//!
//! Idle cost: a parked folder makes no request; the two folder-names reads are re-armed once
//! per 10.3 min. One change costs, besides the changed folder's reads, one probe per parked
//! folder of that prefix (each ~100 bytes of body), at most one round per `probe_interval`.
//!
//! Memory: at most [`FIRST_LISTINGS`] folders make their first listing at once (with 100
//! namespaces of 1,000 requests each, 100 listings in flight held ~130 MB of response bodies and
//! decoded values in the controller at the start of a term: heaptrack), and the merged `Initial`
//! keeps no values (below).
//!
//! The merged stream keeps [`super::watch_prefix`]'s contract, except that the pairs of the
//! merged [`WatchEvent::Initial`] carry no value (key, flags, session and indexes: a caller that
//! needs a value reads it): one `Initial` first
//! (every folder's listing, plus keys lying directly under the prefix, sorted by key), then
//! `Added`/`Modified`/`Deleted` per key, `Restarting`/`Resumed` from any of the reads. A folder
//! that appears later reports its keys as `Added`; a folder that disappears reports every key
//! it held as `Deleted` (key-only pairs, if its own read did not report them first). Keys
//! directly under the prefix are seen by name only (`Added`/`Deleted`, never `Modified`); with
//! [`watch_keys_sharded`] every key is (as [`super::watch_keys`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FolderStates, State, Target, WatchEvent, WatchOptions, key_only, without_value};
use crate::consul::{Client, KvPair};

mod names;
mod park;

use names::unreadable_folder;

use park::{Parked, ProbeMsg};

/// Events buffered between the merger and its reader.
const CHANNEL: usize = 1024;

/// Folders whose first listing may be in flight at once (module docs: memory).
pub const FIRST_LISTINGS: usize = 4;

/// Watches every key under `prefix` with one blocking `?recurse` read per folder (module docs).
/// Ends when `opts.cancel` is cancelled (or the stream is dropped: its task then stops at the
/// next event).
pub fn watch_prefix_sharded(
    client: Client,
    prefix: impl Into<String>,
    opts: WatchOptions,
) -> impl Stream<Item = WatchEvent> {
    sharded(client, prefix.into(), opts, Read::Recurse)
}

/// Watches the key *names* under `prefix` with one blocking `?keys` read per folder: as
/// [`watch_prefix_sharded`], but every pair is key-only (as [`super::watch_keys`]), so only
/// `Added`/`Deleted` are seen. One change costs the folder names plus the changed folder's key
/// names, whatever the other folders hold.
pub fn watch_keys_sharded(
    client: Client,
    prefix: impl Into<String>,
    opts: WatchOptions,
) -> impl Stream<Item = WatchEvent> {
    sharded(client, prefix.into(), opts, Read::Keys)
}

/// What each folder's blocking read lists.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// Keys with values (`?recurse`).
    Recurse,
    /// Key names (`?keys`).
    Keys,
}

impl Read {
    fn target(self, folder: String) -> Target {
        match self {
            Read::Recurse => Target::Prefix(folder),
            Read::Keys => Target::Keys(folder),
        }
    }
}

fn sharded(
    client: Client,
    prefix: String,
    opts: WatchOptions,
    read: Read,
) -> impl Stream<Item = WatchEvent> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(merge(client, prefix, opts, read, tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
    )
}

/// A folder with its own blocking read.
struct Shard {
    /// Distinguishes this read's messages from an earlier read of the same folder.
    id: u64,
    cancel: CancellationToken,
    /// Keys it reported present.
    known: HashSet<String>,
    /// A probe index taken before this read was started (see [`park::verdict`]).
    last_probe: Option<u64>,
}

/// A folder under the prefix: read by its own blocking read, or parked.
enum Folder {
    Active(Shard),
    Parked(Parked),
}

/// What a folder's read tells the merger.
enum ShardMsg {
    Event(WatchEvent),
    /// Its blocking read answered unchanged at `index` (parking on): the read has stopped and
    /// hands over what it knew.
    Quiet {
        index: u64,
        known: HashMap<String, KvPair>,
    },
}

/// Where a resumed folder's read starts.
struct Seed {
    index: u64,
    known: HashMap<String, KvPair>,
    last_probe: Option<u64>,
}

/// The merger's state.
struct Merger {
    client: Client,
    opts: WatchOptions,
    read: Read,
    tx: mpsc::Sender<WatchEvent>,
    shard_tx: mpsc::Sender<(u64, ShardMsg)>,
    probe_tx: mpsc::Sender<ProbeMsg>,
    folders: HashMap<String, Folder>,
    folder_of: HashMap<u64, String>,
    next_id: u64,
    /// Permits for a folder's first listing ([`FIRST_LISTINGS`]).
    first_listings: Arc<Semaphore>,
    /// Before the merged `Initial`: folders whose listing is awaited, pairs gathered, their
    /// highest index, and changes that arrived meanwhile (sent after the `Initial`).
    initial: Option<Initial>,
    /// The index of the folder-names read's last answer.
    names_index: Option<u64>,
    /// Parked folders to probe in the next round.
    wanted: BTreeSet<String>,
    round_running: bool,
    last_round: Option<Instant>,
}

#[derive(Default)]
struct Initial {
    awaiting: HashSet<String>,
    pairs: BTreeMap<String, KvPair>,
    index: u64,
    discovered: bool,
    later: Vec<WatchEvent>,
}

/// Runs one folder's read: its events, then (parking on) [`ShardMsg::Quiet`] after the first
/// blocking read that answered unchanged, and it stops.
async fn run_shard(
    id: u64,
    mut state: State,
    park: bool,
    first_listing: Option<Arc<Semaphore>>,
    tx: mpsc::Sender<(u64, ShardMsg)>,
) {
    // Held until the first read answered (module docs: memory).
    let mut permit = match first_listing {
        Some(sem) => sem.acquire_owned().await.ok(),
        None => None,
    };
    while let Some(events) = state.step().await {
        permit.take();
        let quiet = park && state.quiet && events.is_empty();
        for ev in events {
            if tx.send((id, ShardMsg::Event(ev))).await.is_err() {
                return;
            }
        }
        if quiet {
            let known = std::mem::take(&mut state.known);
            let index = state.index;
            let _ = tx.send((id, ShardMsg::Quiet { index, known })).await;
            return;
        }
    }
}

impl Merger {
    /// Sends `ev` (or buffers it until the merged `Initial`); `false` when the reader is gone.
    async fn emit(&mut self, ev: WatchEvent) -> bool {
        if let Some(init) = &mut self.initial {
            init.later.push(ev);
            return true;
        }
        self.tx.send(ev).await.is_ok()
    }

    /// Sets the `jobforge_watch_folders` gauge (when the watch has a metrics label).
    fn gauge(&self) {
        // Parked once its first probe confirmed it: until then it still costs a probe.
        let parked = self
            .folders
            .values()
            .filter(|f| matches!(f, Folder::Parked(p) if p.base.is_some()))
            .count();
        let active = self.folders.len() - parked;
        if let Some(tx) = &self.opts.folder_states {
            tx.send_replace(FolderStates { active, parked });
        }
        let Some(label) = self.opts.metrics_label else {
            return;
        };
        metrics::gauge!("jobforge_watch_folders", "watch" => label, "state" => "active")
            .set(active as f64);
        metrics::gauge!("jobforge_watch_folders", "watch" => label, "state" => "parked")
            .set(parked as f64);
    }

    /// Starts a blocking read of `folder`: a fresh one (its listing is reported `Added`, or
    /// goes into the merged `Initial`), or a resumed one (`seed`: diffed against what it knew).
    fn start_shard(&mut self, folder: &str, seed: Option<Seed>) {
        if self.folders.contains_key(folder) {
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let cancel = self.opts.cancel.child_token();
        // An idle folder costs one read per `wait`: Consul's longest (10 min) when folders are
        // never parked, which costs nothing in reaction time (a blocking read answers at once
        // on a change); `park_after` when they are.
        let wait = match self.opts.park_after {
            Some(after) => after,
            None => self.opts.wait.max(crate::consul::MAX_WAIT),
        };
        let opts = WatchOptions {
            cancel: cancel.clone(),
            wait,
            ..self.opts.clone()
        };
        let target = self.read.target(folder.to_string());
        // A fresh folder's first read is a listing: at most FIRST_LISTINGS at once. A resumed
        // folder's first read blocks from its last index, so it takes no permit.
        let first_listing = seed.is_none().then(|| self.first_listings.clone());
        let (state, known, last_probe) = match seed {
            None => (
                State::new(self.client.clone(), target, opts),
                HashSet::new(),
                None,
            ),
            Some(s) => {
                let keys = s.known.keys().cloned().collect();
                let state =
                    State::seeded(self.client.clone(), target, opts, s.index, Some(s.known));
                (state, keys, s.last_probe)
            }
        };
        tokio::spawn(run_shard(
            id,
            state,
            self.opts.park_after.is_some(),
            first_listing,
            self.shard_tx.clone(),
        ));
        self.folder_of.insert(id, folder.to_string());
        self.folders.insert(
            folder.to_string(),
            Folder::Active(Shard {
                id,
                cancel,
                known,
                last_probe,
            }),
        );
        self.gauge();
    }

    /// The folder is gone: stop its read (if it has one) and report the keys it still held as
    /// deleted.
    async fn stop_folder(&mut self, folder: &str) -> bool {
        let Some(f) = self.folders.remove(folder) else {
            return true;
        };
        let mut gone: Vec<String> = match f {
            Folder::Active(shard) => {
                shard.cancel.cancel();
                self.folder_of.remove(&shard.id);
                shard.known.into_iter().collect()
            }
            Folder::Parked(p) => p.known.into_keys().collect(),
        };
        self.gauge();
        if let Some(init) = &mut self.initial {
            init.awaiting.remove(folder);
        }
        gone.sort();
        for k in gone {
            if !self.emit(WatchEvent::Deleted(key_only(k))).await {
                return false;
            }
        }
        true
    }

    /// Sends the merged `Initial` once discovery and every awaited folder have answered.
    async fn maybe_initial(&mut self) -> bool {
        let ready = self
            .initial
            .as_ref()
            .is_some_and(|i| i.discovered && i.awaiting.is_empty());
        if !ready {
            return true;
        }
        let Some(init) = self.initial.take() else {
            return true;
        };
        let pairs: Vec<KvPair> = init.pairs.into_values().collect();
        if self
            .tx
            .send(WatchEvent::Initial {
                index: init.index,
                pairs,
            })
            .await
            .is_err()
        {
            return false;
        }
        for ev in init.later {
            if self.tx.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }

    /// One answer of the folder-names read: its events, then, if its index moved, a probe of
    /// every parked folder (a change under the prefix may be in one of them).
    async fn on_names(&mut self, events: Vec<WatchEvent>, answered: Option<u64>) -> bool {
        for ev in events {
            if !self.on_discovery(ev).await {
                return false;
            }
        }
        if let Some(index) = answered
            && self.names_index != Some(index)
        {
            self.names_index = Some(index);
            for (name, f) in &self.folders {
                if matches!(f, Folder::Parked(_)) {
                    self.wanted.insert(name.clone());
                }
            }
        }
        true
    }

    /// An event of the folder discovery read.
    async fn on_discovery(&mut self, ev: WatchEvent) -> bool {
        match ev {
            WatchEvent::Initial { index, pairs } => {
                for p in pairs {
                    if let Some(name) = unreadable_folder(&p.key) {
                        if let Some(init) = &mut self.initial {
                            init.pairs
                                .insert(name.to_string(), key_only(name.to_string()));
                        }
                    } else if p.key.ends_with('/') {
                        if let Some(init) = &mut self.initial {
                            init.awaiting.insert(p.key.clone());
                        }
                        self.start_shard(&p.key, None);
                    } else if let Some(init) = &mut self.initial {
                        init.pairs.insert(p.key.clone(), p);
                    }
                }
                if let Some(init) = &mut self.initial {
                    init.discovered = true;
                    init.index = init.index.max(index);
                }
                self.maybe_initial().await
            }
            WatchEvent::Added(p) if unreadable_folder(&p.key).is_some() => {
                let name = unreadable_folder(&p.key).unwrap_or_default().to_string();
                self.emit(WatchEvent::Added(key_only(name))).await
            }
            WatchEvent::Deleted(p) if unreadable_folder(&p.key).is_some() => {
                let name = unreadable_folder(&p.key).unwrap_or_default().to_string();
                self.emit(WatchEvent::Deleted(key_only(name))).await
            }
            WatchEvent::Added(p) if p.key.ends_with('/') => {
                self.start_shard(&p.key, None);
                true
            }
            WatchEvent::Deleted(p) if p.key.ends_with('/') => {
                let ok = self.stop_folder(&p.key).await;
                ok && self.maybe_initial().await
            }
            // Keys directly under the prefix, by name; errors and recoveries of the discovery read.
            other @ (WatchEvent::Added(_)
            | WatchEvent::Deleted(_)
            | WatchEvent::Restarting { .. }
            | WatchEvent::Resumed { .. }) => self.emit(other).await,
            WatchEvent::Modified(_) => true,
        }
    }

    /// A message of folder read `id`.
    async fn on_shard(&mut self, id: u64, msg: ShardMsg) -> bool {
        let Some(folder) = self.folder_of.get(&id).cloned() else {
            return true; // a stopped read's last words
        };
        let Some(Folder::Active(shard)) = self.folders.get_mut(&folder) else {
            return true;
        };
        let ev = match msg {
            ShardMsg::Event(ev) => ev,
            ShardMsg::Quiet { index, known } => {
                shard.cancel.cancel();
                let last_probe = shard.last_probe;
                self.folder_of.remove(&id);
                self.folders.insert(
                    folder.clone(),
                    Folder::Parked(Parked {
                        index,
                        base: None,
                        last_probe,
                        known,
                    }),
                );
                self.wanted.insert(folder);
                self.gauge();
                return true;
            }
        };
        match ev {
            WatchEvent::Initial { index, pairs } => {
                shard.known.extend(pairs.iter().map(|p| p.key.clone()));
                let was_awaited = self
                    .initial
                    .as_mut()
                    .is_some_and(|i| i.awaiting.remove(&folder));
                let awaited = if was_awaited {
                    self.initial.as_mut()
                } else {
                    None
                };
                match awaited {
                    Some(init) => {
                        init.index = init.index.max(index);
                        for p in pairs {
                            init.pairs.insert(p.key.clone(), without_value(&p));
                        }
                        self.maybe_initial().await
                    }
                    None => {
                        for p in pairs {
                            if !self.emit(WatchEvent::Added(p)).await {
                                return false;
                            }
                        }
                        true
                    }
                }
            }
            WatchEvent::Added(p) => {
                shard.known.insert(p.key.clone());
                self.emit(WatchEvent::Added(p)).await
            }
            WatchEvent::Deleted(p) => {
                shard.known.remove(&p.key);
                self.emit(WatchEvent::Deleted(p)).await
            }
            other => self.emit(other).await,
        }
    }
}

async fn merge(
    client: Client,
    prefix: String,
    opts: WatchOptions,
    read: Read,
    tx: mpsc::Sender<WatchEvent>,
) {
    let cancel = opts.cancel.clone();
    let (shard_tx, mut shard_rx) = mpsc::channel(CHANNEL);
    let (probe_tx, mut probe_rx) = mpsc::channel(CHANNEL);
    // The folder names answer at once on any change under the prefix; idle, they too need
    // re-arming only once per Consul's longest wait. Each answer's index is needed (not only
    // its events): a new one starts a probe round of the parked folders.
    let discovery_opts = WatchOptions {
        wait: opts.wait.max(crate::consul::MAX_WAIT),
        ..opts.clone()
    };
    let names = State::new(client.clone(), Target::Folders(prefix), discovery_opts);
    let mut discovery = Box::pin(futures::stream::unfold(names, |mut s| async move {
        let events = s.step().await?;
        let answered = s.answered;
        Some(((events, answered), s))
    }));
    let mut m = Merger {
        client,
        opts,
        read,
        tx,
        shard_tx,
        probe_tx,
        folders: HashMap::new(),
        folder_of: HashMap::new(),
        next_id: 0,
        first_listings: Arc::new(Semaphore::new(FIRST_LISTINGS)),
        initial: Some(Initial::default()),
        names_index: None,
        wanted: BTreeSet::new(),
        round_running: false,
        last_round: None,
    };
    loop {
        let round_due = !m.round_running && !m.wanted.is_empty();
        let round_at = m.next_round_at();
        let ok = tokio::select! {
            _ = cancel.cancelled() => break,
            step = discovery.next() => match step {
                Some((events, answered)) => m.on_names(events, answered).await,
                None => break,
            },
            Some((id, msg)) = shard_rx.recv() => m.on_shard(id, msg).await,
            Some(msg) = probe_rx.recv() => {
                m.on_probe(msg);
                true
            }
            _ = tokio::time::sleep_until(round_at), if round_due => {
                m.start_round();
                true
            }
        };
        if !ok {
            break;
        }
    }
    for f in m.folders.values() {
        if let Folder::Active(s) = f {
            s.cancel.cancel();
        }
    }
    // The watch no longer runs (a leader term ended): it has no folders.
    m.folders.clear();
    m.gauge();
}
