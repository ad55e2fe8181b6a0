//! Vault KV v2 checks (Vault API docs, "KV Secrets Engine - Version 2"): before the controller
//! registers a job that renders Vault secrets, it checks that every referenced path exists, so
//! the user gets `SecretNotFound` at once instead of a failed allocation.
//!
//! Paths are given as the spec names them, `secret/data/jobforge/git` (mount `secret`, secret
//! `jobforge/git`); `secret/jobforge/git` (no `data/`) is accepted too. The first segment is the
//! mount.
//!
//! Outcome rules: 404 (never written, or the current version deleted or destroyed) is *missing*;
//! connection failures, 5xx and 503 (sealed) are [`VaultError::Unavailable`] /
//! [`VaultError::Transport`] — transient, the caller retries rather than failing the request;
//! 403 is [`VaultError::PermissionDenied`] (a configuration problem, not a missing secret).

use std::collections::BTreeMap;

use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// Default Vault address (`vault` CLI default).
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8200";

/// Errors of the Vault checks.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Bad configuration (`VAULT_ADDR`, ...).
    #[error("invalid Vault configuration {var}: {reason}")]
    Config {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A path that is not `<mount>/[data/]<path>`.
    #[error("invalid Vault KV v2 path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// No HTTP answer (connection refused, reset, timeout, TLS). Transient.
    #[error("Vault at {addr} unreachable reading {path}: {reason}")]
    Transport {
        /// Vault address.
        addr: String,
        /// Secret path.
        path: String,
        /// The client's error chain.
        reason: String,
    },
    /// Vault answered 5xx or 429 (503 = sealed or standby). Transient.
    #[error("Vault unavailable reading {path}: HTTP {code} {errors:?}")]
    Unavailable {
        /// Secret path.
        path: String,
        /// HTTP status.
        code: u16,
        /// Vault's `errors` list.
        errors: Vec<String>,
    },
    /// Vault answered 403: the token may not read this path.
    #[error("Vault denied reading {path} (403): {errors:?}")]
    PermissionDenied {
        /// Secret path.
        path: String,
        /// Vault's `errors` list.
        errors: Vec<String>,
    },
    /// Any other unexpected answer (4xx, undecodable body).
    #[error("unexpected Vault answer reading {path}: {reason}")]
    Unexpected {
        /// Secret path.
        path: String,
        /// What happened.
        reason: String,
    },
}

impl VaultError {
    /// Whether a later retry may succeed (transport failures, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VaultError::Transport { .. } | VaultError::Unavailable { .. }
        )
    }
}

/// A referenced secret that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSecret {
    /// The path as referenced in the spec.
    pub path: String,
    /// Why it counts as missing (`not found`, `current version 2 deleted at ...`).
    pub reason: String,
}

/// A KV v2 path split into mount and secret path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPath {
    /// Mount, for example `secret`.
    pub mount: String,
    /// Path inside the mount, for example `jobforge/git`.
    pub path: String,
}

/// Splits `secret/data/jobforge/git` (or `secret/jobforge/git`, leading `/` allowed) into mount
/// `secret` and path `jobforge/git`.
///
/// Errors: [`VaultError::InvalidPath`] for an empty mount, an empty secret path, or empty
/// segments (`a//b`).
pub fn parse_kv2_path(full: &str) -> Result<KvPath, VaultError> {
    let bad = |reason: &str| VaultError::InvalidPath {
        path: full.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = full.trim().trim_start_matches('/').trim_end_matches('/');
    let (mount, rest) = trimmed
        .split_once('/')
        .ok_or_else(|| bad("expected <mount>/data/<path>, for example secret/data/app/git"))?;
    let rest = rest.strip_prefix("data/").unwrap_or(rest);
    if mount.is_empty() || rest.is_empty() || rest == "data" {
        return Err(bad(
            "expected <mount>/data/<path>, for example secret/data/app/git",
        ));
    }
    if rest.split('/').any(str::is_empty) {
        return Err(bad("empty path segment"));
    }
    Ok(KvPath {
        mount: mount.to_string(),
        path: rest.to_string(),
    })
}

/// Checks and reads KV v2 secrets with vaultrs.
pub struct VaultChecker {
    client: VaultClient,
    addr: String,
}

impl std::fmt::Debug for VaultChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultChecker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl VaultChecker {
    /// From `VAULT_ADDR` (default `http://127.0.0.1:8200`), `VAULT_TOKEN` and `VAULT_NAMESPACE`
    /// (the `vault` CLI's variables). Empty values count as unset.
    ///
    /// Errors: [`VaultError::Config`] for a bad address.
    pub fn from_env() -> Result<VaultChecker, VaultError> {
        VaultChecker::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`VaultChecker::from_env`] with a custom lookup (tests, layered configuration).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<VaultChecker, VaultError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        VaultChecker::new(
            &get("VAULT_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_string()),
            &get("VAULT_TOKEN").unwrap_or_default(),
            get("VAULT_NAMESPACE"),
        )
    }

    /// The Vault address in use.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// For an explicit address, token and optional namespace (`X-Vault-Namespace`).
    ///
    /// Errors: [`VaultError::Config`] when `addr` is not an `http`/`https` URL.
    pub fn new(
        addr: &str,
        token: &str,
        namespace: Option<String>,
    ) -> Result<VaultChecker, VaultError> {
        let url = url::Url::parse(addr).map_err(|e| VaultError::Config {
            var: "VAULT_ADDR",
            reason: format!("{addr:?} is not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(VaultError::Config {
                var: "VAULT_ADDR",
                reason: format!("{addr:?}: allowed schemes are http and https"),
            });
        }
        let mut b = VaultClientSettingsBuilder::default();
        b.address(addr).token(token);
        if let Some(ns) = namespace {
            b.set_namespace(ns);
        }
        let settings = b.build().map_err(|e| VaultError::Config {
            var: "VAULT_ADDR",
            reason: e.to_string(),
        })?;
        let client = VaultClient::new(settings).map_err(|e| VaultError::Config {
            var: "VAULT_ADDR",
            reason: e.to_string(),
        })?;
        Ok(VaultChecker {
            client,
            addr: addr.to_string(),
        })
    }

    /// Checks every path; returns the missing ones (empty = all exist), in input order.
    ///
    /// Errors: [`VaultError::InvalidPath`] for a malformed path (checked before any request),
    /// and the first transient/permission/unexpected error — a check that could not be made is
    /// never reported as missing.
    pub async fn check_paths(&self, paths: &[&str]) -> Result<Vec<MissingSecret>, VaultError> {
        let parsed = paths
            .iter()
            .map(|p| parse_kv2_path(p).map(|kv| (*p, kv)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut missing = Vec::new();
        for (full, kv) in parsed {
            if let Err(reason) = self.read_kv(full, &kv).await?.map(|_| ()) {
                missing.push(MissingSecret {
                    path: full.to_string(),
                    reason,
                });
            }
        }
        Ok(missing)
    }

    /// Reads the current version of a secret; `None` when missing (see [`check_paths`]).
    /// Non-string values are returned as their JSON text.
    ///
    /// [`check_paths`]: VaultChecker::check_paths
    pub async fn read_secret(
        &self,
        path: &str,
    ) -> Result<Option<BTreeMap<String, String>>, VaultError> {
        let kv = parse_kv2_path(path)?;
        Ok(self.read_kv(path, &kv).await?.ok().map(|m| {
            m.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect()
        }))
    }

    /// Signs `input` with the transit key `key` of the engine at `mount` (`POST
    /// <mount>/sign/<key>`, default `hash_algorithm` sha2-256, `marshaling_algorithm=asn1`): Vault
    /// hashes the input with SHA-256 and answers `vault:v<version>:<base64 DER ECDSA>`.
    ///
    /// Errors: [`VaultError::PermissionDenied`] (the token's policy lacks
    /// `<mount>/sign/<key>`), [`VaultError::Unavailable`]/[`VaultError::Transport`] (transient),
    /// [`VaultError::Unexpected`] (a 400 such as an unknown key).
    pub async fn transit_sign(
        &self,
        mount: &str,
        key: &str,
        input: &[u8],
    ) -> Result<String, VaultError> {
        use base64::Engine;
        use vaultrs::api::transit::MarshalingAlgorithm;
        let path = format!("{mount}/sign/{key}");
        let input = base64::engine::general_purpose::STANDARD.encode(input);
        let mut opts = vaultrs::api::transit::requests::SignDataRequest::builder();
        // hash_algorithm is left to Vault's default, sha2-256: vaultrs 0.8 spells its enum
        // `sha2_256`, which Vault refuses.
        opts.marshaling_algorithm(MarshalingAlgorithm::Asn1);
        match vaultrs::transit::data::sign(&self.client, mount, key, &input, Some(&mut opts)).await
        {
            Ok(r) => Ok(r.signature),
            Err(e) => Err(self.classify(&path, e).map_or_else(
                |e| e,
                |reason| VaultError::Unexpected {
                    path: path.clone(),
                    reason,
                },
            )),
        }
    }

    /// The public keys (PKIX PEM) of the transit key `key`, by version (`GET <mount>/keys/<key>`).
    ///
    /// Errors: as [`VaultChecker::transit_sign`]; a missing or symmetric key is
    /// [`VaultError::Unexpected`].
    pub async fn transit_public_keys(
        &self,
        mount: &str,
        key: &str,
    ) -> Result<BTreeMap<u64, String>, VaultError> {
        use vaultrs::api::transit::responses::ReadKeyData;
        let path = format!("{mount}/keys/{key}");
        let r = match vaultrs::transit::key::read(&self.client, mount, key).await {
            Ok(r) => r,
            Err(e) => {
                return Err(self.classify(&path, e).map_or_else(
                    |e| e,
                    |reason| VaultError::Unexpected {
                        path: path.clone(),
                        reason,
                    },
                ));
            }
        };
        match r.keys {
            ReadKeyData::Asymmetric(keys) => Ok(keys
                .into_iter()
                .filter_map(|(v, k)| v.parse().ok().map(|v| (v, k.public_key)))
                .collect()),
            ReadKeyData::Symmetric(_) => Err(VaultError::Unexpected {
                path,
                reason: "the transit key is symmetric; signing needs ecdsa-p256".into(),
            }),
        }
    }

    /// `Ok(Ok(data))` present, `Ok(Err(reason))` missing, `Err` could not tell.
    async fn read_kv(
        &self,
        full: &str,
        kv: &KvPath,
    ) -> Result<Result<BTreeMap<String, serde_json::Value>, String>, VaultError> {
        let res: Result<Option<BTreeMap<String, serde_json::Value>>, ClientError> =
            vaultrs::kv2::read(&self.client, &kv.mount, &kv.path).await;
        match res {
            Ok(Some(data)) => Ok(Ok(data)),
            Ok(None) => Ok(Err("current version deleted".to_string())),
            Err(e) => self.classify(full, e).map(Err),
        }
    }

    /// Maps a vaultrs error to "missing because ..." or a [`VaultError`].
    fn classify(&self, path: &str, e: ClientError) -> Result<String, VaultError> {
        let (code, errors, body) = match &e {
            ClientError::APIError { code, errors } => (*code, errors.clone(), None),
            ClientError::RestClientError { source } => match source {
                rustify::errors::ClientError::ServerResponseError { code, content } => {
                    (*code, Vec::new(), content.clone())
                }
                _ => {
                    return Err(VaultError::Transport {
                        addr: self.addr.clone(),
                        path: path.to_string(),
                        reason: error_chain(&e),
                    });
                }
            },
            _ => {
                return Err(VaultError::Unexpected {
                    path: path.to_string(),
                    reason: error_chain(&e),
                });
            }
        };
        match code {
            404 => Ok(missing_reason(body.as_deref())),
            403 => Err(VaultError::PermissionDenied {
                path: path.to_string(),
                errors,
            }),
            c if c >= 500 || c == 429 => Err(VaultError::Unavailable {
                path: path.to_string(),
                code: c,
                errors,
            }),
            c => Err(VaultError::Unexpected {
                path: path.to_string(),
                reason: format!("HTTP {c} {errors:?}"),
            }),
        }
    }
}

/// Vault answers a deleted or destroyed current version with 404 and a body whose
/// `data.metadata` says so.
fn missing_reason(body: Option<&str>) -> String {
    let meta = body
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| v.pointer("/data/metadata").cloned());
    let Some(meta) = meta else {
        return "not found".to_string();
    };
    let version = meta.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if meta.get("destroyed").and_then(|v| v.as_bool()) == Some(true) {
        return format!("current version {version} destroyed");
    }
    match meta.get("deletion_time").and_then(|v| v.as_str()) {
        Some(t) if !t.is_empty() => format!("current version {version} deleted at {t}"),
        _ => "not found".to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn data_paths_split_into_mount_and_secret() {
        let kv = parse_kv2_path("secret/data/jobforge/git").unwrap();
        assert_eq!(kv.mount, "secret");
        assert_eq!(kv.path, "jobforge/git");
        assert_eq!(parse_kv2_path("/secret/jobforge/git").unwrap(), kv);
    }

    #[test]
    fn malformed_paths_are_rejected_with_the_path() {
        for p in [
            "",
            "secret",
            "secret/data/",
            "secret/data",
            "secret/a//b",
            "/x/",
        ] {
            let e = parse_kv2_path(p).unwrap_err();
            assert!(matches!(e, VaultError::InvalidPath { .. }), "{p}: {e}");
        }
    }

    #[test]
    fn environment_gives_address_with_cli_default() {
        let v = VaultChecker::from_lookup(|_| None).unwrap();
        assert_eq!(v.addr(), DEFAULT_ADDR);
        let v = VaultChecker::from_lookup(|k| {
            (k == "VAULT_ADDR").then(|| "https://vault.example:8200".to_string())
        })
        .unwrap();
        assert_eq!(v.addr(), "https://vault.example:8200");
        let e = VaultChecker::from_lookup(|k| (k == "VAULT_ADDR").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("VAULT_ADDR"), "{e}");
    }

    #[test]
    fn deleted_version_body_gives_a_reason() {
        let body = r#"{"data":{"data":null,"metadata":{"version":2,"deletion_time":"2026-11-21T10:00:00Z","destroyed":false}}}"#;
        assert_eq!(
            missing_reason(Some(body)),
            "current version 2 deleted at 2026-11-21T10:00:00Z"
        );
        assert_eq!(missing_reason(Some(r#"{"errors":[]}"#)), "not found");
        assert_eq!(missing_reason(None), "not found");
    }
}
