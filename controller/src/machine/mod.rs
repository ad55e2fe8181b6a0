//! The phase state machine: a pure function from what the controller knows about one request to
//! the status it should write and the effects it should perform. No I/O, no clock, no tokio: the
//! runtime supplies `now` and the [`Observation`], and performs the [`Effect`]s.
//!
//! # Protocol for the runtime (one reconcile)
//! 1. Read the spec (and its generation = the spec key's `ModifyIndex`) and the stored status.
//! 2. [`target`] names the Nomad job of the current phase, if any; observe it (read the job, its
//!    latest allocation or, without one, its evaluations, and [`observation_of`] says what they
//!    mean; the phase's stdout for [`parse_markers`]). If Nomad does not answer, set
//!    [`Observation::nomad_unavailable`].
//! 3. Call [`step`]. If the decision contains [`Effect::CheckSecrets`]
//!    ([`Decision::secrets_to_check`]), check those Vault paths and call [`step`] again with
//!    [`Observation::secrets_missing`] filled in (nothing else happened).
//! 4. Perform the job effects in order (`StopGeneration`, `DeregisterJob`, `RegisterJob`,
//!    `CaptureLogs`); they are idempotent (deterministic [`job_id()`]s), so a crash anywhere repeats
//!    them harmlessly. Then write [`Decision::status`] with the fenced CAS if
//!    [`Decision::status_changed`], with the `Webhook` effects' outbox records in the same
//!    transaction (their ID is recorded in the written status, so each transition emits its event
//!    once; delivery is at least once, `crate::webhook`), and perform `DeleteRequest`.
//! 5. Requeue after [`Decision::requeue_after`] if set; otherwise wait for a watch event.
//!
//! # Rules (`docs/consul-nomad-vault-semantics.md` § Controller, issue 5)
//! In order: a status of an older generation → stop that generation's jobs, start over; a terminal
//! status of this generation is absorbing (only TTL handling: [`Effect::DeleteRequest`] at
//! `completionTime + ttl_after_finished`); an invalid spec → `Failed`/`InvalidSpec` with every
//! problem, no job; `spec.cancel` → deregister, `Cancelled`; before the first job: Vault secret
//! paths checked (`SecretNotFound`, no job); superseded by a newer request of its
//! `concurrency_group` → deregister, `Cancelled`/`Superseded`; waiting for a build slot →
//! `Pending`/`Queued` with its position, no job; Nomad unreachable → keep the phase, condition reason
//! `NomadUnavailable`, retry; then the pipeline build → test (skipped without tests) → publish,
//! with deadlines (`build_timeout`, `test.timeout`, config's publish timeout) counted from the
//! phase's `startedAt`, retries (`spec.retries`, new job IDs per attempt) and placement failures
//! (`Unschedulable`, the job waits).
//!
//! The phase never moves backwards within a generation and attempt; `observedGeneration` always
//! equals the input generation; exactly one `Succeeded` condition exists, Unknown while running,
//! True on success, False on failure; every condition message names the next command to run.

mod explain;
mod job_id;
mod markers;
mod observe;
mod rules;
#[cfg(test)]
mod tests;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobforge_schema::{BuildSpec, BuildStatus, Phase, PipelinePhase, WebhookEvent};

pub use explain::{MAX_EXPLANATION_CHARS, error_line};
pub use job_id::{
    JobIdParts, MAX_JOB_ID_LEN, generation_job_prefix, job_id, parse_job_id, request_job_prefix,
};
pub use markers::{FailedCommand, Markers, parse_markers};
pub use observe::observation_of;
pub use rules::step;

/// Defaults the machine applies when a request does not say (from `<prefix>/config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// Build deadline when `spec.build_timeout` is absent (default 1 h).
    pub default_build_timeout: Duration,
    /// Test deadline when `spec.test.timeout` is absent (default 30 min).
    pub default_test_timeout: Duration,
    /// Publish deadline; requests cannot set it (default 30 min).
    pub publish_timeout: Duration,
    /// Upper bound applied to `spec.retries` (default 10, the schema's maximum).
    pub max_retries: u32,
    /// How long finished requests are kept when `spec.ttl_after_finished` is absent (default 7 days).
    pub default_ttl_after_finished: Duration,
    /// When to look again after Nomad did not answer (default 5 s; the queue's error backoff
    /// applies on top when the runtime reports the failure as an error).
    pub nomad_retry: Duration,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            default_build_timeout: Duration::from_secs(3600),
            default_test_timeout: Duration::from_secs(1800),
            publish_timeout: Duration::from_secs(1800),
            max_retries: 10,
            default_ttl_after_finished: Duration::from_secs(7 * 24 * 3600),
            nomad_retry: Duration::from_secs(5),
        }
    }
}

/// Everything [`step`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    /// Namespace of the request (a DNS label).
    pub namespace: &'a str,
    /// Name of the request (a DNS label).
    pub name: &'a str,
    /// Generation of the spec (its KV `ModifyIndex`).
    pub generation: u64,
    /// The spec, or every validation problem of the document (`Err`, one human-readable line per
    /// problem with its field path: the schema's `Problem`s rendered, plus the reconciler's own
    /// key/metadata mismatches, which are not schema problems).
    pub spec: Result<&'a BuildSpec, &'a [String]>,
    /// The stored status, possibly of an older generation; `None` when there is none.
    pub status: Option<&'a BuildStatus>,
    /// What the runtime learned this round.
    pub observation: &'a Observation,
    /// Defaults.
    pub config: &'a MachineConfig,
}

/// What the runtime learned this round about the current phase's Nomad job (the one [`target`]
/// names) and about Vault.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// State of the job [`target`] named (ignored when there is none).
    pub job: JobObservation,
    /// Markers parsed from that job's stdout ([`parse_markers`]); default when not read.
    pub markers: Markers,
    /// The line of a finished task's output (stdout and stderr tails) that states the error that
    /// ended it ([`error_line`]); `None` when not read or there is none.
    pub error_line: Option<String>,
    /// Result of the Vault check asked for by [`Effect::CheckSecrets`]: the paths that do not exist
    /// (empty = all present). `None` = not checked this round.
    pub secrets_missing: Option<Vec<String>>,
    /// Nomad did not answer (connection error, 5xx) while observing.
    pub nomad_unavailable: bool,
    /// The request has not started and waits for a build slot (`crate::queue::Slots`): the
    /// message of its `Queued` condition (position and what it waits for). `None` = it holds a
    /// slot (or needs none).
    pub queued: Option<String>,
    /// A newer request of the same `spec.concurrency_group` (this name) has started: an
    /// unfinished request ends `Cancelled` with reason `Superseded`.
    pub superseded_by: Option<String>,
}

/// State of one Nomad job, summarised from the job, its latest evaluation and its allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum JobObservation {
    /// No such job (never registered, or purged).
    #[default]
    NotFound,
    /// Registered, no allocation running yet.
    Pending {
        /// The evaluation's `FailedTGAllocs` summarised (for example
        /// `"missing drivers: 1 node filtered"`) when Nomad could not place it.
        placement_failure: Option<String>,
    },
    /// The task runs.
    Running {
        /// Allocation ID.
        alloc_id: String,
        /// Node name (or ID).
        node: String,
        /// When the task started.
        started_at: DateTime<Utc>,
    },
    /// The task ended.
    Finished {
        /// Allocation ID.
        alloc_id: String,
        /// Node name (or ID).
        node: String,
        /// When the task started.
        started_at: DateTime<Utc>,
        /// When the task ended.
        finished_at: DateTime<Utc>,
        /// Exit code, when the task ran at all.
        exit_code: Option<i32>,
        /// Nomad's `Failed` flag of the task state.
        failed: bool,
        /// The message of the last event that explains a task that did not run to its own exit
        /// (`Driver Failure`, `Setup Failure`, `Killed`, a failing `Killing`), if any.
        event_message: Option<String>,
    },
}

/// The job the runtime should observe: the current phase's, for the current attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTarget {
    /// Pipeline phase.
    pub phase: PipelinePhase,
    /// Attempt (1-based).
    pub attempt: u32,
    /// Its Nomad job ID (as recorded in the status).
    pub job_id: String,
}

/// Something the runtime must do. See the module docs for the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Register (idempotently) the Nomad job of `phase` for `attempt` under `job_id`.
    RegisterJob {
        /// Pipeline phase to render.
        phase: PipelinePhase,
        /// Attempt (1-based); part of the job ID after the first.
        attempt: u32,
        /// The deterministic [`job_id()`].
        job_id: String,
    },
    /// Stop the job (`DELETE /v1/job/<id>`, with `?purge=true` when `purge`).
    DeregisterJob {
        /// Nomad job ID.
        job_id: String,
        /// Purge it from Nomad's state too.
        purge: bool,
    },
    /// Stop every job of an older generation of this request: the listed IDs (known from its
    /// status) and any other job whose Meta `jobforge.request`/`jobforge.generation` match.
    StopGeneration {
        /// The older generation.
        generation: u64,
        /// Job IDs its status recorded.
        job_ids: Vec<String>,
    },
    /// Check that these Vault KV v2 paths exist, then step again with `secrets_missing`.
    CheckSecrets {
        /// Paths referenced by the spec, sorted and deduplicated.
        paths: Vec<String>,
    },
    /// Copy the last 64 KiB of the phase's stdout+stderr to `logs/<ns>/<name>/<phase>`.
    CaptureLogs {
        /// Pipeline phase.
        phase: PipelinePhase,
        /// Its Nomad job ID.
        job_id: String,
    },
    /// Deliver a webhook event (issue 8). `id` (`<event>:<generation>:<attempt>`, or
    /// `phase.<phase>:<generation>:<attempt>`) is already in the new status's
    /// `webhook.lastEvent`; its outbox record is written in the same transaction as that status
    /// (issue 16, `crate::webhook::outbox_ops`).
    Webhook {
        /// The event.
        event: WebhookEvent,
        /// Its identity.
        id: String,
    },
    /// TTL expired: purge every Nomad job of the request, delete its logs, status and spec keys.
    DeleteRequest,
}

/// What [`step`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The status to store (write it when [`Decision::status_changed`]).
    pub status: BuildStatus,
    /// Actions, in the order to perform them.
    pub effects: Vec<Effect>,
    /// Look again after this long even without a change (phase deadline, TTL, Nomad retry).
    pub requeue_after: Option<Duration>,
}

impl Decision {
    /// Whether [`Decision::status`] differs from the stored one (so it must be written).
    pub fn status_changed(&self, stored: Option<&BuildStatus>) -> bool {
        stored != Some(&self.status)
    }

    /// The Vault paths of an [`Effect::CheckSecrets`], if the decision asks for a check: the
    /// runtime checks them and steps again with [`Observation::secrets_missing`] filled in.
    pub fn secrets_to_check(&self) -> Option<&[String]> {
        self.effects.iter().find_map(|e| match e {
            Effect::CheckSecrets { paths } => Some(paths.as_slice()),
            _ => None,
        })
    }
}

/// The pipeline phase whose job is current in `status`, if any: the running phase's, or the build
/// job's while the request is `Pending` with a build record for the current attempt.
pub fn current_phase(status: &BuildStatus) -> Option<PipelinePhase> {
    match status.phase {
        Phase::Building => Some(PipelinePhase::Build),
        Phase::Testing => Some(PipelinePhase::Test),
        Phase::Publishing => Some(PipelinePhase::Publish),
        Phase::Pending => status
            .phases
            .build
            .as_ref()
            .filter(|r| r.attempt == status.attempt)
            .map(|_| PipelinePhase::Build),
        Phase::Succeeded | Phase::Failed | Phase::Cancelled => None,
    }
}

/// The Nomad job the runtime should observe before calling [`step`]: `None` when the stored
/// status is absent, of another generation, terminal, or before the first job.
pub fn target(generation: u64, status: Option<&BuildStatus>) -> Option<JobTarget> {
    let status = status.filter(|s| s.observed_generation == generation)?;
    let phase = current_phase(status)?;
    let record = status.phases.get(phase)?;
    Some(JobTarget {
        phase,
        attempt: record.attempt,
        job_id: record.nomad_job_id.clone(),
    })
}

/// Vault paths a spec references that must exist before its build job is created: git and
/// registry credentials and the test's secrets (not the webhook secret, which only affects
/// delivery). Sorted, deduplicated.
pub fn secret_paths(spec: &BuildSpec) -> Vec<String> {
    let mut paths: Vec<String> = spec
        .git_credentials_path
        .iter()
        .chain(spec.registry_credentials_path.iter())
        .cloned()
        .chain(
            spec.test
                .iter()
                .flat_map(|t| t.vault_secrets.iter().map(|s| s.path.clone())),
        )
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Identity of a webhook event: emitted once per transition (see [`Effect::Webhook`]), and the
/// last part of its delivery id (`crate::webhook::delivery_id`).
pub fn webhook_event_id(
    event: WebhookEvent,
    phase: Option<PipelinePhase>,
    generation: u64,
    attempt: u32,
) -> String {
    match (event, phase) {
        (WebhookEvent::Phase, Some(p)) => format!("phase.{}:{generation}:{attempt}", p.as_str()),
        _ => format!("{}:{generation}:{attempt}", webhook_event_name(event)),
    }
}

/// Lowercase name of an event, as in `spec.webhook.on` and the `X-Jobforge-Event` header.
pub fn webhook_event_name(event: WebhookEvent) -> &'static str {
    match event {
        WebhookEvent::Started => "started",
        WebhookEvent::Phase => "phase",
        WebhookEvent::Succeeded => "succeeded",
        WebhookEvent::Failed => "failed",
        WebhookEvent::Cancelled => "cancelled",
    }
}
