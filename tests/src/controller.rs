//! The controller (`jobforge-controller`) as a process a test owns.

use std::process::Stdio;
use std::time::Duration;

use crate::devstack::DevStackProcess;
use crate::env::{bin, free_port};
use crate::process::ProcessGuard;
use crate::wait::{wait_http_ok, wait_until};

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
        ControllerProcess::start_env_stderr(env, extra, Stdio::inherit()).await
    }

    /// Like [`ControllerProcess::start`], with the controller's log (its stderr) written to the
    /// file `log` instead of the test's stderr, for tests that read what it logged.
    ///
    /// Errors: the file cannot be created; the controller does not start.
    pub async fn start_logged(
        stack: &DevStackProcess,
        extra: &[&str],
        log: &std::path::Path,
    ) -> anyhow::Result<ControllerProcess> {
        let file = std::fs::File::create(log)?;
        ControllerProcess::start_env_stderr(stack.env(), extra, Stdio::from(file)).await
    }

    async fn start_env_stderr(
        env: Vec<(String, String)>,
        extra: &[&str],
        stderr: Stdio,
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
            .stderr(stderr);
        let proc = ProcessGuard::spawn("jobforge-controller", cmd)?;
        let url = format!("{http}/healthz");
        wait_http_ok(
            &url,
            Duration::from_secs(20),
            "the controller answers /healthz",
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
