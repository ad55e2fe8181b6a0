//! `jobforge apply`: GitOps sync of `examples/gitops/` against the dev stack's Consul.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use predicates::prelude::*;

fn gitops_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/gitops")
}

const EXAMPLES: [(&str, &str); 3] = [
    ("team-a", "hello-web"),
    ("team-a", "hello-worker"),
    ("platform", "lint-image"),
];

fn apply_json(c: &Consul, args: &[&str]) -> serde_json::Value {
    let out = c
        .cmd()
        .arg("apply")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_out(&out.stdout)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn applying_the_examples_twice_writes_nothing_the_second_time() {
    let c = Consul::start();
    let dir = gitops_dir();
    let first = apply_json(&c, &["-f", dir.to_str().unwrap()]);
    assert_eq!(first["created"], 3, "{first}");
    let before: Vec<u64> = EXAMPLES
        .iter()
        .map(|(ns, n)| c.modify_index(ns, n))
        .collect();

    let second = apply_json(&c, &["-f", dir.to_str().unwrap()]);
    assert_eq!(second["unchanged"], 3, "{second}");
    assert_eq!(second["created"], 0);
    assert_eq!(second["updated"], 0);
    let after: Vec<u64> = EXAMPLES
        .iter()
        .map(|(ns, n)| c.modify_index(ns, n))
        .collect();
    assert_eq!(before, after, "the second apply wrote a request");

    c.cmd()
        .args(["apply", "-f", dir.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "0 created, 0 updated, 3 unchanged, 0 pruned",
        ));
}

#[test]
fn a_changed_file_is_updated_and_dry_run_shows_a_diff_without_writing() {
    let c = Consul::start();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&gitops_dir(), tmp.path());
    let d = tmp.path().to_str().unwrap();
    apply_json(&c, &["-f", d]);
    let g = c.modify_index("team-a", "hello-web");

    let f = tmp.path().join("hello-web.yaml");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("git_ref: main", "git_ref: release-2");
    std::fs::write(&f, text).unwrap();

    c.cmd()
        .args(["apply", "-f", d, "--dry-run"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("-  git_ref: main")
                .and(predicate::str::contains("+  git_ref: release-2"))
                .and(predicate::str::contains("updated (dry run)")),
        );
    assert_eq!(c.modify_index("team-a", "hello-web"), g, "dry run wrote");

    let v = apply_json(&c, &["-f", d]);
    assert_eq!(v["updated"], 1, "{v}");
    assert_eq!(v["unchanged"], 2, "{v}");
    assert!(c.modify_index("team-a", "hello-web") > g);
}

#[test]
fn prune_deletes_only_selected_requests_missing_from_the_files() {
    let c = Consul::start();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&gitops_dir(), tmp.path());
    let d = tmp.path().to_str().unwrap();
    apply_json(&c, &["-f", d]);
    // A request someone submitted by hand, without the label: never pruned.
    let other = tempfile::tempdir().unwrap();
    let f = write(other.path(), "r.yaml", &request_yaml("manual", "app: x"));
    c.cmd()
        .args(["submit", f.to_str().unwrap(), "-n", "team-a"])
        .assert()
        .success();

    std::fs::remove_file(tmp.path().join("hello-worker.json")).unwrap();
    let v = apply_json(&c, &["-f", d, "--prune", "-l", "managed-by=gitops"]);
    assert_eq!(v["pruned"], 1, "{v}");
    assert!(
        c.get(&c.keys.request_key("team-a", "hello-worker"))
            .is_none()
    );
    assert!(c.get(&c.keys.request_key("team-a", "manual")).is_some());
    assert!(c.get(&c.keys.request_key("team-a", "hello-web")).is_some());
    assert!(
        c.get(&c.keys.request_key("platform", "lint-image"))
            .is_some()
    );

    c.cmd()
        .args(["apply", "-f", d, "--prune"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--selector"));
}

#[test]
fn invalid_files_are_all_reported_and_nothing_is_written() {
    let c = Consul::start();
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "ok.yaml", &request_yaml("fine", ""));
    write(
        tmp.path(),
        "bad1.yaml",
        "apiVersion: jobforge/v1alpha1\nkind: BuildRequest\nmetadata: {name: x}\nspec: {owner: o}\n",
    );
    write(tmp.path(), "bad2.json", "{not json");
    let out = c
        .cmd()
        .args(["apply", "-f", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad1.yaml") && err.contains("spec.repo_url"),
        "{err}"
    );
    assert!(err.contains("bad2.json"), "{err}");
    assert!(c.get(&c.keys.request_key("default", "fine")).is_none());
}

/// `request_yaml` with `metadata.namespace`.
fn request_in(ns: &str, name: &str, labels: &str) -> String {
    request_yaml(name, labels).replacen(
        "metadata:\n",
        &format!("metadata:\n  namespace: {ns}\n"),
        1,
    )
}

/// Issue 14: `--prune` deletes only in the namespaces the applied files name (another team's
/// requests with the same label are left alone) unless `-A`, and an empty selector is refused
/// before anything is written.
#[test]
fn prune_stays_in_the_files_namespaces_unless_all_namespaces() {
    let c = Consul::start();
    let other = tempfile::tempdir().unwrap();
    for (ns, name) in [("team-a", "gone"), ("team-b", "theirs")] {
        let f = write(
            other.path(),
            &format!("{ns}.yaml"),
            &request_in(ns, name, "managed-by: gitops"),
        );
        c.cmd()
            .args(["submit", f.to_str().unwrap(), "-n", ns])
            .assert()
            .success();
    }
    let files = tempfile::tempdir().unwrap();
    let d = files.path().to_str().unwrap();
    write(
        files.path(),
        "kept.yaml",
        &request_in("team-a", "kept", "managed-by: gitops"),
    );

    for empty in ["", " ", ","] {
        c.cmd()
            .args(["apply", "-f", d, "--prune", "-l", empty])
            .assert()
            .failure()
            .stderr(predicate::str::contains("non-empty selector"));
    }
    assert!(
        c.get(&c.keys.request_key("team-a", "kept")).is_none(),
        "nothing written"
    );
    assert!(c.get(&c.keys.request_key("team-a", "gone")).is_some());

    let v = apply_json(&c, &["-f", d, "--prune", "-l", "managed-by=gitops"]);
    assert_eq!(v["pruned"], 1, "{v}");
    assert!(c.get(&c.keys.request_key("team-a", "gone")).is_none());
    assert!(
        c.get(&c.keys.request_key("team-b", "theirs")).is_some(),
        "another namespace was pruned: {v}"
    );

    let v = apply_json(&c, &["-f", d, "--prune", "-A", "-l", "managed-by=gitops"]);
    assert_eq!(v["pruned"], 1, "{v}");
    assert!(c.get(&c.keys.request_key("team-b", "theirs")).is_none());
    assert!(c.get(&c.keys.request_key("team-a", "kept")).is_some());
}
