//! User input with shell and template metacharacters never appears raw in a rendered job: it
//! reaches the tasks only base64-encoded in environment values (`JF_*_B64`, out of reach of
//! Nomad's `${...}` interpolation, issue 14) and template text only as escaped Go literals
//! (every string of the rendered job JSON is searched).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use jobforge_controller::jobspec::{self, Profile, RenderConfig};
use jobforge_schema::{BuildRequest, BuildSpec, TestSpec, VaultSecret};
use serde_json::Value;

const HOSTILE: [&str; 6] = [
    "$(rm -rf /)",
    "`reboot`",
    "a\"b'c",
    "line1\nline2",
    "{{ env \"VAULT_TOKEN\" }}",
    "x}}y{{z",
];

fn hostile_request(h: &str) -> BuildRequest {
    let mut req = BuildRequest::new(
        "team-a",
        "app",
        BuildSpec {
            owner: "team-a".into(),
            repo_url: format!("https://git.example.com/{h}.git"),
            git_ref: format!("ref{h}"),
            git_credentials_path: Some(format!("secret/data/git{h}")),
            dockerfile_path: Some(format!("df{h}")),
            dockerfile_context: Some(format!("ctx{h}")),
            image_name: "app".into(),
            registry_url: "registry.internal:5000".into(),
            registry_credentials_path: Some(format!("secret/data/reg{h}")),
            ..Default::default()
        },
    );
    req.spec.test = Some(TestSpec {
        commands: vec![format!("cmd{h}")],
        entry_point: true,
        env: BTreeMap::from([("E".into(), format!("val{h}"))]),
        vault_secrets: vec![VaultSecret {
            path: format!("secret/data/t{h}"),
            fields: BTreeMap::from([(format!("field{h}"), "SECRET_ENV".into())]),
        }],
        ..Default::default()
    });
    req
}

/// Collects every (json path, string) pair of a value.
fn strings(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path, s.clone())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                strings(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn check(profile: Profile) {
    let cfg = RenderConfig {
        profile,
        ..Default::default()
    };
    for h in HOSTILE {
        let req = hostile_request(h);
        let jobs = jobspec::render_all(&req, 5, 1, &cfg).unwrap();
        assert_eq!(jobs.len(), 3);
        let mut all = Vec::new();
        strings(
            &serde_json::to_value(&jobs).unwrap(),
            String::new(),
            &mut all,
        );
        for (path, s) in &all {
            assert!(!s.contains(h), "{h:?} reached {path} raw: {s:?}");
        }
        let encoded = jobspec::b64(&req.spec.repo_url);
        assert!(
            all.iter()
                .any(|(path, s)| path.ends_with(".Env.JF_REPO_URL_B64") && *s == encoded),
            "the input reaches the build job encoded"
        );
        for job in &jobs {
            for t in &job.task_groups[0].tasks[0].templates {
                let text = &t.embedded_tmpl;
                // Literals hold no raw `"` (escaped as \x22), so splitting on `"` leaves the
                // template's own text at even indices: it must hold none of the input.
                let outside: String = text.split('"').step_by(2).collect();
                assert_eq!(
                    outside.matches("{{").count(),
                    outside.matches("}}").count(),
                    "{text}"
                );
                for needle in [
                    "VAULT_TOKEN",
                    "rm -rf",
                    "reboot",
                    "line1",
                    "x}}y",
                    "a'b",
                    "b'c",
                ] {
                    assert!(
                        !outside.contains(needle),
                        "{needle} outside a literal: {text}"
                    );
                }
                let literals: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
                for l in literals {
                    assert!(
                        !l.contains(['{', '}', '\n']),
                        "raw delimiter in literal {l:?}"
                    );
                }
            }
            let script = job.task_groups[0].tasks[0]
                .config
                .get("args")
                .and_then(|a| a.get(1))
                .and_then(Value::as_str);
            if let Some(script) = script {
                assert!(!script.contains(h), "input inside a script");
            }
        }
    }
}

#[test]
fn hostile_input_reaches_raw_exec_jobs_only_as_env_values() {
    check(Profile::RawExec);
}

#[test]
fn hostile_input_reaches_docker_jobs_only_as_env_values() {
    check(Profile::Docker);
}

#[test]
fn vault_path_with_delimiters_is_an_escaped_go_literal_in_the_template() {
    let req = hostile_request("x}}y{{z");
    let job = jobspec::render(
        &req,
        5,
        1,
        jobforge_schema::PipelinePhase::Build,
        &RenderConfig::default(),
    )
    .unwrap();
    let git = &job.task_groups[0].tasks[0].templates[0];
    assert_eq!(git.dest_path, "secrets/git_username");
    assert!(!git.envvars, "secrets are files, never the environment");
    assert_eq!(git.perms, "0600");
    assert!(
        git.embedded_tmpl
            .starts_with("{{ with secret \"secret/data/gitx\\x7d\\x7dy\\x7b\\x7bz\" }}"),
        "{}",
        git.embedded_tmpl
    );
}
