//! The token store (Vault's `vault/token_store.go`, API docs "Token auth method").
//!
//! - Service tokens `hvs.<24 chars>` with an accessor, policies, display name, meta, TTL.
//! - `create` (`auth/token/create`): without `policies` the child inherits the parent's; a
//!   caller that is neither root nor holds `sudo` on the create path may only name a subset of
//!   its own policies (`default` always allowed) — 400 `child policies must be subset of parent`;
//!   only a root parent may create a token with `root` (`root tokens may not be created without
//!   parent token being root`); an orphan (`no_parent`, or `create-orphan`) needs root or sudo on
//!   `auth/token/create` (`root or sudo privileges required to create orphan token`); a custom
//!   `id` needs root or sudo too. `default` is added unless `no_default_policy`. Policies are
//!   lowercased, deduplicated and sorted.
//! - TTL: `ttl` (seconds or a Go duration); absent → the system default 768h; capped at the
//!   system max 768h. The root token never expires. `display_name` becomes `token-<name>` with
//!   runs of characters other than `[a-zA-Z0-9-]` replaced by `-`.
//! - Revoking a token revokes its whole tree of children (`revoke`, `revoke-self`,
//!   `revoke-accessor`, expiry); `revoke-orphan` makes the children orphans instead. A token whose
//!   TTL ran out — or one of whose ancestors' did — is revoked the moment it is looked up.
//!
//! Knowingly not supported: token roles (`auth/token/create/<role>`), periodic tokens (`period`
//! is treated as a TTL), `explicit_max_ttl`, `num_uses`, batch tokens, entity aliases.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};

/// Vault's system default (and maximum) token TTL: 768h (32 days).
pub const SYSTEM_MAX_TTL: Duration = Duration::from_secs(768 * 3600);

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEntry {
    /// The secret token ID.
    pub id: String,
    /// Its accessor.
    pub accessor: String,
    /// Sorted, deduplicated policy names.
    pub policies: Vec<String>,
    /// Parent token ID; `None` for orphans and the root token.
    pub parent: Option<String>,
    /// `token` or `token-<display_name>`.
    pub display_name: String,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// When created.
    pub created: DateTime<Utc>,
    /// TTL at creation (`None` = never expires).
    pub creation_ttl: Option<Duration>,
    /// When it expires (`None` = never).
    pub expires: Option<DateTime<Utc>>,
    /// Whether it may be renewed.
    pub renewable: bool,
    /// The creation path (`auth/token/create`, `auth/token/root`).
    pub path: String,
}

impl TokenEntry {
    /// Whether it holds the `root` policy.
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    fn ttl_secs(&self, now: DateTime<Utc>) -> i64 {
        self.expires.map_or(0, |e| (e - now).num_seconds().max(0))
    }

    /// The `auth` block of a create or renew response.
    pub fn auth_json(&self, now: DateTime<Utc>) -> Value {
        json!({
            "client_token": self.id,
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": self.policies,
            "identity_policies": null,
            "metadata": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
            "lease_duration": self.ttl_secs(now),
            "renewable": self.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": self.parent.is_none(),
            "mfa_requirement": null,
            "num_uses": 0,
        })
    }

    /// The `data` of a lookup response; `with_id` = include the secret ID (lookup-self and
    /// lookup do, lookup-accessor does not).
    pub fn lookup_json(&self, now: DateTime<Utc>, with_id: bool) -> Value {
        json!({
            "accessor": self.accessor,
            "creation_time": self.created.timestamp(),
            "creation_ttl": self.creation_ttl.map_or(0, |d| d.as_secs()),
            "display_name": self.display_name,
            "entity_id": "",
            "expire_time": self.expires.map(|e| e.to_rfc3339()),
            "explicit_max_ttl": 0,
            "id": if with_id { self.id.clone() } else { String::new() },
            "issue_time": self.created.to_rfc3339(),
            "meta": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
            "num_uses": 0,
            "orphan": self.parent.is_none(),
            "path": self.path,
            "policies": self.policies,
            "renewable": self.renewable,
            "ttl": self.ttl_secs(now),
            "type": "service",
        })
    }
}

/// The body of `auth/token/create` (the fields the dev stack honours).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    /// Custom token ID (root or sudo only).
    pub id: Option<String>,
    /// Policies; the parent's when empty.
    pub policies: Vec<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Create an orphan.
    pub no_parent: bool,
    /// Do not add `default`.
    pub no_default_policy: bool,
    /// Renewable (default true).
    pub renewable: Option<bool>,
    /// TTL: seconds or a Go duration string.
    pub ttl: Option<Value>,
    /// Period: treated as a TTL (periodic tokens are not emulated).
    pub period: Option<Value>,
    /// Display name.
    pub display_name: String,
}

/// Why a create is refused: the message of Vault's 400 `{"errors":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CreateError(pub String);

/// Parses a Vault duration: an integer (seconds), a string of digits (seconds), or a Go duration
/// (`90s`, `1h30m`).
///
/// Errors: a message for anything else.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| format!("invalid duration {n}")),
        Value::String(s) if s.is_empty() => Ok(Duration::ZERO),
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| format!("invalid duration {s:?}: {e}")),
        Value::String(s) => {
            humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
        }
        other => Err(format!("invalid duration {other}")),
    }
}

/// Lowercased, trimmed, deduplicated, sorted; `default` added when `with_default` (Vault's
/// `policyutil.SanitizePolicies`).
pub fn sanitize_policies(policies: &[String], with_default: bool) -> Vec<String> {
    let mut set: BTreeSet<String> = policies
        .iter()
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if with_default && !set.contains("root") {
        set.insert("default".to_string());
    }
    set.into_iter().collect()
}

fn random(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn display_name(requested: &str) -> String {
    if requested.is_empty() {
        return "token".to_string();
    }
    let full = format!("token-{requested}");
    let mut out = String::with_capacity(full.len());
    let mut in_run = false;
    for c in full.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Every token, with the parent/child tree.
#[derive(Debug, Default)]
pub struct TokenStore {
    by_id: HashMap<String, TokenEntry>,
    by_accessor: HashMap<String, String>,
    children: HashMap<String, BTreeSet<String>>,
}

impl TokenStore {
    /// A store holding the dev root token `root_id` (policies `["root"]`, no expiry).
    pub fn with_root(root_id: &str) -> TokenStore {
        let mut s = TokenStore::default();
        s.insert(TokenEntry {
            id: root_id.to_string(),
            accessor: random(24),
            policies: vec!["root".to_string()],
            parent: None,
            display_name: "root".to_string(),
            meta: BTreeMap::new(),
            created: Utc::now(),
            creation_ttl: None,
            expires: None,
            renewable: false,
            path: "auth/token/root".to_string(),
        });
        s
    }

    fn insert(&mut self, t: TokenEntry) {
        if let Some(p) = &t.parent {
            self.children
                .entry(p.clone())
                .or_default()
                .insert(t.id.clone());
        }
        self.by_accessor.insert(t.accessor.clone(), t.id.clone());
        self.by_id.insert(t.id.clone(), t);
    }

    /// The valid token `id` at `now`. A token that expired, or whose ancestor expired, is
    /// revoked (with its tree) and `None` is returned.
    pub fn lookup(&mut self, id: &str, now: DateTime<Utc>) -> Option<TokenEntry> {
        let mut cur = Some(id.to_string());
        while let Some(c) = cur {
            let t = self.by_id.get(&c)?;
            if t.expired(now) {
                self.revoke_tree(&c);
                return None;
            }
            cur = t.parent.clone();
        }
        self.by_id.get(id).cloned()
    }

    /// The token ID behind `accessor`, if valid.
    pub fn id_of_accessor(&mut self, accessor: &str, now: DateTime<Utc>) -> Option<String> {
        let id = self.by_accessor.get(accessor)?.clone();
        self.lookup(&id, now).map(|t| t.id)
    }

    /// Creates a child of `parent` (or an orphan). `sudo` = the caller holds `sudo` on the
    /// create path (root implies it); `orphan_endpoint` = the request came to `create-orphan`.
    ///
    /// Errors: [`CreateError`] with Vault's message.
    pub fn create(
        &mut self,
        parent: &TokenEntry,
        req: CreateRequest,
        sudo: bool,
        orphan_endpoint: bool,
        now: DateTime<Utc>,
    ) -> Result<TokenEntry, CreateError> {
        let privileged = parent.is_root() || sudo;
        if req.no_parent && !orphan_endpoint && !privileged {
            return Err(CreateError(
                "root or sudo privileges required to create orphan token".into(),
            ));
        }
        if req.id.is_some() && !privileged {
            return Err(CreateError(
                "root or sudo privileges required to specify token id".into(),
            ));
        }
        let requested = if req.policies.is_empty() {
            parent
                .policies
                .iter()
                .filter(|p| !(req.no_default_policy && *p == "default"))
                .cloned()
                .collect()
        } else {
            req.policies.clone()
        };
        let policies = sanitize_policies(&requested, !req.no_default_policy);
        if policies.iter().any(|p| p == "root") && !parent.is_root() {
            return Err(CreateError(
                "root tokens may not be created without parent token being root".into(),
            ));
        }
        if !privileged {
            let allowed = sanitize_policies(&parent.policies, true);
            if !policies.iter().all(|p| allowed.contains(p)) {
                return Err(CreateError(
                    "child policies must be subset of parent".into(),
                ));
            }
        }
        let ttl = match req.ttl.as_ref().or(req.period.as_ref()) {
            Some(v) => parse_duration(v).map_err(CreateError)?,
            None => Duration::ZERO,
        };
        let root_token = policies == ["root"];
        let ttl = if ttl.is_zero() {
            (!root_token).then_some(SYSTEM_MAX_TTL)
        } else {
            Some(ttl.min(SYSTEM_MAX_TTL))
        };
        let id = match req.id {
            Some(id) if !id.is_empty() => {
                if self.by_id.contains_key(&id) {
                    return Err(CreateError("token with that ID already exists".into()));
                }
                id
            }
            _ => format!("hvs.{}", random(24)),
        };
        let orphan = req.no_parent || orphan_endpoint;
        let t = TokenEntry {
            id,
            accessor: random(24),
            policies,
            parent: (!orphan).then(|| parent.id.clone()),
            display_name: display_name(&req.display_name),
            meta: req.meta,
            created: now,
            creation_ttl: ttl,
            expires: ttl.and_then(|d| chrono::Duration::from_std(d).ok().map(|d| now + d)),
            renewable: req.renewable.unwrap_or(true),
            path: if orphan_endpoint {
                "auth/token/create-orphan".into()
            } else {
                "auth/token/create".into()
            },
        };
        self.insert(t.clone());
        Ok(t)
    }

    /// Renews `id` by `increment` (its creation TTL when `None`), capped at the system max.
    ///
    /// Errors: not renewable.
    pub fn renew(
        &mut self,
        id: &str,
        increment: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<TokenEntry, CreateError> {
        let t = self
            .by_id
            .get_mut(id)
            .ok_or_else(|| CreateError("token not found".into()))?;
        if !t.renewable || t.expires.is_none() {
            return Err(CreateError("lease is not renewable".into()));
        }
        let d = increment
            .filter(|d| !d.is_zero())
            .or(t.creation_ttl)
            .unwrap_or(SYSTEM_MAX_TTL)
            .min(SYSTEM_MAX_TTL);
        t.expires = chrono::Duration::from_std(d).ok().map(|d| now + d);
        Ok(t.clone())
    }

    /// Revokes `id` and every token created from it, recursively.
    pub fn revoke_tree(&mut self, id: &str) {
        let mut stack = vec![id.to_string()];
        while let Some(t) = stack.pop() {
            if let Some(kids) = self.children.remove(&t) {
                stack.extend(kids);
            }
            if let Some(e) = self.by_id.remove(&t) {
                self.by_accessor.remove(&e.accessor);
                if let Some(p) = &e.parent
                    && let Some(siblings) = self.children.get_mut(p)
                {
                    siblings.remove(&t);
                }
            }
        }
    }

    /// Revokes `id` only; its children become orphans.
    pub fn revoke_orphan(&mut self, id: &str) {
        if let Some(kids) = self.children.remove(id) {
            for k in kids {
                if let Some(c) = self.by_id.get_mut(&k) {
                    c.parent = None;
                }
            }
        }
        self.revoke_tree(id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(policies: &[&str]) -> CreateRequest {
        CreateRequest {
            policies: policies.iter().map(|s| s.to_string()).collect(),
            ..CreateRequest::default()
        }
    }

    #[test]
    fn children_of_non_root_tokens_get_at_most_their_parents_policies() {
        let now = Utc::now();
        let mut s = TokenStore::with_root("root");
        let root = s.lookup("root", now).unwrap();
        let a = s
            .create(&root, req(&["Team-A", "ci"]), true, false, now)
            .unwrap();
        assert_eq!(a.policies, vec!["ci", "default", "team-a"]);
        assert!(s.create(&a, req(&["ci"]), false, false, now).is_ok());
        let e = s
            .create(&a, req(&["team-b"]), false, false, now)
            .unwrap_err();
        assert_eq!(e.0, "child policies must be subset of parent");
        assert!(s.create(&a, req(&["root"]), false, false, now).is_err());
        let orphan = CreateRequest {
            no_parent: true,
            ..req(&["ci"])
        };
        assert!(s.create(&a, orphan.clone(), false, false, now).is_err());
        assert!(s.create(&a, orphan, true, false, now).is_ok(), "sudo may");
        let inherit = s.create(&a, req(&[]), false, false, now).unwrap();
        assert_eq!(inherit.policies, a.policies);
    }

    #[test]
    fn revoking_a_parent_revokes_its_children_but_not_orphans() {
        let now = Utc::now();
        let mut s = TokenStore::with_root("root");
        let root = s.lookup("root", now).unwrap();
        let p = s.create(&root, req(&["a"]), true, false, now).unwrap();
        let child = s.create(&p, req(&["a"]), false, false, now).unwrap();
        let grandchild = s.create(&child, req(&[]), false, false, now).unwrap();
        let orphan = s.create(&p, req(&["a"]), false, true, now).unwrap();
        s.revoke_tree(&p.id);
        assert!(s.lookup(&child.id, now).is_none());
        assert!(s.lookup(&grandchild.id, now).is_none());
        assert!(s.lookup(&orphan.id, now).is_some());
    }

    #[test]
    fn expiry_revokes_the_token_and_its_children() {
        let now = Utc::now();
        let mut s = TokenStore::with_root("root");
        let root = s.lookup("root", now).unwrap();
        let p = s
            .create(
                &root,
                CreateRequest {
                    ttl: Some(json!("10s")),
                    ..req(&["a"])
                },
                true,
                false,
                now,
            )
            .unwrap();
        let c = s.create(&p, req(&["a"]), false, false, now).unwrap();
        assert!(s.lookup(&c.id, now).is_some());
        let later = now + chrono::Duration::seconds(11);
        assert!(s.lookup(&c.id, later).is_none(), "the parent expired");
        assert!(s.lookup(&p.id, later).is_none());
        assert!(s.lookup("root", later).is_some(), "root never expires");
    }

    #[test]
    fn display_names_and_durations_follow_vault() {
        assert_eq!(display_name(""), "token");
        assert_eq!(display_name("alloc/1 build"), "token-alloc-1-build");
        assert_eq!(parse_duration(&json!(90)).unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration(&json!("90")).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration(&json!("1h30m")).unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_duration(&json!("soon")).is_err());
    }
}
