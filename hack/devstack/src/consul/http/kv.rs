//! `/v1/kv/<key>` GET / PUT / DELETE (`api-docs/kv.mdx`, `agent/kvs_endpoint.go`), with the ACL
//! checks of `agent/consul/kvs_endpoint.go`: a single-key read needs `key:read` (403 otherwise);
//! `?recurse` and `?keys` drop what the token cannot read (404 when nothing readable is left);
//! every write needs `key:write` on the key, a recursive delete write on the whole prefix
//! (`KeyWritePrefix`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::extract::{ConsulReq, KvKey, ReadOpts, denied};
use super::{MAX_VALUE_SIZE, Query, json, text, with_consistency, with_index};
use crate::consul::ConsulState;
use crate::consul::acl::Authorizer;
use crate::consul::db::{Db, DeleteMode, KvError, PutMode};
use crate::consul::store::DirEntry;
use crate::consul::watch::WatchTarget;

/// The API JSON of an entry: `{LockIndex, Key, Flags, Value (base64 | null), Session?,
/// CreateIndex, ModifyIndex}`; an empty value is `null`, as Consul stores it.
pub fn entry_json(e: &DirEntry) -> Value {
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": e.key,
        "Flags": e.flags,
        "Value": if e.value.is_empty() {
            Value::Null
        } else {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
        },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if let (Some(s), Some(obj)) = (&e.session, v.as_object_mut()) {
        obj.insert("Session".into(), Value::String(s.clone()));
    }
    v
}

fn missing_key() -> Response {
    text(StatusCode::BAD_REQUEST, "Missing key name")
}

/// What a GET reads: one key, a subtree (`?recurse`) or key names (`?keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReadMode {
    One { raw: bool },
    Tree,
    Keys { separator: String },
}

impl ReadMode {
    /// Errors: 400 `Missing key name` for a single-key read of the root.
    fn of(q: &Query, key: &str) -> Result<ReadMode, Response> {
        if q.has("keys") {
            // kvs_endpoint.go also accepts the historic spelling "seperator".
            let separator = q.get("separator").or_else(|| q.get("seperator"));
            Ok(ReadMode::Keys {
                separator: separator.unwrap_or_default().to_string(),
            })
        } else if q.has("recurse") {
            Ok(ReadMode::Tree)
        } else if key.is_empty() {
            Err(missing_key())
        } else {
            Ok(ReadMode::One { raw: q.has("raw") })
        }
    }
}

enum Read {
    One(Option<DirEntry>),
    List(Vec<DirEntry>),
    Keys(Vec<String>),
}

/// Runs one read of `mode` on `db`, keeping only what `authz` may read (`KVS.List` and
/// `KVS.ListKeys` filter with `FilterDirEnt`; the index still counts every key). The flag says
/// whether anything was dropped (`ResultsFilteredByACLs`).
fn read(db: &Db, key: &str, mode: &ReadMode, authz: &Authorizer) -> (u64, Read, bool) {
    let dropped = std::cell::Cell::new(false);
    let readable = |k: &str| {
        let ok = authz.can_read_key(k);
        if !ok {
            dropped.set(true);
        }
        ok
    };
    let (i, r) = match mode {
        ReadMode::Keys { separator } => {
            let (i, k) = db.kv.keys_where(key, separator, readable);
            (i, Read::Keys(k))
        }
        ReadMode::Tree => {
            let (i, mut l) = db.kv.list(key);
            if !authz.is_unrestricted() {
                l.retain(|e| readable(&e.key));
            }
            (i, Read::List(l))
        }
        ReadMode::One { .. } => {
            let (i, e) = db.kv.get(key);
            (i, Read::One(e.cloned()))
        }
    };
    (i, r, dropped.get())
}

/// The answer of a read: 404 with an empty body when nothing (readable) is there, except
/// `?keys` on the root, which answers `[]`.
fn answer(read: Read, key: &str, mode: &ReadMode) -> Response {
    let not_found = || StatusCode::NOT_FOUND.into_response();
    match read {
        Read::Keys(k) if k.is_empty() && !key.is_empty() => not_found(),
        Read::Keys(k) => json(StatusCode::OK, &json!(k)),
        Read::List(l) if l.is_empty() => not_found(),
        Read::List(l) => json(
            StatusCode::OK,
            &Value::Array(l.iter().map(entry_json).collect()),
        ),
        Read::One(None) => not_found(),
        Read::One(Some(e)) if matches!(mode, ReadMode::One { raw: true }) => (
            StatusCode::OK,
            [
                (axum::http::header::CONTENT_TYPE, "text/plain"),
                (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (axum::http::header::CONTENT_SECURITY_POLICY, "sandbox"),
            ],
            e.value,
        )
            .into_response(),
        Read::One(Some(e)) => json(StatusCode::OK, &json!([entry_json(&e)])),
    }
}

/// GET: single key, `?recurse`, `?keys[&separator=]`, `?raw`, blocking with `?index`/`?wait`.
/// A single key needs `key:read` (403 even when the key is missing, as `KVS.Get` checks before
/// answering); lists silently drop what the token cannot read.
pub async fn get(
    State(state): State<Arc<ConsulState>>,
    KvKey(key): KvKey,
    req: ConsulReq,
    opts: ReadOpts,
) -> Response {
    let mode = match ReadMode::of(&req.query, &key) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let authz = match req.authorize(&state) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if matches!(mode, ReadMode::One { .. })
        && let Err(e) = authz.key_read(&key)
    {
        return denied(e);
    }
    let target = match mode {
        ReadMode::One { .. } => WatchTarget::Key(key.clone()),
        _ => WatchTarget::Prefix(key.clone()),
    };
    let b = opts.blocking;
    let (index, (result, filtered)) = state
        .blocking(target, b.index, b.wait, |db: &mut Db| {
            let (i, r, filtered) = read(db, &key, &mode, &authz);
            (i, (r, filtered))
        })
        .await;
    let mut resp = with_consistency(
        with_index(answer(result, &key, &mode), index),
        opts.consistency,
    );
    if filtered {
        // setResultsFilteredByACLs (agent/http.go): only when something was dropped.
        resp.headers_mut().insert(
            "x-consul-results-filtered-by-acls",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    resp
}

fn bool_answer(b: bool) -> Response {
    json(StatusCode::OK, &Value::Bool(b))
}

/// Waits until every commit up to `after` (the raft index when the answer was decided) is
/// durable; answers 500 if persisting failed. Also when this request committed nothing (a failed
/// CAS, a read-only txn): its answer may still reflect another request's commit that is not on
/// disk yet, which Consul never shows (see `persist`).
pub(super) async fn wait_durable(state: &ConsulState, after: u64) -> Result<(), Response> {
    if let Err(e) = state.durable(after).await {
        tracing::error!(error = %e, "consul emulator: persisting failed");
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to persist the write: {e}"),
        ));
    }
    Ok(())
}

fn parse_u64(q: &Query, name: &str, what: &str) -> Result<Option<u64>, Response> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|e| {
            text(
                StatusCode::BAD_REQUEST,
                format!("Invalid {what}: {v:?} is not an unsigned 64-bit integer ({e})"),
            )
        }),
    }
}

/// PUT: the raw body is the value; `?flags`, and one of `?cas`, `?acquire`, `?release`.
pub async fn put(
    State(state): State<Arc<ConsulState>>,
    KvKey(key): KvKey,
    req: ConsulReq,
    body: Bytes,
) -> Response {
    let q = &req.query;
    if key.is_empty() {
        return missing_key();
    }
    let modes = ["cas", "acquire", "release"]
        .iter()
        .filter(|m| q.has(m))
        .count();
    if modes > 1 {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Conflicting flags: {}", q.raw()),
        );
    }
    let flags = match parse_u64(q, "flags", "flags") {
        Ok(f) => f.unwrap_or(0),
        Err(r) => return r,
    };
    let mode = if q.has("cas") {
        match parse_u64(q, "cas", "cas index") {
            Ok(c) => PutMode::Cas(c.unwrap_or(0)),
            Err(r) => return r,
        }
    } else if let Some(s) = q.get("acquire") {
        PutMode::Acquire(s.to_string())
    } else if let Some(s) = q.get("release") {
        PutMode::Release(s.to_string())
    } else {
        PutMode::Set
    };
    if body.len() > MAX_VALUE_SIZE {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See \
                 https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
                body.len()
            ),
        );
    }
    let entry = Db::new_entry(&key, body.to_vec(), flags);
    let (result, after) = {
        let mut db = state.lock();
        // kvsPreApply: every write verb, acquire and release included, needs key:write.
        if let Err(e) = db
            .authorize(req.token.as_deref())
            .and_then(|a| a.key_write(&key))
        {
            return denied(e);
        }
        let r = db.put(entry, &mode, Instant::now());
        (r, db.raft_index)
    };
    if let Err(r) = wait_durable(&state, after).await {
        return r;
    }
    match result {
        Ok(b) => bool_answer(b),
        Err(e @ KvError::InvalidSession(_)) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// DELETE: one key, `?recurse` (subtree) or `?cas` (compare `ModifyIndex`).
pub async fn delete(
    State(state): State<Arc<ConsulState>>,
    KvKey(key): KvKey,
    req: ConsulReq,
) -> Response {
    let q = &req.query;
    if q.has("recurse") && q.has("cas") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Conflicting flags: {}", q.raw()),
        );
    }
    let mode = if q.has("recurse") {
        DeleteMode::Tree
    } else if key.is_empty() {
        return missing_key();
    } else if q.has("cas") {
        match parse_u64(q, "cas", "cas index") {
            Ok(c) => DeleteMode::Cas(c.unwrap_or(0)),
            Err(r) => return r,
        }
    } else {
        DeleteMode::Key
    };
    let (ok, after) = {
        let mut db = state.lock();
        // A recursive delete needs write on the prefix and on every rule under it.
        let allowed = db.authorize(req.token.as_deref()).and_then(|a| match mode {
            DeleteMode::Tree => a.key_write_prefix(&key),
            _ => a.key_write(&key),
        });
        if let Err(e) = allowed {
            return denied(e);
        }
        let ok = db.delete(&key, &mode);
        (ok, db.raft_index)
    };
    if let Err(r) = wait_durable(&state, after).await {
        return r;
    }
    bool_answer(ok)
}
