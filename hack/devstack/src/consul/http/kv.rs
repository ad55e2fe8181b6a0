//! `/v1/kv/<key>` GET / PUT / DELETE (`api-docs/kv.mdx`, `agent/kvs_endpoint.go`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    MAX_VALUE_SIZE, Query, json, parse_blocking, parse_consistency, text, token, with_consistency,
    with_index,
};
use crate::consul::ConsulState;
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

/// The key from the path, percent-decoded (npm `consul` sends `/` as `%2F`).
fn key_of(uri: &Uri) -> Result<String, Response> {
    let path = uri.path();
    let raw = path
        .strip_prefix("/v1/kv/")
        .or_else(|| path.strip_prefix("/v1/kv"))
        .unwrap_or_default();
    percent_decode_str(raw)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| text(StatusCode::BAD_REQUEST, "Invalid key name: not UTF-8"))
}

fn missing_key() -> Response {
    text(StatusCode::BAD_REQUEST, "Missing key name")
}

enum Read {
    One(Option<DirEntry>),
    List(Vec<DirEntry>),
    Keys(Vec<String>),
}

/// GET: single key, `?recurse`, `?keys[&separator=]`, `?raw`, blocking with `?index`/`?wait`.
pub async fn get(State(state): State<Arc<ConsulState>>, uri: Uri, headers: HeaderMap) -> Response {
    let q = Query::parse(uri.query());
    let _ = token(&headers, &q);
    let key = match key_of(&uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let consistency = match parse_consistency(&q) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let blocking = match parse_blocking(&q) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (keys, recurse) = (q.has("keys"), q.has("recurse"));
    if !keys && !recurse && key.is_empty() {
        return missing_key();
    }
    // kvs_endpoint.go also accepts the historic spelling "seperator".
    let separator = q
        .get("separator")
        .or_else(|| q.get("seperator"))
        .unwrap_or_default()
        .to_string();
    let target = if keys || recurse {
        WatchTarget::Prefix(key.clone())
    } else {
        WatchTarget::Key(key.clone())
    };
    let (index, read) = state
        .blocking(target, blocking.index, blocking.wait, |db: &mut Db| {
            if keys {
                let (i, k) = db.kv.keys(&key, &separator);
                (i, Read::Keys(k))
            } else if recurse {
                let (i, l) = db.kv.list(&key);
                (i, Read::List(l))
            } else {
                let (i, e) = db.kv.get(&key);
                (i, Read::One(e.cloned()))
            }
        })
        .await;
    let not_found = || StatusCode::NOT_FOUND.into_response();
    let resp = match read {
        Read::Keys(k) if k.is_empty() && !key.is_empty() => not_found(),
        Read::Keys(k) => json(StatusCode::OK, &json!(k)),
        Read::List(l) if l.is_empty() => not_found(),
        Read::List(l) => json(
            StatusCode::OK,
            &Value::Array(l.iter().map(entry_json).collect()),
        ),
        Read::One(None) => not_found(),
        Read::One(Some(e)) if q.has("raw") => (
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
    };
    with_consistency(with_index(resp, index), consistency)
}

fn bool_answer(b: bool) -> Response {
    json(StatusCode::OK, &Value::Bool(b))
}

/// Waits until commit `index` is durable; answers 500 if persisting failed.
pub(super) async fn wait_durable(
    state: &ConsulState,
    before: u64,
    after: u64,
) -> Result<(), Response> {
    if after > before
        && let Err(e) = state.durable(after).await
    {
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
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = Query::parse(uri.query());
    let _ = token(&headers, &q);
    let key = match key_of(&uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
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
    let flags = match parse_u64(&q, "flags", "flags") {
        Ok(f) => f.unwrap_or(0),
        Err(r) => return r,
    };
    let mode = if q.has("cas") {
        match parse_u64(&q, "cas", "cas index") {
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
    let (result, before, after) = {
        let mut db = state.lock();
        let before = db.raft_index;
        let r = db.put(entry, &mode, Instant::now());
        (r, before, db.raft_index)
    };
    if let Err(r) = wait_durable(&state, before, after).await {
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
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let q = Query::parse(uri.query());
    let _ = token(&headers, &q);
    let key = match key_of(&uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
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
        match parse_u64(&q, "cas", "cas index") {
            Ok(c) => DeleteMode::Cas(c.unwrap_or(0)),
            Err(r) => return r,
        }
    } else {
        DeleteMode::Key
    };
    let (ok, before, after) = {
        let mut db = state.lock();
        let before = db.raft_index;
        let ok = db.delete(&key, &mode);
        (ok, before, db.raft_index)
    };
    if let Err(r) = wait_durable(&state, before, after).await {
        return r;
    }
    bool_answer(ok)
}
