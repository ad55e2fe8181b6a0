//! A private git repository served over smart HTTPS with basic authentication: a small axum
//! server that checks the credentials and hands each request to `git http-backend` (CGI), as a
//! real git host behind a web server does. Its certificate is signed by a CA made for the test
//! ([`GitHttpServer::ca_file`]): give that file to git as `GIT_SSL_CAINFO` (an operator installs an
//! internal CA on Nomad clients the same way), since jobforge sends git credentials only over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Cfg {
    root: PathBuf,
    /// `(user, password)` every request must carry; `None`: a public repository.
    auth: Option<(String, String)>,
    /// Answer every request with `302 Found` to this base plus the request's path and query
    /// (a host that moved, or one that hands a client to another host).
    redirect: Option<String>,
    /// Every `Authorization` header received, in order.
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

/// A running server; stops when dropped.
pub struct GitHttpServer {
    /// `https://127.0.0.1:<port>/` (`http://` for [`GitHttpServer::start_public`]).
    pub base: String,
    ca: Option<tempfile::TempDir>,
    cancel: CancellationToken,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A CA and a server certificate for `127.0.0.1` and `localhost` signed by it.
struct TestPki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn test_pki() -> anyhow::Result<TestPki> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(TestPki {
        ca_pem: ca.pem(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` (`<base><name>.git`) over HTTPS to
    /// `user`/`password` only.
    pub async fn start(root: PathBuf, user: &str, password: &str) -> anyhow::Result<GitHttpServer> {
        Self::start_tls(Cfg {
            root,
            auth: Some((user.to_string(), password.to_string())),
            redirect: None,
            seen: Arc::default(),
        })
        .await
    }

    /// An HTTPS server (its own test CA) that answers every request with `302 Found` to
    /// `target_base` + the request's path and query, and records the `Authorization` headers it
    /// receives ([`Self::authorizations`]).
    pub async fn start_redirecting(target_base: &str) -> anyhow::Result<GitHttpServer> {
        Self::start_tls(Cfg {
            root: PathBuf::new(),
            auth: None,
            redirect: Some(target_base.trim_end_matches('/').to_string()),
            seen: Arc::default(),
        })
        .await
    }

    /// Every `Authorization` header value this server received, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    async fn start_tls(cfg: Cfg) -> anyhow::Result<GitHttpServer> {
        let seen = cfg.seen.clone();
        let pki = test_pki().context("test certificates")?;
        let ca = tempfile::tempdir()?;
        std::fs::write(ca.path().join("ca.pem"), &pki.ca_pem)?;
        let tls = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![pki.cert], pki.key)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let app = axum::Router::new().fallback(handle).with_state(cfg);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = c.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (acceptor, app, c) = (acceptor.clone(), app.clone(), c.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
                    tokio::select! {
                        _ = c.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(GitHttpServer {
            base: format!("https://{addr}/"),
            ca: Some(ca),
            cancel,
            seen,
        })
    }

    /// Serves the bare repositories under `root` to anyone over plain HTTP: a public repository
    /// (jobforge sends no credentials over plain HTTP, so a private one needs [`Self::start`]).
    pub async fn start_public(root: PathBuf) -> anyhow::Result<GitHttpServer> {
        let cfg = Cfg {
            root,
            auth: None,
            redirect: None,
            seen: Arc::default(),
        };
        let seen = cfg.seen.clone();
        let app = axum::Router::new().fallback(handle).with_state(cfg);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await;
        });
        Ok(GitHttpServer {
            base: format!("http://{addr}/"),
            ca: None,
            cancel,
            seen,
        })
    }

    /// The PEM file of the CA that signed the server's certificate (for `GIT_SSL_CAINFO`); an
    /// empty path for a plain-HTTP server.
    pub fn ca_file(&self) -> PathBuf {
        self.ca
            .as_ref()
            .map(|d| d.path().join("ca.pem"))
            .unwrap_or_default()
    }
}

fn authorized(headers: &HeaderMap, cfg: &Cfg) -> bool {
    let Some((user, password)) = &cfg.auth else {
        return true;
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v == expected)
}

async fn handle(State(cfg): State<Cfg>, req: Request) -> Response {
    if let Some(v) = req.headers().get("authorization")
        && let Ok(mut seen) = cfg.seen.lock()
    {
        seen.push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    if let Some(target) = &cfg.redirect {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::FOUND;
        if let Ok(loc) = HeaderValue::from_str(&format!("{target}{pq}")) {
            r.headers_mut().insert("location", loc);
        }
        return r;
    }
    if !authorized(req.headers(), &cfg) {
        let mut r = Response::new(Body::from("authentication required\n"));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"git\""),
        );
        return r;
    }
    match cgi(&cfg, req).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = Response::new(Body::from(format!("{e:#}\n")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

async fn cgi(cfg: &Cfg, req: Request) -> anyhow::Result<Response> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let encoding = req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Bytes = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await?;
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &cfg.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", &content_type)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", &encoding)
        .env(
            "REMOTE_USER",
            cfg.auth.as_ref().map_or("anonymous", |(u, _)| u.as_str()),
        )
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("git http-backend")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body).await?;
    }
    let out = child.wait_with_output().await?;
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))
        .context("CGI output without headers")?;
    let (head, rest) = (&raw[..split.0], &raw[split.0 + split.1..]);
    let mut resp = Response::new(Body::from(rest.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("status") {
            let code = v
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(200);
            *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    Ok(resp)
}
