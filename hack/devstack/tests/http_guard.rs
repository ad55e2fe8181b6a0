//! What every emulator puts on the wire, read from a raw socket: header names in Go's canonical
//! form (`textproto.CanonicalMIMEHeaderKey`, as Consul, Nomad and Vault send them), and 403 for
//! requests a browser makes (an `Origin` header, a foreign `Host`).

use std::net::SocketAddr;
use std::time::Duration;

use jobforge_devstack::{DevStack, DevStackConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Go's `CanonicalMIMEHeaderKey` for a valid token: upper case first and after `-`, lower case
/// elsewhere.
fn go_canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Sends `request` and returns the status line and the header names, as bytes on the wire.
async fn raw(addr: SocketAddr, request: String) -> (String, Vec<String>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let names = lines
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_string()))
        .collect();
    (status, names)
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}Connection: close\r\n\r\n",
        addr.port()
    )
}

async fn stack() -> DevStack {
    DevStack::start(DevStackConfig::ephemeral())
        .await
        .expect("start dev stack")
}

#[tokio::test]
async fn every_emulator_writes_header_names_as_go_does() {
    let s = stack().await;
    let consul = s.consul_addr.expect("consul");
    let nomad = s.nomad_addr.expect("nomad");
    let vault = s.vault_addr.expect("vault");
    for (addr, path, extra, must) in [
        (
            consul,
            "/v1/kv/missing",
            "",
            &[
                "X-Consul-Index",
                "X-Consul-Knownleader",
                "X-Consul-Lastcontact",
            ][..],
        ),
        (
            consul,
            "/v1/status/leader",
            "",
            &["Content-Type", "X-Consul-Knownleader"][..],
        ),
        (
            nomad,
            "/v1/jobs",
            "",
            &["X-Nomad-Index", "X-Nomad-Knownleader", "Content-Type"][..],
        ),
        (
            vault,
            "/v1/secret/data/none",
            "X-Vault-Token: root\r\n",
            &["Content-Type"][..],
        ),
    ] {
        let (status, names) = raw(addr, get(addr, path, extra)).await;
        assert!(status.starts_with("HTTP/1.1 "), "{path}: {status}");
        for n in &names {
            assert_eq!(
                n,
                &go_canonical(n),
                "{path}: header {n:?} is not in Go's form"
            );
        }
        for m in must {
            assert!(names.iter().any(|n| n == m), "{path}: no {m} in {names:?}");
        }
    }
    s.shutdown().await;
}

#[tokio::test]
async fn browser_originated_requests_are_refused_by_every_emulator() {
    let s = stack().await;
    for (addr, path) in [
        (s.consul_addr.expect("consul"), "/v1/status/leader"),
        (s.nomad_addr.expect("nomad"), "/v1/jobs"),
        (s.vault_addr.expect("vault"), "/v1/sys/health"),
    ] {
        let (status, _) = raw(addr, get(addr, path, "Origin: http://evil.example\r\n")).await;
        assert!(
            status.starts_with("HTTP/1.1 403"),
            "{path} with Origin: {status}"
        );
        let rebound = format!(
            "GET {path} HTTP/1.1\r\nHost: rebind.example:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        );
        let (status, _) = raw(addr, rebound).await;
        assert!(
            status.starts_with("HTTP/1.1 403"),
            "{path} with a foreign Host: {status}"
        );
        // The same request from a client (no Origin, Host = the address) passes the guard.
        let (status, _) = raw(addr, get(addr, path, "")).await;
        assert!(!status.starts_with("HTTP/1.1 403"), "{path}: {status}");
        let local = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        );
        let (status, _) = raw(addr, local).await;
        assert!(
            !status.starts_with("HTTP/1.1 403"),
            "{path} via localhost: {status}"
        );
    }
    s.shutdown().await;
}

#[test]
fn go_canonical_form_matches_textproto_examples() {
    assert_eq!(go_canonical("x-consul-knownleader"), "X-Consul-Knownleader");
    assert_eq!(go_canonical("X-Consul-KnownLeader"), "X-Consul-Knownleader");
    assert_eq!(go_canonical("content-type"), "Content-Type");
}
