//! The token auth method's endpoints (Vault API docs "Token auth method", `vault/token_store.go`):
//! `create`, `create-orphan`, `lookup-self`, `lookup`, `lookup-accessor`, `renew-self`,
//! `revoke-self`, `revoke`, `revoke-accessor`, `revoke-orphan`. Each is checked against the
//! caller's ACL on its own path (`read` for `lookup-self`, `update` for the rest), and
//! `revoke-orphan` is a root-protected path (needs `sudo`). The creation rules live in
//! [`super::tokens`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::Value;

use super::acl::Op;
use super::tokens::{CreateRequest, parse_duration};
use super::{ApiError, Caller, VaultState, denied, envelope, errors, json_body};

type S = State<Arc<VaultState>>;

pub(super) fn routes() -> axum::Router<Arc<VaultState>> {
    axum::Router::new()
        .route("/v1/auth/token/create", post(create).put(create))
        .route(
            "/v1/auth/token/create-orphan",
            post(create_orphan).put(create_orphan),
        )
        .route("/v1/auth/token/lookup-self", get(lookup_self))
        .route("/v1/auth/token/lookup", post(lookup).put(lookup))
        .route(
            "/v1/auth/token/lookup-accessor",
            post(lookup_accessor).put(lookup_accessor),
        )
        .route(
            "/v1/auth/token/renew-self",
            post(renew_self).put(renew_self),
        )
        .route(
            "/v1/auth/token/revoke-self",
            post(revoke_self).put(revoke_self),
        )
        .route("/v1/auth/token/revoke", post(revoke).put(revoke))
        .route(
            "/v1/auth/token/revoke-accessor",
            post(revoke_accessor).put(revoke_accessor),
        )
        .route(
            "/v1/auth/token/revoke-orphan",
            post(revoke_orphan).put(revoke_orphan),
        )
}

fn bad_request(msg: &str) -> ApiError {
    errors(StatusCode::BAD_REQUEST, &[msg])
}

fn auth_response(auth: Value) -> Response {
    let mut body = envelope(Value::Null);
    if let Some(o) = body.as_object_mut() {
        o.insert("auth".into(), auth);
        o.remove("mount_type");
    }
    Json(body).into_response()
}

fn field(body: &Value, name: &str) -> Result<String, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| bad_request(&format!("missing {name}")))
}

async fn create(st: S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    do_create(st, caller, &body, false)
}

async fn create_orphan(st: S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    do_create(st, caller, &body, true)
}

fn do_create(
    State(st): S,
    caller: Caller,
    body: &[u8],
    orphan_endpoint: bool,
) -> Result<Response, ApiError> {
    let path = if orphan_endpoint {
        "auth/token/create-orphan"
    } else {
        "auth/token/create"
    };
    let decision = caller.require(path, Op::Update)?;
    let req: CreateRequest = serde_json::from_value(json_body(body)?)
        .map_err(|e| bad_request(&format!("failed to parse JSON input: {e}")))?;
    let now = Utc::now();
    let token = st
        .lock()
        .tokens
        .create(&caller.token, req, decision.sudo, orphan_endpoint, now)
        .map_err(|e| bad_request(&e.0))?;
    Ok(auth_response(token.auth_json(now)))
}

async fn lookup_self(caller: Caller) -> Result<Response, ApiError> {
    caller.require("auth/token/lookup-self", Op::Read)?;
    Ok(Json(envelope(caller.token.lookup_json(Utc::now(), true))).into_response())
}

async fn lookup(State(st): S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    caller.require("auth/token/lookup", Op::Update)?;
    let token = field(&json_body(&body)?, "token")?;
    let now = Utc::now();
    let t = st
        .lock()
        .tokens
        .lookup(&token, now)
        .ok_or_else(|| bad_request("bad token"))?;
    Ok(Json(envelope(t.lookup_json(now, true))).into_response())
}

async fn lookup_accessor(State(st): S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    caller.require("auth/token/lookup-accessor", Op::Update)?;
    let accessor = field(&json_body(&body)?, "accessor")?;
    let now = Utc::now();
    let mut inner = st.lock();
    let t = inner
        .tokens
        .id_of_accessor(&accessor, now)
        .and_then(|id| inner.tokens.lookup(&id, now))
        .ok_or_else(|| bad_request("invalid accessor"))?;
    Ok(Json(envelope(t.lookup_json(now, false))).into_response())
}

async fn renew_self(State(st): S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    caller.require("auth/token/renew-self", Op::Update)?;
    let v = json_body(&body)?;
    let increment = match v.get("increment") {
        Some(i) => Some(parse_duration(i).map_err(|e| bad_request(&e))?),
        None => None,
    };
    let now = Utc::now();
    let t = st
        .lock()
        .tokens
        .renew(&caller.token.id, increment, now)
        .map_err(|e| bad_request(&e.0))?;
    Ok(auth_response(t.auth_json(now)))
}

async fn revoke_self(State(st): S, caller: Caller) -> Result<Response, ApiError> {
    caller.require("auth/token/revoke-self", Op::Update)?;
    st.lock().tokens.revoke_tree(&caller.token.id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke(State(st): S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    caller.require("auth/token/revoke", Op::Update)?;
    let token = field(&json_body(&body)?, "token")?;
    st.lock().tokens.revoke_tree(&token);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke_accessor(State(st): S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    caller.require("auth/token/revoke-accessor", Op::Update)?;
    let accessor = field(&json_body(&body)?, "accessor")?;
    let mut inner = st.lock();
    if let Some(id) = inner.tokens.id_of_accessor(&accessor, Utc::now()) {
        inner.tokens.revoke_tree(&id);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn revoke_orphan(State(st): S, caller: Caller, body: Bytes) -> Result<Response, ApiError> {
    let d = caller.require("auth/token/revoke-orphan", Op::Update)?;
    if !d.sudo {
        return Err(denied());
    }
    let token = field(&json_body(&body)?, "token")?;
    st.lock().tokens.revoke_orphan(&token);
    Ok(StatusCode::NO_CONTENT.into_response())
}
