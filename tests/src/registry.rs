//! A local OCI registry for builds to publish to.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

use crate::env::free_port;
use crate::process::ProcessGuard;
use crate::wait::wait_http_ok;

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
        Registry::start_inner(None).await
    }

    /// Like [`Registry::start`], but every request, reads included, needs HTTP basic auth as
    /// `user`/`password` (distribution's `auth.htpasswd`, bcrypt file made with `htpasswd -B`
    /// from apache2-utils); `/v2/` answers 401 without it, so readiness is awaited by TCP.
    ///
    /// Errors: `htpasswd` or `docker-registry` missing (run hack/prereqs.sh), or no answer.
    pub async fn start_with_htpasswd(user: &str, password: &str) -> anyhow::Result<Registry> {
        Registry::start_inner(Some((user, password))).await
    }

    async fn start_inner(basic: Option<(&str, &str)>) -> anyhow::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        let mut auth = String::new();
        if let Some((user, password)) = basic {
            let out = std::process::Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("htpasswd is not installed: run hack/prereqs.sh (apache2-utils)")?;
            anyhow::ensure!(out.status.success(), "htpasswd failed: {out:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout)?;
            auth = format!(
                "auth:\n  htpasswd: {{realm: jobforge-test, path: {}}}\n",
                file.display()
            );
        }
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: {addr}}}\n{auth}",
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
        if let Some((user, password)) = basic {
            let url = format!("http://{addr}/v2/");
            let client = reqwest::Client::new();
            crate::wait::wait_until(Duration::from_secs(10), "the registry answers /v2/", || {
                let req = client.get(&url).basic_auth(user, Some(password));
                async move { Ok(req.send().await.is_ok_and(|r| r.status().is_success())) }
            })
            .await?;
        } else {
            let url = format!("http://{addr}/v2/");
            wait_http_ok(&url, Duration::from_secs(10), "the registry answers /v2/").await?;
        }
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
