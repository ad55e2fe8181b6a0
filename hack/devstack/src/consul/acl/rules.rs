//! ACL policy rules: parsing (HCL through `hcl-rs`, or the same rules as JSON), merging the
//! policies of a token, and the longest-prefix lookup of Consul's policy authorizer.
//!
//! Sources: `website/content/docs/security/acl/acl-rules.mdx` (rule names, `policy` values),
//! `acl/policy.go` (`PolicyRules`: `key`/`key_prefix`, `session`/`session_prefix`,
//! `node`/`node_prefix`, `agent`/`agent_prefix`, `service`/`service_prefix`,
//! `event`/`event_prefix`, `query`/`query_prefix`, and the top-level `acl`, `operator`,
//! `keyring`, `mesh`, `peering`), `acl/policy_merger.go` (merging: `deny` beats everything, then
//! the most permissive of `write` > `list` > `read`), `acl/policy_authorizer.go` (`getPolicy`: an
//! exact rule on the whole name wins, otherwise the longest matching prefix rule; `enforce`:
//! `write` grants read, list and write, `list` grants read and list, `read` grants read, `deny`
//! nothing; `KeyWritePrefix` for recursive deletes).
//!
//! Deviation (stricter): Consul's HCL decoder ignores unknown rule names; here an unknown block or
//! attribute is an error naming it, so a typo in a shipped policy fails the tests instead of
//! silently granting nothing.

use std::collections::BTreeMap;

use serde_json::Value;

/// An access level of a rule (`policy = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// `deny`: explicit denial.
    Deny,
    /// `read`.
    Read,
    /// `list` (key rules only): read plus listing.
    List,
    /// `write`: read, list and write.
    Write,
}

impl Access {
    fn parse(s: &str, allow_list: bool) -> Option<Access> {
        match s {
            "deny" => Some(Access::Deny),
            "read" => Some(Access::Read),
            "list" if allow_list => Some(Access::List),
            "write" => Some(Access::Write),
            _ => None,
        }
    }

    /// The API spelling, as in the denial text (`'key:write'`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::Read => "read",
            Access::List => "list",
            Access::Write => "write",
        }
    }

    /// Whether a rule of this level grants `required` (`enforce` in `policy_authorizer.go`).
    pub fn grants(self, required: Access) -> bool {
        match self {
            Access::Write => true,
            Access::List => matches!(required, Access::Read | Access::List),
            Access::Read => required == Access::Read,
            Access::Deny => false,
        }
    }

    /// Two rules for the same name merged (`policy_merger.go`): `deny` wins, otherwise the most
    /// permissive.
    pub fn merge(self, other: Access) -> Access {
        if self == Access::Deny || other == Access::Deny {
            Access::Deny
        } else {
            self.max(other)
        }
    }
}

/// The rules of one resource kind: exact rules (`key "a"`) and prefix rules (`key_prefix "a"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    exact: BTreeMap<String, Access>,
    prefix: BTreeMap<String, Access>,
}

impl Rules {
    fn insert(&mut self, name: &str, is_prefix: bool, access: Access) {
        let map = if is_prefix {
            &mut self.prefix
        } else {
            &mut self.exact
        };
        map.entry(name.to_string())
            .and_modify(|a| *a = a.merge(access))
            .or_insert(access);
    }

    fn merge(&mut self, other: &Rules) {
        for (n, a) in &other.exact {
            self.insert(n, false, *a);
        }
        for (n, a) in &other.prefix {
            self.insert(n, true, *a);
        }
    }

    /// The longest prefix rule matching `name` (possibly `name` itself).
    fn longest_prefix(&self, name: &str) -> Option<Access> {
        (0..=name.len())
            .rev()
            .filter(|end| name.is_char_boundary(*end))
            .find_map(|end| self.prefix.get(&name[..end]).copied())
    }

    /// The rule that applies to `name` (`getPolicy`): the exact rule on `name`, else the longest
    /// prefix rule; `None` when no rule matches (the default policy decides).
    pub fn lookup(&self, name: &str) -> Option<Access> {
        self.exact
            .get(name)
            .copied()
            .or_else(|| self.longest_prefix(name))
    }

    /// `KeyWritePrefix`: `Some(true)` when the longest prefix rule of `prefix` grants write and no
    /// rule at or under `prefix` grants less; `Some(false)` when one of them denies write; `None`
    /// when no rule decides (the default policy does).
    pub fn write_prefix(&self, prefix: &str) -> Option<bool> {
        let mut decided = None;
        if let Some(a) = self.longest_prefix(prefix) {
            if a != Access::Write {
                return Some(false);
            }
            decided = Some(true);
        }
        let under = |m: &BTreeMap<String, Access>| {
            m.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .any(|(_, a)| *a != Access::Write)
        };
        if under(&self.exact) || under(&self.prefix) {
            return Some(false);
        }
        decided
    }
}

/// Every rule of one policy (or of a token's merged policies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    /// `key` / `key_prefix`.
    pub key: Rules,
    /// `session` / `session_prefix` (names are node names).
    pub session: Rules,
    /// `node` / `node_prefix`.
    pub node: Rules,
    /// `agent` / `agent_prefix` (names are node names).
    pub agent: Rules,
    /// `service` / `service_prefix`.
    pub service: Rules,
    /// `event` / `event_prefix` (parsed, no endpoint here uses them).
    pub event: Rules,
    /// `query` / `query_prefix` (parsed, no endpoint here uses them).
    pub query: Rules,
    /// Top-level `acl = "read" | "write" | "deny"`.
    pub acl: Option<Access>,
    /// Top-level `operator`.
    pub operator: Option<Access>,
    /// Top-level `keyring`.
    pub keyring: Option<Access>,
    /// Top-level `mesh`.
    pub mesh: Option<Access>,
    /// Top-level `peering`.
    pub peering: Option<Access>,
}

/// Why policy rules were rejected; the text is what the API answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// Not HCL / JSON at all.
    #[error("Failed to parse ACL rules: {0}")]
    Syntax(String),
    /// A rule or attribute this version does not know.
    #[error("Failed to parse ACL rules: unknown rule {0:?}")]
    Unknown(String),
    /// A `policy` value that is not allowed for the rule.
    #[error("Invalid {0} policy: {1:?}")]
    Level(String, String),
    /// A rule block without exactly one name label, or without `policy`.
    #[error("Failed to parse ACL rules: {0}")]
    Shape(String),
}

impl PolicyRules {
    /// Parses a policy's `Rules` text: JSON when it starts with `{`, HCL otherwise.
    ///
    /// Errors: [`RulesError`] naming the offending rule.
    pub fn parse(text: &str) -> Result<PolicyRules, RulesError> {
        if text.trim_start().starts_with('{') {
            let v: Value =
                serde_json::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?;
            return PolicyRules::from_json(&v);
        }
        let body = hcl::parse(text).map_err(|e| RulesError::Syntax(e.to_string()))?;
        let mut rules = PolicyRules::default();
        for attr in body.attributes() {
            let value = match &attr.expr {
                hcl::Expression::String(s) => s.clone(),
                other => {
                    return Err(RulesError::Shape(format!(
                        "{} must be a string, got {other:?}",
                        attr.key()
                    )));
                }
            };
            rules.top_level(attr.key(), &value)?;
        }
        for block in body.blocks() {
            let [label] = block.labels() else {
                return Err(RulesError::Shape(format!(
                    "{} needs exactly one name, e.g. {} \"name\" {{ policy = \"read\" }}",
                    block.identifier(),
                    block.identifier()
                )));
            };
            let mut policy = None;
            for attr in block.body().attributes() {
                match (attr.key(), &attr.expr) {
                    ("policy", hcl::Expression::String(s)) => policy = Some(s.clone()),
                    // service rules may carry `intentions`; nothing here uses it.
                    ("intentions", hcl::Expression::String(_))
                        if block.identifier().starts_with("service") => {}
                    (k, _) => {
                        return Err(RulesError::Unknown(format!(
                            "{} \"{}\" {{ {k} }}",
                            block.identifier(),
                            label.as_str()
                        )));
                    }
                }
            }
            if block.body().blocks().next().is_some() {
                return Err(RulesError::Shape(format!(
                    "{} \"{}\" may hold only attributes",
                    block.identifier(),
                    label.as_str()
                )));
            }
            let policy = policy.ok_or_else(|| {
                RulesError::Shape(format!(
                    "{} \"{}\" has no policy",
                    block.identifier(),
                    label.as_str()
                ))
            })?;
            rules.rule(block.identifier(), label.as_str(), &policy)?;
        }
        Ok(rules)
    }

    /// The JSON form: `{"key_prefix": {"a/": {"policy": "write"}}, "operator": "read"}`.
    fn from_json(v: &Value) -> Result<PolicyRules, RulesError> {
        let obj = v
            .as_object()
            .ok_or_else(|| RulesError::Shape("rules must be an object".into()))?;
        let mut rules = PolicyRules::default();
        for (kind, body) in obj {
            match body {
                Value::String(s) => rules.top_level(kind, s)?,
                Value::Object(named) => {
                    for (name, rule) in named {
                        let policy =
                            rule.get("policy").and_then(Value::as_str).ok_or_else(|| {
                                RulesError::Shape(format!("{kind} {name:?} has no policy"))
                            })?;
                        rules.rule(kind, name, policy)?;
                    }
                }
                other => {
                    return Err(RulesError::Shape(format!(
                        "{kind} must be a string or an object, got {other}"
                    )));
                }
            }
        }
        Ok(rules)
    }

    fn top_level(&mut self, name: &str, value: &str) -> Result<(), RulesError> {
        let slot = match name {
            "acl" => &mut self.acl,
            "operator" => &mut self.operator,
            "keyring" => &mut self.keyring,
            "mesh" => &mut self.mesh,
            "peering" => &mut self.peering,
            other => return Err(RulesError::Unknown(other.to_string())),
        };
        let access = Access::parse(value, false)
            .ok_or_else(|| RulesError::Level(name.to_string(), value.to_string()))?;
        *slot = Some(slot.map_or(access, |a| a.merge(access)));
        Ok(())
    }

    fn rule(&mut self, kind: &str, name: &str, policy: &str) -> Result<(), RulesError> {
        let (base, is_prefix) = match kind.strip_suffix("_prefix") {
            Some(base) => (base, true),
            None => (kind, false),
        };
        let rules = match base {
            "key" => &mut self.key,
            "session" => &mut self.session,
            "node" => &mut self.node,
            "agent" => &mut self.agent,
            "service" => &mut self.service,
            "event" => &mut self.event,
            "query" => &mut self.query,
            _ => return Err(RulesError::Unknown(kind.to_string())),
        };
        let access = Access::parse(policy, base == "key")
            .ok_or_else(|| RulesError::Level(kind.to_string(), policy.to_string()))?;
        rules.insert(name, is_prefix, access);
        Ok(())
    }

    /// Adds `other`'s rules (a token's policies are merged into one set, `policy_merger.go`).
    pub fn merge(&mut self, other: &PolicyRules) {
        self.key.merge(&other.key);
        self.session.merge(&other.session);
        self.node.merge(&other.node);
        self.agent.merge(&other.agent);
        self.service.merge(&other.service);
        self.event.merge(&other.event);
        self.query.merge(&other.query);
        for (mine, theirs) in [
            (&mut self.acl, other.acl),
            (&mut self.operator, other.operator),
            (&mut self.keyring, other.keyring),
            (&mut self.mesh, other.mesh),
            (&mut self.peering, other.peering),
        ] {
            if let Some(t) = theirs {
                *mine = Some(mine.map_or(t, |m| m.merge(t)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> PolicyRules {
        PolicyRules::parse(s).expect("test policy")
    }

    #[test]
    fn longest_prefix_wins_and_exact_beats_prefix() {
        let r = parse(
            r#"
            key_prefix "" { policy = "read" }
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "app/secret/open" { policy = "write" }
            "#,
        );
        assert_eq!(r.key.lookup("other"), Some(Access::Read));
        assert_eq!(r.key.lookup("app/x"), Some(Access::Write));
        assert_eq!(r.key.lookup("app/secret/x"), Some(Access::Deny));
        assert_eq!(r.key.lookup("app/secret/open"), Some(Access::Write));
        assert_eq!(r.key.lookup("app/secret/open/more"), Some(Access::Deny));
    }

    #[test]
    fn no_rule_means_the_default_decides() {
        let r = parse(r#"key_prefix "a/" { policy = "write" }"#);
        assert_eq!(r.key.lookup("b"), None);
        assert_eq!(r.session.lookup("node"), None);
    }

    #[test]
    fn enforce_levels_follow_policy_authorizer() {
        assert!(Access::Write.grants(Access::Read));
        assert!(Access::List.grants(Access::Read));
        assert!(!Access::List.grants(Access::Write));
        assert!(Access::Read.grants(Access::Read));
        assert!(!Access::Read.grants(Access::List));
        assert!(!Access::Deny.grants(Access::Read));
    }

    #[test]
    fn merging_lets_deny_win_then_the_most_permissive() {
        let mut a = parse("key \"k\" { policy = \"read\" }\nkey \"d\" { policy = \"write\" }");
        let b = parse("key \"k\" { policy = \"write\" }\nkey \"d\" { policy = \"deny\" }");
        a.merge(&b);
        assert_eq!(a.key.lookup("k"), Some(Access::Write));
        assert_eq!(a.key.lookup("d"), Some(Access::Deny));
    }

    #[test]
    fn write_prefix_needs_write_on_everything_under_it() {
        let r = parse(
            r#"
            key_prefix "a/" { policy = "write" }
            key "a/keep" { policy = "read" }
            key_prefix "b/" { policy = "write" }
            "#,
        );
        assert_eq!(r.key.write_prefix("a/"), Some(false));
        assert_eq!(r.key.write_prefix("b/"), Some(true));
        assert_eq!(r.key.write_prefix("b/c/"), Some(true));
        assert_eq!(r.key.write_prefix("c/"), None);
        assert_eq!(r.key.write_prefix(""), Some(false));
    }

    #[test]
    fn json_rules_are_the_same_rules() {
        let h = parse(
            r#"key_prefix "a/" { policy = "write" }
               session_prefix "" { policy = "write" }
               operator = "read""#,
        );
        let j = parse(
            r#"{"key_prefix": {"a/": {"policy": "write"}},
                "session_prefix": {"": {"policy": "write"}}, "operator": "read"}"#,
        );
        assert_eq!(h, j);
    }

    #[test]
    fn bad_levels_and_unknown_rules_are_errors() {
        assert!(PolicyRules::parse(r#"key "a" { policy = "list" }"#).is_ok());
        assert!(matches!(
            PolicyRules::parse(r#"session "a" { policy = "list" }"#),
            Err(RulesError::Level(..))
        ));
        assert!(matches!(
            PolicyRules::parse(r#"kee_prefix "a" { policy = "read" }"#),
            Err(RulesError::Unknown(_))
        ));
        assert!(matches!(
            PolicyRules::parse(r#"key_prefix "a" { polcy = "read" }"#),
            Err(RulesError::Unknown(_))
        ));
        assert!(matches!(
            PolicyRules::parse(r#"key_prefix "a" { }"#),
            Err(RulesError::Shape(_))
        ));
        assert!(matches!(
            PolicyRules::parse("key_prefix {"),
            Err(RulesError::Syntax(_))
        ));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,60}") {
            let _ = PolicyRules::parse(&s);
        }

        #[test]
        fn lookup_matches_a_linear_longest_prefix_scan(
            prefixes in proptest::collection::vec("[ab/]{0,4}", 0..6),
            name in "[ab/]{0,6}",
        ) {
            let mut r = Rules::default();
            for (i, p) in prefixes.iter().enumerate() {
                r.insert(p, true, if i % 2 == 0 { Access::Read } else { Access::Write });
            }
            let expect = r
                .prefix
                .iter()
                .filter(|(p, _)| name.starts_with(p.as_str()))
                .max_by_key(|(p, _)| p.len())
                .map(|(_, a)| *a);
            prop_assert_eq!(r.lookup(&name), expect);
        }
    }
}
