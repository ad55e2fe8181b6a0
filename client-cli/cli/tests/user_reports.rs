//! What users hit (issue 18): each test reproduces one report against the dev stack's Consul (or
//! offline) and checks the fixed behaviour.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::*;
use jobforge_schema::{Failure, ImageStatus, Phase, Reason};
use predicates::prelude::*;

/// The seed's build.yaml/global.yaml pair.
fn seed_pair(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let g = write(
        dir,
        "deploy/global.yaml",
        "owner: o\nregistry_url: r:5000\ngit_ref: main\n",
    );
    let b = write(
        dir,
        "build.yaml",
        "repo_url: https://h/r.git\nimage_name: seedapp\n",
    );
    (g, b)
}

#[test]
fn the_seed_readme_command_line_with_single_dash_long_flags_is_accepted() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    seed_pair(dir.path());
    // Exactly as the seed README writes it.
    let out = c
        .cmd()
        .args([
            "submit-job",
            "-global",
            "deploy/global.yaml",
            "-config",
            "build.yaml",
            "--image-tags",
            "v1.0.0,latest",
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
    assert_eq!(v["imageTags"], serde_json::json!(["v1.0.0", "latest"]));
    // `-config=FILE` (Go flag syntax) and a real short flag (`-n`) keep working side by side.
    let out = c
        .cmd()
        .args([
            "-n",
            "team-x",
            "submit-job",
            "-global=deploy/global.yaml",
            "-config=build.yaml",
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
    assert_eq!(json_out(&out.stdout)["namespace"], "team-x");
    // Outside the seed command nothing is rewritten: `-config` stays unknown to `list`.
    c.cmd()
        .args(["list", "-config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unexpected argument"));
}

#[test]
fn cancelling_a_finished_request_changes_nothing() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("done-1", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    c.set_status("default", "done-1", |s| {
        s.phase = Phase::Succeeded;
        s.completion_time = Some(chrono::Utc::now());
        s.image = Some(ImageStatus {
            reference: "registry.local:5000/app:v1".into(),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            tags: vec!["v1".into()],
            ..Default::default()
        });
    });
    let before = c.get(&c.keys.request_key("default", "done-1")).unwrap();
    for cmd in ["cancel", "kill-job"] {
        c.cmd()
            .args([cmd, "done-1"])
            .assert()
            .success()
            .stdout(predicate::str::contains(
                "already Succeeded; nothing to cancel",
            ));
    }
    let out = c
        .cmd()
        .args(["cancel", "done-1", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        json_out(&out.stdout)["result"],
        "already Succeeded; nothing to cancel"
    );
    let after = c.get(&c.keys.request_key("default", "done-1")).unwrap();
    assert_eq!(
        after, before,
        "the spec of a finished request must not change"
    );
    c.cmd()
        .args(["cancel", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to cancel"));
}

/// Runs `jobforge ARGS` with its stdout a pipe whose reader is already gone (like `| head` that
/// exited), returning the exit status and stderr.
fn closed_stdout(mut cmd: std::process::Command) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cmd
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_pipe_ends_quietly_with_status_0() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("pipe-1", ""));
    c.cmd()
        .args(["submit", f.to_str().unwrap()])
        .current_dir(dir.path())
        .assert()
        .success();
    c.put(
        &c.keys
            .logs_key("default", "pipe-1", jobforge_schema::PipelinePhase::Build),
        b"line 1\nline 2\nline 3\n",
    );
    for args in [
        vec!["completions", "fish"],
        vec!["logs", "pipe-1"],
        vec!["list"],
        vec!["schema"],
    ] {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobforge"));
        cmd.env_clear().env("CONSUL_HTTP_ADDR", &c.addr).args(&args);
        let (status, stderr) = closed_stdout(cmd);
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[test]
fn render_defaults_to_the_controllers_profile_and_its_help_points_up() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "r.yaml", &request_yaml("app-r", ""));
    let out = assert_cmd::Command::cargo_bin("jobforge")
        .unwrap()
        .args(["render", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_out(&out.stdout);
    let driver = v[0]["TaskGroups"][0]["Tasks"][0]["Driver"]
        .as_str()
        .unwrap();
    assert_eq!(
        driver, "docker",
        "the controller's default profile is docker"
    );
    assert_cmd::Command::cargo_bin("jobforge")
        .unwrap()
        .args(["render", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("flags below").not())
        .stdout(predicate::str::contains("profile docker"));
}

#[test]
fn quickstart_with_prebuilt_binaries_does_not_need_cargo() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bins = tempfile::tempdir().unwrap();
    for b in ["jobforge", "jobforge-controller", "jobforge-devstack"] {
        let p = write(bins.path(), b, "#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A PATH with the usual system tools but no cargo.
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    assert!(
        !path
            .split(':')
            .any(|d| std::path::Path::new(d).join("cargo").exists()),
        "this test needs cargo outside the system directories"
    );
    let run = |bin_dir: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(root.join("hack/quickstart.sh"))
            .arg("--check-only")
            .env_clear()
            .env("PATH", path);
        if let Some(d) = bin_dir {
            cmd.env("JOBFORGE_BIN_DIR", d);
        }
        cmd.output().unwrap()
    };
    let out = run(Some(bins.path()));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Without prebuilt binaries it builds, so it does need cargo.
    let out = run(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cargo is not installed"));
    // A bin dir missing a binary is named.
    std::fs::remove_file(bins.path().join("jobforge-devstack")).unwrap();
    let out = run(Some(bins.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jobforge-devstack"));
}

#[test]
fn list_and_get_word_an_invalid_request_like_the_controller() {
    let c = Consul::start();
    // A spec the CLI's serde cannot decode (an unknown field), no status yet.
    let doc =
        request_yaml("bad-1", "").replace("  owner: team-a\n", "  owner: team-a\n  bogus: 1\n");
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&doc).unwrap();
    c.put(
        &c.keys.request_key("default", "bad-1"),
        &serde_json::to_vec(&value).unwrap(),
    );
    let out = c
        .cmd()
        .args(["get", "bad-1", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json_out(&out.stdout);
    let expected = jobforge_schema::parse_request(
        &serde_json::to_vec(&value).unwrap(),
        jobforge_schema::Format::Json,
    )
    .unwrap_err()
    .iter()
    .map(|p| p.to_string())
    .collect::<Vec<_>>()
    .join("; ");
    assert_eq!(v["request"]["invalid"], expected.as_str(), "{v}");
    // The controller marks it Failed/InvalidSpec: list says Failed, like any other failed request,
    // and get shows the controller's message.
    let message = format!("the request is invalid (1 problem): {expected}. Fix it");
    c.set_status("default", "bad-1", |s| {
        s.phase = Phase::Failed;
        s.failure = Some(Failure {
            phase: None,
            reason: Reason::InvalidSpec,
            message: message.clone(),
        });
    });
    c.cmd()
        .args(["list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Failed").and(predicate::str::contains("Invalid").not()));
    let v = json_out(
        &c.cmd()
            .args(["get", "bad-1", "-o", "json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(v["request"]["invalid"], message.as_str(), "{v}");
}

#[test]
fn submit_refuses_a_namespace_that_disagrees_with_the_file() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let doc =
        request_yaml("ns-1", "").replace("  name: ns-1\n", "  name: ns-1\n  namespace: default\n");
    let f = write(dir.path(), "r.yaml", &doc);
    c.cmd()
        .args(["submit", f.to_str().unwrap(), "-n", "team-b"])
        .current_dir(dir.path())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("default")
                .and(predicate::str::contains("team-b"))
                .and(predicate::str::contains("--namespace-override")),
        );
    assert!(c.get(&c.keys.request_key("default", "ns-1")).is_none());
    assert!(c.get(&c.keys.request_key("team-b", "ns-1")).is_none());
    c.cmd()
        .args([
            "submit",
            f.to_str().unwrap(),
            "-n",
            "team-b",
            "--namespace-override",
        ])
        .current_dir(dir.path())
        .assert()
        .success();
    assert!(c.get(&c.keys.request_key("team-b", "ns-1")).is_some());
    // A file without a namespace goes where -n says, and one that agrees with -n is fine.
    let f2 = write(dir.path(), "r2.yaml", &request_yaml("ns-2", ""));
    c.cmd()
        .args(["submit", f2.to_str().unwrap(), "-n", "team-b"])
        .current_dir(dir.path())
        .assert()
        .success();
    assert!(c.get(&c.keys.request_key("team-b", "ns-2")).is_some());
}

#[test]
fn submit_of_a_buildrequest_leaves_the_version_file_alone_unless_bump() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let vf = write(
        dir.path(),
        "deploy/version.yaml",
        "version:\n  major: 0\n  minor: 1\n  patch: 4\n",
    );
    let f = write(dir.path(), "r.yaml", &request_yaml("nb-1", ""));
    let out = c
        .cmd()
        .args(["submit", f.to_str().unwrap(), "-o", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_out(&out.stdout);
    assert_eq!(v["versionTag"], serde_json::Value::Null);
    assert_eq!(v["imageTags"], serde_json::json!(["v1"]));
    assert!(std::fs::read_to_string(&vf).unwrap().contains("patch: 4"));
    // The seed command still increments, as the seed did.
    seed_pair(dir.path());
    let out = c
        .cmd()
        .args([
            "submit-job",
            "-global",
            "deploy/global.yaml",
            "-config",
            "build.yaml",
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
    assert!(
        json_out(&out.stdout)["versionTag"]
            .as_str()
            .unwrap()
            .ends_with("v0.1.5")
    );
    assert!(std::fs::read_to_string(&vf).unwrap().contains("patch: 5"));
}
