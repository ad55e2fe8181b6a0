//! Following the current phase's Nomad job: placement, running, deadlines, success (advance or
//! finish) and failure (retry or fail).

use std::time::Duration;

use jobforge_schema::status::CONDITION_SUCCEEDED;
use jobforge_schema::{
    BuildSpec, BuildStatus, ConditionStatus, ImageStatus, Phase, PhaseRecord, PipelinePhase,
    Reason, SourceStatus, WebhookEvent,
};

use super::{Ctx, add, failure_reason, rank, running_reason, to_std};
use crate::machine::{Effect, FailedCommand, JobObservation};

impl Ctx<'_, '_> {
    /// The current phase's job exists (or should): follow what Nomad reports.
    pub(super) fn drive(
        &mut self,
        status: &mut BuildStatus,
        spec: &BuildSpec,
        phase: PipelinePhase,
    ) {
        let Some(record) = status.phases.get(phase).cloned() else {
            // `current_phase` only returns phases with a record; be total anyway.
            self.register(status, phase);
            return;
        };
        let timeout = self.timeout_of(spec, phase);
        let obs = self.input.observation;
        // Without Nomad nothing can be observed or stopped; a passed deadline is enforced on
        // the first round Nomad answers again.
        if self.nomad_unavailable(status) {
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
                    self.effects.push(Effect::RegisterJob {
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
            JobObservation::Finished { .. } => self.finished(status, spec, phase, record),
        }
    }

    /// The current phase's task ended: record it, capture its logs, then advance or fail.
    fn finished(
        &mut self,
        status: &mut BuildStatus,
        spec: &BuildSpec,
        phase: PipelinePhase,
        mut record: PhaseRecord,
    ) {
        let obs = self.input.observation;
        let JobObservation::Finished {
            alloc_id,
            node,
            started_at,
            finished_at,
            exit_code,
            failed,
            event_message,
        } = &obs.job
        else {
            return;
        };
        record.alloc_id = Some(alloc_id.clone());
        record.node = Some(node.clone());
        record.started_at = Some(*started_at);
        record.finished_at = Some(*finished_at);
        record.exit_code = *exit_code;
        *status.phases.slot(phase) = Some(record.clone());
        self.effects.push(Effect::CaptureLogs {
            phase,
            job_id: record.nomad_job_id.clone(),
        });
        let ok = !*failed && exit_code.is_none_or(|c| c == 0);
        if ok {
            self.succeeded_phase(status, spec, phase);
            return;
        }
        let reason = match obs.markers.reason {
            Some(Reason::GitRevisionNotFound) if phase == PipelinePhase::Build => {
                Reason::GitRevisionNotFound
            }
            _ => failure_reason(phase),
        };
        // What ended the task: the tool's own error line from the output, else Nomad's
        // explaining event (a task that never ran, or was killed).
        let explanation = obs.error_line.as_ref().or(event_message.as_ref());
        let code = exit_code.map(|c| format!("exit code {c}"));
        let what = match (&code, explanation) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "the task failed".to_string(),
        };
        let failed_step = match obs.markers.failed_command {
            Some(_) if phase != PipelinePhase::Test => None,
            Some(FailedCommand::Command(n)) => Some(
                match spec
                    .test
                    .as_ref()
                    .and_then(|t| n.checked_sub(1).and_then(|i| t.commands.get(i)))
                {
                    Some(cmd) => format!("test command {n} ({cmd:?})"),
                    None => format!("test command {n}"),
                },
            ),
            Some(FailedCommand::EntryPoint) => Some("the image's entry point".to_string()),
            None => None,
        };
        let detail = if reason == Reason::GitRevisionNotFound {
            format!(
                "git_ref {:?} does not exist in {} ({what})",
                spec.git_ref, spec.repo_url
            )
        } else if let Some(step) = failed_step {
            format!("{step} failed with {what}")
        } else {
            format!("{phase} failed with {what}")
        };
        self.fail_or_retry(status, spec, phase, reason, detail);
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
        self.effects.push(Effect::DeregisterJob {
            job_id: record.nomad_job_id.clone(),
            purge: false,
        });
        self.effects.push(Effect::CaptureLogs {
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
        // Only the build phase resolves the commit: a test command printing
        // `::jobforge::commit=` must not change what was built (issue 14).
        if phase == PipelinePhase::Build
            && let Some(sha) = &markers.commit_sha
        {
            status.source = Some(SourceStatus {
                commit_sha: sha.clone(),
                base_images: markers
                    .base_images
                    .iter()
                    .map(|(name, digest)| jobforge_schema::BaseImage {
                        name: name.clone(),
                        digest: digest.clone(),
                    })
                    .collect(),
            });
        }
        let repo = format!(
            "{}/{}",
            spec.registry_url.trim_end_matches('/'),
            spec.image_name
        );
        // A digest belongs to the phase that reported it: the build's is the temporary image's,
        // which the final repository does not hold, so it is never `status.image` (issue 18,
        // item 5); only the end of publish sets that.
        if let Some(d) = &markers.digest
            && let Some(rec) = status.phases.slot(phase).as_mut()
        {
            rec.digest = Some(d.clone());
        }
        let next = match phase {
            PipelinePhase::Build if spec.has_tests() => Some(PipelinePhase::Test),
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
                let tags = spec.effective_tags();
                // Publish copies the temporary image's manifest unchanged, so the build's digest
                // stands in when publish did not report one.
                let digest = [PipelinePhase::Publish, PipelinePhase::Build]
                    .into_iter()
                    .find_map(|p| status.phases.get(p).and_then(|r| r.digest.clone()));
                let reference = match &digest {
                    Some(d) => format!("{repo}@{d}"),
                    None => format!("{repo}:{}", tags.first().map_or("", String::as_str)),
                };
                status.image = Some(ImageStatus {
                    reference: reference.clone(),
                    digest,
                    tags: tags.clone(),
                    ..ImageStatus::default()
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
}
