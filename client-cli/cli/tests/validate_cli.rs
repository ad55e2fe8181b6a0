//! `jobforge validate` and `jobforge schema` as a user runs them.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

const VALID: &str = "\
apiVersion: jobforge/v1alpha1
kind: BuildRequest
metadata: {name: myapp-42, namespace: team-a}
spec:
  owner: team-a
  repo_url: https://git.example.com/team-a/myapp.git
  git_ref: main
  image_name: myapp
  image_tags: [v1.4.2, latest]
  registry_url: registry.internal:5000/team-a
  build_timeout: 30m
";

fn jobforge() -> Command {
    Command::cargo_bin("jobforge").unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn valid_file_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "ok.yaml", VALID);
    jobforge()
        .arg("validate")
        .arg(&f)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "valid (BuildRequest team-a/myapp-42)",
        ));
}

#[test]
fn stdin_is_read_for_dash() {
    jobforge()
        .args(["validate", "-"])
        .write_stdin(VALID)
        .assert()
        .success();
}

#[test]
fn invalid_file_lists_every_problem_one_per_line_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = VALID
        .replace("v1.4.2", "Latest!")
        .replace("30m", "forever")
        .replace("myapp-42", "MyApp");
    let f = write(&dir, "bad.yaml", &text);
    let out = jobforge()
        .arg("validate")
        .arg(&f)
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    let name = f.display().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with(&format!(
        "{name}: metadata.name: \"MyApp\" is not a DNS label"
    )));
    assert_eq!(
        lines[1],
        format!(
            "{name}: spec.image_tags[0]: \"Latest!\" is not a valid tag: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        )
    );
    assert!(lines[2].starts_with(&format!(
        "{name}: spec.build_timeout: \"forever\" is not a duration"
    )));
}

#[test]
fn one_invalid_file_among_valid_ones_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(&dir, "ok.yaml", VALID);
    let bad = write(
        &dir,
        "bad.json",
        "{\"apiVersion\": \"jobforge/v1alpha1\", \"kind\": \"BuildRequest\"}",
    );
    jobforge()
        .arg("validate")
        .arg(&ok)
        .arg(&bad)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "bad.json: metadata: is required but missing",
        ))
        .stdout(predicate::str::contains(
            "bad.json: spec: is required but missing",
        ));
}

#[test]
fn document_of_600_kib_fails_with_a_clear_size_error() {
    let dir = tempfile::tempdir().unwrap();
    let padding = format!("# {}\n", "x".repeat(600 * 1024));
    let f = write(&dir, "big.yaml", &(VALID.to_string() + &padding));
    jobforge()
        .arg("validate")
        .arg(&f)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "bytes; the limit is 524288 bytes (512 KiB, Consul's kv_max_value_size)",
        ));
}

#[test]
fn yaml_with_a_tab_fails_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "tab.yaml",
        &VALID.replace("  owner: team-a", "\towner: team-a"),
    );
    jobforge().arg("validate").arg(&f).assert().code(1).stdout(
        predicate::str::is_match("tab.yaml: YAML syntax error at line 5 column [0-9]+: ").unwrap(),
    );
}

#[test]
fn yaml_with_a_duplicate_key_fails_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "dup.yaml",
        &VALID.replace("  git_ref: main\n", "  git_ref: main\n  git_ref: dev\n"),
    );
    jobforge()
        .arg("validate")
        .arg(&f)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "dup.yaml: YAML syntax error at line 8 column 3: ",
        ))
        .stdout(predicate::str::contains(
            "duplicate entry with key \"git_ref\"",
        ));
}

#[test]
fn seed_job_config_and_global_build_pair_are_accepted() {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed-compat");
    jobforge()
        .arg("validate")
        .arg(seed.join("job_config_submit_job.json"))
        .assert()
        .success()
        .stdout(predicate::str::contains("valid (seed job_config)"));
    jobforge()
        .arg("validate")
        .arg("--global")
        .arg(seed.join("global.yaml"))
        .arg(seed.join("build.yaml"))
        .assert()
        .success();
}

#[test]
fn schema_prints_json() {
    let out = jobforge()
        .arg("schema")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["title"], "BuildRequest");
    assert_eq!(v["additionalProperties"], false);
}

#[test]
fn a_vault_path_of_another_namespace_is_a_problem_and_the_rules_checked_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        format!("{VALID}  registry_credentials_path: secret/data/jobforge/team-b/registry\n");
    let f = write(&dir, "other.yaml", &text);
    jobforge()
        .args(["validate", "--offline"])
        .arg(&f)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "spec.registry_credentials_path: \"secret/data/jobforge/team-b/registry\" is outside \
             namespace \"team-a\"'s Vault paths; allowed: a path under secret/data/jobforge/team-a/",
        ))
        .stderr(predicate::str::contains(
            "tenancy: checked against the default rules (--offline): Vault paths under \
             secret/data/jobforge/{namespace}/",
        ));
    // Every problem at once: a grammar problem does not hide the tenancy one.
    let both = write(
        &dir,
        "both.yaml",
        &format!(
            "{VALID}  registry_credentials_path: secret/data/jobforge/team-b/registry\n  target: \"-x\"\n"
        ),
    );
    jobforge()
        .args(["validate", "--offline"])
        .arg(&both)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("spec.target:"))
        .stdout(predicate::str::contains(
            "spec.registry_credentials_path: \"secret/data/jobforge/team-b/registry\" is outside",
        ));
    // Without --offline and with no Consul listening, the defaults are used and the reason said.
    jobforge()
        .args(["validate", "--consul-addr", "127.0.0.1:1"])
        .arg(&f)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the default rules (Consul at"));
    let own = write(
        &dir,
        "own.yaml",
        &format!("{VALID}  registry_credentials_path: secret/data/jobforge/team-a/registry\n"),
    );
    jobforge()
        .args(["validate", "--offline"])
        .arg(&own)
        .assert()
        .success();
}
