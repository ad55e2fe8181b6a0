//! The tenancy model (`docs/tenancy.md`), enforced end to end on the strict dev stack with two
//! teams, `team-a` and `team-b`: Consul enforces ACLs (the controller and each team hold tokens
//! made from the shipped `examples/deploy/consul-policy-*.hcl`), Vault enforces the shipped
//! policies (`examples/deploy/vault-policy-controller.hcl`, and `vault-policy-namespace.hcl` per
//! namespace, loaded by the harness as `hack/vault-team-policy.sh` loads it), and the Nomad
//! emulator gives each task a Vault token of its own with the policies of its `vault` block.
//! Builds use the no-op tool stand-ins of `tests/fakes` (their `buildah run` runs the test command
//! on the host, as the task).
//!
//! - Team A naming any of team B's Vault paths (`git_credentials_path`,
//!   `registry_credentials_path`, `test.vault_secrets[].path`, `webhook.secret_path`), or a Vault
//!   policy not allowlisted for it (`test.vault_policies`), ends `InvalidSpec` naming the field,
//!   and no Nomad job is ever registered; `jobforge submit` refuses the same before writing.
//! - A team-A test task that reads team B's secret with its own token gets 403 from Vault, while
//!   its own secret answers 200.
//! - An operator's `vault_path_prefix` and `vault_policy` templates in `jobforge/config` are what
//!   the controller and `jobforge validate` apply.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::Duration;

use jobforge_tests::acl::{ConsulAcl, shipped_policy, team_policy};
use jobforge_tests::vault_policies::{install_team_policy, team_policy_text, write_policy_text};
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, bin, request_json, wait_until,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const MANAGEMENT: &str = "5d0c2b1e-2f4a-4c8e-9b7d-1a3e5f7c9b24";

fn secret(ns: &str, leaf: &str) -> String {
    format!("secret/data/jobforge/{ns}/{leaf}")
}

/// `jobforge <args>` against `stack` with the Consul `token`.
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

/// The Nomad jobs whose ID starts with `prefix` (`GET /v1/jobs?prefix=`).
async fn nomad_jobs(stack: &DevStackProcess, prefix: &str) -> Vec<Value> {
    reqwest::get(format!("{}/v1/jobs?prefix={prefix}", stack.nomad))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn is_terminal(v: &Value) -> bool {
    matches!(
        v["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Cancelled")
    )
}

/// A stack whose Consul enforces ACLs, team A's token, and a controller running with the shipped
/// least-privilege Consul and Vault policies.
struct TwoTeams {
    stack: DevStackProcess,
    acl: ConsulAcl,
    team_a: String,
    _ctl: ControllerProcess,
}

async fn two_teams() -> TwoTeams {
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
    acl.create_policy("jobforge-team-team-a", &team_policy("team-a").unwrap())
        .await
        .expect("team policy as shipped");
    let team_a = acl.create_token("jobforge-team-team-a").await.unwrap();
    for ns in ["team-a", "team-b"] {
        for leaf in ["git", "registry", "test", "webhook"] {
            stack
                .put_secret(
                    &secret(ns, leaf),
                    json!({"username": format!("{ns}-user"), "password": format!("{ns}-pass"),
                           "k": format!("{ns}-secret-value"), "secret": format!("{ns}-hmac")}),
                )
                .await
                .expect("secret");
        }
    }
    let mut env = stack.least_privilege_env().await.expect("controller token");
    env.push(("CONSUL_HTTP_TOKEN".into(), controller_token));
    let ctl = ControllerProcess::start_env(env, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    TwoTeams {
        stack,
        acl,
        team_a,
        _ctl: ctl,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn team_a_naming_team_b_vault_paths_or_policies_is_invalid_before_any_job() {
    let s = two_teams().await;
    let b = |leaf: &str| secret("team-b", leaf);
    // Each attempt, written straight into KV with team A's token (as `consul kv put` would: the
    // CLI's own check is not what protects team B).
    let cases = [
        (
            "via-git",
            json!({"git_credentials_path": b("git")}),
            "spec.git_credentials_path",
        ),
        (
            "via-registry",
            json!({"registry_credentials_path": b("registry")}),
            "spec.registry_credentials_path",
        ),
        (
            "via-test-secret",
            json!({"test": {"commands": ["true"],
                "vault_secrets": [{"path": b("test"), "fields": {"k": "STOLEN"}}]}}),
            "spec.test.vault_secrets[0].path",
        ),
        (
            "via-webhook",
            json!({"webhook": {"url": "https://hooks.example.invalid/x", "secret_path": b("webhook")}}),
            "spec.webhook.secret_path",
        ),
        (
            "via-policy",
            json!({"test": {"commands": ["true"], "vault_policies": ["jobforge-team-b"]}}),
            "spec.test.vault_policies[0]",
        ),
    ];
    for (name, spec, _) in &cases {
        let (code, body) = s
            .acl
            .kv_put(
                &format!("jobforge/requests/team-a/{name}"),
                &request_json("team-a", name, spec.clone()),
                Some(&s.team_a),
            )
            .await
            .unwrap();
        assert_eq!(code, 200, "team A writes its own namespace: {body}");
    }
    for (name, _, field) in &cases {
        let st = s
            .acl
            .wait_json(&format!("jobforge/status/team-a/{name}"), T, is_terminal)
            .await
            .expect("a terminal status");
        assert_eq!(st["phase"], "Failed", "{name}: {st:#}");
        assert_eq!(st["failure"]["reason"], "InvalidSpec", "{name}: {st:#}");
        let msg = st["failure"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(&format!("{field}:")), "{name}: {msg}");
        if *name == "via-policy" {
            assert!(msg.contains("jobforge-team-a"), "{name}: {msg}");
        } else {
            assert!(
                msg.contains("allowed: a path under secret/data/jobforge/team-a/"),
                "{name}: {msg}"
            );
        }
        assert!(!msg.contains("team-b-pass"), "{name}: {msg}");
        let jobs = nomad_jobs(&s.stack, &format!("jobforge-team-a-{name}")).await;
        assert!(
            jobs.is_empty(),
            "{name}: a Nomad job was registered: {jobs:?}"
        );
    }

    // `jobforge submit` with team A's token refuses the same before writing, and says which
    // rules it checked (the team policy reads jobforge/config; it has no tenancy section).
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        request_json(
            "team-a",
            "cli-attempt",
            json!({"registry_credentials_path": b("registry")}),
        ),
    )
    .unwrap();
    let out = cli(
        &s.stack,
        &s.team_a,
        &["submit", &file.path().display().to_string()],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("spec.registry_credentials_path")
            && said.contains("allowed: a path under secret/data/jobforge/team-a/"),
        "{said}"
    );
    assert!(
        said.contains(
            "tenancy: checked against the default rules (jobforge/config is absent): \
             Vault paths under secret/data/jobforge/{namespace}/"
        ),
        "{said}"
    );
    assert!(
        s.acl
            .get_json("jobforge/requests/team-a/cli-attempt")
            .await
            .unwrap()
            .is_none(),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_a_task_reading_a_team_b_secret_with_its_own_token_gets_403() {
    let s = two_teams().await;
    let repo = GitRepo::hello_world().expect("repo");
    // The test command an attacker in team A would write: its task's own Vault token (in the
    // environment, or in the secrets file when the vault block keeps it out of the environment),
    // used on team B's secret and, as a control, on team A's own. Only status codes are printed.
    let probe = format!(
        "t=$VAULT_TOKEN; [ -n \"$t\" ] || t=$(cat \"$NOMAD_SECRETS_DIR/vault_token\"); \
         for ns in team-a team-b; do \
         printf 'vault-read-%s=%s\\n' \"$ns\" \"$(curl -s -o /dev/null -w '%{{http_code}}' \
         -H \"X-Vault-Token: $t\" {vault}/v1/secret/data/jobforge/$ns/test)\"; done",
        vault = s.stack.vault
    );
    let spec = json!({"repo_url": repo.url, "test": {"commands": [probe],
        "vault_secrets": [{"path": secret("team-a", "test"), "fields": {"k": "OWN_K"}}]}});
    let (code, body) = s
        .acl
        .kv_put(
            "jobforge/requests/team-a/reader",
            &request_json("team-a", "reader", spec),
            Some(&s.team_a),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let st = s
        .acl
        .wait_json("jobforge/status/team-a/reader", T, is_terminal)
        .await
        .expect("a terminal status");
    assert_eq!(st["phase"], "Succeeded", "{st:#}");
    // The test phase's job carried team A's policy only.
    let job_id = st["phases"]["test"]["nomadJobId"].as_str().unwrap();
    let job: Value = reqwest::get(format!("{}/v1/job/{job_id}", s.stack.nomad))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        job["TaskGroups"][0]["Tasks"][0]["Vault"]["Policies"],
        json!(["jobforge-team-a"]),
        "{job:#}"
    );
    // What the task saw, read as team A reads it: its own logs through the CLI.
    let out = cli(
        &s.stack,
        &s.team_a,
        &["logs", "reader", "-n", "team-a", "--phase", "test"],
    );
    let logs = text(&out);
    assert!(logs.contains("vault-read-team-a=200"), "{logs}");
    assert!(logs.contains("vault-read-team-b=403"), "{logs}");
    assert!(!logs.contains("team-b-secret-value"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_vault_path_prefix_and_policy_templates_are_honoured() {
    let stack = DevStackProcess::start(DevStackOptions {
        fake_tools: true,
        ..DevStackOptions::default()
    })
    .expect("dev stack");
    let kv = stack.kv();
    let config = json!({"tenancy": {"vault_path_prefix": "secret/data/ci/{namespace}/",
        "vault_policy": "ci-{namespace}"}});
    kv.put("jobforge/config", config.to_string().as_bytes())
        .await
        .unwrap();
    // The operator's policy for the custom layout: the shipped template, pointed at the prefix.
    let text_ci = team_policy_text("team-a")
        .unwrap()
        .replace("secret/data/jobforge/team-a/", "secret/data/ci/team-a/");
    assert!(text_ci.contains("secret/data/ci/team-a/*"), "{text_ci}");
    write_policy_text(&stack.vault, "root", "ci-team-a", &text_ci)
        .await
        .unwrap();
    install_team_policy(&stack.vault, "root", "team-a")
        .await
        .unwrap();
    for path in [
        "secret/data/ci/team-a/registry",
        "secret/data/jobforge/team-a/registry",
    ] {
        stack
            .put_secret(path, json!({"username": "u", "password": "p"}))
            .await
            .unwrap();
    }
    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(T).await.expect("leader");
    let c = &ctl;
    wait_until(
        T,
        "the controller loaded jobforge/config",
        move || async move { Ok(c.status().await?["config_index"].as_u64().unwrap_or(0) > 0) },
    )
    .await
    .expect("config loaded");

    let repo = GitRepo::hello_world().expect("repo");
    // The default prefix is no longer the namespace's.
    let old = json!({"repo_url": repo.url, "registry_credentials_path": "secret/data/jobforge/team-a/registry"});
    kv.put(
        "jobforge/requests/team-a/old-prefix",
        &request_json("team-a", "old-prefix", old.clone()),
    )
    .await
    .unwrap();
    let st = stack
        .wait_terminal("team-a", "old-prefix", T)
        .await
        .expect("terminal");
    assert_eq!(st["failure"]["reason"], "InvalidSpec", "{st:#}");
    let msg = st["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("spec.registry_credentials_path")
            && msg.contains("allowed: a path under secret/data/ci/team-a/"),
        "{msg}"
    );
    assert!(
        nomad_jobs(&stack, "jobforge-team-a-old-prefix")
            .await
            .is_empty()
    );

    // The operator's prefix is, and the task reads it with the operator's policy name.
    let new = json!({"repo_url": repo.url, "registry_credentials_path": "secret/data/ci/team-a/registry"});
    kv.put(
        "jobforge/requests/team-a/new-prefix",
        &request_json("team-a", "new-prefix", new),
    )
    .await
    .unwrap();
    let st = stack
        .wait_terminal("team-a", "new-prefix", T)
        .await
        .expect("terminal");
    assert_eq!(st["phase"], "Succeeded", "{st:#}");
    let job_id = st["phases"]["build"]["nomadJobId"].as_str().unwrap();
    let job: Value = reqwest::get(format!("{}/v1/job/{job_id}", stack.nomad))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        job["TaskGroups"][0]["Tasks"][0]["Vault"]["Policies"],
        json!(["ci-team-a"]),
        "{job:#}"
    );

    // `jobforge validate` reads the same template from KV and says so.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), request_json("team-a", "old-prefix", old)).unwrap();
    let out = cli(
        &stack,
        "",
        &["validate", &file.path().display().to_string()],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "tenancy: checked against the operator's rules in jobforge/config: \
                       Vault paths under secret/data/ci/{namespace}/, task policy ci-{namespace}"
        ),
        "{said}"
    );
    assert!(
        said.contains("allowed: a path under secret/data/ci/team-a/"),
        "{said}"
    );
}
