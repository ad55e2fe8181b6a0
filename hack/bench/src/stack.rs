//! The processes a benchmark runs: the dev stack (every task under its mock driver, or with
//! `tests/fakes` first on its PATH so every phase script calls no-op build tools; see [`Tasks`])
//! and controller replicas, taken from one binary folder
//! (`--bin-dir`, by default the folder of the running `jobforge-bench`, e.g. `target/release`).
//! Every process is stopped by its guard when dropped, even when a scenario fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use jobforge_tests::{DevStackOptions, DevStackProcess, ProcessGuard, free_port};

/// Where the benchmark finds `jobforge-devstack` and `jobforge-controller`, and how it starts them.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Folder holding both binaries.
    pub dir: PathBuf,
    /// `--session-ttl` of every controller (Consul's minimum, 10 s, by default).
    pub session_ttl: String,
    /// `--lock-delay` of every controller.
    pub lock_delay: String,
    /// How the dev stack runs the pipeline's tasks.
    pub tasks: Tasks,
    /// `--watch-park-after` of every controller (60s, the controller's default, unless set).
    pub park_after: String,
}

/// How the dev stack runs the pipeline's tasks (`--tasks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tasks {
    /// The dev stack's mock driver (`--mock-driver`): every task completes at once without a
    /// process, so the figures are the control plane's alone.
    Mock,
    /// Real processes: the fixed phase scripts run, with `git clone` of a local repository and the
    /// no-op `buildah`/`skopeo` of `tests/fakes`. On one machine the task processes compete with
    /// the controller and the emulators for the CPU.
    Process,
}

/// The dev stack's option for the mock driver's `run_for` (its `--mock-driver`).
pub const MOCK_DRIVER_ENV: &str = "JOBFORGE_DEVSTACK_MOCK_DRIVER";

impl Binaries {
    /// Checks that both binaries exist in `dir`.
    ///
    /// Errors: a binary is missing; the message says how to build it.
    pub fn new(
        dir: PathBuf,
        session_ttl: &str,
        lock_delay: &str,
        tasks: Tasks,
    ) -> anyhow::Result<Binaries> {
        for name in ["jobforge-devstack", "jobforge-controller"] {
            if !dir.join(name).is_file() {
                bail!(
                    "{} is not built: run `cargo build --release --workspace --bins` (or pass --bin-dir)",
                    dir.join(name).display()
                );
            }
        }
        if tasks == Tasks::Process && std::env::var_os(MOCK_DRIVER_ENV).is_some() {
            bail!(
                "--tasks process, but {MOCK_DRIVER_ENV} is set in the environment, which the dev \
                 stack would inherit: unset it"
            );
        }
        Ok(Binaries {
            dir,
            session_ttl: session_ttl.to_string(),
            lock_delay: lock_delay.to_string(),
            tasks,
            park_after: "60s".to_string(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The folder of the running executable (`target/release` under `cargo run --release`).
pub fn default_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("unexpected executable path {}", exe.display()))
}

/// A running dev stack (Consul, Nomad and Vault emulators on free loopback ports): the test
/// harness's [`DevStackProcess`] started from the bench's binary folder.
pub struct Stack {
    /// `http://127.0.0.1:<port>` of Consul.
    pub consul: String,
    /// `http://127.0.0.1:<port>` of Nomad.
    pub nomad: String,
    /// `http://127.0.0.1:<port>` of Vault.
    pub vault: String,
    _proc: DevStackProcess,
}

impl Stack {
    /// Starts the dev stack with the no-op tools and `env` added to its (and its tasks')
    /// environment, and waits for its readiness line (30 s). With [`Tasks::Mock`] the mock driver
    /// runs every task for 0 s unless `env` sets [`MOCK_DRIVER_ENV`]; with [`Tasks::Process`] that
    /// entry is ignored.
    ///
    /// Errors: spawn failure or no readiness line.
    pub fn start(bins: &Binaries, env: &[(&str, &str)]) -> anyhow::Result<Stack> {
        let mut vars: Vec<(String, String)> = Vec::new();
        if bins.tasks == Tasks::Mock {
            vars.push((MOCK_DRIVER_ENV.into(), "0s".into()));
        }
        for (k, v) in env {
            if *k != MOCK_DRIVER_ENV || bins.tasks == Tasks::Mock {
                vars.push((k.to_string(), v.to_string()));
            }
        }
        // A later entry for the same variable wins, as with `Command::env`.
        let proc = DevStackProcess::start(DevStackOptions {
            fake_tools: true,
            env: vars,
            bin_dir: Some(bins.dir.clone()),
            ..DevStackOptions::default()
        })?;
        Ok(Stack::of(proc))
    }

    /// The addresses of a started dev stack, which it keeps running.
    fn of(proc: DevStackProcess) -> Stack {
        Stack {
            consul: proc.consul.clone(),
            nomad: proc.nomad.clone(),
            vault: proc.vault.clone(),
            _proc: proc,
        }
    }

    /// Starts the dev stack with the machine's real build tools on its tasks' PATH (`git`,
    /// `buildah`, `skopeo`: no fakes, no mock driver), for scenarios that time real builds.
    ///
    /// Errors: spawn failure or no readiness line.
    pub fn start_real_tools(bins: &Binaries) -> anyhow::Result<Stack> {
        let proc = DevStackProcess::start(DevStackOptions {
            fake_tools: false,
            bin_dir: Some(bins.dir.clone()),
            ..DevStackOptions::default()
        })?;
        Ok(Stack::of(proc))
    }

    /// Moves both emulators' indexes past 1 (a KV write and a no-op batch job), so that a write
    /// made after an index was read always raises it: a fresh emulator answers index 1 (clamped
    /// from 0) and its first write is also at index 1, which a blocking query at 1 would miss.
    pub async fn warm_up(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for i in 0..2 {
            http.put(format!("{}/v1/kv/bench-warmup/{i}", self.consul))
                .body("x")
                .send()
                .await?
                .error_for_status()?;
        }
        let job = serde_json::json!({"Job": {"ID": "bench-warmup", "Name": "bench-warmup",
            "Type": "batch", "Datacenters": ["dc1"],
            "TaskGroups": [{"Name": "g", "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Interval": 86_400_000_000_000i64, "Delay": 0, "Mode": "fail"},
                "Tasks": [{"Name": "t", "Driver": "raw_exec", "Config": {"command": "true", "args": []}}]}]}});
        http.post(format!("{}/v1/jobs", self.nomad))
            .json(&job)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// One controller replica.
pub struct Controller {
    /// `http://127.0.0.1:<port>` of its health endpoints.
    pub http: String,
    proc: ProcessGuard,
}

impl Controller {
    /// Starts a replica against `stack` (profile `raw-exec`, the configured TTL and lock-delay,
    /// log level `JOBFORGE_LOG` or `warn`) and waits until `/healthz` answers (20 s).
    pub async fn start(bins: &Binaries, stack: &Stack) -> anyhow::Result<Controller> {
        Controller::start_at(bins, &stack.consul, &stack.nomad, &stack.vault).await
    }

    /// Like [`Controller::start`] against the emulators at these `http://` URLs (a dev stack
    /// the scenario started itself, for example with the real build tools).
    pub async fn start_at(
        bins: &Binaries,
        consul: &str,
        nomad: &str,
        vault: &str,
    ) -> anyhow::Result<Controller> {
        let port = free_port()?;
        let http = format!("http://127.0.0.1:{port}");
        let mut cmd = ProcessGuard::command(bins.path("jobforge-controller"));
        cmd.args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--profile",
            "raw-exec",
            "--registry-tls-verify=false",
            "--session-ttl",
            &bins.session_ttl,
            "--lock-delay",
            &bins.lock_delay,
            "--watch-park-after",
            &bins.park_after,
        ])
        .env("CONSUL_HTTP_ADDR", consul.trim_start_matches("http://"))
        .env("NOMAD_ADDR", nomad)
        .env("VAULT_ADDR", vault)
        .env("VAULT_TOKEN", "root")
        .env(
            "JOBFORGE_LOG",
            std::env::var("JOBFORGE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        let proc = ProcessGuard::spawn("jobforge-controller", cmd)?;
        let c = Controller { http, proc };
        let url = format!("{}/healthz", c.http);
        jobforge_tests::wait_http_ok(
            &url,
            Duration::from_secs(20),
            "the controller answers /healthz",
        )
        .await?;
        Ok(c)
    }

    /// Whether `/status` says this replica leads with its first list done.
    pub async fn is_ready_leader(&self) -> bool {
        let v: serde_json::Value = match reqwest::get(format!("{}/status", self.http)).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        v["role"] == "leader" && v["ready"] == true
    }

    /// Waits until this replica leads (see [`Controller::is_ready_leader`]).
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        jobforge_tests::wait_until(timeout, "the controller leads", || async {
            Ok(self.is_ready_leader().await || Instant::now() > deadline)
        })
        .await?;
        if !self.is_ready_leader().await {
            bail!("the controller did not lead within {timeout:?}");
        }
        Ok(())
    }

    /// The process ID (for `/proc` readings).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The process guard (to signal or stop it).
    pub fn process(&mut self) -> &mut ProcessGuard {
        &mut self.proc
    }
}

/// Resource use of a process from `/proc/<pid>/{status,stat}`.
#[derive(Debug, Clone, Copy)]
pub struct ProcUsage {
    /// Peak resident set (`VmHWM`), MB (10^6 bytes).
    pub peak_rss_mb: f64,
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
}

/// Reads [`ProcUsage`] of `pid`.
///
/// Errors: the process is gone or `/proc` is unreadable.
pub fn proc_usage(pid: u32) -> anyhow::Result<ProcUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15 (proc(5)).
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        rest.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))
    };
    let hz = clock_ticks_per_second();
    Ok(ProcUsage {
        peak_rss_mb: kb * 1024.0 / 1e6,
        cpu_s: (ticks(14)? + ticks(15)?) / hz,
    })
}

/// `getconf CLK_TCK` (USER_HZ, the unit of `/proc/<pid>/stat` times), 100 when unavailable
/// (its value on every mainstream Linux architecture).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}
