//! The controller drives requests through Nomad: integration tests against the dev stack with the
//! no-op tool stand-ins of `tests/fakes` (the control plane is under test, not buildah; the
//! end-to-end tests run real buildah). Every process is stopped by its guard, even on failure.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, request_json, wait_process,
    wait_until,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn fake_stack() -> DevStackProcess {
    DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack")
}

fn status_key(ns: &str, name: &str) -> String {
    format!("jobforge/status/{ns}/{name}")
}

fn spec_with_repo(repo: &GitRepo, extra: Value) -> Value {
    let mut s = json!({"repo_url": repo.url, "image_tags": ["v1", "latest"]});
    if let (Some(a), Some(b)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    s
}

async fn nomad_jobs(stack: &DevStackProcess, prefix: &str) -> Vec<Value> {
    reqwest::get(format!("{}/v1/jobs?prefix={prefix}", stack.nomad))
        .await
        .expect("nomad")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_request_succeeds_with_all_three_phases_recorded() {
    let stack = fake_stack();
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    let spec = spec_with_repo(
        &repo,
        json!({"test": {"entry_point": true, "commands": ["echo selftest ok"]}}),
    );
    assert!(
        kv.put(
            "jobforge/requests/default/ok",
            &request_json("default", "ok", spec)
        )
        .await
        .unwrap()
    );
    let st = kv
        .wait_json(&status_key("default", "ok"), T, |v| {
            v["phase"] == "Succeeded" || v["phase"] == "Failed"
        })
        .await
        .expect("terminal");
    assert_eq!(st["phase"], "Succeeded", "{st:#}");
    for phase in ["build", "test", "publish"] {
        let rec = &st["phases"][phase];
        assert_eq!(rec["exitCode"], 0, "{phase}: {st:#}");
        assert!(
            rec["nomadJobId"].as_str().unwrap_or("").ends_with(phase),
            "{st:#}"
        );
        assert!(
            rec["allocId"].is_string() && rec["finishedAt"].is_string(),
            "{st:#}"
        );
    }
    assert_eq!(st["source"]["commitSha"], repo.head.as_str(), "{st:#}");
    assert!(
        st["image"]["digest"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"),
        "{st:#}"
    );
    let cond = &st["conditions"][0];
    assert_eq!(
        (cond["type"].as_str(), cond["status"].as_str()),
        (Some("Succeeded"), Some("True"))
    );
    let (_, spec_meta) = kv
        .get("jobforge/requests/default/ok", 0, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        st["observedGeneration"].as_u64(),
        spec_meta.map(|(_, mi)| mi)
    );
    let (_, logs) = kv
        .get("jobforge/logs/default/ok/test", 0, Duration::ZERO)
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.expect("test log tail").0).into_owned();
    assert!(logs.contains("selftest ok"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_test_command_fails_with_exit_code_and_output_in_log_tail() {
    let stack = fake_stack();
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    let spec = spec_with_repo(
        &repo,
        json!({"test": {"commands": ["echo about to fail; exit 3"]}}),
    );
    kv.put(
        "jobforge/requests/default/bad",
        &request_json("default", "bad", spec),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json(&status_key("default", "bad"), T, |v| {
            v["phase"] == "Failed" || v["phase"] == "Succeeded"
        })
        .await
        .expect("terminal");
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["failure"]["reason"], "TestFailed", "{st:#}");
    assert_eq!(st["phases"]["test"]["exitCode"], 3, "{st:#}");
    assert!(
        st["failure"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("jobforge logs"),
        "{st:#}"
    );
    assert!(
        st["phases"]["publish"].is_null(),
        "publish must not run: {st:#}"
    );
    let (_, logs) = kv
        .get("jobforge/logs/default/bad/test", 0, Duration::ZERO)
        .await
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.expect("log tail").0).into_owned();
    assert!(logs.contains("about to fail"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_rerun_a_failed_pipeline_with_the_next_attempt() {
    let stack = fake_stack();
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    let spec = spec_with_repo(
        &repo,
        json!({"retries": 1, "test": {"commands": ["exit 1"]}}),
    );
    kv.put(
        "jobforge/requests/default/retry",
        &request_json("default", "retry", spec),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json(&status_key("default", "retry"), T, |v| {
            v["phase"] == "Failed" || v["phase"] == "Succeeded"
        })
        .await
        .expect("terminal");
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["attempt"], 2, "{st:#}");
    let jobs = nomad_jobs(&stack, "jobforge-default-retry-").await;
    let builds: Vec<&str> = jobs
        .iter()
        .filter_map(|j| j["ID"].as_str())
        .filter(|id| id.contains("-build"))
        .collect();
    assert_eq!(builds.len(), 2, "one build job per attempt: {builds:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn build_past_its_timeout_fails_timeout_and_its_job_is_stopped() {
    let stack = DevStackProcess::with_slow_builds(611).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    let spec = spec_with_repo(&repo, json!({"build_timeout": "2s"}));
    kv.put(
        "jobforge/requests/default/slow",
        &request_json("default", "slow", spec),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json(&status_key("default", "slow"), T, |v| {
            v["phase"] == "Failed"
        })
        .await
        .expect("failed");
    assert_eq!(st["failure"]["reason"], "Timeout", "{st:#}");
    let job_id = st["phases"]["build"]["nomadJobId"]
        .as_str()
        .expect("job id")
        .to_string();
    stack
        .wait_job_stopped(&job_id, Duration::from_secs(20))
        .await
        .expect("job stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_build_stops_the_job_and_ends_cancelled() {
    let stack = DevStackProcess::with_slow_builds(612).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    let spec = spec_with_repo(&repo, json!({}));
    kv.put(
        "jobforge/requests/default/c",
        &request_json("default", "c", spec.clone()),
    )
    .await
    .unwrap();
    kv.wait_json(&status_key("default", "c"), T, |v| {
        v["phase"] == "Building" && v["phases"]["build"]["allocId"].is_string()
    })
    .await
    .expect("building");
    wait_process("sleep 612", true, Duration::from_secs(20))
        .await
        .expect("the slow build runs");
    let mut cancelled = spec;
    cancelled["cancel"] = json!(true);
    kv.put(
        "jobforge/requests/default/c",
        &request_json("default", "c", cancelled),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json(&status_key("default", "c"), T, |v| {
            v["phase"] == "Cancelled"
        })
        .await
        .expect("cancelled");
    assert_eq!(st["conditions"][0]["status"], "False", "{st:#}");
    // The sleeping fake build is gone: no process of the dev stack still sleeps 600.
    wait_process("sleep 612", false, Duration::from_secs(20))
        .await
        .expect("process gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_running_request_purges_its_jobs_status_and_logs() {
    let stack = DevStackProcess::with_slow_builds(613).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    kv.put(
        "jobforge/requests/default/d",
        &request_json("default", "d", spec_with_repo(&repo, json!({}))),
    )
    .await
    .unwrap();
    kv.wait_json(&status_key("default", "d"), T, |v| v["phase"] == "Building")
        .await
        .expect("building");
    wait_process("sleep 613", true, Duration::from_secs(20))
        .await
        .expect("the slow build runs");
    kv.delete("jobforge/requests/default/d", false)
        .await
        .unwrap();
    let nomad = stack.nomad.clone();
    let kv2 = kv.clone();
    wait_until(T, "jobs, status and logs are gone", || {
        let nomad = nomad.clone();
        let kv = kv2.clone();
        async move {
            let jobs: Vec<Value> =
                reqwest::get(format!("{nomad}/v1/jobs?prefix=jobforge-default-d-"))
                    .await?
                    .json()
                    .await?;
            let status = kv.keys("jobforge/status/default/d").await?;
            let logs = kv.keys("jobforge/logs/default/d/").await?;
            Ok(jobs.is_empty() && status.is_empty() && logs.is_empty())
        }
    })
    .await
    .expect("purged");
    wait_process("sleep 613", false, Duration::from_secs(20))
        .await
        .expect("process gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_the_spec_mid_build_starts_the_new_generation_and_stops_the_old_job() {
    let stack = DevStackProcess::with_slow_builds(614).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    kv.put(
        "jobforge/requests/default/e",
        &request_json("default", "e", spec_with_repo(&repo, json!({}))),
    )
    .await
    .unwrap();
    let first = kv
        .wait_json(&status_key("default", "e"), T, |v| v["phase"] == "Building")
        .await
        .expect("building");
    let old_job = first["phases"]["build"]["nomadJobId"]
        .as_str()
        .expect("job")
        .to_string();
    kv.put(
        "jobforge/requests/default/e",
        &request_json(
            "default",
            "e",
            spec_with_repo(&repo, json!({"image_tags": ["v2"]})),
        ),
    )
    .await
    .unwrap();
    let old_gen = first["observedGeneration"].as_u64().unwrap_or(0);
    let second = kv
        .wait_json(&status_key("default", "e"), T, |v| {
            v["observedGeneration"].as_u64().unwrap_or(0) > old_gen && v["phase"] == "Building"
        })
        .await
        .expect("new generation building");
    assert_ne!(
        second["phases"]["build"]["nomadJobId"].as_str(),
        Some(old_job.as_str())
    );
    stack
        .wait_job_stopped(&old_job, Duration::from_secs(20))
        .await
        .expect("old job stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_invalid_spec_and_others_keep_being_served() {
    let stack = fake_stack();
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    kv.put("jobforge/requests/default/notjson", b"this is { not json")
        .await
        .unwrap();
    kv.put(
        "jobforge/requests/default/types",
        br#"{"apiVersion":"jobforge/v1alpha1","kind":"BuildRequest","metadata":{"name":"types"},"spec":{"owner":3,"retries":"many"}}"#,
    )
    .await
    .unwrap();
    kv.put("jobforge/requests/default/junk", &vec![b'#'; 500 * 1024])
        .await
        .unwrap();
    kv.put(
        "jobforge/requests/default/good",
        &request_json("default", "good", spec_with_repo(&repo, json!({}))),
    )
    .await
    .unwrap();
    for name in ["notjson", "types", "junk"] {
        let st = kv
            .wait_json(&status_key("default", name), T, |v| v["phase"] == "Failed")
            .await
            .expect("failed");
        assert_eq!(st["failure"]["reason"], "InvalidSpec", "{name}: {st:#}");
        assert!(st["phases"]["build"].is_null(), "no job for {name}");
    }
    let types = kv
        .wait_json(&status_key("default", "types"), T, |_| true)
        .await
        .expect("types");
    let msg = types["failure"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("spec.owner") && msg.contains("spec.retries"),
        "every problem is listed: {msg}"
    );
    let good = kv
        .wait_json(&status_key("default", "good"), T, |v| {
            v["phase"] == "Succeeded" || v["phase"] == "Failed"
        })
        .await
        .expect("good terminal");
    assert_eq!(good["phase"], "Succeeded", "{good:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unplaceable_job_waits_pending_unschedulable_with_the_evaluations_reason() {
    // The dev stack's node has only raw_exec and exec; the docker profile cannot be placed.
    let stack = fake_stack();
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &["--profile", "docker"])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    kv.put(
        "jobforge/requests/default/nowhere",
        &request_json("default", "nowhere", spec_with_repo(&repo, json!({}))),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json(&status_key("default", "nowhere"), T, |v| {
            v["conditions"][0]["reason"] == "Unschedulable"
        })
        .await
        .expect("unschedulable");
    assert_eq!(st["phase"], "Pending", "the job waits: {st:#}");
    assert_eq!(st["conditions"][0]["status"], "Unknown", "{st:#}");
    let msg = st["conditions"][0]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("missing drivers"),
        "the evaluation's reason: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_in_kv_is_reread_when_it_changes() {
    let stack = DevStackProcess::with_slow_builds(615).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    // The controller is already running: a new default build deadline must apply to the next request.
    kv.put("jobforge/config", br#"{"build_timeout": "2s"}"#)
        .await
        .unwrap();
    let (_, cfg) = kv.get("jobforge/config", 0, Duration::ZERO).await.unwrap();
    let cfg_index = cfg.expect("config").1;
    let status_url = format!("{}/status", ctl.http);
    wait_until(T, "the controller loaded the new configuration", || {
        let url = status_url.clone();
        async move {
            let s: Value = reqwest::get(&url).await?.json().await?;
            Ok(s["config_index"].as_u64() == Some(cfg_index))
        }
    })
    .await
    .expect("config loaded");
    kv.put(
        "jobforge/requests/default/cfg",
        &request_json("default", "cfg", spec_with_repo(&repo, json!({}))),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json(&status_key("default", "cfg"), T, |v| v["phase"] == "Failed")
        .await
        .expect("failed by the configured deadline");
    assert_eq!(st["failure"]["reason"], "Timeout", "{st:#}");
}
