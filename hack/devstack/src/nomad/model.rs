//! Records of the Nomad state store (jobs, evaluations, allocations, task states) and their JSON
//! shapes as Nomad's HTTP API returns them (`api/allocations.go`, `api/evaluations.go`).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::spec::JobSpec;

/// Nomad keeps the last 10 events of a task (`structs.TaskState.Events` is capped at 10).
pub const MAX_EVENTS: usize = 10;

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

fn rfc3339(t: &Option<DateTime<Utc>>) -> Value {
    match t {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::Nanos, true)),
        None => Value::Null,
    }
}

/// A registered job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Parsed spec.
    pub spec: Arc<JobSpec>,
    /// The submitted JSON.
    pub raw: Value,
    /// `pending`, `running`, `dead`.
    pub status: &'static str,
    /// Raft-style indexes.
    pub create_index: u64,
    /// Bumped on every change to the job (including its status).
    pub modify_index: u64,
    /// Bumped on every register.
    pub job_modify_index: u64,
    /// Version, 0 on first register.
    pub version: u64,
    /// Submit time, ns.
    pub submit_time: i64,
    /// Deregistered without purge.
    pub stop: bool,
    /// Allocation IDs, oldest first.
    pub allocs: Vec<String>,
    /// Evaluation IDs, oldest first.
    pub evals: Vec<String>,
}

impl JobRecord {
    /// `GET /v1/job/:id` body: the submitted job plus the server's fields.
    pub fn to_json(&self) -> Value {
        let mut v = self.raw.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("Status".into(), json!(self.status));
            o.insert("StatusDescription".into(), json!(""));
            o.insert("Stop".into(), json!(self.stop));
            o.insert("CreateIndex".into(), json!(self.create_index));
            o.insert("ModifyIndex".into(), json!(self.modify_index));
            o.insert("JobModifyIndex".into(), json!(self.job_modify_index));
            o.insert("Version".into(), json!(self.version));
            o.insert("SubmitTime".into(), json!(self.submit_time));
            o.insert("Namespace".into(), json!(self.namespace()));
            o.insert("Region".into(), json!(self.region()));
            o.entry("Name").or_insert(json!(self.spec.id));
            if self.spec.name.is_empty() {
                o.insert("Name".into(), json!(self.spec.id));
            }
            o.insert("Priority".into(), json!(self.spec.priority.unwrap_or(50)));
        }
        v
    }

    /// Namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        if self.spec.namespace.is_empty() {
            "default"
        } else {
            &self.spec.namespace
        }
    }

    fn region(&self) -> &str {
        if self.spec.region.is_empty() {
            "global"
        } else {
            &self.spec.region
        }
    }

    /// `GET /v1/jobs` stub.
    pub fn stub(&self, summary: Value) -> Value {
        json!({
            "ID": self.spec.id,
            "ParentID": "",
            "Name": if self.spec.name.is_empty() { &self.spec.id } else { &self.spec.name },
            "Namespace": self.namespace(),
            "Datacenters": self.spec.datacenters,
            "Type": self.spec.type_,
            "Priority": self.spec.priority.unwrap_or(50),
            "Periodic": false,
            "ParameterizedJob": false,
            "Stop": self.stop,
            "Status": self.status,
            "StatusDescription": "",
            "JobSummary": summary,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "JobModifyIndex": self.job_modify_index,
            "SubmitTime": self.submit_time,
        })
    }
}

/// An evaluation.
#[derive(Debug, Clone)]
pub struct EvalRecord {
    /// ID.
    pub id: String,
    /// Job ID.
    pub job_id: String,
    /// Namespace.
    pub namespace: String,
    /// Priority.
    pub priority: i64,
    /// Job type.
    pub type_: String,
    /// `job-register`, `job-deregister`, `queued-allocs`.
    pub triggered_by: &'static str,
    /// JobModifyIndex the eval was made for.
    pub job_modify_index: u64,
    /// `complete` or `blocked`.
    pub status: &'static str,
    /// Description.
    pub status_description: String,
    /// Placement failures per group (`AllocMetric`).
    pub failed_tg_allocs: BTreeMap<String, Value>,
    /// ID of the blocked eval this one created.
    pub blocked_eval: String,
    /// Previous eval (for a blocked eval).
    pub previous_eval: String,
    /// Queued allocations per group.
    pub queued: BTreeMap<String, u64>,
    /// Indexes.
    pub create_index: u64,
    /// Modify index.
    pub modify_index: u64,
    /// Creation time, ns.
    pub create_time: i64,
}

impl EvalRecord {
    /// `GET /v1/evaluation/:id` body.
    pub fn to_json(&self) -> Value {
        json!({
            "ID": self.id, "Namespace": self.namespace, "Priority": self.priority,
            "Type": self.type_, "TriggeredBy": self.triggered_by, "JobID": self.job_id,
            "JobModifyIndex": self.job_modify_index, "NodeID": "", "NodeModifyIndex": 0,
            "Status": self.status, "StatusDescription": self.status_description,
            "Wait": 0, "NextEval": "", "PreviousEval": self.previous_eval,
            "BlockedEval": self.blocked_eval,
            "FailedTGAllocs": if self.failed_tg_allocs.is_empty() { Value::Null } else { json!(self.failed_tg_allocs) },
            "ClassEligibility": null, "EscapedComputedClass": false,
            "QueuedAllocations": self.queued, "SnapshotIndex": self.create_index,
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
            "CreateTime": self.create_time, "ModifyTime": self.create_time,
        })
    }
}

/// One task event.
#[derive(Debug, Clone, Default)]
pub struct TaskEvent {
    /// `Received`, `Task Setup`, `Started`, `Terminated`, ...
    pub type_: &'static str,
    /// ns since epoch.
    pub time: i64,
    /// Exit code (Terminated).
    pub exit_code: i64,
    /// Signal (Terminated).
    pub signal: i64,
    /// Driver error text.
    pub driver_error: String,
    /// Human message.
    pub message: String,
    /// Kill timeout (ns) for Killing.
    pub kill_timeout: i64,
    /// Failure flag Nomad sets on fatal events.
    pub fails_task: bool,
    /// The docker driver saw the container OOM-killed (Terminated; `Details.oom_killed`).
    pub oom_killed: bool,
}

impl TaskEvent {
    /// An event of `type_` at now with `message`.
    pub fn new(type_: &'static str, message: impl Into<String>) -> TaskEvent {
        TaskEvent {
            type_,
            time: now_ns(),
            message: message.into(),
            ..Default::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut details = serde_json::Map::new();
        if self.type_ == "Terminated" {
            details.insert("exit_code".into(), json!(self.exit_code.to_string()));
            details.insert("signal".into(), json!(self.signal.to_string()));
            if self.oom_killed {
                details.insert("oom_killed".into(), json!("true"));
            }
        }
        if !self.driver_error.is_empty() {
            details.insert("driver_error".into(), json!(self.driver_error));
        }
        json!({
            "Type": self.type_, "Time": self.time, "DisplayMessage": self.message,
            "Message": self.message, "Details": details, "FailsTask": self.fails_task,
            "ExitCode": self.exit_code, "Signal": self.signal,
            "DriverError": self.driver_error, "KillTimeout": self.kill_timeout,
            "KillError": "", "KillReason": "", "SetupError": "", "DownloadError": "",
            "ValidationError": "", "RestartReason": "", "StartDelay": 0,
            "TaskSignal": "", "TaskSignalReason": "", "DiskLimit": 0, "FailedSibling": "",
            "VaultError": "", "DriverMessage": "", "GenericSource": "",
        })
    }
}

/// State of one task in an allocation.
#[derive(Debug, Clone)]
pub struct TaskStateRecord {
    /// `pending`, `running`, `dead`.
    pub state: &'static str,
    /// Dead with failure.
    pub failed: bool,
    /// Restarts so far.
    pub restarts: u64,
    /// Last start.
    pub started_at: Option<DateTime<Utc>>,
    /// Death.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last restart.
    pub last_restart: Option<DateTime<Utc>>,
    /// Last [`MAX_EVENTS`] events.
    pub events: VecDeque<TaskEvent>,
    /// PID of the running process, for tests.
    pub pid: Option<u32>,
}

impl Default for TaskStateRecord {
    fn default() -> Self {
        TaskStateRecord {
            state: "pending",
            failed: false,
            restarts: 0,
            started_at: None,
            finished_at: None,
            last_restart: None,
            events: VecDeque::new(),
            pid: None,
        }
    }
}

impl TaskStateRecord {
    /// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn push(&mut self, e: TaskEvent) {
        self.events.push_back(e);
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "State": self.state, "Failed": self.failed, "Restarts": self.restarts,
            "LastRestart": rfc3339(&self.last_restart), "StartedAt": rfc3339(&self.started_at),
            "FinishedAt": rfc3339(&self.finished_at),
            "Events": self.events.iter().map(TaskEvent::to_json).collect::<Vec<_>>(),
            "TaskHandle": null,
        })
    }
}

/// Resources allocated to a task: CPU (MHz) and memory (MB).
#[derive(Debug, Clone, Copy)]
pub struct TaskResources {
    /// MHz.
    pub cpu: i64,
    /// MB.
    pub memory_mb: i64,
}

/// An allocation.
#[derive(Debug, Clone)]
pub struct AllocRecord {
    /// ID.
    pub id: String,
    /// Eval that placed it.
    pub eval_id: String,
    /// `<job>.<group>[<n>]`.
    pub name: String,
    /// Node ID.
    pub node_id: String,
    /// Node name.
    pub node_name: String,
    /// Job ID.
    pub job_id: String,
    /// Namespace.
    pub namespace: String,
    /// The job as registered, for `GET /v1/allocation/:id`.
    pub job: Arc<Value>,
    /// Job version.
    pub job_version: u64,
    /// Task group.
    pub group: String,
    /// `run` or `stop`.
    pub desired_status: &'static str,
    /// Description of the desired status.
    pub desired_description: String,
    /// `pending`, `running`, `complete`, `failed`.
    pub client_status: &'static str,
    /// Description of the client status.
    pub client_description: String,
    /// Per task.
    pub task_states: BTreeMap<String, TaskStateRecord>,
    /// Per task.
    pub resources: BTreeMap<String, TaskResources>,
    /// Allocation directory.
    pub dir: PathBuf,
    /// Indexes.
    pub create_index: u64,
    /// Modify index.
    pub modify_index: u64,
    /// ns.
    pub create_time: i64,
    /// ns.
    pub modify_time: i64,
}

impl AllocRecord {
    /// Terminal as Nomad's `Allocation.TerminalStatus`: desired stop/evict or client
    /// complete/failed/lost.
    pub fn terminal(&self) -> bool {
        self.desired_status != "run" || matches!(self.client_status, "complete" | "failed" | "lost")
    }

    /// Client terminal (the runner finished).
    pub fn client_terminal(&self) -> bool {
        matches!(self.client_status, "complete" | "failed" | "lost")
    }

    /// Recomputes `ClientStatus` from task states (Nomad `getClientStatus`): any task failed →
    /// failed once all are dead; all dead → complete; any running → running; else pending.
    pub fn recompute_client_status(&mut self) {
        let states = self.task_states.values();
        let all_dead = self.task_states.values().all(|t| t.state == "dead");
        let any_failed = self.task_states.values().any(|t| t.failed);
        let any_running = states.clone().any(|t| t.state == "running");
        let (status, desc) = if all_dead && any_failed {
            ("failed", "Failed tasks")
        } else if all_dead {
            ("complete", "All tasks have completed")
        } else if any_running {
            ("running", "Tasks are running")
        } else {
            ("pending", "No tasks have started")
        };
        self.client_status = status;
        self.client_description = desc.into();
    }

    /// `GET /v1/allocation/:id` body (`with_job`) or list stub.
    pub fn to_json(&self, with_job: bool) -> Value {
        let tasks: serde_json::Map<String, Value> = self
            .resources
            .iter()
            .map(|(t, r)| {
                (
                    t.clone(),
                    json!({"Cpu": {"CpuShares": r.cpu, "ReservedCores": null},
                           "Memory": {"MemoryMB": r.memory_mb, "MemoryMaxMB": 0},
                           "Networks": null, "Devices": null}),
                )
            })
            .collect();
        let total_cpu: i64 = self.resources.values().map(|r| r.cpu).sum();
        let total_mem: i64 = self.resources.values().map(|r| r.memory_mb).sum();
        let states: serde_json::Map<String, Value> = self
            .task_states
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let mut v = json!({
            "ID": self.id, "EvalID": self.eval_id, "Name": self.name,
            "Namespace": self.namespace, "NodeID": self.node_id, "NodeName": self.node_name,
            "JobID": self.job_id, "JobVersion": self.job_version, "TaskGroup": self.group,
            "DesiredStatus": self.desired_status, "DesiredDescription": self.desired_description,
            "ClientStatus": self.client_status, "ClientDescription": self.client_description,
            "TaskStates": states, "FollowupEvalID": "", "RescheduleTracker": null,
            "AllocatedResources": {"Tasks": tasks, "Shared": {"DiskMB": 300}},
            "Resources": {"CPU": total_cpu, "MemoryMB": total_mem, "DiskMB": 300},
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
            "AllocModifyIndex": self.create_index,
            "CreateTime": self.create_time, "ModifyTime": self.modify_time,
        });
        if let Some(o) = v.as_object_mut().filter(|_| with_job) {
            o.insert("Job".into(), (*self.job).clone());
        }
        v
    }
}
