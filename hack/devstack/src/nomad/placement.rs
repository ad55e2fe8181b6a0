//! The emulated node and the scheduler's feasibility checks (Nomad `scheduler/feasible.go`):
//! a task group is placed on the node only when the node has every task's driver and satisfies every
//! job, group and task constraint. A group that cannot be placed yields a `FailedTGAllocs` entry
//! (`AllocMetric`) whose `ConstraintFiltered` key is `missing drivers` or the constraint's
//! `"<LTarget> <Operand> <RTarget>"` text, exactly as Nomad reports it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::spec::{ConstraintSpec, GroupSpec, JobSpec};

/// Drivers every emulated node has; `docker` joins them when an engine answers (attribute
/// `driver.docker`, see [`Node::drivers`]).
pub const DRIVERS: [&str; 2] = ["raw_exec", "exec"];

/// The single emulated client node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node ID (UUID).
    pub id: String,
    /// Node name.
    pub name: String,
    /// Datacenter (`dc1`).
    pub datacenter: String,
    /// Attributes (`kernel.name`, `driver.raw_exec`, ...), without the `attr.` prefix.
    pub attributes: BTreeMap<String, String>,
    /// Node meta, without the `meta.` prefix.
    pub meta: BTreeMap<String, String>,
}

impl Node {
    /// The node `devstack-node` in `dc1`, with the attributes of this host.
    pub fn local() -> Node {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let mut attributes = BTreeMap::new();
        for (k, v) in [
            ("kernel.name", std::env::consts::OS.to_string()),
            ("os.name", std::env::consts::OS.to_string()),
            ("cpu.arch", arch.to_string()),
            ("driver.raw_exec", "1".to_string()),
            ("driver.exec", "1".to_string()),
            ("unique.hostname", hostname),
            ("nomad.version", "1.9.0".to_string()),
            ("cpu.numcores", num_cpus().to_string()),
        ] {
            attributes.insert(k.to_string(), v);
        }
        let mut meta = BTreeMap::new();
        meta.insert("devstack".to_string(), "true".to_string());
        Node {
            id: uuid::Uuid::new_v4().to_string(),
            name: "devstack-node".into(),
            datacenter: "dc1".into(),
            attributes,
            meta,
        }
    }

    /// Resolves a constraint target: `${attr.X}`, `${meta.X}`, `${node.datacenter}`,
    /// `${node.unique.id}`, `${node.unique.name}`, `${node.class}`, `${node.region}`; anything
    /// else not wrapped in `${}` is a literal. `None` = the target is not set on this node.
    pub fn resolve(&self, target: &str) -> Option<String> {
        let Some(inner) = target.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
            return Some(target.to_string());
        };
        if let Some(a) = inner.strip_prefix("attr.") {
            return self.attributes.get(a).cloned();
        }
        if let Some(m) = inner.strip_prefix("meta.") {
            return self.meta.get(m).cloned();
        }
        match inner {
            "node.datacenter" => Some(self.datacenter.clone()),
            "node.unique.id" => Some(self.id.clone()),
            "node.unique.name" => Some(self.name.clone()),
            "node.class" => Some(String::new()),
            "node.region" => Some("global".into()),
            "node.pool" => Some("default".into()),
            _ => None,
        }
    }

    /// Whether the node satisfies `c` (Nomad `checkConstraint`).
    pub fn satisfies(&self, c: &ConstraintSpec) -> bool {
        let l = self.resolve(&c.l_target);
        let r = self.resolve(&c.r_target);
        match c.operand.as_str() {
            "" | "=" | "==" | "is" => l.is_some() && l == r,
            "!=" | "not" => l != r,
            "is_set" => l.is_some(),
            "is_not_set" => l.is_none(),
            "regexp" => match (l, r) {
                (Some(l), Some(r)) => regex::Regex::new(&r).is_ok_and(|re| re.is_match(&l)),
                _ => false,
            },
            "set_contains" | "set_contains_all" => match (l, r) {
                (Some(l), Some(r)) => {
                    let have: Vec<&str> = l.split(',').map(str::trim).collect();
                    r.split(',').map(str::trim).all(|x| have.contains(&x))
                }
                _ => false,
            },
            "set_contains_any" => match (l, r) {
                (Some(l), Some(r)) => {
                    let have: Vec<&str> = l.split(',').map(str::trim).collect();
                    r.split(',').map(str::trim).any(|x| have.contains(&x))
                }
                _ => false,
            },
            "<" | "<=" | ">" | ">=" => match (l, r) {
                (Some(l), Some(r)) => {
                    let ord = match (l.parse::<f64>(), r.parse::<f64>()) {
                        (Ok(a), Ok(b)) => a.partial_cmp(&b),
                        _ => Some(l.cmp(&r)),
                    };
                    matches!(
                        (c.operand.as_str(), ord),
                        ("<", Some(std::cmp::Ordering::Less))
                            | (
                                "<=",
                                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                            )
                            | (">", Some(std::cmp::Ordering::Greater))
                            | (
                                ">=",
                                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                            )
                    )
                }
                _ => false,
            },
            // distinct_hosts / distinct_property are satisfied by a single allocation per node.
            "distinct_hosts" | "distinct_property" => true,
            // version/semver and unknown operands: Nomad would evaluate them; the emulator
            // cannot, so the node does not satisfy them (the failure names the constraint).
            _ => false,
        }
    }

    /// The drivers of this node: those with a `driver.<name>` attribute (Nomad's fingerprint).
    pub fn drivers(&self) -> Vec<&str> {
        self.attributes
            .keys()
            .filter_map(|k| k.strip_prefix("driver."))
            .filter(|d| !d.contains('.'))
            .collect()
    }

    /// `GET /v1/node/:id` body.
    pub fn to_json(&self) -> Value {
        let drivers: serde_json::Map<String, Value> = self
            .drivers()
            .iter()
            .map(|d| {
                (
                    (*d).to_string(),
                    json!({"Detected": true, "Healthy": true, "HealthDescription": "Healthy"}),
                )
            })
            .collect();
        json!({
            "ID": self.id, "Name": self.name, "Datacenter": self.datacenter,
            "NodeClass": "", "NodePool": "default", "Status": "ready",
            "SchedulingEligibility": "eligible", "Drain": false,
            "Attributes": self.attributes, "Meta": self.meta, "Drivers": drivers,
            "HTTPAddr": "127.0.0.1:4646",
        })
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn dc_matches(pattern: &str, dc: &str) -> bool {
    if pattern == "*" || pattern == dc {
        return true;
    }
    match pattern.split_once('*') {
        Some((pre, suf)) => dc.starts_with(pre) && dc.ends_with(suf),
        None => false,
    }
}

/// Checks whether `group` of `job` can be placed on `node`. `Ok(())` = feasible; `Err(metric)` =
/// the group's `AllocMetric` as Nomad's `FailedTGAllocs` holds it.
pub fn check_group(node: &Node, job: &JobSpec, group: &GroupSpec) -> Result<(), Value> {
    let dcs_ok = job.datacenters.is_empty()
        || job
            .datacenters
            .iter()
            .any(|d| dc_matches(d, &node.datacenter));
    if !dcs_ok {
        return Err(metric(0, None, group.count()));
    }
    let missing_driver = group
        .tasks
        .iter()
        .any(|t| !node.drivers().contains(&t.driver.as_str()));
    if missing_driver {
        return Err(metric(1, Some("missing drivers".into()), group.count()));
    }
    let failed = job
        .constraints
        .iter()
        .chain(group.constraints.iter())
        .chain(group.tasks.iter().flat_map(|t| t.constraints.iter()))
        .find(|c| !node.satisfies(c));
    match failed {
        Some(c) => Err(metric(1, Some(c.to_string()), group.count())),
        None => Ok(()),
    }
}

fn metric(evaluated: u64, filter: Option<String>, count: usize) -> Value {
    let (filtered, constraint) = match filter {
        Some(f) => (evaluated, json!({ f: evaluated })),
        None => (0, Value::Null),
    };
    json!({
        "NodesEvaluated": evaluated,
        "NodesFiltered": filtered,
        "NodesInPool": 1,
        "NodesAvailable": { "dc1": 1 },
        "ClassFiltered": null,
        "ConstraintFiltered": constraint,
        "NodesExhausted": 0,
        "ClassExhausted": null,
        "DimensionExhausted": null,
        "QuotaExhausted": null,
        "ResourcesExhausted": null,
        "Scores": null,
        "ScoreMetaData": null,
        "AllocationTime": 10_000,
        "CoalescedFailures": count.saturating_sub(1),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::nomad::spec::TaskSpec;

    fn group(driver: &str) -> GroupSpec {
        GroupSpec {
            name: "g".into(),
            tasks: vec![TaskSpec {
                name: "t".into(),
                driver: driver.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn docker_groups_fail_with_missing_drivers() {
        let node = Node::local();
        let m = check_group(&node, &JobSpec::default(), &group("docker")).unwrap_err();
        assert_eq!(m["ConstraintFiltered"]["missing drivers"], 1);
        assert_eq!(m["NodesFiltered"], 1);
        assert!(check_group(&node, &JobSpec::default(), &group("raw_exec")).is_ok());
    }

    #[test]
    fn unsatisfied_constraints_are_named_as_nomad_prints_them() {
        let node = Node::local();
        let job = JobSpec {
            constraints: vec![ConstraintSpec {
                l_target: "${attr.kernel.name}".into(),
                r_target: "windows".into(),
                operand: "=".into(),
            }],
            ..Default::default()
        };
        let m = check_group(&node, &job, &group("raw_exec")).unwrap_err();
        assert_eq!(m["ConstraintFiltered"]["${attr.kernel.name} = windows"], 1);
    }

    #[test]
    fn node_attributes_and_datacenter_resolve() {
        let node = Node::local();
        assert_eq!(
            node.resolve("${attr.driver.raw_exec}").as_deref(),
            Some("1")
        );
        assert_eq!(node.resolve("${node.datacenter}").as_deref(), Some("dc1"));
        assert_eq!(node.resolve("${attr.nope}"), None);
        assert!(dc_matches("dc*", "dc1"));
    }
}
