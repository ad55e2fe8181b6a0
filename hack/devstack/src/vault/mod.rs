//! Vault emulator: the KV v2 secrets engine mounted at `secret/`, token auth with one dev root
//! token, and the few `sys/` endpoints clients probe (`sys/health`, `sys/internal/ui/mounts/secret`,
//! `auth/token/lookup-self`).
//!
//! Wire format follows Vault's HTTP API: every success body is the generic response envelope
//! (`request_id, lease_id, renewable, lease_duration, data, wrap_info, warnings, auth`); errors are
//! `{"errors":[...]}` with 403 for a missing or wrong token and 404 for a missing path.

mod kv2;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

pub use kv2::{KvStore, KvVersion};

/// Shared state of the Vault emulator: the root token and the `secret/` KV v2 store.
#[derive(Debug)]
pub struct VaultState {
    root_token: String,
    kv: Mutex<KvStore>,
}

impl VaultState {
    /// Creates the state with the dev root token (`--vault-token`, default `root`).
    pub fn new(root_token: &str) -> Arc<VaultState> {
        Arc::new(VaultState {
            root_token: root_token.to_string(),
            kv: Mutex::new(KvStore::default()),
        })
    }

    /// Writes a secret version directly (test setup without HTTP); returns the new version number.
    ///
    /// Errors: none besides the CAS rules, which this bypasses.
    pub fn put_secret(&self, path: &str, data: serde_json::Map<String, Value>) -> u64 {
        let mut kv = self.lock();
        kv.write(path, data, None).unwrap_or(0)
    }

    /// The current (latest, not deleted) data of a secret, if any.
    pub fn current_secret(&self, path: &str) -> Option<serde_json::Map<String, Value>> {
        let kv = self.lock();
        kv.read(path, None).ok().and_then(|v| v.data.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KvStore> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // for an emulator; keep serving.
        self.kv.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get("x-vault-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_string)
            });
        token.as_deref() == Some(self.root_token.as_str())
    }
}

/// The Vault HTTP API router (`/v1/secret/...`, `/v1/sys/health`, ...).
pub fn router(state: Arc<VaultState>) -> axum::Router {
    axum::Router::new()
        .route("/v1/sys/health", get(health))
        .route("/v1/sys/internal/ui/mounts/{*path}", get(ui_mount))
        .route("/v1/sys/mounts", get(mounts))
        .route("/v1/auth/token/lookup-self", get(lookup_self))
        .route("/v1/secret/{*rest}", any(kv2::handle))
        .fallback(not_found)
        .with_state(state)
}

/// Vault's generic response envelope around `data`.
pub(crate) fn envelope(data: Value) -> Value {
    json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
        "mount_type": "kv",
    })
}

/// `{"errors":[...]}` with `status`.
pub(crate) fn errors(status: StatusCode, errs: &[&str]) -> Response {
    (status, Json(json!({ "errors": errs }))).into_response()
}

pub(crate) fn denied() -> Response {
    errors(StatusCode::FORBIDDEN, &["permission denied"])
}

async fn not_found() -> Response {
    errors(StatusCode::NOT_FOUND, &[])
}

async fn health() -> Json<Value> {
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

async fn ui_mount(
    State(state): State<Arc<VaultState>>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    if !state.authorized(&headers) {
        return denied();
    }
    if path == "secret" || path.starts_with("secret/") {
        Json(envelope(kv_mount())).into_response()
    } else {
        errors(
            StatusCode::FORBIDDEN,
            &[
                "preflight capability check returned 403, please ensure client's policies grant access to the path",
            ],
        )
    }
}

async fn mounts(State(state): State<Arc<VaultState>>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return denied();
    }
    let m = json!({ "secret/": kv_mount() });
    let mut body = envelope(m.clone());
    if let (Some(obj), Some(mo)) = (body.as_object_mut(), m.as_object()) {
        for (k, v) in mo {
            obj.insert(k.clone(), v.clone());
        }
    }
    Json(body).into_response()
}

async fn lookup_self(State(state): State<Arc<VaultState>>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return denied();
    }
    Json(envelope(json!({
        "accessor": "devstack-root-accessor",
        "display_name": "root",
        "id": state.root_token,
        "policies": ["root"],
        "ttl": 0,
        "renewable": false,
        "type": "service",
    })))
    .into_response()
}

impl VaultState {
    pub(crate) fn kv(&self) -> std::sync::MutexGuard<'_, KvStore> {
        self.lock()
    }
    pub(crate) fn is_authorized(&self, headers: &HeaderMap) -> bool {
        self.authorized(headers)
    }
}
