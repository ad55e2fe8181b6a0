//! Nomad emulator: one client node (`devstack-node`, `dc1`) with the `raw_exec` and `exec`
//! drivers, which run real processes.
//!
//! Concepts, one file each: `spec` (the job JSON we accept), `store` (job registry, evaluations,
//! allocations, indexes), `placement` (node and feasibility: `FailedTGAllocs`), `runner` (allocation
//! runner and driver), `taskdir` (layout and env), `vault_hook` (task Vault tokens), `template`
//! (the template subset), `logs` (log sinks and the framed logs API), `http` (routes and blocking
//! queries), `query` (the query-string extractor every route uses).

pub mod docker;
pub mod events;
mod http;
pub mod logs;
mod metrics;
pub mod model;
pub mod placement;
mod query;
mod runner;
pub mod spec;
pub mod store;
pub mod taskdir;
pub mod template;
pub mod vault_hook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use logs::LogSink;
use model::{AllocRecord, TaskStateRecord};
use placement::Node;
pub use store::{RegisterError, Registration};
use vault_hook::VaultClient;

/// Options of the Nomad emulator.
#[derive(Debug, Clone, Default)]
pub struct NomadOptions {
    /// Where allocation directories live; a temp dir (removed on shutdown) when `None`.
    pub data_dir: Option<PathBuf>,
    /// Vault address templates read secrets from (`http://127.0.0.1:8200`).
    pub vault_addr: Option<String>,
    /// The Nomad server's own Vault token: it creates and revokes task tokens (tasks and their
    /// templates never use it).
    pub vault_token: Option<String>,
    /// Workload-identity Vault roles → the policies of the tokens they give (see
    /// [`vault_hook`]).
    pub vault_roles: std::collections::BTreeMap<String, Vec<String>>,
    /// Run every task as Nomad's `mock_driver` does (`run_for` this long, exit code 0) instead of
    /// starting its command; `None` (the default) runs real processes. For benchmarks of the
    /// control plane: the HTTP API, allocation and task-state lifecycle, events and blocking
    /// queries are exactly those of a real run; only no process is started (no task or alloc
    /// directory, no templates, no logs). Nomad's own tests use `mock_driver` the same way.
    pub mock_run_for: Option<std::time::Duration>,
    /// The Docker Engine API of the `docker` driver (`unix:///…`, `tcp://…`, as `DOCKER_HOST`);
    /// the node has the driver only when an engine answers there at start ([`docker`]).
    pub docker_host: Option<String>,
    /// The docker driver's `gc { image_delay }`; Nomad's default (3m) when `None`.
    pub docker_image_delay: Option<std::time::Duration>,
}

/// Shared state of the Nomad emulator.
#[derive(Debug)]
pub struct NomadState {
    store: Mutex<store::Store>,
    changes: watch::Sender<u64>,
    node: Node,
    alloc_root: PathBuf,
    remove_root_on_shutdown: bool,
    mock_run_for: Option<std::time::Duration>,
    vault: VaultClient,
    runners: Mutex<HashMap<String, CancellationToken>>,
    sinks: Mutex<HashMap<(String, String), TaskSinks>>,
    tracker: TaskTracker,
    pids: Mutex<Vec<u32>>,
    closing: CancellationToken,
    docker: Option<docker::Docker>,
}

/// stdout and stderr sinks of one task.
type TaskSinks = [Arc<LogSink>; 2];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NomadState {
    /// Creates the emulator state and the allocation root
    /// (`<data_dir>/allocs` or `$TMPDIR/jobforge-devstack-nomad-<uuid>`).
    ///
    /// Errors: the allocation root cannot be created, or the HTTP client for Vault cannot be built.
    pub fn new(opts: NomadOptions) -> anyhow::Result<Arc<NomadState>> {
        let (alloc_root, remove) = match &opts.data_dir {
            Some(d) => (d.join("allocs"), false),
            None => (
                std::env::temp_dir()
                    .join(format!("jobforge-devstack-nomad-{}", uuid::Uuid::new_v4())),
                true,
            ),
        };
        std::fs::create_dir_all(&alloc_root).map_err(|e| {
            anyhow::anyhow!(
                "creating the Nomad allocation root {}: {e}",
                alloc_root.display()
            )
        })?;
        // The docker driver: fingerprinted once; `driver.docker` only when an engine answers.
        let mut node = Node::local();
        let docker = match &opts.docker_host {
            Some(h) => {
                let mut plugin = docker::config::PluginConfig::default();
                if let Some(d) = opts.docker_image_delay {
                    plugin.image_delay = d;
                }
                Some(docker::Docker::fingerprint(h, plugin)?)
            }
            None => None,
        };
        if let Some(v) = docker.as_ref().and_then(|d| d.version.clone()) {
            node.attributes.insert("driver.docker".into(), "1".into());
            node.attributes.insert("driver.docker.version".into(), v);
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Arc::new(NomadState {
            store: Mutex::new(store::Store::booted()),
            changes: watch::channel(0).0,
            node,
            alloc_root,
            remove_root_on_shutdown: remove,
            mock_run_for: opts.mock_run_for,
            vault: VaultClient {
                addr: opts.vault_addr,
                server_token: opts.vault_token,
                roles: opts.vault_roles,
                http,
            },
            runners: Mutex::new(HashMap::new()),
            sinks: Mutex::new(HashMap::new()),
            tracker: TaskTracker::new(),
            pids: Mutex::new(Vec::new()),
            closing: CancellationToken::new(),
            docker,
        }))
    }

    /// Kills every running task (its kill signal, then SIGKILL after its KillTimeout) and waits
    /// for all of them; no child process remains afterwards.
    pub async fn shutdown(&self) {
        // Long-lived responses (blocking queries, event streams) end now so the HTTP server's
        // graceful shutdown does not wait for their `wait` to run out.
        self.closing.cancel();
        let tokens: Vec<CancellationToken> = lock(&self.runners).values().cloned().collect();
        for t in tokens {
            t.cancel();
        }
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(d) = self.docker.as_ref().filter(|d| d.version.is_some()) {
            d.remove_all(&self.node.id).await;
        }
        if self.remove_root_on_shutdown {
            let root = self.alloc_root.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(root)).await;
        }
    }

    /// Every register ever accepted: (job ID, JobModifyIndex, time), oldest first.
    pub fn registrations(&self) -> Vec<Registration> {
        lock(&self.store).registrations.clone()
    }

    /// PIDs of every task process ever started, in start order.
    pub fn task_pids(&self) -> Vec<u32> {
        lock(&self.pids).clone()
    }

    /// PID of a task's running process, if it runs.
    pub fn task_pid(&self, alloc_id: &str, task: &str) -> Option<u32> {
        self.with_alloc(alloc_id, |a| a.task_states.get(task).and_then(|t| t.pid))
            .flatten()
    }

    /// The allocation directory of `alloc_id`.
    pub fn alloc_dir(&self, alloc_id: &str) -> PathBuf {
        self.alloc_root.join(alloc_id)
    }

    /// The emulated node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `Some(run_for)` when tasks run under the mock driver ([`NomadOptions::mock_run_for`]).
    pub(crate) fn mock_run_for(&self) -> Option<std::time::Duration> {
        self.mock_run_for
    }

    /// The docker driver, when configured (answering or not).
    pub fn docker(&self) -> Option<&docker::Docker> {
        self.docker.as_ref()
    }

    pub(crate) fn vault(&self) -> &VaultClient {
        &self.vault
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.store)
    }

    /// Wakes blocking queries: the index moved to `index`.
    pub(crate) fn publish(&self, index: u64) {
        self.changes.send_replace(index);
    }

    /// Cancelled when the emulator shuts down.
    pub(crate) fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn with_alloc<R>(&self, id: &str, f: impl FnOnce(&AllocRecord) -> R) -> Option<R> {
        self.store().allocs.get(id).map(f)
    }

    /// Updates a task's state and publishes the new index.
    pub(crate) fn update_task(
        &self,
        alloc: &str,
        task: &str,
        f: impl FnOnce(&mut TaskStateRecord),
    ) {
        let idx = self.store().update_alloc(alloc, |a| {
            if let Some(ts) = a.task_states.get_mut(task) {
                f(ts);
            }
        });
        if let Some(i) = idx {
            self.publish(i);
        }
    }

    pub(crate) fn sinks(&self, alloc: &str, task: &str) -> Vec<Arc<LogSink>> {
        lock(&self.sinks)
            .get(&(alloc.to_string(), task.to_string()))
            .map(|s| s.to_vec())
            .unwrap_or_default()
    }

    pub(crate) fn record_pid(&self, pid: u32) {
        lock(&self.pids).push(pid);
    }

    /// The runner of `alloc` finished: forget it, and collect the allocation directory when its
    /// job was purged meanwhile.
    pub(crate) fn forget_runner(&self, alloc: &str) {
        lock(&self.runners).remove(alloc);
        let orphaned = {
            let store = self.store();
            store.allocs.get(alloc).is_some_and(|a| {
                store
                    .jobs
                    .get(&a.job_id)
                    .is_none_or(|j| !j.allocs.iter().any(|x| x == alloc))
            })
        };
        if orphaned {
            self.gc_alloc(alloc);
        }
    }

    /// Whether the runner of `alloc` is still running.
    pub(crate) fn has_runner(&self, alloc: &str) -> bool {
        lock(&self.runners).contains_key(alloc)
    }

    /// Garbage-collects a terminal allocation of a purged job, as Nomad's client GC does: its
    /// directory (logs included) is removed in the background; its record stays readable.
    pub(crate) fn gc_alloc(&self, alloc: &str) {
        lock(&self.sinks).retain(|(a, _), _| a != alloc);
        let dir = self.alloc_dir(alloc);
        self.tracker.spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(dir);
        });
    }

    /// Starts runners for `launches` and stops `kills`.
    pub(crate) fn launch(self: &Arc<Self>, launches: Vec<store::Launch>, kills: Vec<String>) {
        {
            let runners = lock(&self.runners);
            for k in &kills {
                if let Some(t) = runners.get(k) {
                    t.cancel();
                }
            }
        }
        for l in launches {
            let dir = self.alloc_dir(&l.alloc_id);
            {
                let mut sinks = lock(&self.sinks);
                for t in &l.job.task_groups[l.group].tasks {
                    sinks.insert(
                        (l.alloc_id.clone(), t.name.clone()),
                        [
                            LogSink::new(&dir, &t.name, "stdout"),
                            LogSink::new(&dir, &t.name, "stderr"),
                        ],
                    );
                }
            }
            let token = CancellationToken::new();
            lock(&self.runners).insert(l.alloc_id.clone(), token.clone());
            if self.tracker.is_closed() {
                token.cancel();
            }
            let me = self.clone();
            self.tracker.spawn(runner::run_alloc(me, l, token));
        }
    }
}

impl Drop for NomadState {
    /// Without [`NomadState::shutdown`] (a test that panicked, a dropped runtime): SIGKILLs the
    /// process group of every task still running and removes an allocation root this emulator
    /// created, so that nothing outlives the emulator. After `shutdown` there is nothing left to do.
    fn drop(&mut self) {
        let store = self
            .store
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for alloc in store.allocs.values() {
            for ts in alloc.task_states.values() {
                if let ("running", Some(pid)) = (ts.state, ts.pid)
                    && let Ok(pid) = i32::try_from(pid)
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if self.remove_root_on_shutdown {
            let _ = std::fs::remove_dir_all(&self.alloc_root);
        }
    }
}

/// The Nomad HTTP API router, with `GET /v1/metrics` request counters.
pub fn router(state: Arc<NomadState>) -> axum::Router {
    metrics::instrument(http::router(state))
}
