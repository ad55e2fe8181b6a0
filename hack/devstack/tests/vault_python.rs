//! Third-party wire check: `tests/python/vault_conformance.py` (hvac) against the emulator.
#![allow(clippy::unwrap_used)]

use jobforge_devstack::{DevStack, DevStackConfig};

#[tokio::test]
async fn hvac_writes_and_reads_kv_v2_secrets() {
    let python = std::env::var("JOBFORGE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("set JOBFORGE_TEST_PYTHON to a python with hvac 2.4.0 (hack/test.sh does)")
    });
    let stack = DevStack::start(DevStackConfig::ephemeral()).await.unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/vault_conformance.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
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

#[tokio::test]
async fn hvac_policies_and_tokens_are_enforced() {
    let python = std::env::var("JOBFORGE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("set JOBFORGE_TEST_PYTHON to a python with hvac 2.4.0 (hack/test.sh does)")
    });
    let stack = DevStack::start(DevStackConfig::ephemeral()).await.unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/vault_acl_conformance.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
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
