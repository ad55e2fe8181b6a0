//! `jobforge` against the dev stack's Consul: every KV command, its exit codes and its JSON output.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use jobforge_schema::{Failure, Phase, PipelinePhase, Reason};
use predicates::prelude::*;

#[test]
fn submit_creates_once_then_get_and_list_show_it_as_json() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "req.yaml", &request_yaml("app-1", "app: web"));
    let out = c
        .cmd()
        .args([
            "submit",
            f.to_str().unwrap(),
            "--image-tags",
            "extra,v1",
            "-o",
            "json",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_out(&out.stdout);
    let generation = v["generation"].as_u64().unwrap();
    assert_eq!(generation, c.modify_index("default", "app-1"));
    assert_eq!(v["imageTags"], serde_json::json!(["v1", "extra"]));

    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("already exists").and(predicate::str::contains("--replace")),
        );
    let out = c
        .cmd()
        .args(["submit", f.to_str().unwrap(), "--replace", "-o", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(json_out(&out.stdout)["generation"].as_u64().unwrap() > generation);

    let out = c
        .cmd()
        .args(["get", "app-1", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json_out(&out.stdout);
    assert_eq!(v["phase"], "Pending");
    assert_eq!(v["request"]["spec"]["owner"], "team-a");
    c.cmd()
        .args(["get-status", "app-1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Phase:       Pending"));

    let out = c.cmd().args(["list", "-o", "json"]).output().unwrap();
    let v = json_out(&out.stdout);
    assert_eq!(v.as_array().unwrap().len(), 1);
    c.cmd()
        .args(["list", "-o", "wide"])
        .assert()
        .success()
        .stdout(predicate::str::contains("app=web").and(predicate::str::contains("OWNER")));
    let out = c.cmd().args(["list", "-o", "yaml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("name: app-1"));
}

#[test]
fn seed_job_config_submits_with_a_generated_name() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "job.json",
        r#"{"job_config": {"owner": "o", "repo_url": "https://h/r.git", "git_ref": "main",
            "image_name": "myapp", "registry_url": "r:5000", "test_commands": ["true"]}}"#,
    );
    let out = c
        .cmd()
        .args(["submit-job", f.to_str().unwrap(), "-o", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = json_out(&out.stdout)["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("myapp-"), "{name}");
    assert!(c.get(&c.keys.request_key("default", &name)).is_some());

    let g = write(
        dir.path(),
        "global.yaml",
        "owner: o\nregistry_url: r:5000\ngit_ref: main\n",
    );
    let b = write(
        dir.path(),
        "build.yaml",
        "repo_url: https://h/r.git\nimage_name: other\n",
    );
    c.cmd()
        .args([
            "submit",
            "--global",
            g.to_str().unwrap(),
            "--config",
            b.to_str().unwrap(),
            "--name",
            "pair",
            "-n",
            "team-b",
        ])
        .current_dir(dir.path())
        .assert()
        .success();
    assert!(c.get(&c.keys.request_key("team-b", "pair")).is_some());
}

#[test]
fn unknown_request_is_a_clear_error_with_exit_1() {
    let c = Consul::start();
    for args in [
        vec!["get", "nope"],
        vec!["cancel", "nope"],
        vec!["delete", "nope"],
        vec!["logs", "nope"],
    ] {
        c.cmd()
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("request default/nope not found"));
    }
}

#[test]
fn unreachable_consul_exits_2_naming_the_address_without_a_backtrace() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let mut cmd = assert_cmd::Command::cargo_bin("jobforge").unwrap();
    let out = cmd
        .env_clear()
        .args(["--consul-addr", "127.0.0.1:9", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert!(err.contains("CONSUL_HTTP_ADDR"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn invalid_file_reports_every_problem_with_its_path() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: jobforge/v1alpha1\nkind: BuildRequest\nmetadata: {name: Bad_Name}\nspec:\n  owner: o\n  repo_url: https://h/r.git\n  git_ref: main\n  image_name: app\n  registry_url: r:5000\n  retries: three\n  colour: red\n",
    );
    let out = c
        .cmd()
        .args(["submit", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("spec.colour"), "{err}");
    assert!(err.contains("spec.retries"), "{err}");
}

#[test]
fn cancel_sets_spec_cancel_and_delete_removes_the_spec() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-2", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    let before = c.modify_index("default", "app-2");
    c.cmd()
        .args(["kill-job", "app-2", "-o", "json"])
        .assert()
        .success();
    let e = c.get(&c.keys.request_key("default", "app-2")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
    assert_eq!(v["spec"]["cancel"], true);
    assert!(e.modify_index > before);
    c.cmd().args(["cancel", "app-2"]).assert().success();

    c.set_phase("default", "app-2", Phase::Cancelled);
    c.cmd().args(["delete", "app-2"]).assert().success();
    assert!(c.get(&c.keys.request_key("default", "app-2")).is_none());
    // The status stays for the controller to clean up.
    assert!(c.get(&c.keys.status_key("default", "app-2")).is_some());
    c.cmd().args(["cleanup", "app-2"]).assert().code(1);
}

#[test]
fn logs_print_each_phase_and_json_is_parseable() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-3", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    c.put(
        &c.keys.logs_key("default", "app-3", PipelinePhase::Build),
        b"STEP 1/2: FROM alpine\n",
    );
    c.put(
        &c.keys.logs_key("default", "app-3", PipelinePhase::Test),
        b"tests ok\n",
    );
    c.cmd().args(["logs", "app-3"]).assert().success().stdout(
        predicate::str::contains("==> build <==").and(predicate::str::contains("tests ok")),
    );
    c.cmd()
        .args(["get-logs", "app-3", "test"])
        .assert()
        .success()
        .stdout(predicate::eq("tests ok\n"));
    let out = c
        .cmd()
        .args(["logs", "app-3", "--phase", "build", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(json_out(&out.stdout)["build"], "STEP 1/2: FROM alpine\n");
}

#[test]
fn list_filters_by_phase_owner_and_label_and_history_is_newest_first() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    for (name, labels) in [("a", "app: x"), ("b", "app: y"), ("c", "app: x")] {
        let f = write(
            dir.path(),
            &format!("{name}.yaml"),
            &request_yaml(name, labels),
        );
        c.cmd()
            .args(["submit", f.to_str().unwrap()])
            .current_dir(dir.path())
            .assert()
            .success();
    }
    let t0 = chrono::Utc::now();
    c.set_status("default", "a", |s| {
        s.phase = Phase::Succeeded;
        s.completion_time = Some(t0);
    });
    c.set_status("default", "c", |s| {
        s.phase = Phase::Failed;
        s.completion_time = Some(t0 + chrono::Duration::seconds(5));
        s.failure = Some(Failure {
            phase: Some(PipelinePhase::Build),
            reason: Reason::BuildFailed,
            message: "exit 1".into(),
        });
    });
    let names = |args: &[&str]| -> Vec<String> {
        let out = c.cmd().args(args).args(["-o", "json"]).output().unwrap();
        assert!(out.status.success());
        let v = json_out(&out.stdout);
        let items = if v.is_array() { v } else { v["items"].clone() };
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&["list"]), ["a", "b", "c"]);
    assert_eq!(names(&["list", "--phase", "Pending"]), ["b"]);
    assert_eq!(names(&["list", "-l", "app=x"]), ["a", "c"]);
    assert_eq!(
        names(&["list", "--owner", "someone-else"]),
        Vec::<String>::new()
    );
    assert_eq!(names(&["history"]), ["c", "a"]);
    assert_eq!(names(&["get-history", "1", "1"]), ["a"]);
    c.cmd().args(["list", "--phase", "Bogus"]).assert().code(1);
}

#[test]
fn submit_bumps_the_version_file_and_adds_the_branch_tag() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "deploy/version.yaml",
        "version:\n  major: 0\n  minor: 1\n  patch: 4\n",
    );
    let f = write(dir.path(), "r.yaml", &request_yaml("app-v", ""));
    let out = c
        .cmd()
        .args(["submit", f.to_str().unwrap(), "--bump", "-o", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tag = json_out(&out.stdout)["versionTag"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tag.ends_with("v0.1.5"), "{tag}");
    let text = std::fs::read_to_string(dir.path().join("deploy/version.yaml")).unwrap();
    assert!(text.contains("patch: 5"), "{text}");
    let e = c.get(&c.keys.request_key("default", "app-v")).unwrap();
    assert!(String::from_utf8_lossy(&e.value).contains(&tag));
}

#[test]
fn submit_wait_exits_1_on_failure_with_message_and_logs_command() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-w", ""));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobforge"))
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .args(["submit", f.to_str().unwrap(), "--wait"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(&mut child));
    let lines = line_reader(guard.0.as_mut().unwrap().stdout.take().unwrap());
    wait_line(&lines, "created");
    wait_line(&lines, "Pending");
    c.set_status("default", "app-w", |s| {
        s.phase = Phase::Failed;
        s.failure = Some(Failure {
            phase: Some(PipelinePhase::Test),
            reason: Reason::TestFailed,
            message: "selftest exited 3".into(),
        });
    });
    wait_line(&lines, "Failed");
    let child = guard.0.take().unwrap();
    let out = child.finish().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("selftest exited 3"), "{err}");
    assert!(
        err.contains("jobforge logs app-w -n default --phase test"),
        "{err}"
    );
}

#[test]
fn watch_in_a_pipe_prints_one_line_per_transition() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-x", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobforge"))
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .args(["watch", "app-x"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(&mut child));
    let lines = line_reader(guard.0.as_mut().unwrap().stdout.take().unwrap());
    let mut seen = vec![wait_line(&lines, "Pending")];
    for p in [Phase::Building, Phase::Testing, Phase::Publishing] {
        c.set_phase("default", "app-x", p);
        seen.push(wait_line(&lines, p.as_str()));
    }
    // The same phase written again (a status heartbeat) is not a transition.
    c.set_phase("default", "app-x", Phase::Publishing);
    c.set_phase("default", "app-x", Phase::Succeeded);
    seen.push(wait_line(&lines, "Succeeded"));
    let child = guard.0.take().unwrap();
    let out = child.finish().unwrap();
    assert!(out.status.success());
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().all(|l| !l.contains("Publishing")),
        "duplicate transition: {rest:?}"
    );
    assert!(seen[1].contains("build 1/3"), "{seen:?}");
    assert!(seen[2].contains("test 2/3"), "{seen:?}");
    assert_eq!(seen.len(), 5);
}

#[test]
fn render_prints_the_nomad_jobs_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-r", ""));
    let out = assert_cmd::Command::cargo_bin("jobforge")
        .unwrap()
        .args(["render", f.to_str().unwrap(), "--generation", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_out(&out.stdout);
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["ID"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "jobforge-default-app-r-7-build",
            "jobforge-default-app-r-7-publish"
        ]
    );
}

#[test]
fn version_commands_follow_the_seed_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("jobforge")
            .unwrap()
            .args(args)
            .current_dir(dir.path())
            .assert()
            .success()
    };
    run(&["version-major", "1"]).stdout(predicate::str::contains("Version: 1.0.0"));
    run(&["version-minor", "2"]).stdout(predicate::str::contains("Version: 1.2.0"));
    let out = run(&["version-info", "-o", "json"]);
    let v = json_out(&out.get_output().stdout);
    assert_eq!(v["version"], "1.2.0");
    assert_eq!(v["tag"], "v1.2.0");
    let text = std::fs::read_to_string(dir.path().join("deploy/version.yaml")).unwrap();
    assert!(text.contains("major: 1") && text.contains("minor: 2") && text.contains("patch: 0"));
}

#[test]
fn every_subcommand_has_help_with_examples_and_completions_generate() {
    for sub in [
        "submit",
        "get",
        "list",
        "watch",
        "logs",
        "cancel",
        "delete",
        "history",
        "apply",
        "render",
        "version-info",
        "version-major",
        "version-minor",
        "mcp",
        "completions",
    ] {
        assert_cmd::Command::cargo_bin("jobforge")
            .unwrap()
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
    assert_cmd::Command::cargo_bin("jobforge")
        .unwrap()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("jobforge"));
}

// --- helpers for commands that run while the test drives KV ---

struct ChildGuard<'a>(Option<&'a mut std::process::Child>);

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

trait Finish {
    fn finish(self) -> std::io::Result<std::process::Output>;
}

impl Finish for &mut std::process::Child {
    fn finish(self) -> std::io::Result<std::process::Output> {
        let status = self.wait()?;
        let mut stderr = Vec::new();
        if let Some(mut e) = self.stderr.take() {
            use std::io::Read;
            e.read_to_end(&mut stderr)?;
        }
        Ok(std::process::Output {
            status,
            stdout: Vec::new(),
            stderr,
        })
    }
}

fn line_reader(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + LINE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => continue,
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

#[test]
fn watch_on_a_terminal_shows_a_spinner_with_phase_and_step() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-tty", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    c.set_phase("default", "app-tty", Phase::Building);
    // `script` gives the command a pseudo-terminal; the command line is test-controlled.
    let bin = assert_cmd::cargo::cargo_bin("jobforge");
    let mut child = std::process::Command::new("script")
        .args([
            "-qfec",
            &format!("{} watch app-tty", bin.display()),
            "/dev/null",
        ])
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("`script` (util-linux) runs the command on a pseudo-terminal");
    let mut guard = ChildGuard(Some(&mut child));
    let mut out = guard.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + LINE_TIMEOUT;
    // The spinner redraws its line (carriage return / ANSI erase) showing phase and step.
    while !(seen.contains('\u{1b}') && seen.contains("build 1/3")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no spinner in {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    c.set_phase("default", "app-tty", Phase::Succeeded);
    let child = guard.0.take().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn watch_without_a_name_follows_every_request_of_the_namespace() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "a.yaml", &request_yaml("all-a", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobforge"))
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .args(["watch", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(&mut child));
    let lines = line_reader(guard.0.as_mut().unwrap().stdout.take().unwrap());
    let first: serde_json::Value = serde_json::from_str(&wait_line(&lines, "all-a")).unwrap();
    assert_eq!(first["phase"], "Pending");
    // A new request appears, and a status transition of the first one is reported.
    let f = write(dir.path(), "b.yaml", &request_yaml("all-b", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    wait_line(&lines, "all-b");
    c.set_phase("default", "all-a", Phase::Testing);
    let l: serde_json::Value = serde_json::from_str(&wait_line(&lines, "Testing")).unwrap();
    assert_eq!(l["name"], "all-a");
    assert_eq!(l["step"], "test 2/3");
}

#[test]
fn render_by_name_uses_the_stored_generation() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-rn", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    let g = c.modify_index("default", "app-rn");
    let out = c
        .cmd()
        .args(["render", "app-rn", "--profile", "docker"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_out(&out.stdout);
    assert_eq!(v[0]["ID"], format!("jobforge-default-app-rn-{g}-build"));
    c.cmd().args(["render", "missing"]).assert().code(1);
    c.cmd()
        .args(["render", "app-rn", "--profile", "podman"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("raw_exec or docker"));
}

#[test]
fn a_seed_deploy_dir_locates_the_version_file() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ops/version.yaml",
        "version: {major: 2, minor: 0, patch: 0}\n",
    );
    let f = write(
        dir.path(),
        "job.json",
        r#"{"owner": "o", "repo_url": "https://h/r.git", "git_ref": "main", "image_name": "svc",
            "registry_url": "r:5000", "deploy_dir": "ops"}"#,
    );
    let out = c
        .cmd()
        .args([
            "submit",
            f.to_str().unwrap(),
            "--name",
            "svc-1",
            "-o",
            "json",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tag = json_out(&out.stdout)["versionTag"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tag.ends_with("v2.0.1"), "{tag}");
    let text = std::fs::read_to_string(dir.path().join("ops/version.yaml")).unwrap();
    assert!(text.contains("patch: 1"), "{text}");
}

#[test]
fn logs_follow_prints_only_new_output_and_stops_when_the_request_ends() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-f", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    c.set_phase("default", "app-f", Phase::Building);
    let key = c.keys.logs_key("default", "app-f", PipelinePhase::Build);
    c.put(&key, b"line one\n");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobforge"))
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .args(["logs", "app-f", "--phase", "build", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(&mut child));
    let lines = line_reader(guard.0.as_mut().unwrap().stdout.take().unwrap());
    wait_line(&lines, "line one");
    // The controller rewrites the tail with more output; only the new line is printed.
    c.put(&key, b"line one\nline two\n");
    wait_line(&lines, "line two");
    c.set_phase("default", "app-f", Phase::Succeeded);
    let child = guard.0.take().unwrap();
    assert!(child.wait().unwrap().success());
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().all(|l| !l.contains("line one")),
        "repeated output: {rest:?}"
    );
}

#[test]
fn submit_wait_exits_0_when_the_request_succeeds() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-ok", ""));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobforge"))
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .args(["submit", f.to_str().unwrap(), "--wait"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(&mut child));
    let lines = line_reader(guard.0.as_mut().unwrap().stdout.take().unwrap());
    wait_line(&lines, "Pending");
    c.set_status("default", "app-ok", |s| {
        s.phase = Phase::Succeeded;
        s.image = Some(jobforge_schema::ImageStatus {
            reference: "registry.local:5000/app:v1".into(),
            digest: None,
            tags: vec!["v1".into()],
            ..Default::default()
        });
    });
    wait_line(&lines, "published registry.local:5000/app:v1");
    let child = guard.0.take().unwrap();
    assert!(child.wait().unwrap().success());
}

/// Issue 14: every subcommand taking a name or a namespace refuses one that is not a DNS label
/// with a message naming it, before any key is built: `delete ../../../jobforge/leader` does not
/// delete the leader key, and `-n` given twice is refused outside `jobforge mcp`.
#[test]
fn names_and_namespaces_that_are_not_dns_labels_are_refused_by_every_command() {
    let c = Consul::start();
    c.put("jobforge/leader", b"held");
    let bad_names = ["../../../jobforge/leader", "a/b", "UPPER"];
    for name in bad_names {
        for cmd in [
            vec!["get", name],
            vec!["cancel", name],
            vec!["delete", name],
            vec!["delete", name, "--purge"],
            vec!["logs", name],
            vec!["watch", name],
            vec!["render", name],
        ] {
            let out = c.cmd().args(&cmd).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
            assert!(
                err.contains("is not a DNS label") && err.contains("name"),
                "{cmd:?}: {err}"
            );
        }
    }
    for ns in ["../jobforge", "team-a/x", ""] {
        for cmd in [
            vec!["list"],
            vec!["get", "app"],
            vec!["delete", "app"],
            vec!["history"],
        ] {
            let out = c.cmd().args(&cmd).args(["-n", ns]).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{cmd:?} -n {ns:?}: {err}");
            assert!(err.contains("--namespace"), "{cmd:?} -n {ns:?}: {err}");
        }
    }
    let out = c
        .cmd()
        .args(["list", "-n", "a", "-n", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only `jobforge mcp`"));
    assert_eq!(c.get("jobforge/leader").unwrap().value, b"held");
}
