//! Runs the rendered tasks' fixed shell scripts for real with `/bin/sh`, with `buildah` and
//! `skopeo` replaced by recording stubs early in PATH, against a local `file://` git repository.
//! Proves: every script parses (`sh -n`); the build resolves branches, tags and SHAs and prints
//! `::jobforge::commit=`; a missing ref prints `GitRevisionNotFound` and exits 3; the test script
//! stops at the first failing command with its exit code; user input with shell metacharacters is
//! never executed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use jobforge_controller::jobspec::{self, RenderConfig, build, publish, test};
use jobforge_schema::{BuildRequest, BuildSpec, PipelinePhase, TestSpec};

const STUB: &str = r#"#!/bin/sh
tool=$(basename "$0")
{ printf '%s\n' "ARGV $tool"; for a in "$@"; do printf '  [%s]\n' "$a"; done; } >>"$STUB_LOG"
while [ $# -gt 0 ]; do
  case "$1" in --storage-driver|--root|--runroot) shift 2 ;; *) break ;; esac
done
cmd=$1
shift
case "$tool $cmd" in
  "buildah login"|"skopeo login") cat >/dev/null; exit 0 ;;
  "buildah bud") printf '  ENV CONTAINERS_REGISTRIES_CONF=%s\n' "${CONTAINERS_REGISTRIES_CONF:-}" >>"$STUB_LOG"; exit 0 ;;
  "buildah push")
    while [ $# -gt 0 ]; do
      if [ "$1" = --digestfile ]; then printf 'sha256:%s' 1111 >"$2"; fi
      shift
    done
    exit 0 ;;
  "buildah from") echo stubctr ;;
  "buildah run")
    while [ "$1" != -- ]; do
      case "$1" in
        --env) export "$2"; shift 2 ;;
        --volume)
          for f in "${2%%:*}"/*; do
            [ -f "$f" ] || continue
            v=$(cat "$f"; echo x)
            export "${f##*/}=${v%x}"
          done
          shift 2 ;;
        *) shift ;;
      esac
    done
    shift
    exec "$@" ;;
  "buildah inspect") printf '%s\n' "$STUB_ENTRYPOINT" ;;
  "skopeo inspect") echo sha256:2222 ;;
  *) exit 0 ;;
esac
"#;

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        for tool in ["buildah", "skopeo"] {
            let p = bin.join(tool);
            fs::write(&p, STUB).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        for d in ["task", "secrets"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Sandbox { dir }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn log(&self) -> String {
        fs::read_to_string(self.path("stub.log")).unwrap_or_default()
    }
    /// Runs a rendered job's task the way raw_exec would: `command args...` with the task env.
    fn run(
        &self,
        job: &jobforge_controller::nomad::job_spec::Job,
        extra_env: &[(&str, &str)],
    ) -> Out {
        let task = &job.task_groups[0].tasks[0];
        assert_eq!(task.driver, "raw_exec");
        let command = task.config["command"].as_str().unwrap();
        let args: Vec<String> = task.config["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(command)
            .args(&args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env("NOMAD_TASK_DIR", self.path("task"))
            .env("NOMAD_SECRETS_DIR", self.path("secrets"))
            .env("STUB_LOG", self.path("stub.log"))
            .envs(&task.env)
            .envs(extra_env.iter().copied())
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
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
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits on `main`, tag `v1` on the first, branch `feature` on the second.
fn make_repo(root: &Path) -> (PathBuf, String, String) {
    let repo = root.join("repo");
    fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    fs::write(repo.join("Dockerfile"), "FROM scratch\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["tag", "v1"]);
    fs::write(repo.join("x"), "2\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "two"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["branch", "feature"]);
    (repo, first, second)
}

fn request(repo: &Path, git_ref: &str) -> BuildRequest {
    BuildRequest::new(
        "team-a",
        "app",
        BuildSpec {
            owner: "team-a".into(),
            repo_url: format!("file://{}", repo.display()),
            git_ref: git_ref.into(),
            image_name: "app".into(),
            registry_url: "127.0.0.1:5000".into(),
            ..Default::default()
        },
    )
}

fn cfg() -> RenderConfig {
    RenderConfig {
        tls_verify: false,
        ..Default::default()
    }
}

#[test]
fn every_fixed_script_passes_sh_syntax_check() {
    for (name, script) in [
        ("build", build::BUILD_SCRIPT),
        ("test", test::TEST_SCRIPT),
        ("image-test", test::IMAGE_TEST_SCRIPT),
        ("publish", publish::PUBLISH_SCRIPT),
    ] {
        let out = Command::new("/bin/sh")
            .args(["-n", "-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn build_resolves_branch_tag_and_sha_and_prints_the_full_commit() {
    let sb = Sandbox::new();
    let (repo, first, second) = make_repo(sb.dir.path());
    for (git_ref, want) in [
        ("main", &second),
        ("feature", &second),
        ("v1", &first),
        (first.as_str(), &first),
        (&first[..10], &first),
    ] {
        let job =
            jobspec::render(&request(&repo, git_ref), 9, 1, PipelinePhase::Build, &cfg()).unwrap();
        let out = sb.run(&job, &[]);
        assert_eq!(out.code, Some(0), "{git_ref}: {out:?}");
        assert!(
            out.stdout.contains(&format!("::jobforge::commit={want}\n")),
            "{git_ref}: {out:?}"
        );
        assert!(
            out.stdout.ends_with("::jobforge::digest=sha256:1111\n"),
            "{out:?}"
        );
    }
    let log = sb.log();
    assert!(
        log.contains("  [bud]\n  [--layers=false]\n  [--force-rm]\n  [--isolation]\n  [chroot]\n  [--timestamp]\n"),
        "{log}"
    );
    assert!(log.contains("  [--tls-verify=false]\n"), "{log}");
    assert!(
        log.contains("  [docker://127.0.0.1:5000/jobforge-tmp/app/team-a/app:app-9-a1]\n"),
        "{log}"
    );
    assert!(!log.contains("--no-cache"), "{log}");
}

#[test]
fn build_of_a_missing_ref_reports_git_revision_not_found_and_exits_3() {
    let sb = Sandbox::new();
    let (repo, _, _) = make_repo(sb.dir.path());
    let job = jobspec::render(
        &request(&repo, "no-such-branch"),
        9,
        1,
        PipelinePhase::Build,
        &cfg(),
    )
    .unwrap();
    let out = sb.run(&job, &[]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stdout
            .contains("::jobforge::reason=GitRevisionNotFound\n"),
        "{out:?}"
    );
    assert!(out.stdout.contains("no-such-branch"), "{out:?}");
    assert!(!out.stdout.contains("::jobforge::commit="), "{out:?}");
    assert!(!sb.log().contains("[bud]"), "no build after a missing ref");
}

#[test]
fn clear_cache_adds_no_cache_and_dockerfile_and_context_are_passed_as_arguments() {
    let sb = Sandbox::new();
    let (repo, _, _) = make_repo(sb.dir.path());
    let mut req = request(&repo, "main");
    req.spec.clear_cache = true;
    req.spec.dockerfile_path = Some("sub dir/$(touch PWNED)".into());
    req.spec.dockerfile_context = Some("ctx `touch PWNED`".into());
    let job = jobspec::render(&req, 9, 1, PipelinePhase::Build, &cfg()).unwrap();
    let out = sb.run(&job, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let log = sb.log();
    assert!(log.contains("  [--no-cache]\n"), "{log}");
    assert!(log.contains("/src/sub dir/$(touch PWNED)]\n"), "{log}");
    assert!(log.contains("/src/ctx `touch PWNED`]\n"), "{log}");
    assert!(!sb.path("PWNED").exists() && !sb.path("task/src/PWNED").exists());
}

#[test]
fn hostile_git_ref_is_never_executed() {
    let sb = Sandbox::new();
    let (repo, _, _) = make_repo(sb.dir.path());
    let sentinel = sb.path("PWNED");
    let hostile = format!(
        "main$(touch {0})`touch {0}`;touch {0}\n::jobforge::commit=evil",
        sentinel.display()
    );
    let job = jobspec::render(
        &request(&repo, &hostile),
        9,
        1,
        PipelinePhase::Build,
        &cfg(),
    )
    .unwrap();
    let out = sb.run(&job, &[]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(!sentinel.exists(), "user input was executed");
    assert!(
        !out.stdout
            .lines()
            .any(|l| l.starts_with("::jobforge::commit=")),
        "a newline in the ref forged a marker line: {out:?}"
    );
}

fn test_request(commands: &[&str], entry_point: bool) -> BuildRequest {
    let mut req = request(Path::new("/nonexistent"), "main");
    req.spec.test = Some(TestSpec {
        commands: commands.iter().map(|s| s.to_string()).collect(),
        entry_point,
        env: BTreeMap::from([(
            "GREETING".into(),
            "hello $(touch PWNED) \"q\" 'q'\nline2".into(),
        )]),
        ..Default::default()
    });
    req
}

#[test]
fn test_commands_run_in_order_with_env_and_stop_at_the_first_failure() {
    let sb = Sandbox::new();
    let req = test_request(
        &[
            "printf '%s|' \"$GREETING\" > out1",
            "echo second >> order; exit 7",
            "echo third >> order",
        ],
        false,
    );
    let job = jobspec::render(&req, 9, 1, PipelinePhase::Test, &cfg()).unwrap();
    let out = sb.run(&job, &[]);
    assert_eq!(out.code, Some(7), "{out:?}");
    assert!(
        out.stdout.contains("::jobforge::failed-command=2\n"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("test command 2 failed with exit code 7"),
        "{out:?}"
    );
    assert_eq!(
        fs::read_to_string(sb.path("out1")).unwrap(),
        "hello $(touch PWNED) \"q\" 'q'\nline2|"
    );
    assert_eq!(fs::read_to_string(sb.path("order")).unwrap(), "second\n");
    assert!(!sb.path("PWNED").exists());
    let log = sb.log();
    assert!(log.contains("  [from]\n"), "{log}");
    assert!(
        log.contains("  [rm]\n  [--]\n  [stubctr]\n"),
        "container removed on exit: {log}"
    );
}

#[test]
fn test_entry_point_runs_after_commands_with_the_image_entrypoint_and_cmd() {
    let sb = Sandbox::new();
    let req = test_request(&["true"], true);
    let job = jobspec::render(&req, 9, 1, PipelinePhase::Test, &cfg()).unwrap();
    let ok = sb.run(
        &job,
        &[("STUB_ENTRYPOINT", "/bin/sh\n-c\necho entry ran > ep")],
    );
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert_eq!(fs::read_to_string(sb.path("ep")).unwrap(), "entry ran\n");
    let bad = sb.run(&job, &[("STUB_ENTRYPOINT", "/bin/sh\n-c\nexit 4")]);
    assert_eq!(bad.code, Some(4), "{bad:?}");
    assert!(
        bad.stdout
            .contains("::jobforge::failed-command=entry_point\n"),
        "{bad:?}"
    );
}

#[test]
fn publish_copies_to_every_tag_prints_the_digest_and_deletes_the_temp_tag() {
    let sb = Sandbox::new();
    let mut req = request(Path::new("/nonexistent"), "main");
    req.spec.image_tags = vec!["v1".into(), "latest".into()];
    let job = jobspec::render(&req, 9, 2, PipelinePhase::Publish, &cfg()).unwrap();
    let out = sb.run(&job, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.ends_with("::jobforge::digest=sha256:2222\n"),
        "{out:?}"
    );
    let log = sb.log();
    for tag in ["v1", "latest"] {
        assert!(
            log.contains(&format!("  [docker://127.0.0.1:5000/app:{tag}]\n")),
            "{log}"
        );
    }
    assert!(log.contains("  [--preserve-digests]\n"), "{log}");
    assert!(
        log.contains("ARGV skopeo\n  [delete]\n  [--authfile]\n"),
        "{log}"
    );
    assert!(
        log.contains("  [docker://127.0.0.1:5000/jobforge-tmp/app/team-a/app:app-9-a2]\n"),
        "{log}"
    );
    let _ = out.stderr;
}

/// The operator's registry mirrors: the build writes the rendered registries.conf into the task
/// directory and exports it as `CONTAINERS_REGISTRIES_CONF` for `buildah bud`; with verified
/// TLS `bud` gets no `--tls-verify` (a mirror's `insecure` would be overridden by it), with
/// unverified TLS it keeps `--tls-verify=false`, and without mirrors nothing changes.
#[test]
fn registry_mirrors_reach_bud_as_a_registries_conf_and_tls_verify_is_left_to_it() {
    let mirrors = vec![jobspec::RegistryMirror {
        prefix: "docker.io".into(),
        location: "127.0.0.1:5001".into(),
        insecure: true,
    }];
    let bud_block = |log: &str| -> String {
        log.split("ARGV ")
            .find(|b| b.contains("  [bud]"))
            .unwrap_or_else(|| panic!("no bud call in {log}"))
            .to_string()
    };
    for (tls_verify, with_mirrors, want_tls) in [
        (true, true, None),
        (false, true, Some("[--tls-verify=false]")),
        (true, false, Some("[--tls-verify=true]")),
    ] {
        let sb = Sandbox::new();
        let (repo, _, _) = make_repo(sb.dir.path());
        let cfg = RenderConfig {
            tls_verify,
            registry_mirrors: if with_mirrors {
                mirrors.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let job =
            jobspec::render(&request(&repo, "main"), 1, 1, PipelinePhase::Build, &cfg).unwrap();
        let out = sb.run(&job, &[]);
        assert_eq!(out.code, Some(0), "{out:?}");
        let bud = bud_block(&sb.log());
        let conf_path = sb.path("task/registries.conf");
        if with_mirrors {
            let conf = fs::read_to_string(&conf_path).unwrap();
            assert_eq!(
                Some(conf),
                jobspec::registries::registries_conf(&mirrors).unwrap()
            );
            assert!(
                bud.contains(&format!(
                    "ENV CONTAINERS_REGISTRIES_CONF={}",
                    conf_path.display()
                )),
                "{bud}"
            );
        } else {
            assert!(!conf_path.exists());
            assert!(bud.contains("ENV CONTAINERS_REGISTRIES_CONF=\n"), "{bud}");
        }
        match want_tls {
            Some(flag) => assert!(bud.contains(flag), "{tls_verify} {with_mirrors}: {bud}"),
            None => assert!(!bud.contains("--tls-verify"), "{bud}"),
        }
        // The push keeps its own --tls-verify whatever the mirrors.
        let push = sb
            .log()
            .split("ARGV ")
            .find(|b| b.contains("  [push]"))
            .unwrap()
            .to_string();
        assert!(
            push.contains(&format!("[--tls-verify={tls_verify}]")),
            "{push}"
        );
    }
}
