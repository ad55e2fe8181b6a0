//! Shared helpers for the workspace integration tests: processes that are always stopped (even when
//! a test fails), a local OCI registry, a git repository fixture, the controller and CLI binaries,
//! and KV helpers that wait on conditions with blocking queries and a deadline (never sleep-and-hope).
//!
//! Binaries are taken from the target directory the tests run from (`target/debug`); `hack/test.sh`
//! builds them first (`cargo build --workspace --bins`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

pub mod docker;
pub mod githttp;
pub mod history;
pub mod proxy;

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
/// running test executable.
///
/// Errors: the binary has not been built; the message says how to build it.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    // target/debug/deps/<test>-<hash> → target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
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

/// A child process leading its own session (and process group), killed with everything in that
/// session when dropped.
///
/// The session, not only the group, is what gets cleaned up: the dev stack starts every Nomad
/// task in a process group of its own (as Nomad's executor does), so a group kill of a SIGKILLed
/// dev stack would leave its running tasks behind. Descendants keep the session ID unless they
/// call setsid(2) themselves, which nothing under test does.
#[derive(Debug)]
pub struct ProcessGuard {
    child: Option<Child>,
    name: String,
}

impl ProcessGuard {
    /// A command that runs `program` as the leader of a new session, through util-linux
    /// `setsid`: for a child that is not a group leader it calls setsid(2) and execs in place, so
    /// the PID [`ProcessGuard::spawn`] records is the program's own.
    pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.arg(program);
        cmd
    }

    /// Spawns `cmd`, built with [`ProcessGuard::command`].
    ///
    /// Errors: spawn failure, naming the program.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<ProcessGuard> {
        let child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        Ok(ProcessGuard {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::killpg(pid, signal).with_context(|| format!("signalling {}", self.name))
    }

    /// SIGKILLs the session (every process in it, its tasks' own process groups included) and
    /// reaps the child.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let sid = c.id() as i32;
            let _ = c.kill();
            let _ = c.wait();
            kill_session(sid);
        }
    }

    /// SIGTERMs the group and waits up to `timeout` for the child to exit, then SIGKILLs.
    /// Returns the exit status if it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                kill_session(c.id() as i32);
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        kill_session(c.id() as i32);
        None
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// SIGKILLs every process whose session ID is `sid` (read from `/proc/<pid>/stat`), repeating
/// until none is left (a dying process may have forked) or 5 s pass.
fn kill_session(sid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let members = session_members(sid);
        if members.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in members {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// PIDs of the live (not zombie) processes in session `sid`.
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp session ...`; comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(3).and_then(|s| s.parse().ok()) == Some(sid)
        })
        .collect()
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local OCI distribution registry (Debian's `docker-registry`) on a free loopback port, with
/// deletes enabled, stopped on drop.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    _dir: tempfile::TempDir,
    _proc: ProcessGuard,
}

impl Registry {
    /// Starts the registry and waits until `/v2/` answers (10 s).
    ///
    /// Errors: `docker-registry` missing (run hack/prereqs.sh) or not answering.
    pub async fn start() -> anyhow::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: {addr}}}\n",
                dir.path().join("data").display()
            ),
        )?;
        let mut cmd = ProcessGuard::command("docker-registry");
        cmd.arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let proc = ProcessGuard::spawn("docker-registry", cmd)
            .context("docker-registry is not installed: run hack/prereqs.sh")?;
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/v2/");
        wait_until(Duration::from_secs(10), "the registry answers /v2/", || {
            let client = client.clone();
            let url = url.clone();
            async move {
                Ok(client
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false))
            }
        })
        .await?;
        Ok(Registry {
            addr,
            _dir: dir,
            _proc: proc,
        })
    }

    /// Tags of `repo` (`/v2/<repo>/tags/list`); empty when the repository has none.
    pub async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        let v: serde_json::Value =
            reqwest::get(format!("http://{}/v2/{repo}/tags/list", self.addr))
                .await?
                .json()
                .await?;
        Ok(v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Manifest digest of `repo:tag` (`Docker-Content-Digest`), or `None` if absent.
    pub async fn digest(&self, repo: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let r = reqwest::Client::new()
            .head(format!("http://{}/v2/{repo}/manifests/{tag}", self.addr))
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await?;
        if !r.status().is_success() {
            return Ok(None);
        }
        Ok(r.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from))
    }
}

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
        git(&work, &["add", "-A"])?;
        git(
            &work,
            &[
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@localhost",
                "commit",
                "-q",
                "-m",
                "fixture",
            ],
        )?;
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
        git(&work, &["add", "-A"])?;
        git(
            &work,
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
        git(&work, &["push", "-q", "../repo.git", "main"])?;
        self.head = git(&work, &["rev-parse", "main"])?;
        Ok(self.head.clone())
    }
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

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Polls `cond` (an async check, typically itself a blocking query) until it returns `Ok(true)` or
/// `timeout` passes.
///
/// Errors: the timeout, naming `what`; or the first error `cond` returns.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Minimal raw Consul KV access for tests (independent of the client under test).
#[derive(Clone)]
pub struct Kv {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    http: reqwest::Client,
}

impl Kv {
    /// KV access to the Consul at `base`.
    pub fn new(base: impl Into<String>) -> Kv {
        Kv {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    /// `PUT /v1/kv/<key>`; returns Consul's boolean.
    pub async fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<bool> {
        let r = self
            .http
            .put(format!("{}/v1/kv/{key}", self.base))
            .body(value.to_vec())
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        if !status.is_success() {
            bail!("PUT {key}: {status} {body}");
        }
        Ok(body.trim() == "true")
    }

    /// `DELETE /v1/kv/<key>[?recurse]`.
    pub async fn delete(&self, key: &str, recurse: bool) -> anyhow::Result<()> {
        let url = if recurse {
            format!("{}/v1/kv/{key}?recurse", self.base)
        } else {
            format!("{}/v1/kv/{key}", self.base)
        };
        self.http.delete(url).send().await?.error_for_status()?;
        Ok(())
    }

    /// `(X-Consul-Index, Some((value, modify_index)))`, or `(index, None)` on 404; blocking when
    /// `index` > 0 (wait `wait`).
    pub async fn get(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> anyhow::Result<(u64, Option<(Vec<u8>, u64)>)> {
        let r = self
            .http
            .get(format!("{}/v1/kv/{key}", self.base))
            .query(&[
                ("index", index.to_string()),
                ("wait", format!("{}ms", wait.as_millis())),
            ])
            .send()
            .await?;
        let idx = r
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok((idx, None));
        }
        let v: serde_json::Value = r.error_for_status()?.json().await?;
        let entry = &v[0];
        use base64::Engine as _;
        let value = entry["Value"]
            .as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s))
            .transpose()?
            .unwrap_or_default();
        let mi = entry["ModifyIndex"].as_u64().unwrap_or(0);
        Ok((idx, Some((value, mi))))
    }

    /// Keys under `prefix` (`?keys`).
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let r = self
            .http
            .get(format!("{}/v1/kv/{prefix}?keys", self.base))
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        Ok(r.error_for_status()?.json().await?)
    }

    /// Waits (blocking queries, `timeout` overall) until the JSON document at `key` satisfies
    /// `pred`, and returns it.
    ///
    /// Errors: timeout, with the last value seen.
    pub async fn wait_json(
        &self,
        key: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut index = 0;
        let mut last = serde_json::Value::Null;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out after {timeout:?} waiting on {key}; last value: {last}");
            }
            let (idx, v) = self
                .get(key, index, left.min(Duration::from_secs(5)))
                .await?;
            if let Some((bytes, _)) = v
                && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                if pred(&doc) {
                    return Ok(doc);
                }
                last = doc;
            }
            index = if idx < index { 0 } else { idx.max(1) };
        }
    }
}

/// A `jobforge-devstack` process (Consul, Nomad, Vault emulators on free loopback ports), stopped
/// on drop with every task it started.
pub struct DevStackProcess {
    /// `http://127.0.0.1:<port>` of Consul.
    pub consul: String,
    /// `http://127.0.0.1:<port>` of Nomad.
    pub nomad: String,
    /// `http://127.0.0.1:<port>` of Vault.
    pub vault: String,
    proc: ProcessGuard,
    _dir: Option<tempfile::TempDir>,
    // Declared after the process: removed once the process (and its tasks) are gone.
    _tmp: tempfile::TempDir,
}

/// Options of [`DevStackProcess::start`].
#[derive(Debug, Default, Clone)]
pub struct DevStackOptions {
    /// Put `tests/fakes` (no-op buildah and skopeo) first on the PATH of the tasks.
    pub fake_tools: bool,
    /// Persist state in a temporary data dir.
    pub data_dir: bool,
    /// Extra environment of the dev stack (inherited by tasks, as a Nomad agent's is).
    pub env: Vec<(String, String)>,
    /// Run only these services (`--services`), e.g. `"consul"`; all three when `None`.
    pub services: Option<String>,
    /// Consul port (0 = any free port).
    pub consul_port: u16,
    /// Persist into this directory instead of a temporary one (implies a data dir).
    pub data_dir_path: Option<PathBuf>,
    /// Vault the Nomad emulator's templates read, when Vault runs in another process.
    pub external_vault_addr: Option<String>,
    /// Folder of the `jobforge-devstack` binary; next to the test executable (see [`bin`]) when
    /// `None`.
    pub bin_dir: Option<PathBuf>,
}

impl DevStackProcess {
    /// Starts the dev stack and waits for its readiness line (30 s).
    ///
    /// Errors: the binary missing (see [`bin`]), or no readiness line.
    pub fn start(opts: DevStackOptions) -> anyhow::Result<DevStackProcess> {
        use std::io::BufRead;
        let program = match &opts.bin_dir {
            Some(dir) => dir.join("jobforge-devstack"),
            None => bin("jobforge-devstack")?,
        };
        let mut cmd = ProcessGuard::command(program);
        cmd.arg("--consul-addr")
            .arg(format!("127.0.0.1:{}", opts.consul_port));
        cmd.args(["--nomad-addr", "127.0.0.1:0", "--vault-addr", "127.0.0.1:0"]);
        if let Some(s) = &opts.services {
            cmd.arg("--services").arg(s);
        }
        if let Some(v) = &opts.external_vault_addr {
            cmd.arg("--external-vault-addr").arg(v);
        }
        let dir = if let Some(p) = &opts.data_dir_path {
            cmd.arg("--data-dir").arg(p);
            None
        } else if opts.data_dir {
            let d = tempfile::tempdir()?;
            cmd.arg("--data-dir").arg(d.path());
            Some(d)
        } else {
            None
        };
        if opts.fake_tools {
            let fakes = workspace_root().join("tests/fakes");
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", fakes.display()));
        }
        // The allocation directories (real buildah storage among them) and anything the tasks
        // put in $TMPDIR live in a directory this guard removes, even when a test SIGKILLs the
        // dev stack, which then cannot clean up after itself.
        let tmp = tempfile::tempdir().context("creating the dev stack's TMPDIR")?;
        cmd.env("TMPDIR", tmp.path());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut proc = ProcessGuard::spawn("jobforge-devstack", cmd)?;
        let stdout = proc
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or_else(|| anyhow!("no stdout of jobforge-devstack"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the dev stack never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("jobforge-devstack printed no readiness line within 30 s")?;
        if !line.starts_with("jobforge-devstack ready") {
            bail!("unexpected first line of jobforge-devstack: {line:?}");
        }
        let field = |name: &str| -> anyhow::Result<String> {
            Ok(line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(String::from)
                .unwrap_or_default())
        };
        Ok(DevStackProcess {
            consul: field("consul")?,
            nomad: field("nomad")?,
            vault: field("vault")?,
            proc,
            _dir: dir,
            _tmp: tmp,
        })
    }

    /// The process (to stop or signal it).
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.proc
    }

    /// Environment a jobforge process needs to reach this stack (HashiCorp's variable names).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CONSUL_HTTP_ADDR".into(),
                self.consul.trim_start_matches("http://").to_string(),
            ),
            ("NOMAD_ADDR".into(), self.nomad.clone()),
            ("VAULT_ADDR".into(), self.vault.clone()),
            ("VAULT_TOKEN".into(), "root".into()),
        ]
    }

    /// KV access to this stack's Consul.
    pub fn kv(&self) -> Kv {
        Kv::new(self.consul.clone())
    }

    /// Writes a KV v2 secret into this stack's Vault.
    pub async fn put_secret(&self, path: &str, data: serde_json::Value) -> anyhow::Result<()> {
        let rel = path.strip_prefix("secret/data/").unwrap_or(path);
        reqwest::Client::new()
            .post(format!("{}/v1/secret/data/{rel}", self.vault))
            .header("X-Vault-Token", "root")
            .json(&serde_json::json!({ "data": data }))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// A `jobforge-controller` process against a [`DevStackProcess`], stopped on drop.
pub struct ControllerProcess {
    /// `http://127.0.0.1:<port>` of its health and metrics endpoints.
    pub http: String,
    proc: ProcessGuard,
}

impl ControllerProcess {
    /// Starts a controller with the `raw_exec` profile and a plain-HTTP registry, plus `extra` flags,
    /// and waits until `/healthz` answers (20 s).
    pub async fn start(
        stack: &DevStackProcess,
        extra: &[&str],
    ) -> anyhow::Result<ControllerProcess> {
        ControllerProcess::start_env(stack.env(), extra).await
    }

    /// Like [`ControllerProcess::start`] with an explicit environment (Consul, Nomad and Vault in
    /// separate processes).
    pub async fn start_env(
        env: Vec<(String, String)>,
        extra: &[&str],
    ) -> anyhow::Result<ControllerProcess> {
        let port = free_port()?;
        let http = format!("http://127.0.0.1:{port}");
        let mut cmd = ProcessGuard::command(bin("jobforge-controller")?);
        cmd.args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--registry-tls-verify=false",
        ]);
        if !extra.contains(&"--profile") {
            cmd.args(["--profile", "raw_exec"]);
        }
        cmd.args(extra)
            .envs(env)
            .env(
                "JOBFORGE_LOG",
                std::env::var("JOBFORGE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let proc = ProcessGuard::spawn("jobforge-controller", cmd)?;
        let client = reqwest::Client::new();
        let url = format!("{http}/healthz");
        wait_until(
            Duration::from_secs(20),
            "the controller answers /healthz",
            || {
                let client = client.clone();
                let url = url.clone();
                async move {
                    Ok(client
                        .get(&url)
                        .send()
                        .await
                        .map(|r| r.status().is_success())
                        .unwrap_or(false))
                }
            },
        )
        .await?;
        Ok(ControllerProcess { http, proc })
    }

    /// The process (to stop, pause or kill it).
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.proc
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::get(format!("{}/status", self.http))
            .await?
            .json()
            .await?)
    }

    /// Waits until this replica reports itself leader with its first list done.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/status", self.http);
        wait_until(
            timeout,
            "the controller leads with its watch caught up",
            || {
                let url = url.clone();
                async move {
                    let v: serde_json::Value = match reqwest::get(&url).await {
                        Ok(r) => r.json().await.unwrap_or_default(),
                        Err(_) => return Ok(false),
                    };
                    Ok(v["role"] == "leader" && v["ready"] == true)
                }
            },
        )
        .await
    }
}

/// A BuildRequest document (JSON) for `namespace/name` with `spec` merged over a minimal valid spec.
pub fn request_json(namespace: &str, name: &str, spec: serde_json::Value) -> Vec<u8> {
    let mut base = serde_json::json!({
        "owner": "tests",
        "repo_url": "https://git.example.invalid/tests/app.git",
        "git_ref": "main",
        "image_name": "app",
        "registry_url": "127.0.0.1:5000/tests",
    });
    if let (Some(b), Some(s)) = (base.as_object_mut(), spec.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "jobforge/v1alpha1",
        "kind": "BuildRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }))
    .unwrap_or_default()
}

/// Waits until a process whose command line contains `pattern` is running (`running = true`) or
/// until none is (`false`), as `pgrep -f` sees it.
///
/// Errors: the timeout, naming the pattern.
pub async fn wait_process(pattern: &str, running: bool, timeout: Duration) -> anyhow::Result<()> {
    let what = if running {
        format!("a process matching {pattern:?} runs")
    } else {
        format!("no process matches {pattern:?}")
    };
    wait_until(timeout, &what, || async {
        let out = Command::new("pgrep").args(["-f", pattern]).output()?;
        Ok(out.stdout.is_empty() != running)
    })
    .await
}

impl DevStackProcess {
    /// A dev stack whose no-op builds sleep `seconds` (the fakes read `JOBFORGE_FAKE_BUILD_SLEEP`);
    /// use a distinct value per test so `pgrep -f "sleep <seconds>"` finds only that test's build.
    pub fn with_slow_builds(seconds: u32) -> anyhow::Result<DevStackProcess> {
        DevStackProcess::start(DevStackOptions {
            fake_tools: true,
            env: vec![("JOBFORGE_FAKE_BUILD_SLEEP".into(), seconds.to_string())],
            ..DevStackOptions::default()
        })
    }

    /// Waits until Nomad reports `job_id` stopped, dead or purged.
    pub async fn wait_job_stopped(&self, job_id: &str, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/v1/job/{job_id}", self.nomad);
        wait_until(timeout, &format!("job {job_id} is stopped"), || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await?;
                if r.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(true);
                }
                let j: serde_json::Value = r.json().await?;
                Ok(j["Stop"] == true || j["Status"] == "dead")
            }
        })
        .await
    }
}
