//! The reconciler: the thin I/O shell around the pure [`crate::machine`]. One call drives one
//! request one step: read spec and status from Consul, observe the current phase's Nomad job,
//! ask [`machine::step`] what to do, do it, and write the status with a fenced CAS.
//!
//! Safe to interrupt at any await: every Nomad call is idempotent (deterministic job IDs,
//! registration with `EnforceIndex` 0), and every KV write is a `/v1/txn` fenced by the leader
//! session, so a crash or a deposed leader repeats work harmlessly and never overwrites status.
//! Invariant: the reconciler never writes Consul except through the [`Fence`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use jobforge_client::consul::leader::{Fence, FencedTxn, FencedWrite};
use jobforge_client::consul::{
    Client as ConsulClient, ConsulError, QueryOptions as KvQuery, TxnOp,
};
use jobforge_schema::parse::{Format, parse_request};
use jobforge_schema::{BuildRequest, BuildStatus, KeyLayout, Phase, PipelinePhase};
use tokio::sync::watch;

use crate::jobspec::{self, RenderConfig, RenderError};
use crate::jobwatch::JobWatches;
use crate::machine::{
    self, Action, JobObservation, JobTarget, MachineConfig, Observation, StepInput,
};
use crate::nomad::{self, Client as NomadClient, QueryOptions};
use crate::queue::{self, RequestKey};
use crate::vault::{VaultChecker, VaultError};
use crate::webhook::Webhooks;

/// Bytes of stdout+stderr kept per phase in `logs/<ns>/<name>/<phase>`.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// How often the log tail of a running phase is refreshed.
pub const RUNNING_LOG_REFRESH: Duration = Duration::from_secs(3);

/// Configuration the reconciler reads on every call (re-read from `<prefix>/config` on change).
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveConfig {
    /// Defaults of the state machine.
    pub machine: MachineConfig,
    /// Rendering of Nomad jobs.
    pub render: RenderConfig,
}

/// Why a reconcile failed; the queue backs the key off and tries again.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Consul failed.
    #[error("consul: {0}")]
    Consul(#[from] ConsulError),
    /// Nomad failed in a way that is not just "unavailable".
    #[error("nomad: {0}")]
    Nomad(#[from] nomad::Error),
    /// Vault could not tell whether a secret exists.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The job could not be rendered (a spec the validator let through but the renderer refused).
    #[error("rendering the Nomad job: {0}")]
    Render(#[from] RenderError),
    /// This replica no longer holds the leader key: nothing was written.
    #[error("not the leader any more")]
    NotLeader,
    /// A status could not be encoded.
    #[error("encoding status: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Everything one leadership term's reconciles share.
pub struct Reconciler {
    /// Consul (reads; writes go through `fence`).
    pub consul: ConsulClient,
    /// Nomad.
    pub nomad: NomadClient,
    /// Vault secret checks; `None` when `VAULT_ADDR` is not configured (paths are then not checked).
    pub vault: Option<Arc<VaultChecker>>,
    /// KV layout.
    pub keys: KeyLayout,
    /// Fenced writes of this term.
    pub fence: Fence,
    /// Current configuration.
    pub config: watch::Receiver<Arc<EffectiveConfig>>,
    /// Watches of in-flight jobs.
    pub job_watches: Arc<JobWatches>,
    /// Webhook delivery.
    pub webhooks: Arc<Webhooks>,
    /// Phase of every request this term has seen, for the `jobforge_requests{phase}` gauge.
    phases: Mutex<PhaseCounts>,
    /// Hash of the last log tail written per logs key, to skip identical writes.
    written_logs: Mutex<HashMap<String, u64>>,
}

impl Reconciler {
    /// A reconciler for one leadership term.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        consul: ConsulClient,
        nomad: NomadClient,
        vault: Option<Arc<VaultChecker>>,
        keys: KeyLayout,
        fence: Fence,
        config: watch::Receiver<Arc<EffectiveConfig>>,
        job_watches: Arc<JobWatches>,
        webhooks: Arc<Webhooks>,
    ) -> Reconciler {
        Reconciler {
            consul,
            nomad,
            vault,
            keys,
            fence,
            config,
            job_watches,
            webhooks,
            phases: Mutex::new(PhaseCounts::default()),
            written_logs: Mutex::new(HashMap::new()),
        }
    }

    /// Records the phase of `key` (or its removal) and updates the `jobforge_requests{phase}` gauge.
    fn record_phase(&self, key: &str, phase: Option<Phase>) {
        if let Ok(mut p) = self.phases.lock() {
            p.set(key, phase);
        }
    }

    /// Reconciles one request. See the module docs.
    pub async fn reconcile(&self, key: RequestKey) -> Result<queue::Action, ReconcileError> {
        let started = std::time::Instant::now();
        let res = self.reconcile_inner(&key).await;
        tracing::debug!(
            request = %key,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            outcome = ?res.as_ref().map_err(|e| e.to_string()),
            "reconciled"
        );
        res
    }

    async fn reconcile_inner(&self, key: &RequestKey) -> Result<queue::Action, ReconcileError> {
        let key = key.clone();
        let cfg = self.config.borrow().clone();
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let spec_key = self.keys.request_key(ns, name);
        let status_key = self.keys.status_key(ns, name);

        let (_, spec_pair) = self.consul.kv_get(&spec_key, KvQuery::default()).await?;
        let (_, status_pair) = self.consul.kv_get(&status_key, KvQuery::default()).await?;
        let status_index = status_pair.as_ref().map(|p| p.modify_index).unwrap_or(0);
        let stored: Option<BuildStatus> = status_pair
            .as_ref()
            .and_then(|p| serde_json::from_slice(&p.value).ok());

        let Some(spec_pair) = spec_pair else {
            self.delete_request(&key, stored.as_ref(), None).await?;
            return Ok(queue::Action::AwaitChange);
        };
        let generation = spec_pair.modify_index;
        let parsed = parse_spec(&spec_pair.value, ns, name);
        let problems: Vec<String>;
        let spec = match &parsed {
            Ok(req) => Ok(&req.spec),
            Err(p) => {
                problems = p.clone();
                Err(problems.as_slice())
            }
        };

        let target = machine::target(generation, stored.as_ref());
        let mut observation = Observation::default();
        let mut tail: Option<Vec<u8>> = None;
        if let Some(t) = &target {
            self.observe(t, &mut observation, &mut tail).await?;
        }
        let now = Utc::now();
        let mut decision = machine::step(
            &StepInput {
                namespace: ns,
                name,
                generation,
                spec,
                status: stored.as_ref(),
                observation: &observation,
                config: &cfg.machine,
            },
            now,
        );
        if let Some(paths) = decision.actions.iter().find_map(|a| match a {
            Action::CheckSecrets { paths } => Some(paths.clone()),
            _ => None,
        }) {
            observation.secrets_missing = Some(self.check_secrets(&paths).await?);
            decision = machine::step(
                &StepInput {
                    namespace: ns,
                    name,
                    generation,
                    spec,
                    status: stored.as_ref(),
                    observation: &observation,
                    config: &cfg.machine,
                },
                now,
            );
        }

        tracing::debug!(request = %key, generation, phase = %decision.status.phase, actions = ?decision.actions, observed = ?observation.job, "decided");
        let mut registered = false;
        let mut delete = false;
        let mut webhooks = Vec::new();
        for action in &decision.actions {
            match action {
                Action::StopGeneration {
                    generation: old,
                    job_ids,
                } => self.stop_generation(&key, *old, job_ids).await?,
                Action::DeregisterJob { job_id, purge } => {
                    self.job_watches.stop(job_id);
                    self.nomad.deregister_job(job_id, *purge).await?;
                }
                Action::RegisterJob {
                    phase,
                    attempt,
                    job_id,
                } => {
                    let Ok(req) = &parsed else { continue };
                    self.register(req, generation, *phase, *attempt, job_id, &cfg.render)
                        .await?;
                    self.job_watches.ensure(job_id, &key);
                    registered = true;
                }
                Action::CaptureLogs { phase, job_id } => {
                    let bytes = match (&tail, &target) {
                        (Some(t), Some(tg)) if &tg.job_id == job_id => Some(t.clone()),
                        _ => self.read_tail(job_id, *phase).await?,
                    };
                    if let Some(b) = bytes {
                        self.write_logs(ns, name, *phase, &b).await?;
                    }
                }
                Action::CheckSecrets { .. } => {}
                Action::Webhook { event, id } => webhooks.push((*event, id.clone())),
                Action::DeleteRequest => delete = true,
            }
        }

        if decision.status_changed(stored.as_ref()) {
            let bytes = serde_json::to_vec(&decision.status)?;
            match self
                .fence
                .cas_put(&status_key, &bytes, status_index)
                .await?
            {
                FencedWrite::Committed { .. } => {
                    record_transition(stored.as_ref(), &decision.status);
                    self.record_phase(&status_key, Some(decision.status.phase));
                }
                FencedWrite::Conflict => return Ok(queue::Action::Requeue(Duration::ZERO)),
                FencedWrite::NotLeader => return Err(ReconcileError::NotLeader),
            }
        } else if let Some(s) = &stored {
            self.record_phase(&status_key, Some(s.phase));
        }
        if let Ok(req) = &parsed {
            for (event, id) in webhooks {
                self.webhooks
                    .deliver(req, generation, &decision.status, event, id);
            }
        }
        if delete {
            self.delete_request(&key, Some(&decision.status), Some(generation))
                .await?;
            return Ok(queue::Action::AwaitChange);
        }

        // Keep a watch on the job that is now current, and refresh a running phase's log tail.
        let mut requeue = decision.requeue_after;
        if let Some(t) = machine::target(generation, Some(&decision.status)) {
            self.job_watches.ensure(&t.job_id, &key);
            match &observation.job {
                JobObservation::Running { .. } if target.as_ref() == Some(&t) => {
                    if let Some(b) = &tail {
                        self.write_logs(ns, name, t.phase, b).await?;
                    }
                    requeue =
                        Some(requeue.map_or(RUNNING_LOG_REFRESH, |r| r.min(RUNNING_LOG_REFRESH)));
                }
                JobObservation::Pending {
                    placement_failure: Some(_),
                } => {}
                _ if registered
                    || matches!(
                        observation.job,
                        JobObservation::Pending { .. } | JobObservation::NotFound
                    ) =>
                {
                    // Placement is decided by an evaluation, which the allocations watch does not
                    // see when nothing is placed: look once more shortly.
                    requeue = Some(
                        requeue.map_or(Duration::from_secs(1), |r| r.min(Duration::from_secs(1))),
                    );
                }
                _ => {}
            }
        }
        Ok(match requeue {
            Some(d) => queue::Action::Requeue(d),
            None => queue::Action::AwaitChange,
        })
    }

    /// Fills `obs` with the state of `target`'s job. Transient Nomad errors set
    /// `nomad_unavailable` instead of failing the reconcile.
    async fn observe(
        &self,
        target: &JobTarget,
        obs: &mut Observation,
        tail: &mut Option<Vec<u8>>,
    ) -> Result<(), ReconcileError> {
        match self.observe_job(target, obs, tail).await {
            Ok(()) => Ok(()),
            Err(ReconcileError::Nomad(e)) if e.is_transient() => {
                obs.nomad_unavailable = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn observe_job(
        &self,
        target: &JobTarget,
        obs: &mut Observation,
        tail: &mut Option<Vec<u8>>,
    ) -> Result<(), ReconcileError> {
        if self.nomad.get_job(&target.job_id).await?.is_none() {
            obs.job = JobObservation::NotFound;
            return Ok(());
        }
        let (_, allocs) = self
            .nomad
            .job_allocations(&target.job_id, QueryOptions::default())
            .await?;
        let Some(latest) = allocs.iter().max_by_key(|a| a.create_index) else {
            let evals = self.nomad.job_evaluations(&target.job_id).await?;
            let placement_failure = evals
                .iter()
                .max_by_key(|e| e.create_index)
                .and_then(|e| e.placement_failure());
            obs.job = JobObservation::Pending { placement_failure };
            return Ok(());
        };
        let Some(alloc) = self.nomad.get_allocation(&latest.id).await? else {
            obs.job = JobObservation::Pending {
                placement_failure: None,
            };
            return Ok(());
        };
        let task = alloc
            .task_states
            .get(target.phase.as_str())
            .or_else(|| alloc.task_states.values().next());
        let node = if alloc.node_name.is_empty() {
            alloc.node_id.clone()
        } else {
            alloc.node_name.clone()
        };
        let Some(task) = task else {
            obs.job = if alloc.is_terminal() {
                JobObservation::Finished {
                    alloc_id: alloc.id.clone(),
                    node,
                    started_at: Utc::now(),
                    finished_at: Utc::now(),
                    exit_code: None,
                    failed: true,
                    event_message: Some(format!(
                        "allocation {}: {}",
                        alloc.client_status, alloc.client_description
                    )),
                }
            } else {
                JobObservation::Pending {
                    placement_failure: None,
                }
            };
            return Ok(());
        };
        match task.state.as_str() {
            "dead" => {
                let started_at = task
                    .started_at
                    .or(task.finished_at)
                    .unwrap_or_else(Utc::now);
                let finished_at = task.finished_at.unwrap_or_else(Utc::now);
                let event_message = task
                    .events
                    .iter()
                    .rev()
                    .find(|e| {
                        // A failing `Killing` is how Nomad's prestart hooks (template, vault)
                        // stop a task that never started: "Template failed: ...".
                        matches!(
                            e.type_.as_str(),
                            "Driver Failure" | "Task Setup" | "Setup Failure" | "Killed"
                        ) || (e.type_ == "Killing" && e.fails_task)
                    })
                    .map(describe_event);
                let bytes = self
                    .nomad
                    .log_tail(&alloc.id, target.phase.as_str(), LOG_TAIL_BYTES)
                    .await?;
                let stdout = self
                    .nomad
                    .log_tail_of(
                        &alloc.id,
                        target.phase.as_str(),
                        nomad::LogStream::Stdout,
                        LOG_TAIL_BYTES,
                    )
                    .await?;
                obs.markers = machine::parse_markers(&stdout);
                *tail = Some(bytes);
                obs.job = JobObservation::Finished {
                    alloc_id: alloc.id.clone(),
                    node,
                    started_at,
                    finished_at,
                    exit_code: task.exit_code().and_then(|c| i32::try_from(c).ok()),
                    failed: task.failed,
                    event_message,
                };
            }
            "running" => {
                *tail = Some(
                    self.nomad
                        .log_tail(&alloc.id, target.phase.as_str(), LOG_TAIL_BYTES)
                        .await?,
                );
                obs.job = JobObservation::Running {
                    alloc_id: alloc.id.clone(),
                    node,
                    started_at: task.started_at.unwrap_or_else(Utc::now),
                };
            }
            _ => {
                obs.job = JobObservation::Pending {
                    placement_failure: None,
                };
            }
        }
        Ok(())
    }

    async fn check_secrets(&self, paths: &[String]) -> Result<Vec<String>, ReconcileError> {
        let Some(vault) = &self.vault else {
            return Ok(Vec::new());
        };
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let missing = vault.check_paths(&refs).await?;
        Ok(missing.into_iter().map(|m| m.path).collect())
    }

    async fn register(
        &self,
        req: &BuildRequest,
        generation: u64,
        phase: PipelinePhase,
        attempt: u32,
        job_id: &str,
        render: &RenderConfig,
    ) -> Result<(), ReconcileError> {
        // A deposed leader must not start work: ask Consul (not local state) right before.
        match self
            .fence
            .txn(&[TxnOp::Get {
                key: self.keys.leader_key(),
            }])
            .await?
        {
            FencedTxn::Committed(_) => {}
            FencedTxn::NotLeader | FencedTxn::RolledBack(_) => {
                return Err(ReconcileError::NotLeader);
            }
        }
        let mut job = jobspec::render(req, generation, attempt, phase, render)?;
        job.id = job_id.to_string();
        match self.nomad.register_job(&job, Some(0)).await {
            Ok(_) | Err(nomad::Error::JobExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_tail(
        &self,
        job_id: &str,
        phase: PipelinePhase,
    ) -> Result<Option<Vec<u8>>, ReconcileError> {
        let (_, allocs) = self
            .nomad
            .job_allocations(job_id, QueryOptions::default())
            .await?;
        let Some(latest) = allocs.iter().max_by_key(|a| a.create_index) else {
            return Ok(None);
        };
        Ok(Some(
            self.nomad
                .log_tail(&latest.id, phase.as_str(), LOG_TAIL_BYTES)
                .await?,
        ))
    }

    async fn write_logs(
        &self,
        ns: &str,
        name: &str,
        phase: PipelinePhase,
        bytes: &[u8],
    ) -> Result<(), ReconcileError> {
        let key = self.keys.logs_key(ns, name, phase);
        let hash = fxhash(bytes);
        if self
            .written_logs
            .lock()
            .map(|m| m.get(&key) == Some(&hash))
            .unwrap_or(false)
        {
            return Ok(());
        }
        match self
            .fence
            .txn(&[TxnOp::Set {
                key: key.clone(),
                value: bytes.to_vec(),
                flags: 0,
            }])
            .await?
        {
            FencedTxn::Committed(_) => {
                if let Ok(mut m) = self.written_logs.lock() {
                    m.insert(key, hash);
                }
                Ok(())
            }
            FencedTxn::NotLeader => Err(ReconcileError::NotLeader),
            FencedTxn::RolledBack(e) => Err(ReconcileError::Consul(ConsulError::Decode {
                endpoint: "txn",
                message: format!("log write rolled back: {e:?}"),
            })),
        }
    }

    /// Stops every job of an older generation: the recorded IDs, and any other job of that
    /// generation found by prefix (a crash may have registered one without recording it).
    async fn stop_generation(
        &self,
        key: &RequestKey,
        generation: u64,
        job_ids: &[String],
    ) -> Result<(), ReconcileError> {
        let prefix = format!("jobforge-{}-{}-{generation}-", key.namespace, key.name);
        let mut ids: Vec<String> = job_ids.to_vec();
        for stub in self.nomad.list_jobs(&prefix).await? {
            if !ids.contains(&stub.id) && !stub.stop && stub.status != "dead" {
                ids.push(stub.id);
            }
        }
        for id in ids {
            self.job_watches.stop(&id);
            self.nomad.deregister_job(&id, false).await?;
        }
        Ok(())
    }

    /// The request is gone (or its TTL expired): purge its Nomad jobs, then delete its status and
    /// logs (and, for a TTL expiry, its spec at `generation`) in one fenced transaction.
    async fn delete_request(
        &self,
        key: &RequestKey,
        status: Option<&BuildStatus>,
        spec_generation: Option<u64>,
    ) -> Result<(), ReconcileError> {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let request = format!("{ns}/{name}");
        let mut ids: Vec<String> = status
            .map(|s| {
                PipelinePhase::ALL
                    .iter()
                    .filter_map(|p| s.phases.get(*p).map(|r| r.nomad_job_id.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for stub in self
            .nomad
            .list_jobs(&format!("jobforge-{ns}-{name}-"))
            .await?
        {
            if ids.contains(&stub.id) {
                continue;
            }
            // `jobforge-a-b-c-…` could be namespace "a-b" or name "b-c": trust only the job's Meta.
            if let Some(job) = self.nomad.get_job(&stub.id).await?
                && job.meta.get("jobforge.request") == Some(&request)
            {
                ids.push(stub.id);
            }
        }
        for id in ids {
            self.job_watches.stop(&id);
            self.nomad.deregister_job(&id, true).await?;
        }
        let mut ops = vec![
            TxnOp::Delete {
                key: self.keys.status_key(ns, name),
            },
            TxnOp::DeleteTree {
                key: self.keys.logs_prefix(ns, name),
            },
        ];
        if let Some(g) = spec_generation {
            ops.push(TxnOp::DeleteCas {
                key: self.keys.request_key(ns, name),
                index: g,
            });
        }
        self.record_phase(&self.keys.status_key(ns, name), None);
        if let Ok(mut m) = self.written_logs.lock() {
            for p in PipelinePhase::ALL {
                m.remove(&self.keys.logs_key(ns, name, p));
            }
        }
        match self.fence.txn(&ops).await? {
            FencedTxn::Committed(_) => Ok(()),
            FencedTxn::NotLeader => Err(ReconcileError::NotLeader),
            // The spec changed since (a new generation): keep it; its reconcile starts over.
            FencedTxn::RolledBack(_) if spec_generation.is_some() => {
                match self.fence.txn(&ops[..2]).await? {
                    FencedTxn::NotLeader => Err(ReconcileError::NotLeader),
                    _ => Ok(()),
                }
            }
            FencedTxn::RolledBack(e) => Err(ReconcileError::Consul(ConsulError::Decode {
                endpoint: "txn",
                message: format!("delete rolled back: {e:?}"),
            })),
        }
    }
}

/// Phase of every request the leader has seen, kept as counts per phase for the
/// `jobforge_requests{phase}` gauge (updated on each change, no scan).
#[derive(Debug, Default)]
struct PhaseCounts {
    by_key: HashMap<String, Phase>,
    counts: HashMap<Phase, usize>,
}

impl PhaseCounts {
    fn set(&mut self, key: &str, phase: Option<Phase>) {
        let old = match phase {
            Some(p) => self.by_key.insert(key.to_string(), p),
            None => self.by_key.remove(key),
        };
        if old == phase {
            return;
        }
        for (p, delta) in [(old, -1i64), (phase, 1)] {
            let Some(p) = p else { continue };
            let c = self.counts.entry(p).or_insert(0);
            *c = c.saturating_add_signed(delta as isize);
            metrics::gauge!("jobforge_requests", "phase" => p.as_str()).set(*c as f64);
        }
    }
}

/// Parses the stored spec; a document whose metadata disagrees with its key is invalid too.
fn parse_spec(bytes: &[u8], ns: &str, name: &str) -> Result<BuildRequest, Vec<String>> {
    let req = parse_request(bytes, Format::detect(bytes))
        .map_err(|p| p.iter().map(|x| x.to_string()).collect::<Vec<_>>())?;
    let mut problems = Vec::new();
    if req.metadata.namespace != ns {
        problems.push(format!(
            "metadata.namespace: {:?} does not match the key's namespace {ns:?} (the key is the request's identity)",
            req.metadata.namespace
        ));
    }
    if req.metadata.name != name {
        problems.push(format!(
            "metadata.name: {:?} does not match the key's name {name:?} (the key is the request's identity)",
            req.metadata.name
        ));
    }
    if problems.is_empty() {
        Ok(req)
    } else {
        Err(problems)
    }
}

/// Metrics of a status transition: phase durations and finished builds.
fn record_transition(old: Option<&BuildStatus>, new: &BuildStatus) {
    let old_phase = old
        .filter(|o| o.observed_generation == new.observed_generation)
        .map(|o| o.phase);
    if old_phase == Some(new.phase) {
        return;
    }
    if new.phase.is_terminal() {
        let reason = new
            .failure
            .as_ref()
            .map(|f| f.reason.as_str())
            .unwrap_or(new.phase.as_str());
        metrics::counter!("jobforge_builds_finished_total", "outcome" => new.phase.as_str(), "reason" => reason)
            .increment(1);
    }
    for phase in PipelinePhase::ALL {
        let (Some(rec), was) = (new.phases.get(phase), old.and_then(|o| o.phases.get(phase)))
        else {
            continue;
        };
        if let (Some(s), Some(f)) = (rec.started_at, rec.finished_at)
            && was.and_then(|w| w.finished_at).is_none()
        {
            let outcome = match rec.exit_code {
                Some(0) => "success",
                _ => "failure",
            };
            let secs = (f - s).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("jobforge_phase_duration_seconds", "phase" => phase.as_str(), "outcome" => outcome)
                    .record(secs);
        }
    }
}

/// One line for a task event: its type and the most specific message Nomad gave.
fn describe_event(e: &nomad::TaskEvent) -> String {
    let detail = [
        &e.display_message,
        &e.driver_error,
        &e.setup_error,
        &e.message,
        &e.kill_reason,
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .cloned()
    .unwrap_or_default();
    if detail.is_empty() {
        e.type_.clone()
    } else {
        format!("{}: {detail}", e.type_)
    }
}

/// FNV-1a, to recognise identical log tails without keeping them.
fn fxhash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(ns: &str, name: &str) -> Vec<u8> {
        format!(
            r#"{{"apiVersion":"jobforge/v1alpha1","kind":"BuildRequest","metadata":{{"name":"{name}","namespace":"{ns}"}},
            "spec":{{"owner":"o","repo_url":"https://git.example.com/o/r.git","git_ref":"main","image_name":"app",
            "registry_url":"registry.example.com:5000/o"}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn spec_whose_metadata_disagrees_with_its_key_is_invalid() {
        assert!(parse_spec(&doc("team-a", "app"), "team-a", "app").is_ok());
        let e = parse_spec(&doc("team-a", "app"), "team-b", "other").expect_err("mismatch");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("metadata.namespace:"), "{e:?}");
    }

    #[test]
    fn phase_counts_follow_transitions_and_removals() {
        let mut c = PhaseCounts::default();
        c.set("a", Some(Phase::Building));
        c.set("b", Some(Phase::Building));
        c.set("a", Some(Phase::Succeeded));
        c.set("b", None);
        c.set("b", None);
        assert_eq!(c.counts.get(&Phase::Building), Some(&0));
        assert_eq!(c.counts.get(&Phase::Succeeded), Some(&1));
        assert_eq!(c.by_key.len(), 1);
    }

    #[test]
    fn junk_spec_yields_problems_not_a_panic() {
        let e = parse_spec(&[0xff, 0, 1, 2], "a", "b").expect_err("junk");
        assert!(!e.is_empty());
        let big = vec![b'x'; 500 * 1024];
        assert!(parse_spec(&big, "a", "b").is_err());
    }
}
