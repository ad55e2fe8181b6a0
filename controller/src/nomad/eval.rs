//! Wire types of evaluations: `GET /v1/job/:id/evaluations` (Nomad API docs, "Evaluations").
//! A job no node can run gets a `blocked` evaluation whose `FailedTGAllocs` says, per task group,
//! which feasibility checks filtered the nodes (for example `"missing drivers": 1`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::wire::null_default;

/// An evaluation.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Evaluation {
    /// Evaluation ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Namespace.
    #[serde(default, deserialize_with = "null_default")]
    pub namespace: String,
    /// Scheduler type (`batch`, ...).
    #[serde(rename = "Type", default)]
    pub type_: String,
    /// What triggered it (`job-register`, `job-deregister`, `queued-allocs`, ...).
    #[serde(default)]
    pub triggered_by: String,
    /// Job ID.
    #[serde(rename = "JobID", default)]
    pub job_id: String,
    /// `pending`, `complete`, `failed`, `blocked`, `canceled`.
    #[serde(default)]
    pub status: String,
    /// Status detail.
    #[serde(default, deserialize_with = "null_default")]
    pub status_description: String,
    /// Placement failures per task group; empty when everything was placed.
    #[serde(rename = "FailedTGAllocs", default, deserialize_with = "null_default")]
    pub failed_tg_allocs: BTreeMap<String, AllocMetric>,
    /// The blocked evaluation created to retry placement, if any.
    #[serde(default, deserialize_with = "null_default")]
    pub blocked_eval: String,
    /// Allocations still queued per task group.
    #[serde(default, deserialize_with = "null_default")]
    pub queued_allocations: BTreeMap<String, u64>,
    /// Creation index.
    #[serde(default)]
    pub create_index: u64,
    /// Last change index.
    #[serde(default)]
    pub modify_index: u64,
}

impl Evaluation {
    /// One line per failed task group explaining why it could not be placed, for an
    /// `Unschedulable` status message; `None` when nothing failed.
    pub fn placement_failure(&self) -> Option<String> {
        if self.failed_tg_allocs.is_empty() {
            return None;
        }
        let lines: Vec<String> = self
            .failed_tg_allocs
            .iter()
            .map(|(group, m)| format!("group {group:?}: {}", m.describe()))
            .collect();
        Some(lines.join("; "))
    }
}

/// Scheduler metrics of one task group's placement attempt (`structs.AllocMetric`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocMetric {
    /// Nodes considered.
    #[serde(default)]
    pub nodes_evaluated: u64,
    /// Nodes filtered by feasibility checks.
    #[serde(default)]
    pub nodes_filtered: u64,
    /// Nodes available per datacenter.
    #[serde(default, deserialize_with = "null_default")]
    pub nodes_available: BTreeMap<String, u64>,
    /// Nodes filtered per node class.
    #[serde(default, deserialize_with = "null_default")]
    pub class_filtered: BTreeMap<String, u64>,
    /// Nodes filtered per constraint or check (`"missing drivers"`, `"${attr.x} = y"`).
    #[serde(default, deserialize_with = "null_default")]
    pub constraint_filtered: BTreeMap<String, u64>,
    /// Feasible nodes without enough resources.
    #[serde(default)]
    pub nodes_exhausted: u64,
    /// Exhausted nodes per class.
    #[serde(default, deserialize_with = "null_default")]
    pub class_exhausted: BTreeMap<String, u64>,
    /// Exhausted nodes per resource dimension (`"memory"`, `"cpu"`).
    #[serde(default, deserialize_with = "null_default")]
    pub dimension_exhausted: BTreeMap<String, u64>,
    /// Quotas exhausted.
    #[serde(default, deserialize_with = "null_default")]
    pub quota_exhausted: Vec<String>,
    /// Further identical failures merged into this one.
    #[serde(default)]
    pub coalesced_failures: u64,
}

impl AllocMetric {
    /// Human-readable summary, for example
    /// `1 of 1 nodes filtered (missing drivers: 1); 0 exhausted`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} of {} nodes filtered",
            self.nodes_filtered, self.nodes_evaluated
        );
        let reasons: Vec<String> = self
            .constraint_filtered
            .iter()
            .chain(self.class_filtered.iter())
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        if !reasons.is_empty() {
            let _ = write!(s, " ({})", reasons.join(", "));
        }
        let _ = write!(s, "; {} exhausted", self.nodes_exhausted);
        let dims: Vec<String> = self
            .dimension_exhausted
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        if !dims.is_empty() {
            let _ = write!(s, " ({})", dims.join(", "));
        }
        if self.coalesced_failures > 0 {
            let _ = write!(s, "; {} more coalesced", self.coalesced_failures);
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blocked_evaluation_explains_the_missing_driver() {
        let e: Evaluation = serde_json::from_str(
            r#"{"ID":"e1","JobID":"j","Status":"blocked","BlockedEval":"",
              "FailedTGAllocs":{"build":{"NodesEvaluated":1,"NodesFiltered":1,
                "ConstraintFiltered":{"missing drivers":1},"ClassFiltered":null,
                "DimensionExhausted":null,"NodesExhausted":0,"Scores":null}},
              "QueuedAllocations":{"build":1}}"#,
        )
        .unwrap();
        let msg = e.placement_failure().unwrap();
        assert!(msg.contains("group \"build\""), "{msg}");
        assert!(msg.contains("missing drivers: 1"), "{msg}");
        assert!(msg.contains("1 of 1 nodes filtered"), "{msg}");
    }

    #[test]
    fn placed_evaluation_has_no_failure() {
        let e: Evaluation =
            serde_json::from_str(r#"{"ID":"e1","Status":"complete","FailedTGAllocs":null}"#)
                .unwrap();
        assert_eq!(e.placement_failure(), None);
    }
}
