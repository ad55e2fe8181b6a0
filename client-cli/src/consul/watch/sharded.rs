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
//! One change thus costs two reads: the folder names, and the changed folder's listing. The
//! price is paid when idle: each folder's read is re-armed once per `wait`, so folder reads
//! block for Consul's longest wait (10 min): `folders / 10` requests per minute.
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

use std::collections::{BTreeMap, HashMap, HashSet};

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Target, WatchEvent, WatchOptions, key_only, watch, watch_folders, without_value};
use crate::consul::{Client, KvPair};

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

/// One folder's watch.
struct Shard {
    /// Distinguishes this watch's events from an earlier watch of the same folder.
    id: u64,
    cancel: CancellationToken,
    /// Keys it reported present.
    known: HashSet<String>,
}

/// The merger's state.
struct Merger {
    client: Client,
    opts: WatchOptions,
    read: Read,
    tx: mpsc::Sender<WatchEvent>,
    shard_tx: mpsc::Sender<(u64, WatchEvent)>,
    shards: HashMap<String, Shard>,
    folder_of: HashMap<u64, String>,
    next_id: u64,
    /// Permits for a folder's first listing ([`FIRST_LISTINGS`]).
    first_listings: Arc<Semaphore>,
    /// Before the merged `Initial`: folders whose listing is awaited, pairs gathered, their
    /// highest index, and changes that arrived meanwhile (sent after the `Initial`).
    initial: Option<Initial>,
}

#[derive(Default)]
struct Initial {
    awaiting: HashSet<String>,
    pairs: BTreeMap<String, KvPair>,
    index: u64,
    discovered: bool,
    later: Vec<WatchEvent>,
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

    fn start_shard(&mut self, folder: &str) {
        if self.shards.contains_key(folder) {
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        let cancel = self.opts.cancel.child_token();
        // An idle folder costs one read per `wait`: use Consul's longest (10 min), which costs
        // nothing in reaction time (a blocking read answers at once on a change).
        let opts = WatchOptions {
            cancel: cancel.clone(),
            wait: self.opts.wait.max(crate::consul::MAX_WAIT),
            ..self.opts.clone()
        };
        let target = self.read.target(folder.to_string());
        let mut stream = Box::pin(watch(self.client.clone(), target, opts));
        let tx = self.shard_tx.clone();
        let first_listings = self.first_listings.clone();
        tokio::spawn(async move {
            // The stream makes its first read when first polled: hold a permit until it answered.
            let mut permit = first_listings.acquire_owned().await.ok();
            while let Some(ev) = stream.next().await {
                permit.take();
                if tx.send((id, ev)).await.is_err() {
                    break;
                }
            }
            drop(permit);
        });
        self.folder_of.insert(id, folder.to_string());
        self.shards.insert(
            folder.to_string(),
            Shard {
                id,
                cancel,
                known: HashSet::new(),
            },
        );
    }

    /// The folder is gone: stop its watch and report the keys it still held as deleted.
    async fn stop_shard(&mut self, folder: &str) -> bool {
        let Some(shard) = self.shards.remove(folder) else {
            return true;
        };
        shard.cancel.cancel();
        self.folder_of.remove(&shard.id);
        if let Some(init) = &mut self.initial {
            init.awaiting.remove(folder);
        }
        let mut gone: Vec<String> = shard.known.into_iter().collect();
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
                        self.start_shard(&p.key);
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
                self.start_shard(&p.key);
                true
            }
            WatchEvent::Deleted(p) if p.key.ends_with('/') => {
                let ok = self.stop_shard(&p.key).await;
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

    /// An event of folder watch `id`.
    async fn on_shard(&mut self, id: u64, ev: WatchEvent) -> bool {
        let Some(folder) = self.folder_of.get(&id).cloned() else {
            return true; // a stopped watch's last words
        };
        let Some(shard) = self.shards.get_mut(&folder) else {
            return true;
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

/// A folder key (`<prefix><name>/`) whose name a URL path cannot carry as is: `.`, `..` (and
/// their percent-encoded forms, which the WHATWG URL parser also resolves), or a name with `%`,
/// `?`, `#` or `\`. A read of such a folder through `/v1/kv/<folder>` would list *another*
/// prefix (`requests/../` is `jobforge/`, every key of every team), so it is never watched:
/// the folder itself is reported as one key-only pair named without its trailing `/` (a key
/// that is not a request: the caller ignores it with one warning). Keys written inside it (only
/// possible through `/v1/txn`, which takes literal keys) are not listed one by one.
fn unreadable_folder(key: &str) -> Option<&str> {
    let folder = key.strip_suffix('/')?;
    let name = folder.rsplit('/').next().unwrap_or(folder);
    let lower = name.to_ascii_lowercase();
    let dots = matches!(
        lower.as_str(),
        "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
    );
    let odd = name.is_empty() || name.contains(['%', '?', '#', '\\']);
    (dots || odd).then_some(folder)
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
    // The folder names answer at once on any change under the prefix; idle, they too need
    // re-arming only once per Consul's longest wait.
    let discovery_opts = WatchOptions {
        wait: opts.wait.max(crate::consul::MAX_WAIT),
        ..opts.clone()
    };
    let mut discovery = Box::pin(watch_folders(client.clone(), prefix, discovery_opts));
    let mut m = Merger {
        client,
        opts,
        read,
        tx,
        shard_tx,
        shards: HashMap::new(),
        folder_of: HashMap::new(),
        next_id: 0,
        first_listings: Arc::new(Semaphore::new(FIRST_LISTINGS)),
        initial: Some(Initial::default()),
    };
    loop {
        let ok = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = discovery.next() => match ev {
                Some(ev) => m.on_discovery(ev).await,
                None => break,
            },
            Some((id, ev)) = shard_rx.recv() => m.on_shard(id, ev).await,
        };
        if !ok {
            break;
        }
    }
    for s in m.shards.values() {
        s.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::unreadable_folder;

    #[test]
    fn folders_a_url_would_resolve_elsewhere_are_never_read() {
        for key in [
            "jobforge/requests/../",
            "jobforge/requests/./",
            "jobforge/requests/%2E%2E/",
            "jobforge/requests/.%2e/",
            "jobforge/requests/a?b/",
            "jobforge/requests/a#b/",
            "jobforge/requests/a\\b/",
            "jobforge/requests//",
        ] {
            assert_eq!(unreadable_folder(key), key.strip_suffix('/'), "{key}");
        }
        for key in [
            "jobforge/requests/team-a/",
            "jobforge/requests/...x/",
            "jobforge/requests/a.b/",
            "jobforge/requests/x",
        ] {
            assert_eq!(unreadable_folder(key), None, "{key}");
        }
    }
}
