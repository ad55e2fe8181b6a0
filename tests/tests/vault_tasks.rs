//! Task environments on the dev stack process (`jobforge-devstack`), as a Nomad client builds them
//! for raw_exec: the agent's own environment passes to tasks, minus Nomad's `env.denylist`
//! (`VAULT_TOKEN`, `CONSUL_HTTP_TOKEN`, `NOMAD_TOKEN`, ...) and minus the configuration of the dev
//! stack's co-located Vault server (`VAULT_DEV_ROOT_TOKEN_ID`); a task with a Vault block sees its
//! own token only.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobforge_tests::{DevStackOptions, DevStackProcess, wait_until};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_stacks_tokens_never_reach_a_task_environment() {
    let root = format!("devroot-{}", std::process::id());
    let stack = DevStackProcess::start(DevStackOptions {
        env: vec![
            ("VAULT_DEV_ROOT_TOKEN_ID".into(), root.clone()),
            ("VAULT_TOKEN".into(), "agent-vault-token".into()),
            ("CONSUL_HTTP_TOKEN".into(), "agent-consul-token".into()),
            ("NOMAD_TOKEN".into(), "agent-nomad-token".into()),
            ("JOBFORGE_PASSTHROUGH".into(), "visible".into()),
        ],
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let http = reqwest::Client::new();
    let job = json!({"Job": {"ID": "envdump", "Type": "batch", "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
            "Tasks": [{"Name": "t", "Driver": "raw_exec",
                "Vault": {"Policies": ["jobforge-default"]},
                "Config": {"command": "/usr/bin/env"}}]}]}});
    let r = http
        .post(format!("{}/v1/jobs", stack.nomad))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let allocs_url = format!("{}/v1/job/envdump/allocations", stack.nomad);
    let finished = |a: &Value| a["ClientStatus"] == "complete" || a["ClientStatus"] == "failed";
    wait_until(Duration::from_secs(30), "the task ends", || {
        let http = http.clone();
        let url = allocs_url.clone();
        async move {
            let v: Vec<Value> = http.get(&url).send().await?.json().await?;
            Ok(v.first().is_some_and(finished))
        }
    })
    .await
    .expect("task finished");
    let allocs: Vec<Value> = http
        .get(&allocs_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(allocs[0]["ClientStatus"], "complete", "{}", allocs[0]);
    let alloc = allocs[0]["ID"].as_str().unwrap();
    let env = http
        .get(format!(
            "{}/v1/client/fs/logs/{alloc}?task=t&type=stdout&plain=true",
            stack.nomad
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(env.contains("JOBFORGE_PASSTHROUGH=visible\n"), "{env}");
    for secret in [
        "VAULT_DEV_ROOT_TOKEN_ID",
        root.as_str(),
        "agent-vault-token",
        "agent-consul-token",
        "agent-nomad-token",
        "CONSUL_HTTP_TOKEN",
        "NOMAD_TOKEN",
    ] {
        assert!(!env.contains(secret), "{secret} reached the task:\n{env}");
    }
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("VAULT_TOKEN="))
        .expect("the task's own VAULT_TOKEN");
    assert!(token.starts_with("hvs."), "{token}");
}
