//! [`BuildSlots`]: the [`Slots`] table of one leadership term, shared by the requests watch
//! (which reports every write and deletion of a request, [`BuildSlots::initial`],
//! [`BuildSlots::written`], [`BuildSlots::deleted`]) and by the reconciles (which say what they
//! read: [`BuildSlots::request`], [`BuildSlots::hold`], [`BuildSlots::decided`],
//! [`BuildSlots::release`]). It enqueues every request it grants a slot, so that its reconcile
//! starts the build, and every waiting request whose `Queued` message went stale
//! ([`Slots::stale`]), so that its reconcile rewrites it.
//!
//! Metrics: `jobforge_build_slots_held` (gauge: requests holding a slot) and
//! `jobforge_builds_queued` (gauge: requests waiting for one).

use std::sync::{Mutex, MutexGuard};

use super::quota::StoredRequests;
use super::slots::{Admission, SlotLimits, Slots};
use super::{RequestKey, WorkQueue};

/// How long a waiting request whose `Queued` message went stale waits before its reconcile
/// rewrites it: requests written meanwhile (whose reconcile is due at once) are read first, so a
/// burst of re-tellings in one namespace never delays another namespace's new requests.
const RETELL_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// How soon a request whose newest write is still unread after its reconcile is read again.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

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
    /// A table in its first pass (nothing granted until [`BuildSlots::initial`] and every
    /// request it listed was read).
    pub fn new(limits: SlotLimits, queue: WorkQueue) -> BuildSlots {
        BuildSlots {
            slots: Mutex::new(Slots::new(limits)),
            queue,
            stored: Mutex::new(StoredRequests::default()),
        }
    }

    /// The requests stored per namespace ([`StoredRequests`]), for the reconciler to check
    /// quotas against.
    pub fn stored(&self) -> MutexGuard<'_, StoredRequests> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues the granted keys and the waiting ones to re-tell, and refreshes the gauges.
    fn wake(&self, mut st: MutexGuard<'_, Slots>, granted: Vec<RequestKey>) {
        let stale = st.stale();
        let (held, waiting) = (st.held(), st.waiting());
        drop(st);
        metrics::gauge!("jobforge_build_slots_held").set(held as f64);
        metrics::gauge!("jobforge_builds_queued").set(waiting as f64);
        for k in granted {
            tracing::debug!(request = %k, "build slot granted");
            self.queue.enqueue(k);
        }
        for k in stale {
            tracing::debug!(request = %k, "queued message stale: told again");
            self.queue.enqueue_after(k, RETELL_AFTER);
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

    /// The requests watch's initial listing: `(key, CreateIndex, ModifyIndex)` of every stored
    /// request. Each is stored and written ([`Slots::expect_initial`]); the listing is complete
    /// ([`Slots::initial_listing_done`]).
    pub fn initial(&self, listed: impl IntoIterator<Item = (RequestKey, u64, u64)>) {
        let listed: Vec<_> = listed.into_iter().collect();
        {
            let mut stored = self.stored();
            for (k, create, _) in &listed {
                stored.present(k, *create);
            }
        }
        self.apply(|st| {
            st.expect_initial(listed.into_iter().map(|(k, _, modify)| (k, modify)));
            ((), st.initial_listing_done())
        });
    }

    /// The requests watch saw `key` created at `create_index` or changed, now at ModifyIndex
    /// `modify_index` ([`Slots::written`]). The caller then enqueues it.
    pub fn written(&self, key: &RequestKey, create_index: u64, modify_index: u64) {
        self.stored().present(key, create_index);
        self.lock().written(key, modify_index);
    }

    /// The requests watch saw `key` deleted ([`Slots::gone`]).
    pub fn deleted(&self, key: &RequestKey) {
        self.stored().deleted(key);
        self.apply(|st| ((), st.gone(key)));
    }

    /// `key`, read at `generation`, wants to start ([`Slots::request_at`], in CreateIndex
    /// order); other keys granted meanwhile are enqueued.
    pub fn request(&self, key: &RequestKey, priority: u32, generation: u64) -> Admission {
        let arrival = self.stored().create_index(key);
        self.apply(|st| st.request_at(key, priority, arrival, generation))
    }

    /// `key`, read at `generation`, runs ([`Slots::hold_at`]).
    pub fn hold(&self, key: &RequestKey, generation: u64) {
        self.apply(|st| ((), st.hold_at(key, generation)));
    }

    /// `key`'s reconcile read it at `generation` and has decided about it ([`Slots::decided`]).
    /// If a newer write of it is still unread although no reconcile of it is due (a read older
    /// than the write the watch reported), it is enqueued again shortly, so its namespace is
    /// never left waiting on it.
    pub fn decided(&self, key: &RequestKey, generation: u64) {
        let unread = self.apply(|st| {
            let granted = st.decided(key, generation);
            (st.is_unread(key), granted)
        });
        if unread {
            self.queue.enqueue_after(key.clone(), REREAD_AFTER);
        }
    }

    /// `key` ended or went away ([`Slots::release`]); the keys granted its slot are enqueued.
    pub fn release(&self, key: &RequestKey) {
        self.apply(|st| ((), st.release(key)));
    }

    /// Runs `op` on the table, then enqueues what it granted and what went stale; logs the end
    /// of the first pass.
    fn apply<T>(&self, op: impl FnOnce(&mut Slots) -> (T, Vec<RequestKey>)) -> T {
        let mut st = self.lock();
        let was_first_pass = st.in_first_pass();
        let (out, granted) = op(&mut st);
        if was_first_pass && !st.in_first_pass() {
            tracing::info!(
                granted = granted.len(),
                "first pass over every request done: build slots open"
            );
        }
        self.wake(st, granted);
        out
    }
}

#[cfg(test)]
mod tests {
    //! The interleavings a loaded leader runs into, driven step by step: the watch reports
    //! several requests of a namespace at once, and their reconciles reach the slot table in any
    //! order (they run concurrently; under load the youngest may get there first).

    use std::collections::HashMap;

    use super::*;
    use crate::queue::QueueConfig;

    fn k(n: &str) -> RequestKey {
        RequestKey::new("team-a", n)
    }

    /// Global 4, one per namespace: the integration test's `concurrency` settings.
    fn slots() -> BuildSlots {
        let limits = SlotLimits {
            global: 4,
            namespace_default: 1,
            per_namespace: HashMap::new(),
        };
        BuildSlots::new(limits, WorkQueue::new(QueueConfig::default()))
    }

    /// What the requests watch does with an `Added` request written at `index` (a new key:
    /// CreateIndex = ModifyIndex).
    fn watch_saw(s: &BuildSlots, key: &RequestKey, index: u64) {
        s.written(key, index, index);
    }

    #[test]
    fn the_youngest_request_reconciled_first_does_not_take_the_slot_of_older_ones() {
        let s = slots();
        // A leader with nothing stored: its first pass ends at once.
        s.initial([]);
        // The watch reports a1, a2, a3 together (one listing of a new namespace folder).
        for (i, n) in ["a1", "a2", "a3"].iter().enumerate() {
            watch_saw(&s, &k(n), 10 + i as u64);
        }
        // a3's reconcile reaches the table first.
        let adm = s.request(&k("a3"), 50, 12);
        assert!(
            matches!(adm, Admission::Queued(_)),
            "a3 was granted before a1 and a2 were looked at: {adm:?}"
        );
        assert!(matches!(s.request(&k("a2"), 50, 11), Admission::Queued(_)));
        assert_eq!(s.request(&k("a1"), 50, 10), Admission::Granted);
    }
}
