//! Integration tests of the Nomad emulator over HTTP (reqwest), against `DevStack` on port 0.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::Engine;
use jobforge_devstack::{DevStack, DevStackConfig};
use serde_json::{Value, json};

struct Stack {
    inner: Option<DevStack>,
    http: reqwest::Client,
    url: String,
}

impl Stack {
    async fn start() -> Stack {
        Stack::start_with(DevStackConfig::ephemeral()).await
    }
    async fn start_with(cfg: DevStackConfig) -> Stack {
        let inner = DevStack::start(cfg).await.unwrap();
        let url = inner.nomad_url();
        Stack {
            inner: Some(inner),
            http: reqwest::Client::new(),
            url,
        }
    }
    async fn shutdown(mut self) {
        if let Some(s) = self.inner.take() {
            s.shutdown().await;
        }
    }
    fn stack(&self) -> &DevStack {
        self.inner.as_ref().unwrap()
    }
    async fn register(&self, job: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/jobs", self.url))
            .json(&json!({"Job": job}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        r.json().await.unwrap()
    }
    async fn allocs(&self, job: &str) -> Vec<Value> {
        self.http
            .get(format!("{}/v1/job/{job}/allocations", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    /// Blocks on the job's allocations until `pred` holds for the first alloc.
    async fn wait_alloc(&self, job: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut index = 0u64;
        loop {
            assert!(Instant::now() < deadline, "timed out waiting on {job}");
            let r = self
                .http
                .get(format!(
                    "{}/v1/job/{job}/allocations?index={index}&wait=5s",
                    self.url
                ))
                .send()
                .await
                .unwrap();
            index = r.headers()["X-Nomad-Index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let v: Vec<Value> = r.json().await.unwrap();
            if let Some(a) = v.first() {
                let full: Value = self
                    .http
                    .get(format!(
                        "{}/v1/allocation/{}",
                        self.url,
                        a["ID"].as_str().unwrap()
                    ))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if pred(&full) {
                    return full;
                }
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(s) = self.inner.take() {
            // Best effort on failure paths: kill tasks on a fresh runtime.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(s.shutdown());
            })
            .join()
            .ok();
        }
    }
}

fn job(id: &str, command: &str, args: &[&str]) -> Value {
    json!({"ID": id, "Name": id, "Type": "batch", "Datacenters": ["dc1"],
        "TaskGroups": [{"Name": "g", "Count": 1,
            "RestartPolicy": {"Attempts": 0, "Interval": 86_400_000_000_000i64, "Delay": 0, "Mode": "fail"},
            "Tasks": [{"Name": "t", "Driver": "raw_exec", "KillTimeout": 1_000_000_000i64,
                "Config": {"command": command, "args": args}}]}]})
}

fn terminal(a: &Value) -> bool {
    matches!(a["ClientStatus"].as_str(), Some("complete" | "failed"))
}

fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test]
async fn failing_batch_job_reports_exit_code_and_both_log_streams() {
    let s = Stack::start().await;
    s.register(job(
        "fail3",
        "/bin/sh",
        &["-c", "echo out-line; echo err-line >&2; exit 3"],
    ))
    .await;
    let a = s.wait_alloc("fail3", terminal).await;
    assert_eq!(a["ClientStatus"], "failed");
    let ts = &a["TaskStates"]["t"];
    assert_eq!(ts["State"], "dead");
    assert_eq!(ts["Failed"], true);
    let events: Vec<&str> = ts["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Type"].as_str().unwrap())
        .collect();
    assert!(
        events.starts_with(&["Received", "Task Setup", "Started", "Terminated"]),
        "{events:?}"
    );
    assert!(events.contains(&"Not Restarting"));
    let term = ts["Events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["Type"] == "Terminated")
        .unwrap();
    assert_eq!(term["ExitCode"], 3);
    let id = a["ID"].as_str().unwrap();
    for (kind, want) in [("stdout", "out-line\n"), ("stderr", "err-line\n")] {
        let plain = s
            .http
            .get(format!(
                "{}/v1/client/fs/logs/{id}?task=t&type={kind}&plain=true&follow=False",
                s.url
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(plain, want);
        let framed = s
            .http
            .get(format!(
                "{}/v1/client/fs/logs/{id}?task=t&type={kind}&follow=true",
                s.url
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut data = Vec::new();
        for f in serde_json::Deserializer::from_str(&framed).into_iter::<Value>() {
            let f = f.unwrap();
            if let Some(d) = f.get("Data") {
                assert_eq!(f["File"], format!("alloc/logs/t.{kind}.0"));
                data.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(d.as_str().unwrap())
                        .unwrap(),
                );
            }
        }
        assert_eq!(String::from_utf8(data).unwrap(), want);
        let tail = s
            .http
            .get(format!(
                "{}/v1/client/fs/logs/{id}?task=t&type={kind}&plain=true&origin=end&offset=5",
                s.url
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(tail, &want[want.len() - 5..]);
    }
    s.shutdown().await;
}

#[tokio::test]
async fn deregister_kills_a_sleeping_task_within_kill_timeout() {
    let s = Stack::start().await;
    s.register(job("sleeper", "sleep", &["600"])).await;
    let a = s
        .wait_alloc("sleeper", |a| a["TaskStates"]["t"]["State"] == "running")
        .await;
    let pid = s
        .stack()
        .nomad
        .as_ref()
        .unwrap()
        .task_pid(a["ID"].as_str().unwrap(), "t")
        .unwrap();
    assert!(pid_alive(pid));
    let t0 = Instant::now();
    let r = s
        .http
        .delete(format!("{}/v1/job/sleeper?purge=true", s.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    while pid_alive(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "pid {pid} still alive"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idempotent, and allocations of the purged job are gone.
    let r = s
        .http
        .delete(format!("{}/v1/job/sleeper?purge=true", s.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(s.allocs("sleeper").await.is_empty());
    let full: Value = s
        .http
        .get(format!(
            "{}/v1/allocation/{}",
            s.url,
            a["ID"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["DesiredStatus"], "stop");
    s.shutdown().await;
}

#[tokio::test]
async fn blocking_allocations_query_waits_for_a_change_and_returns_promptly_on_it() {
    let s = Stack::start().await;
    s.register(job("blk", "sleep", &["600"])).await;
    let a = s
        .wait_alloc("blk", |a| a["TaskStates"]["t"]["State"] == "running")
        .await;
    let r = s
        .http
        .get(format!("{}/v1/job/blk/allocations", s.url))
        .send()
        .await
        .unwrap();
    let idx: u64 = r.headers()["X-Nomad-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Nothing changes: the query runs to its wait.
    let t0 = Instant::now();
    let r = s
        .http
        .get(format!(
            "{}/v1/job/blk/allocations?index={idx}&wait=1s",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        r.headers()["X-Nomad-Index"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        idx
    );
    // A change (stop) wakes it at once.
    let url = format!("{}/v1/job/blk/allocations?index={idx}&wait=30s", s.url);
    let waiter = tokio::spawn({
        let http = s.http.clone();
        async move {
            let t0 = Instant::now();
            let r = http.get(url).send().await.unwrap();
            (
                t0.elapsed(),
                r.headers()["X-Nomad-Index"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.http
        .delete(format!("{}/v1/job/blk", s.url))
        .send()
        .await
        .unwrap();
    let (took, new_idx) = waiter.await.unwrap();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(new_idx > idx);
    let _ = a;
    s.shutdown().await;
}

/// `X-Nomad-Index` of an answer.
fn nomad_index(r: &reqwest::Response) -> u64 {
    r.headers()["X-Nomad-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn blocking_job_list_waits_for_a_job_change_under_its_prefix_and_wakes_on_a_register() {
    let s = Stack::start().await;
    s.register(job("jobforge-a", "sleep", &["600"])).await;
    let r = s
        .http
        .get(format!("{}/v1/jobs?prefix=jobforge-", s.url))
        .send()
        .await
        .unwrap();
    let idx = nomad_index(&r);
    // Wait for the job's own status changes (pending -> running) to settle.
    let idx = {
        let mut idx = idx;
        loop {
            let r = s
                .http
                .get(format!(
                    "{}/v1/jobs?prefix=jobforge-&index={idx}&wait=1s",
                    s.url
                ))
                .send()
                .await
                .unwrap();
            let got = nomad_index(&r);
            if got == idx {
                break idx;
            }
            idx = got;
        }
    };
    // Nothing changes: the query runs to its wait and answers the same index.
    let t0 = Instant::now();
    let r = s
        .http
        .get(format!(
            "{}/v1/jobs?prefix=jobforge-&index={idx}&wait=1s",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(900));
    assert_eq!(nomad_index(&r), idx);
    // A register wakes it at once, and the listing has the new job.
    let url = format!("{}/v1/jobs?prefix=jobforge-&index={idx}&wait=30s", s.url);
    let waiter = tokio::spawn({
        let http = s.http.clone();
        async move {
            let t0 = Instant::now();
            let r = http.get(url).send().await.unwrap();
            let i = nomad_index(&r);
            let ids: Vec<String> = r
                .json::<Vec<Value>>()
                .await
                .unwrap()
                .iter()
                .map(|j| j["ID"].as_str().unwrap().to_string())
                .collect();
            (t0.elapsed(), i, ids)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.register(job("jobforge-late", "sleep", &["600"])).await;
    let (took, new_idx, ids) = waiter.await.unwrap();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(new_idx > idx);
    assert!(ids.contains(&"jobforge-late".to_string()), "{ids:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn docker_job_gets_no_allocation_and_a_blocked_eval_naming_missing_drivers() {
    let s = Stack::start().await;
    let mut j = job("dock", "x", &[]);
    j["TaskGroups"][0]["Tasks"][0]["Driver"] = json!("docker");
    let reg = s.register(j).await;
    assert!(!reg["EvalID"].as_str().unwrap().is_empty());
    assert!(s.allocs("dock").await.is_empty());
    let evals: Vec<Value> = s
        .http
        .get(format!("{}/v1/job/dock/evaluations", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let blocked = evals
        .iter()
        .find(|e| e["Status"] == "blocked")
        .expect("a blocked eval");
    assert_eq!(
        blocked["FailedTGAllocs"]["g"]["ConstraintFiltered"]["missing drivers"],
        1
    );
    let jobv: Value = s
        .http
        .get(format!("{}/v1/job/dock", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobv["Status"], "pending");
    s.shutdown().await;
}

#[tokio::test]
async fn enforce_index_zero_on_existing_job_is_rejected_and_unknown_job_is_404() {
    let s = Stack::start().await;
    let j = job("once", "true", &[]);
    let body = json!({"Job": j, "EnforceIndex": true, "JobModifyIndex": 0});
    let r = s
        .http
        .post(format!("{}/v1/jobs", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = s
        .http
        .put(format!("{}/v1/job/once", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("job already exists"));
    assert_eq!(s.stack().nomad.as_ref().unwrap().registrations().len(), 1);
    let r = s
        .http
        .get(format!("{}/v1/job/nope", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "job not found");
    assert!(s.allocs("nope").await.is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn missing_command_is_a_driver_failure() {
    let s = Stack::start().await;
    s.register(job("nocmd", "/nonexistent/cmd", &[])).await;
    let a = s.wait_alloc("nocmd", terminal).await;
    assert_eq!(a["ClientStatus"], "failed");
    let ev = a["TaskStates"]["t"]["Events"].as_array().unwrap();
    assert!(
        ev.iter().any(
            |e| e["Type"] == "Driver Failure" && !e["DriverError"].as_str().unwrap().is_empty()
        )
    );
    s.shutdown().await;
}

/// Writes the ACL policy `name` with the dev root token.
async fn put_policy(s: &Stack, name: &str, hcl: &str) {
    let r = s
        .http
        .put(format!(
            "{}/v1/sys/policies/acl/{name}",
            s.stack().vault_url()
        ))
        .header("X-Vault-Token", "root")
        .json(&json!({ "policy": hcl }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn vault_secret_template_renders_with_the_task_token_and_missing_secret_fails_the_task() {
    let s = Stack::start().await;
    let vault = s.stack().vault_url();
    let r = s
        .http
        .post(format!("{vault}/v1/secret/data/app/git"))
        .header("X-Vault-Token", "root")
        .json(&json!({"data": {"token": "s3cr3t"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    put_policy(
        &s,
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    )
    .await;
    let tmpl = |path: &str| {
        json!([{"DestPath": "secrets/git.env", "EmbeddedTmpl":
        format!("{{{{ with secret \"{path}\" }}}}GIT_TOKEN={{{{ .Data.data.token }}}}{{{{ end }}}}\n"),
        "ChangeMode": "noop", "Envvars": true, "Perms": "0600"}])
    };
    let mut ok = job("tmpl-ok", "/bin/sh", &["-c", "echo token=$GIT_TOKEN"]);
    ok["TaskGroups"][0]["Tasks"][0]["Templates"] = tmpl("secret/data/app/git");
    ok["TaskGroups"][0]["Tasks"][0]["Vault"] = json!({"Policies": ["app"]});
    s.register(ok).await;
    let a = s.wait_alloc("tmpl-ok", terminal).await;
    assert_eq!(a["ClientStatus"], "complete");
    let out = s
        .http
        .get(format!(
            "{}/v1/client/fs/logs/{}?task=t&type=stdout&plain=true",
            s.url,
            a["ID"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(out, "token=s3cr3t\n");
    let mut bad = job("tmpl-bad", "/bin/sh", &["-c", "echo never"]);
    bad["TaskGroups"][0]["Tasks"][0]["Templates"] = tmpl("secret/data/app/missing");
    bad["TaskGroups"][0]["Tasks"][0]["Vault"] = json!({"Policies": ["app"]});
    s.register(bad).await;
    let a = s.wait_alloc("tmpl-bad", terminal).await;
    assert_eq!(a["ClientStatus"], "failed");
    let ev = a["TaskStates"]["t"]["Events"].as_array().unwrap();
    let kill = ev.iter().rfind(|e| e["Type"] == "Killing").unwrap();
    assert_eq!(kill["FailsTask"], true, "{kill}");
    let msg = kill["DisplayMessage"].as_str().unwrap();
    assert!(msg.starts_with("Template failed: "), "{msg}");
    assert!(msg.contains("secret/data/app/missing"), "{msg}");
    assert!(!ev.iter().any(|e| e["Type"] == "Started"));
    // A template reading Vault in a task without a Vault block has no token at all.
    let mut none = job("tmpl-no-vault", "/bin/sh", &["-c", "echo never"]);
    none["TaskGroups"][0]["Tasks"][0]["Templates"] = tmpl("secret/data/app/git");
    s.register(none).await;
    let a = s.wait_alloc("tmpl-no-vault", terminal).await;
    assert_eq!(a["ClientStatus"], "failed");
    let ev = a["TaskStates"]["t"]["Events"].as_array().unwrap();
    assert!(!ev.iter().any(|e| e["Type"] == "Started"), "{ev:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn workload_identity_roles_map_to_policies_and_unknown_roles_fail_the_task() {
    let mut cfg = DevStackConfig::ephemeral();
    cfg.vault_roles
        .insert("builds".into(), vec!["app".into(), "ci".into()]);
    let s = Stack::start_with(cfg).await;
    let vault = s.stack().vault_url();
    // The task prints its token's policies as Vault reports them (lookup-self with its token).
    let script =
        format!("curl -s -H \"X-Vault-Token: $VAULT_TOKEN\" {vault}/v1/auth/token/lookup-self");
    let mut j = job("wi", "/bin/sh", &["-c", &script]);
    j["TaskGroups"][0]["Tasks"][0]["Vault"] = json!({"Role": "builds"});
    s.register(j).await;
    let a = s.wait_alloc("wi", terminal).await;
    assert_eq!(a["ClientStatus"], "complete");
    let out = s
        .http
        .get(format!(
            "{}/v1/client/fs/logs/{}?task=t&type=stdout&plain=true",
            s.url,
            a["ID"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let me: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        me["data"]["policies"],
        json!(["app", "ci", "default"]),
        "{me}"
    );
    assert_eq!(me["data"]["orphan"], true);
    assert_eq!(
        me["data"]["meta"]["AllocationID"], a["ID"],
        "the token names its allocation"
    );
    let mut unknown = job("wi-unknown", "/bin/sh", &["-c", "echo never"]);
    unknown["TaskGroups"][0]["Tasks"][0]["Vault"] = json!({"Role": "nope"});
    s.register(unknown).await;
    let a = s.wait_alloc("wi-unknown", terminal).await;
    assert_eq!(a["ClientStatus"], "failed");
    let ev = a["TaskStates"]["t"]["Events"].as_array().unwrap();
    let kill = ev.iter().rfind(|e| e["Type"] == "Killing").unwrap();
    assert_eq!(kill["FailsTask"], true);
    assert_eq!(
        kill["DisplayMessage"],
        "Vault: failed to derive vault token: role \"nope\" could not be found"
    );
    assert!(!ev.iter().any(|e| e["Type"] == "Started"));
    s.shutdown().await;
}

#[tokio::test]
async fn a_vault_block_asking_for_root_is_rejected_at_registration() {
    let s = Stack::start().await;
    let mut j = job("rooty", "true", &[]);
    j["TaskGroups"][0]["Tasks"][0]["Vault"] = json!({"Policies": ["root"]});
    let r = s
        .http
        .post(format!("{}/v1/jobs", s.url))
        .json(&json!({"Job": j}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("root"));
    s.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_jobs_finish_with_their_exit_codes_and_shutdown_leaves_no_process() {
    let s = Stack::start().await;
    let regs = (0..50).map(|i| {
        s.register(job(
            &format!("many-{i}"),
            "/bin/sh",
            &["-c", &format!("exit {}", i % 4)],
        ))
    });
    futures::future::join_all(regs).await;
    for i in 0..50 {
        let a = s.wait_alloc(&format!("many-{i}"), terminal).await;
        let term = a["TaskStates"]["t"]["Events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["Type"] == "Terminated")
            .cloned()
            .unwrap();
        assert_eq!(term["ExitCode"], i % 4);
        assert_eq!(
            a["ClientStatus"],
            if i % 4 == 0 { "complete" } else { "failed" }
        );
    }
    // A long-running task and a grandchild, then shutdown.
    s.register(job(
        "long",
        "/bin/sh",
        &["-c", "sleep 600 & echo $!; sleep 600"],
    ))
    .await;
    let a = s
        .wait_alloc("long", |a| a["TaskStates"]["t"]["State"] == "running")
        .await;
    let mut pids = s.stack().nomad.as_ref().unwrap().task_pids();
    assert_eq!(pids.len(), 51);
    // The grandchild's pid, from the task's first stdout line (follow until it arrives).
    let mut r = s
        .http
        .get(format!(
            "{}/v1/client/fs/logs/{}?task=t&type=stdout&plain=true&follow=true",
            s.url,
            a["ID"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let grandchild: u32 = std::str::from_utf8(&first).unwrap().trim().parse().unwrap();
    assert!(pid_alive(grandchild));
    pids.push(grandchild);
    // A blocking query and an event stream are open: shutdown must not wait for them.
    let blocked = tokio::spawn(
        s.http
            .get(format!("{}/v1/job/long?index=999999&wait=10m", s.url))
            .send(),
    );
    let events = s
        .http
        .get(format!("{}/v1/event/stream", s.url))
        .send()
        .await
        .unwrap();
    let t0 = Instant::now();
    s.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t0.elapsed()
    );
    drop((r, events, blocked));
    for p in pids {
        assert!(!pid_alive(p), "pid {p} survived shutdown");
    }
    // No child of this test process remains (zombie or not).
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            let ppid = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap_or("");
            assert_ne!(ppid, me, "child {:?} remains", e.file_name());
        }
    }
}

#[tokio::test]
async fn event_stream_replays_and_follows_job_and_allocation_events() {
    let s = Stack::start().await;
    s.register(job("ev", "true", &[])).await;
    s.wait_alloc("ev", terminal).await;
    let mut r = s
        .http
        .get(format!(
            "{}/v1/event/stream?topic=Job:ev&topic=Allocation:ev&index=0",
            s.url
        ))
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let mut types = Vec::new();
    while !types.iter().any(|t: &String| t == "AllocationUpdated") || !buf.is_empty() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(nl) = buf.find('\n') {
            let line: Value = serde_json::from_str(&buf[..nl]).unwrap();
            buf.drain(..=nl);
            for e in line["Events"].as_array().into_iter().flatten() {
                assert_ne!(e["Topic"], "Evaluation");
                types.push(e["Type"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(types[0], "JobRegistered");
    drop(r);
    s.shutdown().await;
}

#[tokio::test]
async fn purge_collects_the_allocation_directory_of_a_finished_job() {
    let data = tempfile::tempdir().unwrap();
    let s = Stack::start_with(DevStackConfig {
        consul_addr: None,
        data_dir: Some(data.path().to_path_buf()),
        ..DevStackConfig::ephemeral()
    })
    .await;
    s.register(job("gc", "true", &[])).await;
    let a = s.wait_alloc("gc", terminal).await;
    let nomad = s.stack().nomad.clone().unwrap();
    let dir = nomad.alloc_dir(a["ID"].as_str().unwrap());
    assert!(dir.join("alloc/logs/t.stdout.0").exists());
    s.http
        .delete(format!("{}/v1/job/gc?purge=true", s.url))
        .send()
        .await
        .unwrap();
    // Shutdown waits for the background collection; the data dir itself survives.
    s.shutdown().await;
    assert!(!dir.exists());
    assert!(data.path().join("nomad/allocs").exists());
}

#[tokio::test]
async fn restart_policy_attempts_rerun_the_task_then_not_restarting() {
    let s = Stack::start().await;
    let mut j = job("restart", "/bin/sh", &["-c", "echo run; exit 1"]);
    j["TaskGroups"][0]["RestartPolicy"] = json!({"Attempts": 1, "Delay": 0, "Mode": "fail"});
    s.register(j).await;
    let a = s.wait_alloc("restart", terminal).await;
    let ts = &a["TaskStates"]["t"];
    assert_eq!(a["ClientStatus"], "failed");
    assert_eq!(ts["Restarts"], 1);
    let types: Vec<&str> = ts["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "Started").count(),
        2,
        "{types:?}"
    );
    assert!(types.contains(&"Restarting"));
    assert_eq!(types.last(), Some(&"Not Restarting"));
    let out = s
        .http
        .get(format!(
            "{}/v1/client/fs/logs/{}?task=t&type=stdout&plain=true",
            s.url,
            a["ID"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(out, "run\nrun\n");
    s.shutdown().await;
}

#[tokio::test]
async fn max_run_duration_kills_and_fails_the_task() {
    let s = Stack::start().await;
    let mut j = job("deadline", "sleep", &["600"]);
    j["TaskGroups"][0]["Tasks"][0]["MaxRunDuration"] = json!(300_000_000i64);
    s.register(j).await;
    let a = s.wait_alloc("deadline", terminal).await;
    assert_eq!(a["ClientStatus"], "failed");
    let ev = a["TaskStates"]["t"]["Events"].as_array().unwrap();
    let killing = ev.iter().find(|e| e["Type"] == "Killing").unwrap();
    assert!(
        killing["DisplayMessage"]
            .as_str()
            .unwrap()
            .contains("max run duration")
    );
    assert!(ev.iter().any(|e| e["Type"] == "Killed"));
    s.shutdown().await;
}

fn event_types(a: &Value) -> Vec<String> {
    a["TaskStates"]["t"]["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn mock_driver_completes_tasks_with_the_real_lifecycle_and_starts_no_process() {
    let s = Stack::start_with(DevStackConfig {
        consul_addr: None,
        mock_run_for: Some(Duration::from_millis(200)),
        ..DevStackConfig::ephemeral()
    })
    .await;
    // The command would fail under raw_exec; the mock driver never runs it.
    s.register(job("mocked", "/nonexistent/command", &[])).await;
    let running = s
        .wait_alloc("mocked", |a| a["TaskStates"]["t"]["State"] == "running")
        .await;
    assert_eq!(running["ClientStatus"], "running");
    let done = s.wait_alloc("mocked", terminal).await;
    assert_eq!(done["ClientStatus"], "complete");
    let ts = &done["TaskStates"]["t"];
    assert_eq!(ts["State"], "dead");
    assert_eq!(ts["Failed"], false);
    assert_eq!(
        event_types(&done),
        ["Received", "Task Setup", "Started", "Terminated"]
    );
    assert_eq!(ts["Events"][3]["ExitCode"], 0);
    let nomad = s.stack().nomad.clone().unwrap();
    assert!(nomad.task_pids().is_empty(), "a process was started");
    assert!(!nomad.alloc_dir(done["ID"].as_str().unwrap()).exists());
    s.shutdown().await;
}

#[tokio::test]
async fn mock_driver_task_is_killed_by_a_stop() {
    let s = Stack::start_with(DevStackConfig {
        consul_addr: None,
        mock_run_for: Some(Duration::from_secs(600)),
        ..DevStackConfig::ephemeral()
    })
    .await;
    s.register(job("mock-stop", "sleep", &["600"])).await;
    s.wait_alloc("mock-stop", |a| a["TaskStates"]["t"]["State"] == "running")
        .await;
    let r = s
        .http
        .delete(format!("{}/v1/job/mock-stop", s.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let done = s.wait_alloc("mock-stop", terminal).await;
    assert_eq!(done["ClientStatus"], "complete");
    assert_eq!(
        event_types(&done),
        [
            "Received",
            "Task Setup",
            "Started",
            "Killing",
            "Terminated",
            "Killed"
        ]
    );
    s.shutdown().await;
}
