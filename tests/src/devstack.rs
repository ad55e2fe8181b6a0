//! The dev stack (`jobforge-devstack`) as a process a test owns.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::env::{bin, workspace_root};
use crate::kv::Kv;
use crate::process::ProcessGuard;
use crate::wait::wait_until;

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
    /// Enforce Consul ACLs with this initial management token (`--consul-acl-initial-management`).
    pub consul_acl_initial_management: Option<String>,
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
        if let Some(t) = &opts.consul_acl_initial_management {
            cmd.arg("--consul-acl-initial-management").arg(t);
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
        let stack = DevStackProcess {
            consul: field("consul")?,
            nomad: field("nomad")?,
            vault: field("vault")?,
            proc,
            _dir: dir,
            _tmp: tmp,
        };
        // Vault enforces ACLs: load the shipped policies tasks and the controller use.
        if !stack.vault.is_empty() {
            let root = opts
                .env
                .iter()
                .find(|(k, _)| k == "VAULT_DEV_ROOT_TOKEN_ID")
                .map_or(crate::vault_policies::ROOT_TOKEN, |(_, v)| v.as_str());
            crate::vault_policies::install_shipped_policies_blocking(&stack.vault, root)?;
        }
        Ok(stack)
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

    /// Waits (blocking queries, `timeout` overall) until the status of `namespace/name` is
    /// terminal (`Succeeded`, `Failed` or `Cancelled`) and returns it.
    ///
    /// Errors: the timeout, with the last status seen.
    pub async fn wait_terminal(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        self.kv()
            .wait_json(
                &format!("jobforge/status/{namespace}/{name}"),
                timeout,
                |v| {
                    matches!(
                        v["phase"].as_str(),
                        Some("Succeeded" | "Failed" | "Cancelled")
                    )
                },
            )
            .await
    }

    /// What `jobforge logs NAME --phase PHASE` prints against this stack (stdout then stderr), as
    /// a user reads it through the CLI (KV only).
    pub fn cli_logs(&self, name: &str, phase: &str) -> String {
        let out = bin("jobforge").and_then(|b| {
            std::process::Command::new(b)
                .args(["logs", name, "--phase", phase])
                .envs(self.env())
                .output()
                .context("running jobforge logs")
        });
        match out {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(jobforge logs failed: {e:#})"),
        }
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

    /// Every value stored under `jobforge/` in this stack's Consul KV (specs, status, log tails,
    /// history, outbox), decoded: `(key, bytes)`, for tests that grep for what must not be there.
    ///
    /// Errors: Consul does not answer or answers something that is not a KV listing.
    pub async fn kv_values(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        use base64::Engine as _;
        let kv: serde_json::Value =
            reqwest::get(format!("{}/v1/kv/jobforge/?recurse=true", self.consul))
                .await?
                .error_for_status()?
                .json()
                .await?;
        let entries = kv.as_array().context("a KV listing is an array")?;
        Ok(entries
            .iter()
            .map(|e| {
                let raw = e["Value"].as_str().unwrap_or_default();
                let value = base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .unwrap_or_default();
                (e["Key"].as_str().unwrap_or_default().to_string(), value)
            })
            .collect())
    }

    /// The JSON text of every Nomad job whose ID starts with `prefix`, as `GET /v1/job/<id>`
    /// answers it: `(job ID, text)`, for greps of what a job spec must not hold. A job purged
    /// between the listing and its read is left out.
    ///
    /// Errors: Nomad does not answer.
    pub async fn job_specs(&self, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
        let client = reqwest::Client::new();
        let jobs: serde_json::Value = client
            .get(format!("{}/v1/jobs?prefix={prefix}", self.nomad))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut out = Vec::new();
        for j in jobs.as_array().context("a job listing is an array")? {
            let id = j["ID"].as_str().context("a listed job has an ID")?;
            let r = client
                .get(format!("{}/v1/job/{id}", self.nomad))
                .send()
                .await?;
            // Purged between the listing and this read (the controller purges finished jobs):
            // there is nothing left to grep.
            if r.status() == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            out.push((id.to_string(), r.error_for_status()?.text().await?));
        }
        Ok(out)
    }

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
