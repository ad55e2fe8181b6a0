//! The seed's version management: `deploy/version.yaml` holds
//! `version: {major, minor, patch}`; `submit` increments the patch and adds the branch-aware tag
//! `<branch>-v<major>.<minor>.<patch>` (branch from `git rev-parse --abbrev-ref HEAD`, `/` → `-`).
//! `version-major N` resets minor and patch, `version-minor N` resets patch (seed README
//! § Version Management).

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::args::Output;
use crate::error::{CliError, CliResult};
use crate::output::print_doc;

/// Semantic version numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: Version,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Reads the version file; a missing file is version 0.0.0.
pub fn read(path: &Path) -> CliResult<Version> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml_ng::from_str::<VersionFile>(&text)
            .map(|f| f.version)
            .map_err(|e| {
                CliError::Input(format!(
                    "{}: {e} (expected `version: {{major: N, minor: N, patch: N}}`)",
                    path.display()
                ))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Version::default()),
        Err(e) => Err(CliError::Input(format!("{}: {e}", path.display()))),
    }
}

/// Writes the version file, creating its directory.
pub fn write(path: &Path, v: Version) -> CliResult<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::Input(format!("{}: {e}", dir.display())))?;
    }
    let text = serde_yaml_ng::to_string(&VersionFile { version: v })
        .map_err(|e| CliError::Input(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

/// The current git branch with `/` replaced by `-`, or `None` outside a repository or on a
/// detached HEAD. Runs `git rev-parse --abbrev-ref HEAD` (argv, no shell).
pub fn branch() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--abbrev-ref", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let b = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!b.is_empty() && b != "HEAD").then(|| sanitize_branch(&b))
}

/// Makes a branch name usable in an image tag: `/` → `-`, other characters outside
/// `[A-Za-z0-9_.-]` → `-`.
pub fn sanitize_branch(b: &str) -> String {
    b.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The branch-aware tag: `<branch>-v<version>`, or `v<version>` without a branch.
pub fn branch_tag(branch: Option<&str>, v: Version) -> String {
    match branch {
        Some(b) => format!("{b}-v{v}"),
        None => format!("v{v}"),
    }
}

/// Increments the patch in `path` and returns the new version and its branch-aware tag.
pub fn bump_patch(path: &Path) -> CliResult<(Version, String)> {
    let mut v = read(path)?;
    v.patch += 1;
    write(path, v)?;
    Ok((v, branch_tag(branch().as_deref(), v)))
}

/// `jobforge version-info`.
pub fn info(path: &Path, out: Output) -> CliResult<()> {
    let v = read(path)?;
    let b = branch();
    let tag = format!("v{v}");
    let btag = branch_tag(b.as_deref(), v);
    match out {
        Output::Json | Output::Yaml => print_doc(
            out,
            &serde_json::json!({"version": v.to_string(), "tag": tag, "branch": b, "branchTag": btag, "file": path.display().to_string()}),
        ),
        _ => {
            println!("Version: {v}");
            println!("Tag: {tag}");
            println!("Branch: {}", b.as_deref().unwrap_or("(none)"));
            println!("Branch Tag: {btag}");
            Ok(())
        }
    }
}

/// `jobforge version-major N`.
pub fn set_major(path: &Path, n: u64, out: Output) -> CliResult<()> {
    write(
        path,
        Version {
            major: n,
            minor: 0,
            patch: 0,
        },
    )?;
    info(path, out)
}

/// `jobforge version-minor N`.
pub fn set_minor(path: &Path, n: u64, out: Output) -> CliResult<()> {
    let v = read(path)?;
    write(
        path,
        Version {
            minor: n,
            patch: 0,
            ..v
        },
    )?;
    info(path, out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn branch_tags_follow_the_seed_format() {
        let v = Version {
            major: 0,
            minor: 1,
            patch: 5,
        };
        assert_eq!(
            branch_tag(Some(&sanitize_branch("feature/auth")), v),
            "feature-auth-v0.1.5"
        );
        assert_eq!(branch_tag(None, v), "v0.1.5");
    }

    #[test]
    fn version_file_round_trips_and_bumps() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("deploy/version.yaml");
        assert_eq!(read(&p).unwrap(), Version::default());
        write(
            &p,
            Version {
                major: 1,
                minor: 2,
                patch: 3,
            },
        )
        .unwrap();
        let (v, _) = bump_patch(&p).unwrap();
        assert_eq!(v.to_string(), "1.2.4");
        assert_eq!(read(&p).unwrap(), v);
    }
}
