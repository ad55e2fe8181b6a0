//! `/v1/session/*` (`api-docs/session.mdx`), `/v1/txn` (`api-docs/txn.mdx`), `/v1/status/*` and
//! a minimal `/v1/agent/self`, with the ACL checks of `agent/consul/session_endpoint.go` (create,
//! renew and destroy need `session:write` on the session's node; info and list show only
//! sessions on nodes the token may read), `agent/consul/txn_endpoint.go` and
//! `agent/agent_endpoint.go`. `/v1/status/*` checks no token, as Consul's `Status` endpoint.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::extract::{ConsulReq, ReadOpts, denied};
use super::kv::{entry_json, wait_durable};
use super::{DATACENTER, LEADER_ADDR, MAX_TXN_BODY, MAX_VALUE_SIZE};
use super::{json, text, with_consistency, with_index};
use crate::consul::ConsulState;
use crate::consul::db::Db;
use crate::consul::sessions::{NODE_NAME, SessionError, parse_create};
use crate::consul::txn::{TxnOutcome, TxnParseError, acl_precheck, execute, parse_ops};
use crate::consul::watch::WatchTarget;

/// PUT `/v1/session/create`: body keys case-insensitive; answers `{"ID": "<uuid>"}`.
/// Needs `session:write` on the session's node (`Session.Apply`).
pub async fn create(
    State(state): State<Arc<ConsulState>>,
    consul: ConsulReq,
    body: Bytes,
) -> Response {
    let req = match parse_create(&body) {
        Ok(r) => r,
        Err(e @ SessionError::Node(_)) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (id, after) = {
        let mut db = state.lock();
        let allowed = db.authorize(consul.token.as_deref());
        if let Err(e) = allowed.and_then(|a| a.session_write(&req.node)) {
            return denied(e);
        }
        // `validateSessionChecksTxn`: every listed check exists and is not critical (an RPC
        // error, hence 500).
        let mut listed = req.node_checks.clone();
        listed.extend(req.service_checks.iter().cloned());
        if let Err(e) = crate::consul::catalog::validate_session_checks(&db.catalog, &listed) {
            return text(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        let s = db.create_session(req, Instant::now());
        (s.id, db.raft_index)
    };
    state.sessions_touched();
    if let Err(r) = wait_durable(&state, after).await {
        return r;
    }
    json(StatusCode::OK, &json!({ "ID": id }))
}

/// `session:write` on the node of session `id`, when it exists (`Session.Renew` and
/// `Session.Apply` destroy look the session up first, then check its node).
fn may_write_session(db: &Db, consul: &ConsulReq, id: &str) -> Result<(), Response> {
    let authz = db.authorize(consul.token.as_deref()).map_err(denied)?;
    match db.sessions.get(id) {
        Some(s) => authz.session_write(&s.node).map_err(denied),
        None => Ok(()),
    }
}

/// PUT `/v1/session/renew/<id>`: restarts the TTL timer; answers `[session]`, 404 if unknown.
pub async fn renew(
    State(state): State<Arc<ConsulState>>,
    Path(id): Path<String>,
    consul: ConsulReq,
) -> Response {
    let (found, index) = {
        let mut db = state.lock();
        if let Err(r) = may_write_session(&db, &consul, &id) {
            return r;
        }
        (db.renew_session(&id, Instant::now()), db.sessions_index)
    };
    state.sessions_touched();
    match found {
        Some(s) => with_index(json(StatusCode::OK, &json!([s.to_json()])), index),
        None => with_index(
            text(
                StatusCode::NOT_FOUND,
                format!("Session id '{id}' not found"),
            ),
            index,
        ),
    }
}

/// PUT `/v1/session/destroy/<id>`: invalidates (releasing or deleting held keys, with
/// lock-delay); always `true`.
pub async fn destroy(
    State(state): State<Arc<ConsulState>>,
    Path(id): Path<String>,
    consul: ConsulReq,
) -> Response {
    let after = {
        let mut db = state.lock();
        if let Err(r) = may_write_session(&db, &consul, &id) {
            return r;
        }
        db.invalidate_session(&id, Instant::now());
        db.raft_index
    };
    if let Err(r) = wait_durable(&state, after).await {
        return r;
    }
    json(StatusCode::OK, &Value::Bool(true))
}

/// Sessions the token may read (`session:read` on their node), optionally only `id`; blocking
/// supported.
async fn session_read(
    state: &ConsulState,
    consul: &ConsulReq,
    opts: ReadOpts,
    id: Option<&str>,
) -> Response {
    let authz = match consul.authorize(state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let b = opts.blocking;
    let (index, list) = state
        .blocking(WatchTarget::Sessions, b.index, b.wait, |db| {
            let list: Vec<Value> = db
                .sessions
                .values()
                .filter(|s| id.is_none_or(|id| s.id == id))
                .filter(|s| authz.can_read_session(&s.node))
                .map(|s| s.to_json())
                .collect();
            (db.sessions_index, list)
        })
        .await;
    with_consistency(
        with_index(json(StatusCode::OK, &Value::Array(list)), index),
        opts.consistency,
    )
}

/// GET `/v1/session/info/<id>`: `[session]`, or `[]` when unknown or not readable.
pub async fn info(
    State(state): State<Arc<ConsulState>>,
    Path(id): Path<String>,
    consul: ConsulReq,
    opts: ReadOpts,
) -> Response {
    session_read(&state, &consul, opts, Some(&id)).await
}

/// GET `/v1/session/list`: every session the token may read.
pub async fn list(
    State(state): State<Arc<ConsulState>>,
    consul: ConsulReq,
    opts: ReadOpts,
) -> Response {
    session_read(&state, &consul, opts, None).await
}

/// PUT `/v1/txn`: atomic KV operations; 200 on commit, 409 with `Errors` on rollback, 413 for
/// more than 64 ops or an oversized value/body.
/// Every op is checked before anything runs (`Txn.preCheck`): a denied op rolls the whole
/// transaction back with 409 and one `Errors` entry per denied op; `get`/`get-tree` results the
/// token cannot read are dropped (`FilterTxnResults`).
pub async fn txn(
    State(state): State<Arc<ConsulState>>,
    consul: ConsulReq,
    body: Bytes,
) -> Response {
    if body.len() > MAX_TXN_BODY {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {MAX_TXN_BODY} bytes.",
                body.len()
            ),
        );
    }
    let ops = match parse_ops(&body, MAX_VALUE_SIZE) {
        Ok(o) => o,
        Err(e @ (TxnParseError::TooManyOps(_) | TxnParseError::ValueTooLarge(..))) => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (outcome, after) = {
        let mut db = state.lock();
        let authz = match db.authorize(consul.token.as_deref()) {
            Ok(a) => a,
            Err(e) => return denied(e),
        };
        let out = match acl_precheck(&authz, &ops) {
            denials if denials.is_empty() => execute(&mut db, ops, Instant::now()),
            denials => TxnOutcome::RolledBack(denials),
        };
        (out.readable_by(&authz), db.raft_index)
    };
    if let Err(r) = wait_durable(&state, after).await {
        return r;
    }
    match outcome {
        TxnOutcome::Committed(results) => json(
            StatusCode::OK,
            &json!({
                "Results": results.iter().map(|e| json!({ "KV": entry_json(e) })).collect::<Vec<_>>(),
                "Errors": null,
            }),
        ),
        TxnOutcome::RolledBack(errors) => json(
            StatusCode::CONFLICT,
            &json!({
                "Results": null,
                "Errors": errors
                    .iter()
                    .map(|(i, what)| json!({ "OpIndex": i, "What": what }))
                    .collect::<Vec<_>>(),
            }),
        ),
    }
}

/// GET `/v1/status/leader`: `"127.0.0.1:8300"`.
pub async fn leader() -> Response {
    json(StatusCode::OK, &json!(LEADER_ADDR))
}

/// GET `/v1/status/peers`: `["127.0.0.1:8300"]`.
pub async fn peers() -> Response {
    json(StatusCode::OK, &json!([LEADER_ADDR]))
}

/// GET `/v1/agent/self`: `Config` (Datacenter, NodeName, Server, Version) and `Member`; needs
/// `agent:read` on the agent's node (`AgentSelf` in `agent/agent_endpoint.go`).
pub async fn agent_self(State(state): State<Arc<ConsulState>>, consul: ConsulReq) -> Response {
    if let Err(r) = consul
        .authorize(&state)
        .and_then(|a| a.agent_read(NODE_NAME).map_err(denied))
    {
        return r;
    }
    json(
        StatusCode::OK,
        &json!({
            "Config": {
                "Datacenter": DATACENTER,
                "PrimaryDatacenter": DATACENTER,
                "NodeName": NODE_NAME,
                "NodeID": "00000000-0000-4000-8000-000000000001",
                "Server": true,
                "Version": "1.21.0",
                "Revision": "jobforge-devstack",
            },
            "Member": {
                "Name": NODE_NAME,
                "Addr": "127.0.0.1",
                "Port": 8301,
                "Tags": { "role": "consul", "dc": DATACENTER, "port": "8300", "build": "1.21.0" },
                "Status": 1,
            },
            "Meta": {},
        }),
    )
}
