//! The benchmark harness works end to end on a tiny workload (`--smoke`: 20 requests, one failover
//! trial, 3 s idle windows): it exits 0 and writes JSON holding every figure, each finite.
//!
//! Needs the debug binaries of the dev stack and the controller (`cargo build --workspace --bins`,
//! which `hack/test.sh` runs first).

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Instant;

/// Every figure a full run of all scenarios reports.
const METRICS: &[&str] = &[
    "floor.put_blocking_get.p50_ms",
    "floor.put_blocking_get.p99_ms",
    "reaction.p50_ms",
    "reaction.p99_ms",
    "reaction.max_ms",
    "reaction.back_to_back.p50_ms",
    "reaction.back_to_back.p99_ms",
    "alloc_to_status.p50_ms",
    "alloc_to_status.p99_ms",
    "throughput.write_s",
    "throughput.all_registered_s",
    "throughput.all_succeeded_s",
    "throughput.failed",
    "controller.peak_rss_mb",
    "controller.cpu_s",
    "idle.leader.consul_req_per_min",
    "idle.leader.nomad_req_per_min",
    "idle.leader.total_req_per_min",
    "idle.standby.total_req_per_min",
    "failover.sigkill.p50_s",
    "failover.sigterm.p50_s",
    "failover.session_ttl_s",
    "failover.lock_delay_s",
    "baseline.polling.p50_ms",
    "baseline.polling.p99_ms",
    "baseline.ratio_x",
    "fairness.b_queue_wait_p95_ms",
    "scale.full.reaction_p50_ms",
    "scale.full.kv_bytes_per_change",
    "scale.full.kv_bytes_per_request",
    "scale.controller_peak_rss_mb",
    "scale.idle_parked_after_s",
    "scale.idle_leader_requests_per_min",
    "scale.parked.reaction_ms",
];

#[test]
fn smoke_run_writes_every_metric_finite() {
    let bin = env!("CARGO_BIN_EXE_jobforge-bench");
    let dir = std::path::Path::new(bin).parent().unwrap();
    for name in ["jobforge-devstack", "jobforge-controller"] {
        assert!(
            dir.join(name).is_file(),
            "{} is not built: run `cargo build --workspace --bins` first",
            dir.join(name).display()
        );
    }
    let out = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let st = Command::new(bin)
        .args(["--smoke", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    eprintln!("smoke run took {:?}", started.elapsed());
    assert!(st.success(), "jobforge-bench --smoke exited with {st}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    assert_eq!(doc["mode"], "smoke");
    assert_eq!(doc["errors"], serde_json::json!([]), "{doc:#}");
    let metrics = doc["metrics"].as_array().unwrap();
    for name in METRICS {
        let m = metrics
            .iter()
            .find(|m| m["name"] == *name)
            .unwrap_or_else(|| panic!("{name} missing from {doc:#}"));
        let v = m["value"].as_f64();
        assert!(
            v.is_some_and(f64::is_finite),
            "{name} is not a finite number: {m}"
        );
    }
    assert!(doc["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert_eq!(
        doc["config"]["tasks"], "dev stack mock driver (no task process)",
        "the default run measures the control plane alone"
    );
}

/// `--tasks process` runs the pipeline's real phase scripts (no-op build tools): the throughput
/// scenario still ends with every request `Succeeded` and none failed.
#[test]
fn smoke_run_with_task_processes_succeeds() {
    let bin = env!("CARGO_BIN_EXE_jobforge-bench");
    let out = tempfile::NamedTempFile::new().unwrap();
    let st = Command::new(bin)
        .args(["--smoke", "--tasks", "process", "throughput", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "jobforge-bench --tasks process exited with {st}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    assert_eq!(doc["errors"], serde_json::json!([]), "{doc:#}");
    assert!(
        doc["config"]["tasks"]
            .as_str()
            .unwrap()
            .contains("tests/fakes"),
        "{doc:#}"
    );
    let failed = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "throughput.failed")
        .unwrap_or_else(|| panic!("throughput.failed missing from {doc:#}"));
    assert_eq!(failed["value"], 0.0, "{doc:#}");
}
