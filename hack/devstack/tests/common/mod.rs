//! Shared by the third-party wire checks: run one `tests/python/<script>` against a fresh
//! ephemeral dev stack and require it to succeed.

// Each test binary that includes this module uses only some of it.
#![allow(dead_code)]

use jobforge_devstack::{DevStack, DevStackConfig};

/// Which emulator URLs (and the root token) a script takes as arguments, in order.
pub enum Arg {
    /// The Nomad emulator's URL.
    Nomad,
    /// The Vault emulator's URL.
    Vault,
    /// The dev stack's Vault root token.
    RootToken,
}

/// Starts an ephemeral dev stack, runs `tests/python/<script>` with `args` under
/// `JOBFORGE_TEST_PYTHON` (`packages` names what that Python needs, for the panic message), stops
/// the stack, and panics with the script's output unless it exited 0.
pub async fn python_check(script: &str, packages: &str, args: &[Arg]) {
    let python = std::env::var("JOBFORGE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("set JOBFORGE_TEST_PYTHON to a python with {packages} (hack/test.sh does)")
    });
    let stack = DevStack::start(DevStackConfig::ephemeral())
        .await
        .expect("dev stack");
    let path = format!("{}/../../tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(path).kill_on_drop(true);
    for a in args {
        cmd.arg(match a {
            Arg::Nomad => stack.nomad_url(),
            Arg::Vault => stack.vault_url(),
            Arg::RootToken => "root".to_string(),
        });
    }
    let out = cmd.output().await;
    stack.shutdown().await;
    let out = out.expect("run python");
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
