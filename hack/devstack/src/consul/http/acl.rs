//! `/v1/acl/policy`, `/v1/acl/policies`, `/v1/acl/token`, `/v1/acl/tokens`
//! (`api-docs/acl/{policies,tokens}.mdx`, `agent/acl_endpoint.go`).
//!
//! While ACLs are off every route answers 401 `ACL support disabled`. Reading policies and tokens
//! needs `acl:read`, writing them `acl:write`; `token/self` needs only a valid token. A missing
//! policy or token is 403 `ACL not found` (Consul answers `acl.ErrNotFound`, not 404). Validation
//! failures the server reports (duplicate names, unknown policies, rules that do not parse) are
//! 500 with the message, body decoding failures 400, as the agent's HTTP layer maps them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::extract::{ConsulReq, denied};
use super::{json, text, with_index};
use crate::consul::ConsulState;
use crate::consul::acl::{AclError, AclStore, WriteError};

/// What a route needs besides a valid token.
#[derive(Debug, Clone, Copy)]
enum Need {
    Read,
    Write,
    Token,
}

/// Runs `f` on the ACL store after the checks every ACL route makes: 401 while ACLs are off
/// (`checkACLDisabled`, before anything else), then the token, then `need`. `f` gets the store
/// and the raft index a write would commit at; a write that changed the store commits it.
fn acl_route(
    state: &ConsulState,
    consul: &ConsulReq,
    need: Need,
    f: impl FnOnce(&mut AclStore, u64) -> Response,
) -> Response {
    let mut db = state.lock();
    if db.acl.is_none() {
        return text(StatusCode::UNAUTHORIZED, "ACL support disabled");
    }
    let authz = match db.authorize(consul.token.as_deref()) {
        Ok(a) => a,
        Err(e) => return denied(e),
    };
    let check = match need {
        Need::Read => authz.acl_read(),
        Need::Write => authz.acl_write(),
        Need::Token => Ok(()),
    };
    if let Err(e) = check {
        return denied(e);
    }
    let next = db.next_index();
    let Some(store) = db.acl.as_mut() else {
        return text(StatusCode::UNAUTHORIZED, "ACL support disabled");
    };
    let resp = f(store, next);
    let index = store.index;
    if index == next {
        db.commit_acl();
    }
    with_index(resp, index)
}

fn written(r: Result<Value, WriteError>) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => write_error(e),
    }
}

fn write_error(e: WriteError) -> Response {
    match e {
        WriteError::BadRequest(m) => text(StatusCode::BAD_REQUEST, m),
        WriteError::Invalid(m) => text(StatusCode::INTERNAL_SERVER_ERROR, m),
        WriteError::NotFound => denied(AclError::NotFound),
    }
}

fn found(v: Option<Value>) -> Response {
    match v {
        Some(v) => json(StatusCode::OK, &v),
        None => denied(AclError::NotFound),
    }
}

fn decode(body: &[u8], what: &str) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            format!("{what} decoding failed: {e}"),
        )
    })
}

/// PUT `/v1/acl/policy`: creates a policy from `{Name, Description, Rules, Datacenters}`.
pub async fn policy_create(
    State(state): State<Arc<ConsulState>>,
    consul: ConsulReq,
    body: Bytes,
) -> Response {
    acl_route(&state, &consul, Need::Write, |acl, idx| {
        match decode(&body, "Policy") {
            Ok(v) => written(acl.set_policy(None, &v, idx)),
            Err(r) => r,
        }
    })
}

/// PUT `/v1/acl/policy/<id>`: updates a policy.
pub async fn policy_update(
    State(state): State<Arc<ConsulState>>,
    Path(id): Path<String>,
    consul: ConsulReq,
    body: Bytes,
) -> Response {
    acl_route(&state, &consul, Need::Write, |acl, idx| {
        match decode(&body, "Policy") {
            Ok(v) => written(acl.set_policy(Some(&id), &v, idx)),
            Err(r) => r,
        }
    })
}

/// GET `/v1/acl/policy/<id>`.
pub async fn policy_read(
    State(state): State<Arc<ConsulState>>,
    Path(id): Path<String>,
    consul: ConsulReq,
) -> Response {
    acl_route(&state, &consul, Need::Read, |acl, _| {
        found(acl.policy(Some(&id), None))
    })
}

/// GET `/v1/acl/policy/name/<name>`.
pub async fn policy_read_by_name(
    State(state): State<Arc<ConsulState>>,
    Path(name): Path<String>,
    consul: ConsulReq,
) -> Response {
    acl_route(&state, &consul, Need::Read, |acl, _| {
        found(acl.policy(None, Some(&name)))
    })
}

/// GET `/v1/acl/policies`: list stubs (no `Rules`).
pub async fn policy_list(State(state): State<Arc<ConsulState>>, consul: ConsulReq) -> Response {
    acl_route(&state, &consul, Need::Read, |acl, _| {
        json(StatusCode::OK, &acl.policies())
    })
}

/// DELETE `/v1/acl/policy/<id>`: `true`.
pub async fn policy_delete(
    State(state): State<Arc<ConsulState>>,
    Path(id): Path<String>,
    consul: ConsulReq,
) -> Response {
    acl_route(&state, &consul, Need::Write, |acl, idx| {
        match acl.delete_policy(&id, idx) {
            Ok(()) => json(StatusCode::OK, &Value::Bool(true)),
            Err(e) => write_error(e),
        }
    })
}

/// PUT `/v1/acl/token`: creates a token from `{Description, Policies: [{ID}|{Name}], SecretID,
/// AccessorID, Local}`.
pub async fn token_create(
    State(state): State<Arc<ConsulState>>,
    consul: ConsulReq,
    body: Bytes,
) -> Response {
    acl_route(&state, &consul, Need::Write, |acl, idx| {
        match decode(&body, "Token") {
            Ok(v) => written(acl.set_token(None, &v, idx)),
            Err(r) => r,
        }
    })
}

/// PUT `/v1/acl/token/<accessor>`: updates a token's description and policies.
pub async fn token_update(
    State(state): State<Arc<ConsulState>>,
    Path(accessor): Path<String>,
    consul: ConsulReq,
    body: Bytes,
) -> Response {
    acl_route(&state, &consul, Need::Write, |acl, idx| {
        match decode(&body, "Token") {
            Ok(v) => written(acl.set_token(Some(&accessor), &v, idx)),
            Err(r) => r,
        }
    })
}

/// GET `/v1/acl/token/<accessor>`.
pub async fn token_read(
    State(state): State<Arc<ConsulState>>,
    Path(accessor): Path<String>,
    consul: ConsulReq,
) -> Response {
    acl_route(&state, &consul, Need::Read, |acl, _| {
        found(acl.token(&accessor))
    })
}

/// GET `/v1/acl/token/self`: the request's own token (the anonymous token without one).
pub async fn token_self(State(state): State<Arc<ConsulState>>, consul: ConsulReq) -> Response {
    let secret = consul.token.clone();
    acl_route(&state, &consul, Need::Token, |acl, _| {
        found(acl.token_by_secret(secret.as_deref()))
    })
}

/// GET `/v1/acl/tokens`.
pub async fn token_list(State(state): State<Arc<ConsulState>>, consul: ConsulReq) -> Response {
    acl_route(&state, &consul, Need::Read, |acl, _| {
        json(StatusCode::OK, &acl.tokens())
    })
}

/// DELETE `/v1/acl/token/<accessor>`: `true`.
pub async fn token_delete(
    State(state): State<Arc<ConsulState>>,
    Path(accessor): Path<String>,
    consul: ConsulReq,
) -> Response {
    let caller = consul.token.clone();
    acl_route(&state, &consul, Need::Write, |acl, idx| {
        match acl.delete_token(&accessor, caller.as_deref(), idx) {
            Ok(()) => json(StatusCode::OK, &Value::Bool(true)),
            Err(e) => write_error(e),
        }
    })
}
