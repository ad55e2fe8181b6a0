//! The Nomad state store: jobs, evaluations and allocations with Raft-style indexes.
//!
//! Every mutation takes the next index, stamps it on what it changed, and the caller publishes it
//! so blocking queries wake (see `http.rs`). Register and deregister follow Nomad's job endpoint
//! (`nomad/job_endpoint.go`): `EnforceIndex` checks, one evaluation per register, placement by the
//! scheduler (`placement.rs`), job status from its allocations and evaluations (`getJobStatus`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::events::EventLog;
use super::model::{AllocRecord, EvalRecord, JobRecord, TaskResources, TaskStateRecord, now_ns};
use super::placement::{Node, check_group};
use super::spec::JobSpec;

/// One successful register: what tests check to prove "each job ran at most once".
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// Job ID.
    pub job_id: String,
    /// `JobModifyIndex` the register produced.
    pub job_modify_index: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// Errors of register, with Nomad's texts (returned as 400 plain text).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegisterError {
    /// The job failed validation.
    #[error("{0}")]
    Invalid(String),
    /// `EnforceIndex` with 0 and the job exists.
    #[error("Enforcing job modify index 0: job already exists")]
    AlreadyExists,
    /// `EnforceIndex` with N and the job does not exist.
    #[error("Enforcing job modify index {0}: job does not exist")]
    DoesNotExist(u64),
    /// `EnforceIndex` with N and the job has another index.
    #[error(
        "Enforcing job modify index {expected}: job exists with conflicting job modify index: {actual}"
    )]
    Conflict {
        /// Expected.
        expected: u64,
        /// Actual.
        actual: u64,
    },
}

/// An allocation the caller must start a runner for.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Allocation ID.
    pub alloc_id: String,
    /// The job.
    pub job: Arc<JobSpec>,
    /// Index of the group in `job.task_groups`.
    pub group: usize,
}

/// Result of a register.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The register eval.
    pub eval_id: String,
    /// Index it was created at.
    pub eval_create_index: u64,
    /// The job's new `JobModifyIndex`.
    pub job_modify_index: u64,
    /// Allocations to start.
    pub launches: Vec<Launch>,
    /// Allocations of the previous version to stop.
    pub stops: Vec<String>,
}

/// The state store.
#[derive(Debug, Default)]
pub struct Store {
    /// Latest index.
    pub index: u64,
    /// Index of the last change to any job (the `jobs` table index).
    pub jobs_index: u64,
    /// Jobs by ID (sorted for prefix listing).
    pub jobs: BTreeMap<String, JobRecord>,
    /// Allocations by ID.
    pub allocs: HashMap<String, AllocRecord>,
    /// Evaluations by ID.
    pub evals: HashMap<String, EvalRecord>,
    /// Every register ever made.
    pub registrations: Vec<Registration>,
    /// Recent events for `/v1/event/stream`.
    pub events: EventLog,
}

/// The raft index a fresh emulator starts from. A real cluster's log begins with its raft
/// configuration, the leader's barrier and the client node's registration, so its first job
/// register is never at index 1: Nomad's list endpoints floor an empty table's index at 1 "since
/// realistically the first write must have a higher index" (e.g. `nomad/acl_endpoint.go`
/// `ListPolicies`, `nomad/namespace_endpoint.go`), so a blocking query from 1 wakes on the first
/// write. Starting at 1 would make the first register invisible to such a query.
pub const BOOT_INDEX: u64 = 10;

impl Store {
    /// The store of a freshly started agent: empty tables, raft index [`BOOT_INDEX`].
    pub fn booted() -> Store {
        Store {
            index: BOOT_INDEX,
            ..Store::default()
        }
    }

    fn next(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Registers `spec` (submitted as `raw`), checking `EnforceIndex`, evaluating and placing it.
    ///
    /// Errors: [`RegisterError`].
    pub fn register(
        &mut self,
        node: &Node,
        alloc_root: &Path,
        spec: JobSpec,
        raw: Value,
        enforce: Option<u64>,
    ) -> Result<Registered, RegisterError> {
        spec.validate().map_err(RegisterError::Invalid)?;
        let existing = self.jobs.get(&spec.id);
        if let Some(expected) = enforce {
            match (existing, expected) {
                (Some(_), 0) => return Err(RegisterError::AlreadyExists),
                (None, n) if n > 0 => return Err(RegisterError::DoesNotExist(n)),
                (Some(j), n) if j.job_modify_index != n => {
                    return Err(RegisterError::Conflict {
                        expected: n,
                        actual: j.job_modify_index,
                    });
                }
                _ => {}
            }
        }
        let index = self.next();
        let spec = Arc::new(spec);
        let raw_arc = Arc::new(raw.clone());
        // A re-register of an unchanged, running job places nothing new (the scheduler's diff is
        // empty); a changed or stopped job gets fresh allocations and the old ones are stopped.
        let (unchanged, prev) = match self.jobs.get(&spec.id) {
            Some(j) => (
                !j.stop && strip_server_fields(&j.raw) == strip_server_fields(&raw),
                Some(j.clone()),
            ),
            None => (false, None),
        };
        let mut stops = Vec::new();
        if !unchanged && let Some(p) = &prev {
            for a in &p.allocs {
                if let Some(al) = self.allocs.get_mut(a)
                    && al.desired_status == "run"
                    && !al.client_terminal()
                {
                    al.desired_status = "stop";
                    al.desired_description = "alloc is being updated due to job update".into();
                    al.modify_index = index;
                    stops.push(a.clone());
                }
            }
        }
        let mut job = JobRecord {
            spec: spec.clone(),
            raw,
            status: "pending",
            create_index: prev.as_ref().map_or(index, |p| p.create_index),
            modify_index: index,
            job_modify_index: index,
            version: prev.as_ref().map_or(0, |p| p.version + 1),
            submit_time: now_ns(),
            stop: false,
            allocs: prev.as_ref().map(|p| p.allocs.clone()).unwrap_or_default(),
            evals: prev.as_ref().map(|p| p.evals.clone()).unwrap_or_default(),
        };
        let mut eval = self.new_eval(&job, "job-register", index);
        let mut launches = Vec::new();
        if !unchanged {
            for (gi, group) in spec.task_groups.iter().enumerate() {
                match check_group(node, &spec, group) {
                    Ok(()) => {
                        for n in 0..group.count() {
                            let alloc = self.new_alloc(
                                node, alloc_root, &job, &raw_arc, &eval.id, gi, n, index,
                            );
                            job.allocs.push(alloc.id.clone());
                            launches.push(Launch {
                                alloc_id: alloc.id.clone(),
                                job: spec.clone(),
                                group: gi,
                            });
                            self.allocs.insert(alloc.id.clone(), alloc);
                        }
                        eval.queued.insert(group.name.clone(), 0);
                    }
                    Err(metric) => {
                        eval.failed_tg_allocs.insert(group.name.clone(), metric);
                        eval.queued.insert(group.name.clone(), group.count() as u64);
                    }
                }
            }
        }
        if !eval.failed_tg_allocs.is_empty() {
            // Nomad: the register eval completes and spawns a blocked eval that waits for capacity.
            let mut blocked = self.new_eval(&job, "queued-allocs", index);
            blocked.status = "blocked";
            blocked.status_description = "created to place remaining allocations".into();
            blocked.previous_eval = eval.id.clone();
            blocked.failed_tg_allocs = eval.failed_tg_allocs.clone();
            blocked.queued = eval.queued.clone();
            eval.blocked_eval = blocked.id.clone();
            job.evals.push(eval.id.clone());
            job.evals.push(blocked.id.clone());
            self.evals.insert(blocked.id.clone(), blocked);
        } else {
            job.evals.push(eval.id.clone());
        }
        let eval_id = eval.id.clone();
        self.evals.insert(eval.id.clone(), eval);
        self.registrations.push(Registration {
            job_id: spec.id.clone(),
            job_modify_index: index,
            at: Utc::now(),
        });
        self.jobs.insert(spec.id.clone(), job);
        self.refresh_job(&spec.id, index);
        self.jobs_index = index;
        self.emit_job(&spec.id, "JobRegistered", index);
        let ids: Vec<String> = self
            .jobs
            .get(&spec.id)
            .map(|j| j.evals.clone())
            .unwrap_or_default();
        let new_evals: Vec<&String> = ids
            .iter()
            .filter(|e| self.evals.get(*e).is_some_and(|e| e.create_index == index))
            .collect();
        for e in new_evals {
            self.emit_eval(e, index);
        }
        for l in &launches {
            self.emit_alloc(&l.alloc_id, index);
        }
        Ok(Registered {
            eval_id,
            eval_create_index: index,
            job_modify_index: index,
            launches,
            stops,
        })
    }

    fn new_eval(&self, job: &JobRecord, trigger: &'static str, index: u64) -> EvalRecord {
        EvalRecord {
            id: uuid::Uuid::new_v4().to_string(),
            job_id: job.spec.id.clone(),
            namespace: job.namespace().to_string(),
            priority: job.spec.priority.unwrap_or(50),
            type_: job.spec.type_.clone(),
            triggered_by: trigger,
            job_modify_index: job.job_modify_index,
            status: "complete",
            status_description: String::new(),
            failed_tg_allocs: BTreeMap::new(),
            blocked_eval: String::new(),
            previous_eval: String::new(),
            queued: BTreeMap::new(),
            create_index: index,
            modify_index: index,
            create_time: now_ns(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new_alloc(
        &self,
        node: &Node,
        alloc_root: &Path,
        job: &JobRecord,
        raw: &Arc<Value>,
        eval_id: &str,
        group: usize,
        n: usize,
        index: u64,
    ) -> AllocRecord {
        let g = &job.spec.task_groups[group];
        let id = uuid::Uuid::new_v4().to_string();
        let mut task_states = BTreeMap::new();
        let mut resources = BTreeMap::new();
        for t in &g.tasks {
            task_states.insert(t.name.clone(), TaskStateRecord::default());
            let r = t.resources.clone().unwrap_or_default();
            resources.insert(
                t.name.clone(),
                TaskResources {
                    cpu: r.cpu.unwrap_or(100),
                    memory_mb: r.memory_mb.unwrap_or(300),
                },
            );
        }
        let now = now_ns();
        AllocRecord {
            dir: alloc_root.join(&id),
            id,
            eval_id: eval_id.to_string(),
            name: format!("{}.{}[{n}]", job.spec.id, g.name),
            node_id: node.id.clone(),
            node_name: node.name.clone(),
            job_id: job.spec.id.clone(),
            namespace: job.namespace().to_string(),
            job: raw.clone(),
            job_version: job.version,
            group: g.name.clone(),
            desired_status: "run",
            desired_description: String::new(),
            client_status: "pending",
            client_description: "No tasks have started".into(),
            task_states,
            resources,
            create_index: index,
            modify_index: index,
            create_time: now,
            modify_time: now,
        }
    }

    /// Deregisters `id`: stops the job (and its allocations) and, with `purge`, removes it.
    /// Returns the eval ID (`""` for a missing job, as Nomad) and the allocations to kill.
    pub fn deregister(&mut self, id: &str, purge: bool) -> (String, u64, Vec<String>) {
        let Some(job) = self.jobs.get(id).cloned() else {
            return (String::new(), self.index.max(1), Vec::new());
        };
        let index = self.next();
        let eval = self.new_eval(&job, "job-deregister", index);
        let eval_id = eval.id.clone();
        self.evals.insert(eval.id.clone(), eval);
        let mut kills = Vec::new();
        for a in &job.allocs {
            if let Some(al) = self.allocs.get_mut(a)
                && al.desired_status == "run"
            {
                al.desired_status = "stop";
                al.desired_description = "alloc is stopped because job is stopped".into();
                al.modify_index = index;
                al.modify_time = now_ns();
                if !al.client_terminal() {
                    kills.push(a.clone());
                }
            }
        }
        self.emit_eval(&eval_id, index);
        self.emit_job(id, "JobDeregistered", index);
        if purge {
            self.jobs.remove(id);
        } else if let Some(j) = self.jobs.get_mut(id) {
            j.stop = true;
            j.evals.push(eval_id.clone());
            self.refresh_job(id, index);
        }
        self.jobs_index = index;
        (eval_id, index, kills)
    }

    /// Applies `f` to an allocation at a new index, recomputes its client status and its job's
    /// status. Returns the new index, or `None` when the allocation is unknown.
    pub fn update_alloc(&mut self, id: &str, f: impl FnOnce(&mut AllocRecord)) -> Option<u64> {
        if !self.allocs.contains_key(id) {
            return None;
        }
        let index = self.next();
        let job_id = {
            let a = self.allocs.get_mut(id)?;
            f(a);
            a.recompute_client_status();
            a.modify_index = index;
            a.modify_time = now_ns();
            a.job_id.clone()
        };
        self.refresh_job(&job_id, index);
        self.emit_alloc(id, index);
        Some(index)
    }

    fn emit_job(&mut self, id: &str, type_: &str, index: u64) {
        if let Some(j) = self.jobs.get(id) {
            let ns = j.namespace().to_string();
            self.events.push(
                index,
                "Job",
                type_,
                id,
                &ns,
                Vec::new(),
                json!({"Job": j.to_json()}),
            );
        }
    }

    fn emit_eval(&mut self, id: &str, index: u64) {
        if let Some(e) = self.evals.get(id) {
            let (ns, job) = (e.namespace.clone(), e.job_id.clone());
            let payload = json!({"Evaluation": e.to_json()});
            self.events.push(
                index,
                "Evaluation",
                "EvaluationUpdated",
                id,
                &ns,
                vec![job],
                payload,
            );
        }
    }

    fn emit_alloc(&mut self, id: &str, index: u64) {
        if let Some(a) = self.allocs.get(id) {
            let (ns, job) = (a.namespace.clone(), a.job_id.clone());
            let payload = json!({"Allocation": a.to_json(false)});
            self.events.push(
                index,
                "Allocation",
                "AllocationUpdated",
                id,
                &ns,
                vec![job],
                payload,
            );
        }
    }

    /// Recomputes a job's status (Nomad `getJobStatus`); bumps its ModifyIndex when it changed.
    fn refresh_job(&mut self, job_id: &str, index: u64) {
        let Some(job) = self.jobs.get(job_id) else {
            return;
        };
        let any_live_alloc = job
            .allocs
            .iter()
            .filter_map(|a| self.allocs.get(a))
            .any(|a| !a.terminal());
        let any_open_eval = job
            .evals
            .iter()
            .filter_map(|e| self.evals.get(e))
            .any(|e| !matches!(e.status, "complete" | "failed" | "canceled"));
        let has_history = !job.allocs.is_empty();
        let status = if any_live_alloc {
            "running"
        } else if any_open_eval {
            "pending"
        } else if job.stop || has_history {
            "dead"
        } else {
            "pending"
        };
        if let Some(j) = self.jobs.get_mut(job_id)
            && j.status != status
        {
            j.status = status;
            j.modify_index = index;
            self.jobs_index = index;
        }
    }

    /// `GET /v1/job/:id/summary` `Summary` map: per group Queued/Starting/Running/Complete/
    /// Failed/Lost/Unknown.
    pub fn summary(&self, job: &JobRecord) -> Value {
        let mut out = serde_json::Map::new();
        for g in &job.spec.task_groups {
            let mut c = [0u64; 7];
            for a in job.allocs.iter().filter_map(|a| self.allocs.get(a)) {
                if a.group != g.name {
                    continue;
                }
                let i = match a.client_status {
                    "pending" => 1,
                    "running" => 2,
                    "complete" => 3,
                    "failed" => 4,
                    "lost" => 5,
                    _ => 6,
                };
                c[i] += 1;
            }
            c[0] = job
                .evals
                .last()
                .and_then(|e| self.evals.get(e))
                .filter(|e| e.status == "blocked")
                .and_then(|e| e.queued.get(&g.name).copied())
                .unwrap_or(0);
            out.insert(
                g.name.clone(),
                json!({"Queued": c[0], "Starting": c[1], "Running": c[2], "Complete": c[3],
                       "Failed": c[4], "Lost": c[5], "Unknown": c[6]}),
            );
        }
        Value::Object(out)
    }

    /// Highest ModifyIndex among a job's allocations (1 when none), the index of
    /// `GET /v1/job/:id/allocations`.
    pub fn job_allocs_index(&self, job_id: &str) -> u64 {
        self.jobs.get(job_id).map_or(1, |j| {
            j.allocs
                .iter()
                .filter_map(|a| self.allocs.get(a))
                .map(|a| a.modify_index)
                .max()
                .unwrap_or(1)
        })
    }
}

fn strip_server_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in [
            "Status",
            "StatusDescription",
            "Stop",
            "CreateIndex",
            "ModifyIndex",
            "JobModifyIndex",
            "Version",
            "SubmitTime",
            "Stable",
        ] {
            o.remove(k);
        }
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(id: &str, driver: &str) -> (JobSpec, Value) {
        let raw = json!({"ID": id, "Type": "batch", "TaskGroups": [{"Name": "g", "Count": 2,
            "Tasks": [{"Name": "t", "Driver": driver, "Config": {"command": "true"}}]}]});
        (serde_json::from_value(raw.clone()).unwrap(), raw)
    }

    #[test]
    fn enforce_index_zero_rejects_an_existing_job_with_nomads_text() {
        let node = Node::local();
        let mut s = Store::default();
        let (j, r) = spec("a", "raw_exec");
        let reg = s
            .register(&node, Path::new("/tmp"), j.clone(), r.clone(), Some(0))
            .unwrap();
        assert_eq!(reg.launches.len(), 2);
        let err = s
            .register(&node, Path::new("/tmp"), j, r, Some(0))
            .unwrap_err();
        assert!(err.to_string().contains("job already exists"));
        assert_eq!(s.registrations.len(), 1);
    }

    #[test]
    fn docker_job_is_pending_with_a_blocked_eval_and_no_allocs() {
        let node = Node::local();
        let mut s = Store::default();
        let (j, r) = spec("d", "docker");
        let reg = s.register(&node, Path::new("/tmp"), j, r, None).unwrap();
        assert!(reg.launches.is_empty());
        let job = &s.jobs["d"];
        assert_eq!(job.status, "pending");
        assert!(s.evals.values().any(|e| e.status == "blocked"
            && e.failed_tg_allocs["g"]["ConstraintFiltered"]["missing drivers"] == 1));
        assert_eq!(s.summary(job)["g"]["Queued"], 2);
    }

    #[test]
    fn deregister_of_a_missing_job_is_idempotent_with_empty_eval() {
        let mut s = Store::default();
        let (eval, _, kills) = s.deregister("nope", true);
        assert!(eval.is_empty() && kills.is_empty());
    }

    #[test]
    fn job_status_follows_allocations() {
        let node = Node::local();
        let mut s = Store::default();
        let (j, r) = spec("a", "raw_exec");
        let reg = s.register(&node, Path::new("/tmp"), j, r, None).unwrap();
        let a0 = reg.launches[0].alloc_id.clone();
        let a1 = reg.launches[1].alloc_id.clone();
        s.update_alloc(&a0, |a| {
            a.task_states.get_mut("t").unwrap().state = "running"
        });
        assert_eq!(s.jobs["a"].status, "running");
        for a in [&a0, &a1] {
            s.update_alloc(a, |a| a.task_states.get_mut("t").unwrap().state = "dead");
        }
        assert_eq!(s.jobs["a"].status, "dead");
        assert_eq!(s.summary(&s.jobs["a"])["g"]["Complete"], 2);
    }
}
