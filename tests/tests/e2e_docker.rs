//! End to end through the `docker` profile on a real container engine: the controller renders
//! docker tasks, the dev stack's Nomad docker driver runs them as containers of podman's Docker
//! Engine API service (runc), the tool image (buildah, skopeo, git, ca-certificates) is built
//! here from Debian's packages and served by a local registry. buildah runs inside its container
//! unprivileged: vfs storage, chroot isolation, Docker's default capabilities minus `NET_RAW`.
//!
//! The git repository is a public one served over HTTP (a `file://` URL of the host is not
//! visible inside a container; credentials travel only over TLS, and the test CA of the private
//! HTTPS server is not in the tool image: `e2e_real_build.rs` covers credentials from Vault); registry and git server listen on loopback, so the
//! tool containers use `docker_network_mode = "host"` (operator config, `jobforge/config`).

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use jobforge_tests::docker::{DockerEngine, tool_image};
use jobforge_tests::githttp::GitHttpServer;
use jobforge_tests::{
    ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, Registry, request_json,
    wait_until, workspace_root,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(300);
/// The docker driver's `gc { image_delay }` in these tests, in seconds.
const IMAGE_DELAY_SECS: u64 = 5;

struct Env {
    // Dropped in this order: controller, dev stack (removes its containers), engine, registry.
    _ctl: ControllerProcess,
    stack: DevStackProcess,
    engine: DockerEngine,
    registry: Registry,
}

async fn env() -> Env {
    let registry = Registry::start().await.expect("registry");
    let t0 = std::time::Instant::now();
    let tools = tool_image(&registry.addr).expect("tool image");
    eprintln!("tool image {tools} ready in {:?}", t0.elapsed());
    let engine = DockerEngine::start(&[&registry.addr])
        .await
        .expect("engine");
    let stack = DevStackProcess::start(DevStackOptions {
        env: vec![
            ("DOCKER_HOST".into(), engine.host.clone()),
            // Nomad's image GC with a short delay: the phases of one request follow each other
            // within it and share the tool image; after the request, nothing stays.
            (
                "JOBFORGE_DEVSTACK_DOCKER_IMAGE_DELAY".into(),
                IMAGE_DELAY_SECS.to_string() + "s",
            ),
        ],
        ..Default::default()
    })
    .expect("dev stack");
    stack
        .kv()
        .put(
            "jobforge/config",
            json!({"buildah_image": tools, "docker_network_mode": "host"})
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("config");
    let ctl = ControllerProcess::start(&stack, &["--profile", "docker"])
        .await
        .expect("controller");
    ctl.wait_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    Env {
        _ctl: ctl,
        stack,
        engine,
        registry,
    }
}

fn spec(e: &Env, git: &GitHttpServer, extra: Value) -> Value {
    let mut s = json!({
        "repo_url": format!("{}repo.git", git.base),
        "git_ref": "main",
        "dockerfile_path": "Containerfile",
        "image_name": "hello-world",
        "image_tags": ["v1.0.0", "latest"],
        "registry_url": format!("{}/e2e", e.registry.addr),
        "test": {"entry_point": true, "commands": ["/usr/local/bin/selftest"], "env": {"GREETING": "Hello from jobforge"}},
    });
    if let (Some(a), Some(b)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
    s
}

async fn serve(repo: &GitRepo) -> GitHttpServer {
    GitHttpServer::start_public(repo.root())
        .await
        .expect("git server")
}

async fn wait_terminal(e: &Env, name: &str) -> Value {
    e.stack
        .wait_terminal("default", name, T)
        .await
        .expect("terminal status")
}

fn cli_logs(e: &Env, name: &str, phase: &str) -> String {
    e.stack.cli_logs(name, phase)
}

async fn nothing_left_behind(e: &Env) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = e.engine.containers().await.unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "containers left behind: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let volumes = e.engine.volumes().await.unwrap();
    assert!(volumes.is_empty(), "volumes left behind: {volumes:#?}");
    // Images (the tool image, the temporary image a test phase ran) go once unused for the
    // image delay, as Nomad's image GC removes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(IMAGE_DELAY_SECS + 30);
    loop {
        let images = e.engine.images().await.unwrap();
        if images.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "images left behind in the engine: {images:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let temp = e
        .registry
        .tags("e2e/jobforge-tmp/hello-world/default/hello")
        .await
        .unwrap_or_default();
    assert!(temp.is_empty(), "temporary tags left: {temp:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_profile_builds_tests_and_publishes_hello_world_unprivileged() {
    let e = env().await;
    let repo = GitRepo::hello_world().expect("repo");
    let git = serve(&repo).await;
    let t0 = std::time::Instant::now();
    e.stack
        .kv()
        .put(
            "jobforge/requests/default/hello",
            &request_json("default", "hello", spec(&e, &git, json!({}))),
        )
        .await
        .expect("put");
    let st = wait_terminal(&e, "hello").await;
    assert_eq!(
        st["phase"],
        "Succeeded",
        "{st:#}\nbuild log:\n{}\ntest log:\n{}\npublish log:\n{}",
        cli_logs(&e, "hello", "build"),
        cli_logs(&e, "hello", "test"),
        cli_logs(&e, "hello", "publish")
    );
    eprintln!("hello-world through the docker profile: {:?}", t0.elapsed());
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
    let test_log = cli_logs(&e, "hello", "test");
    assert!(
        test_log.contains("selftest: passed") && test_log.contains("Hello from jobforge"),
        "{test_log}"
    );
    // Every phase ran as a docker task, never privileged.
    let jobs: Vec<Value> = reqwest::get(format!(
        "{}/v1/jobs?prefix=jobforge-default-hello",
        e.stack.nomad
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    for j in &jobs {
        let job: Value = reqwest::get(format!(
            "{}/v1/job/{}",
            e.stack.nomad,
            j["ID"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let task = &job["TaskGroups"][0]["Tasks"][0];
        assert_eq!(task["Driver"], "docker", "{task:#}");
        assert_ne!(task["Config"]["privileged"], true);
    }
    nothing_left_behind(&e).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_profile_failing_test_runs_in_the_built_image_and_is_test_failed() {
    let e = env().await;
    let repo = GitRepo::hello_world().expect("repo");
    let git = serve(&repo).await;
    // Commands only: the built image itself is the test task's container.
    let spec = spec(
        &e,
        &git,
        json!({"test": {"commands": ["echo checking the greeting: $GREETING; hello | grep -q Goodbye"],
                        "env": {"GREETING": "from-test-env"}}}),
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
    let logs = cli_logs(&e, "tf", "test");
    assert!(
        logs.contains("checking the greeting: from-test-env"),
        "{logs}"
    );
    let job: Value = reqwest::get(format!(
        "{}/v1/job/{}",
        e.stack.nomad,
        st["phases"]["test"]["nomadJobId"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let image = job["TaskGroups"][0]["Tasks"][0]["Config"]["image"]
        .as_str()
        .unwrap_or_default();
    // The built image, by the digest the build reported (what publish would copy).
    let built = st["phases"]["build"]["digest"].as_str().unwrap_or_default();
    assert!(
        built.starts_with("sha256:")
            && image.ends_with(&format!("/e2e/jobforge-tmp/hello-world/default/tf@{built}")),
        "the test task's container is the built image: {job:#}"
    );
    assert!(
        e.registry
            .tags("e2e/hello-world")
            .await
            .unwrap_or_default()
            .is_empty(),
        "nothing published"
    );
    let containers = e.engine.containers().await.unwrap();
    wait_until(Duration::from_secs(60), "no container is left", || async {
        Ok(e.engine.containers().await?.is_empty())
    })
    .await
    .unwrap_or_else(|err| panic!("{err}: {containers:#?}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_profile_cancel_mid_build_removes_the_container_from_the_engine() {
    let e = env().await;
    let repo = GitRepo::from_dir(&workspace_root().join("examples/hello-world"), |work| {
        let busybox = jobforge_tests::which("busybox").ok_or_else(|| anyhow::anyhow!("busybox"))?;
        std::fs::copy(busybox, work.join("busybox"))?;
        std::fs::write(
            work.join("Slow"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"778\"]\n",
        )?;
        Ok(())
    })
    .expect("repo");
    let git = serve(&repo).await;
    let spec = spec(&e, &git, json!({"dockerfile_path": "Slow"}));
    let kv = e.stack.kv();
    kv.put(
        "jobforge/requests/default/cx",
        &request_json("default", "cx", spec.clone()),
    )
    .await
    .expect("put");
    wait_until(
        T,
        "buildah runs the slow RUN step in its container",
        || async {
            let out = Command::new("pgrep")
                .args(["-f", "busybox sleep 778"])
                .output()?;
            Ok(!out.stdout.is_empty())
        },
    )
    .await
    .expect("slow step running");
    let running = e.engine.containers().await.unwrap();
    assert_eq!(running.len(), 1, "{running:#?}");
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
        Duration::from_secs(60),
        "the build container is gone",
        || async {
            let left = e.engine.containers().await?;
            let out = Command::new("pgrep")
                .args(["-f", "busybox sleep 778"])
                .output()?;
            Ok(left.is_empty() && out.stdout.is_empty())
        },
    )
    .await
    .expect("container removed and its processes gone");
    assert!(e.engine.volumes().await.unwrap().is_empty());
}
