//! The transition rules of [`step`]; see the parent module for the protocol and rule order.
//! This file holds the entry and the rules before and around the pipeline (generations,
//! retention, validation, cancel, secrets, Nomad availability); [`pipeline`] follows a running
//! phase's job to its end.

mod pipeline;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobforge_schema::status::{CONDITION_SUCCEEDED, truncate_utf8};
use jobforge_schema::{
    BuildSpec, BuildStatus, ConditionStatus, Failure, Phase, PhaseRecord, PipelinePhase, Reason,
    WebhookEvent, WebhookStatus,
};

use super::{Decision, Effect, StepInput, current_phase, job_id, secret_paths, webhook_event_id};

/// Decides the next status and effects for one request. Pure and total: any input gives a
/// decision (an inconsistent one, such as an observation of a job that is not current, is
/// interpreted conservatively). A stored status of a *newer* generation than the input (a stale
/// spec read) is returned unchanged with no effects.
pub fn step(input: &StepInput<'_>, now: DateTime<Utc>) -> Decision {
    let mut ctx = Ctx {
        input,
        now,
        effects: Vec::new(),
        requeue_after: None,
    };
    let status = ctx.run();
    Decision {
        status,
        effects: ctx.effects,
        requeue_after: ctx.requeue_after,
    }
}

struct Ctx<'i, 'a> {
    input: &'i StepInput<'a>,
    now: DateTime<Utc>,
    effects: Vec<Effect>,
    requeue_after: Option<Duration>,
}

/// Order of phases for the "never backwards" rule.
pub(in crate::machine) fn rank(p: Phase) -> u8 {
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
            self.effects.push(Effect::StopGeneration {
                generation: old.observed_generation,
                job_ids,
            });
        }
        let mut status = match same {
            Some(s) => s.clone(),
            None => {
                let mut fresh = self.fresh(stored.and_then(|s| s.webhook.clone()));
                // `jobforge cancel` rewrites the spec, so a cancel arrives as a new generation:
                // the Cancelled status still tells what ran and since when (issue 18, item 13).
                if let (Ok(spec), Some(old)) = (self.input.spec, stored)
                    && spec.cancel
                    && !old.phase.is_terminal()
                {
                    fresh.phases = old.phases.clone();
                    fresh.start_time = old.start_time.or(fresh.start_time);
                    fresh.attempt = old.attempt.max(1);
                    fresh.source = old.source.clone();
                }
                fresh
            }
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
        if let Some(newer) = &self.input.observation.superseded_by {
            self.superseded(&mut status, newer);
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
            .and_then(|s| s.ttl_after_finished().ok().flatten())
            .unwrap_or(self.input.config.default_ttl_after_finished);
        let expiry = add(completed, ttl);
        if self.now >= expiry {
            self.effects.push(Effect::DeleteRequest);
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

    /// Terminal `InvalidSpec`. A spec is judged again on every reconcile, with the tenancy rules
    /// in force then, so an operator who tightens them can fail a request whose job already runs:
    /// that job is stopped, as on cancel.
    fn invalid(&mut self, status: &mut BuildStatus, problems: &[String]) {
        if let Some(r) = current_phase(status).and_then(|p| status.phases.get(p)) {
            self.effects.push(Effect::DeregisterJob {
                job_id: r.nomad_job_id.clone(),
                purge: false,
            });
        }
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
            self.effects.push(Effect::DeregisterJob {
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

    /// A newer request of the same `concurrency_group` started: stop this one's job, `Cancelled`
    /// with reason `Superseded` naming the newer request.
    fn superseded(&mut self, status: &mut BuildStatus, newer: &str) {
        if let Some(r) = current_phase(status).and_then(|p| status.phases.get(p)) {
            self.effects.push(Effect::DeregisterJob {
                job_id: r.nomad_job_id.clone(),
                purge: false,
            });
        }
        let group = self
            .spec()
            .and_then(|s| s.concurrency_group.clone())
            .unwrap_or_default();
        let msg = format!(
            "superseded by {newer} (newer request of concurrency group {group} in namespace {ns}); its Nomad jobs were stopped. Follow the newer one with `jobforge watch {newer} -n {ns}`",
            ns = self.ns()
        );
        self.terminal(status, Phase::Cancelled, Reason::Superseded, msg, None);
    }

    /// Before the first job of this attempt: check durations, wait for a build slot, check
    /// secrets and Nomad, then register build.
    fn start(&mut self, status: &mut BuildStatus, spec: &BuildSpec) {
        let problems = spec.duration_problems();
        if !problems.is_empty() {
            self.invalid(status, &problems);
            return;
        }
        if let Some(msg) = &self.input.observation.queued {
            // Woken by the slot table when a slot is granted; nothing to do until then.
            status.set_condition(
                CONDITION_SUCCEEDED,
                ConditionStatus::Unknown,
                Reason::Queued,
                format!("{msg}; follow with {}", self.cmd_watch()),
                self.now,
            );
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
                    self.effects.push(Effect::CheckSecrets { paths });
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
        self.effects.push(Effect::RegisterJob {
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
        self.requeue_after = Some(self.input.config.nomad_retry);
        true
    }

    /// The deadline of `phase`: what the spec sets ([`BuildSpec::phase_timeout`]), else the
    /// configured default.
    fn timeout_of(&self, spec: &BuildSpec, phase: PipelinePhase) -> Duration {
        let cfg = self.input.config;
        spec.phase_timeout(phase).unwrap_or(match phase {
            PipelinePhase::Build => cfg.default_build_timeout,
            PipelinePhase::Test => cfg.default_test_timeout,
            PipelinePhase::Publish => cfg.publish_timeout,
        })
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
        self.effects.push(Effect::Webhook { event, id });
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
