//! The container engine of the Nomad `docker` driver in tests: `hack/docker-engine.sh serve`
//! (podman's Docker Engine API service with runc, own storage in a temp dir) in a session of its
//! own, and the images the docker profile and the driver's conformance tests need, built from
//! Debian's packages and cached under `target/docker-images/`.
//!
//! Dropping a [`DockerEngine`] kills the service and removes every container, volume and image
//! of its storage (`hack/docker-engine.sh clean`), also when the test failed.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{ProcessGuard, wait_until, workspace_root};

/// A running engine (`unix://<state>/engine.sock`).
pub struct DockerEngine {
    /// `unix:///…/engine.sock`, the `DOCKER_HOST` of the dev stack.
    pub host: String,
    socket: std::path::PathBuf,
    state: tempfile::TempDir,
    proc: Option<ProcessGuard>,
}

fn script() -> std::path::PathBuf {
    workspace_root().join("hack/docker-engine.sh")
}

impl DockerEngine {
    /// Starts the engine, trusting the plain-HTTP registries `insecure` (`127.0.0.1:5000`), and
    /// waits until `/_ping` answers (30 s).
    ///
    /// Errors: podman/runc missing (run `hack/prereqs.sh`) or the service not answering; the
    /// message carries the service's output.
    pub async fn start(insecure: &[&str]) -> anyhow::Result<DockerEngine> {
        let state = tempfile::Builder::new()
            .prefix("jobforge-engine-")
            .tempdir()
            .context("creating the engine's state dir")?;
        let log = state.path().join("service.log");
        let mut cmd = ProcessGuard::command(script());
        cmd.arg("serve").arg("--state").arg(state.path());
        for r in insecure {
            cmd.arg("--insecure-registry").arg(r);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(state.path().join("service.err"))?);
        let proc = ProcessGuard::spawn("podman system service", cmd)?;
        let socket = state.path().join("engine.sock");
        let engine = DockerEngine {
            host: format!("unix://{}", socket.display()),
            socket: socket.clone(),
            state,
            proc: Some(proc),
        };
        let client = engine.client()?;
        let ready = wait_until(Duration::from_secs(30), "the engine answers /_ping", || {
            let client = client.clone();
            async move {
                Ok(client
                    .get("http://docker/_ping")
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()))
            }
        })
        .await;
        if let Err(e) = ready {
            let err = std::fs::read_to_string(engine.state.path().join("service.err"))
                .unwrap_or_default();
            bail!("{e}; podman system service said:\n{err}");
        }
        Ok(engine)
    }

    fn client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .unix_socket(self.socket.clone())
            .timeout(Duration::from_secs(60))
            .build()?)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let v = self
            .client()?
            .get(format!("http://docker/v1.41{path}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v)
    }

    /// Every container of the engine, running or not (`GET /containers/json?all=1`).
    pub async fn containers(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .get("/containers/json?all=1")
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every image in the engine (`GET /images/json`).
    pub async fn images(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .get("/images/json")
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every volume of the engine.
    pub async fn volumes(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.get("/volumes").await?["Volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Runs a container to its end directly through the engine (not through Nomad) and returns
    /// its final `State` (for probing what this machine's engine reports, e.g. `OOMKilled`).
    /// The container is removed afterwards.
    pub async fn run_direct(&self, body: &Value) -> anyhow::Result<Value> {
        let c = self.client()?;
        let base = "http://docker/v1.41";
        let created: Value = c
            .post(format!("{base}/containers/create"))
            .json(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = created["Id"].as_str().context("no Id")?.to_string();
        let started = c
            .post(format!("{base}/containers/{id}/start"))
            .send()
            .await?;
        let state = if started.status().is_success() {
            // `wait` may return at once while the engine still shows the container `created`.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                c.post(format!("{base}/containers/{id}/wait"))
                    .send()
                    .await?;
                let v: Value = c
                    .get(format!("{base}/containers/{id}/json"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if v["State"]["Status"] == "exited" || std::time::Instant::now() > deadline {
                    break Ok(v["State"].clone());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            Err(anyhow::anyhow!(
                "start failed: {}",
                started.text().await.unwrap_or_default()
            ))
        };
        let _ = c
            .delete(format!("{base}/containers/{id}?force=1&v=1"))
            .send()
            .await;
        state
    }

    /// Pulls `image` into the engine (`POST /images/create`). Errors: the pull failed.
    pub async fn pull(&self, image: &str) -> anyhow::Result<()> {
        let (repo, tag) = image.rsplit_once(':').context("image without tag")?;
        let text = self
            .client()?
            .post("http://docker/v1.41/images/create")
            .query(&[("fromImage", repo), ("tag", tag)])
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        if text.contains("\"error\"") {
            bail!("pull of {image} failed: {text}");
        }
        Ok(())
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        let _ = Command::new(script())
            .arg("clean")
            .arg("--state")
            .arg(self.state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn script_output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(script())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running hack/docker-engine.sh {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("hack/docker-engine.sh {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The docker profile's tool image (buildah, skopeo, git, ca-certificates on Debian bookworm),
/// built once per recipe (debootstrap; minutes) and pushed to `registry`; its reference.
pub fn tool_image(registry: &str) -> anyhow::Result<String> {
    script_output(&["images", "--registry", registry])
}

/// A busybox image (Debian's busybox-static) pushed to `registry`; its reference.
pub fn busybox_image(registry: &str) -> anyhow::Result<String> {
    script_output(&["busybox", "--registry", registry])
}

/// The Debian bookworm base image made here (`hack/docker-engine.sh debian-base`: debootstrap
/// once per recipe, about a minute to three, then cached), pushed to
/// `registry/library/debian:bookworm-slim`; its reference.
pub fn debian_base_image(registry: &str) -> anyhow::Result<String> {
    script_output(&["debian-base", "--registry", registry])
}
