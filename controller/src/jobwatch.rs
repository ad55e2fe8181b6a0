//! Watches of the Nomad jobs that are in flight: one blocking query per job on
//! `GET /v1/job/<id>/allocations?index=` that enqueues the job's request whenever its allocations
//! change (placed, started, finished), and ends when every allocation is terminal.
//!
//! This is how the controller learns about Nomad state without a ticker: an idle job costs one
//! request per blocking `wait` (5 min). Watches belong to one leadership term and are cancelled with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::nomad::{Client as NomadClient, QueryOptions};
use crate::queue::{RequestKey, WorkQueue};

/// Blocking `wait` of each allocations query.
const WAIT: Duration = Duration::from_secs(300);

/// Longest pause between retries while Nomad does not answer: short, so a job's state is seen
/// within seconds of Nomad coming back (an outage costs one request per job per pause).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The set of running job watches of one leadership term.
#[derive(Debug)]
pub struct JobWatches {
    nomad: NomadClient,
    queue: WorkQueue,
    cancel: CancellationToken,
    watches: Mutex<HashMap<String, CancellationToken>>,
}

impl JobWatches {
    /// Watches that enqueue into `queue` and stop when `cancel` fires.
    pub fn new(nomad: NomadClient, queue: WorkQueue, cancel: CancellationToken) -> Arc<JobWatches> {
        Arc::new(JobWatches {
            nomad,
            queue,
            cancel,
            watches: Mutex::new(HashMap::new()),
        })
    }

    /// Number of jobs watched now.
    pub fn len(&self) -> usize {
        self.watches.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Whether no job is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts watching `job_id` for `key` unless it is already watched.
    pub fn ensure(self: &Arc<Self>, job_id: &str, key: &RequestKey) {
        let token = {
            let Ok(mut w) = self.watches.lock() else {
                return;
            };
            if w.contains_key(job_id) {
                return;
            }
            let token = self.cancel.child_token();
            w.insert(job_id.to_string(), token.clone());
            token
        };
        let this = Arc::clone(self);
        let job_id = job_id.to_string();
        let key = key.clone();
        tokio::spawn(async move {
            this.watch(&job_id, &key, token).await;
            if let Ok(mut w) = this.watches.lock() {
                w.remove(&job_id);
            }
        });
    }

    /// Stops watching `job_id` (the job was stopped or purged).
    pub fn stop(&self, job_id: &str) {
        if let Ok(mut w) = self.watches.lock()
            && let Some(t) = w.remove(job_id)
        {
            t.cancel();
        }
    }

    async fn watch(&self, job_id: &str, key: &RequestKey, cancel: CancellationToken) {
        let mut index = 0u64;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(MAX_BACKOFF)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let q = QueryOptions {
                index,
                wait: Some(WAIT),
            };
            let res = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.nomad.job_allocations(job_id, q) => r,
            };
            match res {
                Ok((got, allocs)) => {
                    backoff = ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(200))
                        .with_max_delay(MAX_BACKOFF)
                        .with_jitter()
                        .without_max_times()
                        .build();
                    let changed = index != 0 && got != index;
                    if changed {
                        self.queue.enqueue(key.clone());
                    }
                    let all_terminal = !allocs.is_empty() && allocs.iter().all(|a| a.is_terminal());
                    if all_terminal {
                        // The reconcile that observes the terminal state needs no further wake-ups.
                        if !changed {
                            self.queue.enqueue(key.clone());
                        }
                        return;
                    }
                    // Consul/Nomad blocking rules: reset when the index goes backwards, keep it ≥ 1.
                    index = if got < index { 0 } else { got.max(1) };
                }
                Err(e) => {
                    tracing::debug!(job = job_id, error = %e, "allocations watch failed; retrying");
                    metrics::counter!("jobforge_watch_restarts_total", "watch" => "nomad_allocations")
                        .increment(1);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    index = 0;
                    // The job may have changed while we could not see it.
                    self.queue.enqueue(key.clone());
                }
            }
        }
    }
}
