//! Wire types of allocations: `GET /v1/job/:id/allocations` (stubs) and `GET /v1/allocation/:id`
//! (Nomad API docs, "Allocations"). Unknown fields are ignored; Go `null` collections read as
//! empty; Go zero times read as `None`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::wire::{go_time, null_default};

/// An allocation as listed by `GET /v1/job/:id/allocations`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocationStub {
    /// Allocation ID (UUID).
    #[serde(rename = "ID")]
    pub id: String,
    /// Evaluation that placed it.
    #[serde(rename = "EvalID", default)]
    pub eval_id: String,
    /// `<job>.<group>[<index>]`.
    #[serde(default)]
    pub name: String,
    /// Node ID.
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// Node name.
    #[serde(default)]
    pub node_name: String,
    /// Job ID.
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    /// Job version it runs.
    #[serde(default)]
    pub job_version: u64,
    /// Task group.
    #[serde(default)]
    pub task_group: String,
    /// What the scheduler wants: `run`, `stop`, `evict`.
    #[serde(default)]
    pub desired_status: String,
    /// Why.
    #[serde(default, deserialize_with = "null_default")]
    pub desired_description: String,
    /// What the client reports: `pending`, `running`, `complete`, `failed`, `lost`, `unknown`.
    #[serde(default)]
    pub client_status: String,
    /// Client detail.
    #[serde(default, deserialize_with = "null_default")]
    pub client_description: String,
    /// Per-task state.
    #[serde(default, deserialize_with = "null_default")]
    pub task_states: BTreeMap<String, TaskState>,
    /// Creation index.
    #[serde(default)]
    pub create_index: u64,
    /// Last change index.
    #[serde(default)]
    pub modify_index: u64,
    /// Creation time (ns since the Unix epoch).
    #[serde(default)]
    pub create_time: i64,
    /// Last change time (ns since the Unix epoch).
    #[serde(default)]
    pub modify_time: i64,
}

/// A full allocation from `GET /v1/allocation/:id` (the fields jobforge uses; the embedded job
/// and resources are ignored).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Allocation {
    /// Allocation ID (UUID).
    #[serde(rename = "ID")]
    pub id: String,
    /// Namespace.
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    /// Evaluation that placed it.
    #[serde(rename = "EvalID", default)]
    pub eval_id: String,
    /// `<job>.<group>[<index>]`.
    #[serde(default)]
    pub name: String,
    /// Node ID.
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// Node name.
    #[serde(default)]
    pub node_name: String,
    /// Job ID.
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    /// Task group.
    #[serde(default)]
    pub task_group: String,
    /// `run`, `stop`, `evict`.
    #[serde(default)]
    pub desired_status: String,
    /// Why.
    #[serde(default, deserialize_with = "null_default")]
    pub desired_description: String,
    /// `pending`, `running`, `complete`, `failed`, `lost`, `unknown`.
    #[serde(default)]
    pub client_status: String,
    /// Client detail.
    #[serde(default, deserialize_with = "null_default")]
    pub client_description: String,
    /// Per-task state.
    #[serde(default, deserialize_with = "null_default")]
    pub task_states: BTreeMap<String, TaskState>,
    /// Creation index.
    #[serde(default)]
    pub create_index: u64,
    /// Last change index.
    #[serde(default)]
    pub modify_index: u64,
    /// Creation time (ns since the Unix epoch).
    #[serde(default)]
    pub create_time: i64,
    /// Last change time (ns since the Unix epoch).
    #[serde(default)]
    pub modify_time: i64,
}

impl Allocation {
    /// Whether the client reports a terminal state (`complete`, `failed`, `lost`).
    pub fn is_terminal(&self) -> bool {
        is_terminal_client_status(&self.client_status)
    }
}

impl AllocationStub {
    /// Whether the client reports a terminal state (`complete`, `failed`, `lost`).
    pub fn is_terminal(&self) -> bool {
        is_terminal_client_status(&self.client_status)
    }
}

fn is_terminal_client_status(s: &str) -> bool {
    matches!(s, "complete" | "failed" | "lost")
}

/// State of one task of an allocation.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskState {
    /// `pending`, `running`, `dead`.
    #[serde(default)]
    pub state: String,
    /// Whether the task failed (meaningful once `dead`).
    #[serde(default)]
    pub failed: bool,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u64,
    /// Last restart time.
    #[serde(default, deserialize_with = "go_time")]
    pub last_restart: Option<DateTime<Utc>>,
    /// When the task first started; `None` if it never did.
    #[serde(default, deserialize_with = "go_time")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the task finished; `None` while it has not.
    #[serde(default, deserialize_with = "go_time")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The last events (Nomad keeps at most 10), oldest first.
    #[serde(default, deserialize_with = "null_default")]
    pub events: Vec<TaskEvent>,
}

impl TaskState {
    /// The exit code of the last `Terminated` event, if any.
    pub fn exit_code(&self) -> Option<i64> {
        self.events
            .iter()
            .rev()
            .find(|e| e.type_ == event_type::TERMINATED)
            .map(|e| e.exit_code)
    }
}

/// Task event types jobforge interprets (Nomad `structs.TaskEvent*` constants).
pub mod event_type {
    /// The client received the allocation.
    pub const RECEIVED: &str = "Received";
    /// Task directory, templates, artifacts being prepared.
    pub const TASK_SETUP: &str = "Task Setup";
    /// The driver started the task.
    pub const STARTED: &str = "Started";
    /// The task exited (`ExitCode`, `Signal`).
    pub const TERMINATED: &str = "Terminated";
    /// The client is killing the task.
    pub const KILLING: &str = "Killing";
    /// The task was killed.
    pub const KILLED: &str = "Killed";
    /// The driver failed to start the task (`DriverError`).
    pub const DRIVER_FAILURE: &str = "Driver Failure";
    /// The restart policy gave up.
    pub const NOT_RESTARTING: &str = "Not Restarting";
    /// Setup failed (`SetupError`), for example a template that cannot render.
    pub const SETUP_FAILURE: &str = "Setup Failure";
}

/// One task event.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskEvent {
    /// Event type, see [`event_type`].
    #[serde(rename = "Type", default)]
    pub type_: String,
    /// When (ns since the Unix epoch).
    #[serde(default)]
    pub time: i64,
    /// Human-readable summary Nomad builds from the fields below.
    #[serde(default, deserialize_with = "null_default")]
    pub display_message: String,
    /// Free-form message.
    #[serde(default, deserialize_with = "null_default")]
    pub message: String,
    /// Structured details (string values).
    #[serde(default, deserialize_with = "null_default")]
    pub details: BTreeMap<String, String>,
    /// Whether this event fails the task.
    #[serde(default)]
    pub fails_task: bool,
    /// `Terminated`: exit code.
    #[serde(default)]
    pub exit_code: i64,
    /// `Terminated`: signal that ended the task (0 = none).
    #[serde(default)]
    pub signal: i64,
    /// `Driver Failure`: the driver's error.
    #[serde(default, deserialize_with = "null_default")]
    pub driver_error: String,
    /// `Setup Failure`: the setup error.
    #[serde(default, deserialize_with = "null_default")]
    pub setup_error: String,
    /// `Killing`/`Killed`: kill reason.
    #[serde(default, deserialize_with = "null_default")]
    pub kill_reason: String,
    /// `Killed`: kill error.
    #[serde(default, deserialize_with = "null_default")]
    pub kill_error: String,
    /// `Killing`: kill timeout (ns).
    #[serde(default)]
    pub kill_timeout: i64,
    /// Restart reason.
    #[serde(default, deserialize_with = "null_default")]
    pub restart_reason: String,
    /// Validation error.
    #[serde(default, deserialize_with = "null_default")]
    pub validation_error: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allocation_decodes_nulls_zero_times_and_unknown_fields() {
        let a: Allocation = serde_json::from_str(
            r#"{"ID":"a1","JobID":"j","NodeID":"n","NodeName":"node1","ClientStatus":"failed",
            "DesiredStatus":"run","Job":{"huge":"ignored"},"DesiredDescription":null,
            "TaskStates":{"main":{"State":"dead","Failed":true,"Restarts":0,
              "LastRestart":"0001-01-01T00:00:00Z","StartedAt":"2026-11-21T10:00:00.5Z",
              "FinishedAt":"2026-11-21T10:00:01Z","Events":[
                {"Type":"Received","Time":1,"Details":null},
                {"Type":"Terminated","Time":2,"ExitCode":3,"Signal":0,"Details":{"exit_code":"3"},
                 "DisplayMessage":"Exit Code: 3","GenericSource":"x"}]}}}"#,
        )
        .unwrap();
        assert!(a.is_terminal());
        let t = &a.task_states["main"];
        assert!(t.failed);
        assert_eq!(t.last_restart, None);
        assert!(t.started_at.is_some());
        assert_eq!(t.exit_code(), Some(3));
        assert_eq!(t.events[1].details["exit_code"], "3");
    }

    #[test]
    fn task_state_without_events_has_no_exit_code() {
        let t: TaskState = serde_json::from_str(r#"{"State":"pending","Events":null}"#).unwrap();
        assert_eq!(t.exit_code(), None);
        assert_eq!(t.started_at, None);
    }
}
