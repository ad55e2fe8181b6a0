//! The agent's service and check endpoints and the health and catalog reads over them
//! (`website/content/api-docs/{agent/service,agent/check,health,catalog}.mdx`; handlers in
//! hashicorp/consul `agent/agent_endpoint.go`, `agent/health_endpoint.go`,
//! `agent/catalog_endpoint.go`). Rules of the records: [`crate::consul::catalog`].
//!
//! - `PUT /v1/agent/service/register`, `PUT /v1/agent/service/deregister/<id>`: `service:write`
//!   on the service name (403 otherwise).
//! - `GET /v1/agent/services` (`{id: service}`), `GET /v1/agent/checks` (`{id: check}`): entries
//!   filtered to services the token may read (`service:read`), node checks to `node:read`.
//! - `GET /v1/health/service/<name>[?passing]`: `[{Node, Service, Checks}]`, the node's checks
//!   and the instance's own; `?passing` keeps only instances whose every check passes (warning
//!   excluded, `structs.HealthPassing` filter). Blocking on the catalog index.
//! - `GET /v1/catalog/service/<name>`: every instance whatever its health; `GET
//!   /v1/catalog/services`: `{name: [tags]}`. Blocking on the catalog index. Answers filtered by
//!   `service:read` and `node:read` (an unreadable service is an empty list, not 403, as
//!   Consul's ACL filter does).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::extract::{ConsulReq, ReadOpts, denied};
use super::kv::wait_durable;
use super::{json, text, with_consistency, with_index};
use crate::consul::ConsulState;
use crate::consul::catalog::{Health, node_json, parse_registration};
use crate::consul::sessions::NODE_NAME;
use crate::consul::watch::WatchTarget;

/// PUT `/v1/agent/service/register`: registers (or replaces) a service and its checks; 200 with
/// an empty body. HTTP checks start running at once.
pub async fn register(
    State(state): State<Arc<ConsulState>>,
    consul: ConsulReq,
    body: Bytes,
) -> Response {
    let reg = match parse_registration(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (checks, after) = {
        let mut db = state.lock();
        let allowed = db.authorize(consul.token.as_deref());
        if let Err(e) = allowed.and_then(|a| a.service_write(&reg.service.name)) {
            return denied(e);
        }
        if db
            .catalog
            .services
            .get(&reg.service.id)
            .is_some_and(|s| s.builtin)
        {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Invalid service ID {:?}: reserved", reg.service.id),
            );
        }
        let old: Vec<String> = db
            .catalog
            .service_checks(&reg.service.id)
            .map(|c| c.id.clone())
            .collect();
        let checks = db.register_service(reg, Instant::now());
        for id in old {
            if !checks.iter().any(|c| c.id == id) {
                state.stop_runner(&id);
            }
        }
        (checks, db.raft_index)
    };
    for c in &checks {
        state.start_runner(c);
    }
    if let Err(r) = wait_durable(&state, after).await {
        return r;
    }
    text(StatusCode::OK, "")
}

/// PUT `/v1/agent/service/deregister/<id>`: removes the service and its checks (sessions bound
/// to them are invalidated); 404 for an unknown ID.
pub async fn deregister(
    State(state): State<Arc<ConsulState>>,
    Path(id): Path<String>,
    consul: ConsulReq,
) -> Response {
    let (removed, after) = {
        let mut db = state.lock();
        let authz = match db.authorize(consul.token.as_deref()) {
            Ok(a) => a,
            Err(e) => return denied(e),
        };
        let Some(svc) = db.catalog.services.get(&id).filter(|s| !s.builtin).cloned() else {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                ),
            );
        };
        if let Err(e) = authz.service_write(&svc.name) {
            return denied(e);
        }
        let checks: Vec<String> = db
            .catalog
            .service_checks(&id)
            .map(|c| c.id.clone())
            .collect();
        db.deregister_service(&id, Instant::now());
        (checks, db.raft_index)
    };
    for c in removed {
        state.stop_runner(&c);
    }
    if let Err(r) = wait_durable(&state, after).await {
        return r;
    }
    text(StatusCode::OK, "")
}

/// GET `/v1/agent/services`.
pub async fn services(State(state): State<Arc<ConsulState>>, consul: ConsulReq) -> Response {
    let authz = match consul.authorize(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let db = state.lock();
    let out: Map<String, Value> = db
        .catalog
        .services
        .values()
        .filter(|s| !s.builtin && authz.can_read_service(&s.name))
        .map(|s| (s.id.clone(), s.agent_json()))
        .collect();
    json(StatusCode::OK, &Value::Object(out))
}

/// GET `/v1/agent/checks`.
pub async fn checks(State(state): State<Arc<ConsulState>>, consul: ConsulReq) -> Response {
    let authz = match consul.authorize(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let db = state.lock();
    let out: Map<String, Value> = db
        .catalog
        .checks
        .values()
        .filter(|c| {
            if c.service_id.is_empty() {
                authz.can_read_node(NODE_NAME)
            } else {
                authz.can_read_service(&c.service_name)
            }
        })
        .map(|c| (c.id.clone(), c.to_json()))
        .collect();
    json(StatusCode::OK, &Value::Object(out))
}

/// GET `/v1/health/service/<name>`.
pub async fn health_service(
    State(state): State<Arc<ConsulState>>,
    Path(name): Path<String>,
    consul: ConsulReq,
    opts: ReadOpts,
) -> Response {
    let authz = match consul.authorize(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let passing_only = consul.query.has("passing");
    let readable = authz.can_read_service(&name) && authz.can_read_node(NODE_NAME);
    let b = opts.blocking;
    let (index, list) = state
        .blocking(WatchTarget::Catalog, b.index, b.wait, |db| {
            let c = &db.catalog;
            let list: Vec<Value> = c
                .services
                .values()
                .filter(|s| readable && s.name == name)
                .filter_map(|s| {
                    let checks: Vec<_> = c.node_checks().chain(c.service_checks(&s.id)).collect();
                    if passing_only && checks.iter().any(|k| k.status != Health::Passing) {
                        return None;
                    }
                    Some(serde_json::json!({
                        "Node": node_json(),
                        "Service": s.health_json(),
                        "Checks": checks.iter().map(|k| k.to_json()).collect::<Vec<_>>(),
                    }))
                })
                .collect();
            (c.index, list)
        })
        .await;
    with_consistency(
        with_index(json(StatusCode::OK, &Value::Array(list)), index),
        opts.consistency,
    )
}

/// GET `/v1/catalog/service/<name>`.
pub async fn catalog_service(
    State(state): State<Arc<ConsulState>>,
    Path(name): Path<String>,
    consul: ConsulReq,
    opts: ReadOpts,
) -> Response {
    let authz = match consul.authorize(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let readable = authz.can_read_service(&name) && authz.can_read_node(NODE_NAME);
    let b = opts.blocking;
    let (index, list) = state
        .blocking(WatchTarget::Catalog, b.index, b.wait, |db| {
            let c = &db.catalog;
            let list: Vec<Value> = c
                .services
                .values()
                .filter(|s| readable && s.name == name)
                .map(|s| s.catalog_json())
                .collect();
            (c.index, list)
        })
        .await;
    with_consistency(
        with_index(json(StatusCode::OK, &Value::Array(list)), index),
        opts.consistency,
    )
}

/// GET `/v1/catalog/services`.
pub async fn catalog_services(
    State(state): State<Arc<ConsulState>>,
    consul: ConsulReq,
    opts: ReadOpts,
) -> Response {
    let authz = match consul.authorize(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let node_ok = authz.can_read_node(NODE_NAME);
    let b = opts.blocking;
    let (index, map) = state
        .blocking(WatchTarget::Catalog, b.index, b.wait, |db| {
            let c = &db.catalog;
            let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for s in c.services.values() {
                if node_ok && authz.can_read_service(&s.name) {
                    let tags = map.entry(s.name.clone()).or_default();
                    for t in &s.tags {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
                }
            }
            (c.index, map)
        })
        .await;
    let body = serde_json::to_value(map).unwrap_or(Value::Null);
    with_consistency(
        with_index(json(StatusCode::OK, &body), index),
        opts.consistency,
    )
}
