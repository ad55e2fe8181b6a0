//! Issue 19 end to end with real buildah: `examples/multi-stage` built through jobforge on the
//! dev stack, its `FROM debian:bookworm-slim` resolved to a local registry mirror configured by
//! the operator (`build.registry_mirrors` in `<prefix>/config`), with a build arg, a build secret
//! from the dev Vault and a target stage. The Debian image is made here
//! (`hack/docker-engine.sh debian-base`) and served only by the mirror, which sits behind a
//! counting proxy: the pulls are seen reaching it. The secret is then looked for in every layer
//! of the published image, every KV value (log tails, status) and every Nomad job spec.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use jobforge_tests::proxy::FaultProxy;
use jobforge_tests::{
    BuildEnv, ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, Registry, request_json,
};
use serde_json::json;

// A Debian multi-stage build on vfs storage took 2 minutes alone and up to 4 on a loaded 2-core machine.
const T: Duration = Duration::from_secs(900);
const SECRET: &str = "release-token-7d41e0c2b9";

/// Every byte of every blob of `image` (gunzipped when compressed), for greps.
fn image_blobs(image: &str) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let copy = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", image])
        .arg(format!("dir:{}", dir.path().display()))
        .output()
        .expect("skopeo copy");
    assert!(copy.status.success(), "{copy:?}");
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            Command::new("sh")
                .arg("-c")
                .arg("gzip -dc -- \"$1\" 2>/dev/null || cat -- \"$1\"")
                .arg("sh")
                .arg(&path)
                .output()
                .expect("read blob")
                .stdout
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_stage_example_builds_from_the_debian_mirror_and_the_secret_goes_nowhere() {
    let stack = DevStackProcess::start(DevStackOptions::default()).expect("dev stack");
    let registry = Registry::start().await.expect("registry");
    let mirror = Registry::start().await.expect("mirror registry");
    jobforge_tests::docker::debian_base_image(&mirror.addr)
        .expect("the Debian base image (hack/docker-engine.sh debian-base)");
    let proxy = FaultProxy::start(&format!("http://{}", mirror.addr))
        .await
        .expect("proxy");

    // The operator's mirrors, in place before the controller's first reading.
    let config = json!({"build": {"registry_mirrors": [
        {"prefix": "docker.io", "mirror": proxy.host_port(), "insecure": true}
    ]}});
    stack
        .kv()
        .put("jobforge/config", config.to_string().as_bytes())
        .await
        .expect("config");
    let BuildEnv {
        controller: _ctl,
        stack,
        registry,
    } = BuildEnv::start_with_registry(stack, registry, &[])
        .await
        .expect("leading controller");

    let repo = GitRepo::from_dir(
        &jobforge_tests::workspace_root().join("examples/multi-stage"),
        |_| Ok(()),
    )
    .expect("repo");
    stack
        .put_secret(
            "secret/data/jobforge/default/release",
            json!({"token": SECRET}),
        )
        .await
        .expect("secret");
    let spec = json!({
        "repo_url": repo.url,
        "git_ref": "main",
        "dockerfile_path": "Containerfile",
        "image_name": "multi-stage",
        "image_tags": ["v1.0.0"],
        "registry_url": format!("{}/demo", registry.addr),
        "build_args": {"APP_VERSION": "1.0.0"},
        "build_secrets": [{"id": "release_token", "vault_path": "secret/data/jobforge/default/release", "field": "token"}],
        "target": "runtime",
        "test": {"commands": [
            "/usr/local/bin/selftest",
            "/usr/local/bin/app | grep -qx 'multi-stage app 1.0.0'",
        ]},
    });
    stack
        .kv()
        .put(
            "jobforge/requests/default/multi-stage",
            &request_json("default", "multi-stage", spec),
        )
        .await
        .expect("put");
    let st = stack
        .wait_terminal("default", "multi-stage", T)
        .await
        .expect("terminal");
    let build_log = stack.cli_logs("multi-stage", "build");
    let test_log = stack.cli_logs("multi-stage", "test");
    assert_eq!(st["phase"], "Succeeded", "{st:#}\n{build_log}\n{test_log}");

    // FROM debian:bookworm-slim came from the mirror (the only place that has it).
    assert!(
        proxy.faults().requests() > 0,
        "no request reached the mirror\n{build_log}"
    );
    assert!(
        build_log.contains("release token present"),
        "the build's RUN saw the secret:\n{build_log}"
    );
    assert!(test_log.contains("selftest: passed"), "{test_log}");

    // The secret is in no layer, config or manifest of the published image.
    let image = format!("docker://{}/demo/multi-stage:v1.0.0", registry.addr);
    let blobs = image_blobs(&image);
    assert!(blobs.len() >= 4, "manifest, config and layers were copied");
    for b in &blobs {
        assert!(
            !String::from_utf8_lossy(b).contains(SECRET),
            "the secret is in a blob of the image"
        );
    }
    // Nor in any log.
    for (what, text) in [("build log", &build_log), ("test log", &test_log)] {
        assert!(!text.contains(SECRET), "the secret is in the {what}");
    }
    // Nor in any KV value (status, log tails, history).
    let kv = stack.kv_values().await.expect("KV values");
    assert!(kv.len() > 2, "{} KV entries", kv.len());
    for (key, value) in &kv {
        assert!(
            !String::from_utf8_lossy(value).contains(SECRET),
            "the secret is in KV {key}"
        );
    }
    // Nor in any Nomad job spec.
    let specs = stack
        .job_specs("jobforge-default-multi-stage")
        .await
        .expect("job specs");
    assert!(specs.len() >= 3, "build, test and publish jobs: {specs:?}");
    let mut with_mirrors = 0;
    for (id, spec) in &specs {
        assert!(!spec.contains(SECRET), "the secret is in job {id}");
        if spec.contains("JF_REGISTRIES_CONF_B64") {
            with_mirrors += 1;
        }
    }
    assert_eq!(with_mirrors, 1, "only the build job carries the mirrors");
    // Every process above (controller, dev stack, registries, proxy) stops on drop.
}

/// A TCP proxy on a free loopback port that forwards to `upstream` and records every byte the
/// clients send (the HTTP requests with their headers), for greps. Stops with the runtime.
async fn recording_proxy(upstream: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let rec = rec.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                rec.lock().unwrap().extend_from_slice(&buf[..n]);
                                if sw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, seen)
}

/// `pull_credentials_path`: the base image is in a registry that requires authentication, the
/// build pulls it with the request's pull credentials (from the dev Vault), and the push
/// registry, behind a recording proxy, never receives them (no `Authorization` header carrying
/// them, no password in any byte sent to it).
#[tokio::test(flavor = "multi_thread")]
async fn pull_credentials_reach_the_private_base_registry_and_never_the_push_registry() {
    const PULL_USER: &str = "puller";
    const PULL_PASSWORD: &str = "pull-pass-5c8e1f";
    let stack = DevStackProcess::start(DevStackOptions::default()).expect("dev stack");
    let plain = Registry::start().await.expect("registry");
    let private = Registry::start_with_htpasswd(PULL_USER, PULL_PASSWORD)
        .await
        .expect("registry with htpasswd auth");
    let push = Registry::start_with_htpasswd("pusher", "push-pass-0a9b")
        .await
        .expect("push registry with htpasswd auth");
    let (push_addr, seen) = recording_proxy(push.addr.clone()).await;

    // The private base image: busybox, copied in with the credentials.
    let busybox = jobforge_tests::docker::busybox_image(&plain.addr).expect("busybox image");
    let base = format!("{}/private/base:1", private.addr);
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("{PULL_USER}:{PULL_PASSWORD}"),
        ])
        .arg(format!("docker://{busybox}"))
        .arg(format!("docker://{base}"))
        .output()
        .expect("skopeo copy");
    assert!(copy.status.success(), "{copy:?}");
    // Anonymous pulls are refused: a build that gets it used the credentials.
    let anon = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{base}"))
        .output()
        .expect("skopeo inspect");
    assert!(
        !anon.status.success(),
        "the private registry must need auth"
    );

    let ctl = ControllerProcess::start(&stack, &[])
        .await
        .expect("controller");
    ctl.wait_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let repo = GitRepo::from_dir(
        &jobforge_tests::workspace_root().join("examples/hello-world"),
        |w| {
            std::fs::write(
                w.join("Containerfile"),
                format!("FROM {base}\nRUN echo 'jobforge-test: private base pulled' > /pulled\n"),
            )?;
            Ok(())
        },
    )
    .expect("repo");
    stack
        .put_secret(
            "secret/data/jobforge/default/pull",
            json!({"username": PULL_USER, "password": PULL_PASSWORD}),
        )
        .await
        .expect("pull secret");
    stack
        .put_secret(
            "secret/data/jobforge/default/registry",
            json!({"username": "pusher", "password": "push-pass-0a9b"}),
        )
        .await
        .expect("push secret");
    let spec = json!({
        "repo_url": repo.url,
        "git_ref": "main",
        "dockerfile_path": "Containerfile",
        "image_name": "private-base",
        "image_tags": ["v1"],
        "registry_url": format!("{push_addr}/e2e"),
        "registry_credentials_path": "secret/data/jobforge/default/registry",
        "pull_registry": private.addr,
        "pull_credentials_path": "secret/data/jobforge/default/pull",
    });
    stack
        .kv()
        .put(
            "jobforge/requests/default/private-base",
            &request_json("default", "private-base", spec),
        )
        .await
        .expect("put");
    let st = stack
        .wait_terminal("default", "private-base", T)
        .await
        .expect("terminal");
    let build_log = stack.cli_logs("private-base", "build");
    assert_eq!(st["phase"], "Succeeded", "{st:#}\n{build_log}");
    let published = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "pusher:push-pass-0a9b",
        ])
        .arg(format!("docker://{}/e2e/private-base:v1", push.addr))
        .output()
        .expect("skopeo inspect");
    assert!(published.status.success(), "published: {published:?}");

    let sent = String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
    let pull_basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{PULL_USER}:{PULL_PASSWORD}"));
    let push_basic = base64::engine::general_purpose::STANDARD.encode("pusher:push-pass-0a9b");
    assert!(
        sent.contains(&push_basic),
        "the recording saw the push registry's own credentials (it requires them)"
    );
    assert!(
        !sent.contains(&pull_basic),
        "pull credentials reached the push registry"
    );
    assert!(
        !sent.contains(PULL_PASSWORD),
        "the pull password reached the push registry"
    );
    assert!(
        !sent.contains(PULL_USER),
        "the pull user reached the push registry"
    );
    for line in sent.lines() {
        if line.to_ascii_lowercase().starts_with("authorization:") {
            assert!(
                line.contains(&push_basic) || line.to_ascii_lowercase().contains("bearer"),
                "unexpected credentials sent to the push registry: {line}"
            );
        }
    }
    assert!(
        !build_log.contains(PULL_PASSWORD),
        "the pull password is in the build log"
    );
}
