//! The orphan sweep (issue 14, "Nomad actions are fenced too"): which Nomad job belongs to which
//! request, told by the job's Meta, and when such a job is an orphan to stop.
//!
//! Every Nomad register, deregister and purge is preceded by a fenced check that this replica
//! still leads (`Reconciler::ensure_leader`), and a term's reconciles are aborted as soon as the
//! campaign sees leadership lost. One window stays: a leader that passed the check and is then
//! paused (GC, SIGSTOP, a VM migration) can still reach Nomad after its successor took over,
//! for a request deleted or re-specified meanwhile. Its job would then run with no request to
//! own it. The leader therefore sweeps at most every `--sweep-interval` (default [`DEFAULT_SWEEP_INTERVAL`]; the first one
//! interval after a term starts; later ones only once a blocking job list says the jobs changed,
//! which a late register always does: `runtime.rs` `sweep_loop`): every live job whose ID starts with [`JOB_ID_PREFIX`] **and** whose Meta
//! (`jobforge.request` = `<namespace>/<name>`, `jobforge.generation`, set by
//! `jobspec::render`) names a request that no longer exists, or a generation that is not the
//! request's current one (its spec key's `ModifyIndex`), is stopped. A job without that Meta is
//! never touched, whatever its ID says: the ID prefix alone is ambiguous (`jobforge-a-b-…` may
//! be request `a`/`b…` or `a-b`/`…`) and anyone may name a job `jobforge-…`.

use std::collections::BTreeMap;
use std::time::Duration;

/// Every job ID the controller renders starts with this (`machine::job_id`).
pub const JOB_ID_PREFIX: &str = "jobforge-";

/// Default sweep interval (`--sweep-interval`): a late register by a deposed leader is stopped
/// within this long.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The request and generation a Nomad job was rendered for, from its Meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOwner {
    /// Request namespace.
    pub namespace: String,
    /// Request name.
    pub name: String,
    /// Generation (the spec's `ModifyIndex` when the job was rendered).
    pub generation: u64,
}

impl JobOwner {
    /// Reads `jobforge.request` (`<namespace>/<name>`, exactly one `/`) and
    /// `jobforge.generation` (decimal); `None` when either is missing or malformed.
    pub fn from_meta(meta: &BTreeMap<String, String>) -> Option<JobOwner> {
        let request = meta.get("jobforge.request")?;
        let (namespace, name) = request.split_once('/')?;
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        let generation = meta.get("jobforge.generation")?.parse().ok()?;
        Some(JobOwner {
            namespace: namespace.to_string(),
            name: name.to_string(),
            generation,
        })
    }

    /// True when this job belongs to request `namespace`/`name`.
    pub fn is_request(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.name == name
    }

    /// Why the job is an orphan given its request's current generation (`None` = the request
    /// does not exist), or `None` when it is not one.
    pub fn orphaned(&self, current_generation: Option<u64>) -> Option<&'static str> {
        match current_generation {
            None => Some("its request no longer exists"),
            Some(g) if g != self.generation => {
                Some("its generation is not the request's current one")
            }
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn owner_comes_from_meta_only() {
        let m = meta(&[
            ("jobforge.request", "team-a/app"),
            ("jobforge.generation", "42"),
        ]);
        let o = JobOwner::from_meta(&m).expect("valid meta");
        assert!(o.is_request("team-a", "app"));
        assert!(!o.is_request("team", "a-app"));
        assert_eq!(o.generation, 42);
        for bad in [
            meta(&[("jobforge.request", "team-a/app")]),
            meta(&[("jobforge.generation", "42")]),
            meta(&[("jobforge.request", "team-a"), ("jobforge.generation", "4")]),
            meta(&[("jobforge.request", "a/b/c"), ("jobforge.generation", "4")]),
            meta(&[("jobforge.request", "/b"), ("jobforge.generation", "4")]),
            meta(&[("jobforge.request", "a/b"), ("jobforge.generation", "x")]),
        ] {
            assert_eq!(JobOwner::from_meta(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn orphan_when_request_gone_or_generation_differs() {
        let o = JobOwner {
            namespace: "a".into(),
            name: "b".into(),
            generation: 7,
        };
        assert!(o.orphaned(None).is_some());
        assert!(o.orphaned(Some(8)).is_some());
        assert!(o.orphaned(Some(6)).is_some());
        assert_eq!(o.orphaned(Some(7)), None);
    }
}
