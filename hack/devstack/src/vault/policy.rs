//! Vault ACL policies: the HCL (or JSON) text an operator writes, parsed into path rules.
//!
//! Follows Vault's `vault/policy.go` (`ParseACLPolicy`, `parsePaths`) and the "Policies" concept
//! doc:
//! - a policy is a list of `path "<path>" { capabilities = [...] }` blocks (a top-level `name`
//!   attribute is allowed and ignored); any other top-level key is an error (`invalid key`);
//! - capabilities are `create`, `read`, `update`, `patch`, `delete`, `list`, `sudo`, `deny`; an
//!   unknown one is an error; `deny` in a list makes the rule deny-only;
//! - the pre-0.5 `policy = "read" | "write" | "deny" | "sudo"` shorthand expands as Vault expands
//!   it (`read` = read+list; `write` = create+read+update+delete+list; `sudo` = write+sudo);
//! - a path ending in `*` is a prefix (glob) rule — `*` anywhere else is a literal character;
//!   a path with a whole segment `+` matches exactly one segment there; `+*` is an error;
//!   a leading `/` is dropped.
//!
//! Knowingly not enforced (parsed and ignored): `allowed_parameters`, `denied_parameters`,
//! `required_parameters`, `min_wrapping_ttl`, `max_wrapping_ttl`, `control_group`,
//! `mfa_methods`, `subscribe_event_types`. Identity templating (`{{identity.entity.id}}`) is not
//! expanded: such a path only matches itself literally.

use std::fmt;

/// A set of capabilities (bit flags, as Vault's `CapabilitiesBitmap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Caps(u16);

impl Caps {
    /// No capability.
    pub const NONE: Caps = Caps(0);
    /// `deny`: overrides everything else on the same path.
    pub const DENY: Caps = Caps(1);
    /// `create`.
    pub const CREATE: Caps = Caps(1 << 1);
    /// `read`.
    pub const READ: Caps = Caps(1 << 2);
    /// `update`.
    pub const UPDATE: Caps = Caps(1 << 3);
    /// `delete`.
    pub const DELETE: Caps = Caps(1 << 4);
    /// `list`.
    pub const LIST: Caps = Caps(1 << 5);
    /// `sudo`: root-protected paths.
    pub const SUDO: Caps = Caps(1 << 6);
    /// `patch`.
    pub const PATCH: Caps = Caps(1 << 7);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Union of two sets, except that `deny` on either side leaves only `deny` (Vault merges the
    /// rules of one path across policies this way).
    pub fn merge(self, other: Caps) -> Caps {
        if self.contains(Caps::DENY) || other.contains(Caps::DENY) {
            Caps::DENY
        } else {
            Caps(self.0 | other.0)
        }
    }

    /// Whether nothing is granted (empty or deny).
    pub fn grants_nothing(self) -> bool {
        self.0 == 0 || self.contains(Caps::DENY)
    }

    /// Capability names, in Vault's order.
    pub fn names(self) -> Vec<&'static str> {
        if self.contains(Caps::DENY) {
            return vec!["deny"];
        }
        NAMES
            .iter()
            .filter(|(_, c)| *c != Caps::DENY && self.contains(*c))
            .map(|(n, _)| *n)
            .collect()
    }

    fn parse(name: &str) -> Option<Caps> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }
}

impl std::ops::BitOr for Caps {
    type Output = Caps;
    fn bitor(self, rhs: Caps) -> Caps {
        Caps(self.0 | rhs.0)
    }
}

const NAMES: &[(&str, Caps)] = &[
    ("create", Caps::CREATE),
    ("read", Caps::READ),
    ("update", Caps::UPDATE),
    ("patch", Caps::PATCH),
    ("delete", Caps::DELETE),
    ("list", Caps::LIST),
    ("sudo", Caps::SUDO),
    ("deny", Caps::DENY),
];

/// One `path` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// The path as written, leading `/` removed (a trailing `*` kept).
    pub path: String,
    /// Its capabilities (deny-only when `deny` was listed).
    pub caps: Caps,
}

impl PathRule {
    /// A prefix (glob) rule: the path ends with `*`.
    pub fn is_prefix(&self) -> bool {
        self.path.ends_with('*')
    }

    /// Has a whole-segment `+` wildcard.
    pub fn has_segment_wildcard(&self) -> bool {
        self.path == "+" || self.path.contains("/+") || self.path.starts_with("+/")
    }
}

/// A named ACL policy: its text (as stored and returned) and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Lowercased name (Vault lowercases policy names).
    pub name: String,
    /// The text as submitted.
    pub text: String,
    /// Rules, in order of appearance.
    pub rules: Vec<PathRule>,
}

/// Why a policy text is rejected (Vault answers 400 `Failed to parse policy: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

const PATH_KEYS: &[&str] = &[
    "policy",
    "capabilities",
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "control_group",
    "mfa_methods",
    "subscribe_event_types",
];

/// Parses a policy. `text` is HCL, or JSON when it starts with `{` (Vault accepts both).
///
/// Errors: [`PolicyError`] naming the bad key, path or capability.
pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
    let blocks = if text.trim_start().starts_with('{') {
        json_blocks(text)?
    } else {
        hcl_blocks(text)?
    };
    let mut rules = Vec::new();
    for (path, attrs) in blocks {
        rules.push(rule(&path, &attrs)?);
    }
    Ok(Policy {
        name: name.to_lowercase(),
        text: text.to_string(),
        rules,
    })
}

/// The attributes of one path block, reduced to what decides capabilities.
#[derive(Debug, Default)]
struct Attrs {
    policy: Option<String>,
    capabilities: Option<Vec<String>>,
}

fn hcl_blocks(text: &str) -> Result<Vec<(String, Attrs)>, PolicyError> {
    let body = hcl::parse(text).map_err(|e| PolicyError(format!("failed to parse policy: {e}")))?;
    let mut out = Vec::new();
    for s in body.0 {
        match s {
            hcl::Structure::Attribute(a) if a.key.as_str() == "name" => {}
            hcl::Structure::Attribute(a) => {
                return Err(PolicyError(format!("invalid key {:?}", a.key.as_str())));
            }
            hcl::Structure::Block(b) if b.identifier.as_str() == "path" => {
                let [label] = b.labels.as_slice() else {
                    return Err(PolicyError(
                        "a path block needs exactly one label: path \"<path>\" { ... }".into(),
                    ));
                };
                let path = label.as_str().to_string();
                let mut attrs = Attrs::default();
                for inner in b.body.0 {
                    let hcl::Structure::Attribute(a) = inner else {
                        return Err(PolicyError(format!("path {path:?}: unexpected block")));
                    };
                    let key = a.key.as_str();
                    if !PATH_KEYS.contains(&key) {
                        return Err(PolicyError(format!("path {path:?}: invalid key {key:?}")));
                    }
                    match (key, a.expr) {
                        ("policy", hcl::Expression::String(s)) => attrs.policy = Some(s),
                        ("capabilities", hcl::Expression::Array(items)) => {
                            let mut caps = Vec::new();
                            for i in items {
                                let hcl::Expression::String(s) = i else {
                                    return Err(PolicyError(format!(
                                        "path {path:?}: capabilities must be strings"
                                    )));
                                };
                                caps.push(s);
                            }
                            attrs.capabilities = Some(caps);
                        }
                        ("policy" | "capabilities", _) => {
                            return Err(PolicyError(format!(
                                "path {path:?}: {key} has the wrong type"
                            )));
                        }
                        _ => {}
                    }
                }
                out.push((path, attrs));
            }
            hcl::Structure::Block(b) => {
                return Err(PolicyError(format!(
                    "invalid key {:?}",
                    b.identifier.as_str()
                )));
            }
        }
    }
    Ok(out)
}

fn json_blocks(text: &str) -> Result<Vec<(String, Attrs)>, PolicyError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| PolicyError(format!("failed to parse policy: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| PolicyError("a JSON policy must be an object".into()))?;
    let mut out = Vec::new();
    for (k, v) in obj {
        match k.as_str() {
            "name" => {}
            "path" => {
                let paths = v
                    .as_object()
                    .ok_or_else(|| PolicyError("\"path\" must be an object".into()))?;
                for (path, body) in paths {
                    let body = body
                        .as_object()
                        .ok_or_else(|| PolicyError(format!("path {path:?} must be an object")))?;
                    let mut attrs = Attrs::default();
                    for (key, val) in body {
                        if !PATH_KEYS.contains(&key.as_str()) {
                            return Err(PolicyError(format!("path {path:?}: invalid key {key:?}")));
                        }
                        match key.as_str() {
                            "policy" => attrs.policy = val.as_str().map(str::to_string),
                            "capabilities" => {
                                let caps: Vec<String> = serde_json::from_value(val.clone())
                                    .map_err(|_| {
                                        PolicyError(format!(
                                            "path {path:?}: capabilities must be strings"
                                        ))
                                    })?;
                                attrs.capabilities = Some(caps);
                            }
                            _ => {}
                        }
                    }
                    out.push((path.clone(), attrs));
                }
            }
            other => return Err(PolicyError(format!("invalid key {other:?}"))),
        }
    }
    Ok(out)
}

fn rule(path: &str, attrs: &Attrs) -> Result<PathRule, PolicyError> {
    let path = path.trim_start_matches('/').to_string();
    if path.contains("+*") {
        return Err(PolicyError(format!(
            "path {path:?}: invalid use of wildcards ('+*' is forbidden)"
        )));
    }
    let mut caps = Caps::NONE;
    if let Some(p) = &attrs.policy {
        caps = caps
            | match p.as_str() {
                "deny" => Caps::DENY,
                "read" => Caps::READ | Caps::LIST,
                "write" => Caps::CREATE | Caps::READ | Caps::UPDATE | Caps::DELETE | Caps::LIST,
                "sudo" => {
                    Caps::CREATE
                        | Caps::READ
                        | Caps::UPDATE
                        | Caps::DELETE
                        | Caps::LIST
                        | Caps::SUDO
                }
                other => {
                    return Err(PolicyError(format!(
                        "path {path:?}: invalid policy {other:?}"
                    )));
                }
            };
    }
    for c in attrs.capabilities.iter().flatten() {
        let cap = Caps::parse(c.as_str())
            .ok_or_else(|| PolicyError(format!("path {path:?}: invalid capability {c:?}")))?;
        caps = caps | cap;
    }
    if caps.contains(Caps::DENY) {
        caps = Caps::DENY;
    }
    Ok(PathRule { path, caps })
}

/// Vault's built-in `default` policy (`vault/policy_store.go`, `defaultPolicy`): a token may look
/// up, renew and revoke itself, check its own capabilities, use its cubbyhole, wrap and unwrap,
/// and hash. Identity-templated paths are kept as written (they never match here).
pub const DEFAULT_POLICY: &str = r#"
# Look up, renew and revoke the token itself.
path "auth/token/lookup-self" {
    capabilities = ["read"]
}
path "auth/token/renew-self" {
    capabilities = ["update"]
}
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Its own capabilities on a path.
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Its own entity (identity templating: not expanded by the dev stack).
path "identity/entity/id/{{identity.entity.id}}" {
    capabilities = ["read"]
}
path "identity/entity/name/{{identity.entity.name}}" {
    capabilities = ["read"]
}

# The resultant ACL, for UIs.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Renew and look up leases whose ID it knows.
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Its own cubbyhole.
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Response wrapping.
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# General purpose tools.
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Control group status by accessor.
path "sys/control-group/request" {
    capabilities = ["update"]
}

# OIDC provider authorization endpoint.
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hcl_paths_capabilities_and_deny() {
        let p = parse(
            "Team-A",
            r#"
            name = "ignored"
            path "/secret/data/a/*" { capabilities = ["read", "list"] }
            path "secret/data/a/b" { capabilities = ["read", "deny"] }
            path "secret/old" { policy = "write" }
            "#,
        )
        .unwrap();
        assert_eq!(p.name, "team-a");
        assert_eq!(p.rules[0].path, "secret/data/a/*");
        assert_eq!(p.rules[0].caps.names(), vec!["read", "list"]);
        assert_eq!(p.rules[1].caps, Caps::DENY);
        assert_eq!(
            p.rules[2].caps.names(),
            vec!["create", "read", "update", "delete", "list"]
        );
    }

    #[test]
    fn json_policies_parse_like_hcl() {
        let p = parse(
            "j",
            r#"{"path": {"secret/data/x": {"capabilities": ["update"]}}}"#,
        )
        .unwrap();
        assert_eq!(p.rules[0].caps, Caps::UPDATE);
    }

    #[test]
    fn bad_keys_capabilities_and_wildcards_are_rejected() {
        assert!(parse("x", r#"path "a" { capabilities = ["fly"] }"#).is_err());
        assert!(parse("x", r#"key "a" { policy = "read" }"#).is_err());
        assert!(parse("x", r#"path "a" { colour = "red" }"#).is_err());
        assert!(parse("x", r#"path "a/+*" { capabilities = ["read"] }"#).is_err());
        assert!(parse("x", "path {").is_err());
    }

    #[test]
    fn the_default_policy_parses() {
        let p = parse("default", DEFAULT_POLICY).unwrap();
        assert!(p.rules.iter().any(|r| r.path == "auth/token/lookup-self"));
    }

    #[test]
    fn shipped_example_policies_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy");
        for f in ["vault-policy-controller.hcl", "vault-policy-namespace.hcl"] {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            let p = parse("x", &text).unwrap();
            assert!(!p.rules.is_empty(), "{f}");
        }
    }
}
