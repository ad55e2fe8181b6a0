//! Consul ACLs: policies, tokens, and the authorizer a request's token resolves to.
//!
//! Off by default, as in `consul agent -dev`; on with `--consul-acl-initial-management <secret>`,
//! which is Consul's `acl { enabled = true, default_policy = "deny", tokens { initial_management
//! = "<secret>" } }` (`website/content/docs/agent/config/config-files.mdx`, "ACL Parameters").
//!
//! What the real server does, and this emulator too:
//! - Tokens: the initial management token (linked to the builtin `global-management` policy,
//!   ID `00000000-0000-0000-0000-000000000001`) and the anonymous token (AccessorID
//!   `00000000-0000-0000-0000-000000000002`, SecretID `anonymous`, no policies) exist from the
//!   start. A request without a token uses the anonymous token; a secret that names no token is
//!   answered 403 `ACL not found` (`acl/errors.go`, `agent/http.go`).
//! - A token's policies (linked by ID; a name given at creation is resolved to the ID then, as
//!   `ACL.TokenSet` does) are merged and looked up as in [`rules`]; where no rule matches, the
//!   default policy (`deny`) decides (`acl/chained_authorizer.go`).
//! - A denial is 403 with the body `Permission denied: token with AccessorID '<id>' lacks
//!   permission '<resource>:<level>' on "<name>"` (for the anonymous token: `Permission denied:
//!   anonymous token lacks …. The anonymous token is used implicitly when a request does not
//!   specify a token.`), the text of `acl.PermissionDeniedError` (`acl/errors.go`).
//! - `/v1/acl/*` answers 401 `ACL support disabled` while ACLs are off (`agent/acl_endpoint.go`);
//!   managing policies and tokens needs `acl = "write"`, reading them `acl = "read"`.
//!
//! Which endpoint checks what is documented where it is enforced (`http/kv.rs`,
//! `http/session.rs`, `txn.rs`) and in `docs/devstack.md`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

pub mod rules;

use rules::{Access, PolicyRules, Rules};

/// ID of the builtin policy that grants everything.
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Name of that policy.
pub const GLOBAL_MANAGEMENT_NAME: &str = "global-management";
/// AccessorID of the anonymous token (`acl.AnonymousTokenID`).
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
/// SecretID of the anonymous token.
pub const ANONYMOUS_SECRET: &str = "anonymous";

/// An ACL failure; the text is Consul's, the status 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclError {
    /// The token lacks a permission (`acl.PermissionDeniedError`).
    Denied {
        /// AccessorID of the token.
        accessor: String,
        /// `key`, `session`, `agent`, `acl`, …
        resource: &'static str,
        /// The level required.
        level: Access,
        /// The resource name; `None` for global permissions (`acl:write`).
        name: Option<String>,
    },
    /// The secret names no token (`acl.ErrNotFound`).
    NotFound,
}

impl std::fmt::Display for AclError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AclError::Denied {
                accessor,
                resource,
                level,
                name,
            } => f.write_str(&denied_text(accessor, resource, *level, name.as_deref())),
            AclError::NotFound => f.write_str("ACL not found"),
        }
    }
}

impl std::error::Error for AclError {}

fn denied_text(accessor: &str, resource: &str, level: Access, name: Option<&str>) -> String {
    let mut s = String::from("Permission denied");
    if accessor == ANONYMOUS_ACCESSOR {
        s.push_str(": anonymous token");
    } else {
        s.push_str(&format!(": token with AccessorID '{accessor}'"));
    }
    s.push_str(&format!(
        " lacks permission '{resource}:{}'",
        level.as_str()
    ));
    if let Some(n) = name {
        s.push_str(&format!(" on \"{n}\""));
    }
    if accessor == ANONYMOUS_ACCESSOR {
        s.push_str(
            ". The anonymous token is used implicitly when a request does not specify a token.",
        );
    }
    s
}

/// A stored policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// UUID.
    pub id: String,
    /// Unique name (`^[A-Za-z0-9\-_]{1,128}$`).
    pub name: String,
    /// Free text.
    pub description: String,
    /// The rules text as given.
    pub rules: String,
    /// Datacenters the policy is valid in (empty = all); kept and echoed.
    pub datacenters: Vec<String>,
    /// Parsed rules.
    pub parsed: Arc<PolicyRules>,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

/// A stored token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Public ID.
    pub accessor: String,
    /// The secret sent as `X-Consul-Token`.
    pub secret: String,
    /// Free text.
    pub description: String,
    /// Linked policy IDs.
    pub policies: Vec<String>,
    /// `Local` flag (kept and echoed).
    pub local: bool,
    /// RFC 3339 creation time.
    pub create_time: String,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

/// What a request's token may do.
#[derive(Debug, Clone)]
pub struct Authorizer {
    accessor: String,
    /// `None` = everything allowed (ACLs off, or a management token).
    rules: Option<Arc<PolicyRules>>,
    default_allow: bool,
}

impl Authorizer {
    /// The authorizer of a stack without ACLs: everything is allowed.
    pub fn allow_all() -> Authorizer {
        Authorizer {
            accessor: String::new(),
            rules: None,
            default_allow: true,
        }
    }

    /// True when nothing is ever denied (no filtering needed).
    pub fn is_unrestricted(&self) -> bool {
        self.rules.is_none()
    }

    fn decide(&self, pick: fn(&PolicyRules) -> &Rules, name: &str, level: Access) -> bool {
        match &self.rules {
            None => true,
            Some(r) => pick(r)
                .lookup(name)
                .map_or(self.default_allow, |a| a.grants(level)),
        }
    }

    fn check(
        &self,
        allowed: bool,
        resource: &'static str,
        level: Access,
        name: Option<&str>,
    ) -> Result<(), AclError> {
        if allowed {
            Ok(())
        } else {
            Err(AclError::Denied {
                accessor: self.accessor.clone(),
                resource,
                level,
                name: name.map(str::to_string),
            })
        }
    }

    /// `key:read` on `key`.
    pub fn key_read(&self, key: &str) -> Result<(), AclError> {
        let ok = self.decide(|r| &r.key, key, Access::Read);
        self.check(ok, "key", Access::Read, Some(key))
    }

    /// True when `key:read` is granted (filtering lists, `acl.FilterDirEnt`).
    pub fn can_read_key(&self, key: &str) -> bool {
        self.decide(|r| &r.key, key, Access::Read)
    }

    /// `key:write` on `key`.
    pub fn key_write(&self, key: &str) -> Result<(), AclError> {
        let ok = self.decide(|r| &r.key, key, Access::Write);
        self.check(ok, "key", Access::Write, Some(key))
    }

    /// `KeyWritePrefix`: write on `prefix` and on every rule under it (recursive delete).
    pub fn key_write_prefix(&self, prefix: &str) -> Result<(), AclError> {
        let ok = match &self.rules {
            None => true,
            Some(r) => r.key.write_prefix(prefix).unwrap_or(self.default_allow),
        };
        self.check(ok, "key", Access::Write, Some(prefix))
    }

    /// `session:write` on `node` (create, renew, destroy a session on that node).
    pub fn session_write(&self, node: &str) -> Result<(), AclError> {
        let ok = self.decide(|r| &r.session, node, Access::Write);
        self.check(ok, "session", Access::Write, Some(node))
    }

    /// True when `session:read` on `node` is granted (filtering session lists).
    pub fn can_read_session(&self, node: &str) -> bool {
        self.decide(|r| &r.session, node, Access::Read)
    }

    /// `agent:read` on `node` (`/v1/agent/self`).
    pub fn agent_read(&self, node: &str) -> Result<(), AclError> {
        let ok = self.decide(|r| &r.agent, node, Access::Read);
        self.check(ok, "agent", Access::Read, Some(node))
    }

    /// `service:write` on service `name` (agent service register / deregister,
    /// `vetServiceRegister` in `agent/acl.go`).
    pub fn service_write(&self, name: &str) -> Result<(), AclError> {
        let ok = self.decide(|r| &r.service, name, Access::Write);
        self.check(ok, "service", Access::Write, Some(name))
    }

    /// `service:read` on service `name`.
    pub fn service_read(&self, name: &str) -> Result<(), AclError> {
        let ok = self.decide(|r| &r.service, name, Access::Read);
        self.check(ok, "service", Access::Read, Some(name))
    }

    /// True when `service:read` on `name` is granted (filtering catalog and agent lists).
    pub fn can_read_service(&self, name: &str) -> bool {
        self.decide(|r| &r.service, name, Access::Read)
    }

    /// True when `node:read` on `node` is granted (filtering health and catalog answers).
    pub fn can_read_node(&self, node: &str) -> bool {
        self.decide(|r| &r.node, node, Access::Read)
    }

    fn global(&self, v: fn(&PolicyRules) -> Option<Access>, level: Access) -> bool {
        match &self.rules {
            None => true,
            Some(r) => v(r).map_or(self.default_allow, |a| a.grants(level)),
        }
    }

    /// `acl:read` (read policies and tokens).
    pub fn acl_read(&self) -> Result<(), AclError> {
        let ok = self.global(|r| r.acl, Access::Read);
        self.check(ok, "acl", Access::Read, None)
    }

    /// `acl:write` (create, update, delete policies and tokens).
    pub fn acl_write(&self) -> Result<(), AclError> {
        let ok = self.global(|r| r.acl, Access::Write);
        self.check(ok, "acl", Access::Write, None)
    }
}

/// Why a policy or token write was refused; the text is the API's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Bad input Consul rejects before the RPC (400).
    #[error("{0}")]
    BadRequest(String),
    /// Refused by the server's validation (Consul answers these 500).
    #[error("{0}")]
    Invalid(String),
    /// The policy or token does not exist (403 `ACL not found`).
    #[error("ACL not found")]
    NotFound,
}

/// Policies and tokens. Lives inside [`crate::consul::db::Db`], so a request's authorization and
/// its operation see one state.
#[derive(Debug, Clone)]
pub struct AclStore {
    /// `default_policy = "allow"`; the flag-enabled stack uses `deny`.
    pub default_allow: bool,
    policies: BTreeMap<String, Policy>,
    tokens: BTreeMap<String, Token>,
    /// Index of the last ACL write.
    pub index: u64,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn hash_of(parts: &[&str]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    base64::engine::general_purpose::STANDARD.encode(h.finish().to_be_bytes())
}

fn valid_policy_name(n: &str) -> bool {
    (1..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok() && s.len() == 36
}

impl AclStore {
    /// A store with the builtin policy, the initial management token (secret
    /// `initial_management`) and the anonymous token, all at `index`.
    pub fn new(initial_management: &str, index: u64) -> AclStore {
        let mut s = AclStore {
            default_allow: false,
            policies: BTreeMap::new(),
            tokens: BTreeMap::new(),
            index,
        };
        s.policies.insert(
            GLOBAL_MANAGEMENT_ID.into(),
            Policy {
                id: GLOBAL_MANAGEMENT_ID.into(),
                name: GLOBAL_MANAGEMENT_NAME.into(),
                description: "Builtin Policy that grants unlimited access".into(),
                rules: String::new(),
                datacenters: Vec::new(),
                parsed: Arc::new(PolicyRules::default()),
                create_index: index,
                modify_index: index,
            },
        );
        let created = now_rfc3339();
        for (accessor, secret, description, policies) in [
            (
                uuid::Uuid::new_v4().to_string(),
                initial_management.to_string(),
                "Initial Management Token",
                vec![GLOBAL_MANAGEMENT_ID.to_string()],
            ),
            (
                ANONYMOUS_ACCESSOR.to_string(),
                ANONYMOUS_SECRET.to_string(),
                "Anonymous Token",
                Vec::new(),
            ),
        ] {
            s.tokens.insert(
                accessor.clone(),
                Token {
                    accessor,
                    secret,
                    description: description.into(),
                    policies,
                    local: false,
                    create_time: created.clone(),
                    create_index: index,
                    modify_index: index,
                },
            );
        }
        s
    }

    /// The authorizer of a request's token secret (`None` or empty = the anonymous token).
    ///
    /// Errors: [`AclError::NotFound`] when the secret names no token.
    pub fn resolve(&self, secret: Option<&str>) -> Result<Authorizer, AclError> {
        let secret = secret.filter(|s| !s.is_empty()).unwrap_or(ANONYMOUS_SECRET);
        let token = self
            .tokens
            .values()
            .find(|t| t.secret == secret)
            .ok_or(AclError::NotFound)?;
        if token.policies.iter().any(|p| p == GLOBAL_MANAGEMENT_ID) {
            return Ok(Authorizer {
                accessor: token.accessor.clone(),
                rules: None,
                default_allow: true,
            });
        }
        let mut merged = PolicyRules::default();
        for p in token.policies.iter().filter_map(|id| self.policies.get(id)) {
            merged.merge(&p.parsed);
        }
        Ok(Authorizer {
            accessor: token.accessor.clone(),
            rules: Some(Arc::new(merged)),
            default_allow: self.default_allow,
        })
    }

    fn policy_by_name(&self, name: &str) -> Option<&Policy> {
        self.policies.values().find(|p| p.name == name)
    }

    /// Creates (`id` = `None`) or updates a policy from its API JSON (`Name`, `Description`,
    /// `Rules`, `Datacenters`), at raft index `index` (`ACL.PolicySet`).
    ///
    /// Errors: [`WriteError`] with Consul's texts (missing or invalid name, duplicate name,
    /// rules that do not parse, the builtin policy changed).
    pub fn set_policy(
        &mut self,
        id: Option<&str>,
        body: &Value,
        index: u64,
    ) -> Result<Value, WriteError> {
        let field = |k: &str| {
            body.as_object()
                .and_then(|o| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
                .map(|(_, v)| v)
        };
        let text = |k: &str| -> Result<String, WriteError> {
            match field(k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(WriteError::BadRequest(format!(
                    "Policy decoding failed: {k} must be a string, got {v}"
                ))),
            }
        };
        let body_id = text("ID")?;
        let id = match id {
            None if !body_id.is_empty() => {
                return Err(WriteError::BadRequest(
                    "Cannot specify the ID when creating a new policy".into(),
                ));
            }
            None => None,
            Some(id) if !body_id.is_empty() && body_id != id => {
                return Err(WriteError::BadRequest(
                    "Policy ID in URL and payload do not match".into(),
                ));
            }
            Some(id) => Some(id.to_string()),
        };
        let name = text("Name")?;
        if name.is_empty() {
            return Err(WriteError::Invalid("Invalid Policy: no Name is set".into()));
        }
        if !valid_policy_name(&name) {
            return Err(WriteError::Invalid(
                "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
                    .into(),
            ));
        }
        if id.as_deref() == Some(GLOBAL_MANAGEMENT_ID) {
            return Err(WriteError::Invalid(
                "Changing the Rules for the builtin global-management policy is not permitted"
                    .into(),
            ));
        }
        if let Some(other) = self.policy_by_name(&name)
            && Some(other.id.as_str()) != id.as_deref()
        {
            return Err(WriteError::Invalid(format!(
                "Invalid Policy: A Policy with Name {name:?} already exists"
            )));
        }
        let rules = text("Rules")?;
        let parsed = PolicyRules::parse(&rules)
            .map_err(|e| WriteError::Invalid(format!("Failed to parse policy: {e}")))?;
        let datacenters = match field("Datacenters") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let (id, create_index) = match id {
            Some(id) => {
                let existing = self.policies.get(&id).ok_or(WriteError::NotFound)?;
                (id, existing.create_index)
            }
            None => (uuid::Uuid::new_v4().to_string(), index),
        };
        let p = Policy {
            id: id.clone(),
            name,
            description: text("Description")?,
            rules,
            datacenters,
            parsed: Arc::new(parsed),
            create_index,
            modify_index: index,
        };
        let out = policy_json(&p, true);
        self.policies.insert(id, p);
        self.index = index;
        Ok(out)
    }

    /// A policy by ID or name, as API JSON.
    pub fn policy(&self, id: Option<&str>, name: Option<&str>) -> Option<Value> {
        let p = match (id, name) {
            (Some(id), _) => self.policies.get(id),
            (None, Some(n)) => self.policy_by_name(n),
            (None, None) => None,
        }?;
        Some(policy_json(p, true))
    }

    /// Every policy, as list stubs (no `Rules`).
    pub fn policies(&self) -> Value {
        Value::Array(
            self.policies
                .values()
                .map(|p| policy_json(p, false))
                .collect(),
        )
    }

    /// Deletes a policy (`ACL.PolicyDelete`); tokens keep the dangling link, which grants
    /// nothing.
    ///
    /// Errors: the builtin policy.
    pub fn delete_policy(&mut self, id: &str, index: u64) -> Result<(), WriteError> {
        if id == GLOBAL_MANAGEMENT_ID {
            return Err(WriteError::Invalid(
                "Delete operation not permitted on the builtin global-management policy".into(),
            ));
        }
        if self.policies.remove(id).is_some() {
            self.index = index;
        }
        Ok(())
    }

    /// Creates (`accessor` = `None`) or updates a token from its API JSON (`Description`,
    /// `Policies: [{ID} | {Name}]`, `SecretID`, `AccessorID`, `Local`), at raft index `index`
    /// (`ACL.TokenSet`).
    ///
    /// Errors: [`WriteError`] with Consul's texts (unknown policy, non-UUID IDs, IDs in use).
    pub fn set_token(
        &mut self,
        accessor: Option<&str>,
        body: &Value,
        index: u64,
    ) -> Result<Value, WriteError> {
        let obj = body.as_object().ok_or_else(|| {
            WriteError::BadRequest("Token decoding failed: expected a JSON object".into())
        })?;
        let field = |k: &str| {
            obj.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        let text = |k: &str| -> Result<String, WriteError> {
            match field(k) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(WriteError::BadRequest(format!(
                    "Token decoding failed: {k} must be a string, got {v}"
                ))),
            }
        };
        let body_accessor = text("AccessorID")?;
        if let Some(a) = accessor
            && !body_accessor.is_empty()
            && body_accessor != a
        {
            return Err(WriteError::BadRequest(
                "Token Accessor ID in URL and payload do not match".into(),
            ));
        }
        let mut policies = Vec::new();
        if let Some(links) = field("Policies") {
            let links = links.as_array().ok_or_else(|| {
                WriteError::BadRequest("Token decoding failed: Policies must be a list".into())
            })?;
            for link in links {
                let get = |k: &str| {
                    link.as_object()
                        .and_then(|o| o.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
                        .and_then(|(_, v)| v.as_str())
                        .filter(|s| !s.is_empty())
                };
                let id = match (get("ID"), get("Name")) {
                    (Some(id), _) => {
                        self.policies.get(id).map(|p| p.id.clone()).ok_or_else(|| {
                            WriteError::Invalid(format!("No such ACL policy with ID {id:?}"))
                        })?
                    }
                    (None, Some(n)) => {
                        self.policy_by_name(n)
                            .map(|p| p.id.clone())
                            .ok_or_else(|| {
                                WriteError::Invalid(format!("No such ACL policy with name {n:?}"))
                            })?
                    }
                    (None, None) => {
                        return Err(WriteError::Invalid(
                            "Invalid Token: a policy link needs an ID or a Name".into(),
                        ));
                    }
                };
                if !policies.contains(&id) {
                    policies.push(id);
                }
            }
        }
        let description = text("Description")?;
        let local = matches!(field("Local"), Some(Value::Bool(true)));
        let token = match accessor {
            Some(a) => {
                let mut t = self.tokens.get(a).cloned().ok_or(WriteError::NotFound)?;
                let secret = text("SecretID")?;
                if !secret.is_empty() && secret != t.secret {
                    return Err(WriteError::Invalid(
                        "Changing a token's SecretID is not permitted".into(),
                    ));
                }
                t.description = description;
                t.policies = policies;
                t.modify_index = index;
                t
            }
            None => {
                let accessor = match body_accessor.as_str() {
                    "" => uuid::Uuid::new_v4().to_string(),
                    a if !is_uuid(a) => {
                        return Err(WriteError::Invalid(
                            "Invalid Token: AccessorID is not a valid UUID".into(),
                        ));
                    }
                    a if self.tokens.contains_key(a) => {
                        return Err(WriteError::Invalid(
                            "Invalid Token: AccessorID is already in use".into(),
                        ));
                    }
                    a => a.to_string(),
                };
                let secret = match text("SecretID")?.as_str() {
                    "" => uuid::Uuid::new_v4().to_string(),
                    s if !is_uuid(s) => {
                        return Err(WriteError::Invalid(
                            "Invalid Token: SecretID is not a valid UUID".into(),
                        ));
                    }
                    s if self.tokens.values().any(|t| t.secret == s) => {
                        return Err(WriteError::Invalid(
                            "Invalid Token: SecretID is already in use".into(),
                        ));
                    }
                    s => s.to_string(),
                };
                Token {
                    accessor,
                    secret,
                    description,
                    policies,
                    local,
                    create_time: now_rfc3339(),
                    create_index: index,
                    modify_index: index,
                }
            }
        };
        let out = self.token_json(&token);
        self.tokens.insert(token.accessor.clone(), token);
        self.index = index;
        Ok(out)
    }

    /// A token by AccessorID, as API JSON.
    pub fn token(&self, accessor: &str) -> Option<Value> {
        self.tokens.get(accessor).map(|t| self.token_json(t))
    }

    /// The token whose secret is `secret` (`/v1/acl/token/self`; `None` = anonymous).
    pub fn token_by_secret(&self, secret: Option<&str>) -> Option<Value> {
        let secret = secret.filter(|s| !s.is_empty()).unwrap_or(ANONYMOUS_SECRET);
        self.tokens
            .values()
            .find(|t| t.secret == secret)
            .map(|t| self.token_json(t))
    }

    /// Every token.
    pub fn tokens(&self) -> Value {
        Value::Array(self.tokens.values().map(|t| self.token_json(t)).collect())
    }

    /// Deletes a token (`ACL.TokenDelete`).
    ///
    /// Errors: the anonymous token, or the caller's own token.
    pub fn delete_token(
        &mut self,
        accessor: &str,
        caller: Option<&str>,
        index: u64,
    ) -> Result<(), WriteError> {
        if accessor == ANONYMOUS_ACCESSOR {
            return Err(WriteError::Invalid(
                "Delete operation not permitted on the anonymous token".into(),
            ));
        }
        if let Some(t) = self.tokens.get(accessor)
            && Some(t.secret.as_str()) == caller
        {
            return Err(WriteError::Invalid(
                "Deletion of the request's authorization token is not permitted".into(),
            ));
        }
        if self.tokens.remove(accessor).is_some() {
            self.index = index;
        }
        Ok(())
    }

    fn token_json(&self, t: &Token) -> Value {
        let links: Vec<Value> = t
            .policies
            .iter()
            .filter_map(|id| self.policies.get(id))
            .map(|p| json!({ "ID": p.id, "Name": p.name }))
            .collect();
        json!({
            "AccessorID": t.accessor,
            "SecretID": t.secret,
            "Description": t.description,
            "Policies": links,
            "Local": t.local,
            "CreateTime": t.create_time,
            "Hash": hash_of(&[&t.accessor, &t.description, &t.policies.join(",")]),
            "CreateIndex": t.create_index,
            "ModifyIndex": t.modify_index,
        })
    }
}

fn policy_json(p: &Policy, with_rules: bool) -> Value {
    let mut v = json!({
        "ID": p.id,
        "Name": p.name,
        "Description": p.description,
        "Datacenters": if p.datacenters.is_empty() { Value::Null } else { json!(p.datacenters) },
        "Hash": hash_of(&[&p.name, &p.description, &p.rules]),
        "CreateIndex": p.create_index,
        "ModifyIndex": p.modify_index,
    });
    if with_rules && let Some(o) = v.as_object_mut() {
        o.insert("Rules".into(), Value::String(p.rules.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(rules: &str) -> (AclStore, String) {
        let mut s = AclStore::new("root", 5);
        s.set_policy(None, &json!({"Name": "p", "Rules": rules}), 6)
            .expect("policy");
        let t = s
            .set_token(None, &json!({"Policies": [{"Name": "p"}]}), 7)
            .expect("token");
        let secret = t["SecretID"].as_str().unwrap_or_default().to_string();
        (s, secret)
    }

    #[test]
    fn management_token_may_do_everything() {
        let s = AclStore::new("root", 5);
        let a = s.resolve(Some("root")).expect("management");
        assert!(a.is_unrestricted());
        assert!(a.key_write("anything").is_ok());
        assert!(a.acl_write().is_ok());
    }

    #[test]
    fn anonymous_token_is_denied_by_default_with_consuls_text() {
        let s = AclStore::new("root", 5);
        let a = s.resolve(None).expect("anonymous");
        let e = a.key_read("k").expect_err("default deny");
        assert_eq!(
            e.to_string(),
            "Permission denied: anonymous token lacks permission 'key:read' on \"k\". The \
             anonymous token is used implicitly when a request does not specify a token."
        );
    }

    #[test]
    fn unknown_secret_is_acl_not_found() {
        let s = AclStore::new("root", 5);
        assert_eq!(s.resolve(Some("nope")).map(|_| ()), Err(AclError::NotFound));
    }

    #[test]
    fn a_token_gets_exactly_its_policy() {
        let (s, secret) = store_with(
            r#"key_prefix "team-a/" { policy = "write" }
               key_prefix "shared/" { policy = "read" }"#,
        );
        let a = s.resolve(Some(&secret)).expect("token");
        assert!(a.key_write("team-a/x").is_ok());
        assert!(a.key_read("shared/x").is_ok());
        let e = a.key_write("shared/x").expect_err("read only");
        assert!(
            e.to_string()
                .starts_with("Permission denied: token with AccessorID '"),
            "{e}"
        );
        assert!(
            e.to_string()
                .ends_with("' lacks permission 'key:write' on \"shared/x\""),
            "{e}"
        );
        assert!(a.key_read("team-b/x").is_err());
        assert!(a.acl_read().is_err());
        assert!(a.session_write("node").is_err());
    }

    #[test]
    fn deleting_a_policy_takes_its_grants_away() {
        let (mut s, secret) = store_with(r#"key_prefix "" { policy = "write" }"#);
        let id = s.policy(None, Some("p")).expect("policy")["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        s.delete_policy(&id, 8).expect("delete");
        let a = s.resolve(Some(&secret)).expect("token");
        assert!(a.key_read("x").is_err());
    }

    #[test]
    fn policy_names_are_unique_and_validated() {
        let mut s = AclStore::new("root", 5);
        s.set_policy(None, &json!({"Name": "a", "Rules": ""}), 6)
            .expect("first");
        assert!(matches!(
            s.set_policy(None, &json!({"Name": "a", "Rules": ""}), 7),
            Err(WriteError::Invalid(_))
        ));
        assert!(matches!(
            s.set_policy(None, &json!({"Name": "a b"}), 7),
            Err(WriteError::Invalid(_))
        ));
        assert!(matches!(
            s.set_policy(None, &json!({"Name": "c", "Rules": "nope {"}), 7),
            Err(WriteError::Invalid(_))
        ));
        assert!(matches!(
            s.set_token(None, &json!({"Policies": [{"Name": "missing"}]}), 7),
            Err(WriteError::Invalid(_))
        ));
    }
}
