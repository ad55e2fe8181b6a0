//! Typed extractors for Consul's request parameters, so handlers receive them parsed:
//! [`ConsulReq`] (query string and ACL token), [`ReadOpts`] (blocking and consistency
//! parameters of a read) and [`KvKey`] (the key in `/v1/kv/<key>`).
//!
//! The token comes from `?token=`, else `X-Consul-Token`, else `Authorization: Bearer <token>`,
//! in that order (`parseTokenInternal` in `agent/http.go`); no token means the anonymous token.

// The rejection of an extractor is the ready-made Consul answer.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use percent_encoding::percent_decode_str;

use super::{Blocking, Query, parse_blocking, parse_consistency, text};
use crate::consul::ConsulState;
use crate::consul::acl::{AclError, Authorizer};

/// The query string and the ACL token of a request.
#[derive(Debug, Default)]
pub struct ConsulReq {
    /// The decoded query string.
    pub query: Query,
    /// The ACL token secret, if the request carries one.
    pub token: Option<String>,
}

impl ConsulReq {
    /// The authorizer of this request's token.
    ///
    /// Errors: 403 `ACL not found` when the token names no token.
    pub fn authorize(&self, state: &ConsulState) -> Result<Authorizer, Response> {
        state
            .lock()
            .authorize(self.token.as_deref())
            .map_err(denied)
    }
}

/// The 403 answer of an ACL failure (`agent/http.go`: the error text as the body).
pub fn denied(e: AclError) -> Response {
    text(StatusCode::FORBIDDEN, e.to_string())
}

fn token_of(parts: &Parts, q: &Query) -> Option<String> {
    if let Some(t) = q.get("token").filter(|t| !t.is_empty()) {
        return Some(t.to_string());
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    if let Some(t) = header("x-consul-token") {
        return Some(t.to_string());
    }
    // `<Scheme> <Value>`: the scheme must be Bearer (any case); the value's first word is the token.
    let auth = header("authorization")?;
    let (scheme, value) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    value
        .split_whitespace()
        .next()
        .map(str::to_string)
        .filter(|t| !t.is_empty())
}

impl<S: Send + Sync> FromRequestParts<S> for ConsulReq {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = Query::parse(parts.uri.query());
        let token = token_of(parts, &query);
        Ok(ConsulReq { query, token })
    }
}

/// The blocking and consistency parameters of a read (`?index`, `?wait`, `?stale`,
/// `?consistent`).
#[derive(Debug, Clone, Copy)]
pub struct ReadOpts {
    /// Blocking parameters (wait with jitter).
    pub blocking: Blocking,
    /// `leader`, `stale` or `consistent` (for `X-Consul-Effective-Consistency`).
    pub consistency: &'static str,
}

impl<S: Send + Sync> FromRequestParts<S> for ReadOpts {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = Query::parse(parts.uri.query());
        let consistency = parse_consistency(&q)?;
        let blocking = parse_blocking(&q)?;
        Ok(ReadOpts {
            blocking,
            consistency,
        })
    }
}

/// The key of `/v1/kv/<key>`, percent-decoded (npm `consul` sends `/` as `%2F`); empty for
/// `/v1/kv` and `/v1/kv/`.
#[derive(Debug, Clone)]
pub struct KvKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for KvKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path();
        let raw = path
            .strip_prefix("/v1/kv/")
            .or_else(|| path.strip_prefix("/v1/kv"))
            .unwrap_or_default();
        percent_decode_str(raw)
            .decode_utf8()
            .map(|k| KvKey(k.into_owned()))
            .map_err(|_| text(StatusCode::BAD_REQUEST, "Invalid key name: not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn req(uri: &str, headers: &[(&str, &str)]) -> ConsulReq {
        let mut b = axum::http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (mut parts, ()) = b.body(()).expect("test request").into_parts();
        let Ok(r) = ConsulReq::from_request_parts(&mut parts, &()).await;
        r
    }

    #[tokio::test]
    async fn token_sources_in_consuls_order() {
        let q = req("/v1/kv/a?token=q", &[("x-consul-token", "h")]).await;
        assert_eq!(q.token.as_deref(), Some("q"));
        let h = req(
            "/v1/kv/a",
            &[("x-consul-token", "h"), ("authorization", "Bearer b")],
        )
        .await;
        assert_eq!(h.token.as_deref(), Some("h"));
        let b = req("/v1/kv/a", &[("authorization", "bearer  b c")]).await;
        assert_eq!(b.token.as_deref(), Some("b"));
        let basic = req("/v1/kv/a", &[("authorization", "Basic b")]).await;
        assert_eq!(basic.token, None);
        let none = req("/v1/kv/a?token=", &[]).await;
        assert_eq!(none.token, None);
    }
}
