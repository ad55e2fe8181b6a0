//! The job specification as the emulator reads it from `POST /v1/jobs` (`{"Job": {...}}`).
//!
//! Tolerant like Nomad's own decoder: unknown fields are ignored, `null` is accepted wherever a
//! list or map may be, and absent fields take Nomad's defaults (see `Job.Canonicalize` in Nomad's
//! `api/jobs.go`). Durations are nanoseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Nomad's default `KillTimeout` (5 s), in ns.
pub const DEFAULT_KILL_TIMEOUT_NS: i64 = 5_000_000_000;

fn nd<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Body of `POST /v1/jobs` and `PUT /v1/job/:id`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RegisterBody {
    /// The job, kept as JSON so `GET /v1/job/:id` returns what was submitted.
    pub job: Option<serde_json::Value>,
    /// Register only when `JobModifyIndex` matches (0 = only when absent).
    #[serde(deserialize_with = "nd")]
    pub enforce_index: bool,
    /// Expected `JobModifyIndex` when `EnforceIndex`.
    #[serde(deserialize_with = "nd")]
    pub job_modify_index: u64,
}

/// A job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JobSpec {
    /// Job ID.
    #[serde(rename = "ID", deserialize_with = "nd")]
    pub id: String,
    /// Name (defaults to the ID).
    #[serde(deserialize_with = "nd")]
    pub name: String,
    /// `batch`, `service`, ... (the emulator runs every type to completion like `batch`).
    #[serde(rename = "Type", deserialize_with = "nd")]
    pub type_: String,
    /// Namespace (`default` when empty).
    #[serde(deserialize_with = "nd")]
    pub namespace: String,
    /// Region (`global` when empty).
    #[serde(deserialize_with = "nd")]
    pub region: String,
    /// Priority (50 when absent).
    pub priority: Option<i64>,
    /// Datacenters; `*` and globs match `dc1`.
    #[serde(deserialize_with = "nd")]
    pub datacenters: Vec<String>,
    /// Job constraints.
    #[serde(deserialize_with = "nd")]
    pub constraints: Vec<ConstraintSpec>,
    /// Task groups.
    #[serde(deserialize_with = "nd")]
    pub task_groups: Vec<GroupSpec>,
    /// Meta.
    #[serde(deserialize_with = "nd")]
    pub meta: BTreeMap<String, String>,
    /// Deadline for every task of the job (ns), an emulator extension in the spirit of nomad#1782.
    pub max_run_duration: Option<i64>,
}

/// A constraint (`LTarget Operand RTarget`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConstraintSpec {
    /// Left side, e.g. `${attr.kernel.name}`.
    #[serde(rename = "LTarget", deserialize_with = "nd")]
    pub l_target: String,
    /// Right side.
    #[serde(rename = "RTarget", deserialize_with = "nd")]
    pub r_target: String,
    /// Operand (`=` when empty).
    #[serde(rename = "Operand", deserialize_with = "nd")]
    pub operand: String,
}

impl std::fmt::Display for ConstraintSpec {
    /// Nomad's `Constraint.String()`: `"<LTarget> <Operand> <RTarget>"`, the key placement failures
    /// use in `ConstraintFiltered`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.l_target, self.operand, self.r_target)
    }
}

/// A task group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GroupSpec {
    /// Group name.
    #[serde(deserialize_with = "nd")]
    pub name: String,
    /// Allocations to place (1 when absent).
    pub count: Option<i64>,
    /// Group constraints.
    #[serde(deserialize_with = "nd")]
    pub constraints: Vec<ConstraintSpec>,
    /// Restart policy (batch default: 3 attempts, 15 s delay, mode fail).
    pub restart_policy: Option<RestartSpec>,
    /// Tasks.
    #[serde(deserialize_with = "nd")]
    pub tasks: Vec<TaskSpec>,
    /// Group meta.
    #[serde(deserialize_with = "nd")]
    pub meta: BTreeMap<String, String>,
}

/// Restart policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartSpec {
    /// Restarts allowed.
    pub attempts: Option<i64>,
    /// Interval (ns); recorded, the emulator counts attempts over the task's life.
    pub interval: Option<i64>,
    /// Delay between restarts (ns).
    pub delay: Option<i64>,
    /// `fail` or `delay`.
    pub mode: Option<String>,
}

/// A task.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskSpec {
    /// Task name.
    #[serde(deserialize_with = "nd")]
    pub name: String,
    /// Driver name.
    #[serde(deserialize_with = "nd")]
    pub driver: String,
    /// Driver config (`command`, `args` for raw_exec/exec).
    #[serde(deserialize_with = "nd")]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Environment.
    #[serde(deserialize_with = "nd")]
    pub env: BTreeMap<String, String>,
    /// Resources.
    pub resources: Option<ResourcesSpec>,
    /// Templates.
    #[serde(deserialize_with = "nd")]
    pub templates: Vec<TemplateSpec>,
    /// Kill timeout (ns; 5 s when absent).
    pub kill_timeout: Option<i64>,
    /// Kill signal (`SIGINT` when empty, as raw_exec).
    #[serde(deserialize_with = "nd")]
    pub kill_signal: String,
    /// Task constraints.
    #[serde(deserialize_with = "nd")]
    pub constraints: Vec<ConstraintSpec>,
    /// Task meta.
    #[serde(deserialize_with = "nd")]
    pub meta: BTreeMap<String, String>,
    /// Deadline (ns) after which the task is killed and fails.
    pub max_run_duration: Option<i64>,
    /// Vault integration: the task gets a Vault token of its own (see `vault_hook`).
    pub vault: Option<VaultSpec>,
}

/// A task's `vault` block (Nomad `api/tasks.go` `Vault`, defaults from its `Canonicalize`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct VaultSpec {
    /// Policies of the task's token (the legacy, token-based workflow).
    #[serde(deserialize_with = "nd")]
    pub policies: Vec<String>,
    /// Vault role to log in with (the workload-identity workflow); the dev stack maps roles to
    /// policies by its `--vault-role` configuration.
    #[serde(deserialize_with = "nd")]
    pub role: String,
    /// Put the token in `VAULT_TOKEN` (default true).
    pub env: Option<bool>,
    /// Do not write `secrets/vault_token` (default false).
    #[serde(deserialize_with = "nd")]
    pub disable_file: bool,
    /// What happens when the token changes (`restart` by default); recorded only, the dev stack
    /// never renews a task token.
    #[serde(deserialize_with = "nd")]
    pub change_mode: String,
    /// Vault namespace; put in `VAULT_NAMESPACE` when set.
    #[serde(deserialize_with = "nd")]
    pub namespace: String,
}

impl VaultSpec {
    /// Whether `VAULT_TOKEN` goes into the task environment.
    pub fn env(&self) -> bool {
        self.env.unwrap_or(true)
    }
}

/// Task resources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ResourcesSpec {
    /// CPU, MHz (100 when absent).
    #[serde(rename = "CPU")]
    pub cpu: Option<i64>,
    /// Memory, MB (300 when absent).
    #[serde(rename = "MemoryMB")]
    pub memory_mb: Option<i64>,
}

/// A template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TemplateSpec {
    /// Destination, relative to the task dir.
    #[serde(deserialize_with = "nd")]
    pub dest_path: String,
    /// Template text.
    #[serde(deserialize_with = "nd")]
    pub embedded_tmpl: String,
    /// Export rendered `KEY=value` lines into the task env.
    #[serde(deserialize_with = "nd")]
    pub envvars: bool,
    /// Octal file mode (`0644` when empty).
    #[serde(deserialize_with = "nd")]
    pub perms: String,
    /// Left delimiter (`{{` when empty).
    #[serde(deserialize_with = "nd")]
    pub left_delim: String,
    /// Right delimiter (`}}` when empty).
    #[serde(deserialize_with = "nd")]
    pub right_delim: String,
}

impl JobSpec {
    /// Checks what Nomad's `Job.Validate` rejects and the emulator relies on.
    ///
    /// Errors: a message naming the field, as Nomad's 400 body does.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("Missing job ID".into());
        }
        if self.id.contains(' ') || self.id.contains('\0') {
            return Err("Job ID contains a space or null character".into());
        }
        if self.task_groups.is_empty() {
            return Err("Missing job task groups".into());
        }
        for g in &self.task_groups {
            if g.name.is_empty() {
                return Err("Task group: Missing task group name".into());
            }
            if g.tasks.is_empty() {
                return Err(format!(
                    "Task group {}: Missing tasks for task group",
                    g.name
                ));
            }
            for t in &g.tasks {
                if t.name.is_empty() {
                    return Err(format!("Task group {}: Missing task name", g.name));
                }
                if t.driver.is_empty() {
                    return Err(format!("Task {}: Missing task driver", t.name));
                }
                // Nomad `structs.Vault.Validate`: a task may never ask for the root policy.
                if let Some(v) = &t.vault
                    && v.policies.iter().any(|p| p == "root")
                {
                    return Err(format!(
                        "Task {}: Vault: Can not specify \"root\" policy",
                        t.name
                    ));
                }
            }
        }
        Ok(())
    }
}

impl GroupSpec {
    /// Allocations to place: `Count`, 1 when absent.
    pub fn count(&self) -> usize {
        usize::try_from(self.count.unwrap_or(1)).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_unknown_fields_are_tolerated() {
        let j: JobSpec = serde_json::from_value(serde_json::json!({
            "ID": "a", "Constraints": null, "Meta": null, "Whatever": 3,
            "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec",
                "Config": {"command": "true"}, "Env": null, "Templates": null}]}]
        }))
        .unwrap();
        assert!(j.validate().is_ok());
        assert_eq!(j.task_groups[0].count(), 1);
    }

    #[test]
    fn ids_with_spaces_are_rejected() {
        let j = JobSpec {
            id: "a b".into(),
            ..Default::default()
        };
        assert!(j.validate().unwrap_err().contains("space"));
    }
}
