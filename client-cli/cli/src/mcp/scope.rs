//! Which namespaces an MCP caller may see and change.
//!
//! - **stdio**: the server's scope is every `-n/--namespace` given to `jobforge mcp` (repeatable);
//!   without one, every namespace the Consul token can reach ([`Scope::All`]).
//! - **streamable HTTP**: each bearer token has its own scope. `--tokens-file FILE` maps tokens to
//!   namespaces (YAML or JSON, see [`TokensFile`]); the single token of `--token-file` /
//!   `JOBFORGE_MCP_TOKEN` gets the server's scope. A request's token is matched in constant time
//!   and its scope travels in the HTTP request's extensions to the tool (rmcp hands the request's
//!   `http::request::Parts` to tools); a request that reached a tool without one is refused
//!   (fail closed).
//!
//! A tool naming a namespace outside the scope is a tool error naming that namespace and the
//! allowed ones; lists without a namespace cover only the namespaces in scope. The scope is a
//! second fence inside the one that matters: the Consul token the facade runs with (a team's token
//! from `examples/deploy/consul-policy-team.hcl` cannot touch another team's keys whatever the
//! scope says). See `docs/tenancy.md`, "CLI and MCP scope".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use jobforge_schema::check_namespace;
use serde::Deserialize;

/// The namespaces a caller may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (what the Consul token allows).
    All,
    /// Only these (each a DNS label; may be empty: nothing at all).
    Only(BTreeSet<String>),
}

/// The word a tokens file uses for "every namespace".
pub const ALL_NAMESPACES: &str = "*";

impl Scope {
    /// The scope of `namespaces` (`*` among them means [`Scope::All`]).
    ///
    /// Errors: a namespace that is not a DNS label (named in the message).
    pub fn of<I, S>(namespaces: I) -> Result<Scope, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for ns in namespaces {
            let ns = ns.as_ref();
            if ns == ALL_NAMESPACES {
                return Ok(Scope::All);
            }
            check_namespace(ns).map_err(|e| e.to_string())?;
            set.insert(ns.to_string());
        }
        Ok(Scope::Only(set))
    }

    /// Whether `ns` is in scope.
    pub fn allows(&self, ns: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(set) => set.contains(ns),
        }
    }

    /// The allowed namespaces for a message: `team-a, team-b`, `every namespace` or `none`.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "every namespace".into(),
            Scope::Only(set) if set.is_empty() => "none".into(),
            Scope::Only(set) => set.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    }

    /// `Ok(())` when `ns` is a DNS label in scope; otherwise the tool error an agent reads.
    pub fn check(&self, ns: &str) -> Result<(), String> {
        check_namespace(ns).map_err(|e| format!("invalid argument `namespace`: {e}"))?;
        if self.allows(ns) {
            return Ok(());
        }
        Err(format!(
            "namespace {ns} is outside this MCP server's scope; allowed namespaces: {}",
            self.describe()
        ))
    }

    /// The namespace of a call that names `given` (checked), or, when it names none, the
    /// server's default if in scope, else the first namespace in scope.
    pub fn resolve(&self, given: Option<String>, default: &str) -> Result<String, String> {
        let ns = match (given, self) {
            (Some(ns), _) => ns,
            (None, Scope::Only(set)) if !self.allows(default) => {
                set.iter().next().cloned().ok_or_else(|| {
                    "this MCP caller's scope allows no namespace; ask the operator for one"
                        .to_string()
                })?
            }
            (None, _) => default.to_string(),
        };
        self.check(&ns)?;
        Ok(ns)
    }

    /// The namespaces a listing reads: `given` (checked) alone, or `None` for every namespace
    /// (only for [`Scope::All`]), or each namespace in scope.
    pub fn list_targets(&self, given: Option<&str>) -> Result<Option<Vec<String>>, String> {
        match (given, self) {
            (Some(ns), _) => {
                self.check(ns)?;
                Ok(Some(vec![ns.to_string()]))
            }
            (None, Scope::All) => Ok(None),
            (None, Scope::Only(set)) => Ok(Some(set.iter().cloned().collect())),
        }
    }
}

/// The `--tokens-file` document (YAML or JSON; JSON is YAML):
///
/// ```yaml
/// tokens:
///   - token: "3f6c…"            # the bearer token a client sends (at least 16 characters)
///     namespaces: [team-a]
///   - token: "9b1d…"
///     namespaces: [team-b, team-c]
///   - token: "operator…"
///     namespaces: ["*"]         # every namespace the Consul token reaches
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// One entry per client.
    pub tokens: Vec<TokenEntry>,
}

/// One token and its namespaces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The bearer token.
    pub token: String,
    /// Namespaces (DNS labels), or `["*"]` for all.
    pub namespaces: Vec<String>,
}

/// Shortest token a tokens file may hold: a guessable token would be a scope anyone can take.
pub const MIN_TOKEN_LEN: usize = 16;

/// Parses a tokens file's text (`source` names it in errors): every token at least
/// [`MIN_TOKEN_LEN`] characters and unique, every namespace a DNS label or `*`, at least one
/// namespace per token.
pub fn parse_tokens(source: &str, text: &str) -> Result<BTreeMap<String, Scope>, String> {
    let doc: TokensFile = serde_yaml_ng::from_str(text).map_err(|e| {
        format!("{source}: not a tokens file ({e}); expected `tokens: [{{token, namespaces}}]`")
    })?;
    let mut out = BTreeMap::new();
    for (i, entry) in doc.tokens.into_iter().enumerate() {
        let at = format!("{source}: tokens[{i}]");
        let token = entry.token.trim().to_string();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "{at}.token is shorter than {MIN_TOKEN_LEN} characters"
            ));
        }
        if entry.namespaces.is_empty() {
            return Err(format!(
                "{at}.namespaces is empty; name at least one namespace (or \"*\")"
            ));
        }
        let scope = Scope::of(&entry.namespaces).map_err(|e| format!("{at}.namespaces: {e}"))?;
        if out.insert(token, scope).is_some() {
            return Err(format!("{at}.token appears twice"));
        }
    }
    if out.is_empty() {
        return Err(format!("{source}: no tokens"));
    }
    Ok(out)
}

/// Reads and parses `--tokens-file` ([`parse_tokens`]).
pub fn load_tokens(path: &Path) -> Result<BTreeMap<String, Scope>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--tokens-file {}: {e}", path.display()))?;
    parse_tokens(&format!("--tokens-file {}", path.display()), &text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn only(ns: &[&str]) -> Scope {
        Scope::of(ns).unwrap()
    }

    #[test]
    fn a_namespace_outside_the_scope_is_named_with_the_allowed_ones() {
        let s = only(&["team-a", "team-c"]);
        assert!(s.check("team-a").is_ok());
        assert_eq!(
            s.check("team-b").unwrap_err(),
            "namespace team-b is outside this MCP server's scope; allowed namespaces: team-a, team-c"
        );
        assert!(
            s.check("../x").unwrap_err().contains("is not a DNS label"),
            "a malformed namespace is a malformed namespace, not out of scope"
        );
        assert!(Scope::All.check("anything").is_ok());
        assert!(Scope::All.check("a/b").is_err());
        assert_eq!(Scope::Only(BTreeSet::new()).describe(), "none");
    }

    #[test]
    fn the_default_namespace_is_the_servers_when_in_scope_else_the_first_allowed() {
        assert_eq!(
            only(&["default", "b"]).resolve(None, "default").unwrap(),
            "default"
        );
        assert_eq!(only(&["c", "b"]).resolve(None, "default").unwrap(), "b");
        assert!(only(&["c"]).resolve(Some("d".into()), "c").is_err());
        assert!(
            Scope::Only(BTreeSet::new())
                .resolve(None, "default")
                .is_err()
        );
        assert_eq!(Scope::All.resolve(None, "default").unwrap(), "default");
    }

    #[test]
    fn lists_cover_only_the_namespaces_in_scope() {
        assert_eq!(Scope::All.list_targets(None).unwrap(), None);
        assert_eq!(
            only(&["b", "a"]).list_targets(None).unwrap(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert!(only(&["a"]).list_targets(Some("b")).is_err());
    }

    #[test]
    fn tokens_files_are_yaml_or_json_and_checked() {
        let y = "tokens:\n  - token: aaaaaaaaaaaaaaaa\n    namespaces: [team-a]\n  - token: bbbbbbbbbbbbbbbb\n    namespaces: ['*']\n";
        let m = parse_tokens("f", y).unwrap();
        assert_eq!(m["aaaaaaaaaaaaaaaa"], only(&["team-a"]));
        assert_eq!(m["bbbbbbbbbbbbbbbb"], Scope::All);
        let j = r#"{"tokens": [{"token": "cccccccccccccccc", "namespaces": ["x", "y"]}]}"#;
        assert_eq!(
            parse_tokens("f", j).unwrap()["cccccccccccccccc"],
            only(&["x", "y"])
        );
        for (bad, why) in [
            (
                r#"{"tokens": [{"token": "short", "namespaces": ["x"]}]}"#,
                "shorter",
            ),
            (
                r#"{"tokens": [{"token": "cccccccccccccccc", "namespaces": []}]}"#,
                "empty",
            ),
            (
                r#"{"tokens": [{"token": "cccccccccccccccc", "namespaces": ["../x"]}]}"#,
                "DNS label",
            ),
            (
                r#"{"tokens": [{"token": "cccccccccccccccc", "namespaces": ["x"]}, {"token": "cccccccccccccccc", "namespaces": ["y"]}]}"#,
                "twice",
            ),
            (r#"{"tokens": []}"#, "no tokens"),
            (
                r#"{"tokens": [{"token": "cccccccccccccccc", "namespace": ["x"]}]}"#,
                "not a tokens file",
            ),
        ] {
            let e = parse_tokens("f", bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
