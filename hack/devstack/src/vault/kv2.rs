//! KV v2 secrets engine at `secret/` (Vault docs, "KV Secrets Engine - Version 2 (API)"):
//! `data/<path>` read (`?version=N`), write (`options.cas`), soft delete; `metadata/<path>` read,
//! LIST (HTTP method `LIST` or `GET ?list=true`) and delete (destroys all versions).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{VaultState, denied, envelope, errors};

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

/// Handles every method on `/v1/secret/*rest`.
pub(super) async fn handle(
    State(state): State<Arc<VaultState>>,
    headers: HeaderMap,
    method: Method,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !state.is_authorized(&headers) {
        return denied();
    }
    let q = |key: &str| -> Option<String> {
        query.as_deref().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == key).then(|| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
        })
    };
    let is_list = method.as_str() == "LIST"
        || (method == Method::GET && q("list").is_some_and(|v| v == "true"));
    let (kind, path) = match rest.split_once('/') {
        Some((k, p)) => (k.to_string(), p.trim_matches('/').to_string()),
        None => (rest.clone(), String::new()),
    };
    match (kind.as_str(), method.as_str()) {
        ("metadata", _) if is_list => {
            let keys = state.kv().list(&path);
            if keys.is_empty() {
                return errors(StatusCode::NOT_FOUND, &[]);
            }
            Json(envelope(json!({ "keys": keys }))).into_response()
        }
        ("data", "GET") => {
            let version = match q("version").map(|v| v.parse::<u64>()) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(_)) => {
                    return errors(
                        StatusCode::BAD_REQUEST,
                        &["version must be a non-negative integer"],
                    );
                }
            };
            let kv = state.kv();
            match kv.read(&path, version) {
                Ok(v) => {
                    let (n, _) = kv.version_meta(&path, version).unwrap_or((0, v));
                    Json(envelope(
                        json!({ "data": v.data, "metadata": meta_json(n, v) }),
                    ))
                    .into_response()
                }
                Err(KvError::Deleted) => {
                    let meta = kv
                        .version_meta(&path, version)
                        .map(|(n, v)| meta_json(n, v))
                        .unwrap_or(Value::Null);
                    (
                        StatusCode::NOT_FOUND,
                        Json(envelope(json!({ "data": null, "metadata": meta }))),
                    )
                        .into_response()
                }
                Err(_) => errors(StatusCode::NOT_FOUND, &[]),
            }
        }
        ("data", "POST" | "PUT") => {
            let parsed: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return errors(
                        StatusCode::BAD_REQUEST,
                        &[&format!("failed to parse JSON input: {e}")],
                    );
                }
            };
            let Some(data) = parsed.get("data").and_then(Value::as_object).cloned() else {
                return errors(
                    StatusCode::BAD_REQUEST,
                    &["no data provided: the body must be {\"data\": {...}}"],
                );
            };
            let cas = parsed
                .get("options")
                .and_then(|o| o.get("cas"))
                .and_then(Value::as_u64);
            let mut kv = state.kv();
            match kv.write(&path, data, cas) {
                Ok(n) => {
                    let meta = kv
                        .version_meta(&path, Some(n))
                        .map(|(n, v)| meta_json(n, v))
                        .unwrap_or(Value::Null);
                    Json(envelope(meta)).into_response()
                }
                Err(e) => errors(StatusCode::BAD_REQUEST, &[&e.to_string()]),
            }
        }
        ("data", "DELETE") => {
            state.kv().soft_delete(&path, None);
            StatusCode::NO_CONTENT.into_response()
        }
        ("delete", "POST" | "PUT") => {
            let versions: Vec<u64> = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("versions").cloned())
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            state.kv().soft_delete(&path, Some(&versions));
            StatusCode::NO_CONTENT.into_response()
        }
        ("metadata", "GET") => {
            let kv = state.kv();
            let Some(s) = kv.secrets.get(&path) else {
                return errors(StatusCode::NOT_FOUND, &[]);
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
            Json(envelope(json!({
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
            .into_response()
        }
        ("metadata", "DELETE") => {
            state.kv().secrets.remove(&path);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => errors(StatusCode::METHOD_NOT_ALLOWED, &["unsupported operation"]),
    }
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
