//! Issue 19's layer cache, end to end with real buildah, a real registry and real git on the
//! dev stack (`raw_exec`): `build.cache` in `<prefix>/config` gives each namespace a store of
//! its own under the cache root, reused by the next build of that namespace, never by another's;
//! images stay reproducible whatever the cache holds (issue 20: the layers are built at a
//! constant time, the commit's time is set by a last commit; see `controller/src/jobspec/build.rs`);
//! a failed build leaves no container and no tagged image; pruning keeps a namespace's store
//! under its size while other builds of the namespace run.
//!
//! Cache hits are counted from the build log (`--> Using cache <id>`, buildah's line for a step
//! taken from the cache), the store is read with the host's buildah against the namespace's
//! directory.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jobforge_tests::{
    BuildEnv, ControllerProcess, DevStackOptions, DevStackProcess, GitRepo, Registry, request_json,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(300);

/// Six cacheable steps; the application (`app.txt`) comes in at the fifth.
const CONTAINERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo "dependencies" > /deps.txt && if ls CACHE_ROOT >/dev/null 2>&1; then echo "jobforge-test: cache root visible"; else echo "jobforge-test: cache root not visible"; fi
COPY app.txt /app.txt
RUN cat /app.txt > /app.out
CMD ["cat", "/app.out"]
"#;

struct Env {
    stack: DevStackProcess,
    registry: Registry,
    cache: tempfile::TempDir,
    _ctl: ControllerProcess,
}

/// A dev stack with `build.cache` (root: a temporary directory, `max_size_mb`) in
/// `<prefix>/config` before the controller starts.
async fn env(max_size_mb: u64) -> Env {
    let stack = DevStackProcess::start(DevStackOptions::default()).expect("dev stack");
    let cache = tempfile::tempdir().expect("cache dir");
    let cfg = json!({"registry_tls_verify": false, "build": {"cache": {
        "root": cache.path().display().to_string(), "max_size_mb": max_size_mb}}});
    stack
        .kv()
        .put("jobforge/config", cfg.to_string().as_bytes())
        .await
        .expect("config");
    let BuildEnv {
        controller,
        stack,
        registry,
    } = BuildEnv::start_on(stack, &[])
        .await
        .expect("registry and leading controller");
    Env {
        stack,
        registry,
        cache,
        _ctl: controller,
    }
}

fn repo(containerfile: &str, cache_root: &Path) -> GitRepo {
    GitRepo::from_dir(
        &jobforge_tests::workspace_root().join("examples/hello-world"),
        |w| {
            let busybox = jobforge_tests::which("busybox").expect("busybox (hack/prereqs.sh)");
            std::fs::copy(&busybox, w.join("busybox"))?;
            std::fs::write(
                w.join("Containerfile"),
                containerfile.replace("CACHE_ROOT", &cache_root.display().to_string()),
            )?;
            std::fs::write(w.join("app.txt"), "application line 1\n")?;
            Ok(())
        },
    )
    .expect("repo")
}

fn spec(e: &Env, repo: &GitRepo, image: &str) -> Value {
    json!({
        "repo_url": repo.url,
        "git_ref": "main",
        "dockerfile_path": "Containerfile",
        "image_name": image,
        "image_tags": ["v1"],
        "registry_url": format!("{}/e2e", e.registry.addr),
        "image_labels": {"org.opencontainers.image.source": "https://git.example.com/cache"},
        "image_annotations": {"org.example.team": "cache"},
    })
}

/// `jobforge -n NS logs NAME --phase build` against the stack.
fn build_log(e: &Env, ns: &str, name: &str) -> String {
    phase_log(e, ns, name, "build")
}

/// `jobforge -n NS logs NAME --phase PHASE` against the stack.
fn phase_log(e: &Env, ns: &str, name: &str, phase: &str) -> String {
    let out = Command::new(jobforge_tests::bin("jobforge").expect("jobforge binary"))
        .args(["-n", ns, "logs", name, "--phase", phase])
        .envs(e.stack.env())
        .output()
        .expect("jobforge logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cache_hits(log: &str) -> usize {
    log.lines().filter(|l| l.contains("Using cache")).count()
}

async fn submit(e: &Env, ns: &str, name: &str, spec: Value) {
    e.stack
        .kv()
        .put(
            &format!("jobforge/requests/{ns}/{name}"),
            &request_json(ns, name, spec),
        )
        .await
        .expect("put");
}

/// Submits `ns/name`, waits for it to end in `want`; returns its status and build log.
async fn build(e: &Env, ns: &str, name: &str, spec: Value, want: &str) -> (Value, String) {
    submit(e, ns, name, spec).await;
    let st = e
        .stack
        .wait_terminal(ns, name, T)
        .await
        .expect("terminal status");
    let log = build_log(e, ns, name);
    assert_eq!(st["phase"], want, "{st:#}\nbuild log:\n{log}");
    (st, log)
}

fn digest(st: &Value) -> String {
    st["image"]["digest"]
        .as_str()
        .expect("image.digest")
        .to_string()
}

/// The namespace's store: `<root>/<ns>/<driver>` (the one driver directory the build made).
fn store(e: &Env, ns: &str) -> PathBuf {
    let dir = e.cache.path().join(ns);
    let drivers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(drivers.len(), 1, "{drivers:?}");
    drivers.into_iter().next().unwrap()
}

/// The host's buildah on a namespace's store; stdout.
fn buildah(store: &Path, args: &[&str]) -> String {
    let driver = store.file_name().unwrap().to_str().unwrap();
    let out = Command::new("buildah")
        .args(["--storage-driver", driver, "--root"])
        .arg(store.join("storage"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(args)
        .output()
        .expect("buildah");
    assert!(out.status.success(), "buildah {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn image_ids(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = buildah(store, &["images", "--all", "--quiet", "--no-trunc"])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// No working container, and no image with a name (the temporary image is pushed by ID and
/// never tagged in the shared store).
fn assert_nothing_left(store: &Path) {
    let ctrs = buildah(store, &["containers", "--all", "--quiet"]);
    assert!(ctrs.trim().is_empty(), "containers left: {ctrs}");
    let names = buildah(
        store,
        &["images", "--all", "--format", "{{.Name}}:{{.Tag}}"],
    );
    assert!(
        names.lines().all(|n| n == "<none>:<none>"),
        "tagged images left: {names}"
    );
}

fn skopeo_inspect(e: &Env, image: &str, extra: &str) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", extra])
        .arg(format!("docker://{}/e2e/{image}", e.registry.addr))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn du_mb(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sm").arg(dir).output().expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("du -sm output")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_layer_cache_is_reused_within_a_namespace_only_and_digests_do_not_depend_on_it() {
    let e = env(10240).await;
    let mut repo = repo(CONTAINERFILE, e.cache.path());
    let first = repo.head.clone();

    // Cold: nothing to reuse.
    let (a1, log) = build(&e, "team-a", "a1", spec(&e, &repo, "a1"), "Succeeded").await;
    assert_eq!(cache_hits(&log), 0, "{log}");
    assert!(
        log.contains("jobforge-test: cache root not visible"),
        "a RUN step sees the cache root:\n{log}"
    );
    let team_a = store(&e, "team-a");
    assert_nothing_left(&team_a);

    // The same commit again: every step from the cache, the same digest; its test phase runs
    // the image from the namespace's store (nothing pulled) and leaves no container there.
    let with_tests = jobforge_tests::with_fields(
        spec(&e, &repo, "a2"),
        json!({"test": {"commands": ["test \"$(cat /app.out)\" = 'application line 1'"]}}),
    );
    let (a2, log) = build(&e, "team-a", "a2", with_tests, "Succeeded").await;
    assert_eq!(cache_hits(&log), 6, "{log}");
    assert_eq!(digest(&a1), digest(&a2), "warm = cold for one commit");
    let test_log = phase_log(&e, "team-a", "a2", "test");
    assert!(
        test_log.contains("from the layer cache (not pulled)")
            && test_log.contains("all tests passed"),
        "{test_log}"
    );
    assert_nothing_left(&team_a);

    // Another namespace, same commit: its own empty store (no hit, team-a's store untouched),
    // and the same digest from a cold cache.
    let team_a_before = image_ids(&team_a);
    let (b1, log) = build(&e, "team-b", "b1", spec(&e, &repo, "b1"), "Succeeded").await;
    assert_eq!(cache_hits(&log), 0, "team-b used team-a's layers:\n{log}");
    assert_eq!(digest(&a1), digest(&b1), "cold in team-b = warm in team-a");
    assert_eq!(
        image_ids(&team_a),
        team_a_before,
        "team-b changed team-a's store"
    );
    let team_b = store(&e, "team-b");
    assert_ne!(team_a, team_b);
    assert!(
        !team_b.starts_with(&team_a) && !team_a.starts_with(&team_b),
        "{team_a:?} {team_b:?}"
    );

    // One application line changed: the steps before `COPY app.txt` come from the cache (built
    // for the previous commit), the rest is rebuilt.
    std::fs::write(repo.work_dir().join("app.txt"), "application line 2\n").unwrap();
    let second = repo.commit_all("change one line").unwrap();
    let (a3, log) = build(&e, "team-a", "a3", spec(&e, &repo, "a3"), "Succeeded").await;
    assert_eq!(cache_hits(&log), 3, "{log}");
    assert_eq!(a3["source"]["commitSha"], second.as_str());
    assert_ne!(digest(&a1), digest(&a3), "a new commit, a new digest");
    // The same commit built cold in a third namespace: the digest of the partly cached build.
    let (c3, log) = build(&e, "team-c", "c3", spec(&e, &repo, "c3"), "Succeeded").await;
    assert_eq!(cache_hits(&log), 0, "{log}");
    assert_eq!(digest(&a3), digest(&c3), "partly warm = cold");

    // What the image says: the commit's time as its creation time, the request's labels and
    // annotations, no base image (FROM scratch).
    let commit_time = String::from_utf8(
        Command::new("git")
            .args(["show", "-s", "--format=%cI", &first])
            .current_dir(repo.work_dir())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let created = skopeo_inspect(&e, "a1:v1", "--config")["created"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        chrono_like(&created),
        chrono_like(commit_time.trim()),
        "created {created} vs commit time {commit_time}"
    );
    let config = skopeo_inspect(&e, "a1:v1", "--config");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.source"],
        "https://git.example.com/cache"
    );
    let manifest = skopeo_inspect(&e, "a1:v1", "--raw");
    assert_eq!(manifest["annotations"]["org.example.team"], "cache");
    assert!(
        manifest["annotations"]
            .get("org.opencontainers.image.base.digest")
            .is_none(),
        "{manifest:#}"
    );
}

/// `2026-11-28T14:00:00Z` and `2026-11-28T14:00:00+00:00` as seconds since the epoch, via
/// `date -d` (the test crate has no date library).
fn chrono_like(t: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", t, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("date -d {t:?}: {out:?}"))
}

const BIG: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY app.txt /app.txt
RUN head -c 3000000 /dev/urandom > /blob
"#;

const FAILING: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo "a step that works" > /ok
RUN echo "jobforge-test: failing now" && false
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_build_leaves_nothing_and_pruning_keeps_the_store_under_its_size() {
    const MAX_MB: u64 = 4;
    let e = env(MAX_MB).await;

    // A failing step: the working container is removed, no image is tagged.
    let failing = repo(FAILING, e.cache.path());
    let (_, log) = build(&e, "team-f", "f1", spec(&e, &failing, "f1"), "Failed").await;
    assert!(log.contains("jobforge-test: failing now"), "{log}");
    assert_nothing_left(&store(&e, "team-f"));

    // Two builds of one namespace at once, each adding more than the limit (busybox, 2 MB, and
    // 3 MB of random data): both succeed (pruning never runs while another build of the
    // namespace holds its lock).
    let mut big = repo(BIG, e.cache.path());
    submit(&e, "team-p", "p1", spec(&e, &big, "p1")).await;
    std::fs::write(big.work_dir().join("app.txt"), "another application\n").unwrap();
    big.commit_all("another").unwrap();
    submit(&e, "team-p", "p2", spec(&e, &big, "p2")).await;
    for name in ["p1", "p2"] {
        let st = e
            .stack
            .wait_terminal("team-p", name, T)
            .await
            .expect("terminal");
        assert_eq!(
            st["phase"],
            "Succeeded",
            "{st:#}\n{}",
            build_log(&e, "team-p", name)
        );
    }
    // A third build alone: it finds the store over its size (from the two above, or from
    // itself when they pruned) and prunes it under the limit.
    let (_, log) = build(&e, "team-p", "p3", spec(&e, &big, "p3"), "Succeeded").await;
    assert!(log.contains("layer cache over 4 MB"), "no pruning:\n{log}");
    let team_p = store(&e, "team-p");
    let size = du_mb(&team_p);
    assert!(size <= MAX_MB, "store is {size} MB > {MAX_MB} MB");
    assert_nothing_left(&team_p);
}

/// With `--layers`, buildah 1.28 records the digest of its last intermediate image as the base
/// image's; the build script records the base image's own digest instead (the provenance reads
/// these annotations).
#[tokio::test(flavor = "multi_thread")]
async fn the_recorded_base_image_digest_is_the_base_image_s_with_a_warm_cache() {
    let e = env(10240).await;
    // A base image in the test registry, built and pushed with the host's buildah.
    let base = format!("{}/e2e/base:1", e.registry.addr);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::copy(
        jobforge_tests::which("busybox").unwrap(),
        ctx.join("busybox"),
    )
    .unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    let host = |args: &[&str]| {
        let out = Command::new("buildah")
            .args(["--storage-driver", "vfs", "--root"])
            .arg(tmp.path().join("storage"))
            .arg("--runroot")
            .arg(tmp.path().join("run"))
            .args(args)
            .output()
            .expect("buildah");
        assert!(out.status.success(), "buildah {args:?}: {out:?}");
    };
    let ctx_s = ctx.display().to_string();
    host(&[
        "bud",
        "--isolation",
        "chroot",
        "--timestamp",
        "5",
        "--tag",
        &base,
        &ctx_s,
    ]);
    let digest_file = tmp.path().join("digest");
    let digest_s = digest_file.display().to_string();
    host(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        &digest_s,
        &base,
        &format!("docker://{base}"),
    ]);
    let base_digest = std::fs::read_to_string(&digest_file).unwrap();

    let containerfile = format!(
        "FROM {base}\nRUN echo dep > /dep.txt\nCOPY app.txt /app.txt\nRUN cat /app.txt > /app.out\n"
    );
    let mut repo = repo(&containerfile, e.cache.path());
    let (_, log) = build(&e, "team-x", "x1", spec(&e, &repo, "x1"), "Succeeded").await;
    assert_eq!(cache_hits(&log), 0, "{log}");
    std::fs::write(repo.work_dir().join("app.txt"), "changed\n").unwrap();
    repo.commit_all("changed").unwrap();
    let (_, log) = build(&e, "team-x", "x2", spec(&e, &repo, "x2"), "Succeeded").await;
    assert_eq!(cache_hits(&log), 1, "{log}");
    for image in ["x1:v1", "x2:v1"] {
        let m = skopeo_inspect(&e, image, "--raw");
        assert_eq!(
            m["annotations"]["org.opencontainers.image.base.name"], base,
            "{m:#}"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.base.digest"],
            base_digest.trim(),
            "{image}: {m:#}"
        );
    }
    let _ = Command::new("buildah")
        .args(["--storage-driver", "vfs", "--root"])
        .arg(tmp.path().join("storage"))
        .arg("--runroot")
        .arg(tmp.path().join("run"))
        .args(["rmi", "--all", "--force"])
        .output();
}
