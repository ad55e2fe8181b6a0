//! The controller's HTTP endpoints on `--http-addr`: `/healthz`, `/readyz`, `/status` and `/metrics`.
//!
//! - `/healthz`: 200 while the process runs.
//! - `/readyz`: 200 when the controller is the leader with its watch caught up (first list done), or a
//!   healthy standby (its leader watch answers); 503 while Consul is unreachable or the first list
//!   has not finished. The body says why.
//! - `/status`: JSON: role, leader identity, session ID, queue depth, in-flight reconciles, last
//!   watch index, versions, and `tokio_tasks` (tasks alive in the runtime, for leak checks).
//! - `/metrics`: Prometheus text format (metrics-exporter-prometheus).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::queue::WorkQueue;

/// Slack on top of the renewal period in [`consul_answer_bound`].
pub const CONSUL_ANSWER_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// How long `/readyz` tolerates no answer from Consul: every replica, leader or standby, renews
/// its session every `session_ttl / 2` (and reads the leader key besides), so an answer is due at
/// least that often; [`CONSUL_ANSWER_SLACK`] on top. 9.5 s with the default TTL of 15 s. A
/// frozen or black-holed Consul is noticed within this bound, without any request made only for
/// the purpose.
pub fn consul_answer_bound(session_ttl: std::time::Duration) -> std::time::Duration {
    session_ttl / 2 + CONSUL_ANSWER_SLACK
}

/// Live facts about the controller, shared by the runtime (writer) and the endpoints (readers).
#[derive(Debug, Default)]
pub struct HealthState {
    /// When Consul last answered this replica's campaign (`None` = never).
    pub consul_answered_at: Mutex<Option<std::time::Instant>>,
    /// [`consul_answer_bound`] of this replica's TTL, in milliseconds (0 = the default TTL's).
    pub consul_answer_bound_ms: AtomicU64,
    /// This replica holds the leader lock.
    pub is_leader: AtomicBool,
    /// The last Consul request succeeded.
    pub consul_reachable: AtomicBool,
    /// The leader's first full list of requests has been reconciled into the queue.
    pub first_list_done: AtomicBool,
    /// The leader term's work queue (depth and in-flight count for `/status`).
    pub queue: Mutex<Option<WorkQueue>>,
    /// `X-Consul-Index` of the last requests-watch answer.
    pub last_watch_index: AtomicU64,
    /// ModifyIndex of the `<prefix>/config` document in effect (0 = none, defaults only).
    pub config_index: AtomicU64,
    /// Whether `<prefix>/config` has been read once (present, absent or invalid); a leader term
    /// waits for it ([`HealthState::wait_config_read`]) so no request starts under the flags'
    /// defaults before the operator's caps and tenancy rules are known.
    pub config_read: AtomicBool,
    /// Wakes [`HealthState::wait_config_read`].
    pub config_read_notify: tokio::sync::Notify,
    /// Session ID of this replica, if any.
    pub session_id: Mutex<Option<String>>,
    /// Identity of the current leader (from the leader key), if known.
    pub leader_identity: Mutex<Option<String>>,
    /// This replica's identity.
    pub identity: String,
}

impl HealthState {
    /// A fresh state for `identity`.
    pub fn new(identity: impl Into<String>) -> Arc<HealthState> {
        Arc::new(HealthState {
            identity: identity.into(),
            ..HealthState::default()
        })
    }

    /// Records that Consul answered (reachable from now on, until the bound passes or a request
    /// fails).
    pub fn consul_answered(&self) {
        self.consul_reachable.store(true, Ordering::Relaxed);
        if let Ok(mut g) = self.consul_answered_at.lock() {
            *g = Some(std::time::Instant::now());
        }
    }

    /// Records that `<prefix>/config` was read once (see [`HealthState::config_read`]).
    pub fn mark_config_read(&self) {
        self.config_read.store(true, Ordering::SeqCst);
        self.config_read_notify.notify_waiters();
    }

    /// Waits until `<prefix>/config` was read once, at most `timeout`; `false` on timeout (the
    /// caller goes on with what it has and says so).
    pub async fn wait_config_read(&self, timeout: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.config_read_notify.notified();
                if self.config_read.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// The bound of [`HealthState::consul_fresh`].
    pub fn consul_bound(&self) -> std::time::Duration {
        match self.consul_answer_bound_ms.load(Ordering::Relaxed) {
            0 => consul_answer_bound(std::time::Duration::from_secs(15)),
            ms => std::time::Duration::from_millis(ms),
        }
    }

    /// True when Consul answered within [`HealthState::consul_bound`].
    pub fn consul_fresh(&self) -> bool {
        let bound = self.consul_bound();
        self.consul_answered_at
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t.elapsed() <= bound)
    }

    /// Whether `/readyz` answers 200, and why not otherwise.
    pub fn readiness(&self) -> Result<&'static str, &'static str> {
        if !self.consul_reachable.load(Ordering::Relaxed) {
            return Err("consul unreachable");
        }
        if !self.consul_fresh() {
            return Err("consul has not answered within the bound (session TTL/2 + 2s)");
        }
        if self.is_leader.load(Ordering::Relaxed) {
            if self.first_list_done.load(Ordering::Relaxed) {
                Ok("leader, watch caught up")
            } else {
                Err("leader, first list not finished")
            }
        } else {
            Ok("standby")
        }
    }

    fn lock_string(m: &Mutex<Option<String>>) -> Option<String> {
        m.lock().map(|g| g.clone()).unwrap_or(None)
    }

    /// Sets the session ID shown by `/status`.
    pub fn set_session(&self, id: Option<String>) {
        if let Ok(mut g) = self.session_id.lock() {
            *g = id;
        }
    }

    /// Sets (or clears, when the term ends) the queue shown by `/status`.
    pub fn set_queue(&self, q: Option<WorkQueue>) {
        if let Ok(mut g) = self.queue.lock() {
            *g = q;
        }
    }

    /// `(queue depth, in-flight reconciles)`, zeros without a queue.
    pub fn queue_stats(&self) -> (usize, usize) {
        self.queue
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|q| (q.len(), q.in_flight())))
            .unwrap_or((0, 0))
    }

    /// Sets the leader identity shown by `/status`.
    pub fn set_leader_identity(&self, id: Option<String>) {
        if let Ok(mut g) = self.leader_identity.lock() {
            *g = id;
        }
    }
}

#[derive(Serialize)]
struct StatusPage {
    role: &'static str,
    identity: String,
    leader_identity: Option<String>,
    session_id: Option<String>,
    ready: bool,
    ready_reason: &'static str,
    consul_reachable: bool,
    queue_depth: usize,
    in_flight: usize,
    last_watch_index: u64,
    config_index: u64,
    /// Tasks alive in the tokio runtime (`RuntimeMetrics::num_alive_tasks`); a count that keeps
    /// growing across finished work is a task leak.
    tokio_tasks: usize,
    version: &'static str,
}

#[derive(Clone)]
struct AppState {
    health: Arc<HealthState>,
    metrics: Option<PrometheusHandle>,
}

/// The router of the four endpoints.
pub fn router(health: Arc<HealthState>, metrics: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics_page))
        .with_state(AppState { health, metrics })
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.readiness() {
        Ok(why) => (StatusCode::OK, format!("ready: {why}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn status(State(s): State<AppState>) -> impl IntoResponse {
    let h = &s.health;
    let readiness = h.readiness();
    let (queue_depth, in_flight) = h.queue_stats();
    let tokio_tasks = alive_tasks();
    Json(StatusPage {
        role: if h.is_leader.load(Ordering::Relaxed) {
            "leader"
        } else {
            "standby"
        },
        identity: h.identity.clone(),
        leader_identity: HealthState::lock_string(&h.leader_identity),
        session_id: HealthState::lock_string(&h.session_id),
        ready: readiness.is_ok(),
        ready_reason: readiness.unwrap_or_else(|e| e),
        consul_reachable: h.consul_reachable.load(Ordering::Relaxed),
        queue_depth,
        in_flight,
        last_watch_index: h.last_watch_index.load(Ordering::Relaxed),
        config_index: h.config_index.load(Ordering::Relaxed),
        tokio_tasks,
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Tasks alive in the current tokio runtime, also published as the gauge `jobforge_tokio_alive_tasks`.
fn alive_tasks() -> usize {
    let n = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics::gauge!("jobforge_tokio_alive_tasks").set(n as f64);
    n
}

async fn metrics_page(State(s): State<AppState>) -> impl IntoResponse {
    alive_tasks();
    match &s.metrics {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [("content-type", "text/plain; version=0.0.4")],
            "metrics recorder not installed\n".to_string(),
        ),
    }
}

/// How often recorded histogram samples are folded into their buckets when `/metrics` is not
/// scraped.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Upper bounds (`le`, seconds) of every duration histogram: 1 ms (a loopback Consul answer) up
/// to 1 h (a long build phase). Prometheus histograms, not summaries: they aggregate across
/// replicas with `histogram_quantile(… rate(<name>_bucket[5m]))`, which the Grafana dashboard in
/// `examples/deploy/` uses, and cost a fixed 20 counters per series.
pub const DURATION_BUCKETS_S: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Installs the global Prometheus recorder (once per process) and returns its handle; `None` if
/// another recorder is already installed (tests that run several controllers in one process).
///
/// Histograms have the buckets of [`DURATION_BUCKETS_S`].
///
/// Must be called inside a tokio runtime: it spawns the recorder's upkeep, every 5 s until
/// `cancel`. The recorder keeps every histogram sample until a render or an upkeep folds them
/// into the buckets; without it a controller nobody scrapes grows by each request's samples
/// (`metrics-exporter-prometheus` runs the same upkeep itself only when it owns the HTTP listener).
pub fn install_metrics(cancel: CancellationToken) -> Option<PrometheusHandle> {
    let builder = match metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS_S)
    {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "metrics buckets rejected; /metrics disabled");
            return None;
        }
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe_metrics();
    // Counters of rare events exist at 0 from the start, so that `rate()` and alerts on them
    // work before the first event (a series that does not exist yet is "no data", not 0).
    for watch in [
        "requests",
        "status",
        "leader",
        "nomad_allocations",
        "outbox",
    ] {
        metrics::counter!("jobforge_watch_restarts_total", "watch" => watch).increment(0);
    }
    for outcome in ["delivered", "failed"] {
        metrics::counter!("jobforge_webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    metrics::counter!("jobforge_ignored_keys_total").increment(0);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                () = cancel.cancelled() => return,
            }
        }
    });
    Some(handle)
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "jobforge_reconcile_total",
        "Reconciles by result (ok, error, requeue)."
    );
    describe_histogram!(
        "jobforge_reconcile_duration_seconds",
        "Duration of one reconcile."
    );
    describe_gauge!(
        "jobforge_queue_depth",
        "Requests due now that wait for a reconcile slot (not those scheduled for later)."
    );
    describe_gauge!("jobforge_reconciles_in_flight", "Reconciles running now.");
    describe_gauge!(
        "jobforge_requests",
        "Requests by phase, as seen by the leader."
    );
    describe_histogram!(
        "jobforge_phase_duration_seconds",
        "Pipeline phase durations by phase and outcome."
    );
    describe_counter!(
        "jobforge_builds_finished_total",
        "Finished requests by outcome and reason."
    );
    describe_gauge!("jobforge_leader", "1 while this replica is the leader.");
    describe_gauge!(
        "jobforge_tokio_alive_tasks",
        "Tasks alive in the tokio runtime (sampled when /status or /metrics is served)."
    );
    describe_counter!(
        "jobforge_leadership_transitions_total",
        "Times this replica became or stopped being leader."
    );
    describe_histogram!(
        "jobforge_consul_request_duration_seconds",
        "Consul HTTP request duration by endpoint, blocking queries excluded."
    );
    describe_histogram!(
        "jobforge_consul_blocking_wait_seconds",
        "Consul blocking-query duration by endpoint (mostly the server's wait for a change)."
    );
    describe_counter!(
        "jobforge_consul_request_errors_total",
        "Consul HTTP request errors by endpoint."
    );
    describe_histogram!(
        "jobforge_nomad_request_duration_seconds",
        "Nomad HTTP request duration by endpoint."
    );
    describe_counter!(
        "jobforge_nomad_request_errors_total",
        "Nomad HTTP request errors by endpoint."
    );
    describe_counter!(
        "jobforge_watch_restarts_total",
        "Blocking-query watch restarts after errors, by watch."
    );
    describe_gauge!(
        "jobforge_watch_folders",
        "Namespace folders of the sharded requests/ and status/ watches, by watch and state: active (a blocking read of its own) or parked (watched by probes; set only while this replica leads)."
    );
    describe_counter!(
        "jobforge_webhook_deliveries_total",
        "Webhook delivery attempts by outcome."
    );
    describe_counter!(
        "jobforge_ignored_keys_total",
        "Keys under requests/ that are not requests (wrong depth, not DNS labels), each counted once per leader term; never reconciled."
    );
}

/// Serves the endpoints on `addr` until `cancel` fires. Returns the bound address.
///
/// Errors: the bind failure, naming the address.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    cancel: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --http-addr {addr}"))?;
    let bound = listener.local_addr()?;
    let h = tokio::spawn(async move {
        let res = axum::serve(listener, router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    Ok((bound, h))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_documented_rules() {
        let h = HealthState::new("a");
        assert_eq!(h.readiness(), Err("consul unreachable"));
        h.consul_reachable.store(true, Ordering::Relaxed);
        assert!(h.readiness().is_err(), "never answered");
        h.consul_answered();
        assert_eq!(h.readiness(), Ok("standby"));
        *h.consul_answered_at.lock().unwrap() = std::time::Instant::now()
            .checked_sub(h.consul_bound() + std::time::Duration::from_millis(100));
        assert!(h.readiness().unwrap_err().contains("has not answered"));
        h.consul_answered();
        h.is_leader.store(true, Ordering::Relaxed);
        assert_eq!(h.readiness(), Err("leader, first list not finished"));
        h.first_list_done.store(true, Ordering::Relaxed);
        assert_eq!(h.readiness(), Ok("leader, watch caught up"));
    }
}
