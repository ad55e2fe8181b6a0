//! The HTTP server every emulator runs on: Go's header spelling on the wire, and a guard against
//! requests a web browser makes.
//!
//! **Header names.** Consul, Nomad and Vault set headers through Go's `http.Header.Set`, which
//! stores the key in `textproto.CanonicalMIMEHeaderKey` form — the first letter and every letter
//! after a `-` upper case, the rest lower case — and `net/http` writes the stored key as is. So
//! `resp.Header().Set("X-Consul-KnownLeader", …)` (`setKnownLeader`, `agent/http.go`) goes on the
//! wire as `X-Consul-Knownleader`, likewise `X-Consul-Lastcontact`, `X-Nomad-Knownleader`,
//! `Content-Type`. hyper's HTTP/1 `title_case_headers` writes exactly that form for the
//! lower-case names `http::HeaderName` holds (upper case at the start and after each `-`), so
//! the emulators serve HTTP/1.1 (as a Go server without TLS does) with it on.
//!
//! **Browser guard.** A web page can make a browser send requests to loopback (a form POST to
//! `http://127.0.0.1:4646/v1/jobs` would run a `raw_exec` task), and DNS rebinding lets a page on
//! an attacker's name read the answers. The real servers rely on ACLs and TLS for this; the dev
//! stack runs without either by default, so it refuses, with 403 and a plain-text reason:
//! - any request with an `Origin` header (browsers send it on every cross-origin request and on
//!   every POST; no HashiCorp client or jobforge client sends it);
//! - any request whose `Host` is not the bound address (`127.0.0.1:<port>`, `[::1]:<port>`) or
//!   `localhost:<port>`; when bound to an unspecified address (`0.0.0.0`), any IP literal with
//!   the port. A rebinding page's requests carry its own host name, never an IP literal.
//!
//! Binding a non-loopback address logs a warning: the emulators have no authentication unless
//! Consul ACLs are enabled.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a request was refused, or `None` to let it through.
///
/// `bound` is the listener's address; see the module docs for the rules.
pub fn refusal(bound: SocketAddr, origin: bool, host: Option<&str>) -> Option<&'static str> {
    if origin {
        return Some(
            "jobforge-devstack: refusing a browser-originated request (it has an Origin header)",
        );
    }
    let Some(host) = host else {
        return Some("jobforge-devstack: refusing a request without a Host header");
    };
    if host_allowed(bound, host) {
        None
    } else {
        Some(
            "jobforge-devstack: refusing a request whose Host is not this emulator's address \
             (DNS rebinding guard); use http://<bound address> or http://localhost:<port>",
        )
    }
}

fn host_allowed(bound: SocketAddr, host: &str) -> bool {
    let Some((name, port)) = host.rsplit_once(':') else {
        return false;
    };
    if port.parse::<u16>().ok() != Some(bound.port()) {
        return false;
    }
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match literal.parse::<IpAddr>() {
        Ok(ip) => ip == bound.ip() || bound.ip().is_unspecified(),
        Err(_) => false,
    }
}

/// Middleware applying [`refusal`] with the listener's address as state.
async fn guard(State(bound): State<SocketAddr>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match refusal(bound, headers.contains_key(header::ORIGIN), host.as_deref()) {
        None => next.run(req).await,
        Some(why) => (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            why,
        )
            .into_response(),
    }
}

/// Binds `addr` and serves `router` (guarded, Go header spelling, `TCP_NODELAY`) until `cancel`;
/// then stops accepting, lets every connection finish its request in flight, and ends.
/// Returns the bound address and the server task.
///
/// Errors: the bind failed (address in use, permission).
pub async fn serve(
    addr: SocketAddr,
    router: axum::Router,
    cancel: CancellationToken,
    what: &'static str,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} emulator to {addr}"))?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "the {what} emulator listens on {bound}, not on loopback: anyone who can reach it \
             can use it (the emulators have no authentication unless Consul ACLs are enabled)"
        );
    }
    let app = router.layer(axum::middleware::from_fn_with_state(bound, guard));
    let h = tokio::spawn(accept_loop(listener, app, cancel, what));
    Ok((bound, h))
}

async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    cancel: CancellationToken,
    what: &'static str,
) {
    let conns = TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, as axum::serve does.
                    tracing::debug!(error = %e, "{what} emulator: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Go's net/http sets TCP_NODELAY on every connection; without it, a streamed (chunked)
        // answer's last chunk waits for the client's delayed ACK (~40 ms on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let svc = TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        conns.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.title_case_headers(true);
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "{what} emulator: connection ended");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn loopback_address_and_localhost_pass() {
        assert_eq!(refusal(v4(8500), false, Some("127.0.0.1:8500")), None);
        assert_eq!(refusal(v4(8500), false, Some("localhost:8500")), None);
        assert_eq!(refusal(v4(8500), false, Some("LOCALHOST:8500")), None);
        let v6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 8500));
        assert_eq!(refusal(v6, false, Some("[::1]:8500")), None);
    }

    #[test]
    fn origin_other_hosts_and_ports_are_refused() {
        assert!(refusal(v4(8500), true, Some("127.0.0.1:8500")).is_some());
        assert!(refusal(v4(8500), false, Some("evil.example:8500")).is_some());
        assert!(refusal(v4(8500), false, Some("127.0.0.1:8501")).is_some());
        assert!(refusal(v4(8500), false, Some("127.0.0.2:8500")).is_some());
        assert!(refusal(v4(8500), false, Some("127.0.0.1")).is_some());
        assert!(refusal(v4(8500), false, None).is_some());
    }

    #[test]
    fn unspecified_bind_accepts_any_ip_literal_but_no_names() {
        let any = SocketAddr::from(([0, 0, 0, 0], 4646));
        assert_eq!(refusal(any, false, Some("10.1.2.3:4646")), None);
        assert!(refusal(any, false, Some("rebind.example:4646")).is_some());
    }
}
