//! Fair scheduling and concurrency groups on the dev stack (issue 17): build slots from
//! `<prefix>/config` `concurrency` (requests past a cap wait `Pending`/`Queued`), and a newer
//! request of a `concurrency_group` supersedes an older unfinished one. Builds are the no-op
//! fakes made slow (`JOBFORGE_FAKE_BUILD_SLEEP`) so that they are still running when it matters.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobforge_tests::{ControllerProcess, DevStackProcess, GitRepo, request_json};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn status_key(ns: &str, name: &str) -> String {
    format!("jobforge/status/{ns}/{name}")
}

fn reason(st: &Value) -> &str {
    st["conditions"][0]["reason"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_request_of_a_concurrency_group_supersedes_the_running_older_one() {
    let stack = DevStackProcess::with_slow_builds(37).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let kv = stack.kv();
    let spec = json!({"repo_url": repo.url, "concurrency_group": "main"});
    assert!(
        kv.put(
            "jobforge/requests/team-a/build-1",
            &request_json("team-a", "build-1", spec.clone())
        )
        .await
        .unwrap()
    );
    let first = kv
        .wait_json(&status_key("team-a", "build-1"), T, |v| {
            v["phase"] == "Building"
        })
        .await
        .expect("build-1 builds");
    let first_job = first["phases"]["build"]["nomadJobId"]
        .as_str()
        .unwrap()
        .to_string();
    // Another group and another namespace are not touched.
    let other = json!({"repo_url": repo.url, "concurrency_group": "release"});
    kv.put(
        "jobforge/requests/team-a/other",
        &request_json("team-a", "other", other),
    )
    .await
    .unwrap();
    kv.put(
        "jobforge/requests/team-b/build-1",
        &request_json("team-b", "build-1", spec.clone()),
    )
    .await
    .unwrap();
    kv.put(
        "jobforge/requests/team-a/build-2",
        &request_json("team-a", "build-2", spec),
    )
    .await
    .unwrap();
    let old = kv
        .wait_json(&status_key("team-a", "build-1"), T, |v| {
            v["phase"] == "Cancelled"
        })
        .await
        .expect("build-1 superseded");
    assert_eq!(reason(&old), "Superseded", "{old:#}");
    let msg = old["conditions"][0]["message"].as_str().unwrap_or("");
    assert!(msg.contains("superseded by build-2"), "{msg}");
    stack
        .wait_job_stopped(&first_job, T)
        .await
        .expect("the superseded build's job is stopped");
    for (ns, name) in [
        ("team-a", "build-2"),
        ("team-a", "other"),
        ("team-b", "build-1"),
    ] {
        let st = kv
            .wait_json(&status_key(ns, name), T, |v| v["phase"] == "Building")
            .await
            .unwrap_or_else(|e| panic!("{ns}/{name} builds: {e:#}"));
        assert_ne!(st["phase"], "Cancelled");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_past_the_namespace_cap_wait_queued_with_their_position_and_start_when_a_slot_frees()
 {
    let stack = DevStackProcess::with_slow_builds(3).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let kv = stack.kv();
    let config = json!({"concurrency": {"max_builds": 4, "namespace_max_builds": 1}});
    kv.put("jobforge/config", &serde_json::to_vec(&config).unwrap())
        .await
        .unwrap();
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let spec = json!({"repo_url": repo.url});
    for name in ["a1", "a2", "a3"] {
        kv.put(
            &format!("jobforge/requests/team-a/{name}"),
            &request_json("team-a", name, spec.clone()),
        )
        .await
        .unwrap();
    }
    kv.put(
        "jobforge/requests/team-b/b1",
        &request_json("team-b", "b1", spec.clone()),
    )
    .await
    .unwrap();
    // team-b is not behind team-a's backlog.
    kv.wait_json(&status_key("team-b", "b1"), T, |v| v["phase"] != "Pending")
        .await
        .expect("b1 starts");
    let queued = kv
        .wait_json(&status_key("team-a", "a3"), T, |v| reason(v) == "Queued")
        .await
        .expect("a3 queued");
    assert_eq!(queued["phase"], "Pending", "{queued:#}");
    let msg = queued["conditions"][0]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("position") && msg.contains("namespace team-a"),
        "{msg}"
    );
    // Its message is kept true: behind a2 while a1 runs, then first once a2 has started
    // (whichever of the three the controller happened to read first).
    kv.wait_json(&status_key("team-a", "a3"), T, |v| {
        v["conditions"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("position 2 of 2 waiting in namespace team-a"))
    })
    .await
    .expect("a3 told it is second");
    kv.wait_json(&status_key("team-a", "a2"), T, |v| v["phase"] != "Pending")
        .await
        .expect("a2 starts");
    let first = kv
        .wait_json(&status_key("team-a", "a3"), T, |v| {
            v["phase"] != "Pending"
                || v["conditions"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("position 1 of 1 waiting in namespace team-a"))
        })
        .await
        .expect("a3 told it is first");
    assert_eq!(
        first["phase"], "Pending",
        "a3 started before a2 ended: {first:#}"
    );
    // All of them finish, one team-a build at a time.
    for name in ["a1", "a2", "a3"] {
        let st = kv
            .wait_json(&status_key("team-a", name), T, |v| {
                v["phase"] == "Succeeded" || v["phase"] == "Failed"
            })
            .await
            .expect("terminal");
        assert_eq!(st["phase"], "Succeeded", "{st:#}");
    }
    // Never two team-a pipelines at once: each starts after the previous one completed.
    let time = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or("")).expect("RFC 3339 time")
    };
    let mut spans = Vec::new();
    for name in ["a1", "a2", "a3"] {
        let (_, got) = kv
            .get(&status_key("team-a", name), 0, Duration::ZERO)
            .await
            .unwrap();
        let st: Value = serde_json::from_slice(&got.unwrap().0).unwrap();
        spans.push((
            time(&st["phases"]["build"]["startedAt"]),
            time(&st["completionTime"]),
        ));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "overlapping team-a builds: {spans:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_its_namespaces_storage_quota_fails_invalid_spec_naming_the_quota() {
    let stack = DevStackProcess::with_slow_builds(2).expect("dev stack");
    let repo = GitRepo::hello_world().expect("repo");
    let kv = stack.kv();
    let config = json!({"concurrency": {"namespace_max_requests": 2}});
    kv.put("jobforge/config", &serde_json::to_vec(&config).unwrap())
        .await
        .unwrap();
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let spec = json!({"repo_url": repo.url});
    for name in ["q1", "q2", "q3"] {
        kv.put(
            &format!("jobforge/requests/team-q/{name}"),
            &request_json("team-q", name, spec.clone()),
        )
        .await
        .unwrap();
    }
    let refused = kv
        .wait_json(&status_key("team-q", "q3"), T, |v| v["phase"] == "Failed")
        .await
        .expect("q3 refused");
    assert_eq!(refused["failure"]["reason"], "InvalidSpec", "{refused:#}");
    let msg = refused["failure"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("quota is 2"), "{msg}");
    for name in ["q1", "q2"] {
        let st = kv
            .wait_json(&status_key("team-q", name), T, |v| {
                v["phase"] == "Succeeded" || v["phase"] == "Failed"
            })
            .await
            .expect("terminal");
        assert_eq!(st["phase"], "Succeeded", "{st:#}");
    }
    // Another namespace has its own quota.
    kv.put(
        "jobforge/requests/team-r/r1",
        &request_json("team-r", "r1", spec),
    )
    .await
    .unwrap();
    let st = kv
        .wait_json(&status_key("team-r", "r1"), T, |v| v["phase"] != "Pending")
        .await
        .expect("r1 starts");
    assert_ne!(st["phase"], "Failed", "{st:#}");
}
