//! The reconciler: the thin I/O shell around the pure [`crate::machine`]. One call drives one
//! request one step: read spec and status from Consul, observe the current phase's Nomad job,
//! ask [`machine::step`] what to do, do it, and write the status with a fenced CAS.
//!
//! Safe to interrupt at any await: every Nomad call is idempotent (deterministic job IDs,
//! registration with `EnforceIndex` 0), and every KV write is a `/v1/txn` fenced by the leader
//! session, so a crash or a deposed leader repeats work harmlessly and never overwrites status.
//! Invariant: the reconciler never writes Consul except through the [`Fence`]. Webhook events go
//! into the outbox in the same transaction as the status that produced them
//! ([`crate::webhook`]); the leader's delivery worker sends them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use jobforge_client::consul::leader::{Fence, FencedTxn, FencedWrite};
use jobforge_client::consul::{
    Client as ConsulClient, ConsulError, QueryOptions as KvQuery, TxnOp,
};
use jobforge_schema::parse::{Format, parse_request};
use jobforge_schema::tenancy::{TenancyConfig, tenancy_problems};
use jobforge_schema::{
    BuildRequest, BuildStatus, KeyLayout, Phase, PipelinePhase, Reason, WebhookEvent,
};
use tokio::sync::watch;

use crate::config::EffectiveConfig;
use crate::jobspec::{self, RenderConfig, RenderError};
use crate::jobwatch::JobWatches;
use crate::machine::{
    self, Decision, Effect, JobObservation, JobTarget, MachineConfig, Observation, StepInput,
};
use crate::nomad::{self, Client as NomadClient, QueryOptions};
use crate::queue::{self, Admission, BuildSlots, Groups, RequestKey};
use crate::sweep::JobOwner;
use crate::vault::{VaultChecker, VaultError};
use crate::webhook;

/// Bytes of stdout+stderr kept per phase in `logs/<ns>/<name>/<phase>`.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// How often the log tail of a running phase is refreshed.
pub const RUNNING_LOG_REFRESH: Duration = Duration::from_secs(3);

/// When to look again at a job that waits for placement (or was just registered).
const PLACEMENT_RECHECK: Duration = Duration::from_secs(1);

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
    /// Signing the published image failed in a way a retry may fix (Vault or registry down).
    #[error("signing the image: {0}")]
    Signing(#[from] crate::supply_chain::SignError),
}

/// What step 1 read from Consul for one request.
struct Stored {
    /// The stored status, if present and readable (possibly of an older generation).
    status: Option<BuildStatus>,
    /// `ModifyIndex` of the status key (0 = absent): step 5's CAS index.
    status_index: u64,
    /// The spec; `None` when the request key is gone (the cleanup branch).
    spec: Option<Spec>,
}

/// A request's spec as read.
struct Spec {
    /// Its key's `ModifyIndex`.
    generation: u64,
    /// The request, or every problem of the document (one line each).
    parsed: Result<BuildRequest, Vec<String>>,
}

/// What step 2 learned about the current phase's job: its state and, once its task started,
/// the tails of both output streams (each at most [`LOG_TAIL_BYTES`]).
#[derive(Debug, Default)]
struct Observed {
    job: JobObservation,
    stdout: Option<Vec<u8>>,
    stderr: Option<Vec<u8>>,
    nomad_unavailable: bool,
}

impl Observed {
    /// The observation [`machine::step`] reads: markers come from a finished task's stdout.
    fn observation(&self) -> Observation {
        let markers = match (&self.job, &self.stdout) {
            (JobObservation::Finished { .. }, Some(out)) => machine::parse_markers(out),
            _ => Default::default(),
        };
        let error_line = match &self.job {
            JobObservation::Finished { .. } => self.tail().and_then(|t| machine::error_line(&t)),
            _ => None,
        };
        Observation {
            job: self.job.clone(),
            markers,
            error_line,
            secrets_missing: None,
            nomad_unavailable: self.nomad_unavailable,
            queued: None,
            superseded_by: None,
        }
    }

    /// stdout then stderr in at most [`LOG_TAIL_BYTES`] ([`nomad::join_tails`]), when read.
    fn tail(&self) -> Option<Vec<u8>> {
        match (&self.stdout, &self.stderr) {
            (None, None) => None,
            (out, err) => Some(nomad::join_tails(
                out.as_deref().unwrap_or_default(),
                err.as_deref().unwrap_or_default(),
                LOG_TAIL_BYTES,
            )),
        }
    }
}

/// What step 4 leaves to the steps after the commit.
#[derive(Debug, Default)]
struct Applied {
    /// A job was registered.
    registered: bool,
    /// Webhook events to put into the outbox with the status.
    webhooks: Vec<(WebhookEvent, String)>,
    /// The TTL expired: clean the request up once the status is written.
    expired: bool,
}

/// Outcome of step 5.
enum Committed {
    /// The status was written.
    Written,
    /// The status did not change; nothing was written.
    Unchanged,
    /// Someone else wrote the status since step 1: start over.
    Conflict,
}

/// Why a request's jobs and keys are removed.
#[derive(Debug, Clone, Copy)]
enum Cleanup {
    /// The spec key is gone.
    SpecGone,
    /// `ttl_after_finished` expired; the spec is deleted too if still at `generation`.
    Expired {
        /// Generation whose spec may be deleted.
        generation: u64,
    },
}

/// The connections and settings a leadership term's reconciles use; the runtime builds it once
/// per term.
#[derive(Clone)]
pub struct Deps {
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
}

/// Everything one leadership term's reconciles share.
pub struct Reconciler {
    /// Connections and configuration.
    deps: Deps,
    /// Watches of in-flight jobs.
    job_watches: Arc<JobWatches>,
    /// Phase of every request this term has seen, for the `jobforge_requests{phase}` gauge.
    phases: Mutex<PhaseCounts>,
    /// Hash of the last log tail written per logs key, to skip identical writes.
    written_logs: Mutex<HashMap<String, u64>>,
    /// Build slots: which waiting request may start (issue 17).
    slots: Arc<BuildSlots>,
    /// Concurrency groups of unfinished requests (issue 17).
    groups: Mutex<Groups>,
}

/// What the reconciler tells the machine about build slots and concurrency groups.
#[derive(Debug, Default)]
struct Scheduling {
    /// The `Queued` message when the request waits for a slot.
    queued: Option<String>,
    /// The newer request of its group that supersedes it.
    superseded_by: Option<String>,
    /// Its namespace's storage quota refuses it: the problem to report (`InvalidSpec`).
    over_quota: Option<String>,
}

impl Reconciler {
    /// A reconciler for one leadership term.
    pub fn new(deps: Deps, job_watches: Arc<JobWatches>, slots: Arc<BuildSlots>) -> Reconciler {
        Reconciler {
            deps,
            job_watches,
            phases: Mutex::new(PhaseCounts::default()),
            written_logs: Mutex::new(HashMap::new()),
            slots,
            groups: Mutex::new(Groups::default()),
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before deciding: a request that has not started asks for a build slot, and a member of a
    /// concurrency group learns whether a newer member superseded it. Whatever the outcome, the
    /// slot table learns that this write of the request (`spec.generation`) has been read, so
    /// its namespace is no longer passed over on its account (`queue::slots`, module docs).
    fn schedule(
        &self,
        key: &RequestKey,
        spec: &Spec,
        stored: &Stored,
        cfg: &EffectiveConfig,
    ) -> Scheduling {
        let out = self.admit(key, spec, stored, cfg);
        self.slots.decided(key, spec.generation);
        out
    }

    /// [`Reconciler::schedule`] but for saying it was read.
    fn admit(
        &self,
        key: &RequestKey,
        spec: &Spec,
        stored: &Stored,
        cfg: &EffectiveConfig,
    ) -> Scheduling {
        let Ok(req) = &spec.parsed else {
            return Scheduling::default();
        };
        let status = stored
            .status
            .as_ref()
            .filter(|s| s.observed_generation >= spec.generation);
        if req.spec.cancel || status.is_some_and(|s| s.phase.is_terminal()) {
            return Scheduling::default();
        }
        let started = machine::target(spec.generation, stored.status.as_ref()).is_some();
        let mut out = Scheduling::default();
        if let Some(group) = &req.spec.concurrency_group {
            let mut g = self.groups();
            g.note(key, group, spec.generation, started);
            out.superseded_by = g.superseded_by(key, group, spec.generation);
            if out.superseded_by.is_some() {
                return out;
            }
        }
        if !started
            && let Some(quota) = cfg.limits.max_requests(&key.namespace)
            && let Some(msg) = self.slots.stored().over_quota(key, quota)
        {
            out.over_quota = Some(msg);
            return out;
        }
        if started {
            self.slots.hold(key, spec.generation);
        } else {
            let priority = cfg.limits.priority(&key.namespace, req.spec.priority);
            if let Admission::Queued(at) = self.slots.request(key, priority, spec.generation) {
                out.queued = Some(at.message(&key.namespace));
            }
        }
        out
    }

    /// After the commit: a finished request gives back its slot and leaves its group; one that
    /// just started its build supersedes the older members of its group.
    fn after_commit(&self, key: &RequestKey, spec: &Spec, status: &BuildStatus, registered: bool) {
        if status.phase.is_terminal() {
            self.slots.release(key);
            self.groups().leave(key);
            return;
        }
        if registered
            && status.attempt <= 1
            && let Ok(req) = &spec.parsed
            && let Some(group) = &req.spec.concurrency_group
            && machine::target(spec.generation, Some(status)).map(|t| t.phase)
                == Some(PipelinePhase::Build)
        {
            let older = self.groups().started(key, group, spec.generation);
            for o in older {
                tracing::info!(request = %o, newer = %key, %group, "superseded by a newer request of its concurrency group");
                self.slots.queue().enqueue(o);
            }
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

    /// The six steps of one reconcile, as numbered in `ARCHITECTURE.md`.
    async fn reconcile_inner(&self, key: &RequestKey) -> Result<queue::Action, ReconcileError> {
        let cfg = self.deps.config.borrow().clone();
        self.slots.set_limits(&cfg.limits.slots);
        // 1. Read the spec (and its generation) and the status.
        let stored = self.read(key, &cfg.tenancy).await?;
        let Some(spec) = &stored.spec else {
            // Cleanup: the request was deleted.
            self.delete_request(key, stored.status.as_ref(), Cleanup::SpecGone)
                .await?;
            self.slots.release(key);
            self.groups().leave(key);
            return Ok(queue::Action::AwaitChange);
        };
        // Build slots and concurrency groups need only what step 1 read; asked before step 2,
        // so a failing Nomad read cannot leave the request unread by the slot table.
        let scheduling = self.schedule(key, spec, &stored, &cfg);
        // 2. Observe the job the status names as current.
        let target = machine::target(spec.generation, stored.status.as_ref());
        let observed = match &target {
            Some(t) => self.observe(t).await?,
            None => Observed::default(),
        };
        // 3. Decide: the pure state machine, with the Vault check it may ask for.
        let mut decision = self
            .decide(key, spec, &stored, &observed, scheduling, &cfg.machine)
            .await?;
        // 3b. A request that just succeeded: sign its image and attach provenance (issue 20).
        if let Some(signing) = &cfg.signing {
            self.sign(
                key,
                spec,
                &stored,
                &mut decision.status,
                signing,
                cfg.render.tls_verify,
            )
            .await?;
        }
        // 4. Apply its effects (each idempotent). The test and publish jobs read the temporary
        // image by the digest the build reported (`jobspec::temp_image_ref`).
        let built = decision
            .status
            .phases
            .get(PipelinePhase::Build)
            .and_then(|r| r.digest.clone());
        let applied = self
            .apply(
                key,
                spec,
                &decision.effects,
                target.as_ref(),
                &observed,
                (&render_for(&cfg, &key.namespace), built.as_deref()),
            )
            .await?;
        // 5. Commit the status, with its webhook events in the outbox, through the fence; only
        // then a TTL cleanup.
        let outbox = match &spec.parsed {
            Ok(req) if !applied.webhooks.is_empty() => webhook::outbox_ops(
                &self.deps.keys,
                req,
                spec.generation,
                &decision.status,
                &applied.webhooks,
                Utc::now(),
            )
            .map_err(|message| {
                ReconcileError::Consul(ConsulError::Decode {
                    endpoint: "txn",
                    message,
                })
            })?,
            _ => Vec::new(),
        };
        if let Committed::Conflict = self.commit(key, &stored, &decision.status, &outbox).await? {
            // Someone wrote the status since step 1: start over, but after the key's backoff, so
            // that a write that keeps losing is never an immediate-requeue loop.
            return Ok(queue::Action::Backoff);
        }
        self.after_commit(key, spec, &decision.status, applied.registered);
        if applied.expired {
            // Cleanup: the TTL after finishing expired.
            let expired = Cleanup::Expired {
                generation: spec.generation,
            };
            self.delete_request(key, Some(&decision.status), expired)
                .await?;
            return Ok(queue::Action::AwaitChange);
        }
        // 6. Keep following the job that is now current, and say when to look again.
        let Some(now_current) = machine::target(spec.generation, Some(&decision.status)) else {
            return Ok(queue::Action::after(decision.requeue_after));
        };
        self.job_watches.ensure(&now_current.job_id, key);
        let still_current = target.as_ref() == Some(&now_current);
        if still_current
            && matches!(observed.job, JobObservation::Running { .. })
            && let Some(tail) = observed.tail()
        {
            self.write_logs(key, now_current.phase, &tail).await?;
        }
        Ok(queue::Action::after(next_look(
            decision.requeue_after,
            &observed.job,
            still_current,
            applied.registered,
        )))
    }

    /// Step 3b: when this decision moves the request to Succeeded, signs the published image
    /// and attaches its provenance (`supply_chain::sign_published`), recording the references
    /// in `status.image`. A transient failure is an error (the reconcile is retried before the
    /// status is committed); any other failure leaves the image published and unsigned, with
    /// `status.image.signingError` saying why.
    async fn sign(
        &self,
        key: &RequestKey,
        spec: &Spec,
        stored: &Stored,
        status: &mut jobforge_schema::BuildStatus,
        signing: &crate::supply_chain::SigningConfig,
        tls_verify: bool,
    ) -> Result<(), ReconcileError> {
        use crate::supply_chain::{Published, sign_published};
        use jobforge_schema::Phase;
        let Ok(req) = &spec.parsed else {
            return Ok(());
        };
        let already = stored.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Succeeded && s.observed_generation == status.observed_generation
        });
        if status.phase != Phase::Succeeded || already {
            return Ok(());
        }
        let Some(image) = &status.image else {
            return Ok(());
        };
        if image.signature.is_some() || image.signing_error.is_some() {
            return Ok(());
        }
        let result = match &self.deps.vault {
            None => Err(crate::supply_chain::SignError::Refused(
                "signing is configured but VAULT_ADDR is not".into(),
            )),
            Some(vault) => {
                let published = Published {
                    request: req,
                    namespace: &key.namespace,
                    name: &key.name,
                    generation: spec.generation,
                    status,
                };
                let started = std::time::Instant::now();
                let r = sign_published(vault, signing, tls_verify, &published).await;
                // What signing adds to a build (issue 20's "added time" target; `jobforge-bench
                // supply` reads `_sum`/`_count`): tag resolution, two transit signs, two pushes.
                metrics::histogram!("jobforge_signing_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                r
            }
        };
        let Some(image) = status.image.as_mut() else {
            return Ok(());
        };
        match result {
            Ok(signed) => {
                tracing::info!(request = %key, signature = %signed.signature, provenance = %signed.provenance, "signed the published image");
                image.signature = Some(signed.signature);
                image.provenance = Some(signed.provenance);
                Ok(())
            }
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => {
                tracing::warn!(request = %key, error = %e, "the published image is not signed");
                image.signing_error = Some(e.to_string());
                Ok(())
            }
        }
    }

    /// Step 1: the spec (its generation and the parsed request, or every problem, the tenancy
    /// rules in force included) and the status.
    async fn read(
        &self,
        key: &RequestKey,
        tenancy: &TenancyConfig,
    ) -> Result<Stored, ReconcileError> {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let spec_key = self.deps.keys.request_key(ns, name);
        let status_key = self.deps.keys.status_key(ns, name);
        let (_, spec_pair) = self
            .deps
            .consul
            .kv_get(&spec_key, KvQuery::default())
            .await?;
        let (_, status_pair) = self
            .deps
            .consul
            .kv_get(&status_key, KvQuery::default())
            .await?;
        Ok(Stored {
            status_index: status_pair.as_ref().map_or(0, |p| p.modify_index),
            status: status_pair.and_then(|p| serde_json::from_slice(&p.value).ok()),
            spec: spec_pair.map(|p| Spec {
                generation: p.modify_index,
                parsed: parse_spec(&p.value, ns, name, tenancy),
            }),
        })
    }

    /// Step 2: the state of `target`'s job. Transient Nomad errors give an observation with
    /// `nomad_unavailable` instead of failing the reconcile.
    async fn observe(&self, target: &JobTarget) -> Result<Observed, ReconcileError> {
        match self.observe_job(target).await {
            Ok(o) => Ok(o),
            Err(ReconcileError::Nomad(e)) if e.is_transient() => Ok(Observed {
                nomad_unavailable: true,
                ..Observed::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// The reads of step 2: the job, its latest allocation (or, without one, its evaluations)
    /// and, once its task runs, both output streams. What they mean is
    /// [`machine::observation_of`]'s to say.
    async fn observe_job(&self, target: &JobTarget) -> Result<Observed, ReconcileError> {
        let id = target.job_id.as_str();
        if self.deps.nomad.get_job(id).await?.is_none() {
            return Ok(Observed::default());
        }
        let (_, allocs) = self
            .deps
            .nomad
            .job_allocations(id, QueryOptions::default())
            .await?;
        let (alloc, evals) = match allocs.iter().max_by_key(|a| a.create_index) {
            Some(latest) => (
                self.deps.nomad.get_allocation(&latest.id).await?,
                Vec::new(),
            ),
            None => (None, self.deps.nomad.job_evaluations(id).await?),
        };
        let job = machine::observation_of(target.phase, alloc.as_ref(), &evals, Utc::now());
        let mut observed = Observed {
            job,
            ..Observed::default()
        };
        if let (Some(alloc), JobObservation::Running { .. } | JobObservation::Finished { .. }) =
            (&alloc, &observed.job)
        {
            let task = target.phase.as_str();
            let read = |stream| {
                self.deps
                    .nomad
                    .log_tail_of(&alloc.id, task, stream, LOG_TAIL_BYTES)
            };
            observed.stdout = Some(read(nomad::LogStream::Stdout).await?);
            observed.stderr = Some(read(nomad::LogStream::Stderr).await?);
        }
        Ok(observed)
    }

    /// Step 3: [`machine::step`] on what was read and observed; when it asks for a Vault check,
    /// the check's result is the second input and the machine decides again.
    async fn decide(
        &self,
        key: &RequestKey,
        spec: &Spec,
        stored: &Stored,
        observed: &Observed,
        scheduling: Scheduling,
        config: &MachineConfig,
    ) -> Result<Decision, ReconcileError> {
        let quota_problem: Vec<String> = scheduling.over_quota.into_iter().collect();
        let observation = Observation {
            queued: scheduling.queued,
            superseded_by: scheduling.superseded_by,
            ..observed.observation()
        };
        let input = StepInput {
            namespace: &key.namespace,
            name: &key.name,
            generation: spec.generation,
            spec: if quota_problem.is_empty() {
                spec.parsed.as_ref().map(|r| &r.spec).map_err(Vec::as_slice)
            } else {
                Err(quota_problem.as_slice())
            },
            status: stored.status.as_ref(),
            observation: &observation,
            config,
        };
        let now = Utc::now();
        let mut decision = machine::step(&input, now);
        if let Some(paths) = decision.secrets_to_check() {
            let checked = Observation {
                secrets_missing: Some(self.check_secrets(key, paths).await?),
                ..observation.clone()
            };
            decision = machine::step(
                &StepInput {
                    observation: &checked,
                    ..input
                },
                now,
            );
        }
        tracing::debug!(request = %key, generation = spec.generation, phase = %decision.status.phase, effects = ?decision.effects, observed = ?observed.job, "decided");
        Ok(decision)
    }

    /// Step 4: performs the job effects in order; webhooks and the TTL cleanup wait for the
    /// commit and are returned.
    async fn apply(
        &self,
        key: &RequestKey,
        spec: &Spec,
        effects: &[Effect],
        target: Option<&JobTarget>,
        observed: &Observed,
        (render, built): (&RenderConfig, Option<&str>),
    ) -> Result<Applied, ReconcileError> {
        let mut applied = Applied::default();
        for effect in effects {
            match effect {
                Effect::StopGeneration {
                    generation: old,
                    job_ids,
                } => self.stop_generation(key, *old, job_ids).await?,
                Effect::DeregisterJob { job_id, purge } => {
                    self.stop_job(job_id, *purge).await?;
                }
                Effect::RegisterJob {
                    phase,
                    attempt,
                    job_id,
                } => {
                    let Ok(req) = &spec.parsed else { continue };
                    self.register(
                        req,
                        spec.generation,
                        *phase,
                        *attempt,
                        job_id,
                        (render, built),
                    )
                    .await?;
                    self.job_watches.ensure(job_id, key);
                    applied.registered = true;
                }
                Effect::CaptureLogs { phase, job_id } => {
                    let bytes = match (observed.tail(), target) {
                        (Some(t), Some(tg)) if &tg.job_id == job_id => Some(t),
                        _ => self.read_tail(job_id, *phase).await?,
                    };
                    if let Some(b) = bytes {
                        self.write_logs(key, *phase, &b).await?;
                    }
                }
                Effect::CheckSecrets { .. } => {}
                Effect::Webhook { event, id } => applied.webhooks.push((*event, id.clone())),
                Effect::DeleteRequest => applied.expired = true,
            }
        }
        Ok(applied)
    }

    /// Step 5: writes `status` with a fenced CAS on the index read in step 1, if it changed,
    /// together with `outbox` (the outbox records of the webhook events this status emits) in
    /// one transaction.
    /// Errors: [`ReconcileError::NotLeader`] when this replica no longer leads; a rollback of an
    /// outbox operation (never expected: they are unconditional sets) as a Consul error, so the
    /// queue backs off instead of retrying at once.
    async fn commit(
        &self,
        key: &RequestKey,
        stored: &Stored,
        status: &BuildStatus,
        outbox: &[TxnOp],
    ) -> Result<Committed, ReconcileError> {
        let status_key = self.deps.keys.status_key(&key.namespace, &key.name);
        if stored.status.as_ref() == Some(status) {
            // A new webhook event always changes `webhook.lastEvent`, so nothing is dropped here.
            debug_assert!(outbox.is_empty(), "webhook events without a status change");
            self.record_phase(&status_key, Some(status.phase));
            return Ok(Committed::Unchanged);
        }
        let bytes = serde_json::to_vec(status)?;
        let written = if outbox.is_empty() {
            self.deps
                .fence
                .cas_put(&status_key, &bytes, stored.status_index)
                .await?
        } else {
            let mut ops = Vec::with_capacity(outbox.len() + 1);
            ops.push(TxnOp::Cas {
                key: status_key.clone(),
                value: bytes,
                flags: 0,
                index: stored.status_index,
            });
            ops.extend_from_slice(outbox);
            match self.deps.fence.txn(&ops).await? {
                FencedTxn::Committed(_) => FencedWrite::Committed { modify_index: 0 },
                FencedTxn::NotLeader => FencedWrite::NotLeader,
                FencedTxn::RolledBack(errors) if errors.iter().all(|e| e.op_index == 0) => {
                    FencedWrite::Conflict
                }
                FencedTxn::RolledBack(errors) => {
                    return Err(ReconcileError::Consul(ConsulError::Decode {
                        endpoint: "txn",
                        message: format!("status and outbox commit rolled back: {errors:?}"),
                    }));
                }
            }
        };
        match written {
            FencedWrite::Committed { .. } => {
                if let Some(t) = phase_transition(stored.status.as_ref(), status) {
                    tracing::info!(
                        request = %key,
                        generation = status.observed_generation,
                        attempt = status.attempt,
                        from = t.from.map_or("-", Phase::as_str),
                        phase = status.phase.as_str(),
                        reason = t.reason.map_or("-", Reason::as_str),
                        "phase transition"
                    );
                }
                record_transition(stored.status.as_ref(), status);
                self.record_phase(&status_key, Some(status.phase));
                Ok(Committed::Written)
            }
            FencedWrite::Conflict => Ok(Committed::Conflict),
            FencedWrite::NotLeader => Err(ReconcileError::NotLeader),
        }
    }

    async fn check_secrets(
        &self,
        key: &RequestKey,
        paths: &[String],
    ) -> Result<Vec<String>, ReconcileError> {
        let Some(vault) = &self.deps.vault else {
            return Ok(Vec::new());
        };
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let missing = vault.check_paths(&refs).await?;
        // One line per missing path (the Vault library's own error lines are filtered out,
        // `logging::DEFAULT_FILTER`).
        for m in &missing {
            tracing::warn!(
                request = %key,
                path = %m.path,
                reason = %m.reason,
                "Vault secret path not found; the request fails with SecretNotFound"
            );
        }
        Ok(missing.into_iter().map(|m| m.path).collect())
    }

    /// Registers the job of `phase`, rendered with `built`, the manifest digest the build phase
    /// reported (the test and publish jobs read the temporary image by it).
    async fn register(
        &self,
        req: &BuildRequest,
        generation: u64,
        phase: PipelinePhase,
        attempt: u32,
        job_id: &str,
        (render, built): (&RenderConfig, Option<&str>),
    ) -> Result<(), ReconcileError> {
        self.ensure_leader().await?;
        // The machine and the renderer share one ID rule (`machine::job_id`).
        let job = jobspec::render_built(req, generation, attempt, phase, built, render)?;
        debug_assert_eq!(
            job.id, job_id,
            "the machine's and the renderer's job IDs differ"
        );
        match self.deps.nomad.register_job(&job, Some(0)).await {
            Ok(_) | Err(nomad::Error::JobExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Asks Consul (not local state) whether this term's session still holds the leader key: a
    /// fenced `get` of the key. Called right before every Nomad register, deregister and purge,
    /// so a deposed leader (paused, partitioned, its session invalidated) starts and stops
    /// nothing. A leader deposed between this answer and Nomad's is the window the sweep
    /// ([`Reconciler::sweep`]) closes, and its reconciles are aborted as soon as the campaign
    /// notices (`runtime::Term::abort`).
    ///
    /// Errors: [`ReconcileError::NotLeader`]; Consul's errors.
    pub(crate) async fn ensure_leader(&self) -> Result<(), ReconcileError> {
        match self
            .deps
            .fence
            .txn(&[TxnOp::Get {
                key: self.deps.keys.leader_key(),
            }])
            .await?
        {
            FencedTxn::Committed(_) => Ok(()),
            FencedTxn::NotLeader | FencedTxn::RolledBack(_) => {
                metrics::counter!("jobforge_fenced_nomad_actions_refused_total").increment(1);
                Err(ReconcileError::NotLeader)
            }
        }
    }

    /// Stops (or with `purge`, purges) Nomad job `id` after [`Reconciler::ensure_leader`], and
    /// forgets its allocation watch.
    async fn stop_job(&self, id: &str, purge: bool) -> Result<(), ReconcileError> {
        self.ensure_leader().await?;
        self.job_watches.stop(id);
        self.deps.nomad.deregister_job(id, purge).await?;
        Ok(())
    }

    async fn read_tail(
        &self,
        job_id: &str,
        phase: PipelinePhase,
    ) -> Result<Option<Vec<u8>>, ReconcileError> {
        let (_, allocs) = self
            .deps
            .nomad
            .job_allocations(job_id, QueryOptions::default())
            .await?;
        let Some(latest) = allocs.iter().max_by_key(|a| a.create_index) else {
            return Ok(None);
        };
        Ok(Some(
            self.deps
                .nomad
                .log_tail(&latest.id, phase.as_str(), LOG_TAIL_BYTES)
                .await?,
        ))
    }

    /// Writes the tail of `phase`'s output to `logs/<ns>/<name>/<phase>` through the fence,
    /// unless the same bytes were written last.
    async fn write_logs(
        &self,
        request: &RequestKey,
        phase: PipelinePhase,
        bytes: &[u8],
    ) -> Result<(), ReconcileError> {
        let key = self
            .deps
            .keys
            .logs_key(&request.namespace, &request.name, phase);
        let hash = fnv1a(bytes);
        if self
            .written_logs
            .lock()
            .map(|m| m.get(&key) == Some(&hash))
            .unwrap_or(false)
        {
            return Ok(());
        }
        match self
            .deps
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

    /// Stops every job of an older generation: the recorded IDs, and any other live job found
    /// by prefix whose Meta names this request and that generation (a crash may have registered
    /// one without recording it). The prefix only narrows the listing: `jobforge-a-b-5-…` may
    /// be request `a`/`b` or `a-b`/… , so the job's Meta decides (`sweep::JobOwner`).
    async fn stop_generation(
        &self,
        key: &RequestKey,
        generation: u64,
        job_ids: &[String],
    ) -> Result<(), ReconcileError> {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let prefix = machine::generation_job_prefix(ns, name, generation);
        let mut ids: Vec<String> = job_ids.to_vec();
        for stub in self.deps.nomad.list_jobs(&prefix).await? {
            if ids.contains(&stub.id) || stub.stop || stub.status == "dead" {
                continue;
            }
            let Some(owner) = self.job_owner(&stub).await? else {
                continue;
            };
            if owner.is_request(ns, name) && owner.generation == generation {
                ids.push(stub.id);
            }
        }
        for id in ids {
            self.stop_job(&id, false).await?;
        }
        Ok(())
    }

    /// Who a listed job belongs to, by its Meta: the list stub's when Nomad includes it, else
    /// the job's own (`GET /v1/job/:id`). `None` for a job without jobforge's Meta (not ours,
    /// whatever its ID says) or one gone meanwhile.
    async fn job_owner(
        &self,
        stub: &nomad::JobListStub,
    ) -> Result<Option<JobOwner>, ReconcileError> {
        if let Some(owner) = JobOwner::from_meta(&stub.meta) {
            return Ok(Some(owner));
        }
        Ok(self
            .deps
            .nomad
            .get_job(&stub.id)
            .await?
            .and_then(|job| JobOwner::from_meta(&job.meta)))
    }

    /// One sweep (issue 14): stops every live `jobforge-*` Nomad job whose request no longer
    /// exists or whose generation is not the request's current one, as told by the job's Meta
    /// (never by its ID alone). A late register by a deposed leader (or a crash between a
    /// register and the status write of a request deleted since) can so never leave a job
    /// running for good. Each stop is fenced ([`Reconciler::ensure_leader`]). Returns how many
    /// jobs it stopped.
    ///
    /// Errors: Nomad or Consul failed (the next sweep tries again); `NotLeader`.
    pub async fn sweep(&self) -> Result<usize, ReconcileError> {
        let jobs = self
            .deps
            .nomad
            .list_jobs(crate::sweep::JOB_ID_PREFIX)
            .await?;
        self.sweep_jobs(jobs).await
    }

    /// [`Reconciler::sweep`] over a listing of the jobs whose ID starts with
    /// [`crate::sweep::JOB_ID_PREFIX`] already read (the sweep loop's blocking job list).
    ///
    /// Errors: as [`Reconciler::sweep`].
    pub async fn sweep_jobs(
        &self,
        jobs: Vec<crate::nomad::JobListStub>,
    ) -> Result<usize, ReconcileError> {
        let mut generations: HashMap<(String, String), Option<u64>> = HashMap::new();
        let mut stopped = 0;
        for stub in jobs {
            if stub.stop || stub.status == "dead" {
                continue;
            }
            let Some(owner) = self.job_owner(&stub).await? else {
                continue;
            };
            // Only names a request could have: anything else was not rendered by a controller.
            if jobforge_schema::grammar::dns_label(&owner.namespace).is_err()
                || jobforge_schema::grammar::dns_label(&owner.name).is_err()
            {
                continue;
            }
            let k = (owner.namespace.clone(), owner.name.clone());
            let current = match generations.get(&k) {
                Some(g) => *g,
                None => {
                    let key = self.deps.keys.request_key(&k.0, &k.1);
                    let (_, pair) = self.deps.consul.kv_get(&key, KvQuery::default()).await?;
                    let g = pair.map(|p| p.modify_index);
                    generations.insert(k, g);
                    g
                }
            };
            if let Some(why) = owner.orphaned(current) {
                tracing::warn!(job = %stub.id, request = %format!("{}/{}", owner.namespace, owner.name), generation = owner.generation, why, "sweep: stopping an orphaned Nomad job");
                self.stop_job(&stub.id, false).await?;
                metrics::counter!("jobforge_sweep_stopped_jobs_total").increment(1);
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    /// Cleanup: the request is gone (or its TTL expired): purge its Nomad jobs, then delete its
    /// status and logs (and, for a TTL expiry, its spec at that generation) in one fenced
    /// transaction.
    async fn delete_request(
        &self,
        key: &RequestKey,
        status: Option<&BuildStatus>,
        why: Cleanup,
    ) -> Result<(), ReconcileError> {
        let spec_generation = match why {
            Cleanup::SpecGone => None,
            Cleanup::Expired { generation } => Some(generation),
        };
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let mut ids: Vec<String> = status
            .map(|s| {
                PipelinePhase::ALL
                    .iter()
                    .filter_map(|p| s.phases.get(*p).map(|r| r.nomad_job_id.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for stub in self
            .deps
            .nomad
            .list_jobs(&machine::request_job_prefix(ns, name))
            .await?
        {
            if ids.contains(&stub.id) {
                continue;
            }
            // `jobforge-a-b-c-…` could be namespace "a-b" or name "b-c": trust only the job's Meta.
            if self
                .job_owner(&stub)
                .await?
                .is_some_and(|o| o.is_request(ns, name))
            {
                ids.push(stub.id);
            }
        }
        for id in ids {
            self.stop_job(&id, true).await?;
        }
        let mut ops = vec![
            TxnOp::Delete {
                key: self.deps.keys.status_key(ns, name),
            },
            TxnOp::DeleteTree {
                key: self.deps.keys.logs_prefix(ns, name),
            },
        ];
        if let Some(g) = spec_generation {
            ops.push(TxnOp::DeleteCas {
                key: self.deps.keys.request_key(ns, name),
                index: g,
            });
        }
        self.record_phase(&self.deps.keys.status_key(ns, name), None);
        if let Ok(mut m) = self.written_logs.lock() {
            for p in PipelinePhase::ALL {
                m.remove(&self.deps.keys.logs_key(ns, name, p));
            }
        }
        match self.deps.fence.txn(&ops).await? {
            FencedTxn::Committed(_) => Ok(()),
            FencedTxn::NotLeader => Err(ReconcileError::NotLeader),
            // The spec changed since (a new generation): keep it; its reconcile starts over.
            FencedTxn::RolledBack(_) if spec_generation.is_some() => {
                match self.deps.fence.txn(&ops[..2]).await? {
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

/// The render configuration for a request of `namespace`: the namespace's priority cap applied
/// (`concurrency.namespaces.<ns>.max_priority`).
fn render_for<'a>(cfg: &'a EffectiveConfig, namespace: &str) -> std::borrow::Cow<'a, RenderConfig> {
    match cfg.limits.max_priority.get(namespace) {
        None => std::borrow::Cow::Borrowed(&cfg.render),
        Some(max) => {
            let mut r = cfg.render.clone();
            r.max_priority = i32::try_from(*max).ok();
            std::borrow::Cow::Owned(r)
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

/// Parses the stored spec; a document whose metadata disagrees with its key is invalid too, and
/// so is one that breaks the tenancy rules in force (a Vault path outside its namespace's prefix,
/// a Vault policy its namespace may not request: [`tenancy_problems`]). This is the one place a
/// request is judged before the machine sees it, so any problem ends it `InvalidSpec` before any
/// Nomad job is registered.
fn parse_spec(
    bytes: &[u8],
    ns: &str,
    name: &str,
    tenancy: &TenancyConfig,
) -> Result<BuildRequest, Vec<String>> {
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
    if let Err(p) = tenancy_problems(&req, tenancy) {
        problems.extend(p.iter().map(|x| x.to_string()));
    }
    if problems.is_empty() {
        Ok(req)
    } else {
        Err(problems)
    }
}

/// A change of phase worth a log line (issue 18, item 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PhaseTransition {
    /// The phase before, when the stored status described the same generation and attempt.
    from: Option<Phase>,
    /// The `Succeeded` condition's reason of the new status.
    reason: Option<Reason>,
}

/// Whether writing `new` over `old` changes the phase, the generation or the attempt (a first
/// status, a new generation, a retry, or a move to the next phase), and what to log about it;
/// `None` for writes within a phase (condition messages, log refreshes, webhook bookkeeping).
fn phase_transition(old: Option<&BuildStatus>, new: &BuildStatus) -> Option<PhaseTransition> {
    let same = old
        .filter(|o| o.observed_generation == new.observed_generation && o.attempt == new.attempt);
    if same.is_some_and(|o| o.phase == new.phase) {
        return None;
    }
    Some(PhaseTransition {
        from: same.map(|o| o.phase),
        reason: new.succeeded_condition().map(|c| c.reason),
    })
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

/// FNV-1a (64-bit), to recognise identical log tails without keeping them.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Step 6's rule: when to look again besides a watch event, given the decision's own
/// `requeue_after`, the job observed in step 2, whether that job is still the current one, and
/// whether step 4 registered a job. A running phase is looked at every [`RUNNING_LOG_REFRESH`]
/// (its log tail is refreshed); a job waiting for placement, gone, or just registered once more
/// after [`PLACEMENT_RECHECK`] (placement is decided by an evaluation, which the allocations
/// watch does not see when nothing is placed), unless Nomad already said why it cannot place it.
fn next_look(
    decided: Option<Duration>,
    job: &JobObservation,
    still_current: bool,
    registered: bool,
) -> Option<Duration> {
    let soon = match job {
        JobObservation::Running { .. } if still_current => Some(RUNNING_LOG_REFRESH),
        JobObservation::Pending {
            placement_failure: Some(_),
        } => None,
        JobObservation::Pending { .. } | JobObservation::NotFound => Some(PLACEMENT_RECHECK),
        _ if registered => Some(PLACEMENT_RECHECK),
        _ => None,
    };
    match (decided, soon) {
        (Some(d), Some(s)) => Some(d.min(s)),
        (d, s) => d.or(s),
    }
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
        let t = TenancyConfig::default();
        assert!(parse_spec(&doc("team-a", "app"), "team-a", "app", &t).is_ok());
        let e = parse_spec(&doc("team-a", "app"), "team-b", "other", &t).expect_err("mismatch");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("metadata.namespace:"), "{e:?}");
    }

    #[test]
    fn spec_naming_another_namespaces_vault_path_is_invalid_with_the_allowed_prefix() {
        let with = |path: &str| {
            let mut v: serde_json::Value = serde_json::from_slice(&doc("team-a", "app")).unwrap();
            v["spec"]["git_credentials_path"] = path.into();
            serde_json::to_vec(&v).unwrap()
        };
        let t = TenancyConfig::default();
        assert!(
            parse_spec(
                &with("secret/data/jobforge/team-a/git"),
                "team-a",
                "app",
                &t
            )
            .is_ok()
        );
        let e = parse_spec(
            &with("secret/data/jobforge/team-b/git"),
            "team-a",
            "app",
            &t,
        )
        .expect_err("outside team-a's prefix");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("spec.git_credentials_path:"), "{e:?}");
        assert!(
            e[0].contains("allowed: a path under secret/data/jobforge/team-a/"),
            "{e:?}"
        );
        // The operator's template is the rule, not the default.
        let custom = TenancyConfig {
            vault_path_prefix: "kv/data/ci/{namespace}/".into(),
            ..TenancyConfig::default()
        };
        assert!(parse_spec(&with("kv/data/ci/team-a/git"), "team-a", "app", &custom).is_ok());
        assert!(
            parse_spec(
                &with("secret/data/jobforge/team-a/git"),
                "team-a",
                "app",
                &custom
            )
            .is_err()
        );
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
    fn next_look_refreshes_running_logs_and_rechecks_placement_but_not_a_known_failure() {
        let running = JobObservation::Running {
            alloc_id: "a".into(),
            node: "n".into(),
            started_at: Utc::now(),
        };
        let unplaceable = JobObservation::Pending {
            placement_failure: Some("missing drivers".into()),
        };
        let waiting = JobObservation::Pending {
            placement_failure: None,
        };
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            next_look(hour, &running, true, false),
            Some(RUNNING_LOG_REFRESH)
        );
        // A running job that is no longer current is only looked at again after a registration.
        assert_eq!(next_look(hour, &running, false, false), hour);
        assert_eq!(
            next_look(None, &running, false, true),
            Some(PLACEMENT_RECHECK)
        );
        assert_eq!(next_look(None, &unplaceable, true, true), None);
        assert_eq!(
            next_look(None, &waiting, true, false),
            Some(PLACEMENT_RECHECK)
        );
        assert_eq!(
            next_look(None, &JobObservation::NotFound, true, false),
            Some(PLACEMENT_RECHECK)
        );
        assert_eq!(
            next_look(Some(Duration::ZERO), &waiting, true, false),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn observed_tail_joins_both_streams_and_markers_come_from_a_finished_tasks_stdout() {
        const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
        let finished = JobObservation::Finished {
            alloc_id: "a".into(),
            node: "n".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            exit_code: Some(0),
            failed: false,
            event_message: None,
        };
        let mut o = Observed {
            job: finished,
            stdout: Some(format!("::jobforge::commit={SHA}\n").into_bytes()),
            stderr: Some(b"Error: building at STEP \"RUN false\": exit status 1\n".to_vec()),
            nomad_unavailable: false,
        };
        assert_eq!(
            o.tail(),
            Some(
                format!("::jobforge::commit={SHA}\nError: building at STEP \"RUN false\": exit status 1\n")
                    .into_bytes()
            )
        );
        assert_eq!(o.observation().markers.commit_sha.as_deref(), Some(SHA));
        // The error line comes from both streams of a finished task (issue 18, item 1).
        assert_eq!(
            o.observation().error_line.as_deref(),
            Some("Error: building at STEP \"RUN false\": exit status 1")
        );
        o.job = JobObservation::NotFound;
        assert_eq!(o.observation().markers, Default::default());
        assert_eq!(o.observation().error_line, None);
        assert_eq!(Observed::default().tail(), None);
    }

    #[test]
    fn phase_transitions_are_phase_generation_or_attempt_changes() {
        let pending = BuildStatus {
            observed_generation: 3,
            attempt: 1,
            ..BuildStatus::default()
        };
        let t = phase_transition(None, &pending).expect("a first status");
        assert_eq!(t.from, None);
        assert_eq!(phase_transition(Some(&pending), &pending), None);
        let building = BuildStatus {
            phase: Phase::Building,
            ..pending.clone()
        };
        assert_eq!(
            phase_transition(Some(&pending), &building).map(|t| t.from),
            Some(Some(Phase::Pending))
        );
        let retry = BuildStatus {
            attempt: 2,
            ..pending.clone()
        };
        assert_eq!(
            phase_transition(Some(&building), &retry).map(|t| t.from),
            Some(None)
        );
        let newer = BuildStatus {
            observed_generation: 4,
            ..pending.clone()
        };
        assert!(phase_transition(Some(&pending), &newer).is_some());
    }

    #[test]
    fn junk_spec_yields_problems_not_a_panic() {
        let e =
            parse_spec(&[0xff, 0, 1, 2], "a", "b", &TenancyConfig::default()).expect_err("junk");
        assert!(!e.is_empty());
        let big = vec![b'x'; 500 * 1024];
        assert!(parse_spec(&big, "a", "b", &TenancyConfig::default()).is_err());
    }
}
