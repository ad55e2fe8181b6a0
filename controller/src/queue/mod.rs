//! The work queue: which request to reconcile next, and when.
//!
//! Modelled on kube-runtime's scheduler + runner and controller-runtime's rate-limited workqueue:
//!
//! - Keys are [`RequestKey`]s (`namespace/name`). [`WorkQueue::enqueue`] and
//!   [`WorkQueue::enqueue_after`] schedule a key at a deadline; a key is held once, and when it is
//!   scheduled twice **the earliest deadline wins** (duplicates collapse).
//! - [`WorkQueue::run`] takes due keys in deadline order and runs the reconcile function on them,
//!   at most `max_concurrent` at once, and **never two reconciles of one key at once**: a key
//!   enqueued while it runs is held and runs once after the current reconcile ends.
//! - A reconcile returns an [`Action`]: [`Action::Requeue`] schedules the key again after the given
//!   delay (deadlines, TTLs); [`Action::AwaitChange`] waits for the next enqueue (a watch event);
//!   [`Action::Backoff`] (a lost CAS race) schedules it after the key's backoff, like an error but
//!   without logging one, so a write that keeps losing can never become a hot loop.
//!   An error schedules the key after a per-key exponential backoff with jitter ([`Backoff`]), reset
//!   by the next success. A panicking reconcile counts as an error.
//! - Shutdown is graceful: when the [`CancellationToken`] fires, no new reconcile starts; in-flight
//!   ones get `shutdown_grace` to finish and are then dropped (aborted at their next `.await`). The
//!   reconciler must therefore be safe to interrupt at any await point (it is: every write is a fenced
//!   CAS and every Nomad call is idempotent, see `docs/consul-nomad-vault-semantics.md` § Controller).
//!
//! Time is tokio's, so tests drive it with `tokio::time::pause()`.
//!
//! Metrics (the `metrics` facade; installed exporter decides where they go):
//! `jobforge_queue_depth` (gauge: keys due now that wait for a reconcile slot, not those scheduled
//! for later; refreshed on every enqueue, start and end of a reconcile),
//! `jobforge_reconciles_in_flight` (gauge),
//! `jobforge_reconcile_total{result="requeue"|"await_change"|"conflict"|"error"}` (counter) and
//! `jobforge_reconcile_duration_seconds` (histogram, seconds).

mod backoff;
mod build_slots;
pub mod groups;
pub mod quota;
pub mod slots;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
pub use build_slots::BuildSlots;
pub use groups::Groups;
pub use quota::StoredRequests;
pub use slots::{Admission, SlotLimits, Slots};

/// Identity of one BuildRequest: the work-queue key (`namespace/name`, both DNS labels).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// Namespace of the request.
    pub namespace: String,
    /// Name of the request.
    pub name: String,
}

impl RequestKey {
    /// A key for `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        RequestKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a successful reconcile asks of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile this key again after the delay (a phase deadline, a TTL expiry), unless an
    /// earlier enqueue comes first.
    Requeue(Duration),
    /// Nothing to do until something changes (the next enqueue from a watch).
    AwaitChange,
    /// Reconcile this key again after its per-key backoff ([`Backoff`], the delay an error would
    /// get; consecutive ones grow it, the next `Requeue`/`AwaitChange` resets it). For a fenced
    /// CAS write that lost against another writer: trying again at once could lose again and
    /// again (issue 14: a key whose reads and writes do not name the same record), so it waits.
    /// Counted as `jobforge_reconcile_total{result="conflict"}`, logged at debug.
    Backoff,
}

impl Action {
    /// `Requeue(d)` for `Some(d)`, `AwaitChange` for `None`.
    pub fn after(delay: Option<Duration>) -> Action {
        delay.map_or(Action::AwaitChange, Action::Requeue)
    }
}

/// Tuning of the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueConfig {
    /// Most reconciles running at once (`--max-concurrent-reconciles`, default 16; 0 is treated as 1).
    pub max_concurrent: usize,
    /// Backoff of keys whose reconcile failed (default 5 ms · 2^n, capped at 5 min, 50 % jitter).
    pub backoff: Backoff,
    /// How long in-flight reconciles may run after cancellation before they are dropped (default 10 s).
    pub shutdown_grace: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_concurrent: 16,
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// How a [`WorkQueue::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Reconciles that finished after cancellation, within the grace period.
    pub drained: usize,
    /// Keys whose reconcile was still running at the end of the grace period and was dropped.
    pub abandoned: Vec<RequestKey>,
}

/// Scheduling state, behind one mutex (critical sections are short and never await).
#[derive(Debug, Default)]
struct State {
    /// Keys waiting to run, ordered by deadline.
    schedule: BTreeSet<(Instant, RequestKey)>,
    /// Deadline of each key in `schedule`.
    deadlines: HashMap<RequestKey, Instant>,
    /// Keys whose reconcile runs now.
    running: HashSet<RequestKey>,
    /// Enqueues that arrived while their key was running: the earliest deadline, applied after it ends.
    held: HashMap<RequestKey, Instant>,
    /// Consecutive failures per key (absent = 0).
    failures: HashMap<RequestKey, u32>,
    /// The last [`State::due`] counted for the depth gauge, and when ([`State::gauge_depth`]).
    counted: Option<(Instant, usize)>,
}

/// Below this many keys due, the depth gauge is counted on every change.
const DEPTH_EXACT_BELOW: usize = 1_000;
/// At or above it, at most this often: counting is linear in the keys due, and a new leader
/// enqueues every stored request at once (100,000 enqueues each counting up to 100,000 keys,
/// under the queue's mutex, starved the session renewals and `/healthz` for minutes; issue 17).
const DEPTH_RECOUNT: Duration = Duration::from_millis(100);

impl State {
    /// Schedules `key` at `at` unless it is already scheduled earlier; holds it while running.
    fn schedule(&mut self, key: RequestKey, at: Instant) {
        if self.running.contains(&key) {
            let slot = self.held.entry(key).or_insert(at);
            *slot = (*slot).min(at);
            return;
        }
        match self.deadlines.get(&key) {
            Some(&old) if old <= at => {}
            Some(&old) => {
                self.schedule.remove(&(old, key.clone()));
                self.schedule.insert((at, key.clone()));
                self.deadlines.insert(key, at);
            }
            None => {
                self.schedule.insert((at, key.clone()));
                self.deadlines.insert(key, at);
            }
        }
    }

    /// The earliest key due at `now`, moved to `running`.
    fn pop_due(&mut self, now: Instant) -> Option<RequestKey> {
        let first = self.schedule.first()?;
        if first.0 > now {
            return None;
        }
        let (_, key) = self.schedule.pop_first()?;
        self.deadlines.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.schedule.first().map(|(at, _)| *at)
    }

    fn depth(&self) -> usize {
        self.deadlines.len() + self.held.len()
    }

    /// Keys due at `now` that wait: scheduled and due, or held (due) behind their own running
    /// reconcile. What `jobforge_queue_depth` reports: work waiting for a reconcile slot, not the
    /// keys scheduled for later (every finished request waits for its TTL, every running phase
    /// for its next log refresh), so that a growing depth means the queue is backing up.
    fn due(&self, now: Instant) -> usize {
        self.schedule
            .iter()
            .take_while(|(at, _)| *at <= now)
            .count()
            + self.held.values().filter(|at| **at <= now).count()
    }

    /// [`State::due`] for the `jobforge_queue_depth` gauge, at bounded cost: 0 at once when
    /// nothing is due (so an emptied queue always reads 0), an exact count while fewer than
    /// [`DEPTH_EXACT_BELOW`] keys were due, otherwise the last count until [`DEPTH_RECOUNT`] has
    /// passed (a backlog of that size changes by few keys in that time).
    fn gauge_depth(&mut self, now: Instant) -> usize {
        let nothing_due =
            self.held.is_empty() && self.schedule.first().is_none_or(|(at, _)| *at > now);
        let fresh = |&(at, n): &(Instant, usize)| {
            n >= DEPTH_EXACT_BELOW && now.saturating_duration_since(at) < DEPTH_RECOUNT
        };
        let n = match self.counted.filter(fresh) {
            _ if nothing_due => 0,
            Some((_, n)) => return n,
            None => self.due(now),
        };
        self.counted = Some((now, n));
        n
    }
}

/// The work queue; a cheap handle (clone it into watchers). See the module docs for the semantics.
#[derive(Debug, Clone)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    config: QueueConfig,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State::default())),
            wake: Arc::new(Notify::new()),
            config,
        }
    }

    /// The configuration this queue was built with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way that matters
        // more than losing the queue, so recover the guard instead of propagating the poison.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules `key` now (a watch saw a change). Collapses with any pending schedule of the key.
    pub fn enqueue(&self, key: RequestKey) {
        self.enqueue_at(key, Instant::now());
    }

    /// Schedules `key` after `delay`; if the key is already scheduled earlier, that wins.
    pub fn enqueue_after(&self, key: RequestKey, delay: Duration) {
        let at = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        self.enqueue_at(key, at);
    }

    fn enqueue_at(&self, key: RequestKey, at: Instant) {
        let depth = {
            let mut st = self.lock();
            st.schedule(key, at);
            st.gauge_depth(Instant::now())
        };
        metrics::gauge!("jobforge_queue_depth").set(depth as f64);
        self.wake.notify_one();
    }

    /// Keys waiting to run: scheduled (due now or later) plus those held behind their own running
    /// reconcile. A key counts once however often it was enqueued.
    pub fn len(&self) -> usize {
        self.lock().depth()
    }

    /// Whether no key waits (see [`WorkQueue::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reconciles running now.
    pub fn in_flight(&self) -> usize {
        self.lock().running.len()
    }

    /// Consecutive failures recorded for `key` (0 after a success).
    pub fn failures(&self, key: &RequestKey) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Runs reconciles until `cancel` fires, then drains in-flight ones for up to
    /// `shutdown_grace` and returns what happened to them.
    ///
    /// Call it at most once at a time per queue. After it returns the queue keeps its keys
    /// (abandoned ones rescheduled immediately), so it may be run again, for example when this
    /// controller becomes leader again; enqueues made meanwhile are kept too.
    ///
    /// `reconcile` is called with the key; its future runs on a tokio task (so it must be `Send`).
    /// An `Err` is logged with `tracing` and backs the key off; `E` only needs `Display`.
    pub async fn run<F, Fut, E>(&self, reconcile: F, cancel: CancellationToken) -> ShutdownReport
    where
        F: Fn(RequestKey) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let cap = self.config.max_concurrent.max(1);
        let mut tasks: JoinSet<Completion<E>> = JoinSet::new();

        loop {
            self.dispatch(&reconcile, &mut tasks, cap);
            let next = self.lock().next_deadline();
            let can_start = tasks.len() < cap;
            let notified = self.wake.notified();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => self.complete(done),
                _ = notified => {}
                _ = sleep_until_opt(next), if can_start && next.is_some() => {}
            }
        }

        // Graceful shutdown: nothing new starts; in-flight reconciles get the grace period.
        let mut report = ShutdownReport::default();
        let deadline = Instant::now() + self.config.shutdown_grace;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(done)) => {
                    report.drained += 1;
                    self.complete(done);
                }
                Ok(None) => break,
                Err(_elapsed) => break,
            }
        }
        if !tasks.is_empty() {
            tasks.abort_all();
            let mut st = self.lock();
            report.abandoned = st.running.drain().collect();
            report.abandoned.sort();
            // An abandoned reconcile did not finish: schedule its key now (with any enqueue held
            // behind it), so a later `run` (the next leadership term) starts with it.
            let now = Instant::now();
            for key in report.abandoned.clone() {
                let at = st.held.remove(&key).map_or(now, |h| h.min(now));
                st.schedule(key, at);
            }
            drop(st);
            tracing::warn!(
                abandoned = report.abandoned.len(),
                "shutdown grace period over; dropping in-flight reconciles"
            );
        }
        self.publish_gauges();
        report
    }

    /// Starts reconciles for due keys while below the cap.
    fn dispatch<F, Fut, E>(
        &self,
        reconcile: &Arc<F>,
        tasks: &mut JoinSet<Completion<E>>,
        cap: usize,
    ) where
        F: Fn(RequestKey) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let now = Instant::now();
        while tasks.len() < cap {
            let Some(key) = self.lock().pop_due(now) else {
                break;
            };
            let fut = reconcile(key.clone());
            tasks.spawn(async move {
                let started = Instant::now();
                let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(Ok(action)) => Outcome::Ok(action),
                    Ok(Err(e)) => Outcome::Err(e),
                    Err(_panic) => Outcome::Panicked,
                };
                Completion {
                    key,
                    outcome,
                    elapsed: started.elapsed(),
                }
            });
        }
        self.publish_gauges();
    }

    /// Records the end of one reconcile and schedules what comes after it.
    fn complete<E: fmt::Display>(&self, done: Result<Completion<E>, tokio::task::JoinError>) {
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                // Only reachable if the task was aborted, which happens only after the loop ends.
                tracing::error!(error = %e, "reconcile task ended without a result");
                return;
            }
        };
        let Completion {
            key,
            outcome,
            elapsed,
        } = done;
        metrics::histogram!("jobforge_reconcile_duration_seconds").record(elapsed.as_secs_f64());
        let now = Instant::now();
        let mut st = self.lock();
        st.running.remove(&key);
        let held = st.held.remove(&key);
        let next = match outcome {
            Outcome::Ok(Action::Backoff) => {
                let n = st.failures.entry(key.clone()).or_insert(0);
                *n = n.saturating_add(1);
                let delay = self.config.backoff.delay(*n);
                tracing::debug!(key = %key, conflicts = *n, retry_in = ?delay, "write conflict; retrying after backoff");
                metrics::counter!("jobforge_reconcile_total", "result" => "conflict").increment(1);
                Some(now.checked_add(delay).unwrap_or_else(far_future))
            }
            Outcome::Ok(action) => {
                st.failures.remove(&key);
                match action {
                    Action::Requeue(d) => {
                        metrics::counter!("jobforge_reconcile_total", "result" => "requeue")
                            .increment(1);
                        Some(now.checked_add(d).unwrap_or_else(far_future))
                    }
                    Action::AwaitChange | Action::Backoff => {
                        metrics::counter!("jobforge_reconcile_total", "result" => "await_change")
                            .increment(1);
                        None
                    }
                }
            }
            Outcome::Err(_) | Outcome::Panicked => {
                let n = st.failures.entry(key.clone()).or_insert(0);
                *n = n.saturating_add(1);
                let delay = self.config.backoff.delay(*n);
                match &outcome {
                    Outcome::Err(e) => {
                        tracing::warn!(key = %key, error = %e, failures = *n, retry_in = ?delay, "reconcile failed")
                    }
                    _ => {
                        tracing::error!(key = %key, failures = *n, retry_in = ?delay, "reconcile panicked")
                    }
                }
                metrics::counter!("jobforge_reconcile_total", "result" => "error").increment(1);
                Some(now.checked_add(delay).unwrap_or_else(far_future))
            }
        };
        let at = match (held, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            st.schedule(key, at);
        }
        drop(st);
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let (depth, running) = {
            let mut st = self.lock();
            (st.gauge_depth(Instant::now()), st.running.len())
        };
        metrics::gauge!("jobforge_queue_depth").set(depth as f64);
        metrics::gauge!("jobforge_reconciles_in_flight").set(running as f64);
    }
}

enum Outcome<E> {
    Ok(Action),
    Err(E),
    Panicked,
}

struct Completion<E> {
    key: RequestKey,
    outcome: Outcome<E>,
    elapsed: Duration,
}

/// A deadline that never comes in practice (~30 years), for saturating `Instant` arithmetic.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
