//! `sys/` endpoints: health, mounts, and ACL policy CRUD (Vault API docs "/sys/policies/acl" and
//! the older "/sys/policy"; `vault/logical_system.go`, `vault/policy_store.go`).
//!
//! - `sys/policies/acl/<name>`: GET → `{name, policy}`; POST/PUT `{"policy": "<HCL or JSON>"}` →
//!   204 (400 `Failed to parse policy: ...`); DELETE → 204; LIST (or `GET ?list=true`) on
//!   `sys/policies/acl` → `{keys}` including `default` and `root`.
//! - `sys/policy/<name>`: the same with `{name, rules}` on reads and `policy` or `rules` on
//!   writes; GET `sys/policy` → `{policies, keys}`.
//! - `root` cannot be written (`cannot update "root" policy`) nor deleted; `default` cannot be
//!   deleted (`cannot delete "default" policy`); names are lowercased.
//! - Each is checked against the caller's ACL like any path (update for writes: these paths have
//!   no existence check).
//! - `sys/mounts/<path>` (Vault API docs "/sys/mounts"; `vault/logical_system.go`
//!   `handleMount`/`handleUnmount`, `vault/mount.go`): POST/PUT `{"type": "transit", ...}` enables
//!   the transit engine at `<path>/` (204); a path already mounted is 400 `path is already in
//!   use at <path>/`; a type other than `transit` is 400 (`kv` at another path and every other
//!   engine are not emulated); DELETE unmounts a transit mount and forgets its keys (204, also
//!   when nothing is mounted there, as Vault does); `secret/` cannot be unmounted here. GET
//!   `sys/mounts` lists `secret/` and every transit mount. Each needs `update`/`delete`/`read` on
//!   its path.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::acl::Op;
use super::{
    ApiError, Caller, Operation, VaultState, denied, envelope, errors, json_body, policy,
    unsupported,
};

type S = State<Arc<VaultState>>;

pub(super) fn routes() -> axum::Router<Arc<VaultState>> {
    axum::Router::new()
        .route("/v1/sys/internal/ui/mounts/{*path}", get(ui_mount))
        .route("/v1/sys/mounts", get(mounts))
        .route("/v1/sys/mounts/{*path}", any(mount_op))
        .route("/v1/sys/policies/acl", any(list_acl))
        .route("/v1/sys/policies/acl/", any(list_acl))
        .route("/v1/sys/policies/acl/{name}", any(acl_policy))
        .route("/v1/sys/policy", get(list_legacy))
        .route("/v1/sys/policy/{name}", any(legacy_policy))
}

/// `GET /v1/sys/health` (unauthenticated).
pub(super) async fn health() -> Json<Value> {
    Json(json!({
        "initialized": true,
        "sealed": false,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": chrono::Utc::now().timestamp(),
        "version": "1.15.0",
        "cluster_name": "vault-cluster-devstack",
        "cluster_id": "00000000-0000-0000-0000-000000000000",
    }))
}

fn kv_mount() -> Value {
    json!({
        "type": "kv",
        "description": "key/value secret storage",
        "options": { "version": "2" },
        "path": "secret/",
        "local": false,
        "seal_wrap": false,
        "config": { "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false },
    })
}

/// The envelope with `data`'s fields repeated at the top level, as `sys/` answers for
/// backwards compatibility.
fn sys_envelope(data: Value) -> Value {
    let mut body = envelope(data.clone());
    if let (Some(obj), Some(d)) = (body.as_object_mut(), data.as_object()) {
        for (k, v) in d {
            obj.insert(k.clone(), v.clone());
        }
    }
    body
}

/// `sys/internal/ui/mounts/<path>`: the mount of `path` when the caller's ACL grants anything
/// under it (Vault's `hasMountAccess`), else 403.
async fn ui_mount(caller: Caller, Path(path): Path<String>) -> Response {
    if path == "secret" || path.starts_with("secret/") {
        if !caller.acl.has_mount_access("secret/") {
            return denied().into_response();
        }
        Json(envelope(kv_mount())).into_response()
    } else {
        errors(
            StatusCode::FORBIDDEN,
            &[
                "preflight capability check returned 403, please ensure client's policies grant access to the path",
            ],
        )
        .into_response()
    }
}

fn transit_mount(path: &str) -> Value {
    json!({
        "type": "transit",
        "description": "",
        "options": null,
        "path": format!("{path}/"),
        "local": false,
        "seal_wrap": false,
        "config": { "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false },
    })
}

async fn mounts(State(st): S, caller: Caller) -> Result<Response, ApiError> {
    caller.require("sys/mounts", Op::Read)?;
    let mut all = serde_json::Map::new();
    for (path, kind) in &st.lock().mounts {
        let m = if kind == "kv" {
            kv_mount()
        } else {
            transit_mount(path)
        };
        all.insert(format!("{path}/"), m);
    }
    Ok(Json(sys_envelope(Value::Object(all))).into_response())
}

/// `sys/mounts/<path>`: enable (POST/PUT) or disable (DELETE) a transit engine.
async fn mount_op(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    Path(path): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = path.trim_matches('/').to_string();
    caller.require(&format!("sys/mounts/{path}"), op)?;
    match op {
        Op::Update => {
            let v = json_body(&body)?;
            let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
            if path.is_empty() || path.contains('/') {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    &["the dev stack mounts engines at one-segment paths only"],
                ));
            }
            if kind != "transit" {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    &[&format!(
                        "secrets engine type {kind:?} is not emulated by the dev stack (only transit)"
                    )],
                ));
            }
            let mut inner = st.lock();
            if inner.mounts.contains_key(&path) || path == "sys" || path == "auth" {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    &[&format!("path is already in use at {path}/")],
                ));
            }
            inner.mounts.insert(path, kind.to_string());
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Op::Delete => {
            let mut inner = st.lock();
            if inner.mounts.get(&path).is_some_and(|k| k != "transit") {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    &["the dev stack cannot unmount its KV v2 engine"],
                ));
            }
            inner.mounts.remove(&path);
            inner.transit.unmount(&path);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(unsupported()),
    }
}

fn policy_names(state: &VaultState) -> Vec<String> {
    let mut names: Vec<String> = state.lock().policies.keys().cloned().collect();
    names.push("root".to_string());
    names.sort();
    names
}

async fn list_acl(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
) -> Result<Response, ApiError> {
    if op != Op::List {
        return Err(unsupported());
    }
    caller.require("sys/policies/acl/", Op::List)?;
    Ok(Json(sys_envelope(json!({ "keys": policy_names(&st) }))).into_response())
}

async fn list_legacy(State(st): S, caller: Caller) -> Result<Response, ApiError> {
    caller.require("sys/policy", Op::Read)?;
    let names = policy_names(&st);
    Ok(Json(sys_envelope(json!({ "keys": names, "policies": names }))).into_response())
}

/// Which API a policy request came through: the field its text is read back in.
#[derive(Clone, Copy)]
enum Flavour {
    /// `sys/policies/acl`: `policy`.
    Acl,
    /// `sys/policy`: `rules`.
    Legacy,
}

async fn acl_policy(
    state: S,
    caller: Caller,
    op: Operation,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    policy_op(state, caller, op, &name, &body, Flavour::Acl).await
}

async fn legacy_policy(
    state: S,
    caller: Caller,
    op: Operation,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    policy_op(state, caller, op, &name, &body, Flavour::Legacy).await
}

async fn policy_op(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    name: &str,
    body: &[u8],
    flavour: Flavour,
) -> Result<Response, ApiError> {
    let name = name.to_lowercase();
    let acl_path = match flavour {
        Flavour::Acl => format!("sys/policies/acl/{name}"),
        Flavour::Legacy => format!("sys/policy/{name}"),
    };
    match op {
        Op::Read => {
            caller.require(&acl_path, Op::Read)?;
            let text = if name == "root" {
                Some(String::new())
            } else {
                st.lock().policies.get(&name).map(|p| p.text.clone())
            };
            let Some(text) = text else {
                return Err(errors(StatusCode::NOT_FOUND, &[]));
            };
            let data = match flavour {
                Flavour::Acl => json!({ "name": name, "policy": text }),
                Flavour::Legacy => json!({ "name": name, "rules": text }),
            };
            Ok(Json(sys_envelope(data)).into_response())
        }
        Op::Update => {
            caller.require(&acl_path, Op::Update)?;
            if name == "root" {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    &["cannot update \"root\" policy"],
                ));
            }
            let v = json_body(body)?;
            let text = v
                .get("policy")
                .or_else(|| v.get("rules"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let parsed = policy::parse(&name, &text).map_err(|e| {
                errors(
                    StatusCode::BAD_REQUEST,
                    &[&format!("Failed to parse policy: {e}")],
                )
            })?;
            st.lock().policies.insert(name, parsed);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Op::Delete => {
            caller.require(&acl_path, Op::Delete)?;
            if name == "root" || name == "default" {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    &[&format!("cannot delete {name:?} policy")],
                ));
            }
            st.lock().policies.remove(&name);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(unsupported()),
    }
}
