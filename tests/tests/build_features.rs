//! Issue 19, end to end with real buildah, a real registry and real git: build arguments, a
//! build secret, a target stage, image labels and annotations, git submodules, and a context
//! without `.git`, on one multi-stage Containerfile. What the image holds is checked by the
//! request's own test phase (commands run inside the built image); what the registry holds by
//! skopeo; where the secret must not be, by greps of each place.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jobforge_tests::githttp::GitHttpServer;
use jobforge_tests::{BuildEnv, DevStackOptions, GitRepo, request_json, which};
use serde_json::json;

const T: Duration = Duration::from_secs(300);
const SECRET: &str = "s3cr3t-build-value-9f2c";

/// A multi-stage Containerfile (`SECRET_SHA256` is replaced by the secret's SHA-256: the file is
/// printed by buildah, so it must not hold the secret): `base` (busybox), `build` (uses the build arg and the secret,
/// copies the context), `runtime` (the target) and `other` (must not be built).
const CONTAINERFILE: &str = r#"FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM base AS build
ARG GREETING
RUN --mount=type=secret,id=token test "$(sha256sum < /run/secrets/token | cut -d' ' -f1)" = "SECRET_SHA256" && echo "jobforge-test: secret readable"
COPY . /src
RUN if test -e /src/.git; then echo "jobforge-test: .git in context"; else echo "jobforge-test: no .git"; fi
RUN test -f /src/vendor/lib/lib.txt && echo "jobforge-test: submodule present"
RUN printf 'greeting=%s\n' "$GREETING" > /greeting

FROM base AS runtime
COPY --from=build /greeting /greeting
COPY --from=build /src/vendor/lib/lib.txt /lib.txt
CMD ["cat", "/greeting"]

FROM base AS other
RUN echo other > /other
"#;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn build_args_secret_target_labels_and_submodules_reach_the_build_and_the_secret_goes_nowhere()
 {
    let BuildEnv {
        controller: _ctl,
        stack,
        registry,
    } = BuildEnv::start(DevStackOptions::default())
        .await
        .expect("dev stack, registry and leading controller");

    // The submodule, served over plain HTTP (git refuses file:// submodules by default).
    let sub = GitRepo::from_dir(
        &jobforge_tests::workspace_root().join("examples/hello-world"),
        |w| {
            std::fs::write(w.join("lib.txt"), "from the submodule\n")?;
            Ok(())
        },
    )
    .expect("submodule repo");
    let server = GitHttpServer::start_public(sub.root())
        .await
        .expect("git http");
    let sub_url = format!("{}repo.git", server.base);

    let busybox = which("busybox").expect("busybox (hack/prereqs.sh)");
    let mut repo = GitRepo::from_dir(
        &jobforge_tests::workspace_root().join("examples/hello-world"),
        |w| {
            std::fs::copy(&busybox, w.join("busybox"))?;
            let sha = Command::new("sh")
                .args([
                    "-c",
                    "printf %s \"$1\" | sha256sum | cut -d' ' -f1",
                    "sh",
                    SECRET,
                ])
                .output()?;
            let sha = String::from_utf8_lossy(&sha.stdout).trim().to_string();
            assert_eq!(sha.len(), 64, "sha256sum");
            std::fs::write(
                w.join("Containerfile"),
                CONTAINERFILE.replace("SECRET_SHA256", &sha),
            )?;
            Ok(())
        },
    )
    .expect("repo");
    git(
        &repo.work_dir(),
        &["submodule", "add", "-q", &sub_url, "vendor/lib"],
    );
    repo.commit_all("add the submodule").expect("commit");

    stack
        .put_secret(
            "secret/data/jobforge/default/build",
            json!({"token": SECRET}),
        )
        .await
        .expect("secret");
    // A value Nomad and the shell would both expand if it were text of theirs.
    let greeting = "hello ${VAULT_TOKEN} $(id) \"quoted\"";
    let spec = json!({
        "repo_url": repo.url,
        "git_ref": "main",
        "dockerfile_path": "Containerfile",
        "image_name": "features",
        "image_tags": ["v1"],
        "registry_url": format!("{}/e2e", registry.addr),
        "build_args": {"GREETING": greeting},
        "build_secrets": [{"id": "token", "vault_path": "secret/data/jobforge/default/build", "field": "token"}],
        "target": "runtime",
        "image_labels": {"org.opencontainers.image.source": "https://git.example.com/features"},
        "image_annotations": {"org.example.team": "default"},
        "test": {"commands": [
            "cat /greeting",
            "test ! -e /other && echo 'jobforge-test: target stage only'",
            "test ! -e /run/secrets/token && echo 'jobforge-test: no secret in the image'",
            "cat /lib.txt",
        ]},
    });
    let doc = request_json("default", "features", spec);
    stack
        .kv()
        .put("jobforge/requests/default/features", &doc)
        .await
        .expect("put");
    let st = stack
        .wait_terminal("default", "features", T)
        .await
        .expect("terminal");
    let build_log = stack.cli_logs("features", "build");
    let test_log = stack.cli_logs("features", "test");
    assert_eq!(st["phase"], "Succeeded", "{st:#}\n{build_log}\n{test_log}");

    // The build saw the secret, no .git, and the submodule; the test phase sees the build arg
    // byte for byte, only the target stage, and no secret.
    for want in [
        "jobforge-test: secret readable",
        "jobforge-test: no .git",
        "jobforge-test: submodule present",
    ] {
        assert!(build_log.contains(want), "{want}:\n{build_log}");
    }
    for want in [
        format!("greeting={greeting}"),
        "jobforge-test: target stage only".to_string(),
        "jobforge-test: no secret in the image".to_string(),
        "from the submodule".to_string(),
    ] {
        assert!(test_log.contains(&want), "{want}:\n{test_log}");
    }

    // Labels in the image config, annotations on the manifest.
    let image = format!("docker://{}/e2e/features:v1", registry.addr);
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &image])
        .output()
        .expect("skopeo inspect");
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("org.opencontainers.image.source")
            && text.contains("git.example.com/features"),
        "{text}"
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &image])
        .output()
        .expect("skopeo inspect --raw");
    let manifest = String::from_utf8_lossy(&raw.stdout);
    assert!(manifest.contains("org.example.team"), "{manifest}");

    // The secret is in no layer of the published image, no log, no job spec.
    let dir = tempfile::tempdir().expect("tmp");
    let copy = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", &image])
        .arg(format!("dir:{}", dir.path().display()))
        .output()
        .expect("skopeo copy");
    assert!(copy.status.success(), "{copy:?}");
    let mut blobs = 0;
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        let out = Command::new("sh")
            .arg("-c")
            .arg("gzip -dc -- \"$1\" 2>/dev/null || cat -- \"$1\"")
            .arg("sh")
            .arg(&path)
            .output()
            .expect("read blob");
        blobs += 1;
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(SECRET),
            "the secret is in {}",
            path.display()
        );
    }
    assert!(blobs >= 3, "manifest, config and layers were copied");
    for (what, text) in [("build log", &build_log), ("test log", &test_log)] {
        assert!(!text.contains(SECRET), "the secret is in the {what}");
    }
    let specs = stack
        .job_specs("jobforge-default-features")
        .await
        .expect("job specs");
    assert!(!specs.is_empty(), "the build's jobs are listed");
    for (id, spec) in &specs {
        assert!(!spec.contains(SECRET), "the secret is in job {id}");
    }
    // Every process above (controller, dev stack, registry, git server) stops on drop.
}
