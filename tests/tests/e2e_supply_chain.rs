//! End to end, issue 20 (supply chain): real git, real `buildah`, a real registry, driven by the
//! controller through the dev stack.
//!
//! - Reproducible images: two requests for the same commit publish the same manifest digest
//!   (the build uses the commit's time, `SOURCE_DATE_EPOCH`); a new commit publishes another.
//! - Signatures and provenance: with `signing` in `<prefix>/config`, the controller signs the
//!   published image with Vault transit; `tests/python/cosign_verify.py` (hvac + cryptography,
//!   not jobforge's code) verifies the `.sig` and the `.att` with the public key read from Vault,
//!   and fails on one flipped byte or on a signature moved to another image; the provenance
//!   holds no secret value; a token with the task policy cannot sign.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use jobforge_tests::{BuildEnv, DevStackOptions, DevStackProcess, GitRepo, Registry};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(300);

type Env = BuildEnv;

async fn env() -> Env {
    env_signing(false).await
}

const VAULT_ROOT: &str = "root";

/// `method path` on the dev stack's Vault with `token`; returns status and body.
async fn vault(stack: &DevStackProcess, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/{path}", stack.vault))
        .header("X-Vault-Token", token)
        .json(&body)
        .send()
        .await
        .expect("vault request");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// `GET` on the dev stack's Vault with the root token.
async fn vault_get(stack: &DevStackProcess, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/{path}", stack.vault))
        .header("X-Vault-Token", VAULT_ROOT)
        .send()
        .await
        .expect("vault request");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// A dev stack whose Vault has transit enabled and the key `jobforge`, and (when `signing`)
/// `<prefix>/config` asking the controller to sign with it, before the controller starts.
async fn env_signing(signing: bool) -> Env {
    env_signing_with(signing, None).await
}

/// [`env_signing`] with a registry that needs `basic` (user, password) for every request.
async fn env_signing_with(signing: bool, basic: Option<(&str, &str)>) -> Env {
    let stack = DevStackProcess::start(DevStackOptions::default()).expect("dev stack");
    if signing {
        let (c, b) = vault(
            &stack,
            VAULT_ROOT,
            "sys/mounts/transit",
            json!({"type": "transit"}),
        )
        .await;
        assert_eq!(c, 204, "{b}");
        let (c, b) = vault(
            &stack,
            VAULT_ROOT,
            "transit/keys/jobforge",
            json!({"type": "ecdsa-p256"}),
        )
        .await;
        assert_eq!(c, 200, "{b}");
        let cfg = json!({"registry_tls_verify": false, "signing": {"transit_key": "jobforge", "builder_id": "https://ci.example/jobforge"}});
        stack
            .kv()
            .put("jobforge/config", cfg.to_string().as_bytes())
            .await
            .expect("config");
    }
    let registry = match basic {
        Some((u, p)) => Registry::start_with_htpasswd(u, p).await,
        None => Registry::start().await,
    }
    .expect("registry");
    BuildEnv::start_with_registry(stack, registry, &[])
        .await
        .expect("registry and leading controller")
}

fn hello_spec(e: &Env, repo: &GitRepo, image: &str, tag: &str) -> Value {
    json!({
        "repo_url": repo.url,
        "git_ref": "main",
        "dockerfile_path": "Containerfile",
        "image_name": image,
        "image_tags": [tag],
        "registry_url": format!("{}/e2e", e.registry.addr),
    })
}

/// Submits `name` and waits for it to succeed; returns its status.
async fn build(e: &Env, name: &str, spec: Value) -> Value {
    e.submit("default", name, spec).await.expect("put");
    let st = e.wait_terminal(name, T).await.expect("terminal status");
    assert_eq!(
        st["phase"],
        "Succeeded",
        "{st:#}\nbuild log:\n{}",
        e.stack.cli_logs(name, "build")
    );
    st
}

/// `skopeo inspect --raw` and `--config` of `e2e/<image>` (failure diagnostics).
fn inspect(e: &Env, image: &str) -> String {
    let mut out = String::new();
    for extra in [&["--raw"][..], &["--config"][..]] {
        let o = std::process::Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .args(extra)
            .arg(format!("docker://{}/e2e/{image}", e.registry.addr))
            .output()
            .expect("skopeo");
        out.push_str(&String::from_utf8_lossy(&o.stdout));
        out.push('\n');
    }
    out
}

fn digest(st: &Value) -> String {
    st["image"]["digest"]
        .as_str()
        .expect("image.digest")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn same_commit_gives_the_same_digest_and_a_new_commit_another() {
    let e = env().await;
    let mut repo = GitRepo::hello_world().expect("repo");
    // Two requests, two image names (nothing shared in the registry), one commit.
    let a = build(&e, "rep-a", hello_spec(&e, &repo, "rep-a", "v1")).await;
    // The second one without buildah's layer cache: a real rebuild, seconds later.
    let mut spec_b = hello_spec(&e, &repo, "rep-b", "v1");
    spec_b["clear_cache"] = json!(true);
    let b = build(&e, "rep-b", spec_b).await;
    assert_eq!(a["source"]["commitSha"], repo.head.as_str());
    assert_eq!(b["source"]["commitSha"], repo.head.as_str());
    assert_eq!(
        digest(&a),
        digest(&b),
        "same commit, same Containerfile: same digest\n{}\n{}",
        inspect(&e, "rep-a:v1"),
        inspect(&e, "rep-b:v1")
    );
    // The committer time of a commit made in the same second could be the same; the content
    // differs, so the digest must too.
    std::fs::write(
        repo.work_dir().join("hello.sh"),
        "#!/bin/sh\necho \"${GREETING:-hi} (second commit)\"\n",
    )
    .expect("edit");
    let second = repo.commit_all("second").expect("commit");
    let c = build(&e, "rep-c", hello_spec(&e, &repo, "rep-a", "v2")).await;
    assert_eq!(c["source"]["commitSha"], second.as_str());
    assert_ne!(digest(&a), digest(&c), "a new commit gives a new digest");
}

/// Runs `tests/python/cosign_verify.py` for `repo@digest` with `extra` flags.
fn cosign_verify(e: &Env, repo: &str, digest: &str, extra: &[&str]) -> std::process::Output {
    let script = jobforge_tests::workspace_root().join("tests/python/cosign_verify.py");
    std::process::Command::new(jobforge_tests::python().expect("python"))
        .arg(script)
        .args([
            e.stack.vault.as_str(),
            VAULT_ROOT,
            "jobforge",
            e.registry.addr.as_str(),
            repo,
            digest,
        ])
        .args(extra)
        .output()
        .expect("python")
}

#[tokio::test(flavor = "multi_thread")]
async fn published_image_is_signed_and_attested_and_a_third_party_verifier_agrees() {
    let e = env_signing(true).await;
    let repo = GitRepo::hello_world().expect("repo");
    // A secret the build uses (registry credentials rendered by a Vault template; the test
    // registry accepts any login): its values must not reach the provenance.
    e.stack
        .put_secret(
            "secret/data/jobforge/default/registry",
            json!({"username": "user-S3CRET-name", "password": "pw-S3CRET-value"}),
        )
        .await
        .expect("secret");
    let mut spec = hello_spec(&e, &repo, "signed", "v1");
    spec["registry_credentials_path"] = json!("secret/data/jobforge/default/registry");
    let st = build(&e, "signed", spec.clone()).await;
    let image = &st["image"];
    let d = digest(&st);
    let hex = d.trim_start_matches("sha256:");
    assert!(
        image["signature"]
            .as_str()
            .is_some_and(|s| s.contains(&format!(":sha256-{hex}.sig@sha256:"))),
        "{st:#}"
    );
    assert!(
        image["provenance"]
            .as_str()
            .is_some_and(|s| s.contains(&format!(":sha256-{hex}.att@sha256:"))),
        "{st:#}"
    );
    let tags = e.registry.tags("e2e/signed").await.expect("tags");
    assert!(tags.contains(&format!("sha256-{hex}.sig")), "{tags:?}");
    assert!(tags.contains(&format!("sha256-{hex}.att")), "{tags:?}");

    // A verifier that is not jobforge's code.
    let out = cosign_verify(&e, "e2e/signed", &d, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statement: Value = serde_json::from_slice(&out.stdout).expect("statement");
    let pred = &statement["predicate"];
    let deps = &pred["buildDefinition"]["resolvedDependencies"];
    assert_eq!(
        deps[0]["digest"]["gitCommit"],
        repo.head.as_str(),
        "{statement:#}"
    );
    // The hello-world is `FROM scratch`: it has no base image, so the source is its only
    // dependency (not an empty `oci://` entry).
    assert_eq!(
        deps.as_array().map(Vec::len),
        Some(1),
        "FROM scratch has no base image: {statement:#}"
    );
    assert_eq!(
        pred["runDetails"]["builder"]["id"],
        "https://ci.example/jobforge"
    );
    let generation = st["observedGeneration"].as_u64().expect("generation");
    assert_eq!(
        pred["runDetails"]["metadata"]["invocationId"],
        format!("default/signed/{generation}/1")
    );
    assert_eq!(
        pred["buildDefinition"]["externalParameters"]["registry_credentials_path"],
        "secret/data/jobforge/default/registry"
    );
    let text = statement.to_string();
    for secret in ["user-S3CRET-name", "pw-S3CRET-value", "S3CRET"] {
        assert!(
            !text.contains(secret),
            "the provenance holds {secret}: {text}"
        );
    }

    // `jobforge verify` agrees, by tag (public key from Vault) and by digest (PEM file).
    let image_tag = format!("{}/e2e/signed:v1", e.registry.addr);
    let out = std::process::Command::new(jobforge_tests::bin("jobforge").expect("jobforge"))
        .args(["verify", &image_tag, "--insecure-registry"])
        .env("VAULT_ADDR", &e.stack.vault)
        .env("VAULT_TOKEN", VAULT_ROOT)
        .output()
        .expect("jobforge verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&repo.head) && text.contains("signature:   verified"),
        "{text}"
    );
    assert!(
        text.contains(&format!("default/signed/{generation}/1")),
        "{text}"
    );

    // `jobforge get` shows what a user needs to check the image: the commit, the signature and
    // provenance references, and the command that verifies them.
    let out = std::process::Command::new(jobforge_tests::bin("jobforge").expect("jobforge"))
        .args(["get", "signed", "--consul-addr", &e.stack.consul])
        .output()
        .expect("jobforge get");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        format!("Commit:      {}", repo.head),
        format!(
            "Signature:   {}",
            image["signature"].as_str().unwrap_or("?")
        ),
        format!(
            "Provenance:  {}",
            image["provenance"].as_str().unwrap_or("?")
        ),
        format!(
            "Verify:      jobforge verify {}",
            image["reference"].as_str().unwrap_or("?")
        ),
    ] {
        assert!(text.contains(&line), "`{line}` missing from:\n{text}");
    }

    // The MCP facade's verifyImage agrees (driven by the official MCP Python SDK).
    let out = std::process::Command::new(jobforge_tests::python().expect("python"))
        .arg(jobforge_tests::workspace_root().join("tests/python/mcp_client.py"))
        .arg("verify-stdio")
        .arg(jobforge_tests::bin("jobforge").expect("jobforge"))
        .arg(&e.stack.consul)
        .arg(&e.stack.vault)
        .arg(VAULT_ROOT)
        .arg("signed")
        .arg(&repo.head)
        .output()
        .expect("mcp_client.py");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // One flipped byte fails.
    let out = cosign_verify(&e, "e2e/signed", &d, &["--flip-byte"]);
    assert!(!out.status.success(), "a flipped byte verified");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not verify"));

    // A second image (another commit) has its own signature; its signature does not verify
    // the first image, as if re-tagged onto it.
    let mut repo2 = repo;
    std::fs::write(repo2.work_dir().join("hello.sh"), "#!/bin/sh\necho other\n").expect("edit");
    repo2.commit_all("other").expect("commit");
    let st2 = build(&e, "signed-2", hello_spec(&e, &repo2, "signed", "v2")).await;
    let d2 = digest(&st2);
    assert_ne!(d, d2);
    // jobforge verify refuses the second image once its signature is replaced by the first's.
    let key_file = tempfile::NamedTempFile::new().expect("tmp");
    let (_, key) = vault_get(&e.stack, "transit/keys/jobforge").await;
    std::fs::write(
        key_file.path(),
        key["data"]["keys"]["1"]["public_key"]
            .as_str()
            .expect("pem"),
    )
    .expect("pem");
    let hex2 = d2.trim_start_matches("sha256:");
    let retag = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!(
            "docker://{}/e2e/signed:sha256-{hex}.sig",
            e.registry.addr
        ))
        .arg(format!(
            "docker://{}/e2e/signed:sha256-{hex2}.sig",
            e.registry.addr
        ))
        .output()
        .expect("skopeo");
    assert!(retag.status.success(), "{retag:?}");
    let by_digest = format!("{}/e2e/signed@{d2}", e.registry.addr);
    let out = std::process::Command::new(jobforge_tests::bin("jobforge").expect("jobforge"))
        .args(["verify", &by_digest, "--insecure-registry", "--key-file"])
        .arg(key_file.path())
        .output()
        .expect("jobforge verify");
    assert!(!out.status.success(), "a moved signature verified");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("not {d2}")), "{err}");
    let out = cosign_verify(&e, "e2e/signed", &d2, &[]);
    assert!(!out.status.success(), "another image's signature verified");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("not {d2}")), "{err}");

    // The signing path is refused to a token of the task policy (what build and test tasks of
    // namespace `default` get: the shipped vault-policy-namespace.hcl, loaded at dev-stack start).
    let policy = jobforge_tests::vault_policies::task_policy("default");
    let task_token =
        jobforge_tests::vault_policies::create_token(&e.stack.vault, VAULT_ROOT, &[&policy])
            .await
            .expect("token");
    let (code, body) = vault(
        &e.stack,
        &task_token,
        "transit/sign/jobforge",
        json!({"input": "aGVsbG8="}),
    )
    .await;
    assert_eq!(code, 403, "{body}");
}

/// Pushes a tiny base image made here (`FROM scratch`, the host's static busybox as `/bin/sh`
/// and `/which` holding `which`; buildah with storage of its own, removed after) to
/// `reference`; returns its manifest digest in the registry.
fn push_base(reference: &str, which: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let bh = |args: &[&str]| {
        let out = std::process::Command::new("buildah")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("buildah");
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let busybox = jobforge_tests::which("busybox").expect("busybox (hack/prereqs.sh)");
    let file = dir.path().join("which");
    std::fs::write(&file, which).expect("write");
    let ctr = bh(&["from", "scratch"]);
    bh(&["copy", &ctr, busybox.to_str().expect("path"), "/bin/sh"]);
    bh(&["copy", &ctr, file.to_str().expect("path"), "/which"]);
    bh(&["commit", "--quiet", &ctr, which]);
    bh(&[
        "push",
        "--tls-verify=false",
        which,
        &format!("docker://{reference}"),
    ]);
    bh(&["rmi", "--all", "--force"]);
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A two-stage build with two different base images records both digests in the status and in
/// the signed provenance (not only the last stage's, which buildah annotates), each the digest
/// the registry holds; an image only named in a `RUN` step's output is not there.
#[tokio::test(flavor = "multi_thread")]
async fn provenance_names_every_stages_base_image() {
    let e = env_signing(true).await;
    let one = format!("{}/base/one:1", e.registry.addr);
    let two = format!("{}/base/two:1", e.registry.addr);
    let (d1, d2) = (push_base(&one, "one"), push_base(&two, "two"));
    assert_ne!(d1, d2);
    let src = tempfile::tempdir().expect("tmp");
    std::fs::write(
        src.path().join("Containerfile"),
        format!(
            "FROM {one} AS builder\n\
             RUN echo ::jobforge::base-image=evil.example/forged@sha256:{zeros} && echo built > /out.txt\n\
             FROM {two}\n\
             COPY --from=builder /out.txt /out.txt\n",
            zeros = "0".repeat(64)
        ),
    )
    .expect("write");
    let repo = GitRepo::from_dir(src.path(), |_| Ok(())).expect("repo");
    let st = build(&e, "stages", hello_spec(&e, &repo, "stages", "v1")).await;
    let recorded = st["source"]["baseImages"].clone();
    assert_eq!(
        recorded,
        json!([{"name": one, "digest": d1}, {"name": two, "digest": d2}]),
        "{st:#}"
    );
    let out = cosign_verify(&e, "e2e/stages", &digest(&st), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statement: Value = serde_json::from_slice(&out.stdout).expect("statement");
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (name, d) in [(&one, &d1), (&two, &d2)] {
        let hex = d.trim_start_matches("sha256:");
        assert!(
            deps.iter()
                .any(|x| x["uri"] == format!("oci://{name}") && x["digest"]["sha256"] == hex),
            "{name}@{d} missing: {statement:#}"
        );
    }
    assert_eq!(
        deps.len(),
        3,
        "the commit and two base images: {statement:#}"
    );
    assert!(!statement.to_string().contains("forged"), "{statement:#}");
}

/// `jobforge verify` against a registry that requires auth for reads (htpasswd): the image is
/// built, published and signed there with the request's registry credentials (Vault); verify is
/// refused anonymously, and verifies with the credentials from an authfile named by
/// `REGISTRY_AUTH_FILE`, from `~/.docker/config.json`, and from `--username` with
/// `--password-stdin`; a wrong password fails.
#[tokio::test(flavor = "multi_thread")]
async fn verify_reads_a_registry_that_requires_auth_with_the_users_credentials() {
    use std::io::Write as _;
    let (user, password) = ("reader", "s3cret-reader-pw");
    let e = env_signing_with(true, Some((user, password))).await;
    e.stack
        .put_secret(
            "secret/data/jobforge/default/registry",
            json!({"username": user, "password": password}),
        )
        .await
        .expect("secret");
    let repo = GitRepo::hello_world().expect("repo");
    let mut spec = hello_spec(&e, &repo, "locked", "v1");
    spec["registry_credentials_path"] = json!("secret/data/jobforge/default/registry");
    let st = build(&e, "locked", spec).await;
    assert!(st["image"]["signature"].is_string(), "{st:#}");
    let digest = digest(&st);
    let locked = &e.registry;
    let (_, key) = vault_get(&e.stack, "transit/keys/jobforge").await;
    let home = tempfile::tempdir().expect("tmp");
    let pem = home.path().join("key.pem");
    std::fs::write(
        &pem,
        key["data"]["keys"]["1"]["public_key"]
            .as_str()
            .expect("pem"),
    )
    .expect("pem");
    let image = format!("{}/e2e/locked@{digest}", locked.addr);
    let verify = |extra: &[&str], env: &[(&str, &std::path::Path)], stdin: &str| {
        let mut cmd =
            std::process::Command::new(jobforge_tests::bin("jobforge").expect("jobforge"));
        cmd.args(["verify", &image, "--insecure-registry", "--key-file"])
            .arg(&pem)
            .args(extra)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", home.path().join("nohome"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("jobforge verify");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        child.wait_with_output().expect("jobforge verify")
    };
    let out = verify(&[], &[], "");
    assert!(
        !out.status.success(),
        "read anonymously from a registry that needs auth: {out:?}"
    );
    let authfile = home.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        &authfile,
        json!({"auths": {locked.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .expect("authfile");
    let out = verify(&[], &[("REGISTRY_AUTH_FILE", &authfile)], "");
    assert!(out.status.success(), "with REGISTRY_AUTH_FILE: {out:?}");
    let docker_home = home.path().join("dockerhome");
    std::fs::create_dir_all(docker_home.join(".docker")).expect("mkdir");
    std::fs::copy(&authfile, docker_home.join(".docker/config.json")).expect("copy");
    let out = verify(&[], &[("HOME", &docker_home)], "");
    assert!(out.status.success(), "with ~/.docker/config.json: {out:?}");
    let out = verify(
        &["--username", user, "--password-stdin"],
        &[],
        &format!("{password}\n"),
    );
    assert!(out.status.success(), "with --password-stdin: {out:?}");
    let out = verify(&["--username", user, "--password-stdin"], &[], "wrong\n");
    assert!(!out.status.success(), "a wrong password verified: {out:?}");
}
