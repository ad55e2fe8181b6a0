//! The controller's runtime: leadership, and while leader, the watches that feed the work queue
//! and the queue that runs [`Reconciler::reconcile`].
//!
//! ```text
//! Leadership ──leader──► term: watch requests/ ─┐
//!     │                        watch status/   ─┼─► WorkQueue ─► Reconciler ─► Nomad / fenced KV
//!     │                        watch config    ─┘        ▲
//!     │                        JobWatches (Nomad allocations, blocking) ─┘
//!     │                        Outbox: watch outbox/ ─► webhook POSTs ─► fenced remove + status
//!     └─standby──► serve health and metrics only; never write
//! ```
//!
//! A new term starts with the full listing of every request (the watch's initial answer) and one
//! reconcile of each; `/readyz` turns ready when that listing has been queued. On SIGTERM the term
//! stops taking work, lets in-flight reconciles finish (up to `--shutdown-timeout`), then
//! leadership is released so a standby takes over at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use futures::StreamExt;
use jobforge_client::consul::leader::{Fence, LeaderConfig, LeaderState, Leadership};
use jobforge_client::consul::watch::{
    WatchEvent, WatchOptions, watch_key, watch_keys_sharded, watch_prefix_sharded,
};
use jobforge_client::consul::{Client as ConsulClient, KvPair};
use jobforge_schema::{KeyClass, KeyLayout};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ControllerArgs, EffectiveConfig, KvConfig};
use crate::health::{self, HealthState};
use crate::jobwatch::JobWatches;
use crate::nomad::Client as NomadClient;
use crate::queue::{BuildSlots, QueueConfig, RequestKey, WorkQueue};
use crate::reconcile::{Deps, Reconciler};
use crate::vault::VaultChecker;
use crate::webhook::{Outbox, OutboxDeps, Sender};

/// Longest pause between retries of a failing Consul watch: a recovered Consul is seen within
/// seconds (the watch then re-reads at once and reports what changed meanwhile).
const WATCH_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the controller until `cancel` fires. Errors only on start-up problems (bad configuration,
/// the HTTP address in use); Consul and Nomad outages are retried forever.
pub async fn run(args: ControllerArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let consul = ConsulClient::from_env()
        .context("Consul configuration (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN)")?;
    let nomad = NomadClient::from_env().context("Nomad configuration (NOMAD_ADDR, NOMAD_TOKEN)")?;
    let vault = vault_from_env()?;
    let keys = KeyLayout::new(&args.prefix);
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(crate::config::default_identity);
    let health = HealthState::new(identity.clone());
    let metrics = health::install_metrics(cancel.clone());
    let (http_addr, http_task) = health::serve(
        args.http_addr,
        health::router(health.clone(), metrics),
        cancel.clone(),
    )
    .await?;
    tracing::info!(%http_addr, identity, prefix = keys.prefix(), "jobforge-controller started");

    // Configuration: flags, overridden by <prefix>/config, re-read on change.
    let initial = EffectiveConfig::merge(&args, &KvConfig::default());
    let (config_tx, config_rx) = watch::channel(Arc::new(initial));
    let config_task = tokio::spawn(watch_config(
        consul.clone(),
        keys.clone(),
        args.clone(),
        config_tx,
        health.clone(),
        cancel.clone(),
    ));
    // Reachability and leader identity, from a blocking watch of the leader key.
    let leader_watch_task = tokio::spawn(watch_leader_key(
        consul.clone(),
        keys.leader_key(),
        health.clone(),
        cancel.clone(),
    ));

    let leader_cfg = leader_config(&args, &keys, &identity, http_addr)?;
    let leadership = Leadership::start(consul.clone(), leader_cfg, cancel.child_token())
        .context("starting leader election")?;
    // Every session renewal (each TTL/2) is an answer from Consul: `/readyz` turns 503 when
    // none came within TTL/2 plus slack (a frozen Consul).
    health.consul_answer_bound_ms.store(
        u64::try_from(health::consul_answer_bound(args.session_ttl).as_millis())
            .unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    let contact_task = tokio::spawn(forward_contact(
        leadership.contact(),
        health.clone(),
        cancel.clone(),
    ));
    // A new term's dependencies; the fence is the state's (built from it if not yet exposed).
    let term_deps = |session: &str| TermDeps {
        deps: Deps {
            consul: consul.clone(),
            nomad: nomad.clone(),
            vault: vault.clone(),
            keys: keys.clone(),
            fence: leadership.fence().unwrap_or_else(|| {
                Fence::new(consul.clone(), keys.leader_key(), session.to_string())
            }),
            config: config_rx.clone(),
        },
        health: health.clone(),
        max_concurrent: args.max_concurrent_reconciles,
        shutdown_grace: args.shutdown_timeout,
        sweep_interval: args.sweep_interval,
        park_after: args.watch_park_after,
    };
    let term = follow_leadership(&leadership, &health, term_deps, &cancel).await;

    tracing::info!("shutting down: draining reconciles, then releasing leadership");
    if let Some(t) = term {
        t.stop().await;
    }
    leadership.shutdown().await;
    health.is_leader.store(false, Ordering::SeqCst);
    metrics::gauge!("jobforge_leader").set(0.0);
    let _ = config_task.await;
    let _ = leader_watch_task.await;
    contact_task.abort();
    let _ = http_task.await;
    Ok(())
}

/// Marks Consul as answering each time the campaign hears from it.
async fn forward_contact(
    mut contact: watch::Receiver<Option<tokio::time::Instant>>,
    health: Arc<HealthState>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = contact.changed() => {
                if changed.is_err() {
                    return;
                }
                health.consul_answered();
            }
        }
    }
}

/// Follows the leader election until `cancel` fires or it ends: a term starts when this replica
/// becomes leader (`term_deps` gives its dependencies for the session) and stops when it is not
/// leader any more. Returns the term still running at the end.
async fn follow_leadership(
    leadership: &Leadership,
    health: &HealthState,
    term_deps: impl Fn(&str) -> TermDeps,
    cancel: &CancellationToken,
) -> Option<Term> {
    let mut state_rx = leadership.subscribe();
    let mut term: Option<Term> = None;
    loop {
        let state = state_rx.borrow_and_update().clone();
        record_leadership(health, &state);
        match (&state, term.is_some()) {
            (LeaderState::Leader { session }, false) => {
                tracing::info!("became leader: listing every request");
                health.first_list_done.store(false, Ordering::SeqCst);
                term = Some(Term::start(term_deps(session), cancel));
            }
            (LeaderState::Leader { .. }, true) => {}
            (_, true) => {
                tracing::warn!("lost leadership: aborting in-flight reconciles");
                if let Some(t) = term.take() {
                    t.abort().await;
                }
                health.first_list_done.store(false, Ordering::SeqCst);
            }
            (_, false) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return term,
            changed = state_rx.changed() => if changed.is_err() { return term },
        }
    }
}

/// The Vault checker when `VAULT_ADDR` is set; without it secret paths are not checked.
fn vault_from_env() -> anyhow::Result<Option<Arc<VaultChecker>>> {
    if std::env::var_os("VAULT_ADDR").is_none() {
        tracing::warn!(
            "VAULT_ADDR is not set: secret paths are not checked before jobs are created"
        );
        return Ok(None);
    }
    let checker =
        VaultChecker::from_env().context("Vault configuration (VAULT_ADDR, VAULT_TOKEN)")?;
    Ok(Some(Arc::new(checker)))
}

/// The leader election settings of this replica: the flags' TTL and lock-delay, and the identity
/// document other replicas and `/status` read from the leader key.
fn leader_config(
    args: &ControllerArgs,
    keys: &KeyLayout,
    identity: &str,
    http_addr: std::net::SocketAddr,
) -> anyhow::Result<LeaderConfig> {
    let identity_doc = serde_json::json!({"identity": identity, "http": http_addr.to_string(), "pid": std::process::id()});
    let mut cfg = LeaderConfig::new(keys.leader_key(), serde_json::to_vec(&identity_doc)?);
    cfg.ttl = args.session_ttl;
    cfg.lock_delay = args.lock_delay;
    // The leader key is watched with consistent blocking reads, which answer at once on any
    // change, so a long wait costs no reaction time; it keeps an idle replica to a few requests a
    // minute (mostly the TTL/2 session renewals).
    cfg.monitor_wait = std::time::Duration::from_secs(300);
    cfg.session_name = format!("jobforge-controller {identity}");
    if args.service_registration {
        cfg.service = Some(service_registration(args, identity, http_addr));
    }
    Ok(cfg)
}

/// This replica's service: ID `<service name>-<identity>` (identities are unique per replica),
/// meta `identity` and `version`, an HTTP check on its own `/healthz` at `--check-interval` /
/// `--check-timeout`, registered `passing` (the endpoint answers before the campaign starts).
fn service_registration(
    args: &ControllerArgs,
    identity: &str,
    http_addr: std::net::SocketAddr,
) -> jobforge_client::consul::ServiceRegistration {
    let ip = args
        .service_address
        .unwrap_or(if http_addr.ip().is_unspecified() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            http_addr.ip()
        });
    let host = std::net::SocketAddr::new(ip, http_addr.port());
    let id: String = format!("{}-{identity}", args.service_name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    jobforge_client::consul::ServiceRegistration {
        id,
        name: args.service_name.clone(),
        tags: vec!["jobforge-controller".to_string()],
        address: ip.to_string(),
        port: http_addr.port(),
        meta: std::collections::BTreeMap::from([
            ("identity".to_string(), identity.to_string()),
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]),
        check_url: format!("http://{host}/healthz"),
        check_interval: args.check_interval,
        check_timeout: args.check_timeout,
        initial_status: Some("passing"),
    }
}

/// Tells `/status` and the metrics what the leader election says.
fn record_leadership(health: &HealthState, state: &LeaderState) {
    health.set_session(state.session().map(String::from));
    let leader = state.is_leader();
    let was = health.is_leader.swap(leader, Ordering::SeqCst);
    metrics::gauge!("jobforge_leader").set(if leader { 1.0 } else { 0.0 });
    if was != leader {
        metrics::counter!("jobforge_leadership_transitions_total").increment(1);
    }
}

/// A running leadership term.
struct Term {
    cancel: CancellationToken,
    abort: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Term {
    /// Starts [`leader_term`] under a child token of `cancel`.
    fn start(deps: TermDeps, cancel: &CancellationToken) -> Term {
        let cancel = cancel.child_token();
        let abort = CancellationToken::new();
        let (t, a) = (cancel.clone(), abort.clone());
        let handle = tokio::spawn(async move { leader_term(deps, t, a).await });
        Term {
            cancel,
            abort,
            handle,
        }
    }

    /// Stops taking work and waits for the term to drain (SIGTERM: in-flight reconciles finish,
    /// up to `--shutdown-timeout`, while this replica still leads).
    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.handle.await;
    }

    /// Leadership is lost: drops every in-flight reconcile and the sweep at their next await,
    /// without waiting for them to finish (whatever they would still send is no longer this
    /// replica's to send; each Nomad action and KV write is fenced besides), then waits for the
    /// term's tasks to end.
    async fn abort(self) {
        self.abort.cancel();
        self.cancel.cancel();
        let _ = self.handle.await;
    }
}

/// What a leadership term starts with: the reconciler's [`Deps`] and the term's own settings.
struct TermDeps {
    deps: Deps,
    health: Arc<HealthState>,
    max_concurrent: usize,
    shutdown_grace: std::time::Duration,
    sweep_interval: std::time::Duration,
    /// `--watch-park-after`.
    park_after: std::time::Duration,
}

/// How long a new leader waits for the first reading of `<prefix>/config`.
const CONFIG_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// One leadership term: watches feed the queue; the queue runs reconciles; the orphan sweep runs
/// every `sweep_interval`; everything stops when `cancel` fires (in-flight reconciles get the
/// shutdown grace), or at once when `abort` fires (leadership lost).
async fn leader_term(d: TermDeps, cancel: CancellationToken, abort: CancellationToken) {
    // The operator's build caps, quotas and tenancy rules live in `<prefix>/config`: no request
    // starts before they were read once.
    if !d.health.wait_config_read(CONFIG_READ_WAIT).await {
        tracing::warn!(
            waited = ?CONFIG_READ_WAIT,
            "<prefix>/config not read yet; leading with the flags' defaults until it is"
        );
    }
    let queue = WorkQueue::new(QueueConfig {
        max_concurrent: d.max_concurrent.max(1),
        shutdown_grace: d.shutdown_grace,
        ..QueueConfig::default()
    });
    let Deps {
        consul,
        nomad,
        vault,
        keys,
        fence,
        ..
    } = d.deps.clone();
    let sweep_nomad = nomad.clone();
    let job_watches = JobWatches::new(nomad, queue.clone(), cancel.child_token());
    // Webhook events the reconciler commits into the outbox (and those earlier leaders left).
    let outbox = Outbox::spawn(
        OutboxDeps {
            consul: consul.clone(),
            fence,
            keys: keys.clone(),
            sender: Arc::new(Sender::new(vault)),
            config: d.deps.config.clone(),
        },
        cancel.child_token(),
    );
    let limits = d.deps.config.borrow().limits.slots.clone();
    let slots = Arc::new(BuildSlots::new(limits, queue.clone()));
    let reconciler = Arc::new(Reconciler::new(d.deps, job_watches, slots.clone()));

    let requests = tokio::spawn(watch_requests(
        consul.clone(),
        keys.clone(),
        queue.clone(),
        slots,
        d.health.clone(),
        d.park_after,
        cancel.clone(),
    ));
    let statuses = tokio::spawn(watch_status_keys(
        consul,
        keys,
        queue.clone(),
        d.park_after,
        cancel.clone(),
    ));
    d.health.set_queue(Some(queue.clone()));
    let sweeper = tokio::spawn(sweep_loop(
        reconciler.clone(),
        sweep_nomad,
        d.sweep_interval,
        cancel.clone(),
    ));

    let r = reconciler.clone();
    let run = queue.run(
        move |key: RequestKey| {
            let r = r.clone();
            async move { r.reconcile(key).await }
        },
        cancel.clone(),
    );
    tokio::select! {
        report = run => {
            if !report.abandoned.is_empty() {
                tracing::warn!(abandoned = ?report.abandoned, "reconciles abandoned at shutdown (they are restartable)");
            }
        }
        // Dropping the queue's run drops its task set, which aborts every in-flight reconcile.
        _ = abort.cancelled() => {
            metrics::counter!("jobforge_term_aborts_total").increment(1);
            tracing::warn!("leadership lost: in-flight reconciles aborted");
        }
    }
    sweeper.abort();
    d.health.set_queue(None);
    let _ = requests.await;
    let _ = statuses.await;
    let _ = outbox.await;
}

/// Longest `wait` of the sweep's blocking job list: Nomad's cap (`nomad/rpc.go`
/// `maxQueryTime`, 5 min; Nomad adds up to wait/16 of jitter), so an idle leader re-arms it
/// about once per 5.2 min.
const SWEEP_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs the orphan sweep ([`Reconciler::sweep_jobs`]) at most every `interval` (zero: never),
/// the first one interval after the term starts (not at once: the new term's first listing and
/// reconciles come first, and a failover must not wait behind a sweep), until `cancel`.
///
/// After the first sweep, a sweep runs only once Nomad's job list has changed since the last
/// one: the loop waits with a blocking `GET /v1/jobs?prefix=jobforge-&index=<last>` (so an idle
/// leader makes one job-list request per [`SWEEP_LIST_WAIT`], not one per interval). A deposed
/// leader's late register — what the sweep exists for — always moves that index.
async fn sweep_loop(
    reconciler: Arc<Reconciler>,
    nomad: crate::nomad::Client,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    // The index of the job list the last successful sweep read (0: sweep without waiting).
    let mut swept_at = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // Wait (re-arming after each quiet answer) until the job list moved since the last sweep.
        let listed = loop {
            let q = crate::nomad::QueryOptions {
                index: swept_at,
                wait: Some(SWEEP_LIST_WAIT),
            };
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = nomad.list_jobs_blocking(crate::sweep::JOB_ID_PREFIX, q) => r,
            };
            match r {
                Ok((index, _)) if swept_at != 0 && index == swept_at => continue,
                other => break other,
            }
        };
        let (index, jobs) = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?interval, "sweep: listing Nomad jobs failed");
                swept_at = 0;
                continue;
            }
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            r = reconciler.sweep_jobs(jobs) => r,
        };
        match outcome {
            Ok(0) => tracing::debug!("sweep: no orphaned Nomad job"),
            Ok(n) => tracing::info!(stopped = n, "sweep: orphaned Nomad jobs stopped"),
            Err(crate::reconcile::ReconcileError::NotLeader) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?interval, "sweep failed");
                swept_at = 0;
                continue;
            }
        }
        swept_at = index.max(1);
    }
}

/// The keys under `requests/` that are not requests, seen this term: each is logged once at WARN
/// and counted once in `jobforge_ignored_keys_total` however often it changes; a deleted one is
/// forgotten (logged again if it comes back). At most [`IgnoredKeys::MAX`] are remembered, so a
/// flood of such keys cannot grow the controller's memory; past that, one WARN says so and further
/// ones are neither logged nor counted.
#[derive(Debug, Default)]
struct IgnoredKeys {
    seen: std::collections::HashSet<String>,
    full_reported: bool,
}

impl IgnoredKeys {
    /// Keys remembered at most.
    const MAX: usize = 10_000;

    /// The request `key` names, if it is one; otherwise notes it (see the type's docs). The one
    /// check every key the requests watch reports goes through; the rule itself is
    /// [`KeyLayout::classify_request_key`] (the schema crate owns it for every boundary).
    fn request_of(&mut self, keys: &KeyLayout, key: &str, deleted: bool) -> Option<RequestKey> {
        match keys.classify_request_key(key) {
            KeyClass::Request { namespace, name } => Some(RequestKey::new(namespace, name)),
            KeyClass::Folder => None,
            KeyClass::NotARequest(_) if deleted => {
                self.seen.remove(key);
                None
            }
            KeyClass::NotARequest(why) => {
                if self.seen.contains(key) {
                    return None;
                }
                if self.seen.len() >= Self::MAX {
                    if !self.full_reported {
                        self.full_reported = true;
                        tracing::warn!(
                            max = Self::MAX,
                            "too many keys under requests/ that are not requests; further ones are not logged"
                        );
                    }
                    return None;
                }
                self.seen.insert(key.to_string());
                metrics::counter!("jobforge_ignored_keys_total").increment(1);
                tracing::warn!(
                    key = ?key,
                    %why,
                    "ignoring a key under requests/ that is not a request (expected requests/<namespace>/<name>, both DNS labels)"
                );
                None
            }
        }
    }
}

/// Blocking `wait` of the leader's KV watches: Consul's longest (10 min). A blocking read answers
/// at once on a change, so a long wait costs no reaction time; it only sets how often an idle
/// read is re-armed (issue 17: the idle leader's requests per minute).
const IDLE_WAIT: std::time::Duration = jobforge_client::consul::MAX_WAIT;

/// Watches `requests/`, one namespace per blocking read ([`watch_prefix_sharded`]); a namespace
/// unchanged for `park_after` (`--watch-park-after`) is parked: its read stops and probes watch it,
/// so an idle leader makes no request per namespace (issue 17, `client-cli/src/consul/watch/sharded.rs`). The initial
/// listing enqueues every request (then `/readyz` is ready); each change enqueues its key. (The `jobforge_requests{phase}` gauge is kept by the reconciler.)
async fn watch_requests(
    consul: ConsulClient,
    keys: KeyLayout,
    queue: WorkQueue,
    slots: Arc<BuildSlots>,
    health: Arc<HealthState>,
    park_after: std::time::Duration,
    cancel: CancellationToken,
) {
    let opts = WatchOptions {
        cancel: cancel.clone(),
        max_backoff: WATCH_MAX_BACKOFF,
        wait: IDLE_WAIT,
        park_after: Some(park_after),
        metrics_label: Some("requests"),
        ..WatchOptions::default()
    };
    // One blocking read per namespace (plus one of the namespace names): a change re-reads only
    // its namespace's requests (issue 17; cost model in docs/performance.md).
    let mut stream = Box::pin(watch_prefix_sharded(consul, keys.requests_prefix(), opts));
    let mut ignored = IgnoredKeys::default();
    while let Some(ev) = stream.next().await {
        match ev {
            WatchEvent::Initial { index, pairs } => {
                health.consul_reachable.store(true, Ordering::Relaxed);
                health.last_watch_index.store(index, Ordering::Relaxed);
                let initial: Vec<(RequestKey, u64, u64)> = pairs
                    .iter()
                    .filter_map(|p| {
                        let k = ignored.request_of(&keys, &p.key, false)?;
                        Some((k, p.create_index, p.modify_index))
                    })
                    .collect();
                let enqueue: Vec<RequestKey> = initial.iter().map(|(k, _, _)| k.clone()).collect();
                slots.initial(initial);
                for k in enqueue {
                    queue.enqueue(k);
                }
                health.first_list_done.store(true, Ordering::SeqCst);
                tracing::info!(requests = pairs.len(), index, "first list done");
            }
            ev @ (WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_)) => {
                let (p, deleted) = match ev {
                    WatchEvent::Deleted(p) => (p, true),
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
                    _ => continue,
                };
                health.consul_reachable.store(true, Ordering::Relaxed);
                health
                    .last_watch_index
                    .fetch_max(p.modify_index, Ordering::Relaxed);
                if let Some(k) = ignored.request_of(&keys, &p.key, deleted) {
                    // The slot table learns of every write before its reconcile can run.
                    if deleted {
                        slots.deleted(&k);
                    } else {
                        slots.written(&k, p.create_index, p.modify_index);
                    }
                    queue.enqueue(k);
                }
            }
            WatchEvent::Restarting { error, .. } => {
                health.consul_reachable.store(false, Ordering::Relaxed);
                metrics::counter!("jobforge_watch_restarts_total", "watch" => "requests")
                    .increment(1);
                tracing::warn!(%error, "requests watch restarting");
            }
            WatchEvent::Resumed { index } => {
                health.consul_reachable.store(true, Ordering::Relaxed);
                health.last_watch_index.store(index, Ordering::Relaxed);
                tracing::info!(index, "requests watch resumed");
            }
        }
    }
}

/// Watches the *keys* under `status/`, one namespace per blocking read ([`watch_keys_sharded`]):
/// the leader writes every status value itself, so it needs no copy of them, and each of its
/// status writes re-lists only the namespace names and that namespace's status keys, not every
/// status key stored (issue 17; cost model in docs/performance.md). At the start of a term every status key is enqueued, so statuses whose request was
/// deleted while no leader ran get their jobs and keys cleaned up; afterwards a status deleted by
/// someone else enqueues its request, which then starts over from the spec. The watch follows
/// Consul's blocking rules (index reset, token bucket, backoff with jitter; see its module docs).
async fn watch_status_keys(
    consul: ConsulClient,
    keys: KeyLayout,
    queue: WorkQueue,
    park_after: std::time::Duration,
    cancel: CancellationToken,
) {
    let opts = WatchOptions {
        cancel: cancel.clone(),
        max_backoff: WATCH_MAX_BACKOFF,
        wait: IDLE_WAIT,
        park_after: Some(park_after),
        metrics_label: Some("status"),
        ..WatchOptions::default()
    };
    // Only keys a request could have (`parse_status_key`: both segments DNS labels): anything
    // else under status/ was not written by a controller and names no request.
    let enqueue = |k: &str| {
        if let Some((ns, name)) = keys.parse_status_key(k) {
            queue.enqueue(RequestKey::new(ns, name));
        }
    };
    let mut stream = Box::pin(watch_keys_sharded(consul, keys.status_prefix(), opts));
    while let Some(ev) = stream.next().await {
        match ev {
            WatchEvent::Initial { pairs, .. } => pairs.iter().for_each(|p| enqueue(&p.key)),
            WatchEvent::Deleted(p) => enqueue(&p.key),
            WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Resumed { .. } => {}
            WatchEvent::Restarting {
                error, retry_in, ..
            } => {
                metrics::counter!("jobforge_watch_restarts_total", "watch" => "status")
                    .increment(1);
                tracing::warn!(%error, ?retry_in, "status keys watch failed; retrying");
            }
        }
    }
}

/// Re-reads `<prefix>/config` whenever it changes; an invalid document is logged and ignored.
async fn watch_config(
    consul: ConsulClient,
    keys: KeyLayout,
    args: ControllerArgs,
    tx: watch::Sender<Arc<EffectiveConfig>>,
    health: Arc<HealthState>,
    cancel: CancellationToken,
) {
    let key = keys.config_key();
    let opts = WatchOptions {
        cancel: cancel.clone(),
        max_backoff: WATCH_MAX_BACKOFF,
        wait: IDLE_WAIT,
        ..WatchOptions::default()
    };
    let mut stream = Box::pin(watch_key(consul, key.clone(), opts));
    while let Some(ev) = stream.next().await {
        let (doc, index) = match ev {
            WatchEvent::Initial { pairs, .. } => match pairs.into_iter().next() {
                Some(p) => (Some(p.value), p.modify_index),
                None => (None, 0),
            },
            WatchEvent::Added(p) | WatchEvent::Modified(p) => (Some(p.value), p.modify_index),
            WatchEvent::Deleted(_) => (None, 0),
            WatchEvent::Restarting { .. } | WatchEvent::Resumed { .. } => continue,
        };
        let kv = match doc {
            None => KvConfig::default(),
            Some(bytes) => match KvConfig::parse(&key, &bytes) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "ignoring invalid configuration; keeping the previous one");
                    health.mark_config_read();
                    continue;
                }
            },
        };
        let eff = EffectiveConfig::merge(&args, &kv);
        tracing::info!(?kv, "configuration loaded");
        tx.send_replace(Arc::new(eff));
        health.config_index.store(index, Ordering::SeqCst);
        health.mark_config_read();
    }
}

/// Blocking reads of the leader key (5 min wait; a change answers at once): tells `/status` who
/// leads and counts as an answer from Consul for `/readyz`. Follows the blocking-query rules:
/// index reset when it goes backwards, at least 100 ms between reads, exponential backoff
/// (100 ms .. 2 s) on errors, which also mark Consul unreachable at once.
async fn watch_leader_key(
    consul: ConsulClient,
    key: String,
    health: Arc<HealthState>,
    cancel: CancellationToken,
) {
    use backon::BackoffBuilder;
    let new_backoff = || {
        backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_delay(std::time::Duration::from_secs(2))
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    let identity = |p: &KvPair| -> Option<String> {
        p.session.as_ref()?;
        serde_json::from_slice::<serde_json::Value>(&p.value)
            .ok()
            .and_then(|v| v.get("identity").and_then(|i| i.as_str()).map(String::from))
            .or_else(|| Some(String::from_utf8_lossy(&p.value).into_owned()))
    };
    let mut index = 0;
    loop {
        let started = tokio::time::Instant::now();
        let q = jobforge_client::consul::QueryOptions::blocking(
            index,
            std::time::Duration::from_secs(300),
        );
        let got = tokio::select! {
            _ = cancel.cancelled() => return,
            r = consul.kv_get(&key, q) => r,
        };
        let pause = match got {
            Ok((new_index, pair)) => {
                backoff = new_backoff();
                index = jobforge_client::consul::watch::next_index(index, new_index);
                health.consul_answered();
                health.set_leader_identity(pair.as_ref().and_then(identity));
                std::time::Duration::from_millis(100).saturating_sub(started.elapsed())
            }
            Err(e) => {
                health.consul_reachable.store(false, Ordering::Relaxed);
                metrics::counter!("jobforge_watch_restarts_total", "watch" => "leader")
                    .increment(1);
                let d = backoff.next().unwrap_or(std::time::Duration::from_secs(2));
                tracing::debug!(error = %e, retry_in = ?d, "reading the leader key failed");
                d
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ignored_key_is_noted_once_until_it_is_deleted() {
        let keys = KeyLayout::default();
        let mut ignored = IgnoredKeys::default();
        for _ in 0..3 {
            assert_eq!(
                ignored.request_of(&keys, "jobforge/requests/default/a/b", false),
                None
            );
        }
        assert_eq!(ignored.seen.len(), 1);
        for key in ["jobforge/requests/../x", "jobforge/requests/a/b/c"] {
            assert_eq!(ignored.request_of(&keys, key, false), None);
            assert_eq!(ignored.request_of(&keys, key, false), None);
            assert_eq!(ignored.request_of(&keys, key, true), None);
        }
        assert_eq!(ignored.seen.len(), 1);
        assert_eq!(
            ignored.request_of(&keys, "jobforge/requests/default/a/b", true),
            None
        );
        assert!(ignored.seen.is_empty());
        assert_eq!(
            ignored.request_of(&keys, "jobforge/requests/default/ok", false),
            Some(RequestKey::new("default", "ok"))
        );
        assert!(ignored.seen.is_empty());
    }
}
