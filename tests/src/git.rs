//! Git repository fixtures, cloneable over `file://` (or HTTP with [`crate::githttp`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::env::{which, workspace_root};

/// A git repository with a build context, committed on `main`, cloneable at `url` (`file://`).
pub struct GitRepo {
    /// `file:///…/repo.git`.
    pub url: String,
    /// Full SHA of `main`.
    pub head: String,
    dir: tempfile::TempDir,
}

impl GitRepo {
    /// `examples/hello-world` plus the host's static busybox, as a bare repository.
    ///
    /// Errors: git or busybox missing (hack/prereqs.sh installs them).
    pub fn hello_world() -> anyhow::Result<GitRepo> {
        GitRepo::from_dir(&workspace_root().join("examples/hello-world"), |work| {
            let busybox =
                which("busybox").context("busybox is not installed: run hack/prereqs.sh")?;
            std::fs::copy(&busybox, work.join("busybox")).context("copying busybox")?;
            Ok(())
        })
    }

    /// A bare repository holding a copy of `src` after `prepare` ran on the work tree.
    pub fn from_dir(
        src: &Path,
        prepare: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<GitRepo> {
        let dir = tempfile::tempdir()?;
        let work = dir.path().join("work");
        copy_dir(src, &work)?;
        prepare(&work)?;
        git(&work, &["init", "-q", "-b", "main"])?;
        commit_all(&work, "fixture")?;
        let bare = dir.path().join("repo.git");
        git(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"])?;
        let head = git(&bare, &["rev-parse", "main"])?;
        Ok(GitRepo {
            url: format!("file://{}", bare.display()),
            head,
            dir,
        })
    }

    /// The folder holding the bare repository `repo.git` (to serve it over HTTP).
    pub fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The work tree (to commit more changes with [`GitRepo::commit_all`]).
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Commits every change in the work tree and pushes `main`; returns the new SHA.
    pub fn commit_all(&mut self, message: &str) -> anyhow::Result<String> {
        let work = self.work_dir();
        commit_all(&work, message)?;
        git(&work, &["push", "-q", "../repo.git", "main"])?;
        self.head = git(&work, &["rev-parse", "main"])?;
        Ok(self.head.clone())
    }
}

/// `git add -A` and a commit by a fixed test identity in the work tree `work`.
fn commit_all(work: &Path, message: &str) -> anyhow::Result<()> {
    git(work, &["add", "-A"])?;
    git(
        work,
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@localhost",
            "commit",
            "-q",
            "-m",
            message,
        ],
    )?;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn copy_dir(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}
