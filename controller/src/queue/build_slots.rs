//! [`BuildSlots`]: the [`Slots`] table of one leadership term, shared by its reconciles, which
//! enqueues every request it grants a slot so that its reconcile starts the build.
//!
//! Metrics: `jobforge_build_slots_held` (gauge: requests holding a slot) and
//! `jobforge_builds_queued` (gauge: requests waiting for one).

use std::sync::{Mutex, MutexGuard};

use super::quota::StoredRequests;
use super::slots::{Admission, SlotLimits, Slots};
use super::{RequestKey, WorkQueue};

/// The slot table of a term plus the queue its grants are enqueued on. Cheap to share behind an
/// `Arc`; every method takes the lock briefly and never awaits.
#[derive(Debug)]
pub struct BuildSlots {
    slots: Mutex<Slots>,
    queue: WorkQueue,
    /// Requests stored per namespace (the storage quota), kept by the requests watch.
    stored: Mutex<StoredRequests>,
}

impl BuildSlots {
    /// A table in its first pass (nothing granted until [`BuildSlots::initial_listing_done`] and
    /// every expected key was [`BuildSlots::seen`]).
    pub fn new(limits: SlotLimits, queue: WorkQueue) -> BuildSlots {
        BuildSlots {
            slots: Mutex::new(Slots::new(limits)),
            queue,
            stored: Mutex::new(StoredRequests::default()),
        }
    }

    /// The requests stored per namespace ([`StoredRequests`]), for the watch to update and the
    /// reconciler to check quotas against.
    pub fn stored(&self) -> MutexGuard<'_, StoredRequests> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues the granted keys and refreshes the gauges.
    fn wake(&self, st: MutexGuard<'_, Slots>, granted: Vec<RequestKey>) {
        let (held, waiting) = (st.held(), st.waiting());
        drop(st);
        metrics::gauge!("jobforge_build_slots_held").set(held as f64);
        metrics::gauge!("jobforge_builds_queued").set(waiting as f64);
        for k in granted {
            tracing::debug!(request = %k, "build slot granted");
            self.queue.enqueue(k);
        }
    }

    /// The queue grants are enqueued on.
    pub fn queue(&self) -> &WorkQueue {
        &self.queue
    }

    /// Applies `limits` if they differ from the ones in force (the configuration changed).
    pub fn set_limits(&self, limits: &SlotLimits) {
        let mut st = self.lock();
        if st.limits() == limits {
            return;
        }
        let granted = st.set_limits(limits.clone());
        self.wake(st, granted);
    }

    /// `key` wants to start ([`Slots::request`]); other keys granted meanwhile are enqueued.
    pub fn request(&self, key: &RequestKey, priority: u32) -> Admission {
        let arrival = self.stored().create_index(key);
        let mut st = self.lock();
        let (adm, granted) = st.request_at(key, priority, arrival);
        self.wake(st, granted);
        adm
    }

    /// `key` runs ([`Slots::hold`]).
    pub fn hold(&self, key: &RequestKey) {
        let mut st = self.lock();
        if !st.is_holding(key) {
            st.hold(key);
            self.wake(st, Vec::new());
        }
    }

    /// `key` ended or went away ([`Slots::release`]); the keys granted its slot are enqueued.
    pub fn release(&self, key: &RequestKey) {
        let mut st = self.lock();
        let granted = st.release(key);
        self.wake(st, granted);
    }

    /// First pass: these keys come from an initial listing ([`Slots::expect_initial`]).
    pub fn expect_initial(&self, keys: impl IntoIterator<Item = RequestKey>) {
        self.lock().expect_initial(keys);
    }

    /// First pass: every initial listing is in ([`Slots::initial_listing_done`]).
    pub fn initial_listing_done(&self) {
        let mut st = self.lock();
        let granted = st.initial_listing_done();
        self.wake(st, granted);
    }

    /// First pass: `key` was reconciled once ([`Slots::seen`]).
    pub fn seen(&self, key: &RequestKey) {
        let mut st = self.lock();
        let granted = st.seen(key);
        if !granted.is_empty() {
            tracing::info!(
                granted = granted.len(),
                "first pass over every request done: build slots open"
            );
        }
        self.wake(st, granted);
    }
}
