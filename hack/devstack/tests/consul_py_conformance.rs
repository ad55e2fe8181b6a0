//! Third-party conformance: `tests/python/consul_conformance.py` and
//! `tests/python/consul_acl_conformance.py` drive the Consul emulator with the py-consul package
//! (the interpreter comes from `JOBFORGE_TEST_PYTHON`, which hack/test.sh sets). The tests fail
//! (never skip) when the variable is unset.

use std::path::PathBuf;
use std::time::Duration;

use jobforge_devstack::{DevStack, DevStackConfig};

/// Runs `tests/python/<script> <consul url> <extra…>` against a fresh Consul emulator and asserts
/// it exits 0.
async fn run_script(script: &str, acl_management: Option<&str>) {
    let python = std::env::var("JOBFORGE_TEST_PYTHON").expect(
        "set JOBFORGE_TEST_PYTHON to a Python with py-consul installed \
         (for example /work/main/target/pyvenv/bin/python; hack/test.sh sets it)",
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python")
        .join(script);
    let stack = DevStack::start(DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        consul_acl_initial_management: acl_management.map(str::to_string),
        ..DevStackConfig::ephemeral()
    })
    .await
    .expect("start consul emulator");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(stack.consul_url())
        .args(acl_management)
        // py-consul reads CONSUL_HTTP_TOKEN as its default token; the scripts choose tokens.
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut r, &mut s)
            .await
            .ok();
        s
    };
    let out = tokio::spawn(read(Box::new(stdout)));
    let err = tokio::spawn(read(Box::new(stderr)));
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("script finished within 120 s")
        .expect("wait");
    let (out, err) = (out.await.expect("join"), err.await.expect("join"));
    stack.shutdown().await;
    assert!(
        status.success(),
        "{} failed ({status}).\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        script.display()
    );
    println!("{out}");
}

#[tokio::test]
async fn py_consul_conformance_script_passes_against_the_emulator() {
    run_script("consul_conformance.py", None).await;
}

#[tokio::test]
async fn py_consul_sees_acls_enforced_inside_and_outside_a_key_prefix() {
    run_script(
        "consul_acl_conformance.py",
        Some("7b7c0a43-5f0e-4c5e-9d7e-3f1e2a9c0b11"),
    )
    .await;
}

#[tokio::test]
async fn py_consul_sees_services_checks_health_catalog_and_check_bound_sessions() {
    run_script("consul_catalog_conformance.py", None).await;
}
