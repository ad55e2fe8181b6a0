//! The shipped Consul policies, enforced: on a dev stack whose Consul enforces ACLs (default
//! policy deny), the controller runs with a token made from
//! `examples/deploy/consul-policy-controller.hcl` and a Vault token made from
//! `examples/deploy/vault-policy-controller.hcl`, and drives a request whose build task reads its
//! registry credentials from Vault with its own task token to `Succeeded` (no-op tool stand-ins
//! of `tests/fakes`), and the `jobforge` CLI with a team's token made from
//! `examples/deploy/consul-policy-team.hcl` sees only its own namespace and cannot write into
//! another; the MCP facade (`jobforge mcp`, stdio) with that token lists only the team's requests
//! too. The policy files are loaded exactly as shipped. With team A's token, every change of a
//! team-B request (submit, replace, cancel, delete, MCP submitJob/killJob/cleanup) fails with a
//! message naming the key and the permission the token lacks, and nothing of team B changes
//! (issue 14).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use jobforge_tests::acl::{ConsulAcl, shipped_policy, team_policy};
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, bin, request_json,
};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const MANAGEMENT: &str = "3e1f0c55-7a5b-4b1e-9a2d-5c8f6e0d4a21";

/// Namespace `ns`'s registry credentials, under its Vault prefix (the default
/// `tenancy.vault_path_prefix`, `secret/data/jobforge/{namespace}/`).
fn registry_secret(ns: &str) -> String {
    format!("secret/data/jobforge/{ns}/registry")
}

/// `jobforge <args>` against `stack` with `token`.
fn cli(stack: &DevStackProcess, token: &str, args: &[&str]) -> Output {
    Command::new(bin("jobforge").expect("jobforge built"))
        .args(args)
        .envs(stack.env())
        .env("CONSUL_HTTP_TOKEN", token)
        .output()
        .expect("run jobforge")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Calls the MCP tool `tool` with `args` through `jobforge mcp` (stdio transport) with `token`,
/// speaking the protocol's JSON-RPC lines (initialize, initialized, tools/call), and returns the
/// call's `result`.
fn mcp_call(
    stack: &DevStackProcess,
    token: &str,
    tool: &str,
    args: serde_json::Value,
) -> serde_json::Value {
    let mut child = Command::new(bin("jobforge").expect("jobforge built"))
        .arg("mcp")
        .envs(stack.env())
        .env("CONSUL_HTTP_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("jobforge mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut send = |v: serde_json::Value| {
        writeln!(stdin, "{v}").expect("write");
        stdin.flush().expect("flush");
    };
    send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "consul-acl-test", "version": "0"}}}),
    );
    let init = lines.next().expect("initialize answer").expect("read");
    assert!(init.contains("\"result\""), "{init}");
    send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": tool, "arguments": args}}));
    let answer: serde_json::Value = loop {
        let line = lines.next().expect("tools/call answer").expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json-rpc line");
        if v["id"] == 2 {
            break v;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    answer["result"].clone()
}

/// Writes a request document of `ns/name` to a temporary file for `jobforge submit`. Its registry
/// credentials come from Vault, so the build task reads a secret with its own token (policy
/// `jobforge-<ns>`, `examples/deploy/vault-policy-namespace.hcl`).
fn request_file(repo: &GitRepo, ns: &str, name: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("tmp");
    let spec = json!({"repo_url": repo.url, "image_tags": ["v1"],
        "registry_credentials_path": registry_secret(ns)});
    std::fs::write(file.path(), request_json(ns, name, spec)).expect("write");
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn least_privilege_controller_and_team_tokens_work_and_stay_in_their_namespace() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        consul_acl_initial_management: Some(MANAGEMENT.into()),
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let acl = ConsulAcl::new(stack.consul.clone(), MANAGEMENT);
    acl.create_policy(
        "jobforge-controller",
        &shipped_policy("consul-policy-controller.hcl").unwrap(),
    )
    .await
    .expect("controller policy as shipped");
    let controller_token = acl.create_token("jobforge-controller").await.unwrap();
    let mut team = Vec::new();
    for ns in ["team-a", "team-b"] {
        let name = format!("jobforge-team-{ns}");
        acl.create_policy(&name, &team_policy(ns).unwrap())
            .await
            .expect("team policy as shipped");
        team.push(acl.create_token(&name).await.unwrap());
    }
    let (team_a, team_b) = (&team[0], &team[1]);

    for ns in ["team-a", "team-b"] {
        stack
            .put_secret(
                &registry_secret(ns),
                json!({"username": "builder", "password": "registry-pass"}),
            )
            .await
            .expect("registry secret");
    }
    // Least privilege on both sides: Consul (the shipped controller policy) and Vault (the
    // shipped vault-policy-controller.hcl); tasks get the shipped namespace policy from Nomad.
    let mut env = stack
        .least_privilege_env()
        .await
        .expect("controller Vault token");
    env.push(("CONSUL_HTTP_TOKEN".into(), controller_token));
    let ctl = ControllerProcess::start_env(env, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T)
        .await
        .expect("the controller leads with its least-privilege token");

    let repo = GitRepo::hello_world().expect("repo");
    let a = request_file(&repo, "team-a", "a-one");
    let out = cli(&stack, team_a, &["submit", &a.path().display().to_string()]);
    assert!(
        out.status.success(),
        "team A submits into team-a: {}",
        text(&out)
    );
    let b = request_file(&repo, "team-b", "b-secret");
    let out = cli(&stack, team_b, &["submit", &b.path().display().to_string()]);
    assert!(
        out.status.success(),
        "team B submits into team-b: {}",
        text(&out)
    );

    let st = acl
        .wait_json("jobforge/status/team-a/a-one", T, |v| {
            v["phase"] == "Succeeded" || v["phase"] == "Failed"
        })
        .await
        .expect("a terminal status written by the controller");
    assert_eq!(st["phase"], "Succeeded", "{st:#}");
    assert!(
        acl.get_json("jobforge/requests/team-b/b-secret")
            .await
            .unwrap()
            .is_some(),
        "team B's request exists"
    );

    // Team A lists every namespace it can see: only its own requests.
    let out = cli(&stack, team_a, &["list", "-A", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("a-one"), "{listed}");
    assert!(
        !listed.contains("b-secret"),
        "team A sees team B's request: {listed}"
    );

    // The MCP facade with team A's token: the same view.
    let result = mcp_call(&stack, team_a, "listRequests", json!({}));
    let listed = result.to_string();
    assert_eq!(result["isError"], json!(false), "{listed}");
    assert!(listed.contains("a-one"), "{listed}");
    assert!(
        !listed.contains("b-secret"),
        "team A sees team B's request through MCP: {listed}"
    );

    // Without a token (the anonymous token) nothing is listed: the stack really enforces.
    let out = cli(&stack, "", &["list", "-A", "-o", "json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed.contains("a-one") && !listed.contains("b-secret"),
        "{listed}"
    );

    // Team A cannot submit into team B: a clear refusal, nothing written.
    let intruder = request_file(&repo, "team-b", "from-a");
    let out = cli(
        &stack,
        team_a,
        &["submit", &intruder.path().display().to_string()],
    );
    assert!(
        !out.status.success(),
        "team A wrote into team-b: {}",
        text(&out)
    );
    let msg = text(&out);
    assert!(
        msg.contains("403") && msg.contains("Permission denied") && msg.contains("key:write"),
        "{msg}"
    );
    assert!(
        acl.get_json("jobforge/requests/team-b/from-a")
            .await
            .unwrap()
            .is_none()
    );

    // Issue 14: team A changes nothing of team B, and each refusal says which key and which
    // permission. B's request has finished first, so its documents only change if A changes them.
    let b_status = acl
        .wait_json("jobforge/status/team-b/b-secret", T, |v| {
            v["phase"] == "Succeeded" || v["phase"] == "Failed"
        })
        .await
        .expect("team B's request finishes");
    let b_spec = acl
        .get_json("jobforge/requests/team-b/b-secret")
        .await
        .unwrap()
        .expect("team B's spec");
    let b_path = b.path().display().to_string();
    let attempts: [(&[&str], &str, &str); 5] = [
        (
            &["cancel", "b-secret", "-n", "team-b"],
            "read",
            "jobforge/requests/team-b/b-secret",
        ),
        (
            &["delete", "b-secret", "-n", "team-b"],
            "read",
            "jobforge/requests/team-b/b-secret",
        ),
        (
            &["delete", "b-secret", "-n", "team-b", "--purge"],
            "read",
            "jobforge/requests/team-b/b-secret",
        ),
        (
            &["submit", &b_path, "--replace"],
            "read",
            "jobforge/requests/team-b/b-secret",
        ),
        (
            &["submit", &b_path],
            "write",
            "jobforge/requests/team-b/b-secret",
        ),
    ];
    for (args, permission, key) in attempts {
        let out = cli(&stack, team_a, args);
        let msg = text(&out);
        assert!(!out.status.success(), "{args:?} succeeded: {msg}");
        assert!(
            msg.contains(&format!("Consul refused to {permission} {key}"))
                && msg.contains(&format!("lacks key:{permission} permission"))
                && msg.contains("403"),
            "{args:?}: {msg}"
        );
    }
    for (tool, args, what) in [
        (
            "killJob",
            json!({"name": "b-secret", "namespace": "team-b"}),
            "read",
        ),
        (
            "cleanup",
            json!({"name": "b-secret", "namespace": "team-b", "purge": true}),
            "read",
        ),
        (
            "submitJob",
            json!({"name": "b-secret", "namespace": "team-b", "repo_url": repo.url,
                "image_name": "app", "registry_url": "127.0.0.1:5000"}),
            "write",
        ),
    ] {
        let result = mcp_call(&stack, team_a, tool, args);
        let listed = result.to_string();
        assert_eq!(result["isError"], json!(true), "{tool}: {listed}");
        assert!(
            listed.contains("jobforge/requests/team-b/b-secret")
                && listed.contains(&format!("lacks key:{what} permission")),
            "{tool}: {listed}"
        );
    }
    assert_eq!(
        acl.get_json("jobforge/requests/team-b/b-secret")
            .await
            .unwrap()
            .as_ref(),
        Some(&b_spec),
        "team B's spec changed"
    );
    assert_eq!(
        acl.get_json("jobforge/status/team-b/b-secret")
            .await
            .unwrap()
            .as_ref(),
        Some(&b_status),
        "team B's status changed"
    );
    drop(ctl);
    drop(stack);
}
