//! The HTTP surface: routes, query-string parsing (flags by presence), Consul's response headers
//! and plain-text errors. Request parameters reach handlers through the typed extractors of
//! [`extract`] (query string and token, blocking and consistency, KV key).
//!
//! Every answer carries `X-Consul-KnownLeader: true` and `X-Consul-LastContact: 0`, and an
//! `X-Consul-Index` (never 0): reads set the index of their result, other answers get the current
//! raft index (clamped to 1). On the wire the names are in Go's canonical form
//! (`X-Consul-Knownleader`), see [`crate::http_guard`].

// Parsers return the ready-made error response (Consul's status and text) so handlers can answer
// early; the size of `Response` in an `Err` is irrelevant here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use percent_encoding::percent_decode_str;
use rand::Rng;

use super::ConsulState;
use super::duration::parse_go_duration;

mod acl;
mod agent;
pub mod extract;
mod kv;
pub mod metrics;
mod session;

/// Largest KV value (`kv_max_value_size`, kv.mdx: 512 KiB); larger → 413.
pub const MAX_VALUE_SIZE: usize = 512 * 1024;
/// Largest `/v1/txn` body (`txn_max_req_len`: 512 KiB); larger → 413.
pub const MAX_TXN_BODY: usize = 512 * 1024;
/// Default blocking wait (blocking.mdx: 5 minutes).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Maximum blocking wait (blocking.mdx: 10 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// The emulated leader's RPC address (`/v1/status/leader`).
pub const LEADER_ADDR: &str = "127.0.0.1:8300";
/// The emulated datacenter.
pub const DATACENTER: &str = "dc1";

/// The Consul HTTP API router: `/v1/kv/*`, `/v1/txn`, `/v1/session/*`, `/v1/status/{leader,peers}`,
/// `/v1/agent/self`, the agent's services and checks, `/v1/health/service/<name>` and
/// `/v1/catalog/service(s)` (see `agent.rs`), `/v1/acl/{policy,policies,token,tokens}` (see [`crate::consul::acl`]),
/// `/v1/agent/metrics` (request counters, see [`metrics`]).
pub fn router(state: Arc<ConsulState>) -> Router {
    let router = Router::new()
        .route("/v1/kv", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/kv/", get(kv::get).put(kv::put).delete(kv::delete))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/txn", put(session::txn))
        .route("/v1/session/create", put(session::create))
        .route("/v1/session/renew/{id}", put(session::renew))
        .route("/v1/session/destroy/{id}", put(session::destroy))
        .route("/v1/session/info/{id}", get(session::info))
        .route("/v1/session/list", get(session::list))
        .route("/v1/status/leader", get(session::leader))
        .route("/v1/status/peers", get(session::peers))
        .route("/v1/agent/self", get(session::agent_self))
        .route("/v1/agent/service/register", put(agent::register))
        .route("/v1/agent/service/deregister/{id}", put(agent::deregister))
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/health/service/{name}", get(agent::health_service))
        .route("/v1/catalog/service/{name}", get(agent::catalog_service))
        .route("/v1/catalog/services", get(agent::catalog_services))
        .route("/v1/acl/policy", put(acl::policy_create))
        .route("/v1/acl/policies", get(acl::policy_list))
        .route("/v1/acl/policy/name/{name}", get(acl::policy_read_by_name))
        .route(
            "/v1/acl/policy/{id}",
            get(acl::policy_read)
                .put(acl::policy_update)
                .delete(acl::policy_delete),
        )
        .route("/v1/acl/token", put(acl::token_create))
        .route("/v1/acl/tokens", get(acl::token_list))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route(
            "/v1/acl/token/{id}",
            get(acl::token_read)
                .put(acl::token_update)
                .delete(acl::token_delete),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            consul_headers,
        ))
        .with_state(state);
    metrics::instrument(router, "consul", "/v1/agent/metrics")
}

async fn not_found(uri: axum::http::Uri) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "Invalid URL path: not a recognized HTTP API endpoint: {}",
            uri.path()
        ),
    )
}

/// Adds the headers Consul sends on every answer.
async fn consul_headers(
    State(state): State<Arc<ConsulState>>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !h.contains_key("x-consul-index") {
        let idx = state.lock().raft_index.max(1);
        h.insert("x-consul-index", HeaderValue::from(idx));
    }
    h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    resp
}

/// A plain-text answer (Consul's error bodies).
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body.into(),
    )
        .into_response()
}

/// A JSON answer.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Sets `X-Consul-Index` (clamped to ≥ 1) on a response.
pub fn with_index(mut resp: Response, index: u64) -> Response {
    resp.headers_mut()
        .insert("x-consul-index", HeaderValue::from(index.max(1)));
    resp
}

/// The decoded query string. Flags count by presence (`?recurse=false` still recurses); values
/// are percent-decoded with `+` as space, as Go's `url.ParseQuery`.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
    raw: String,
}

fn decode_component(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Query {
        let raw = raw.unwrap_or_default();
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode_component(k), decode_component(v)),
                None => (decode_component(p), String::new()),
            })
            .collect();
        Query {
            pairs,
            raw: raw.to_string(),
        }
    }

    /// True when `name` appears at all.
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The raw query string (for Consul's "Conflicting flags" text).
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

/// Blocking parameters of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// `?index`; 0 = do not block.
    pub index: u64,
    /// Wait including jitter.
    pub wait: Duration,
}

/// Parses `?index` / `?wait` (blocking.mdx): wait defaults to 5m, is capped at 10m, and gets up to
/// wait/16 of random jitter added.
///
/// Errors: the 400 answer ("Invalid wait time", "Invalid index").
pub fn parse_blocking(q: &Query) -> Result<Blocking, Response> {
    let mut wait = match q.get("wait") {
        Some(w) if !w.is_empty() => {
            parse_go_duration(w).map_err(|_| text(StatusCode::BAD_REQUEST, "Invalid wait time"))?
        }
        _ => Duration::ZERO,
    };
    let index = match q.get("index") {
        Some(i) if !i.is_empty() => i
            .parse::<u64>()
            .map_err(|_| text(StatusCode::BAD_REQUEST, "Invalid index"))?,
        _ => 0,
    };
    if wait.is_zero() {
        wait = DEFAULT_WAIT;
    }
    wait = wait.min(MAX_WAIT);
    let jitter_ns = u64::try_from((wait / 16).as_nanos()).unwrap_or(0);
    if jitter_ns > 0 {
        wait += Duration::from_nanos(rand::rng().random_range(0..jitter_ns));
    }
    Ok(Blocking { index, wait })
}

/// Consistency mode of a read (`?stale`, `?consistent`, default leader).
///
/// Errors: both given → 400.
pub fn parse_consistency(q: &Query) -> Result<&'static str, Response> {
    match (q.has("stale"), q.has("consistent")) {
        (true, true) => Err(text(
            StatusCode::BAD_REQUEST,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        )),
        (true, false) => Ok("stale"),
        (false, true) => Ok("consistent"),
        (false, false) => Ok("leader"),
    }
}

/// Adds `X-Consul-Effective-Consistency`.
pub fn with_consistency(mut resp: Response, mode: &'static str) -> Response {
    resp.headers_mut().insert(
        "x-consul-effective-consistency",
        HeaderValue::from_static(mode),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flags_count_by_presence() {
        let q = Query::parse(Some("recurse=false&keys&separator=%2F&token=a+b"));
        assert!(q.has("recurse"));
        assert!(q.has("keys"));
        assert_eq!(q.get("separator"), Some("/"));
        assert_eq!(q.get("token"), Some("a b"));
        assert!(!q.has("raw"));
    }

    #[test]
    fn blocking_defaults_caps_and_jitters() {
        let b = parse_blocking(&Query::parse(Some("index=5"))).expect("test input");
        assert_eq!(b.index, 5);
        assert!(b.wait >= DEFAULT_WAIT && b.wait <= DEFAULT_WAIT + DEFAULT_WAIT / 16);
        let b = parse_blocking(&Query::parse(Some("index=5&wait=1h"))).expect("test input");
        assert!(b.wait >= MAX_WAIT && b.wait <= MAX_WAIT + MAX_WAIT / 16);
        assert!(parse_blocking(&Query::parse(Some("wait=10"))).is_err());
        assert!(parse_blocking(&Query::parse(Some("index=-1"))).is_err());
    }

    proptest! {
        #[test]
        fn query_parser_never_panics(s in "\\PC{0,40}") {
            let q = Query::parse(Some(&s));
            let _ = parse_blocking(&q);
            let _ = parse_consistency(&q);
        }
    }
}
