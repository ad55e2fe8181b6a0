//! The BuildStatus document: observed state, written only by the leader controller at
//! `<prefix>/status/<namespace>/<name>`, always with a fenced CAS.
//!
//! Field names are camelCase as in Kubernetes status objects; the `conditions` entries have the
//! `metav1.Condition` shape.

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::reason::Reason;

/// Observed state of one BuildRequest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    /// The generation (spec key `ModifyIndex`) this status describes.
    pub observed_generation: u64,
    /// Where the request is in its life.
    pub phase: Phase,
    /// `metav1.Condition`-shaped conditions; jobforge maintains one of type `Succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per pipeline phase: the Nomad job and what became of it.
    #[serde(default, skip_serializing_if = "PhaseRecords::is_empty")]
    pub phases: PhaseRecords,
    /// The published image: present only once publish succeeded (phase `Succeeded`). A request
    /// that did not publish (still running, failed, cancelled) has none; the temporary image the
    /// build pushed is never reported here (its digest is `phases.build.digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageStatus>,
    /// What was checked out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
    /// Pipeline attempt, 1-based; `retries` allows up to `retries + 1` attempts.
    #[serde(default)]
    pub attempt: u32,
    /// When the controller first acted on this generation (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// When the request became terminal (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// Why the request failed; present only in phase `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Webhook delivery bookkeeping (events go through a fenced outbox and are delivered at least
    /// once; see the controller's webhook docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
}

/// Life cycle of a request. `Succeeded`, `Failed` and `Cancelled` are terminal.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Phase {
    /// Accepted, no job running yet (or waiting for placement).
    #[default]
    Pending,
    /// The build job runs.
    Building,
    /// The test job runs.
    Testing,
    /// The publish job runs.
    Publishing,
    /// Every tag is published.
    Succeeded,
    /// Terminal failure; see `failure`.
    Failed,
    /// Stopped by `spec.cancel: true`.
    Cancelled,
}

impl Phase {
    /// Every phase, in pipeline order.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Building,
        Phase::Testing,
        Phase::Publishing,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Cancelled,
    ];

    /// Whether the request is finished (`Succeeded`, `Failed` or `Cancelled`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }

    /// The name as written in the document (`Building`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Building => "Building",
            Phase::Testing => "Testing",
            Phase::Publishing => "Publishing",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Cancelled => "Cancelled",
        }
    }

    /// Parses a phase name, case-insensitively (`building`, `Building`).
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three Nomad-job phases of the pipeline, in order. Each runs as one Nomad batch job with ID
/// `jobforge-<namespace>-<name>-<generation>-<phase>` (see the controller's job rendering).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PipelinePhase {
    /// Clone, `buildah bud`, push the temporary image.
    Build,
    /// Run the entry point and/or commands inside the temporary image.
    Test,
    /// Copy the temporary image to every final tag, then delete the temporary tag.
    Publish,
}

impl PipelinePhase {
    /// Every pipeline phase, in order.
    pub const ALL: [PipelinePhase; 3] = [
        PipelinePhase::Build,
        PipelinePhase::Test,
        PipelinePhase::Publish,
    ];

    /// Lowercase name used in job IDs, KV log keys and the CLI (`build`).
    pub fn as_str(self) -> &'static str {
        match self {
            PipelinePhase::Build => "build",
            PipelinePhase::Test => "test",
            PipelinePhase::Publish => "publish",
        }
    }

    /// Parses `build`, `test` or `publish` (case-insensitive).
    pub fn parse(s: &str) -> Option<PipelinePhase> {
        PipelinePhase::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    /// The request phase shown while this pipeline phase runs.
    pub fn running_phase(self) -> Phase {
        match self {
            PipelinePhase::Build => Phase::Building,
            PipelinePhase::Test => Phase::Testing,
            PipelinePhase::Publish => Phase::Publishing,
        }
    }
}

impl fmt::Display for PipelinePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of a condition, as in `metav1.Condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet (for `Succeeded`: still running).
    #[default]
    Unknown,
}

/// One condition (`metav1.Condition` shape). `lastTransitionTime` changes only when `status` changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, CamelCase; jobforge writes `Succeeded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable reason from the vocabulary of [`Reason`].
    pub reason: Reason,
    /// Human-readable message that names the next step; at most 32768 bytes.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339, UTC).
    pub last_transition_time: DateTime<Utc>,
    /// The generation this condition was computed for.
    pub observed_generation: u64,
}

/// The condition type jobforge maintains.
pub const CONDITION_SUCCEEDED: &str = "Succeeded";

/// What happened to one pipeline phase's Nomad job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRecord {
    /// Nomad job ID (`jobforge-<ns>-<name>-<generation>-<phase>`, with `-a<attempt>` after the first attempt).
    pub nomad_job_id: String,
    /// Allocation that ran it, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_id: Option<String>,
    /// Nomad node (name or ID) the allocation ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When the task started (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the task finished (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Exit code of the task, once terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Manifest digest `sha256:<64 hex>` the phase reported: for build, the temporary image's
    /// (which lives under the registry's temporary prefix and is not the published image);
    /// for publish, the published one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Pipeline attempt this record belongs to.
    #[serde(default)]
    pub attempt: u32,
}

/// Records of the three pipeline phases.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRecords {
    /// Build phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<PhaseRecord>,
    /// Test phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PhaseRecord>,
    /// Publish phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PhaseRecord>,
}

impl PhaseRecords {
    /// Whether no phase has a record.
    pub fn is_empty(&self) -> bool {
        self.build.is_none() && self.test.is_none() && self.publish.is_none()
    }

    /// The record of `phase`.
    pub fn get(&self, phase: PipelinePhase) -> Option<&PhaseRecord> {
        match phase {
            PipelinePhase::Build => self.build.as_ref(),
            PipelinePhase::Test => self.test.as_ref(),
            PipelinePhase::Publish => self.publish.as_ref(),
        }
    }

    /// The mutable slot of `phase`.
    pub fn slot(&mut self, phase: PipelinePhase) -> &mut Option<PhaseRecord> {
        match phase {
            PipelinePhase::Build => &mut self.build,
            PipelinePhase::Test => &mut self.test,
            PipelinePhase::Publish => &mut self.publish,
        }
    }
}

/// The image this request produced.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// `registry/path/name@sha256:…` once published.
    pub reference: String,
    /// Manifest digest `sha256:<64 hex>` from buildah's `--digestfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Tags published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The cosign signature image, `<repo>:sha256-<hex>.sig@<its manifest digest>`, when the
    /// controller signed the image (signing configured in `<prefix>/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The SLSA provenance attestation image, `<repo>:sha256-<hex>.att@<digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// Why the image is not signed although signing is configured (a tag that does not resolve
    /// to the reported digest, a Vault refusal); the image stays published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_error: Option<String>,
}

/// The source that was built.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// Full commit SHA that `git_ref` resolved to.
    pub commit_sha: String,
    /// The base image of every stage (and every external `COPY --from` image) as the build
    /// resolved it, read by the build script from the build's own image storage after the
    /// build (issue 20); the provenance's `resolvedDependencies`. Empty for a build of only
    /// `FROM scratch`, and in statuses written before it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_images: Vec<BaseImage>,
}

/// A base image the build used: the reference `FROM` resolved to and its manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseImage {
    /// The fully qualified reference buildah resolved (`registry/repo:tag`).
    pub name: String,
    /// Its manifest digest, `sha256:<64 lowercase hex>`.
    pub digest: String,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Pipeline phase that failed; absent for failures before any job (`InvalidSpec`, `SecretNotFound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PipelinePhase>,
    /// Reason from the vocabulary.
    pub reason: Reason,
    /// What happened and what to do next (for example the `jobforge logs` command to run).
    pub message: String,
}

/// Webhook delivery bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// Identity of the last event put into the outbox (`<event>:<generation>:<attempt>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<String>,
    /// When the last delivery succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// The event (`<event>:<generation>:<attempt>`) whose delivery succeeded last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_event: Option<String>,
    /// Why the delivery of [`WebhookStatus::last_error_event`] was given up (`destination not
    /// allowed`, `HTTP 404`, `timed out`, …; never the controller's own error text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The event whose delivery was given up last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_event: Option<String>,
}

impl BuildStatus {
    /// The `Succeeded` condition, if set.
    pub fn succeeded_condition(&self) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == CONDITION_SUCCEEDED)
    }

    /// Sets the condition of `type_`, keeping `lastTransitionTime` when the status does not change
    /// (`metav1.Condition` rule).
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
        now: DateTime<Utc>,
    ) {
        let generation = self.observed_generation;
        let mut message: String = message.into();
        truncate_utf8(&mut message, 32_768);
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason;
                c.message = message;
                c.observed_generation = generation;
            }
            None => self.conditions.push(Condition {
                type_: type_.to_string(),
                status,
                reason,
                message,
                last_transition_time: now,
                observed_generation: generation,
            }),
        }
    }
}

/// Truncates `s` to at most `max` bytes on a char boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_keeps_transition_time_when_status_unchanged() {
        let t0 = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap_or_default();
        let t1 = DateTime::<Utc>::from_timestamp(2_000, 0).unwrap_or_default();
        let mut s = BuildStatus::default();
        s.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::Unknown,
            Reason::Building,
            "b",
            t0,
        );
        s.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::Unknown,
            Reason::Testing,
            "t",
            t1,
        );
        let c = s.succeeded_condition().cloned();
        assert_eq!(c.as_ref().map(|c| c.last_transition_time), Some(t0));
        assert_eq!(c.as_ref().map(|c| c.reason), Some(Reason::Testing));
        s.set_condition(
            CONDITION_SUCCEEDED,
            ConditionStatus::True,
            Reason::Succeeded,
            "ok",
            t1,
        );
        assert_eq!(
            s.succeeded_condition().map(|c| c.last_transition_time),
            Some(t1)
        );
    }

    #[test]
    fn phase_parse_is_case_insensitive_and_terminal_set_is_right() {
        assert_eq!(Phase::parse("building"), Some(Phase::Building));
        assert_eq!(PipelinePhase::parse("TEST"), Some(PipelinePhase::Test));
        let terminal: Vec<_> = Phase::ALL.into_iter().filter(|p| p.is_terminal()).collect();
        assert_eq!(
            terminal,
            vec![Phase::Succeeded, Phase::Failed, Phase::Cancelled]
        );
    }

    #[test]
    fn truncate_utf8_respects_char_boundaries() {
        let mut s = "ééé".to_string();
        truncate_utf8(&mut s, 3);
        assert_eq!(s, "é");
    }
}
