//! The pure half of observing a Nomad job: from the allocation and evaluations the runtime read
//! to the [`JobObservation`] [`step`](super::step) looks at. The runtime does the reads
//! (`reconcile.rs`, `Reconciler::observe`); this decides what they mean.

use chrono::{DateTime, Utc};
use jobforge_schema::PipelinePhase;

use super::JobObservation;
use crate::nomad::{Allocation, Evaluation, TaskEvent};

/// Task events whose message explains a dead task better than its exit code. Not `Task Setup`:
/// every task gets that informational event ("Building Task Directory", Nomad
/// `client/allocrunner/taskrunner/task_runner.go`); a task that ran and exited is explained by
/// its output (`machine::error_line`), not by it.
const EXPLAINING_EVENTS: [&str; 3] = ["Driver Failure", "Setup Failure", "Killed"];

/// What a job whose latest allocation is `alloc` (`None`: no allocation yet, or it vanished
/// between the listing and the read) and whose evaluations are `evals` (read only when there is
/// no allocation; may be empty) means for the task of `phase`:
/// - no allocation → `Pending`, with the latest evaluation's placement failure, if any;
/// - the allocation has no state for the task (the phase's name, else the only task) → `Finished`
///   and failed if the allocation is terminal (its client status explains why), else `Pending`;
/// - task `dead` → `Finished` (exit code, Nomad's `Failed` flag, the last explaining event);
///   `running` → `Running`; anything else (`pending`) → `Pending`.
///
/// `now` stands in for a start or finish time Nomad has not reported.
pub fn observation_of(
    phase: PipelinePhase,
    alloc: Option<&Allocation>,
    evals: &[Evaluation],
    now: DateTime<Utc>,
) -> JobObservation {
    let Some(alloc) = alloc else {
        let placement_failure = evals
            .iter()
            .max_by_key(|e| e.create_index)
            .and_then(|e| e.placement_failure());
        return JobObservation::Pending { placement_failure };
    };
    let node = if alloc.node_name.is_empty() {
        alloc.node_id.clone()
    } else {
        alloc.node_name.clone()
    };
    let task = alloc
        .task_states
        .get(phase.as_str())
        .or_else(|| alloc.task_states.values().next());
    let Some(task) = task else {
        return if alloc.is_terminal() {
            JobObservation::Finished {
                alloc_id: alloc.id.clone(),
                node,
                started_at: now,
                finished_at: now,
                exit_code: None,
                failed: true,
                event_message: Some(format!(
                    "allocation {}: {}",
                    alloc.client_status, alloc.client_description
                )),
            }
        } else {
            JobObservation::Pending {
                placement_failure: None,
            }
        };
    };
    match task.state.as_str() {
        "dead" => JobObservation::Finished {
            alloc_id: alloc.id.clone(),
            node,
            started_at: task.started_at.or(task.finished_at).unwrap_or(now),
            finished_at: task.finished_at.unwrap_or(now),
            exit_code: task.exit_code().and_then(|c| i32::try_from(c).ok()),
            failed: task.failed,
            event_message: task
                .events
                .iter()
                .rev()
                // A failing `Killing` is how Nomad's prestart hooks (template, vault) stop a
                // task that never started: "Template failed: ...".
                .find(|e| {
                    EXPLAINING_EVENTS.contains(&e.type_.as_str())
                        || (e.type_ == "Killing" && e.fails_task)
                })
                .map(describe_event),
        },
        "running" => JobObservation::Running {
            alloc_id: alloc.id.clone(),
            node,
            started_at: task.started_at.unwrap_or(now),
        },
        _ => JobObservation::Pending {
            placement_failure: None,
        },
    }
}

/// One line for a task event: its type and the most specific message Nomad gave.
fn describe_event(e: &TaskEvent) -> String {
    let detail = [
        &e.display_message,
        &e.driver_error,
        &e.setup_error,
        &e.message,
        &e.kill_reason,
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .cloned()
    .unwrap_or_default();
    if detail.is_empty() {
        e.type_.clone()
    } else {
        format!("{}: {detail}", e.type_)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::nomad::TaskState;

    fn alloc(client_status: &str, tasks: &[(&str, TaskState)]) -> Allocation {
        serde_json::from_value::<Allocation>(serde_json::json!({
            "ID": "a1", "NodeID": "n-id", "NodeName": "", "ClientStatus": client_status,
            "ClientDescription": "why",
        }))
        .map(|mut a| {
            a.task_states = tasks
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect();
            a
        })
        .unwrap()
    }

    fn task(state: &str, failed: bool, events: &[(&str, &str)]) -> TaskState {
        let events: Vec<_> = events
            .iter()
            .map(|(t, m)| serde_json::json!({"Type": t, "DisplayMessage": m}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "State": state, "Failed": failed, "Events": events,
        }))
        .unwrap()
    }

    #[test]
    fn no_allocation_is_pending_with_the_latest_evaluations_placement_failure() {
        let now = Utc::now();
        assert_eq!(
            observation_of(PipelinePhase::Build, None, &[], now),
            JobObservation::Pending {
                placement_failure: None
            }
        );
    }

    #[test]
    fn a_dead_task_is_finished_with_its_explaining_event_and_the_node_id_stands_in() {
        let now = Utc::now();
        let a = alloc(
            "failed",
            &[(
                "build",
                task(
                    "dead",
                    true,
                    &[("Started", "go"), ("Driver Failure", "no buildah")],
                ),
            )],
        );
        match observation_of(PipelinePhase::Build, Some(&a), &[], now) {
            JobObservation::Finished {
                node,
                failed,
                event_message,
                started_at,
                ..
            } => {
                assert_eq!(node, "n-id");
                assert!(failed);
                assert_eq!(event_message.as_deref(), Some("Driver Failure: no buildah"));
                assert_eq!(started_at, now);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 18, item 1: the events of every task that ran and exited with code 1.
    #[test]
    fn task_setup_never_explains_a_task_that_ran_and_exited() {
        let now = Utc::now();
        let a = alloc(
            "failed",
            &[(
                "build",
                task(
                    "dead",
                    true,
                    &[
                        ("Received", "Task received by client"),
                        ("Task Setup", "Building Task Directory"),
                        ("Started", "Task started by client"),
                        ("Terminated", "Exit Code: 1"),
                        ("Not Restarting", "Policy allows no restarts"),
                    ],
                ),
            )],
        );
        match observation_of(PipelinePhase::Build, Some(&a), &[], now) {
            JobObservation::Finished { event_message, .. } => {
                assert_eq!(event_message, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_terminal_allocation_without_task_state_failed_and_a_live_one_is_pending() {
        let now = Utc::now();
        let dead = alloc("lost", &[]);
        assert!(matches!(
            observation_of(PipelinePhase::Test, Some(&dead), &[], now),
            JobObservation::Finished { failed: true, ref event_message, .. }
                if event_message.as_deref() == Some("allocation lost: why")
        ));
        let live = alloc("pending", &[]);
        assert_eq!(
            observation_of(PipelinePhase::Test, Some(&live), &[], now),
            JobObservation::Pending {
                placement_failure: None
            }
        );
        let running = alloc("running", &[("test", task("running", false, &[]))]);
        assert!(matches!(
            observation_of(PipelinePhase::Test, Some(&running), &[], now),
            JobObservation::Running { .. }
        ));
    }
}
