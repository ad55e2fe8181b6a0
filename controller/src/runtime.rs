//! The controller's runtime: leadership, and while leader, the watches that feed the work queue
//! and the queue that runs [`Reconciler::reconcile`].
//!
//! ```text
//! Leadership ──leader──► term: watch requests/ ─┐
//!     │                        watch status/   ─┼─► WorkQueue ─► Reconciler ─► Nomad / fenced KV
//!     │                        watch config    ─┘        ▲
//!     │                        JobWatches (Nomad allocations, blocking) ─┘
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
use jobforge_client::consul::watch::{WatchEvent, WatchOptions, watch_key, watch_prefix};
use jobforge_client::consul::{Client as ConsulClient, KvPair};
use jobforge_schema::KeyLayout;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ControllerArgs, KvConfig, ProfileArg};
use crate::health::{self, HealthState};
use crate::jobspec::{PhaseDefaults, Profile, RenderConfig};
use crate::jobwatch::JobWatches;
use crate::machine::MachineConfig;
use crate::nomad::Client as NomadClient;
use crate::queue::{QueueConfig, RequestKey, WorkQueue};
use crate::reconcile::{EffectiveConfig, Reconciler};
use crate::vault::VaultChecker;
use crate::webhook::Webhooks;

/// Longest pause between retries of a failing Consul watch: a recovered Consul is seen within
/// seconds (the watch then re-reads at once and reports what changed meanwhile).
const WATCH_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds the effective configuration from the flags and the KV document.
pub fn effective_config(args: &ControllerArgs, kv: &KvConfig) -> EffectiveConfig {
    let mut machine = MachineConfig::default();
    if let Some(d) = kv.build_timeout() {
        machine.default_build_timeout = d;
    }
    if let Some(d) = kv.test_timeout() {
        machine.default_test_timeout = d;
    }
    if let Some(d) = kv.ttl_after_finished() {
        machine.default_ttl_after_finished = d;
    }
    if let Some(r) = kv.max_retries {
        machine.max_retries = r;
    }
    let mut render = RenderConfig {
        profile: match kv.profile.unwrap_or(args.profile) {
            ProfileArg::RawExec => Profile::RawExec,
            ProfileArg::Docker => Profile::Docker,
        },
        datacenters: kv
            .datacenters
            .clone()
            .unwrap_or_else(|| args.datacenters.clone()),
        registry_temp_prefix: kv
            .registry_temp_prefix
            .clone()
            .unwrap_or_else(|| args.registry_temp_prefix.clone()),
        tls_verify: kv.registry_tls_verify.unwrap_or(args.registry_tls_verify),
        ..RenderConfig::default()
    };
    if let Some(ns) = &kv.nomad_namespace {
        render.namespace = Some(ns.clone());
    }
    kv.apply_docker(&mut render);
    if let Some(res) = &kv.default_resources {
        let apply = |d: &mut PhaseDefaults, r: &Option<crate::config::KvPhaseResources>| {
            let Some(r) = r else { return };
            let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
            if let Some(v) = num(&r.cpu) {
                d.cpu_mhz = v;
            }
            if let Some(v) = num(&r.memory) {
                d.memory_mb = v;
            }
            if let Some(v) = num(&r.disk) {
                d.disk_mb = v;
            }
        };
        apply(&mut render.build_defaults, &res.build);
        apply(&mut render.test_defaults, &res.test);
        apply(&mut render.publish_defaults, &res.publish);
    }
    EffectiveConfig { machine, render }
}

/// Runs the controller until `cancel` fires. Errors only on start-up problems (bad configuration,
/// the HTTP address in use); Consul and Nomad outages are retried forever.
pub async fn run(args: ControllerArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let consul = ConsulClient::from_env()
        .context("Consul configuration (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN)")?;
    let nomad = NomadClient::from_env().context("Nomad configuration (NOMAD_ADDR, NOMAD_TOKEN)")?;
    let vault = if std::env::var_os("VAULT_ADDR").is_some() {
        Some(Arc::new(
            VaultChecker::from_env().context("Vault configuration (VAULT_ADDR, VAULT_TOKEN)")?,
        ))
    } else {
        tracing::warn!(
            "VAULT_ADDR is not set: secret paths are not checked before jobs are created"
        );
        None
    };
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
    let initial = effective_config(&args, &KvConfig::default());
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

    let identity_doc = serde_json::json!({"identity": identity, "http": http_addr.to_string(), "pid": std::process::id()});
    let mut leader_cfg = LeaderConfig::new(keys.leader_key(), serde_json::to_vec(&identity_doc)?);
    leader_cfg.ttl = args.session_ttl;
    leader_cfg.lock_delay = args.lock_delay;
    // The leader key is watched with consistent blocking reads, which answer at once on any
    // change, so a long wait costs no reaction time; it keeps an idle replica to a few requests a
    // minute (mostly the TTL/2 session renewals).
    leader_cfg.monitor_wait = std::time::Duration::from_secs(300);
    leader_cfg.session_name = format!("jobforge-controller {identity}");
    let leadership = Leadership::start(consul.clone(), leader_cfg, cancel.child_token())
        .context("starting leader election")?;
    let mut state_rx = leadership.subscribe();

    let mut term: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    loop {
        let state = state_rx.borrow_and_update().clone();
        health.set_session(state.session().map(String::from));
        let leader = state.is_leader();
        let was = health.is_leader.swap(leader, Ordering::SeqCst);
        metrics::gauge!("jobforge_leader").set(if leader { 1.0 } else { 0.0 });
        if was != leader {
            metrics::counter!("jobforge_leadership_transitions_total").increment(1);
        }
        match (&state, term.is_some()) {
            (LeaderState::Leader { session }, false) => {
                // The fence is built from the state we just read, so it always exists here.
                let fence = leadership.fence().unwrap_or_else(|| {
                    Fence::new(consul.clone(), keys.leader_key(), session.clone())
                });
                tracing::info!("became leader: listing every request");
                health.first_list_done.store(false, Ordering::SeqCst);
                let token = cancel.child_token();
                let reconciler = TermDeps {
                    consul: consul.clone(),
                    nomad: nomad.clone(),
                    vault: vault.clone(),
                    keys: keys.clone(),
                    fence,
                    config: config_rx.clone(),
                    health: health.clone(),
                    max_concurrent: args.max_concurrent_reconciles,
                    shutdown_grace: args.shutdown_timeout,
                };
                let t = token.clone();
                term = Some((
                    token,
                    tokio::spawn(async move { leader_term(reconciler, t).await }),
                ));
            }
            (LeaderState::Leader { .. }, true) => {}
            (_, true) => {
                tracing::warn!("lost leadership: stopping reconciles");
                if let Some((token, handle)) = term.take() {
                    token.cancel();
                    let _ = handle.await;
                }
                health.first_list_done.store(false, Ordering::SeqCst);
            }
            (_, false) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = state_rx.changed() => if changed.is_err() { break },
        }
    }

    tracing::info!("shutting down: draining reconciles, then releasing leadership");
    if let Some((token, handle)) = term.take() {
        token.cancel();
        let _ = handle.await;
    }
    leadership.shutdown().await;
    health.is_leader.store(false, Ordering::SeqCst);
    metrics::gauge!("jobforge_leader").set(0.0);
    let _ = config_task.await;
    let _ = leader_watch_task.await;
    let _ = http_task.await;
    Ok(())
}

struct TermDeps {
    consul: ConsulClient,
    nomad: NomadClient,
    vault: Option<Arc<VaultChecker>>,
    keys: KeyLayout,
    fence: Fence,
    config: watch::Receiver<Arc<EffectiveConfig>>,
    health: Arc<HealthState>,
    max_concurrent: usize,
    shutdown_grace: std::time::Duration,
}

/// One leadership term: watches feed the queue; the queue runs reconciles; everything stops when
/// `cancel` fires.
async fn leader_term(d: TermDeps, cancel: CancellationToken) {
    let queue = WorkQueue::new(QueueConfig {
        max_concurrent: d.max_concurrent.max(1),
        shutdown_grace: d.shutdown_grace,
        ..QueueConfig::default()
    });
    let job_watches = JobWatches::new(d.nomad.clone(), queue.clone(), cancel.child_token());
    let webhooks = Webhooks::new(
        d.vault.clone(),
        d.consul.clone(),
        d.fence.clone(),
        d.keys.clone(),
    );
    let reconciler = Arc::new(Reconciler::new(
        d.consul.clone(),
        d.nomad.clone(),
        d.vault.clone(),
        d.keys.clone(),
        d.fence.clone(),
        d.config.clone(),
        job_watches,
        webhooks,
    ));

    let requests = tokio::spawn(watch_requests(
        d.consul.clone(),
        d.keys.clone(),
        queue.clone(),
        d.health.clone(),
        cancel.clone(),
    ));
    let statuses = tokio::spawn(watch_status_keys(
        d.consul.clone(),
        d.keys.clone(),
        queue.clone(),
        cancel.clone(),
    ));
    d.health.set_queue(Some(queue.clone()));

    let r = reconciler.clone();
    let report = queue
        .run(
            move |key: RequestKey| {
                let r = r.clone();
                async move { r.reconcile(key).await }
            },
            cancel.clone(),
        )
        .await;
    if !report.abandoned.is_empty() {
        tracing::warn!(abandoned = ?report.abandoned, "reconciles abandoned at shutdown (they are restartable)");
    }
    d.health.set_queue(None);
    let _ = requests.await;
    let _ = statuses.await;
}

fn key_of(keys: &KeyLayout, pair: &KvPair, status: bool) -> Option<RequestKey> {
    let parsed = if status {
        keys.parse_status_key(&pair.key)
    } else {
        keys.parse_request_key(&pair.key)
    };
    parsed.map(|(ns, name)| RequestKey::new(ns, name))
}

/// Watches `requests/`: the initial listing enqueues every request (then `/readyz` is ready); each
/// change enqueues its key. Also maintains the `jobforge_requests{phase}` gauge source.
async fn watch_requests(
    consul: ConsulClient,
    keys: KeyLayout,
    queue: WorkQueue,
    health: Arc<HealthState>,
    cancel: CancellationToken,
) {
    let opts = WatchOptions {
        cancel: cancel.clone(),
        max_backoff: WATCH_MAX_BACKOFF,
        ..WatchOptions::default()
    };
    let mut stream = Box::pin(watch_prefix(consul, keys.requests_prefix(), opts));
    while let Some(ev) = stream.next().await {
        match ev {
            WatchEvent::Initial { index, pairs } => {
                health.consul_reachable.store(true, Ordering::Relaxed);
                health.last_watch_index.store(index, Ordering::Relaxed);
                for p in &pairs {
                    if let Some(k) = key_of(&keys, p, false) {
                        queue.enqueue(k);
                    }
                }
                health.first_list_done.store(true, Ordering::SeqCst);
                tracing::info!(requests = pairs.len(), index, "first list done");
            }
            WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
                health.consul_reachable.store(true, Ordering::Relaxed);
                health
                    .last_watch_index
                    .fetch_max(p.modify_index, Ordering::Relaxed);
                if let Some(k) = key_of(&keys, &p, false) {
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

/// Watches the *keys* under `status/` (blocking `?keys` reads; the leader writes every status
/// value itself, so it needs no copy of them, and a keys listing stays small when thousands of
/// requests are stored). At the start of a term every status key is enqueued, so statuses whose
/// request was deleted while no leader ran get their jobs and keys cleaned up; afterwards a status
/// deleted by someone else enqueues its request, which then starts over from the spec. Follows
/// Consul's blocking rules like [`watch_prefix`]: index reset when it goes backwards, kept ≥ 1,
/// a token bucket (burst 2, 10/s) so churn degrades to polling, backoff with jitter on errors.
async fn watch_status_keys(
    consul: ConsulClient,
    keys: KeyLayout,
    queue: WorkQueue,
    cancel: CancellationToken,
) {
    use backon::BackoffBuilder;
    use jobforge_client::consul::QueryOptions as KvQuery;
    use jobforge_client::consul::watch::{TokenBucket, next_index};

    let prefix = keys.status_prefix();
    let mut known: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut index = 0u64;
    let mut first = true;
    let mut bucket = TokenBucket::new(2, 10.0, tokio::time::Instant::now());
    let new_backoff = || {
        backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(std::time::Duration::from_millis(250))
            .with_max_delay(WATCH_MAX_BACKOFF)
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    loop {
        let pause = bucket.take(tokio::time::Instant::now());
        let q = KvQuery::blocking(index, std::time::Duration::from_secs(300));
        let res = tokio::select! {
            _ = cancel.cancelled() => return,
            r = async {
                tokio::time::sleep(pause).await;
                consul.kv_keys(&prefix, None, q).await
            } => r,
        };
        let (got, listing) = match res {
            Ok(v) => v,
            Err(e) => {
                metrics::counter!("jobforge_watch_restarts_total", "watch" => "status")
                    .increment(1);
                let d = backoff.next().unwrap_or(WATCH_MAX_BACKOFF);
                tracing::warn!(error = %e, retry_in = ?d, "status keys watch failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(d) => {}
                }
                index = 0;
                continue;
            }
        };
        backoff = new_backoff();
        index = next_index(index, got);
        let now: std::collections::HashSet<String> = listing.into_iter().collect();
        let to_enqueue: Vec<&String> = if first {
            now.iter().collect()
        } else {
            known.difference(&now).collect()
        };
        for k in to_enqueue {
            if let Some((ns, name)) = keys.parse_status_key(k) {
                queue.enqueue(RequestKey::new(ns, name));
            }
        }
        first = false;
        known = now;
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
                    continue;
                }
            },
        };
        let eff = effective_config(&args, &kv);
        tracing::info!(?kv, "configuration loaded");
        tx.send_replace(Arc::new(eff));
        health.config_index.store(index, Ordering::SeqCst);
    }
}

/// Blocking watch of the leader key: tells `/readyz` whether Consul answers and `/status` who leads.
async fn watch_leader_key(
    consul: ConsulClient,
    key: String,
    health: Arc<HealthState>,
    cancel: CancellationToken,
) {
    let opts = WatchOptions {
        cancel: cancel.clone(),
        min_backoff: std::time::Duration::from_millis(100),
        max_backoff: std::time::Duration::from_secs(2),
        ..WatchOptions::default()
    };
    let mut stream = Box::pin(watch_key(consul, key, opts));
    let identity = |p: &KvPair| -> Option<String> {
        p.session.as_ref()?;
        serde_json::from_slice::<serde_json::Value>(&p.value)
            .ok()
            .and_then(|v| v.get("identity").and_then(|i| i.as_str()).map(String::from))
            .or_else(|| Some(String::from_utf8_lossy(&p.value).into_owned()))
    };
    while let Some(ev) = stream.next().await {
        match ev {
            WatchEvent::Initial { pairs, .. } => {
                health.consul_reachable.store(true, Ordering::Relaxed);
                health.set_leader_identity(pairs.first().and_then(identity));
            }
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                health.consul_reachable.store(true, Ordering::Relaxed);
                health.set_leader_identity(identity(&p));
            }
            WatchEvent::Deleted(_) => {
                health.consul_reachable.store(true, Ordering::Relaxed);
                health.set_leader_identity(None);
            }
            WatchEvent::Restarting { .. } => {
                health.consul_reachable.store(false, Ordering::Relaxed);
                metrics::counter!("jobforge_watch_restarts_total", "watch" => "leader")
                    .increment(1);
            }
            WatchEvent::Resumed { .. } => {
                health.consul_reachable.store(true, Ordering::Relaxed);
            }
        }
    }
}
