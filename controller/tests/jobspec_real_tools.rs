//! The rendered build and publish jobs run for real: host `git`, `buildah` (vfs, chroot) and
//! `skopeo` against a `docker-registry` started by the test on a free loopback port, with a local
//! `file://` repository. Proves the flags of the fixed scripts exist in the installed tools
//! (Debian bookworm: buildah 1.28, skopeo 1.9) and that the digest printed by build equals the
//! digest published under every final tag, that test commands and the entry point run inside the
//! image (`buildah from` + `buildah run`) with the test env, stopping at the first failure, and
//! that the temporary tag is deleted.
//! Needs `git`, `buildah`, `skopeo` and `docker-registry` in PATH (fails, never skips, otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jobforge_controller::jobspec::{self, RenderConfig};
use jobforge_controller::nomad::job_spec::Job;
use std::collections::BTreeMap;

use jobforge_schema::{BuildRequest, BuildSpec, PipelinePhase, TestSpec};

/// Stops the registry even when the test fails. `log` holds its log lines (stderr) as they
/// come: one `response completed` line per request, with its method and URI.
struct Registry {
    child: Child,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Registry {
    /// Sends a request nobody else sends and waits (20 s at most) until the registry has logged
    /// it; returns how many lines the log held then. Requests completed before the call are
    /// logged before it returns, so the lines between two marks are the requests in between.
    fn mark(&self) -> usize {
        use std::io::{Read, Write};
        let uri = format!(
            "/v2/jobforge-mark-{}/tags/list",
            self.log.lock().unwrap().len()
        );
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(conn, "GET {uri} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            {
                let log = self.log.lock().unwrap();
                if let Some(i) = log.iter().position(|l| l.contains(&uri)) {
                    return i + 1;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not log {uri}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URIs of the `GET` requests of blobs logged in `lines` (a range of marks): the
    /// registry's `response completed` lines (`http.request.method`, `http.request.uri`).
    fn blob_gets(&self, lines: std::ops::Range<usize>) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log[lines]
            .iter()
            .filter(|l| l.contains("response completed") && l.contains("http.request.method=GET"))
            .filter_map(|l| {
                // logrus quotes a value only when it needs to (a digest's `:` does).
                let v = l.split("http.request.uri=").nth(1)?;
                let uri = match v.strip_prefix('"') {
                    Some(q) => q.split('"').next()?,
                    None => v.split(' ').next()?,
                };
                uri.contains("/blobs/").then(|| uri.to_string())
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("registry.yml");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("regdata").display()
        ),
    )
    .unwrap();
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker-registry must be installed (Debian package docker-registry)");
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reg = Registry {
        child,
        port,
        log: log.clone(),
    };
    // Wait for the registry's own "listening on" log line (no polling), with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
            log.lock().unwrap().push(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("registry did not log `listening on` for port {port}"));
    reg
}

/// Makes `repo` a git repository on branch `main` with everything in it committed as
/// `message`; returns the commit's SHA.
fn commit_all(repo: &Path, message: &str) -> String {
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", message]);
    git(repo, &["rev-parse", "HEAD"])
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run(job: &Job, root: &Path) -> (Option<i32>, String) {
    let (code, stdout, stderr) = run_raw(job, root);
    assert_eq!(code, Some(0), "{}: {stdout}\n{stderr}", job.id);
    (code, stdout)
}

fn run_raw(job: &Job, root: &Path) -> (Option<i32>, String, String) {
    let task = &job.task_groups[0].tasks[0];
    let args: Vec<&str> = task.config["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let task_dir = root.join(format!("{}-task", task.name));
    let secrets = root.join(format!("{}-secrets", task.name));
    fs::create_dir_all(&task_dir).unwrap();
    fs::create_dir_all(&secrets).unwrap();
    let out = Command::new(task.config["command"].as_str().unwrap())
        .args(&args)
        .envs(&task.env)
        .env("NOMAD_TASK_DIR", &task_dir)
        .env("NOMAD_SECRETS_DIR", &secrets)
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stdout, stderr)
}

fn marker<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(key))
        .next_back()
}

#[test]
fn real_buildah_build_and_skopeo_publish_against_a_local_registry() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_registry(dir.path());
    let repo = dir.path().join("repo");
    fs::create_dir_all(repo.join("app")).unwrap();
    // A static busybox as /bin/sh gives the scratch image a shell for the test phase.
    fs::copy("/bin/busybox", repo.join("app/sh")).expect("static /bin/busybox (package busybox)");
    fs::write(
        repo.join("app/Containerfile"),
        "FROM scratch\nCOPY sh /bin/sh\nCOPY hello.txt /hello.txt\n\
         RUN echo ::jobforge::commit=eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"test -f /hello.txt\"]\n",
    )
    .unwrap();
    fs::write(repo.join("app/hello.txt"), "hello\n").unwrap();
    let sha = commit_all(&repo, "one");

    let registry = format!("127.0.0.1:{}/team-a", reg.port);
    let req = BuildRequest::new(
        "team-a",
        "hello",
        BuildSpec {
            owner: "team-a".into(),
            repo_url: format!("file://{}", repo.display()),
            git_ref: "main".into(),
            dockerfile_path: Some("app/Containerfile".into()),
            dockerfile_context: Some("app".into()),
            image_name: "hello".into(),
            image_tags: vec!["v1".into(), "latest".into()],
            registry_url: registry.clone(),
            test: Some(TestSpec {
                commands: vec![
                    "test \"$GREETING\" = 'hi $(touch /pwned) `x`'".into(),
                    "test -f /hello.txt && ! test -e /pwned".into(),
                    "test \"$NOMADISH\" = '${VAULT_TOKEN} ${NOMAD_ALLOC_ID} ${attr.kernel.name}'".into(),
                    "test \"${#TRAILING}\" = 5 && test \"${TRAILING%?}\" = \"$(printf 'a\\n\\nb')\"".into(),
                ],
                entry_point: true,
                env: BTreeMap::from([
                    ("GREETING".into(), "hi $(touch /pwned) `x`".into()),
                    (
                        "NOMADISH".into(),
                        "${VAULT_TOKEN} ${NOMAD_ALLOC_ID} ${attr.kernel.name}".into(),
                    ),
                    ("TRAILING".into(), "a\n\nb\n".into()),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let cfg = RenderConfig {
        tls_verify: false,
        work_root: Some(dir.path().join("buildah")),
        ..Default::default()
    };

    let build = jobspec::render(&req, 3, 1, PipelinePhase::Build, &cfg).unwrap();
    let (_, out) = run(&build, dir.path());
    assert_eq!(
        marker(&out, "::jobforge::commit="),
        Some(sha.as_str()),
        "{out}"
    );
    let digest = marker(&out, "::jobforge::digest=")
        .expect("build digest")
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");

    assert!(
        out.contains(" ::jobforge::commit=eeee"),
        "a RUN step's marker is indented, never taken: {out}"
    );

    let test = jobspec::render(&req, 3, 1, PipelinePhase::Test, &cfg).unwrap();
    let (_, out) = run(&test, dir.path());
    assert!(out.contains("jobforge: all tests passed"), "{out}");
    // Each task's buildah storage is its own and is removed when the task ends.
    let left: Vec<_> = fs::read_dir(dir.path().join("buildah"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "storage left behind: {left:?}");

    let mut failing = req.clone();
    if let Some(t) = failing.spec.test.as_mut() {
        t.commands = vec!["true".into(), "exit 5".into(), "touch /never".into()];
    }
    let test = jobspec::render(&failing, 3, 1, PipelinePhase::Test, &cfg).unwrap();
    let (code, out, err) = run_raw(&test, dir.path());
    assert_eq!(code, Some(5), "{out}\n{err}");
    assert!(out.contains("::jobforge::failed-command=2\n"), "{out}");

    let publish = jobspec::render(&req, 3, 1, PipelinePhase::Publish, &cfg).unwrap();
    let (_, out) = run(&publish, dir.path());
    assert_eq!(
        marker(&out, "::jobforge::digest="),
        Some(digest.as_str()),
        "{out}"
    );

    let inspect = |reference: &str| {
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap()
    };
    for tag in ["v1", "latest"] {
        let o = inspect(&format!("{registry}/hello:{tag}"));
        assert!(
            o.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), digest);
    }
    let temp = inspect(&format!(
        "{registry}/jobforge-tmp/hello/team-a/hello:hello-3-a1"
    ));
    assert!(!temp.status.success(), "the temporary tag must be deleted");
}

/// Two requests of the same commit build the identical (reproducible) digest. The first one's
/// publish deletes its temporary image; the registry deletes a manifest by digest, with every
/// tag of it in that repository, so when both temporary tags shared one repository the second
/// publish failed with `manifest unknown` (the flake of `task_isolation.rs`
/// `two_builds_never_see_each_others_images`). Each request has its own temporary repository:
/// the second publish succeeds with the same digest.
#[test]
fn a_publish_never_deletes_another_requests_temporary_image_of_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_registry(dir.path());
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(
        repo.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    fs::write(repo.join("hello.txt"), "hello\n").unwrap();
    commit_all(&repo, "one");
    let registry = format!("127.0.0.1:{}/team-a", reg.port);
    let request = |name: &str| {
        BuildRequest::new(
            "team-a",
            name,
            BuildSpec {
                owner: "team-a".into(),
                repo_url: format!("file://{}", repo.display()),
                git_ref: "main".into(),
                dockerfile_path: Some("Containerfile".into()),
                image_name: "same".into(),
                image_tags: vec!["v1".into()],
                registry_url: registry.clone(),
                ..Default::default()
            },
        )
    };
    let cfg = RenderConfig {
        tls_verify: false,
        work_root: Some(dir.path().join("buildah")),
        ..Default::default()
    };
    let (alpha, bravo) = (request("alpha"), request("bravo"));
    let mut digests = Vec::new();
    for req in [&alpha, &bravo] {
        let build = jobspec::render(req, 1, 1, PipelinePhase::Build, &cfg).unwrap();
        let (_, out) = run(&build, dir.path());
        digests.push(marker(&out, "::jobforge::digest=").unwrap().to_string());
    }
    assert_eq!(
        digests[0], digests[1],
        "the same commit builds the same digest"
    );
    for req in [&alpha, &bravo] {
        let publish = jobspec::render(req, 1, 1, PipelinePhase::Publish, &cfg).unwrap();
        let (code, out, err) = run_raw(&publish, dir.path());
        assert_eq!(
            code,
            Some(0),
            "{}'s publish after the other's: {out}\n{err}",
            req.metadata.name
        );
        assert_eq!(
            marker(&out, "::jobforge::digest="),
            Some(digests[0].as_str())
        );
    }
}

/// Pushes a tiny image (`FROM scratch` + a static busybox as `/bin/sh` + `/which` holding
/// `which`) made here with buildah in storage of its own to `reference`; returns its manifest
/// digest in the registry.
fn push_base(dir: &Path, reference: &str, which: &str) -> String {
    let root = dir.join(format!("base-storage-{which}"));
    let bh = |args: &[&str]| {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let file = dir.join(format!("which-{which}"));
    fs::write(&file, which).unwrap();
    let ctr = bh(&["from", "scratch"]);
    bh(&["copy", &ctr, "/bin/busybox", "/bin/sh"]);
    bh(&["copy", &ctr, file.to_str().unwrap(), "/which"]);
    bh(&["commit", "--quiet", &ctr, which]);
    bh(&[
        "push",
        "--tls-verify=false",
        which,
        &format!("docker://{reference}"),
    ]);
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let _ = fs::remove_dir_all(&root).or_else(|_| {
        Command::new("buildah")
            .args(["unshare", "rm", "-rf"])
            .arg(&root)
            .status()
            .map(|_| ())
    });
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A two-stage build with two different base images (the second named through a global `ARG`
/// the request's build args override) reports both, each with the digest the registry holds,
/// read from the build's storage after the build; a `RUN` step printing a base-image marker is
/// not taken (its line is indented), and the stage reference `--from=builder` is no image.
#[test]
fn every_stages_base_image_is_reported_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_registry(dir.path());
    let host = format!("127.0.0.1:{}", reg.port);
    let one = format!("{host}/base/one:1");
    let two = format!("{host}/base/two:1");
    let d1 = push_base(dir.path(), &one, "one");
    let d2 = push_base(dir.path(), &two, "two");
    assert_ne!(d1, d2);
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    let forged = format!("evil.example/forged@sha256:{}", "0".repeat(64));
    fs::write(
        repo.join("Containerfile"),
        format!(
            "ARG BASE_TWO=nonexistent.invalid/two:1\n\
             FROM {one} AS builder\n\
             RUN echo ::jobforge::base-image={forged} && echo built > /out.txt\n\
             FROM ${{BASE_TWO}}\n\
             COPY --from=builder /out.txt /out.txt\n"
        ),
    )
    .unwrap();
    commit_all(&repo, "two stages");
    let req = BuildRequest::new(
        "team-a",
        "stages",
        BuildSpec {
            owner: "team-a".into(),
            repo_url: format!("file://{}", repo.display()),
            git_ref: "main".into(),
            dockerfile_path: Some("Containerfile".into()),
            image_name: "stages".into(),
            image_tags: vec!["v1".into()],
            registry_url: format!("{host}/team-a"),
            build_args: BTreeMap::from([("BASE_TWO".into(), two.clone())]),
            ..Default::default()
        },
    );
    let cfg = RenderConfig {
        tls_verify: false,
        work_root: Some(dir.path().join("buildah")),
        ..Default::default()
    };
    let build = jobspec::render(&req, 1, 1, PipelinePhase::Build, &cfg).unwrap();
    let (_, out) = run(&build, dir.path());
    let bases: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("::jobforge::base-image="))
        .collect();
    assert_eq!(
        bases,
        vec![format!("{one}@{d1}"), format!("{two}@{d2}")],
        "{out}"
    );
    assert!(
        out.contains(&format!(" ::jobforge::base-image={forged}")),
        "the RUN step's line is indented: {out}"
    );
    let parsed = jobforge_controller::machine::parse_markers(out.as_bytes());
    assert_eq!(parsed.base_images.len(), 2, "{:?}", parsed.base_images);
}

/// The host's buildah on the store `dir` (`<cache root>/<ns>/<driver>`, the driver named by its
/// last component); stdout.
fn store_buildah(dir: &Path, args: &[&str]) -> String {
    let driver = dir.file_name().unwrap().to_str().unwrap();
    let out = Command::new("buildah")
        .args(["--storage-driver", driver, "--root"])
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "buildah {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one driver directory of namespace `ns` under the cache root.
fn ns_store(cache: &Path, ns: &str) -> std::path::PathBuf {
    let dirs: Vec<_> = fs::read_dir(cache.join(ns))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Issue 19: with the layer cache (`build.cache`, raw_exec), the test phase runs the image the
/// build left in the namespace's store: the manifest pinned by the build's digest gives the
/// config, whose digest is the image's ID in the store, and no layer blob is downloaded (the
/// registry's log). A namespace whose store does not hold the image (another client, pruned,
/// here: another team) pulls it as before, into storage of its own, and never reads or
/// changes the other team's store. Nothing is left in either store but the cached images; the
/// publish by digest publishes exactly the digest built and tested.
#[test]
fn the_test_phase_runs_the_built_image_from_the_namespace_cache_without_downloading_layers() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_registry(dir.path());
    let host = format!("127.0.0.1:{}", reg.port);
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).unwrap();
    fs::copy("/bin/busybox", repo.join("sh")).expect("static /bin/busybox (package busybox)");
    fs::write(
        repo.join("Containerfile"),
        "FROM scratch\nCOPY sh /bin/sh\nCOPY hello.txt /hello.txt\nRUN [\"/bin/sh\", \"-c\", \"echo built > /built.txt\"]\n",
    )
    .unwrap();
    fs::write(repo.join("hello.txt"), "hello\n").unwrap();
    commit_all(&repo, "one");
    let cache = dir.path().join("cache");
    let cfg = RenderConfig {
        tls_verify: false,
        work_root: Some(dir.path().join("buildah")),
        build_cache: Some(jobspec::BuildCache {
            root: cache.display().to_string(),
            max_size_mb: 0,
        }),
        ..Default::default()
    };
    let request = |ns: &str| {
        BuildRequest::new(
            ns,
            "app",
            BuildSpec {
                owner: ns.into(),
                repo_url: format!("file://{}", repo.display()),
                git_ref: "main".into(),
                dockerfile_path: Some("Containerfile".into()),
                image_name: "app".into(),
                image_tags: vec!["v1".into()],
                registry_url: format!("{host}/{ns}"),
                test: Some(TestSpec {
                    commands: vec![
                        "test -f /hello.txt && test \"$(cat /built.txt)\" = built".into(),
                        "test \"$GREETING\" = 'hi there'".into(),
                    ],
                    env: BTreeMap::from([("GREETING".into(), "hi there".into())]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    };
    let (team_a, team_b) = (request("team-a"), request("team-b"));
    let build = jobspec::render(&team_a, 1, 1, PipelinePhase::Build, &cfg).unwrap();
    let (_, out) = run(&build, dir.path());
    let digest = marker(&out, "::jobforge::digest=").unwrap().to_string();
    let temp_a = jobspec::temp_image(&team_a, 1, 1, &cfg);
    let manifest: serde_json::Value = serde_json::from_slice(
        &Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{temp_a}"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(layers.len() >= 3, "{manifest}");
    let store_a = ns_store(&cache, "team-a");
    let images_a = sorted_lines(&store_buildah(
        &store_a,
        &["images", "--all", "--quiet", "--no-trunc"],
    ));
    assert!(
        images_a.contains(&config),
        "the built image's ID is its config digest: {config} not in {images_a:?}"
    );

    // The cache path: only the manifest and the config are read.
    let test =
        jobspec::render_built(&team_a, 1, 1, PipelinePhase::Test, Some(&digest), &cfg).unwrap();
    let before = reg.mark();
    let (_, out) = run(&test, dir.path());
    let after = reg.mark();
    assert!(out.contains("from the layer cache (not pulled)"), "{out}");
    assert!(out.contains("jobforge: all tests passed"), "{out}");
    let gets = reg.blob_gets(before..after);
    assert_eq!(gets.len(), 1, "only the config blob is read: {gets:?}");
    assert!(gets[0].ends_with(&format!("/blobs/{config}")), "{gets:?}");
    assert!(
        store_buildah(&store_a, &["containers", "--all", "--quiet"])
            .trim()
            .is_empty(),
        "the test container is removed"
    );
    assert_eq!(
        sorted_lines(&store_buildah(
            &store_a,
            &["images", "--all", "--quiet", "--no-trunc"]
        )),
        images_a,
        "the cached images stay, nothing is added"
    );

    // Another namespace's test of the same digest: team-b's store does not hold it, so it pulls
    // (every layer), passes, and leaves team-a's store as it was.
    let temp_b = jobspec::temp_image(&team_b, 1, 1, &cfg);
    let copied = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--preserve-digests",
        ])
        .arg(format!("docker://{temp_a}"))
        .arg(format!("docker://{temp_b}"))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{copied:?}");
    let test =
        jobspec::render_built(&team_b, 1, 1, PipelinePhase::Test, Some(&digest), &cfg).unwrap();
    let before = reg.mark();
    let (_, out) = run(&test, dir.path());
    let after = reg.mark();
    assert!(
        out.contains("not in the namespace's layer cache on this client; pulling it"),
        "{out}"
    );
    assert!(out.contains("jobforge: all tests passed"), "{out}");
    let gets = reg.blob_gets(before..after);
    for layer in &layers {
        assert!(
            gets.iter().any(|g| g.ends_with(&format!("/blobs/{layer}"))),
            "the fallback pulls layer {layer}: {gets:?}"
        );
    }
    let store_b = ns_store(&cache, "team-b");
    assert_ne!(store_a, store_b);
    let in_b = if store_b.join("storage").exists() {
        store_buildah(&store_b, &["images", "--all", "--quiet"])
    } else {
        String::new()
    };
    assert!(in_b.trim().is_empty(), "team-b's store got images: {in_b}");
    assert_eq!(
        sorted_lines(&store_buildah(
            &store_a,
            &["images", "--all", "--quiet", "--no-trunc"]
        )),
        images_a,
        "team-b's test changed team-a's store"
    );
    let left: Vec<_> = fs::read_dir(dir.path().join("buildah"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "per-allocation storage left: {left:?}");

    // The publish by digest: the final tag is exactly the digest built and tested.
    let publish =
        jobspec::render_built(&team_a, 1, 1, PipelinePhase::Publish, Some(&digest), &cfg).unwrap();
    let (_, out) = run(&publish, dir.path());
    assert_eq!(
        marker(&out, "::jobforge::digest="),
        Some(digest.as_str()),
        "{out}"
    );
    let final_digest = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{host}/team-a/app:v1"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&final_digest.stdout).trim(), digest);
    // The cache holds files of subordinate IDs when buildah runs rootless: remove as the tasks do.
    for store in [&store_a, &store_b] {
        if store.join("storage").exists() {
            let _ = store_buildah(store, &["rmi", "--all", "--force"]);
        }
    }
}
