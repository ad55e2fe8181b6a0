//! Third-party wire check: `tests/python/nomad_conformance.py` (python-nomad) against the emulator.
#![allow(clippy::unwrap_used)]

use jobforge_devstack::{DevStack, DevStackConfig};

#[tokio::test]
async fn python_nomad_registers_reads_allocations_and_logs() {
    let python = std::env::var("JOBFORGE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("set JOBFORGE_TEST_PYTHON to a python with python-nomad 2.1.0 (hack/test.sh does)")
    });
    let stack = DevStack::start(DevStackConfig::ephemeral()).await.unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/nomad_conformance.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(stack.nomad_url())
        .kill_on_drop(true)
        .output()
        .await;
    stack.shutdown().await;
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn python_nomad_tasks_get_their_own_vault_token_and_nothing_more() {
    let python = std::env::var("JOBFORGE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "set JOBFORGE_TEST_PYTHON to a python with python-nomad and hvac (hack/test.sh does)"
        )
    });
    let stack = DevStack::start(DevStackConfig::ephemeral()).await.unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/nomad_vault_conformance.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(stack.nomad_url())
        .arg(stack.vault_url())
        .arg("root")
        .kill_on_drop(true)
        .output()
        .await;
    stack.shutdown().await;
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
