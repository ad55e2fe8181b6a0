//! Vault emulator: the KV v2 secrets engine mounted at `secret/`, token auth with ACL policies,
//! and the few `sys/` endpoints clients probe.
//!
//! Wire format follows Vault's HTTP API: every success body is the generic response envelope
//! (`request_id, lease_id, renewable, lease_duration, data, wrap_info, warnings, auth`); errors are
//! `{"errors":[...]}`.
//!
//! Every request except `sys/health` carries a token (`X-Vault-Token`, or `Authorization:
//! Bearer`), and every endpoint checks it against the token's policies before doing anything, as
//! Vault's `vault/request_handling.go` does: a missing, unknown, revoked or expired token, or a
//! path the policies do not grant, is 403 with Vault's body
//! `{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`. The request path (without
//! `/v1/`) and the operation decide (see [`acl`]): GET = read, LIST or `GET ?list=true` = list
//! (on the path with a trailing `/`), DELETE = delete, PATCH = patch, POST/PUT = update — except
//! where the backend has an existence check, where a write to a path that does not exist yet is
//! `create` (KV v2 `data/`, whose check is "has metadata").
//!
//! Concepts, one file each: [`policy`] (HCL policy parsing, the `default` policy), [`acl`]
//! (merging policies and matching paths), [`tokens`] (the token store and its tree), `sys`
//! (health, mounts, policy CRUD), `auth` (the token auth method's endpoints), `kv2` (KV v2),
//! `transit` (the transit engine's signing keys, mounted through `sys/mounts/<path>`).
//!
//! Knowingly not emulated: Sentinel (EGP/RGP), namespaces, identity (entities, groups, identity
//! policies and templating), token roles, periodic and batch tokens, `num_uses`, response
//! wrapping, control groups, parameter constraints in policies, other auth methods (JWT,
//! AppRole) and secrets engines other than KV v2 at `secret/` and transit (signing subset).
//! `docs/devstack.md` lists them with the real server's behaviour.

pub mod acl;
mod auth;
mod kv2;
pub mod policy;
mod sys;
pub mod tokens;
mod transit;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

pub use kv2::{KvStore, KvVersion};

use acl::{Acl, Decision, Op};
use policy::Policy;
use tokens::{TokenEntry, TokenStore};

/// The body of every 403, exactly as Vault writes it (a go-multierror of
/// `logical.ErrPermissionDenied`).
pub const PERMISSION_DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";

/// Shared state of the Vault emulator: tokens, policies and the `secret/` KV v2 store.
#[derive(Debug)]
pub struct VaultState {
    root_token: String,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) kv: KvStore,
    pub(crate) tokens: TokenStore,
    /// ACL policies by lowercased name; `default` is always there, `root` never stored.
    pub(crate) policies: BTreeMap<String, Policy>,
    /// Secrets engines by mount path (no trailing `/`) → type: `secret` → `kv` always, plus
    /// the `transit` mounts enabled through `sys/mounts/<path>`.
    pub(crate) mounts: BTreeMap<String, String>,
    /// The keys of the transit mounts.
    pub(crate) transit: transit::TransitStore,
}

impl VaultState {
    /// Creates the state with the dev root token (`--vault-token`, default `root`) and Vault's
    /// built-in `default` policy.
    pub fn new(root_token: &str) -> Arc<VaultState> {
        let mut policies = BTreeMap::new();
        if let Ok(p) = policy::parse("default", policy::DEFAULT_POLICY) {
            policies.insert(p.name.clone(), p);
        }
        Arc::new(VaultState {
            root_token: root_token.to_string(),
            inner: Mutex::new(Inner {
                kv: KvStore::default(),
                tokens: TokenStore::with_root(root_token),
                policies,
                mounts: BTreeMap::from([("secret".to_string(), "kv".to_string())]),
                transit: transit::TransitStore::default(),
            }),
        })
    }

    /// The dev root token.
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// Writes a secret version directly (test setup without HTTP); returns the new version number.
    ///
    /// Errors: none besides the CAS rules, which this bypasses.
    pub fn put_secret(&self, path: &str, data: serde_json::Map<String, Value>) -> u64 {
        self.lock().kv.write(path, data, None).unwrap_or(0)
    }

    /// The current (latest, not deleted) data of a secret, if any.
    pub fn current_secret(&self, path: &str) -> Option<serde_json::Map<String, Value>> {
        let inner = self.lock();
        inner.kv.read(path, None).ok().and_then(|v| v.data.clone())
    }

    /// Whether `token` is a valid (not revoked, not expired) token now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        self.lock()
            .tokens
            .lookup(token, chrono::Utc::now())
            .is_some()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters for an emulator; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token `id` with its ACL, when valid.
    fn caller(&self, id: &str) -> Option<Caller> {
        let mut inner = self.lock();
        let token = inner.tokens.lookup(id, chrono::Utc::now())?;
        let acl = Acl::new(
            token.is_root(),
            token.policies.iter().filter_map(|p| inner.policies.get(p)),
        );
        Some(Caller { token, acl })
    }
}

/// The token of a request: `X-Vault-Token`, else `Authorization: Bearer <token>`.
fn request_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty())
}

/// The authenticated caller of a request: its token and the ACL of its policies. Extracting it
/// answers 403 for a missing, unknown, revoked or expired token.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) token: TokenEntry,
    pub(crate) acl: Acl,
}

impl FromRequestParts<Arc<VaultState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<VaultState>,
    ) -> Result<Self, Self::Rejection> {
        request_token(&parts.headers)
            .and_then(|t| state.caller(&t))
            .ok_or_else(denied)
    }
}

impl Caller {
    /// Checks `op` on `path` (without `/v1/`). Errors: the 403 response.
    pub(crate) fn require(&self, path: &str, op: Op) -> Result<Decision, ApiError> {
        let d = self.acl.allows(path, op);
        if d.allowed { Ok(d) } else { Err(denied()) }
    }
}

/// The query parameters Vault endpoints read.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Params {
    /// `true` turns a GET into a LIST.
    pub(crate) list: Option<String>,
    /// KV v2 version to read.
    pub(crate) version: Option<String>,
}

/// The operation of a request, from its method and `?list=true` (Vault's `http/logical.go`).
/// POST and PUT are [`Op::Update`]; handlers with an existence check turn them into
/// [`Op::Create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Operation(pub(crate) Op);

impl<S: Send + Sync> FromRequestParts<S> for Operation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let list = Query::<Params>::try_from_uri(&parts.uri)
            .map(|q| q.0.list.is_some_and(|v| v == "true"))
            .unwrap_or(false);
        let op = match parts.method.as_str() {
            "LIST" => Op::List,
            "GET" if list => Op::List,
            "GET" => Op::Read,
            "POST" | "PUT" => Op::Update,
            "DELETE" => Op::Delete,
            "PATCH" => Op::Patch,
            _ => return Err(unsupported()),
        };
        Ok(Operation(op))
    }
}

/// The Vault HTTP API router (`/v1/secret/...`, `/v1/sys/...`, `/v1/auth/token/...`).
pub fn router(state: Arc<VaultState>) -> axum::Router {
    axum::Router::new()
        .merge(sys::routes())
        .merge(auth::routes())
        .merge(kv2::routes())
        .merge(transit::routes())
        .route("/v1/sys/health", get(sys::health))
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

/// An error answer of the Vault API: a status and the `errors` list of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    status: StatusCode,
    errors: Vec<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "errors": self.errors }))).into_response()
    }
}

/// `{"errors":[...]}` with `status`.
pub(crate) fn errors(status: StatusCode, errs: &[&str]) -> ApiError {
    ApiError {
        status,
        errors: errs.iter().map(|e| (*e).to_string()).collect(),
    }
}

/// 403 with Vault's permission-denied body.
pub(crate) fn denied() -> ApiError {
    errors(StatusCode::FORBIDDEN, &[PERMISSION_DENIED])
}

/// 405 for an operation a path does not support.
pub(crate) fn unsupported() -> ApiError {
    errors(
        StatusCode::METHOD_NOT_ALLOWED,
        &["1 error occurred:\n\t* unsupported operation\n\n"],
    )
}

/// Parses a JSON body (an empty body is `{}`). Errors: Vault's 400.
pub(crate) fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| {
        errors(
            StatusCode::BAD_REQUEST,
            &[&format!("failed to parse JSON input: {e}")],
        )
    })
}

/// Any other path: 403 for a bad token (Vault checks the token before routing), else 404.
async fn not_found(caller: Result<Caller, ApiError>) -> Response {
    match caller {
        Ok(_) => errors(StatusCode::NOT_FOUND, &[]).into_response(),
        Err(r) => r.into_response(),
    }
}
