//! A fault-injecting HTTP reverse proxy for tests, placed between the controller and an emulator
//! (the controller gets the proxy's address in `CONSUL_HTTP_ADDR` / `NOMAD_ADDR`).
//!
//! Bodies stream both ways, so blocking queries, log streams and the Nomad event stream pass
//! through unchanged. Faults are set at runtime through [`Faults`] (shared by every clone):
//!
//! - [`Faults::set_error_rate`]: that fraction of requests (0.0–1.0) is answered `500` with a
//!   plain-text body (`fault-proxy: injected error`) without reaching the upstream, as Nomad and
//!   Consul answer their errors (plain text).
//! - [`Faults::set_latency`]: every request waits a uniformly random delay in the range (ms)
//!   before it is forwarded.
//! - [`Faults::set_down`]: while down, new connections are accepted and closed at once (the client
//!   sees a reset / empty reply), and every open connection — including blocking queries in flight —
//!   is closed immediately, as when the process behind it dies. The upstream keeps running, so tasks
//!   it runs survive, as on a real cluster behind a network partition.
//!
//! The proxy stops when dropped.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

/// Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// The runtime fault settings of a [`FaultProxy`] and its counters; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<FaultsInner>);

#[derive(Debug, Default)]
struct FaultsInner {
    /// Error rate in parts per million.
    error_ppm: AtomicU64,
    latency_min_ms: AtomicU64,
    latency_max_ms: AtomicU64,
    down: AtomicBool,
    /// Bumped on every change of `down` to wake connections.
    down_tx: Option<tokio::sync::watch::Sender<bool>>,
    requests: AtomicU64,
    injected_errors: AtomicU64,
    refused_connections: AtomicU64,
}

impl Faults {
    fn new() -> Faults {
        let (tx, _) = tokio::sync::watch::channel(false);
        Faults(Arc::new(FaultsInner {
            down_tx: Some(tx),
            ..FaultsInner::default()
        }))
    }

    /// Answers `500` (plain text) to `rate` of requests (clamped to 0.0–1.0; 0 turns it off).
    pub fn set_error_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.0.error_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Delays every request by a uniformly random time in `range_ms` (milliseconds; an empty range
    /// such as `0..0` turns it off).
    pub fn set_latency(&self, range_ms: Range<u64>) {
        self.0
            .latency_min_ms
            .store(range_ms.start, Ordering::Relaxed);
        self.0.latency_max_ms.store(range_ms.end, Ordering::Relaxed);
    }

    /// Takes the upstream "down" (closes open connections, refuses new ones) or back up.
    pub fn set_down(&self, down: bool) {
        self.0.down.store(down, Ordering::SeqCst);
        if let Some(tx) = &self.0.down_tx {
            tx.send_replace(down);
        }
    }

    /// Whether the proxy is down.
    pub fn is_down(&self) -> bool {
        self.0.down.load(Ordering::SeqCst)
    }

    /// Requests received (including the ones answered with an injected error).
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with an injected `500`.
    pub fn injected_errors(&self) -> u64 {
        self.0.injected_errors.load(Ordering::Relaxed)
    }

    /// Connections closed at accept because the proxy was down.
    pub fn refused_connections(&self) -> u64 {
        self.0.refused_connections.load(Ordering::Relaxed)
    }

    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.0.down_tx.as_ref().map(|tx| tx.subscribe())
    }

    fn should_fail(&self) -> bool {
        let ppm = self.0.error_ppm.load(Ordering::Relaxed);
        ppm > 0 && rand::random_range(0..1_000_000u64) < ppm
    }

    fn delay(&self) -> Duration {
        let lo = self.0.latency_min_ms.load(Ordering::Relaxed);
        let hi = self.0.latency_max_ms.load(Ordering::Relaxed);
        if hi <= lo {
            return Duration::from_millis(lo);
        }
        Duration::from_millis(rand::random_range(lo..hi))
    }
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    faults: Faults,
    http: reqwest::Client,
}

/// A running fault-injecting reverse proxy on a free loopback port; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>` of the proxy.
    pub url: String,
    /// The proxy's socket address.
    pub addr: SocketAddr,
    faults: Faults,
    cancel: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://host:port`, no trailing slash) with no
    /// faults set.
    ///
    /// Errors: binding the loopback port; building the HTTP client.
    pub async fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fault proxy")?;
        let addr = listener.local_addr()?;
        let faults = Faults::new();
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            faults: faults.clone(),
            // No timeout: blocking queries last minutes. No pool reuse across "down" matters,
            // since the upstream itself never goes away.
            http: reqwest::Client::builder()
                .build()
                .context("building the proxy client")?,
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let cancel = CancellationToken::new();
        tokio::spawn(accept_loop(listener, app, faults.clone(), cancel.clone()));
        Ok(FaultProxy {
            url: format!("http://{addr}"),
            addr,
            faults,
            cancel,
        })
    }

    /// The fault settings (clone it to change faults from another task).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// `127.0.0.1:<port>` (the form `CONSUL_HTTP_ADDR` takes).
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    faults: Faults,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((sock, _)) = accepted else {
            continue;
        };
        if faults.is_down() {
            faults.0.refused_connections.fetch_add(1, Ordering::Relaxed);
            // Closed before a byte is read: the client sees an empty reply or a reset.
            drop(sock);
            continue;
        }
        let Some(mut down) = faults.subscribe() else {
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), service);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
                // Dropping the connection future closes the socket mid-request.
                _ = down.wait_for(|d| *d) => {}
            }
        });
    }
}

async fn forward(State(s): State<ProxyState>, req: Request) -> Response {
    s.faults.0.requests.fetch_add(1, Ordering::Relaxed);
    let delay = s.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if s.faults.should_fail() {
        s.faults.0.injected_errors.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain; charset=utf-8")],
            "fault-proxy: injected error\n",
        )
            .into_response();
    }
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = s
        .http
        .request(parts.method.clone(), format!("{}{path}", s.upstream))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                [("content-type", "text/plain; charset=utf-8")],
                format!("fault-proxy: upstream unreachable: {e}\n"),
            )
                .into_response();
        }
    };
    let mut builder = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !is_hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    builder.body(Body::from_stream(stream)).unwrap_or_else(|e| {
        (
            StatusCode::BAD_GATEWAY,
            format!("fault-proxy: bad upstream answer: {e}\n"),
        )
            .into_response()
    })
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// `haystack` with every `from` replaced by `to` (for the raw TCP proxies of watch tests, which
/// rewrite the `Host`/address bytes passing through them). An empty `from` copies `haystack`.
pub fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn upstream() -> (String, CancellationToken) {
        let app = axum::Router::new()
            .route("/echo", axum::routing::put(|b: String| async move { b }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await;
        });
        (url, cancel)
    }

    #[tokio::test]
    async fn forwards_bodies_and_injects_the_configured_faults() {
        let (up, stop) = upstream().await;
        let p = FaultProxy::start(&up).await.unwrap();
        let c = reqwest::Client::new();
        let r = c
            .put(format!("{}/echo", p.url))
            .body("hi")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "hi");

        p.faults().set_error_rate(1.0);
        let r = c
            .put(format!("{}/echo", p.url))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        assert!(r.text().await.unwrap().contains("injected"));
        p.faults().set_error_rate(0.0);

        p.faults().set_latency(150..151);
        let t = std::time::Instant::now();
        c.put(format!("{}/echo", p.url))
            .body("x")
            .send()
            .await
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        p.faults().set_latency(0..0);

        // A request in flight is cut when the proxy goes down; new ones are refused.
        let slow = tokio::spawn({
            let c = c.clone();
            let url = format!("{}/slow", p.url);
            async move { c.get(url).send().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.faults().set_down(true);
        let cut = tokio::time::timeout(Duration::from_secs(5), slow)
            .await
            .expect("cut at once")
            .unwrap();
        assert!(cut.is_err(), "{cut:?}");
        let fresh = reqwest::Client::new();
        assert!(
            fresh
                .put(format!("{}/echo", p.url))
                .body("x")
                .send()
                .await
                .is_err()
        );
        p.faults().set_down(false);
        let r = fresh
            .put(format!("{}/echo", p.url))
            .body("ok")
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "ok");
        assert_eq!(p.faults().injected_errors(), 1);
        stop.cancel();
    }

    #[test]
    fn replace_bytes_replaces_every_occurrence() {
        assert_eq!(replace_bytes(b"a:1 b:1", b":1", b":22"), b"a:22 b:22");
        assert_eq!(replace_bytes(b"abc", b"", b"x"), b"abc");
        assert_eq!(replace_bytes(b"aaa", b"aa", b"b"), b"ba");
    }
}
