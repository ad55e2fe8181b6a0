//! Parked folders of a sharded watch: what a parked folder keeps, the probe that watches it,
//! and the rule that decides, from a probe's index, whether it stays parked or resumes (the
//! argument that no change is lost is in the parent module's docs).

use std::collections::HashMap;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Folder, Merger, Seed};
use crate::consul::{Client, KvPair, QueryOptions};

/// Probes sent at once within one round: a round of 100 parked folders takes ~25 round trips
/// instead of 100, without a burst of 100 requests.
const PROBE_CONCURRENCY: usize = 4;

/// A folder without a blocking read of its own.
#[derive(Debug)]
pub(super) struct Parked {
    /// The index its last (quiet) blocking read answered: its contents as of `known`.
    pub index: u64,
    /// The probe index it is parked at; `None` until the first probe after its quiet answer
    /// has confirmed that nothing under it changed meanwhile.
    pub base: Option<u64>,
    /// The index of a probe taken before its last blocking read was sent (`None`: none).
    pub last_probe: Option<u64>,
    /// What its watch knew: each key without its value (ModifyIndex tells Modified, for
    /// `?recurse`; key-only pairs for `?keys`).
    pub known: HashMap<String, KvPair>,
}

/// What a probe's index means for a parked folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Parked (again) at this probe index.
    Park(u64),
    /// Nothing changed: stays parked.
    Keep,
    /// Something under `<prefix><name>*` changed (or may have): start the folder's read again
    /// from `index` (its last index; 0 = list at once, when the probe went below it).
    Resume {
        /// The resumed read's first `index`.
        index: u64,
    },
}

/// The rule. A folder whose base is not set yet parks only if the probe proves that nothing in
/// it changed since its quiet answer: the probe index equals that answer's (then no key under
/// `<prefix><name>*` was written after it), or equals a probe taken *before* the quiet read was
/// sent (then nothing under `<prefix><name>*` was written between that probe and this one, and
/// the quiet read covers the folder up to its answer). Any other index resumes it: a sibling
/// whose name extends the folder's (`team-a` for `team`) costs one more blocking read, never a
/// missed change.
fn verdict(p: &Parked, probe: u64) -> Verdict {
    match p.base {
        None if probe == p.index || Some(probe) == p.last_probe => Verdict::Park(probe),
        Some(base) if probe == base => Verdict::Keep,
        _ => Verdict::Resume {
            index: if probe < p.index { 0 } else { p.index },
        },
    }
}

/// What a probe round reports to the merger.
#[derive(Debug)]
pub(super) enum ProbeMsg {
    /// One folder's probe: its index, or the error rendered.
    Answer(String, Result<u64, String>),
    /// The round is over.
    Done,
}

/// The probe of folder `<prefix><name>/`: a non-blocking `GET /v1/kv/<prefix><name>?keys&separator=/`.
/// Its body is one name per folder whose name starts with `<name>` (the folder itself and any
/// sibling such as `<name>-a/`), and its `X-Consul-Index` the highest ModifyIndex of every key
/// and tombstone under `<prefix><name>` (Consul `agent/consul/kvs_endpoint.go` `KVS.ListKeys`:
/// "the keys which are omitted are still counted in the returned index", over
/// `state/kvs.go` `kvsListTxn`, which adds the graveyard's highest index under the prefix).
async fn probe(client: &Client, folder: &str, consistent: bool) -> Result<u64, String> {
    let prefix = folder.strip_suffix('/').unwrap_or(folder);
    let q = QueryOptions {
        consistent,
        ..QueryOptions::default()
    };
    client
        .kv_keys(prefix, Some("/"), q)
        .await
        .map(|(index, _)| index)
        .map_err(|e| e.to_string())
}

/// Probes `folders` (at most [`PROBE_CONCURRENCY`] at once), reporting each answer, then
/// [`ProbeMsg::Done`]; stops early when `cancel` fires or the merger is gone.
fn spawn_round(
    client: Client,
    folders: Vec<String>,
    consistent: bool,
    tx: mpsc::Sender<ProbeMsg>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let answers = futures::stream::iter(folders)
            .map(|f| {
                let c = client.clone();
                async move {
                    let r = probe(&c, &f, consistent).await;
                    (f, r)
                }
            })
            .buffer_unordered(PROBE_CONCURRENCY);
        let mut answers = std::pin::pin!(answers);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = answers.next() => n,
            };
            let Some((folder, r)) = next else { break };
            if tx.send(ProbeMsg::Answer(folder, r)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(ProbeMsg::Done).await;
    });
}

/// The merger's side of parking: probe answers, resuming, probe rounds.
impl Merger {
    /// A probe round's message.
    pub(super) fn on_probe(&mut self, msg: ProbeMsg) {
        let (folder, answer) = match msg {
            ProbeMsg::Done => {
                self.round_running = false;
                return;
            }
            ProbeMsg::Answer(folder, answer) => (folder, answer),
        };
        let Some(Folder::Parked(p)) = self.folders.get_mut(&folder) else {
            return; // resumed or gone meanwhile
        };
        let (index, last_probe) = match answer {
            Ok(probe) => match verdict(p, probe) {
                Verdict::Park(base) => {
                    p.base = Some(base);
                    self.gauge();
                    return;
                }
                Verdict::Keep => return,
                Verdict::Resume { index } => (index, Some(probe)),
            },
            // Nothing is known: the folder's own read finds out (and reports the errors).
            Err(error) => {
                tracing::debug!(%folder, %error, "probe of a parked folder failed; resuming it");
                (p.index, None)
            }
        };
        self.resume(&folder, index, last_probe);
    }

    /// Starts parked `folder`'s read again from `index`, diffed against what it knew.
    fn resume(&mut self, folder: &str, index: u64, last_probe: Option<u64>) {
        let Some(Folder::Parked(p)) = self.folders.remove(folder) else {
            return;
        };
        self.wanted.remove(folder);
        let seed = Seed {
            index,
            known: p.known,
            last_probe,
        };
        self.start_shard(folder, Some(seed));
    }

    /// When the next probe round may start.
    pub(super) fn next_round_at(&self) -> Instant {
        match self.last_round {
            Some(t) => t + self.opts.probe_interval,
            None => Instant::now(),
        }
    }

    /// Starts a probe round of the wanted folders that are still parked.
    pub(super) fn start_round(&mut self) {
        let wanted = std::mem::take(&mut self.wanted);
        let folders: Vec<String> = wanted
            .into_iter()
            .filter(|f| matches!(self.folders.get(f), Some(Folder::Parked(_))))
            .collect();
        if folders.is_empty() {
            return;
        }
        self.round_running = true;
        self.last_round = Some(Instant::now());
        spawn_round(
            self.client.clone(),
            folders,
            self.opts.consistent,
            self.probe_tx.clone(),
            self.opts.cancel.child_token(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(index: u64, base: Option<u64>, last_probe: Option<u64>) -> Parked {
        Parked {
            index,
            base,
            last_probe,
            known: HashMap::new(),
        }
    }

    #[test]
    fn a_first_probe_at_the_quiet_index_parks() {
        assert_eq!(verdict(&parked(10, None, None), 10), Verdict::Park(10));
    }

    #[test]
    fn a_first_probe_above_the_quiet_index_resumes_unless_an_earlier_probe_saw_the_same() {
        // A write in the folder (or in a sibling) between the quiet answer and the probe.
        assert_eq!(
            verdict(&parked(10, None, None), 12),
            Verdict::Resume { index: 10 }
        );
        // The sibling's index was already there before the quiet read was sent: park.
        assert_eq!(verdict(&parked(10, None, Some(12)), 12), Verdict::Park(12));
        // Something was written after that earlier probe: resume.
        assert_eq!(
            verdict(&parked(10, None, Some(12)), 13),
            Verdict::Resume { index: 10 }
        );
    }

    #[test]
    fn a_parked_folder_resumes_on_any_other_index_and_lists_at_once_when_it_went_down() {
        assert_eq!(verdict(&parked(10, Some(12), None), 12), Verdict::Keep);
        assert_eq!(
            verdict(&parked(10, Some(12), None), 15),
            Verdict::Resume { index: 10 }
        );
        // Tombstones reaped: the index went backwards; a blocking read from 10 would wait.
        assert_eq!(
            verdict(&parked(10, Some(12), None), 11),
            Verdict::Resume { index: 10 }
        );
        assert_eq!(
            verdict(&parked(10, Some(12), None), 9),
            Verdict::Resume { index: 0 }
        );
    }
}
