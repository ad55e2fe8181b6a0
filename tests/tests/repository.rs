//! The repository itself: what is tracked stays source, never a profiler dump or a binary
//! (issue 18, item 17: a 29 MB heaptrack dump named `0` had been committed at the root).

use std::process::Command;

use jobforge_tests::workspace_root;

/// Largest tracked file, in bytes (the pre-stop hook's limit). `Cargo.lock` is exempt.
const MAX_TRACKED_BYTES: u64 = 1024 * 1024;

#[test]
fn no_tracked_file_is_over_one_mebibyte() {
    let root = workspace_root();
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git ls-files");
    assert!(
        out.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut too_big = Vec::new();
    for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        if name == "Cargo.lock" {
            continue;
        }
        // A file deleted in the work tree but still in the index has no size to judge.
        if let Ok(meta) = std::fs::metadata(root.join(name.as_ref()))
            && meta.len() > MAX_TRACKED_BYTES
        {
            too_big.push(format!("{name} ({} bytes)", meta.len()));
        }
    }
    assert!(
        too_big.is_empty(),
        "tracked files over 1 MiB (profiler output, data or binaries do not belong in the tree): {too_big:?}"
    );
}

#[test]
fn profiler_output_is_ignored() {
    let root = workspace_root();
    for path in [
        "0",
        "heaptrack.jobforge.123.zst",
        "perf.data",
        "massif.out.42",
    ] {
        let status = Command::new("git")
            .args(["check-ignore", "-q", path])
            .current_dir(&root)
            .status()
            .expect("git check-ignore");
        assert!(status.success(), "{path} is not ignored by .gitignore");
    }
}
