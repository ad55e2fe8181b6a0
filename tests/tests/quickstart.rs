//! The README's first command, `./hack/quickstart.sh --once`, run as a user would (on free ports,
//! with the binaries the test suite already built): it must end with `Succeeded`, and the registry
//! must hold the requested tags and no temporary tag.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use jobforge_tests::{bin, free_port, workspace_root};

#[test]
fn quickstart_once_builds_tests_and_publishes_hello_world() {
    quickstart_once(&[]);
}

/// The same through the docker profile: engine, tool image and every phase a container.
#[test]
fn quickstart_profile_docker_builds_tests_and_publishes_hello_world() {
    quickstart_once(&["--profile", "docker"]);
}

fn quickstart_once(extra: &[&str]) {
    let state = tempfile::tempdir().unwrap();
    let bin_dir = bin("jobforge-controller")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let ports: Vec<(String, u16)> = [
        "CONSUL_PORT",
        "NOMAD_PORT",
        "VAULT_PORT",
        "CONTROLLER_PORT",
        "REGISTRY_PORT",
        "GIT_PORT",
    ]
    .iter()
    .map(|k| (k.to_string(), free_port().unwrap()))
    .collect();
    let registry_port = ports
        .iter()
        .find(|(k, _)| k == "REGISTRY_PORT")
        .map(|(_, p)| *p)
        .unwrap();
    let out = Command::new(workspace_root().join("hack/quickstart.sh"))
        .arg("--once")
        .args(extra)
        .envs(ports.iter().map(|(k, v)| (k.clone(), v.to_string())))
        .env("JOBFORGE_STATE", state.path())
        .env("JOBFORGE_BIN_DIR", &bin_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Succeeded: 127.0.0.1:"), "{stdout}");
    // The release tags, and the signature and attestation tags cosign's convention names (the
    // registry lists tags in no particular order).
    let tags: Vec<String> = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("tags:"))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j.trim()).ok())
        .and_then(|v| serde_json::from_value(v["tags"].clone()).ok())
        .unwrap_or_default();
    for want in ["latest", "v1.0.0"] {
        assert!(
            tags.iter().any(|t| t == want),
            "tags in the registry: {tags:?}\n{stdout}"
        );
    }
    for suffix in [".sig", ".att"] {
        assert!(
            tags.iter()
                .any(|t| t.starts_with("sha256-") && t.ends_with(suffix)),
            "tags in the registry: {tags:?}\n{stdout}"
        );
    }
    assert_eq!(tags.len(), 4, "{tags:?}");
    // The quickstart checks the supply chain as a user would: `jobforge verify` passes.
    assert!(
        stdout.contains("signature:   verified")
            && stdout.contains("provenance:  verified (SLSA v1)")
            && stdout.contains("base image:  none (FROM scratch)"),
        "jobforge verify: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "127.0.0.1:{registry_port}/demo/hello-world@sha256:"
        )),
        "{stdout}"
    );
    // Everything it started is stopped: nothing listens on its ports any more.
    for (k, p) in &ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *p)).is_err(),
            "{k} {p} still open"
        );
    }
}
