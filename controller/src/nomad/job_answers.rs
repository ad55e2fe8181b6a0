//! Wire types of the job endpoints: `POST /v1/jobs`, `GET /v1/job/:id`, `GET /v1/jobs`,
//! `GET /v1/job/:id/summary` (Nomad API docs, "Jobs"). Unknown fields are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::wire::null_default;

/// Answer of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    /// The evaluation created for the registration (empty for a periodic/parameterized job).
    #[serde(rename = "EvalID", default)]
    pub eval_id: String,
    /// Raft index of the evaluation.
    #[serde(default)]
    pub eval_create_index: u64,
    /// The job's new `JobModifyIndex` (use it for the next `EnforceIndex` update).
    #[serde(default)]
    pub job_modify_index: u64,
    /// Warnings about the job spec (deprecated fields, ...), newline-separated.
    #[serde(default, deserialize_with = "null_default")]
    pub warnings: String,
}

/// A job as read back with `GET /v1/job/:id` (the fields jobforge uses).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobInfo {
    /// Job ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `batch`, `service`, ...
    #[serde(rename = "Type", default)]
    pub type_: String,
    /// Namespace.
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    /// `pending` (no allocation running yet, or unplaceable), `running`, `dead` (all allocations
    /// terminal, or stopped). `dead` does not say whether the job succeeded.
    #[serde(default)]
    pub status: String,
    /// Free-form status detail.
    #[serde(default, deserialize_with = "null_default")]
    pub status_description: String,
    /// Whether the job was stopped (deregistered without purge).
    #[serde(default)]
    pub stop: bool,
    /// Job meta (`jobforge.request`, `jobforge.generation`, ...).
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Job version (bumped on every spec change).
    #[serde(default)]
    pub version: u64,
    /// Raft index of the job's creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of the last change of any kind (status included).
    #[serde(default)]
    pub modify_index: u64,
    /// Raft index of the last spec change (what `EnforceIndex` compares).
    #[serde(default)]
    pub job_modify_index: u64,
}

/// An entry of `GET /v1/jobs?prefix=`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobListStub {
    /// Job ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    /// `batch`, `service`, ...
    #[serde(rename = "Type", default)]
    pub type_: String,
    /// `pending`, `running`, `dead`.
    #[serde(default)]
    pub status: String,
    /// Status detail.
    #[serde(default, deserialize_with = "null_default")]
    pub status_description: String,
    /// Stopped.
    #[serde(default)]
    pub stop: bool,
    /// Job meta (present in Nomad ≥ 1.5 list stubs).
    #[serde(default, deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
    /// Creation index.
    #[serde(default)]
    pub create_index: u64,
    /// Last change index.
    #[serde(default)]
    pub modify_index: u64,
    /// Last spec change index.
    #[serde(default)]
    pub job_modify_index: u64,
}

/// Answer of `GET /v1/job/:id/summary`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobSummary {
    /// Job ID.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// Namespace.
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    /// Allocation counts per task group.
    #[serde(default, deserialize_with = "null_default")]
    pub summary: BTreeMap<String, TaskGroupSummary>,
    /// Creation index.
    #[serde(default)]
    pub create_index: u64,
    /// Last change index.
    #[serde(default)]
    pub modify_index: u64,
}

/// Allocation counts of one task group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroupSummary {
    /// Waiting for placement.
    #[serde(default)]
    pub queued: u64,
    /// Completed successfully.
    #[serde(default)]
    pub complete: u64,
    /// Failed.
    #[serde(default)]
    pub failed: u64,
    /// Running.
    #[serde(default)]
    pub running: u64,
    /// Placed, not running yet.
    #[serde(default)]
    pub starting: u64,
    /// Lost with their node.
    #[serde(default)]
    pub lost: u64,
    /// On a disconnected node.
    #[serde(default)]
    pub unknown: u64,
}
