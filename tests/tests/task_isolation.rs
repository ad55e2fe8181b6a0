//! Issue 14 on the dev stack (real git, buildah and registry; raw_exec): what a request writes
//! reaches its tasks byte for byte and never as Nomad interpolation; test secrets are in no
//! process's argv and not in the job spec; git credentials go only to `repo_url`'s host; two
//! builds never see each other's images.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use jobforge_tests::githttp::GitHttpServer;
use jobforge_tests::{BuildEnv, DevStackOptions, GitRepo, with_fields};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(300);

/// What Nomad would replace if it saw it: the task's Vault token, an allocation variable, a
/// node attribute.
const EVIL: &str = "${VAULT_TOKEN}|${NOMAD_ALLOC_ID}|${attr.kernel.name}";

type Env = BuildEnv;

async fn env_with(opts: DevStackOptions) -> Env {
    BuildEnv::start(opts)
        .await
        .expect("dev stack, registry and leading controller")
}

fn spec(e: &Env, repo_url: &str, extra: Value) -> Value {
    with_fields(
        json!({
            "repo_url": repo_url,
            "git_ref": "main",
            "dockerfile_path": "Containerfile",
            "image_name": "hello-world",
            "image_tags": ["v1"],
            "registry_url": format!("{}/iso", e.registry.addr),
        }),
        extra,
    )
}

async fn submit(e: &Env, name: &str, spec: Value) {
    e.submit("default", name, spec).await.expect("put");
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every field a request writes that reaches a task (test env values, test commands, git_ref;
/// image tags and labels cannot hold `$` by their grammar) arrives byte for byte although it
/// holds `${VAULT_TOKEN}`, `${NOMAD_ALLOC_ID}` and `${attr.kernel.name}`; the task that reads a
/// secret (so has a Vault token) never shows its token; while the test runs no process's
/// command line holds the secret, and the registered job does not either.
#[tokio::test(flavor = "multi_thread")]
async fn request_values_arrive_verbatim_and_secrets_stay_out_of_argv_and_the_job() {
    let e = env_with(DevStackOptions::default()).await;
    let repo = GitRepo::hello_world().expect("repo");
    // A branch whose name Nomad would interpolate (git check-ref-format allows it).
    let branch = "e${NOMAD_ALLOC_ID}";
    git(
        &repo.root(),
        &["--git-dir", "repo.git", "branch", branch, "main"],
    );
    let secret = "sekrit-9f1c2a7e5b";
    e.stack
        .put_secret(
            "secret/data/jobforge/default/itest",
            json!({"value": secret}),
        )
        .await
        .expect("secret");
    let scan = r#"n=0; seen=0; for f in /proc/[0-9]*/cmdline; do c=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue; n=$((n + 1)); case "$c" in *buildah*) seen=$((seen + 1)) ;; esac; case "$c" in *"$SECRET"*) echo "LEAK in $f: $c" ;; esac; done; echo "SCANNED $n cmdlines, $seen of buildah"; test "$seen" -gt 0"#;
    let s = spec(
        &e,
        &repo.url,
        json!({
            "git_ref": branch,
            "test": {
                "entry_point": false,
                "commands": [
                    format!("printf 'CMD<%s>\\n' '{EVIL}'"),
                    "printf 'ENV<%s>\\n' \"$EVIL\"",
                    scan,
                    // The value itself must not be in a command: commands are argv and logs.
                    "case \"$SECRET\" in sekrit-*) test \"${#SECRET}\" = 17 && echo SECRET-OK ;; esac",
                ],
                "env": {"EVIL": EVIL},
                "vault_secrets": [{"path": "secret/data/jobforge/default/itest", "fields": {"value": "SECRET"}}],
            },
        }),
    );
    submit(&e, "interp", s).await;
    let st = e
        .stack
        .wait_terminal("default", "interp", T)
        .await
        .expect("terminal");
    let build_log = e.stack.cli_logs("interp", "build");
    let test_log = e.stack.cli_logs("interp", "test");
    assert_eq!(st["phase"], "Succeeded", "{st:#}\n{build_log}\n{test_log}");
    assert_eq!(st["source"]["commitSha"], repo.head.as_str());
    assert!(
        test_log.contains(&format!("CMD<{EVIL}>")),
        "the command arrives verbatim: {test_log}"
    );
    assert!(
        test_log.contains(&format!("ENV<{EVIL}>")),
        "the env value arrives verbatim: {test_log}"
    );
    assert!(test_log.contains("SECRET-OK"), "{test_log}");
    assert!(test_log.contains("SCANNED "), "{test_log}");
    assert!(!test_log.contains("LEAK in /proc"), "{test_log}");
    assert!(!test_log.contains(secret), "{test_log}");
    for log in [&build_log, &test_log] {
        assert!(!log.contains("hvs."), "a Vault token in a log: {log}");
    }
    let job_id = st["phases"]["test"]["nomadJobId"].as_str().unwrap();
    let job = reqwest::get(format!("{}/v1/job/{job_id}", e.stack.nomad))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(job.contains("JF_TEST_CMDS_B64"), "{job}");
    assert!(!job.contains(secret), "the secret is not in the job: {job}");
    assert!(!job.contains("${VAULT_TOKEN}"), "{job}");
    assert!(job.contains("\"Env\":false"), "{job}");
}

/// Two builds of the same source at the same time: each one's log names only its own
/// temporary image (the old bug: `Successfully tagged …/jobforge-tmp/<another request's name>`
/// from shared buildah storage).
#[tokio::test(flavor = "multi_thread")]
async fn two_builds_never_see_each_others_images() {
    let e = env_with(DevStackOptions::default()).await;
    let repo = GitRepo::hello_world().expect("repo");
    let names = ["iso-alpha", "iso-bravo"];
    for n in names {
        submit(&e, n, spec(&e, &repo.url, json!({}))).await;
    }
    for n in names {
        let st = e
            .stack
            .wait_terminal("default", n, T)
            .await
            .expect("terminal");
        assert_eq!(st["phase"], "Succeeded", "{n}: {st:#}");
    }
    for (mine, other) in [(names[0], names[1]), (names[1], names[0])] {
        let log = e.stack.cli_logs(mine, "build");
        assert!(log.contains(mine), "{mine}'s log names its image: {log}");
        assert!(!log.contains(other), "{mine}'s log names {other}: {log}");
    }
}

/// `repo_url` is on host A, which sends git to host B (a redirect); B asks for credentials and
/// records every `Authorization` header: it never receives any, the clone fails, and the
/// request is BuildFailed. (Before issue 14 the helper answered for any host.)
#[tokio::test(flavor = "multi_thread")]
async fn git_credentials_are_sent_only_to_the_repo_urls_host() {
    let repo = GitRepo::hello_world().expect("repo");
    let b = GitHttpServer::start(repo.root(), "builder", "s3cret-token")
        .await
        .expect("host B");
    let a = GitHttpServer::start_redirecting(&b.base)
        .await
        .expect("host A");
    // One CA file trusting both hosts, as an operator's bundle would.
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    let pem = [a.ca_file(), b.ca_file()]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&bundle, pem).unwrap();
    let e = env_with(DevStackOptions {
        env: vec![("GIT_SSL_CAINFO".to_string(), bundle.display().to_string())],
        ..DevStackOptions::default()
    })
    .await;
    e.stack
        .put_secret(
            "secret/data/jobforge/default/git",
            json!({"username": "builder", "password": "s3cret-token"}),
        )
        .await
        .expect("secret");
    let s = spec(
        &e,
        &format!("{}repo.git", a.base),
        json!({"git_credentials_path": "secret/data/jobforge/default/git"}),
    );
    submit(&e, "redirected", s).await;
    let st = e
        .stack
        .wait_terminal("default", "redirected", T)
        .await
        .expect("terminal");
    let log = e.stack.cli_logs("redirected", "build");
    assert_eq!(st["phase"], "Failed", "{st:#}\n{log}");
    assert_eq!(st["failure"]["reason"], "BuildFailed", "{st:#}");
    assert!(
        b.authorizations().is_empty(),
        "host B received credentials: {:?}",
        b.authorizations()
    );
    assert!(a.authorizations().is_empty(), "{:?}", a.authorizations());
    assert!(!log.contains("s3cret-token"), "{log}");
}
