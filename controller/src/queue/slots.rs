//! Build slots: which waiting request may start its pipeline next (issue 17, fair scheduling).
//!
//! The [`super::WorkQueue`] decides when a request is *reconciled*; this module decides when a
//! request that has not started yet may *start its build* (register its first Nomad job). A
//! request holds a slot from the moment it is granted until it ends (a terminal phase, deleted,
//! or cancelled); while it waits its status is `Pending` with reason `Queued`.
//!
//! Rules:
//! - **Caps**: at most `global` requests hold a slot at once, and at most the namespace's cap
//!   (`per_namespace.get(ns)`, else `namespace_default`) within one namespace. A grant never
//!   makes either count exceed its cap ([`Slots::hold`], which records a request found already
//!   running, may: a running build is never stopped to honour a lowered cap).
//! - **Round-robin across namespaces**: each free slot goes to the next namespace (in name order,
//!   after the one served last) that has a waiting request and is under its cap, so one
//!   namespace's backlog delays another's next build by at most one grant per other namespace.
//! - **Priority within a namespace**: higher `spec.priority` first, equal priorities in arrival
//!   order (the request's CreateIndex; without one, the order of the first [`Slots::request`]).
//! - **Every written request takes part**: the watch reports each write of a request
//!   ([`Slots::written`], at its ModifyIndex) before its reconcile runs, and reconciles run
//!   concurrently, in no fixed order (under load the youngest of three requests written together
//!   may be looked at first). So a namespace with a request *unread* — written, and no reconcile
//!   has decided about that write yet ([`Slots::request_at`], [`Slots::hold_at`],
//!   [`Slots::decided`], or [`Slots::gone`] when deleted) — is passed over by the grant until it
//!   is read: which request of a namespace starts is a property of all its waiting requests,
//!   never of the order their reconciles ran in. Passing over (rather than stopping every grant)
//!   means one namespace's stream of new requests never delays another namespace's grant; it may
//!   cost that namespace its turn of the round while it is being read (one reconcile). A
//!   reconcile that fails before deciding leaves its request unread, so its namespace waits for
//!   the retry.
//! - **First pass**: a new leader does not yet know which requests already run. Until every
//!   request of the initial listing has been read ([`Slots::expect_initial`],
//!   [`Slots::initial_listing_done`], then as above), nothing is granted, so the caps count what
//!   really runs.
//! - **Queued messages stay true enough**: a waiting request is told its position and what it
//!   waits for ([`QueuedAt`]); when that changes, [`Slots::stale`] names the requests whose
//!   message should be rewritten (reconciled again): every change within the first
//!   [`REFRESH_WITHIN`] positions, a position that halved or doubled, and a reason that was
//!   temporary (first pass, unread requests) and no longer is. So a request is re-told O(log n)
//!   times while it climbs a queue of n, not at every grant.
//!
//! Pure and synchronous (no clock, no I/O): every operation returns the keys it newly granted,
//! and the caller enqueues them so their reconcile starts the build. Operations are O(namespaces
//! + waiting requests of one namespace).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use super::RequestKey;

/// Concurrency caps of build slots (`<prefix>/config` `concurrency`, see `crate::config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLimits {
    /// Requests holding a slot at once, all namespaces together (≥ 1).
    pub global: usize,
    /// Per-namespace cap when the namespace has no override (≥ 1).
    pub namespace_default: usize,
    /// Per-namespace overrides (each ≥ 1).
    pub per_namespace: HashMap<String, usize>,
}

impl Default for SlotLimits {
    /// Global 16, 16 per namespace: one namespace may use every slot when nobody else waits;
    /// round-robin still shares them as soon as another namespace has work.
    fn default() -> Self {
        SlotLimits {
            global: 16,
            namespace_default: 16,
            per_namespace: HashMap::new(),
        }
    }
}

impl SlotLimits {
    /// The cap of `namespace` (its override, else the default), at least 1.
    pub fn of(&self, namespace: &str) -> usize {
        self.per_namespace
            .get(namespace)
            .copied()
            .unwrap_or(self.namespace_default)
            .max(1)
    }
}

/// The answer to [`Slots::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The request holds a slot: it may start.
    Granted,
    /// The request waits; what for, for its status message.
    Queued(QueuedAt),
}

/// Where a waiting request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAt {
    /// 1-based position among its namespace's waiting requests.
    pub position: usize,
    /// Requests of its namespace waiting (itself included).
    pub waiting: usize,
    /// What it waits for.
    pub blocked_by: Blocked,
}

/// Why a waiting request was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The new leader's first pass over every request is not finished.
    FirstPass,
    /// Requests of its namespace were written and not read yet: the slot goes by priority and
    /// age over all of them, so the namespace waits until they are read (one reconcile each).
    Unread {
        /// Unread requests of the namespace.
        requests: usize,
    },
    /// Its namespace holds as many slots as its cap.
    Namespace {
        /// Slots the namespace holds.
        running: usize,
        /// Its cap.
        cap: usize,
    },
    /// Every slot is held (or given to requests ahead of it).
    Global {
        /// Slots held.
        running: usize,
        /// The global cap.
        cap: usize,
    },
}

impl QueuedAt {
    /// A status message: the position and what it waits for.
    pub fn message(&self, namespace: &str) -> String {
        let why = match &self.blocked_by {
            Blocked::FirstPass => {
                "the controller's first pass over every request (a new leader counts running builds first)"
                    .to_string()
            }
            Blocked::Unread { requests } => format!(
                "the controller to read {requests} request(s) of namespace {namespace} written since its last look (a slot goes by priority, then age, over all of them)"
            ),
            Blocked::Namespace { running, cap } => format!(
                "a build slot of namespace {namespace} ({running} of its {cap} running)"
            ),
            Blocked::Global { running, cap } => {
                format!("a build slot ({running} of {cap} running, shared round-robin across namespaces)")
            }
        };
        format!(
            "queued: position {} of {} waiting in namespace {namespace}; waiting for {why}",
            self.position, self.waiting
        )
    }
}

impl Blocked {
    /// A reason that lasts one reconcile or one first pass, not until a build ends.
    fn is_temporary(&self) -> bool {
        matches!(self, Blocked::FirstPass | Blocked::Unread { .. })
    }
}

/// Order inside a namespace: higher priority first, then arrival.
type WaitEntry = (std::cmp::Reverse<u32>, u64, String);

/// Positions within which every change of a waiting request's position is re-told
/// ([`Slots::stale`]); beyond them, only a position that halved or doubled.
pub const REFRESH_WITHIN: usize = 3;

/// An unread write of a request.
#[derive(Debug, Clone, Copy)]
struct Unread {
    /// The ModifyIndex written (the highest reported).
    index: u64,
    /// It came in the first pass's initial listing.
    initial: bool,
}

/// What a waiting request was last told ([`Slots::request_at`]'s [`QueuedAt`]).
#[derive(Debug, Clone, Copy)]
struct Told {
    position: usize,
    temporary: bool,
}

/// The slot table. See the module docs.
#[derive(Debug, Default)]
pub struct Slots {
    limits: SlotLimits,
    /// Requests holding a slot.
    holding: HashSet<RequestKey>,
    /// Slots held per namespace.
    held_in: HashMap<String, usize>,
    /// Waiting requests per namespace (only namespaces with at least one).
    waiting: BTreeMap<String, BTreeSet<WaitEntry>>,
    /// Each waiting request's entry, to find and move it.
    entry_of: HashMap<RequestKey, WaitEntry>,
    /// Arrival counter.
    seq: u64,
    /// Namespace served by the last grant.
    cursor: Option<String>,
    /// First pass: how many requests of the initial listing are unread, and whether that
    /// listing is complete. `None` = the first pass is over.
    first_pass: Option<(usize, bool)>,
    /// Unread requests: written at this ModifyIndex (the highest the watch reported), and no
    /// reconcile has decided about that write yet; whether it came in the first pass's initial
    /// listing.
    unread: HashMap<RequestKey, Unread>,
    /// Unread requests per namespace (only namespaces with at least one).
    unread_in: HashMap<String, usize>,
    /// What each waiting request was last told.
    told: HashMap<RequestKey, Told>,
    /// Namespaces whose waiting requests may have been told something stale since the last
    /// [`Slots::stale`].
    dirty: BTreeSet<String>,
}

impl Slots {
    /// A table with `limits`, in its first pass (nothing granted until it ends).
    pub fn new(limits: SlotLimits) -> Slots {
        Slots {
            limits,
            first_pass: Some((0, false)),
            ..Slots::default()
        }
    }

    /// A table with `limits` and no first pass (tests, and callers that know nothing runs).
    pub fn open(limits: SlotLimits) -> Slots {
        Slots {
            limits,
            ..Slots::default()
        }
    }

    /// The caps in force.
    pub fn limits(&self) -> &SlotLimits {
        &self.limits
    }

    /// Requests holding a slot.
    pub fn held(&self) -> usize {
        self.holding.len()
    }

    /// Slots held in `namespace`.
    pub fn held_in(&self, namespace: &str) -> usize {
        self.held_in.get(namespace).copied().unwrap_or(0)
    }

    /// Requests waiting, all namespaces.
    pub fn waiting(&self) -> usize {
        self.entry_of.len()
    }

    /// Whether `key` holds a slot.
    pub fn is_holding(&self, key: &RequestKey) -> bool {
        self.holding.contains(key)
    }

    /// New caps (a changed `<prefix>/config`); returns the keys this newly grants. Slots held
    /// above a lowered cap stay held until their requests end.
    pub fn set_limits(&mut self, limits: SlotLimits) -> Vec<RequestKey> {
        self.limits = limits;
        self.grant()
    }

    /// First pass: these keys (from an initial listing, each with its ModifyIndex) are
    /// [`Slots::written`], and must all be read before anything is granted. After the first
    /// pass they are only written.
    pub fn expect_initial(&mut self, keys: impl IntoIterator<Item = (RequestKey, u64)>) {
        for (key, index) in keys {
            self.written(&key, index);
            if let (Some(u), Some((pending, _))) = (self.unread.get_mut(&key), &mut self.first_pass)
                && !u.initial
            {
                u.initial = true;
                *pending += 1;
            }
        }
    }

    /// First pass: every initial listing has been given to [`Slots::expect_initial`]. Returns
    /// the keys granted if this ends the first pass.
    pub fn initial_listing_done(&mut self) -> Vec<RequestKey> {
        if let Some((_, complete)) = &mut self.first_pass {
            *complete = true;
        }
        self.grant()
    }

    /// The watch saw `key` written at ModifyIndex `index` (created or changed): until a
    /// reconcile decides about that write, its namespace is passed over by the grant (module
    /// docs). Grants nothing.
    pub fn written(&mut self, key: &RequestKey, index: u64) {
        match self.unread.get_mut(key) {
            Some(u) => u.index = u.index.max(index),
            None => {
                self.unread.insert(
                    key.clone(),
                    Unread {
                        index,
                        initial: false,
                    },
                );
                *self.unread_in.entry(key.namespace.clone()).or_insert(0) += 1;
            }
        }
    }

    /// Whether the first pass is still on (nothing granted yet).
    pub fn in_first_pass(&self) -> bool {
        self.first_pass.is_some()
    }

    /// Whether a write of `key` is unread.
    pub fn is_unread(&self, key: &RequestKey) -> bool {
        self.unread.contains_key(key)
    }

    /// Requests of `namespace` written and not read yet.
    pub fn unread_in(&self, namespace: &str) -> usize {
        self.unread_in.get(namespace).copied().unwrap_or(0)
    }

    /// A reconcile read `key` at `generation` (its spec's ModifyIndex) and decided it does not
    /// wait for a slot (finished, cancelled, invalid, superseded, over its quota) or already
    /// said so ([`Slots::request_at`], [`Slots::hold_at`]). A write newer than `generation`
    /// stays unread. Returns the keys granted.
    pub fn decided(&mut self, key: &RequestKey, generation: u64) -> Vec<RequestKey> {
        self.read_at(key, generation);
        self.grant()
    }

    /// The watch saw `key` deleted: it is neither unread nor waiting any more (a slot it holds
    /// is given back by [`Slots::release`] once its reconcile has cleaned up). Returns the keys
    /// granted.
    pub fn gone(&mut self, key: &RequestKey) -> Vec<RequestKey> {
        self.read_at(key, u64::MAX);
        self.unwait(key);
        self.grant()
    }

    /// Clears `key`'s unread mark if `generation` covers it.
    fn read_at(&mut self, key: &RequestKey, generation: u64) {
        let initial = match self.unread.get(key) {
            Some(u) if u.index <= generation => u.initial,
            _ => return,
        };
        self.unread.remove(key);
        if let Some(n) = self.unread_in.get_mut(&key.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unread_in.remove(&key.namespace);
            }
        }
        if let Some((pending, _)) = &mut self.first_pass
            && initial
        {
            *pending = pending.saturating_sub(1);
        }
        self.dirty.insert(key.namespace.clone());
    }

    /// `key` (priority 1..=100, higher first) asks to start, as if its reconcile had read every
    /// write of it ([`Slots::request_at`] without an arrival order). Returns whether it holds a
    /// slot now (it may have been granted by this call) and the *other* keys this call granted.
    pub fn request(&mut self, key: &RequestKey, priority: u32) -> (Admission, Vec<RequestKey>) {
        self.request_at(key, priority, None, u64::MAX)
    }

    /// `key`'s reconcile read it at `generation` (its spec's ModifyIndex) and found it waiting to
    /// start with `priority` (1..=100, higher first) and arrival order `arrival` (its Consul
    /// CreateIndex; `None` orders by first request): within a priority, waiting requests are
    /// granted oldest first whatever order their reconciles run in. Reading and joining the
    /// waiting requests are one step, so no grant is decided in between. Returns whether it
    /// holds a slot now (it may have been granted by this call) and the *other* keys this call
    /// granted. A waiting key asking again keeps its place unless its priority changed.
    pub fn request_at(
        &mut self,
        key: &RequestKey,
        priority: u32,
        arrival: Option<u64>,
        generation: u64,
    ) -> (Admission, Vec<RequestKey>) {
        self.read_at(key, generation);
        if self.holding.contains(key) {
            return (Admission::Granted, self.grant());
        }
        match self.entry_of.get(key) {
            Some((p, _, _)) if p.0 == priority => {}
            Some(_) => {
                self.unwait(key);
                self.wait(key, priority, arrival);
            }
            None => self.wait(key, priority, arrival),
        }
        let mut granted = self.grant();
        if let Some(i) = granted.iter().position(|k| k == key) {
            granted.swap_remove(i);
            return (Admission::Granted, granted);
        }
        let at = self.queued_at(key);
        self.told.insert(
            key.clone(),
            Told {
                position: at.position,
                temporary: at.blocked_by.is_temporary(),
            },
        );
        (Admission::Queued(at), granted)
    }

    /// Records that `key` already runs (found running by a reconcile that read it at
    /// `generation`): it holds a slot even if that exceeds a cap. Idempotent. Returns the keys
    /// granted (reading it may end the first pass, or let its namespace be served).
    pub fn hold_at(&mut self, key: &RequestKey, generation: u64) -> Vec<RequestKey> {
        self.read_at(key, generation);
        self.hold(key);
        self.grant()
    }

    /// [`Slots::hold_at`] without reading: records that `key` runs. Idempotent.
    pub fn hold(&mut self, key: &RequestKey) {
        self.unwait(key);
        if self.holding.insert(key.clone()) {
            *self.held_in.entry(key.namespace.clone()).or_insert(0) += 1;
        }
    }

    /// `key` ended, was deleted or no longer wants to start: it gives back its slot (or leaves
    /// the waiting list). Returns the keys granted with the freed slot.
    pub fn release(&mut self, key: &RequestKey) -> Vec<RequestKey> {
        self.unwait(key);
        if self.holding.remove(key) {
            if let Some(n) = self.held_in.get_mut(&key.namespace) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.held_in.remove(&key.namespace);
                }
            }
            return self.grant();
        }
        Vec::new()
    }

    fn wait(&mut self, key: &RequestKey, priority: u32, arrival: Option<u64>) {
        self.seq += 1;
        let entry = (
            std::cmp::Reverse(priority),
            arrival.unwrap_or(self.seq),
            key.name.clone(),
        );
        self.waiting
            .entry(key.namespace.clone())
            .or_default()
            .insert(entry.clone());
        self.entry_of.insert(key.clone(), entry);
        self.dirty.insert(key.namespace.clone());
    }

    fn unwait(&mut self, key: &RequestKey) {
        self.told.remove(key);
        let Some(entry) = self.entry_of.remove(key) else {
            return;
        };
        self.dirty.insert(key.namespace.clone());
        if let Some(set) = self.waiting.get_mut(&key.namespace) {
            set.remove(&entry);
            if set.is_empty() {
                self.waiting.remove(&key.namespace);
            }
        }
    }

    /// Ends the first pass if it is complete, then gives free slots to waiting requests,
    /// round-robin across namespaces.
    fn grant(&mut self) -> Vec<RequestKey> {
        let mut granted = Vec::new();
        match &self.first_pass {
            None => {}
            Some((0, true)) => {
                self.first_pass = None;
                // Everyone told "first pass" is told again.
                self.dirty.extend(self.waiting.keys().cloned());
            }
            Some(_) => return granted,
        }
        while self.holding.len() < self.limits.global.max(1) {
            let Some(ns) = self.next_namespace() else {
                break;
            };
            let Some(set) = self.waiting.get_mut(&ns) else {
                break;
            };
            let Some(entry) = set.pop_first() else {
                break;
            };
            if set.is_empty() {
                self.waiting.remove(&ns);
            }
            let key = RequestKey::new(ns.clone(), entry.2);
            self.entry_of.remove(&key);
            self.told.remove(&key);
            self.dirty.insert(ns.clone());
            self.holding.insert(key.clone());
            *self.held_in.entry(ns.clone()).or_insert(0) += 1;
            self.cursor = Some(ns);
            granted.push(key);
        }
        granted
    }

    /// The first namespace after the cursor (wrapping) with a waiting request, room under its
    /// cap and no unread request.
    fn next_namespace(&self) -> Option<String> {
        let has_room = |ns: &str| self.held_in(ns) < self.limits.of(ns) && self.unread_in(ns) == 0;
        let (after, upto) = match &self.cursor {
            Some(c) => (
                self.waiting
                    .range::<str, _>((Bound::Excluded(c.as_str()), Bound::Unbounded)),
                self.waiting
                    .range::<str, _>((Bound::Unbounded, Bound::Included(c.as_str()))),
            ),
            None => (
                self.waiting.range::<str, _>(..),
                self.waiting
                    .range::<str, _>((Bound::Unbounded, Bound::Excluded(""))),
            ),
        };
        after
            .chain(upto)
            .map(|(ns, _)| ns)
            .find(|ns| has_room(ns))
            .cloned()
    }

    fn queued_at(&self, key: &RequestKey) -> QueuedAt {
        let set = self.waiting.get(&key.namespace);
        let waiting = set.map_or(0, BTreeSet::len);
        let position = match (set, self.entry_of.get(key)) {
            (Some(set), Some(e)) => set.range(..e).count() + 1,
            _ => 0,
        };
        let (ns_running, ns_cap) = (self.held_in(&key.namespace), self.limits.of(&key.namespace));
        let unread = self.unread_in(&key.namespace);
        let global = Blocked::Global {
            running: self.holding.len(),
            cap: self.limits.global.max(1),
        };
        // The lasting reason first, so that a request told a temporary one (to be told again
        // when it ends) is one that may start then: with its namespace's free slots all going
        // to requests ahead of it, it waits for the namespace cap whatever is read meanwhile.
        let blocked_by = if self.first_pass.is_some() {
            Blocked::FirstPass
        } else if ns_running + position > ns_cap {
            Blocked::Namespace {
                running: ns_running,
                cap: ns_cap,
            }
        } else if self.holding.len() >= self.limits.global.max(1) || unread == 0 {
            global
        } else {
            Blocked::Unread { requests: unread }
        };
        QueuedAt {
            position,
            waiting,
            blocked_by,
        }
    }

    /// Waiting requests whose `Queued` message is stale enough to be rewritten (module docs),
    /// each named once until it is told again. Looks only at namespaces whose waiting requests
    /// changed since the last call.
    pub fn stale(&mut self) -> Vec<RequestKey> {
        let mut out = Vec::new();
        if self.first_pass.is_some() {
            // Every namespace is looked at when the first pass ends.
            self.dirty.clear();
            return out;
        }
        for ns in std::mem::take(&mut self.dirty) {
            // A namespace being read is looked at once it is (reading marks it again).
            if self.unread_in.contains_key(&ns) {
                continue;
            }
            let Some(set) = self.waiting.get(&ns) else {
                continue;
            };
            for (i, (_, _, name)) in set.iter().enumerate() {
                let key = RequestKey::new(ns.clone(), name.clone());
                let Some(told) = self.told.get_mut(&key) else {
                    continue;
                };
                let pos = i + 1;
                let moved = pos != told.position
                    && (pos <= REFRESH_WITHIN
                        || pos * 2 <= told.position
                        || pos >= told.position * 2);
                if moved || told.temporary {
                    *told = Told {
                        position: pos,
                        temporary: false,
                    };
                    out.push(key);
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "tests/slots.rs"]
mod tests;
