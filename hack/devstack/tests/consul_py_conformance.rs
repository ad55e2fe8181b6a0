//! Third-party conformance: `tests/python/consul_conformance.py` drives the Consul emulator with
//! the py-consul package (the interpreter comes from `JOBFORGE_TEST_PYTHON`, which hack/test.sh
//! sets). The test fails (never skips) when the variable is unset.

use std::path::PathBuf;
use std::time::Duration;

use jobforge_devstack::{DevStack, DevStackConfig};

#[tokio::test]
async fn py_consul_conformance_script_passes_against_the_emulator() {
    let python = std::env::var("JOBFORGE_TEST_PYTHON").expect(
        "set JOBFORGE_TEST_PYTHON to a Python with py-consul installed \
         (for example /work/main/target/pyvenv/bin/python; hack/test.sh sets it)",
    );
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/consul_conformance.py");
    let stack = DevStack::start(DevStackConfig {
        nomad_addr: None,
        vault_addr: None,
        ..DevStackConfig::ephemeral()
    })
    .await
    .expect("start consul emulator");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(stack.consul_url())
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
        "consul_conformance.py failed ({status}).\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    );
    println!("{out}");
}
