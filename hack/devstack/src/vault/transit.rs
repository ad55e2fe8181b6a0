//! The transit secrets engine, for signing (Vault API docs "Transit secrets engine (API)";
//! `builtin/logical/transit/path_keys.go`, `path_sign_verify.go`, `sdk/helper/keysutil/policy.go`).
//!
//! Mounted with `sys/mounts/<path>` `{"type":"transit"}` (see `sys`), at a one-segment path.
//! Emulated endpoints, each checked against the caller's ACL on the request path first (403
//! outside the policies, like every other path), then answered as Vault does:
//! - `POST <mount>/keys/<name>` (`update`: the path has no existence check) creates the key
//!   (`type`, default `aes256-gcm96` as in Vault); answers the key as a read does, with the
//!   warning `key <name> already existed` when it did (Vault upserts). Only `ecdsa-p256` is
//!   emulated: another valid Vault type is 400 `key type <t> is not emulated by the dev stack`,
//!   an unknown one 400 `unknown key type <t>`; `derived`/`convergent_encryption` on an ECDSA
//!   key is 400 as in Vault (`key derivation and convergent encryption not supported for keys of
//!   type ecdsa-p256`); `auto_rotate_period` below an hour is 400.
//! - `GET <mount>/keys/<name>` (`read`): `formatKeyPolicy`'s fields; `keys.<version>` =
//!   `{name: "P-256", public_key: <PKIX PEM>, certificate_chain: "", creation_time}`. A missing
//!   key is 404 with `{"errors":[]}`. LIST `<mount>/keys` (`list`) names the keys.
//! - `DELETE <mount>/keys/<name>` (`delete`): 400 `deletion is not allowed for this key`
//!   (`deletion_allowed` is false until `keys/<name>/config` sets it, which is not emulated).
//! - `POST <mount>/sign/<name>[/<hash>]` (`update`): `input` (standard base64; missing = empty),
//!   `key_version` (0 = latest), `hash_algorithm` (or the deprecated `algorithm`; the URL one
//!   wins; default `sha2-256`), `prehashed` (the input is the digest), `marshaling_algorithm`
//!   `asn1` (DER, standard base64, the default) or `jws` (r‖s, unpadded URL-safe base64).
//!   Answers `{"signature":"vault:v<version>:<...>","key_version":<version>}`. Errors (400):
//!   `encryption key not found`, `invalid hash algorithm "<h>"`, `invalid marshaling type
//!   "<m>"`, `unable to decode input as base64: ...`, `requested version for signing is higher
//!   than the latest key version`, and `hash_algorithm=none` needs `prehashed` and `pkcs1v15`
//!   (RSA only), as in Vault.
//! - `POST <mount>/verify/<name>[/<hash>]` (`update`): `input`, `signature`, the same hash,
//!   prehash and marshaling fields; answers `{"valid": bool}`. A signature without the
//!   `vault:v` prefix, with a bad version, or not base64 is 400 (`keysutil`'s
//!   `VerifySignature` messages); a DER that does not parse is 400 `supplied signature is
//!   invalid`; a well-formed signature that does not match is `valid: false`.
//!
//! As in Go's `crypto/ecdsa`, a digest longer than the curve order is truncated to its leftmost
//! 256 bits and a shorter one is read as a big-endian integer. The signature nonce is derived
//! (RFC 6979) instead of random: the signatures verify identically.
//!
//! Knowingly not emulated: other key types (AES, RSA, ed25519, P-384/521, HMAC, managed keys),
//! encrypt/decrypt/rewrap/HMAC/export/backup/rotate and `keys/<name>/config`, `batch_input`,
//! `sha1` and `sha3-*` digests (400 `hash algorithm "<h>" is not emulated by the dev stack`),
//! key derivation `context`, nested mount paths (`a/b/`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::Digest;

use super::acl::Op;
use super::{ApiError, Caller, Operation, VaultState, envelope, errors, json_body, unsupported};

/// One version of a transit key.
#[derive(Debug, Clone)]
struct KeyVersion {
    signing: SigningKey,
    created: DateTime<Utc>,
}

/// A named transit key (Vault's `keysutil.Policy`), versions from 1.
#[derive(Debug, Clone)]
pub struct TransitKey {
    versions: BTreeMap<u32, KeyVersion>,
    exportable: bool,
    allow_plaintext_backup: bool,
    auto_rotate_period: i64,
}

/// The keys of every transit mount: mount path (without `/`) → key name → key.
#[derive(Debug, Default)]
pub struct TransitStore {
    keys: BTreeMap<String, BTreeMap<String, TransitKey>>,
}

impl TransitStore {
    /// Forgets the keys of `mount` (on unmount).
    pub(crate) fn unmount(&mut self, mount: &str) {
        self.keys.remove(mount);
    }
}

impl TransitKey {
    fn latest(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }
}

/// A new random P-256 key (rejection-sampled: a scalar of zero or ≥ n is drawn again).
fn random_signing_key() -> SigningKey {
    let mut rng = rand::rng();
    loop {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        if let Ok(k) = SigningKey::from_slice(&bytes) {
            return k;
        }
    }
}

type S = State<Arc<VaultState>>;

/// Routes of every transit mount. A path under a mount that is not a transit mount is 404.
pub(super) fn routes() -> axum::Router<Arc<VaultState>> {
    axum::Router::new()
        .route("/v1/{mount}/keys", any(list_keys))
        .route("/v1/{mount}/keys/", any(list_keys))
        .route("/v1/{mount}/keys/{name}", any(key))
        .route("/v1/{mount}/sign/{name}", any(sign))
        .route("/v1/{mount}/sign/{name}/{alg}", any(sign_alg))
        .route("/v1/{mount}/verify/{name}", any(verify))
        .route("/v1/{mount}/verify/{name}/{alg}", any(verify_alg))
}

fn bad(msg: &str) -> ApiError {
    errors(StatusCode::BAD_REQUEST, &[msg])
}

fn not_found() -> ApiError {
    errors(StatusCode::NOT_FOUND, &[])
}

/// Vault's `framework.GenericNameRegex`: `\w(([\w-.@]+)?\w)?`. Another name matches no route.
fn valid_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = name.chars();
    let (Some(first), Some(last)) = (chars.next(), name.chars().last()) else {
        return false;
    };
    word(first) && word(last) && name.chars().all(|c| word(c) || "-.@".contains(c))
}

/// Checks that `mount` is a transit mount (404 otherwise).
fn require_transit(st: &VaultState, mount: &str) -> Result<(), ApiError> {
    let inner = st.lock();
    if inner.mounts.get(mount).map(String::as_str) == Some("transit") {
        Ok(())
    } else {
        Err(not_found())
    }
}

async fn list_keys(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    Path(mount): Path<String>,
) -> Result<Response, ApiError> {
    if op != Op::List {
        caller.require(&format!("{mount}/keys"), op)?;
        require_transit(&st, &mount)?;
        return Err(unsupported());
    }
    caller.require(&format!("{mount}/keys/"), Op::List)?;
    require_transit(&st, &mount)?;
    let names: Vec<String> = st
        .lock()
        .transit
        .keys
        .get(&mount)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() {
        return Err(not_found());
    }
    Ok(Json(envelope(json!({ "keys": names }))).into_response())
}

async fn key(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    Path((mount, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let acl_path = format!("{mount}/keys/{name}");
    caller.require(&acl_path, op)?;
    require_transit(&st, &mount)?;
    if !valid_name(&name) {
        return Err(not_found());
    }
    match op {
        Op::Read => {
            let inner = st.lock();
            let k = inner
                .transit
                .keys
                .get(&mount)
                .and_then(|m| m.get(&name))
                .ok_or_else(not_found)?;
            Ok(Json(envelope(key_json(&name, k)?)).into_response())
        }
        Op::Update => create_key(&st, &mount, &name, &body),
        Op::Delete => Err(bad("deletion is not allowed for this key")),
        _ => Err(unsupported()),
    }
}

/// A boolean field as Vault's `framework.TypeBool` reads it (JSON bool, or a string Go's
/// `strconv.ParseBool` accepts). Errors: 400.
fn bool_field(body: &Value, name: &str) -> Result<bool, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
            _ => Err(bad(&format!("invalid value for {name}: {s:?}"))),
        },
        Some(Value::Number(n)) => Ok(n.as_i64().unwrap_or(0) != 0),
        Some(other) => Err(bad(&format!("invalid value for {name}: {other}"))),
    }
}

/// A string field (absent or null = `None`). Errors: 400 for a non-string.
fn str_field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(&format!("invalid value for {name}: {other}"))),
    }
}

/// An integer field (`framework.TypeInt`: a number or a decimal string). Errors: 400.
fn int_field(body: &Value, name: &str) -> Result<i64, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| bad(&format!("invalid value for {name}: {n}"))),
        Some(Value::String(s)) if s.is_empty() => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| bad(&format!("invalid value for {name}: {s:?}"))),
        Some(other) => Err(bad(&format!("invalid value for {name}: {other}"))),
    }
}

/// `auto_rotate_period` (`framework.TypeDurationSecond`: seconds, or a Go duration string).
fn period_field(body: &Value) -> Result<i64, ApiError> {
    match body.get("auto_rotate_period") {
        Some(Value::String(s)) if !s.is_empty() && s.parse::<i64>().is_err() => {
            humantime::parse_duration(s)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .map_err(|e| bad(&format!("invalid value for auto_rotate_period: {e}")))
        }
        _ => int_field(body, "auto_rotate_period"),
    }
}

/// Key types Vault knows (`path_keys.go`, `pathPolicyWrite`); only `ecdsa-p256` is emulated.
const VAULT_KEY_TYPES: &[&str] = &[
    "aes128-gcm96",
    "aes256-gcm96",
    "chacha20-poly1305",
    "ecdsa-p256",
    "ecdsa-p384",
    "ecdsa-p521",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
    "hmac",
    "managed_key",
    "aes128-cmac",
    "aes256-cmac",
    "ml-dsa",
    "hybrid",
];

fn create_key(st: &VaultState, mount: &str, name: &str, body: &[u8]) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let derived = bool_field(&body, "derived")?;
    let convergent = bool_field(&body, "convergent_encryption")?;
    let exportable = bool_field(&body, "exportable")?;
    let allow_plaintext_backup = bool_field(&body, "allow_plaintext_backup")?;
    let auto_rotate_period = period_field(&body)?;
    let key_type = str_field(&body, "type")?
        .filter(|t| !t.is_empty())
        .unwrap_or("aes256-gcm96");
    if auto_rotate_period != 0 && auto_rotate_period < 3600 {
        return Err(bad(
            "auto rotate period must be 0 to disable or at least an hour",
        ));
    }
    if !derived && convergent {
        return Err(bad(
            "convergent encryption requires derivation to be enabled",
        ));
    }
    if !VAULT_KEY_TYPES.contains(&key_type) {
        return Err(bad(&format!("unknown key type {key_type}")));
    }
    if key_type != "ecdsa-p256" {
        return Err(bad(&format!(
            "key type {key_type} is not emulated by the dev stack (only ecdsa-p256 is)"
        )));
    }
    if derived {
        return Err(bad(
            "key derivation and convergent encryption not supported for keys of type ecdsa-p256",
        ));
    }
    let mut inner = st.lock();
    let keys = inner.transit.keys.entry(mount.to_string()).or_default();
    let existed = keys.contains_key(name);
    let k = keys.entry(name.to_string()).or_insert_with(|| TransitKey {
        versions: BTreeMap::from([(
            1,
            KeyVersion {
                signing: random_signing_key(),
                created: Utc::now(),
            },
        )]),
        exportable,
        allow_plaintext_backup,
        auto_rotate_period,
    });
    let mut out = envelope(key_json(name, k)?);
    if existed && let Some(o) = out.as_object_mut() {
        o.insert(
            "warnings".into(),
            json!([format!("key {name} already existed")]),
        );
    }
    Ok(Json(out).into_response())
}

/// The key as `formatKeyPolicy` writes it.
fn key_json(name: &str, k: &TransitKey) -> Result<Value, ApiError> {
    let mut keys = serde_json::Map::new();
    for (v, kv) in &k.versions {
        let pem = kv
            .signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| {
                errors(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &[&format!("encoding public key: {e}")],
                )
            })?;
        keys.insert(
            v.to_string(),
            json!({
                "name": "P-256",
                "public_key": pem,
                "certificate_chain": "",
                "creation_time": kv.created.to_rfc3339_opts(SecondsFormat::Nanos, true),
            }),
        );
    }
    Ok(json!({
        "name": name,
        "type": "ecdsa-p256",
        "derived": false,
        "deletion_allowed": false,
        "min_available_version": 0,
        "min_decryption_version": 1,
        "min_encryption_version": 0,
        "latest_version": k.latest(),
        "exportable": k.exportable,
        "allow_plaintext_backup": k.allow_plaintext_backup,
        "supports_encryption": false,
        "supports_decryption": false,
        "supports_signing": true,
        "supports_derivation": false,
        "auto_rotate_period": k.auto_rotate_period,
        "imported_key": false,
        "keys": keys,
    }))
}

/// `sign`/`verify` options shared by both paths.
#[derive(Debug)]
struct SignOptions {
    hash: HashAlg,
    prehashed: bool,
    jws: bool,
    input: Vec<u8>,
}

/// The digests Vault's `keysutil.HashTypeMap` names that the dev stack computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashAlg {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    None,
}

impl HashAlg {
    fn parse(s: &str) -> Result<HashAlg, ApiError> {
        match s {
            "sha2-224" => Ok(HashAlg::Sha224),
            "sha2-256" => Ok(HashAlg::Sha256),
            "sha2-384" => Ok(HashAlg::Sha384),
            "sha2-512" => Ok(HashAlg::Sha512),
            "none" => Ok(HashAlg::None),
            "sha1" | "sha3-224" | "sha3-256" | "sha3-384" | "sha3-512" => Err(bad(&format!(
                "hash algorithm {s:?} is not emulated by the dev stack"
            ))),
            _ => Err(bad(&format!("invalid hash algorithm {s:?}"))),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha224 => sha2::Sha224::digest(data).to_vec(),
            HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
            HashAlg::None => data.to_vec(),
        }
    }
}

fn sign_options(body: &Value, url_alg: Option<&str>) -> Result<SignOptions, ApiError> {
    let alg = url_alg
        .filter(|a| !a.is_empty())
        .or(str_field(body, "hash_algorithm")?.filter(|a| !a.is_empty()))
        .or(str_field(body, "algorithm")?.filter(|a| !a.is_empty()))
        .unwrap_or("sha2-256");
    let hash = HashAlg::parse(alg)?;
    let marshaling = str_field(body, "marshaling_algorithm")?
        .filter(|m| !m.is_empty())
        .unwrap_or("asn1");
    let jws = match marshaling {
        "asn1" => false,
        "jws" => true,
        m => return Err(bad(&format!("invalid marshaling type {m:?}"))),
    };
    let prehashed = bool_field(body, "prehashed")?;
    let signature_algorithm = str_field(body, "signature_algorithm")?.unwrap_or_default();
    if hash == HashAlg::None && (!prehashed || signature_algorithm != "pkcs1v15") {
        return Err(bad(
            "hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15",
        ));
    }
    if body.get("batch_input").is_some_and(|b| !b.is_null()) {
        return Err(bad("batch_input is not emulated by the dev stack"));
    }
    let raw = str_field(body, "input")?.unwrap_or_default();
    let input = STANDARD
        .decode(raw)
        .map_err(|e| bad(&format!("unable to decode input as base64: {e}")))?;
    Ok(SignOptions {
        hash,
        prehashed,
        jws,
        input,
    })
}

/// The value ECDSA signs: the digest of the input (or the input when prehashed), truncated or
/// left-padded to 32 bytes as Go's `hashToInt` reads it for P-256.
fn signed_value(o: &SignOptions) -> [u8; 32] {
    let digest = if o.prehashed {
        o.input.clone()
    } else {
        o.hash.digest(&o.input)
    };
    let mut out = [0u8; 32];
    let take = digest.len().min(32);
    out[32 - take..].copy_from_slice(&digest[..take]);
    out
}

/// Looks up the key (400 `encryption key not found`) and runs `f` on it.
fn with_key<T>(
    st: &VaultState,
    mount: &str,
    name: &str,
    f: impl FnOnce(&TransitKey) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let inner = st.lock();
    let k = inner
        .transit
        .keys
        .get(mount)
        .and_then(|m| m.get(name))
        .ok_or_else(|| bad("encryption key not found"))?;
    f(k)
}

async fn sign(
    st: S,
    caller: Caller,
    op: Operation,
    Path((mount, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    do_sign(st, caller, op, &mount, &name, None, &body)
}

async fn sign_alg(
    st: S,
    caller: Caller,
    op: Operation,
    Path((mount, name, alg)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = format!("{name}/{alg}");
    do_sign(st, caller, op, &mount, &path, Some(&alg), &body)
}

/// What `sign` and `verify` check first, in Vault's order: the token's policy on
/// `<mount>/<action>/<path>` (403), a transit mount (404), an update (405), a valid key name
/// (404), a JSON body (400). Returns the key name and the body.
fn key_operation<'a>(
    st: &VaultState,
    caller: &Caller,
    op: Op,
    mount: &str,
    action: &str,
    path: &'a str,
    body: &[u8],
) -> Result<(&'a str, Value), ApiError> {
    caller.require(&format!("{mount}/{action}/{path}"), op)?;
    require_transit(st, mount)?;
    let name = path.split('/').next().unwrap_or_default();
    if op != Op::Update {
        return Err(unsupported());
    }
    if !valid_name(name) {
        return Err(not_found());
    }
    Ok((name, json_body(body)?))
}

/// `sign/<name>[/<alg>]`; `path` is what follows `sign/` (the ACL path's tail).
fn do_sign(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    mount: &str,
    path: &str,
    url_alg: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (name, body) = key_operation(&st, &caller, op, mount, "sign", path, body)?;
    let opts = sign_options(&body, url_alg)?;
    let requested = int_field(&body, "key_version")?;
    let (version, signature) = with_key(&st, mount, name, |k| {
        let latest = k.latest();
        let version = match u32::try_from(requested) {
            Ok(0) => latest,
            Ok(v) if v <= latest => v,
            _ => {
                return Err(bad(
                    "requested version for signing is higher than the latest key version",
                ));
            }
        };
        let kv = k.versions.get(&version).ok_or_else(|| {
            bad("requested version for signing is less than the minimum encryption key version")
        })?;
        let sig: Signature = kv
            .signing
            .sign_prehash(&signed_value(&opts))
            .map_err(|e| errors(StatusCode::INTERNAL_SERVER_ERROR, &[&e.to_string()]))?;
        let encoded = if opts.jws {
            URL_SAFE_NO_PAD.encode(sig.to_bytes())
        } else {
            STANDARD.encode(sig.to_der().as_bytes())
        };
        Ok((version, encoded))
    })?;
    Ok(Json(envelope(json!({
        "signature": format!("vault:v{version}:{signature}"),
        "key_version": version,
    })))
    .into_response())
}

async fn verify(
    st: S,
    caller: Caller,
    op: Operation,
    Path((mount, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    do_verify(st, caller, op, &mount, &name, None, &body)
}

async fn verify_alg(
    st: S,
    caller: Caller,
    op: Operation,
    Path((mount, name, alg)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = format!("{name}/{alg}");
    do_verify(st, caller, op, &mount, &path, Some(&alg), &body)
}

/// `verify/<name>[/<alg>]`.
fn do_verify(
    State(st): S,
    caller: Caller,
    Operation(op): Operation,
    mount: &str,
    path: &str,
    url_alg: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (name, body) = key_operation(&st, &caller, op, mount, "verify", path, body)?;
    let signature = str_field(&body, "signature")?;
    let hmac = str_field(&body, "hmac")?;
    let signature = match (signature, hmac) {
        (Some(_), Some(_)) => return Err(bad("provide one of 'signature' or 'hmac'")),
        (None, None) => {
            return Err(bad(
                "neither a 'signature' nor an 'hmac' were given to verify",
            ));
        }
        (None, Some(_)) => return Err(bad("hmac verification is not emulated by the dev stack")),
        (Some(s), None) => s.to_string(),
    };
    let opts = sign_options(&body, url_alg)?;
    let valid = with_key(&st, mount, name, |k| {
        let rest = signature
            .strip_prefix("vault:v")
            .ok_or_else(|| bad("invalid signature: no prefix"))?;
        let (ver, encoded) = rest
            .split_once(':')
            .ok_or_else(|| bad("invalid signature: wrong number of fields"))?;
        let ver: u32 = ver
            .parse()
            .map_err(|_| bad("invalid signature: version number could not be decoded"))?;
        if ver > k.latest() {
            return Err(bad("invalid signature: version is too high"));
        }
        let kv = k.versions.get(&ver).ok_or_else(|| {
            bad("ciphertext or signature version is disallowed by policy (too old)")
        })?;
        let raw = if opts.jws {
            URL_SAFE_NO_PAD.decode(encoded)
        } else {
            STANDARD.decode(encoded)
        }
        .map_err(|_| bad("invalid base64 signature value"))?;
        let sig = if opts.jws {
            Signature::from_slice(&raw)
        } else {
            Signature::from_der(&raw)
        }
        .map_err(|_| bad("supplied signature is invalid"))?;
        let vk: &VerifyingKey = kv.signing.verifying_key();
        Ok(vk.verify_prehash(&signed_value(&opts), &sig).is_ok())
    })?;
    Ok(Json(envelope(json!({ "valid": valid }))).into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_vaults_generic_name_regex() {
        for ok in ["a", "jobforge", "team-a.key@1", "a_b", "x9"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a/b", "a b", ".x", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn short_and_long_digests_are_read_as_go_reads_them() {
        let mut o = SignOptions {
            hash: HashAlg::Sha256,
            prehashed: true,
            jws: false,
            input: vec![1, 2],
        };
        let v = signed_value(&o);
        assert_eq!(&v[30..], &[1, 2]);
        assert!(v[..30].iter().all(|b| *b == 0));
        o.input = (0..64).collect();
        assert_eq!(signed_value(&o).to_vec(), (0..32).collect::<Vec<u8>>());
    }

    #[test]
    fn none_needs_prehashed_and_pkcs1v15() {
        let e = sign_options(&json!({"hash_algorithm": "none", "input": ""}), None).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(sign_options(&json!({"hash_algorithm": "md5"}), None).is_err());
        assert!(sign_options(&json!({"marshaling_algorithm": "der"}), None).is_err());
        let o = sign_options(
            &json!({"input": "aGk=", "prehashed": "true"}),
            Some("sha2-512"),
        )
        .unwrap();
        assert_eq!(
            (o.hash, o.prehashed, o.input),
            (HashAlg::Sha512, true, b"hi".to_vec())
        );
    }
}
