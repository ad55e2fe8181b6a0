//! `jobforge mcp` checked with the official MCP Python SDK (`tests/python/mcp_client.py`, run by
//! the interpreter in `JOBFORGE_TEST_PYTHON`) over streamable HTTP and stdio, plus the HTTP
//! guards: Host/Origin validation, the bearer token on non-loopback binds, `/healthz`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Consul;

fn python() -> String {
    std::env::var("JOBFORGE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "set JOBFORGE_TEST_PYTHON to a Python with the `mcp` package \
             (hack/test.sh sets it to /work/main/target/pyvenv/bin/python)"
        )
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/mcp_client.py")
}

/// A running `jobforge mcp --http`; killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(consul: &str, bind: &str, token: Option<&str>) -> Server {
    start_server_with(consul, bind, token, &[])
}

fn start_server_with(consul: &str, bind: &str, token: Option<&str>, extra: &[&str]) -> Server {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("jobforge"));
    cmd.env_clear()
        .env("CONSUL_HTTP_ADDR", consul)
        .args(["mcp", "--http", bind])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("JOBFORGE_MCP_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut server = Server {
        child,
        addr: String::new(),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("mcp server did not report its address");
        if let Some(rest) = line.strip_prefix("jobforge mcp listening on http://") {
            let hostport = rest.trim_end_matches("/mcp");
            let port = hostport.rsplit(':').next().unwrap();
            server.addr = format!("127.0.0.1:{port}");
            return server;
        }
    }
}

/// One raw HTTP/1.1 request; returns the status code.
fn http_status(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[9..12]).parse().unwrap()
}

/// One raw HTTP/1.1 request; returns the status code and the response head (lower-case names).
fn http_head(addr: &str, method: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let code = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, head)
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const MCP_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

fn run_python(args: &[&str]) {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "python MCP client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_sdk_drives_every_tool_over_streamable_http() {
    let c = Consul::start();
    let s = start_server(&c.addr, "127.0.0.1:0", None);
    run_python(&["http", &format!("http://{}/mcp", s.addr)]);
}

#[test]
fn session_termination_answers_200_as_the_sdks_expect() {
    let c = Consul::start();
    let s = start_server(&c.addr, "127.0.0.1:0", None);
    let (code, head) = http_head(&s.addr, "POST", &MCP_HEADERS, INIT);
    assert_eq!(code, 200, "{head}");
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id:"))
        .expect("no Mcp-Session-Id")
        .trim()
        .to_string();
    let (code, head) = http_head(&s.addr, "DELETE", &[("Mcp-Session-Id", &session)], "");
    assert_eq!(code, 200, "{head}");
}

#[test]
fn python_sdk_drives_every_tool_over_stdio() {
    let c = Consul::start();
    let bin = assert_cmd::cargo::cargo_bin("jobforge");
    run_python(&["stdio", bin.to_str().unwrap(), &c.addr]);
}

#[test]
fn foreign_origin_and_host_are_refused_and_healthz_answers() {
    let c = Consul::start();
    let s = start_server(&c.addr, "127.0.0.1:0", None);
    assert_eq!(http_status(&s.addr, "GET", "/healthz", &[], ""), 200);
    assert_eq!(
        http_status(&s.addr, "POST", "/mcp", &MCP_HEADERS, INIT),
        200
    );
    let mut h = MCP_HEADERS.to_vec();
    h.push(("Origin", "https://evil.example"));
    let code = http_status(&s.addr, "POST", "/mcp", &h, INIT);
    assert_eq!(code, 403, "foreign Origin must be refused");
    let mut h = MCP_HEADERS.to_vec();
    h.push(("Host", "evil.example"));
    let code = http_status(&s.addr, "POST", "/mcp", &h, INIT);
    assert!(
        (400..500).contains(&code),
        "foreign Host must be refused, got {code}"
    );
}

#[test]
fn non_loopback_bind_requires_a_token_and_answers_401_without_it() {
    let c = Consul::start();
    let out = Command::new(assert_cmd::cargo::cargo_bin("jobforge"))
        .env_clear()
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .args(["mcp", "--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JOBFORGE_MCP_TOKEN"));

    let s = start_server(&c.addr, "0.0.0.0:0", Some("s3cret-token"));
    assert_eq!(
        http_status(&s.addr, "POST", "/mcp", &MCP_HEADERS, INIT),
        401
    );
    let mut h = MCP_HEADERS.to_vec();
    h.push(("Authorization", "Bearer wrong"));
    assert_eq!(http_status(&s.addr, "POST", "/mcp", &h, INIT), 401);
    let mut h = MCP_HEADERS.to_vec();
    h.push(("Authorization", "Bearer s3cret-token"));
    assert_eq!(http_status(&s.addr, "POST", "/mcp", &h, INIT), 200);
    run_python(&[
        "http",
        &format!("http://{}/mcp", s.addr),
        "--token",
        "s3cret-token",
    ]);
}

const TOKEN_A: &str = "team-a-token-0123456789";
const TOKEN_B: &str = "team-b-token-0123456789";

/// Issue 14: over HTTP each bearer token of `--tokens-file` has its own namespaces; as team A
/// every call naming team-b is a tool error naming it and the allowed namespace, lists hold only
/// team-a and are paged, and `cleanup` of `../../../jobforge/leader` is a tool error that leaves
/// the leader key alone (checked by the Python SDK, `tests/python/mcp_client.py scope-http`).
#[test]
fn tokens_file_scopes_each_bearer_token_to_its_namespaces() {
    let c = Consul::start();
    c.put("jobforge/leader", b"{\"identity\": \"someone\"}");
    let dir = tempfile::tempdir().unwrap();
    let tokens = common::write(
        dir.path(),
        "tokens.yaml",
        &format!(
            "tokens:\n  - token: {TOKEN_A}\n    namespaces: [team-a]\n  - token: {TOKEN_B}\n    namespaces: [team-b]\n"
        ),
    );
    let s = start_server_with(
        &c.addr,
        "127.0.0.1:0",
        None,
        &["--tokens-file", tokens.to_str().unwrap()],
    );
    let mut h = MCP_HEADERS.to_vec();
    h.push(("Authorization", "Bearer not-a-known-token-at-all"));
    assert_eq!(http_status(&s.addr, "POST", "/mcp", &h, INIT), 401);
    run_python(&[
        "scope-http",
        &format!("http://{}/mcp", s.addr),
        TOKEN_A,
        TOKEN_B,
    ]);
    let leader = c
        .get("jobforge/leader")
        .expect("the leader key is untouched");
    assert_eq!(leader.value, b"{\"identity\": \"someone\"}");
}

/// Issue 14: over stdio the scope is `-n/--namespace` (repeatable); the same checks as team A.
#[test]
fn stdio_scope_is_the_namespace_flags() {
    let c = Consul::start();
    c.put("jobforge/leader", b"held");
    let bin = assert_cmd::cargo::cargo_bin("jobforge");
    run_python(&["scope-stdio", bin.to_str().unwrap(), &c.addr]);
    assert_eq!(c.get("jobforge/leader").unwrap().value, b"held");
}

/// A tokens file that does not parse, or names a bad namespace, stops the server at start with
/// a message naming the problem.
#[test]
fn a_bad_tokens_file_is_refused_at_start() {
    let c = Consul::start();
    let dir = tempfile::tempdir().unwrap();
    let bad = common::write(
        dir.path(),
        "tokens.json",
        r#"{"tokens": [{"token": "team-a-token-0123456789", "namespaces": ["../x"]}]}"#,
    );
    let out = Command::new(assert_cmd::cargo::cargo_bin("jobforge"))
        .env_clear()
        .env("CONSUL_HTTP_ADDR", &c.addr)
        .args(["mcp", "--http", "127.0.0.1:0", "--tokens-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tokens[0].namespaces") && err.contains("DNS label"),
        "{err}"
    );
}
