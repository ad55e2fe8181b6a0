//! A small Docker Engine API client (API version 1.41, which Docker 20.10 and podman's
//! compatibility service both serve): the calls Nomad's docker driver makes through its Docker
//! client (`drivers/docker/driver.go`, `handle.go`): ping and version (fingerprint), image
//! inspect and pull with `X-Registry-Auth`, container create/start/wait/inspect/logs/kill/stop/
//! remove, and a label-filtered list for cleanup.
//!
//! The address is a Docker host string, as Docker clients read `DOCKER_HOST`: `unix:///path`
//! or `tcp://host:port` (plain HTTP).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::config::{Auth, split_image};

/// The API version prefix of every call.
pub const API: &str = "/v1.41";

/// An engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `DOCKER_HOST` is not `unix://` or `tcp://`.
    #[error("unsupported docker host {0:?}: use unix:///path or tcp://host:port")]
    BadHost(String),
    /// Transport failure (engine down, socket missing).
    #[error("docker engine at {host} unreachable: {source}")]
    Transport {
        /// The engine address.
        host: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The engine answered with an error status (its `message`).
    #[error("docker engine: {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The engine's `message`.
        message: String,
    },
}

impl EngineError {
    /// Whether the engine said the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::Api { status: 404, .. })
    }
}

/// A Docker Engine API endpoint.
#[derive(Debug, Clone)]
pub struct Engine {
    host: String,
    base: String,
    http: reqwest::Client,
}

impl Engine {
    /// A client for `host` (`unix:///run/podman.sock`, `tcp://127.0.0.1:2375`).
    /// Errors: [`EngineError::BadHost`], or the HTTP client cannot be built.
    pub fn new(host: &str) -> Result<Engine, EngineError> {
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        let (builder, base) = if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(EngineError::BadHost(host.into()));
            }
            (
                builder.unix_socket(std::path::PathBuf::from(path)),
                "http://docker".to_string(),
            )
        } else if let Some(hp) = host.strip_prefix("tcp://") {
            (builder, format!("http://{}", hp.trim_end_matches('/')))
        } else {
            return Err(EngineError::BadHost(host.into()));
        };
        let http = builder.build().map_err(|e| EngineError::Transport {
            host: host.into(),
            source: e,
        })?;
        Ok(Engine {
            host: host.into(),
            base,
            http,
        })
    }

    /// The address this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API}{path}", self.base)
    }

    fn transport(&self, e: reqwest::Error) -> EngineError {
        EngineError::Transport {
            host: self.host.clone(),
            source: e,
        }
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, EngineError> {
        let status = resp.status();
        if status.is_success() || status.as_u16() == 304 {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        Err(EngineError::Api {
            status: status.as_u16(),
            message,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, EngineError> {
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        self.check(resp).await
    }

    /// `GET /version`: the engine's version string (the fingerprint's `driver.docker.version`).
    pub async fn version(&self) -> Result<String, EngineError> {
        let resp = self
            .send(
                self.http
                    .get(self.url("/version"))
                    .timeout(Duration::from_secs(5)),
            )
            .await?;
        let v: Value = resp.json().await.map_err(|e| self.transport(e))?;
        Ok(v["Version"].as_str().unwrap_or("unknown").to_string())
    }

    /// Whether `image` is present in the engine (`GET /images/{name}/json`).
    pub async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        let path = format!("/images/{}/json", encode_path(image));
        match self.send(self.http.get(self.url(&path))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /images/create?fromImage=&tag=` with `X-Registry-Auth` when `auth` is given. The
    /// engine streams JSON progress lines and reports a failed pull as an `error` line in a 200
    /// response; that line becomes the error.
    pub async fn pull(&self, image: &str, auth: Option<&Auth>) -> Result<(), EngineError> {
        let (repo, tag) = split_image(image);
        let mut req = self
            .http
            .post(self.url("/images/create"))
            .query(&[("fromImage", repo.as_str()), ("tag", tag.as_str())]);
        if let Some(a) = auth {
            let cfg = json!({
                "username": a.username, "password": a.password,
                "serveraddress": a.server_address, "email": a.email,
            });
            let header = base64::engine::general_purpose::URL_SAFE.encode(cfg.to_string());
            req = req.header("X-Registry-Auth", header);
        }
        let resp = self.send(req).await?;
        let body = resp.text().await.map_err(|e| self.transport(e))?;
        for line in body.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && let Some(err) = v["error"].as_str().or(v["errorDetail"]["message"].as_str())
            {
                return Err(EngineError::Api {
                    status: 500,
                    message: format!("failed to pull {image}: {err}"),
                });
            }
        }
        Ok(())
    }

    /// `POST /containers/create?name=`: the new container's ID.
    pub async fn create(&self, name: &str, body: &Value) -> Result<String, EngineError> {
        let resp = self
            .send(
                self.http
                    .post(self.url("/containers/create"))
                    .query(&[("name", name)])
                    .json(body),
            )
            .await?;
        let v: Value = resp.json().await.map_err(|e| self.transport(e))?;
        v["Id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| EngineError::Api {
                status: 500,
                message: format!("create answered without an Id: {v}"),
            })
    }

    /// `POST /containers/{id}/start`.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        let path = format!("/containers/{id}/start");
        self.send(self.http.post(self.url(&path))).await.map(|_| ())
    }

    /// `POST /containers/{id}/wait`: blocks until the container exits; its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64, EngineError> {
        let path = format!("/containers/{id}/wait");
        let resp = self.send(self.http.post(self.url(&path))).await?;
        let v: Value = resp.json().await.map_err(|e| self.transport(e))?;
        Ok(v["StatusCode"].as_i64().unwrap_or(-1))
    }

    /// Waits until the container has exited and returns its final `State` (from inspect).
    ///
    /// `POST /wait` (condition `not-running`) can return at once for a container the engine
    /// still shows as `created` right after start (podman's compat service does), so the wait
    /// is repeated until inspect shows a finished container, pausing 50 ms between rounds that
    /// returned without an exit.
    pub async fn wait_exit(&self, id: &str) -> Result<Value, EngineError> {
        loop {
            self.wait(id).await?;
            let v = self.inspect(id).await?;
            let state = &v["State"];
            let finished = matches!(
                state["Status"].as_str(),
                Some("exited" | "stopped" | "dead")
            ) || (state["Running"] == false
                && state["FinishedAt"]
                    .as_str()
                    .is_some_and(|f| !f.starts_with("0001-")));
            if finished {
                return Ok(state.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<Value, EngineError> {
        let path = format!("/containers/{id}/json");
        let resp = self.send(self.http.get(self.url(&path))).await?;
        resp.json().await.map_err(|e| self.transport(e))
    }

    /// `GET /containers/{id}/logs?follow=<0|1>&stdout=1&stderr=1`: the raw multiplexed stream
    /// (demultiplex with [`Demux`]); without `follow` the engine sends what it has and ends.
    pub async fn logs(
        &self,
        id: &str,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<Bytes, reqwest::Error>> + use<>, EngineError> {
        let path = format!("/containers/{id}/logs");
        let resp = self
            .send(self.http.get(self.url(&path)).query(&[
                ("follow", if follow { "1" } else { "0" }),
                ("stdout", "1"),
                ("stderr", "1"),
            ]))
            .await?;
        Ok(resp.bytes_stream())
    }

    /// Everything the engine kept of a container's output, demultiplexed: `(stdout, stderr)`.
    ///
    /// Errors: the request failed.
    pub async fn all_logs(&self, id: &str) -> Result<(Vec<u8>, Vec<u8>), EngineError> {
        let mut stream = Box::pin(self.logs(id, false).await?);
        let mut demux = Demux::default();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(e))?;
            for (s, payload) in demux.push(&chunk) {
                if s == 2 { &mut err } else { &mut out }.extend_from_slice(&payload);
            }
        }
        Ok((out, err))
    }

    /// `POST /containers/{id}/kill?signal=`.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let path = format!("/containers/{id}/kill");
        self.send(self.http.post(self.url(&path)).query(&[("signal", signal)]))
            .await
            .map(|_| ())
    }

    /// `DELETE /containers/{id}?force=1&v=1` (anonymous volumes go too). A missing container
    /// is not an error.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let path = format!("/containers/{id}");
        match self
            .send(
                self.http
                    .delete(self.url(&path))
                    .query(&[("force", "1"), ("v", "1")]),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /images/{name}`: removes an image no container uses. A missing image is not an
    /// error; an image still in use (409) is kept and reported.
    pub async fn remove_image(&self, image: &str) -> Result<(), EngineError> {
        let path = format!("/images/{}", encode_path(image));
        match self.send(self.http.delete(self.url(&path))).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// IDs of every container (running or not) with label `key=value`.
    pub async fn list_labelled(&self, key: &str, value: &str) -> Result<Vec<String>, EngineError> {
        let filters = json!({"label": [format!("{key}={value}")]}).to_string();
        let resp = self
            .send(
                self.http
                    .get(self.url("/containers/json"))
                    .query(&[("all", "1"), ("filters", filters.as_str())]),
            )
            .await?;
        let v: Value = resp.json().await.map_err(|e| self.transport(e))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Answers `GET /_ping` on a blocking socket within `timeout`: the fingerprint at start-up,
/// before any async runtime is needed. `Some(version)` when the engine answers.
pub fn probe_blocking(host: &str, timeout: Duration) -> Option<String> {
    use std::io::{Read, Write};
    let req = format!("GET {API}/version HTTP/1.0\r\nHost: docker\r\n\r\n");
    let mut buf = Vec::new();
    if let Some(path) = host.strip_prefix("unix://") {
        let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.set_write_timeout(Some(timeout)).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        s.read_to_end(&mut buf).ok()?;
    } else if let Some(hp) = host.strip_prefix("tcp://") {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(hp).ok()?.next()?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        s.read_to_end(&mut buf).ok()?;
    } else {
        return None;
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || head.split(' ').nth(1) != Some("200") {
        return None;
    }
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    Some(v["Version"].as_str().unwrap_or("unknown").to_string())
}

fn encode_path(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Demultiplexes Docker's attach/logs stream for a container without a TTY: frames of
/// `[stream, 0, 0, 0, len (u32 big-endian)]` + `len` bytes; stream 1 = stdout, 2 = stderr.
#[derive(Debug, Default)]
pub struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    /// Feeds `chunk`; returns the complete frames as `(stream, payload)`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(u8, Vec<u8>)> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            if self.buf.len() < 8 {
                break;
            }
            let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if self.buf.len() - 8 < len {
                break;
            }
            let stream = self.buf[0];
            let payload = self.buf[8..8 + len].to_vec();
            self.buf.drain(..8 + len);
            out.push((stream, payload));
        }
        out
    }
}

/// Copies a logs stream into two writers (stdout, stderr) until it ends.
/// Copies a followed log stream into `stdout`/`stderr` until it ends; returns how many bytes
/// of each it wrote, or `None` when a write failed.
pub async fn pump_logs<S, W>(mut stream: S, mut stdout: W, mut stderr: W) -> Option<(usize, usize)>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut demux = Demux::default();
    let (mut n_out, mut n_err) = (0, 0);
    while let Some(Ok(chunk)) = stream.next().await {
        for (s, payload) in demux.push(&chunk) {
            let (w, n) = if s == 2 {
                (&mut stderr, &mut n_err)
            } else {
                (&mut stdout, &mut n_out)
            };
            if w.write_all(&payload).await.is_err() {
                return None;
            }
            *n += payload.len();
        }
    }
    let _ = stdout.shutdown().await;
    let _ = stderr.shutdown().await;
    Some((n_out, n_err))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn hosts_are_docker_host_strings() {
        assert!(Engine::new("unix:///run/x.sock").is_ok());
        assert!(Engine::new("tcp://127.0.0.1:2375").is_ok());
        assert!(matches!(
            Engine::new("/run/x.sock"),
            Err(EngineError::BadHost(_))
        ));
        assert_eq!(
            probe_blocking("unix:///nonexistent/x.sock", Duration::from_millis(100)),
            None
        );
    }

    proptest! {
        #[test]
        fn demux_reassembles_frames_split_anywhere(
            frames in proptest::collection::vec((1u8..=2, proptest::collection::vec(any::<u8>(), 0..50)), 0..8),
            cut in 1usize..17,
        ) {
            let wire: Vec<u8> = frames.iter().flat_map(|(s, d)| frame(*s, d)).collect();
            let mut d = Demux::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                got.extend(d.push(chunk));
            }
            prop_assert_eq!(got, frames);
        }
    }
}
