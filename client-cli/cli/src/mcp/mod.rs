//! `jobforge mcp`: the MCP facade over the request store (KV only), on stdio or streamable HTTP.
//!
//! HTTP: `POST/GET/DELETE /mcp` (rmcp's streamable HTTP service) and `GET /healthz`. The service
//! validates `Host` (loopback names plus `--allowed-host`) and `Origin` (loopback origins plus
//! `--allowed-origin`; requests without `Origin` pass, as in rmcp). Bound to a non-loopback
//! address it refuses to start without a bearer token (`--token-file` or `JOBFORGE_MCP_TOKEN`);
//! with a token every `/mcp` request must carry `Authorization: Bearer <token>` or gets 401.
//! `--tokens-file` maps more tokens to namespaces ([`scope`]): each request's token decides the
//! namespaces its tool calls may use; over stdio the scope is `-n/--namespace` (repeatable).
//!
//! Session termination (`DELETE /mcp` with `Mcp-Session-Id`, MCP spec 2025-06-18, "Transports",
//! § Session Management) answers `200 OK`: the spec names no success code, and the SDKs agree on
//! 200 (the Python SDK's server answers 200, its client logs "Session termination failed: 202"
//! for anything but 200/204). rmcp answers 202, so [`session_delete_ok`] rewrites that one answer.

pub mod scope;
pub mod tools;
pub mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::args::McpArgs;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use scope::Scope;
use tools::{JobforgeMcp, Shared};

/// Environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "JOBFORGE_MCP_TOKEN";

/// `jobforge mcp`.
///
/// The server's scope: the `-n/--namespace` values when given (each a DNS label), every
/// namespace otherwise.
pub async fn serve(ctx: Ctx, a: McpArgs) -> CliResult<()> {
    let scope = if ctx.namespace_chosen {
        Scope::of(&ctx.namespaces).map_err(|e| CliError::Input(format!("--namespace: {e}")))?
    } else {
        Scope::All
    };
    if a.tokens_file.is_some() && a.http.is_none() {
        return Err(CliError::Input(
            "--tokens-file applies to --http only; over stdio the scope is -n/--namespace".into(),
        ));
    }
    let shared = Arc::new(Shared {
        store: ctx.store,
        default_namespace: ctx.namespace,
        scope,
    });
    match (a.stdio, a.http) {
        (_, Some(addr)) => serve_http(shared, addr, &a).await,
        _ => serve_stdio(shared).await,
    }
}

async fn serve_stdio(shared: Arc<Shared>) -> CliResult<()> {
    let running = JobforgeMcp::new(shared)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| CliError::Input(format!("MCP stdio session failed to start: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| CliError::Input(format!("MCP stdio session ended with an error: {e}")))?;
    Ok(())
}

/// Reads the token from `--token-file` (trimmed) or `JOBFORGE_MCP_TOKEN`.
fn load_token(a: &McpArgs) -> CliResult<Option<String>> {
    if let Some(f) = &a.token_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| CliError::Input(format!("--token-file {}: {e}", f.display())))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(CliError::Input(format!(
                "--token-file {} is empty",
                f.display()
            )));
        }
        return Ok(Some(t));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty()))
}

/// Constant-time comparison of two byte strings (length may leak, content does not).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scope of a bearer token: every known token is compared (in constant time each), so the
/// time taken does not tell which one matched.
fn scope_of_token(tokens: &[(String, Scope)], given: &str) -> Option<Scope> {
    let mut found = None;
    for (token, scope) in tokens {
        if ct_eq(given.as_bytes(), token.as_bytes()) && found.is_none() {
            found = Some(scope.clone());
        }
    }
    found
}

/// Checks the bearer token and attaches its [`Scope`] to the request, where the tools find it.
async fn require_bearer(
    State(tokens): State<Arc<Vec<(String, Scope)>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let scope = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| scope_of_token(&tokens, t.trim()));
    if let Some(scope) = scope {
        req.extensions_mut().insert(scope);
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response()
    }
}

/// Without tokens (loopback only): every request gets the server's scope.
async fn server_scope(State(scope): State<Scope>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(scope);
    next.run(req).await
}

/// The bearer tokens and their scopes: `--tokens-file`'s, plus the single token of
/// `--token-file`/`JOBFORGE_MCP_TOKEN` with the server's scope.
fn tokens(a: &McpArgs, server: &Scope) -> CliResult<Vec<(String, Scope)>> {
    let mut map: BTreeMap<String, Scope> = match &a.tokens_file {
        Some(f) => scope::load_tokens(f).map_err(CliError::Input)?,
        None => BTreeMap::new(),
    };
    if let Some(t) = load_token(a)?
        && map.insert(t, server.clone()).is_some()
    {
        return Err(CliError::Input(
            "the token of --token-file/JOBFORGE_MCP_TOKEN is also in --tokens-file; give each token once"
                .into(),
        ));
    }
    Ok(map.into_iter().collect())
}

/// Turns rmcp's `202 Accepted` answer to a session DELETE into `200 OK` (see the module docs).
/// Every other answer (404 unknown session, 401, 403, 405) passes unchanged.
async fn session_delete_ok(req: Request, next: Next) -> Response {
    let is_delete = req.method() == axum::http::Method::DELETE;
    let mut res = next.run(req).await;
    if is_delete && res.status() == StatusCode::ACCEPTED {
        *res.status_mut() = StatusCode::OK;
    }
    res
}

async fn serve_http(shared: Arc<Shared>, addr: SocketAddr, a: &McpArgs) -> CliResult<()> {
    let tokens = tokens(a, &shared.scope)?;
    if !addr.ip().is_loopback() && tokens.is_empty() {
        return Err(CliError::Input(format!(
            "refusing to serve MCP on non-loopback address {addr} without a bearer token; \
             set {TOKEN_ENV}, --token-file or --tokens-file"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Input(format!("cannot bind {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Input(format!("cannot read the bound address: {e}")))?;
    let cancel = CancellationToken::new();
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    hosts.extend(a.allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = vec![
        "http://localhost:*".into(),
        "http://127.0.0.1:*".into(),
        "http://[::1]:*".into(),
    ];
    origins.extend(a.allowed_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_cancellation_token(cancel.child_token());
    let factory_shared = shared.clone();
    let service = StreamableHttpService::new(
        move || Ok(JobforgeMcp::new(factory_shared.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let mut mcp = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn(session_delete_ok));
    mcp = if tokens.is_empty() {
        mcp.layer(middleware::from_fn_with_state(
            shared.scope.clone(),
            server_scope,
        ))
    } else {
        mcp.layer(middleware::from_fn_with_state(
            Arc::new(tokens),
            require_bearer,
        ))
    };
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(mcp);
    eprintln!("jobforge mcp listening on http://{local}/mcp");
    let shutdown = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(|e| CliError::Input(format!("MCP HTTP server failed: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_equal_bytes() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn each_token_gets_its_own_scope() {
        let a = Scope::of(["team-a"]).unwrap();
        let tokens = vec![
            ("aaaaaaaaaaaaaaaa".to_string(), a.clone()),
            ("bbbbbbbbbbbbbbbb".to_string(), Scope::All),
        ];
        assert_eq!(scope_of_token(&tokens, "aaaaaaaaaaaaaaaa"), Some(a));
        assert_eq!(
            scope_of_token(&tokens, "bbbbbbbbbbbbbbbb"),
            Some(Scope::All)
        );
        assert_eq!(scope_of_token(&tokens, "aaaaaaaaaaaaaaa"), None);
        assert_eq!(scope_of_token(&tokens, ""), None);
    }
}
