//! End to end on real input: real git repositories, real `buildah` builds, a real registry
//! (Debian's docker-registry), driven by the controller through the dev stack. KV is the API: every
//! request here is written with a plain HTTP PUT, as `curl` or `consul kv put` would.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use jobforge_tests::{
    BuildEnv, DevStackOptions, GitRepo, request_json, wait_until, which, with_fields,
    workspace_root,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(240);

type Env = BuildEnv;

async fn env() -> Env {
    env_with(DevStackOptions::default()).await
}

async fn env_with(opts: DevStackOptions) -> Env {
    BuildEnv::start(opts)
        .await
        .expect("dev stack, registry and leading controller")
}

fn hello_spec(e: &Env, repo: &GitRepo, extra: Value) -> Value {
    with_fields(
        json!({
            "repo_url": repo.url,
            "git_ref": "main",
            "dockerfile_path": "Containerfile",
            "image_name": "hello-world",
            "image_tags": ["v1.0.0", "latest"],
            "registry_url": format!("{}/e2e", e.registry.addr),
            "test": {"entry_point": true, "commands": ["/usr/local/bin/selftest"], "env": {"GREETING": "Hello from jobforge"}},
        }),
        extra,
    )
}

async fn wait_terminal(e: &Env, name: &str) -> Value {
    e.wait_terminal(name, T).await.expect("terminal status")
}

/// `jobforge logs NAME --phase P` output, through the CLI (KV only).
fn cli_logs(e: &Env, name: &str, phase: &str) -> String {
    e.stack.cli_logs(name, phase)
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_world_builds_tests_and_publishes_with_curl_put() {
    let e = env().await;
    let repo = GitRepo::hello_world().expect("repo");
    let doc = request_json("default", "hello", hello_spec(&e, &repo, json!({})));
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), &doc).expect("write");
    // KV is the API: exactly the README's raw HTTP submission.
    let out = Command::new("curl")
        .args(["-fsS", "-X", "PUT", "--data-binary"])
        .arg(format!("@{}", file.path().display()))
        .arg(format!(
            "{}/v1/kv/jobforge/requests/default/hello",
            e.stack.consul
        ))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "true",
        "{out:?}"
    );

    let st = wait_terminal(&e, "hello").await;
    assert_eq!(
        st["phase"],
        "Succeeded",
        "{st:#}\nbuild log:\n{}",
        cli_logs(&e, "hello", "build")
    );
    assert_eq!(st["source"]["commitSha"], repo.head.as_str());
    let digest = st["image"]["digest"].as_str().expect("digest").to_string();
    let mut tags = e.registry.tags("e2e/hello-world").await.expect("tags");
    tags.sort();
    assert_eq!(tags, vec!["latest".to_string(), "v1.0.0".to_string()]);
    for tag in ["v1.0.0", "latest"] {
        assert_eq!(
            e.registry
                .digest("e2e/hello-world", tag)
                .await
                .expect("digest")
                .as_deref(),
            Some(digest.as_str()),
            "tag {tag} has the reported digest"
        );
    }
    // The temporary tag is gone.
    let temp_tags = e
        .registry
        .tags("e2e/jobforge-tmp/hello-world/default/hello")
        .await
        .unwrap_or_default();
    assert!(temp_tags.is_empty(), "temporary tags left: {temp_tags:?}");
    let test_log = cli_logs(&e, "hello", "test");
    assert!(
        test_log.contains("selftest: passed") && test_log.contains("Hello from jobforge"),
        "{test_log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_test_command_is_test_failed_with_its_output_in_jobforge_logs() {
    let e = env().await;
    let repo = GitRepo::hello_world().expect("repo");
    let spec = hello_spec(
        &e,
        &repo,
        json!({"test": {"commands": ["echo checking the greeting; hello | grep -q Goodbye"]}}),
    );
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/tf",
            &request_json("default", "tf", spec),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "tf").await;
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["failure"]["reason"], "TestFailed", "{st:#}");
    // The message names the failing command and its exit code, then the next step (issue 18, item 1).
    let msg = st["failure"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(
            "test command 1 (\"echo checking the greeting; hello | grep -q Goodbye\") failed with exit code 1"
        ),
        "{st:#}"
    );
    assert!(
        msg.contains("jobforge logs tf -n default --phase test"),
        "{st:#}"
    );
    assert!(!msg.contains("Task Setup"), "{st:#}");
    assert!(st.get("image").is_none(), "no image before publish: {st:#}");
    let logs = cli_logs(&e, "tf", "test");
    assert!(logs.contains("checking the greeting"), "{logs}");
    assert!(
        e.registry
            .tags("e2e/hello-world")
            .await
            .unwrap_or_default()
            .is_empty(),
        "nothing published"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_git_ref_fails_git_revision_not_found_naming_the_ref() {
    let e = env().await;
    let repo = GitRepo::hello_world().expect("repo");
    let spec = hello_spec(&e, &repo, json!({"git_ref": "no-such-branch"}));
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/ref",
            &request_json("default", "ref", spec),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "ref").await;
    assert_eq!(st["failure"]["reason"], "GitRevisionNotFound", "{st:#}");
    assert!(
        st["failure"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-branch"),
        "{st:#}"
    );
    assert!(
        !st["failure"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Task Setup"),
        "{st:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn containerfile_error_is_build_failed_with_buildahs_error_in_the_log_tail() {
    let e = env().await;
    let repo = GitRepo::from_dir(&workspace_root().join("examples/hello-world"), |work| {
        std::fs::write(
            work.join("Broken"),
            "FROM scratch\nCOPY does-not-exist /x\n",
        )?;
        Ok(())
    })
    .expect("repo");
    let spec = hello_spec(&e, &repo, json!({"dockerfile_path": "Broken"}));
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/broken",
            &request_json("default", "broken", spec),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "broken").await;
    assert_eq!(st["failure"]["reason"], "BuildFailed", "{st:#}");
    let msg = st["failure"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("Error: ") && msg.contains("does-not-exist"),
        "buildah's error line: {st:#}"
    );
    assert!(!msg.contains("Task Setup"), "{st:#}");
    let logs = cli_logs(&e, "broken", "build");
    assert!(
        logs.contains("does-not-exist"),
        "buildah's error line: {logs}"
    );
}

/// Issue 18, item 1: a failing `RUN` is explained by buildah's error line, not by Nomad's
/// informational `Task Setup` event.
#[tokio::test(flavor = "multi_thread")]
async fn failing_run_step_is_build_failed_with_buildahs_error_in_the_message() {
    let e = env().await;
    let repo = GitRepo::from_dir(&workspace_root().join("examples/hello-world"), |work| {
        let busybox =
            which("busybox").ok_or_else(|| anyhow::anyhow!("busybox is not installed"))?;
        std::fs::copy(&busybox, work.join("busybox"))?;
        let mut cf = std::fs::read_to_string(work.join("Containerfile"))?;
        cf.push_str("RUN exit 7\n");
        std::fs::write(work.join("Failing"), cf)?;
        Ok(())
    })
    .expect("repo");
    let spec = hello_spec(&e, &repo, json!({"dockerfile_path": "Failing"}));
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/failrun",
            &request_json("default", "failrun", spec),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "failrun").await;
    assert_eq!(st["failure"]["reason"], "BuildFailed", "{st:#}");
    let msg = st["failure"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("Error: building at STEP \"RUN exit 7\"") && msg.contains("exit status 7"),
        "{st:#}"
    );
    assert!(
        msg.contains("jobforge logs failrun -n default --phase build"),
        "{st:#}"
    );
    assert!(!msg.contains("Task Setup"), "{st:#}");
}

/// Issue 18, item 1: a repo_url nobody answers is explained by git's `fatal:` line.
#[tokio::test(flavor = "multi_thread")]
async fn unreachable_repo_url_is_build_failed_with_gits_error_in_the_message() {
    let e = env().await;
    let spec = json!({
        "repo_url": "https://127.0.0.1:1/nope.git",
        "git_ref": "main",
        "image_name": "hello-world",
        "registry_url": format!("{}/e2e", e.registry.addr),
    });
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/norepo",
            &request_json("default", "norepo", spec),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "norepo").await;
    assert_eq!(st["failure"]["reason"], "BuildFailed", "{st:#}");
    let msg = st["failure"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("fatal: unable to access 'https://127.0.0.1:1/nope.git/'"),
        "{st:#}"
    );
    assert!(
        msg.contains("jobforge logs norepo -n default --phase build"),
        "{st:#}"
    );
    assert!(!msg.contains("Task Setup"), "{st:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_vault_secret_fails_secret_not_found_before_any_job() {
    let e = env().await;
    let repo = GitRepo::hello_world().expect("repo");
    let spec = hello_spec(
        &e,
        &repo,
        // The repository is a local file:// one: credentials for it would be refused as
        // InvalidSpec (they travel only over https/ssh), so the missing secret is the registry's.
        json!({"registry_credentials_path": "secret/data/jobforge/default/absent"}),
    );
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/nosecret",
            &request_json("default", "nosecret", spec),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "nosecret").await;
    assert_eq!(st["failure"]["reason"], "SecretNotFound", "{st:#}");
    assert!(
        st["failure"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("secret/data/jobforge/default/absent"),
        "{st:#}"
    );
    let jobs: Vec<Value> = reqwest::get(format!(
        "{}/v1/jobs?prefix=jobforge-default-nosecret",
        e.stack.nomad
    ))
    .await
    .expect("nomad")
    .json()
    .await
    .expect("json");
    assert!(jobs.is_empty(), "no job was created: {jobs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_a_real_build_stops_buildah() {
    let e = env().await;
    let repo = GitRepo::from_dir(&workspace_root().join("examples/hello-world"), |work| {
        let busybox = jobforge_tests::which("busybox").ok_or_else(|| anyhow::anyhow!("busybox"))?;
        std::fs::copy(busybox, work.join("busybox"))?;
        std::fs::write(
            work.join("Slow"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"777\"]\n",
        )?;
        Ok(())
    })
    .expect("repo");
    let spec = hello_spec(&e, &repo, json!({"dockerfile_path": "Slow"}));
    let kv = e.stack.kv();
    kv.put(
        "jobforge/requests/default/cx",
        &request_json("default", "cx", spec.clone()),
    )
    .await
    .expect("put");
    // Wait until buildah really runs the slow step.
    wait_until(T, "buildah runs the slow RUN step", || async {
        let out = Command::new("pgrep")
            .args(["-f", "busybox sleep 777"])
            .output()?;
        Ok(!out.stdout.is_empty())
    })
    .await
    .expect("slow step running");
    let mut cancelled = spec;
    cancelled["cancel"] = json!(true);
    kv.put(
        "jobforge/requests/default/cx",
        &request_json("default", "cx", cancelled),
    )
    .await
    .expect("cancel");
    let st = wait_terminal(&e, "cx").await;
    assert_eq!(st["phase"], "Cancelled", "{st:#}");
    wait_until(
        Duration::from_secs(30),
        "the build process is gone",
        || async {
            let out = Command::new("pgrep")
                .args(["-f", "busybox sleep 777"])
                .output()?;
            Ok(out.stdout.is_empty())
        },
    )
    .await
    .expect("buildah stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn private_repository_clones_with_credentials_from_vault() {
    let repo = GitRepo::hello_world().expect("repo");
    let server =
        jobforge_tests::githttp::GitHttpServer::start(repo.root(), "builder", "s3cret-token")
            .await
            .expect("git server");
    // The Nomad client trusts the git host's CA, as an operator's internal CA is installed.
    let e = env_with(DevStackOptions {
        env: vec![(
            "GIT_SSL_CAINFO".to_string(),
            server.ca_file().display().to_string(),
        )],
        ..DevStackOptions::default()
    })
    .await;
    let url = format!("{}repo.git", server.base);
    // Without credentials the repository is private.
    let anon = Command::new("git")
        .args(["ls-remote", &url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSL_CAINFO", server.ca_file())
        .output()
        .expect("git");
    assert!(
        !anon.status.success(),
        "the repository must refuse anonymous clones"
    );
    e.stack
        .put_secret(
            "secret/data/jobforge/default/git",
            json!({"username": "builder", "password": "s3cret-token"}),
        )
        .await
        .expect("secret");
    let spec = hello_spec(
        &e,
        &repo,
        json!({"repo_url": url, "git_credentials_path": "secret/data/jobforge/default/git", "image_tags": ["private"]}),
    );
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/private",
            &request_json("default", "private", spec),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "private").await;
    assert_eq!(
        st["phase"],
        "Succeeded",
        "{st:#}\n{}",
        cli_logs(&e, "private", "build")
    );
    assert_eq!(st["source"]["commitSha"], repo.head.as_str());
    let build_log = cli_logs(&e, "private", "build");
    assert!(
        !build_log.contains("s3cret-token"),
        "the token never reaches the logs: {build_log}"
    );
}
