//! KV v2 secrets engine at `secret/` (Vault docs, "KV Secrets Engine - Version 2 (API)"):
//! `data/<path>` read (`?version=N`), write (`options.cas`), soft delete; `delete/<path>`
//! (soft-delete versions); `metadata/<path>` read, LIST (HTTP method `LIST` or `GET ?list=true`)
//! and delete (destroys all versions).
//!
//! ACL paths are the request paths, as in Vault (the policy names `secret/data/...` for data and
//! `secret/metadata/...` for listing): GET `data/x` needs `read` on `secret/data/x`; a write
//! needs `create` when `x` has no metadata yet and `update` otherwise (the plugin's existence
//! check); LIST `metadata/x` needs `list` on `secret/metadata/x/`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::acl::Op;
use super::{
    ApiError, Caller, Operation, Params, VaultState, envelope, errors, json_body, unsupported,
};

/// One version of a secret.
#[derive(Debug, Clone)]
pub struct KvVersion {
    /// The key/value data; `None` once destroyed.
    pub data: Option<Map<String, Value>>,
    /// When written.
    pub created_time: DateTime<Utc>,
    /// When soft-deleted, if it was.
    pub deletion_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Secret {
    versions: BTreeMap<u64, KvVersion>,
    current: u64,
    created_time: DateTime<Utc>,
    updated_time: DateTime<Utc>,
}

/// Errors of KV operations, with Vault's messages.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KvError {
    /// No such secret or version (404).
    #[error("not found")]
    NotFound,
    /// The version was soft-deleted (404 with the metadata).
    #[error("deleted")]
    Deleted,
    /// `options.cas` did not match the current version (400).
    #[error("check-and-set parameter did not match the current version")]
    CasMismatch,
}

/// The secrets of one KV v2 mount, keyed by path (no leading or trailing `/`).
#[derive(Debug, Default)]
pub struct KvStore {
    secrets: BTreeMap<String, Secret>,
}

impl KvStore {
    /// Writes a new version; `cas` = expected current version (0 = only if absent).
    ///
    /// Errors: [`KvError::CasMismatch`].
    pub fn write(
        &mut self,
        path: &str,
        data: Map<String, Value>,
        cas: Option<u64>,
    ) -> Result<u64, KvError> {
        let now = Utc::now();
        let current = self.secrets.get(path).map_or(0, |s| s.current);
        if cas.is_some_and(|c| c != current) {
            return Err(KvError::CasMismatch);
        }
        let s = self.secrets.entry(path.to_string()).or_insert(Secret {
            versions: BTreeMap::new(),
            current: 0,
            created_time: now,
            updated_time: now,
        });
        s.current += 1;
        s.updated_time = now;
        s.versions.insert(
            s.current,
            KvVersion {
                data: Some(data),
                created_time: now,
                deletion_time: None,
            },
        );
        Ok(s.current)
    }

    /// Reads `version` (latest when `None` or 0).
    ///
    /// Errors: [`KvError::NotFound`], [`KvError::Deleted`].
    pub fn read(&self, path: &str, version: Option<u64>) -> Result<&KvVersion, KvError> {
        let s = self.secrets.get(path).ok_or(KvError::NotFound)?;
        let v = version.filter(|v| *v > 0).unwrap_or(s.current);
        let ver = s.versions.get(&v).ok_or(KvError::NotFound)?;
        if ver.deletion_time.is_some() || ver.data.is_none() {
            return Err(KvError::Deleted);
        }
        Ok(ver)
    }

    fn version_meta(&self, path: &str, version: Option<u64>) -> Option<(u64, &KvVersion)> {
        let s = self.secrets.get(path)?;
        let v = version.filter(|v| *v > 0).unwrap_or(s.current);
        s.versions.get(&v).map(|ver| (v, ver))
    }

    /// Soft-deletes the latest version (or the listed ones). Returns false when nothing exists.
    pub fn soft_delete(&mut self, path: &str, versions: Option<&[u64]>) -> bool {
        let Some(s) = self.secrets.get_mut(path) else {
            return false;
        };
        let now = Utc::now();
        let targets: Vec<u64> = versions.map_or_else(|| vec![s.current], <[u64]>::to_vec);
        for v in targets {
            if let Some(ver) = s.versions.get_mut(&v) {
                ver.deletion_time.get_or_insert(now);
            }
        }
        true
    }

    /// Keys directly under `prefix` (folders end with `/`), sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let pre = if prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.trim_end_matches('/'))
        };
        let mut keys: Vec<String> = Vec::new();
        for k in self.secrets.range(pre.clone()..) {
            let Some(rest) = k.0.strip_prefix(&pre) else {
                break;
            };
            let key = match rest.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => rest.to_string(),
            };
            if keys.last() != Some(&key) {
                keys.push(key);
            }
        }
        keys.dedup();
        keys
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn meta_json(version: u64, v: &KvVersion) -> Value {
    json!({
        "created_time": ts(&v.created_time),
        "custom_metadata": null,
        "deletion_time": v.deletion_time.as_ref().map(ts).unwrap_or_default(),
        "destroyed": v.data.is_none() && v.deletion_time.is_none(),
        "version": version,
    })
}

type S = State<Arc<VaultState>>;

/// Routes of the `secret/` mount. Each handler checks the caller's ACL on the full request path
/// first (Vault answers 403 before it knows whether the secret exists).
pub(super) fn routes() -> axum::Router<Arc<VaultState>> {
    axum::Router::new()
        .route("/v1/secret/data/{*path}", any(data))
        .route("/v1/secret/metadata", any(metadata_root))
        .route("/v1/secret/metadata/", any(metadata_root))
        .route("/v1/secret/metadata/{*path}", any(metadata))
        .route(
            "/v1/secret/delete/{*path}",
            post(delete_versions).put(delete_versions),
        )
}

fn clean(path: &str) -> String {
    path.trim_matches('/').to_string()
}

/// `secret/data/<path>`: GET reads (`read`), POST/PUT writes (`create` when the secret has no
/// metadata yet, else `update` — KV v2's existence check), DELETE soft-deletes the latest
/// version (`delete`).
async fn data(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    Path(path): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = clean(&path);
    let acl_path = format!("secret/data/{path}");
    match op {
        Op::Read => {
            caller.require(&acl_path, Op::Read)?;
            read_data(&st, &path, params.version.as_deref())
        }
        Op::Update => {
            let exists = st.lock().kv.secrets.contains_key(&path);
            caller.require(&acl_path, if exists { Op::Update } else { Op::Create })?;
            write_data(&st, &path, &body)
        }
        Op::Delete => {
            caller.require(&acl_path, Op::Delete)?;
            st.lock().kv.soft_delete(&path, None);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(unsupported()),
    }
}

fn read_data(st: &VaultState, path: &str, version: Option<&str>) -> Result<Response, ApiError> {
    let version = match version.map(str::parse::<u64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return Err(errors(
                StatusCode::BAD_REQUEST,
                &["version must be a non-negative integer"],
            ));
        }
    };
    let inner = st.lock();
    let kv = &inner.kv;
    match kv.read(path, version) {
        Ok(v) => {
            let (n, _) = kv.version_meta(path, version).unwrap_or((0, v));
            Ok(Json(envelope(
                json!({ "data": v.data, "metadata": meta_json(n, v) }),
            ))
            .into_response())
        }
        Err(KvError::Deleted) => {
            let meta = kv
                .version_meta(path, version)
                .map(|(n, v)| meta_json(n, v))
                .unwrap_or(Value::Null);
            // Vault answers a deleted version with 404 and its metadata in the envelope.
            Ok((
                StatusCode::NOT_FOUND,
                Json(envelope(json!({ "data": null, "metadata": meta }))),
            )
                .into_response())
        }
        Err(_) => Err(errors(StatusCode::NOT_FOUND, &[])),
    }
}

fn write_data(st: &VaultState, path: &str, body: &[u8]) -> Result<Response, ApiError> {
    let parsed = json_body(body)?;
    let Some(data) = parsed.get("data").and_then(Value::as_object).cloned() else {
        return Err(errors(
            StatusCode::BAD_REQUEST,
            &["no data provided: the body must be {\"data\": {...}}"],
        ));
    };
    let cas = parsed
        .get("options")
        .and_then(|o| o.get("cas"))
        .and_then(Value::as_u64);
    let mut inner = st.lock();
    let kv = &mut inner.kv;
    let n = kv
        .write(path, data, cas)
        .map_err(|e| errors(StatusCode::BAD_REQUEST, &[&e.to_string()]))?;
    let meta = kv
        .version_meta(path, Some(n))
        .map(|(n, v)| meta_json(n, v))
        .unwrap_or(Value::Null);
    Ok(Json(envelope(meta)).into_response())
}

/// `secret/delete/<path>` `{"versions": [..]}`: soft-deletes those versions (`update`).
async fn delete_versions(
    State(st): S,
    caller: Caller,
    Path(path): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = clean(&path);
    caller.require(&format!("secret/delete/{path}"), Op::Update)?;
    let versions: Vec<u64> = json_body(&body)?
        .get("versions")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    st.lock().kv.soft_delete(&path, Some(&versions));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn metadata_root(st: S, caller: Caller, op: Operation) -> Result<Response, ApiError> {
    metadata_op(st, caller, op, String::new())
}

async fn metadata(
    st: S,
    caller: Caller,
    op: Operation,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    metadata_op(st, caller, op, clean(&path))
}

/// `secret/metadata/<path>`: LIST (`list`, on the path with a trailing `/`), GET (`read`),
/// DELETE destroys every version (`delete`).
fn metadata_op(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    path: String,
) -> Result<Response, ApiError> {
    let acl_path = format!("secret/metadata/{path}");
    match op {
        Op::List => {
            let list_path = if path.is_empty() {
                acl_path
            } else {
                format!("{acl_path}/")
            };
            caller.require(&list_path, Op::List)?;
            let keys = st.lock().kv.list(&path);
            if keys.is_empty() {
                return Err(errors(StatusCode::NOT_FOUND, &[]));
            }
            Ok(Json(envelope(json!({ "keys": keys }))).into_response())
        }
        Op::Read => {
            caller.require(&acl_path, Op::Read)?;
            read_metadata(&st, &path)
        }
        Op::Delete => {
            caller.require(&acl_path, Op::Delete)?;
            st.lock().kv.secrets.remove(&path);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(unsupported()),
    }
}

fn read_metadata(st: &VaultState, path: &str) -> Result<Response, ApiError> {
    let inner = st.lock();
    let Some(s) = inner.kv.secrets.get(path) else {
        return Err(errors(StatusCode::NOT_FOUND, &[]));
    };
    let versions: Map<String, Value> = s
        .versions
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                json!({
                    "created_time": ts(&v.created_time),
                    "deletion_time": v.deletion_time.as_ref().map(ts).unwrap_or_default(),
                    "destroyed": false,
                }),
            )
        })
        .collect();
    Ok(Json(envelope(json!({
        "cas_required": false,
        "created_time": ts(&s.created_time),
        "current_version": s.current,
        "custom_metadata": null,
        "delete_version_after": "0s",
        "max_versions": 0,
        "oldest_version": s.versions.keys().next().copied().unwrap_or(0),
        "updated_time": ts(&s.updated_time),
        "versions": versions,
    })))
    .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(k: &str, v: &str) -> Map<String, Value> {
        let mut x = Map::new();
        x.insert(k.into(), Value::String(v.into()));
        x
    }

    #[test]
    fn cas_zero_writes_only_when_absent() {
        let mut kv = KvStore::default();
        assert_eq!(kv.write("a", m("k", "1"), Some(0)), Ok(1));
        assert_eq!(
            kv.write("a", m("k", "2"), Some(0)),
            Err(KvError::CasMismatch)
        );
        assert_eq!(kv.write("a", m("k", "2"), Some(1)), Ok(2));
    }

    #[test]
    fn soft_deleted_latest_reads_as_deleted_but_old_versions_remain() {
        let mut kv = KvStore::default();
        kv.write("a", m("k", "1"), None).unwrap();
        kv.write("a", m("k", "2"), None).unwrap();
        assert!(kv.soft_delete("a", None));
        assert_eq!(kv.read("a", None).unwrap_err(), KvError::Deleted);
        assert_eq!(kv.read("a", Some(1)).unwrap().data, Some(m("k", "1")));
    }

    #[test]
    fn list_returns_direct_children_with_folders_suffixed() {
        let mut kv = KvStore::default();
        for p in ["app/a", "app/b/c", "app/b/d", "other"] {
            kv.write(p, m("k", "v"), None).unwrap();
        }
        assert_eq!(kv.list("app"), vec!["a".to_string(), "b/".to_string()]);
        assert_eq!(kv.list(""), vec!["app/".to_string(), "other".to_string()]);
    }
}
