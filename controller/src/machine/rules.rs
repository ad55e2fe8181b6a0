//! The transition rules of [`step`]; see the parent module for the protocol and rule order.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobforge_schema::status::{CONDITION_SUCCEEDED, truncate_utf8};
use jobforge_schema::{
    BuildSpec, BuildStatus, ConditionStatus, Failure, ImageStatus, Phase, PhaseRecord,
    PipelinePhase, Reason, SourceStatus, WebhookEvent, WebhookStatus,
};

use super::{
    Action, Decision, JobObservation, StepInput, current_phase, job_id, secret_paths,
    webhook_event_id,
};

/// Decides the next status and actions for one request. Pure and total: any input gives a
/// decision (an inconsistent one, such as an observation of a job that is not current, is
/// interpreted conservatively). A stored status of a *newer* generation than the input (a stale
/// spec read) is returned unchanged with no actions.
pub fn step(input: &StepInput<'_>, now: DateTime<Utc>) -> Decision {
    let mut ctx = Ctx {
        input,
        now,
        actions: Vec::new(),
        requeue_after: None,
    };
    let status = ctx.run();
    Decision {
        status,
        actions: ctx.actions,
        requeue_after: ctx.requeue_after,
    }
}

struct Ctx<'i, 'a> {
    input: &'i StepInput<'a>,
    now: DateTime<Utc>,
    actions: Vec<Action>,
    requeue_after: Option<Duration>,
}

/// Order of phases for the "never backwards" rule.
fn rank(p: Phase) -> u8 {
    match p {
        Phase::Pending => 0,
        Phase::Building => 1,
        Phase::Testing => 2,
        Phase::Publishing => 3,
        Phase::Succeeded | Phase::Failed | Phase::Cancelled => 4,
    }
}

fn to_std(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn parse_duration(field: &str, value: Option<&String>) -> Result<Option<Duration>, String> {
    match value {
        None => Ok(None),
        Some(v) => humantime::parse_duration(v)
            .map(Some)
            .map_err(|e| format!("{field}: {e} (a duration such as 30m or 1h30m)")),
    }
}

impl Ctx<'_, '_> {
    fn ns(&self) -> &str {
        self.input.namespace
    }

    fn name(&self) -> &str {
        self.input.name
    }

    fn cmd_watch(&self) -> String {
        format!("`jobforge watch {} -n {}`", self.name(), self.ns())
    }

    fn cmd_get(&self) -> String {
        format!("`jobforge get {} -n {}`", self.name(), self.ns())
    }

    fn cmd_logs(&self, phase: PipelinePhase) -> String {
        format!(
            "`jobforge logs {} -n {} --phase {}`",
            self.name(),
            self.ns(),
            phase.as_str()
        )
    }

    fn spec(&self) -> Option<&BuildSpec> {
        self.input.spec.ok()
    }

    fn run(&mut self) -> BuildStatus {
        let generation = self.input.generation;
        let stored = self.input.status;
        if let Some(s) = stored.filter(|s| s.observed_generation > generation) {
            return s.clone();
        }
        let same = stored.filter(|s| s.observed_generation == generation);
        if let Some(old) = stored.filter(|s| s.observed_generation < generation) {
            let job_ids = PipelinePhase::ALL
                .into_iter()
                .filter_map(|p| old.phases.get(p))
                .map(|r| r.nomad_job_id.clone())
                .collect();
            self.actions.push(Action::StopGeneration {
                generation: old.observed_generation,
                job_ids,
            });
        }
        let mut status = match same {
            Some(s) => s.clone(),
            None => self.fresh(stored.and_then(|s| s.webhook.clone())),
        };
        if status.phase.is_terminal() {
            self.retention(&mut status);
            return status;
        }
        let spec = match self.input.spec {
            Err(problems) => {
                self.invalid(&mut status, problems);
                return status;
            }
            Ok(spec) => spec,
        };
        if spec.cancel {
            self.cancel(&mut status);
            return status;
        }
        match current_phase(&status) {
            None => self.start(&mut status, spec),
            Some(phase) => self.drive(&mut status, spec, phase),
        }
        status
    }

    /// A new status for this generation: accepted, attempt 1, nothing run yet.
    fn fresh(&self, webhook: Option<WebhookStatus>) -> BuildStatus {
        let mut s = BuildStatus {
            observed_generation: self.input.generation,
            phase: Phase::Pending,
            attempt: 1,
            start_time: Some(self.now),
            webhook,
            ..BuildStatus::default()
        };
        let msg = format!("accepted; follow progress with {}", self.cmd_watch());
        s.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::Unknown,
            Reason::Pending,
            msg,
            self.now,
        );
        s
    }

    /// Terminal: absorbing; delete at `completionTime + ttl`.
    fn retention(&mut self, status: &mut BuildStatus) {
        let completed = *status.completion_time.get_or_insert(self.now);
        let ttl = self
            .spec()
            .and_then(|s| parse_duration("ttl_after_finished", s.ttl_after_finished.as_ref()).ok())
            .flatten()
            .unwrap_or(self.input.config.default_ttl_after_finished);
        let expiry = add(completed, ttl);
        if self.now >= expiry {
            self.actions.push(Action::DeleteRequest);
            self.requeue_after = None;
        } else {
            self.requeue_after = Some(to_std(expiry - self.now));
        }
    }

    fn terminal(
        &mut self,
        status: &mut BuildStatus,
        phase: Phase,
        reason: Reason,
        message: String,
        failed_phase: Option<PipelinePhase>,
    ) {
        let (cond, event) = match phase {
            Phase::Succeeded => (ConditionStatus::True, WebhookEvent::Succeeded),
            Phase::Cancelled => (ConditionStatus::False, WebhookEvent::Cancelled),
            _ => (ConditionStatus::False, WebhookEvent::Failed),
        };
        status.phase = phase;
        status.completion_time = Some(self.now);
        status.failure = (phase == Phase::Failed).then(|| {
            let mut message = message.clone();
            truncate_utf8(&mut message, 32_768);
            Failure {
                phase: failed_phase,
                reason,
                message,
            }
        });
        status.set_condition(CONDITION_SUCCEEDED, cond, reason, message, self.now);
        self.webhook(status, event, None);
        self.retention(status);
    }

    fn invalid(&mut self, status: &mut BuildStatus, problems: &[String]) {
        let list = if problems.is_empty() {
            "the document could not be read".to_string()
        } else {
            problems.join("; ")
        };
        let msg = format!(
            "the request is invalid ({} problem{}): {list}. Fix the document and submit it again with `jobforge submit FILE`",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        self.terminal(status, Phase::Failed, Reason::InvalidSpec, msg, None);
    }

    fn cancel(&mut self, status: &mut BuildStatus) {
        if let Some(r) = current_phase(status).and_then(|p| status.phases.get(p)) {
            self.actions.push(Action::DeregisterJob {
                job_id: r.nomad_job_id.clone(),
                purge: false,
            });
        }
        let msg = format!(
            "cancelled by spec.cancel; its Nomad jobs were stopped. Remove it with `jobforge delete {} -n {}`, or submit it again without cancel to rebuild",
            self.name(),
            self.ns()
        );
        self.terminal(status, Phase::Cancelled, Reason::Cancelled, msg, None);
    }

    /// Before the first job of this attempt: check durations, secrets and Nomad, then register build.
    fn start(&mut self, status: &mut BuildStatus, spec: &BuildSpec) {
        let problems: Vec<String> = [
            parse_duration("spec.build_timeout", spec.build_timeout.as_ref()).err(),
            parse_duration(
                "spec.test.timeout",
                spec.test.as_ref().and_then(|t| t.timeout.as_ref()),
            )
            .err(),
            parse_duration("spec.ttl_after_finished", spec.ttl_after_finished.as_ref()).err(),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            self.invalid(status, &problems);
            return;
        }
        let paths = secret_paths(spec);
        if !paths.is_empty() {
            match &self.input.observation.secrets_missing {
                None => {
                    let msg = format!(
                        "checking {} Vault secret path(s) before the build; follow with {}",
                        paths.len(),
                        self.cmd_watch()
                    );
                    status.set_condition(
                        CONDITION_SUCCEEDED,
                        ConditionStatus::Unknown,
                        Reason::Pending,
                        msg,
                        self.now,
                    );
                    self.actions.push(Action::CheckSecrets { paths });
                    return;
                }
                Some(missing) if !missing.is_empty() => {
                    let msg = format!(
                        "Vault secret path(s) not found: {}. Create them in Vault (or fix the paths in the spec) and submit again with `jobforge submit FILE`; no job was created",
                        missing.join(", ")
                    );
                    self.terminal(status, Phase::Failed, Reason::SecretNotFound, msg, None);
                    return;
                }
                Some(_) => {}
            }
        }
        if self.nomad_unavailable(status) {
            return;
        }
        self.register(status, PipelinePhase::Build);
        if status.attempt <= 1 {
            self.webhook(status, WebhookEvent::Started, None);
        }
    }

    /// Registers `phase` for the current attempt and records its job.
    fn register(&mut self, status: &mut BuildStatus, phase: PipelinePhase) {
        let attempt = status.attempt.max(1);
        let id = job_id(
            self.ns(),
            self.name(),
            self.input.generation,
            phase,
            attempt,
        );
        *status.phases.slot(phase) = Some(PhaseRecord {
            nomad_job_id: id.clone(),
            attempt,
            ..PhaseRecord::default()
        });
        self.actions.push(Action::RegisterJob {
            phase,
            attempt,
            job_id: id,
        });
    }

    /// Sets `NomadUnavailable` and schedules a retry when Nomad did not answer.
    fn nomad_unavailable(&mut self, status: &mut BuildStatus) -> bool {
        if !self.input.observation.nomad_unavailable {
            return false;
        }
        let msg = format!(
            "Nomad did not answer; the controller keeps retrying (check NOMAD_ADDR and the Nomad servers). Status: {}",
            self.cmd_get()
        );
        status.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::Unknown,
            Reason::NomadUnavailable,
            msg,
            self.now,
        );
        self.requeue_after = Some(
            self.requeue_after
                .map_or(self.input.config.nomad_retry, |d| {
                    d.min(self.input.config.nomad_retry)
                }),
        );
        true
    }

    fn timeout_of(&self, spec: &BuildSpec, phase: PipelinePhase) -> Duration {
        let cfg = self.input.config;
        match phase {
            PipelinePhase::Build => parse_duration("", spec.build_timeout.as_ref())
                .ok()
                .flatten()
                .unwrap_or(cfg.default_build_timeout),
            PipelinePhase::Test => {
                parse_duration("", spec.test.as_ref().and_then(|t| t.timeout.as_ref()))
                    .ok()
                    .flatten()
                    .unwrap_or(cfg.default_test_timeout)
            }
            PipelinePhase::Publish => cfg.publish_timeout,
        }
    }

    /// The current phase's job exists (or should): follow what Nomad reports.
    fn drive(&mut self, status: &mut BuildStatus, spec: &BuildSpec, phase: PipelinePhase) {
        let Some(record) = status.phases.get(phase).cloned() else {
            // `current_phase` only returns phases with a record; be total anyway.
            self.register(status, phase);
            return;
        };
        let timeout = self.timeout_of(spec, phase);
        let obs = self.input.observation;
        if obs.nomad_unavailable {
            if let Some(started) = record.started_at {
                self.requeue_after = Some(to_std(add(started, timeout) - self.now));
            }
            self.nomad_unavailable(status);
            return;
        }
        let mut record = record;
        match &obs.job {
            JobObservation::NotFound | JobObservation::Pending { .. } => {
                if self.deadline_passed(status, spec, phase, &record, timeout) {
                    return;
                }
                if obs.job == JobObservation::NotFound {
                    // Registered in a decision whose side effect did not happen (crash, failed
                    // call), or removed behind our back: register again (idempotent ID).
                    self.actions.push(Action::RegisterJob {
                        phase,
                        attempt: record.attempt,
                        job_id: record.nomad_job_id.clone(),
                    });
                }
                let placement = match &obs.job {
                    JobObservation::Pending {
                        placement_failure: Some(p),
                    } => Some(p.clone()),
                    _ => None,
                };
                self.waiting(status, phase, placement);
            }
            JobObservation::Running {
                alloc_id,
                node,
                started_at,
            } => {
                record.alloc_id = Some(alloc_id.clone());
                record.node = Some(node.clone());
                record.started_at = Some(*started_at);
                *status.phases.slot(phase) = Some(record.clone());
                let running = phase.running_phase();
                if rank(running) > rank(status.phase) {
                    status.phase = running;
                }
                let msg = format!(
                    "{phase} runs on node {node} (allocation {alloc_id}); follow its output with `jobforge logs {} -n {} --phase {phase} --follow`",
                    self.name(),
                    self.ns(),
                );
                status.set_condition(
                    CONDITION_SUCCEEDED,
                    ConditionStatus::Unknown,
                    running_reason(phase),
                    msg,
                    self.now,
                );
                self.deadline_passed(status, spec, phase, &record, timeout);
            }
            JobObservation::Finished {
                alloc_id,
                node,
                started_at,
                finished_at,
                exit_code,
                failed,
                event_message,
            } => {
                record.alloc_id = Some(alloc_id.clone());
                record.node = Some(node.clone());
                record.started_at = Some(*started_at);
                record.finished_at = Some(*finished_at);
                record.exit_code = *exit_code;
                *status.phases.slot(phase) = Some(record.clone());
                self.actions.push(Action::CaptureLogs {
                    phase,
                    job_id: record.nomad_job_id.clone(),
                });
                let ok = !*failed && exit_code.is_none_or(|c| c == 0);
                if ok {
                    self.succeeded_phase(status, spec, phase);
                } else {
                    let reason = match obs.markers.reason {
                        Some(Reason::GitRevisionNotFound) if phase == PipelinePhase::Build => {
                            Reason::GitRevisionNotFound
                        }
                        _ => failure_reason(phase),
                    };
                    let what = match (exit_code, event_message) {
                        (Some(c), Some(m)) => format!("exit code {c}: {m}"),
                        (Some(c), None) => format!("exit code {c}"),
                        (None, Some(m)) => m.clone(),
                        (None, None) => "the task failed".to_string(),
                    };
                    let detail = if reason == Reason::GitRevisionNotFound {
                        format!(
                            "git_ref {:?} does not exist in {} ({what})",
                            spec.git_ref, spec.repo_url
                        )
                    } else {
                        format!("{phase} failed with {what}")
                    };
                    self.fail_or_retry(status, spec, phase, reason, detail);
                }
            }
        }
    }

    /// Condition while the job waits for an allocation.
    fn waiting(
        &mut self,
        status: &mut BuildStatus,
        phase: PipelinePhase,
        placement: Option<String>,
    ) {
        match placement {
            Some(why) => {
                let msg = format!(
                    "Nomad cannot place the {phase} job yet: {why}. It waits for capacity; check the Nomad clients' drivers and resources, or cancel with `jobforge cancel {} -n {}`",
                    self.name(),
                    self.ns()
                );
                status.set_condition(
                    CONDITION_SUCCEEDED,
                    ConditionStatus::Unknown,
                    Reason::Unschedulable,
                    msg,
                    self.now,
                );
            }
            None => {
                // Keep an informative reason (RetryScheduled, a phase's) unless it was a transient one.
                let transient = status.succeeded_condition().is_none_or(|c| {
                    matches!(c.reason, Reason::Unschedulable | Reason::NomadUnavailable)
                });
                if transient {
                    let reason = if status.phase == Phase::Pending {
                        Reason::Pending
                    } else {
                        running_reason(phase)
                    };
                    let msg = format!(
                        "the {phase} job is registered and waits for an allocation; follow with {}",
                        self.cmd_watch()
                    );
                    status.set_condition(
                        CONDITION_SUCCEEDED,
                        ConditionStatus::Unknown,
                        reason,
                        msg,
                        self.now,
                    );
                }
            }
        }
    }

    /// Enforces the phase deadline from its `startedAt`; returns whether it passed (and acted).
    fn deadline_passed(
        &mut self,
        status: &mut BuildStatus,
        spec: &BuildSpec,
        phase: PipelinePhase,
        record: &PhaseRecord,
        timeout: Duration,
    ) -> bool {
        let Some(started) = record.started_at else {
            return false;
        };
        let deadline = add(started, timeout);
        if self.now < deadline {
            self.requeue_after = Some(to_std(deadline - self.now));
            return false;
        }
        self.actions.push(Action::DeregisterJob {
            job_id: record.nomad_job_id.clone(),
            purge: false,
        });
        self.actions.push(Action::CaptureLogs {
            phase,
            job_id: record.nomad_job_id.clone(),
        });
        let detail = format!(
            "{phase} exceeded its deadline of {} and was stopped",
            humantime::format_duration(timeout)
        );
        self.fail_or_retry(status, spec, phase, Reason::Timeout, detail);
        true
    }

    /// A phase's job succeeded: advance to the next phase, or finish.
    fn succeeded_phase(
        &mut self,
        status: &mut BuildStatus,
        spec: &BuildSpec,
        phase: PipelinePhase,
    ) {
        let markers = &self.input.observation.markers;
        if let Some(sha) = &markers.commit_sha {
            status.source = Some(SourceStatus {
                commit_sha: sha.clone(),
            });
        }
        let repo = format!(
            "{}/{}",
            spec.registry_url.trim_end_matches('/'),
            spec.image_name
        );
        if let Some(d) = &markers.digest {
            status.image = Some(ImageStatus {
                reference: format!("{repo}@{d}"),
                digest: Some(d.clone()),
                tags: Vec::new(),
            });
        }
        let has_tests = spec.test.as_ref().is_some_and(|t| t.has_tests());
        let next = match phase {
            PipelinePhase::Build if has_tests => Some(PipelinePhase::Test),
            PipelinePhase::Build | PipelinePhase::Test => Some(PipelinePhase::Publish),
            PipelinePhase::Publish => None,
        };
        match next {
            Some(next) => {
                self.register(status, next);
                status.phase = next.running_phase();
                let msg = format!(
                    "{phase} succeeded; the {next} job is registered. Follow with {}",
                    self.cmd_logs(next)
                );
                status.set_condition(
                    CONDITION_SUCCEEDED,
                    ConditionStatus::Unknown,
                    running_reason(next),
                    msg,
                    self.now,
                );
                self.webhook(status, WebhookEvent::Phase, Some(next));
            }
            None => {
                let tags = if spec.image_tags.is_empty() {
                    vec!["latest".to_string()]
                } else {
                    spec.image_tags.clone()
                };
                let digest = status.image.as_ref().and_then(|i| i.digest.clone());
                let reference = match &digest {
                    Some(d) => format!("{repo}@{d}"),
                    None => format!("{repo}:{}", tags.first().map_or("latest", String::as_str)),
                };
                status.image = Some(ImageStatus {
                    reference: reference.clone(),
                    digest,
                    tags: tags.clone(),
                });
                let msg = format!(
                    "published {reference} as {}; pull it, or see details with {}",
                    tags.join(", "),
                    self.cmd_get()
                );
                self.terminal(status, Phase::Succeeded, Reason::Succeeded, msg, None);
            }
        }
    }

    /// A phase failed: start the next attempt at build if `retries` allow, else fail.
    fn fail_or_retry(
        &mut self,
        status: &mut BuildStatus,
        spec: &BuildSpec,
        phase: PipelinePhase,
        reason: Reason,
        detail: String,
    ) {
        let retries = spec.retries.min(self.input.config.max_retries);
        let attempts = retries.saturating_add(1);
        let attempt = status.attempt.max(1);
        if reason.is_retryable_failure() && attempt < attempts {
            let next = attempt + 1;
            status.attempt = next;
            status.phase = Phase::Pending;
            status.phases = Default::default();
            status.image = None;
            status.source = None;
            self.register(status, PipelinePhase::Build);
            // A retry restarts the clock of its own phases; no old deadline applies.
            self.requeue_after = None;
            let msg = format!(
                "attempt {attempt} of {attempts} failed ({reason}: {detail}); attempt {next} starts at build. Earlier output: {}; follow with {}",
                self.cmd_logs(phase),
                self.cmd_watch()
            );
            status.set_condition(
                CONDITION_SUCCEEDED,
                ConditionStatus::Unknown,
                Reason::RetryScheduled,
                msg,
                self.now,
            );
        } else {
            self.requeue_after = None;
            let msg = format!(
                "{detail} (attempt {attempt} of {attempts}). See the output with {}",
                self.cmd_logs(phase)
            );
            self.terminal(status, Phase::Failed, reason, msg, Some(phase));
        }
    }

    /// Emits a webhook event if the spec subscribes to it, recording its ID in the status.
    fn webhook(
        &mut self,
        status: &mut BuildStatus,
        event: WebhookEvent,
        phase: Option<PipelinePhase>,
    ) {
        let Some(hook) = self.spec().and_then(|s| s.webhook.as_ref()) else {
            return;
        };
        let subscribed = if hook.on.is_empty() {
            matches!(event, WebhookEvent::Succeeded | WebhookEvent::Failed)
        } else {
            hook.on.contains(&event)
        };
        if !subscribed {
            return;
        }
        let id = webhook_event_id(event, phase, self.input.generation, status.attempt.max(1));
        let book = status.webhook.get_or_insert_with(WebhookStatus::default);
        if book.last_event.as_deref() == Some(id.as_str()) {
            return;
        }
        book.last_event = Some(id.clone());
        book.last_error = None;
        self.actions.push(Action::Webhook { event, id });
    }
}

fn running_reason(phase: PipelinePhase) -> Reason {
    match phase {
        PipelinePhase::Build => Reason::Building,
        PipelinePhase::Test => Reason::Testing,
        PipelinePhase::Publish => Reason::Publishing,
    }
}

fn failure_reason(phase: PipelinePhase) -> Reason {
    match phase {
        PipelinePhase::Build => Reason::BuildFailed,
        PipelinePhase::Test => Reason::TestFailed,
        PipelinePhase::Publish => Reason::PublishFailed,
    }
}
