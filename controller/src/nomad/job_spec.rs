//! Typed Nomad job specification: the subset jobforge renders, in the JSON shape of
//! `POST /v1/jobs` (`{"Job": {...}}`). Field names are Nomad's (PascalCase); durations are
//! nanoseconds, as in Nomad's JSON API. Optional fields are omitted when `None` so Nomad applies
//! its own defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Nanoseconds per second, for the duration fields of the job JSON.
pub const NS_PER_SEC: i64 = 1_000_000_000;

/// A Nomad job (`Job` object of the JSON API).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Job {
    /// Job ID: non-empty, no spaces or NUL. jobforge: `jobforge-<ns>-<name>-<generation>-<phase>`.
    #[serde(rename = "ID")]
    pub id: String,
    /// Display name (jobforge uses the ID).
    pub name: String,
    /// Always `batch` for jobforge.
    #[serde(rename = "Type")]
    pub type_: String,
    /// Nomad namespace; `None` = the client's configured namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Nomad region; `None` = the agent's region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Datacenters the job may run in (`["*"]` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
    /// Scheduling priority 1..=100 (Nomad default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Job-level constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Task groups; jobforge renders exactly one.
    pub task_groups: Vec<TaskGroup>,
    /// Meta: `jobforge.request`, `jobforge.generation`, `jobforge.phase`, `jobforge.attempt`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// A task group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroup {
    /// Group name (jobforge: the phase name).
    pub name: String,
    /// Number of allocations (jobforge: 1).
    pub count: i32,
    /// Group constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Restart policy; jobforge sets attempts 0 (the controller owns retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Reschedule policy; jobforge sets attempts 0 and unlimited false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reschedule_policy: Option<ReschedulePolicy>,
    /// Ephemeral disk (MB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_disk: Option<EphemeralDisk>,
    /// Tasks; jobforge renders one.
    pub tasks: Vec<Task>,
    /// Group meta.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// Nomad `RestartPolicy` (durations in ns).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// Restarts allowed within `Interval`.
    pub attempts: i32,
    /// Interval (ns).
    pub interval: i64,
    /// Delay between restarts (ns).
    pub delay: i64,
    /// `fail` or `delay`.
    pub mode: String,
}

/// Nomad `ReschedulePolicy` (durations in ns).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReschedulePolicy {
    /// Reschedule attempts within `Interval`.
    pub attempts: i32,
    /// Interval (ns).
    pub interval: i64,
    /// Unlimited rescheduling.
    pub unlimited: bool,
}

/// Nomad `EphemeralDisk`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralDisk {
    /// Size in MB.
    #[serde(rename = "SizeMB")]
    pub size_mb: i64,
}

/// A Nomad constraint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Constraint {
    /// Left side, for example `${attr.kernel.name}`.
    #[serde(rename = "LTarget")]
    pub l_target: String,
    /// Right side.
    #[serde(rename = "RTarget")]
    pub r_target: String,
    /// Operand (`=`, `!=`, `regexp`, `is_set`, ...).
    #[serde(rename = "Operand")]
    pub operand: String,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    /// Task name (jobforge: the phase name).
    pub name: String,
    /// Driver: `raw_exec`, `exec`, `docker`, ...
    pub driver: String,
    /// Driver config. raw_exec/exec: `{command, args}`; docker: `{image, command, args, ...}`.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Environment. User input reaches tasks only here or as argv elements.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Resources (CPU MHz, memory MB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Templates rendered before the task starts (Vault secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
    /// Vault integration (policies for the task's Vault token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<Vault>,
    /// Time between the kill signal and SIGKILL (ns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_timeout: Option<i64>,
    /// Log rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_config: Option<LogConfig>,
    /// Task constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Task meta.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// Task resources.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in MHz.
    #[serde(rename = "CPU")]
    pub cpu: i64,
    /// Memory in MB.
    #[serde(rename = "MemoryMB")]
    pub memory_mb: i64,
    /// Requested devices (for example `nvidia/gpu`).
    #[serde(rename = "Devices", default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<RequestedDevice>,
}

/// A device request of a task (`Resources.Devices[]`), for example `nvidia/gpu` × 1.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestedDevice {
    /// Device name: `<vendor>/<type>/<name>`, `<vendor>/<type>` or `<type>`.
    pub name: String,
    /// Number of instances.
    pub count: u64,
}

/// A Nomad template (consul-template syntax).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    /// Destination relative to the task dir, for example `secrets/git.env`.
    pub dest_path: String,
    /// Template text. User input never appears here unescaped.
    pub embedded_tmpl: String,
    /// `noop`, `restart`, `signal`.
    pub change_mode: String,
    /// Export the rendered `KEY=value` lines into the task environment.
    pub envvars: bool,
    /// File mode, octal string (`"0600"`).
    pub perms: String,
    /// Left delimiter; `{{` when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_delim: Option<String>,
    /// Right delimiter; `}}` when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right_delim: Option<String>,
}

/// Task Vault block.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vault {
    /// Policies of the task's token.
    pub policies: Vec<String>,
    /// Change mode on token renewal (`noop`).
    pub change_mode: String,
    /// Whether Nomad puts the token in the task's `VAULT_TOKEN` (Nomad's default: true). Always
    /// false here: a variable in the environment is one `${VAULT_TOKEN}` away from any
    /// interpolated value, and the templates read Vault with the token file (issue 14).
    pub env: bool,
}

/// Task log rotation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    /// Files kept per stream.
    pub max_files: i32,
    /// Size of each file (MB).
    #[serde(rename = "MaxFileSizeMB")]
    pub max_file_size_mb: i32,
}

/// Body of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterRequest {
    /// The job.
    pub job: Job,
    /// Register only if `JobModifyIndex` matches (0 = only if the job does not exist).
    pub enforce_index: bool,
    /// Expected modify index when `EnforceIndex`.
    pub job_modify_index: u64,
}
