//! Where things are: the workspace, its built binaries, free ports, programs on PATH, and the
//! Python interpreter of the third-party wire checks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

/// The Python interpreter with the third-party wire-check clients (py-consul, python-nomad, hvac, mcp).
///
/// Errors: `JOBFORGE_TEST_PYTHON` unset — `hack/test.sh` sets it after installing the packages.
pub fn python() -> anyhow::Result<PathBuf> {
    std::env::var_os("JOBFORGE_TEST_PYTHON")
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow!(
                "JOBFORGE_TEST_PYTHON is not set: run the tests with ./hack/test.sh, or run hack/prereqs.sh and \
                 export JOBFORGE_TEST_PYTHON=$PWD/target/pyvenv/bin/python"
            )
        })
}

/// The workspace root (parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of a workspace binary (`jobforge`, `jobforge-controller`, `jobforge-devstack`) next to the
/// running executable: a test's (`target/debug/deps/<test>-<hash>`) or a binary's that uses this
/// crate, such as `jobforge-bench` (`target/<profile>/jobforge-bench`).
///
/// Errors: the binary has not been built; the message says how to build it.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let parent = exe
        .parent()
        .ok_or_else(|| anyhow!("unexpected executable path {}", exe.display()))?;
    // target/debug/deps/<test>-<hash> → target/debug; target/debug/<bin> → target/debug
    let dir = match parent.file_name() {
        Some(n) if n == "deps" => parent.parent().unwrap_or(parent),
        _ => parent,
    };
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is not built: run `cargo build --workspace --bins` (hack/test.sh does) before the tests",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1 (bound then released; tests that can pass port 0 should).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}
