//! The ACL of one token: its policies merged, and the decision for a request path and operation.
//!
//! Follows Vault's `vault/acl.go` (`NewACL`, `AllowOperation`, `CheckAllowedFromNonExactPaths`)
//! and the "Policies" doc's priority rules:
//! - rules of the same path string from several policies merge: capabilities are unioned, but
//!   `deny` on any of them leaves only `deny`;
//! - an exact rule (no `*` at the end, no `+` segment) for the request path decides alone; for a
//!   LIST the path without its trailing `/` is tried as well;
//! - otherwise, among the matching glob (`prefix*`) and `+`-segment rules the highest priority
//!   decides, where P1 has LOWER priority than P2 when, in this order: its first `+` or `*`
//!   comes earlier; it ends in `*` and P2 does not; it has more `+` segments; it is shorter;
//!   it sorts lexicographically before P2;
//! - no matching rule: denied. The `root` policy allows everything, `sudo` included;
//! - operations map to capabilities one to one (`read`, `list`, `create`, `update`, `patch`,
//!   `delete`); revoke/renew operations need `update`.

use std::collections::{BTreeMap, HashMap};

use super::policy::{Caps, Policy};

/// A request operation (Vault's `logical.Operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// GET.
    Read,
    /// LIST, or GET with `?list=true`.
    List,
    /// POST/PUT on a path that does not exist yet (only where the backend checks existence).
    Create,
    /// POST/PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Op {
    fn cap(self) -> Caps {
        match self {
            Op::Read => Caps::READ,
            Op::List => Caps::LIST,
            Op::Create => Caps::CREATE,
            Op::Update => Caps::UPDATE,
            Op::Patch => Caps::PATCH,
            Op::Delete => Caps::DELETE,
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// The operation is allowed.
    pub allowed: bool,
    /// The matching rule grants `sudo` (or the token is root).
    pub sudo: bool,
}

/// The merged rules of a set of policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    exact: HashMap<String, Caps>,
    /// Glob rules without `+`, keyed by the prefix (the path without its `*`).
    prefix: BTreeMap<String, Caps>,
    /// Rules with a `+` segment, keyed by the path as written.
    segment: BTreeMap<String, Caps>,
}

impl Acl {
    /// Merges `policies`; `root` = the token holds the `root` policy.
    pub fn new<'a>(root: bool, policies: impl IntoIterator<Item = &'a Policy>) -> Acl {
        let mut acl = Acl {
            root,
            ..Acl::default()
        };
        for p in policies {
            for r in &p.rules {
                let (map, key) = if r.has_segment_wildcard() {
                    (&mut acl.segment, r.path.clone())
                } else if let Some(prefix) = r.path.strip_suffix('*') {
                    (&mut acl.prefix, prefix.to_string())
                } else {
                    let e = acl.exact.entry(r.path.clone()).or_insert(Caps::NONE);
                    *e = if *e == Caps::NONE {
                        r.caps
                    } else {
                        e.merge(r.caps)
                    };
                    continue;
                };
                let e = map.entry(key).or_insert(Caps::NONE);
                *e = if *e == Caps::NONE {
                    r.caps
                } else {
                    e.merge(r.caps)
                };
            }
        }
        acl
    }

    /// Whether the token is root.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The capabilities of the rule that decides for `path` (none when no rule matches; every
    /// capability for root).
    pub fn capabilities(&self, path: &str, list: bool) -> Caps {
        if self.root {
            return Caps::CREATE
                | Caps::READ
                | Caps::UPDATE
                | Caps::PATCH
                | Caps::DELETE
                | Caps::LIST
                | Caps::SUDO;
        }
        if let Some(c) = self.exact.get(path) {
            return *c;
        }
        if list && let Some(c) = self.exact.get(path.strip_suffix('/').unwrap_or(path)) {
            return *c;
        }
        self.non_exact(path).unwrap_or(Caps::NONE)
    }

    /// Decides `op` on `path` (the request path without `/v1/`; a LIST path ends with `/`).
    pub fn allows(&self, path: &str, op: Op) -> Decision {
        let caps = self.capabilities(path, op == Op::List);
        if caps.contains(Caps::DENY) {
            return Decision::default();
        }
        Decision {
            allowed: caps.contains(op.cap()),
            sudo: caps.contains(Caps::SUDO),
        }
    }

    /// Whether any rule grants something at or under `mount` (e.g. `secret/`): Vault's
    /// `hasMountAccess`, used by `sys/internal/ui/mounts`.
    pub fn has_mount_access(&self, mount: &str) -> bool {
        if self.root {
            return true;
        }
        let grants = |c: &Caps| !c.grants_nothing();
        self.exact
            .iter()
            .any(|(p, c)| p.starts_with(mount) && grants(c))
            || self
                .prefix
                .iter()
                .any(|(p, c)| (p.starts_with(mount) || mount.starts_with(p.as_str())) && grants(c))
            || self.segment.iter().any(|(p, c)| {
                grants(c) && {
                    let first = mount.trim_end_matches('/');
                    p.split('/').next().is_some_and(|s| s == "+" || s == first)
                }
            })
    }

    /// The highest-priority glob or segment rule matching `path`.
    fn non_exact(&self, path: &str) -> Option<Caps> {
        let mut best: Option<(Candidate, Caps)> = None;
        let mut consider = |cand: Candidate, caps: Caps| {
            if best.as_ref().is_none_or(|(b, _)| b.lower_than(&cand)) {
                best = Some((cand, caps));
            }
        };
        // The longest matching glob prefix (Vault keeps these in a radix tree).
        if let Some((prefix, caps)) = self
            .prefix
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
        {
            consider(
                Candidate {
                    first_wildcard: prefix.len(),
                    is_prefix: true,
                    wildcards: 0,
                    path: prefix.clone(),
                },
                *caps,
            );
        }
        let parts: Vec<&str> = path.split('/').collect();
        for (full, caps) in &self.segment {
            if let Some(cand) = segment_match(full, &parts) {
                consider(cand, *caps);
            }
        }
        best.map(|(_, c)| c)
    }
}

/// A matching non-exact rule, with what its priority is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    /// Byte index of the first `+` or `*`.
    first_wildcard: usize,
    /// Ends with `*`.
    is_prefix: bool,
    /// Number of `+` segments.
    wildcards: usize,
    /// The path without a trailing `*`.
    path: String,
}

impl Candidate {
    /// Vault's `wcPathDescr` ordering: `self` has lower priority than `other`.
    fn lower_than(&self, other: &Candidate) -> bool {
        if self.first_wildcard != other.first_wildcard {
            return self.first_wildcard < other.first_wildcard;
        }
        if self.is_prefix != other.is_prefix {
            return self.is_prefix;
        }
        if self.wildcards != other.wildcards {
            return self.wildcards > other.wildcards;
        }
        if self.path.len() != other.path.len() {
            return self.path.len() < other.path.len();
        }
        self.path < other.path
    }
}

/// Matches a `+`-segment rule against the request path's segments.
fn segment_match(full: &str, parts: &[&str]) -> Option<Candidate> {
    let first_wildcard = full.find('+')?;
    let (rule, is_prefix) = match full.strip_suffix('*') {
        Some(r) => (r, true),
        None => (full, false),
    };
    let rule_parts: Vec<&str> = rule.split('/').collect();
    if parts.len() < rule_parts.len() || (!is_prefix && parts.len() != rule_parts.len()) {
        return None;
    }
    let mut wildcards = 0;
    for (i, rp) in rule_parts.iter().enumerate() {
        let last = i == rule_parts.len() - 1;
        if *rp == "+" {
            wildcards += 1;
        } else if *rp == parts[i] || (is_prefix && last && parts[i].starts_with(rp)) {
        } else {
            return None;
        }
    }
    Some(Candidate {
        first_wildcard,
        is_prefix,
        wildcards,
        path: rule.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::policy::parse;
    use super::*;

    fn acl(texts: &[&str]) -> Acl {
        let ps: Vec<Policy> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| parse(&format!("p{i}"), t).unwrap())
            .collect();
        Acl::new(false, &ps)
    }

    fn can(a: &Acl, path: &str, op: Op) -> bool {
        a.allows(path, op).allowed
    }

    #[test]
    fn no_rule_means_denied_and_root_means_everything() {
        let a = acl(&[]);
        assert!(!can(&a, "secret/data/x", Op::Read));
        let r = Acl::new(true, &[]);
        assert!(can(&r, "anything/at/all", Op::Delete));
        assert!(r.allows("auth/token/create", Op::Update).sudo);
    }

    #[test]
    fn glob_is_a_prefix_and_the_longest_prefix_wins() {
        let a = acl(&[r#"
            path "secret/data/jobforge/*" { capabilities = ["read"] }
            path "secret/data/jobforge/team-b/*" { capabilities = ["deny"] }
        "#]);
        assert!(can(&a, "secret/data/jobforge/git", Op::Read));
        assert!(can(&a, "secret/data/jobforge/team-a/git", Op::Read));
        assert!(!can(&a, "secret/data/jobforge/team-b/git", Op::Read));
        assert!(!can(&a, "secret/data/jobforge/git", Op::Update));
        assert!(!can(&a, "secret/data/other", Op::Read));
        // A glob matches any string prefix, not only whole segments.
        assert!(can(&a, "secret/data/jobforge/", Op::Read));
        assert!(!can(&a, "secret/data/jobforge", Op::Read));
    }

    #[test]
    fn an_exact_rule_beats_every_glob_and_deny_merges_across_policies() {
        let a = acl(&[
            r#"path "secret/*" { capabilities = ["read", "update"] }"#,
            r#"path "secret/data/x" { capabilities = ["list"] }"#,
        ]);
        assert!(
            !can(&a, "secret/data/x", Op::Read),
            "exact rule decides alone"
        );
        let b = acl(&[
            r#"path "secret/data/x" { capabilities = ["read"] }"#,
            r#"path "secret/data/x" { capabilities = ["deny"] }"#,
        ]);
        assert!(!can(&b, "secret/data/x", Op::Read));
        let c = acl(&[
            r#"path "secret/data/x" { capabilities = ["read"] }"#,
            r#"path "secret/data/x" { capabilities = ["update"] }"#,
        ]);
        assert!(can(&c, "secret/data/x", Op::Read) && can(&c, "secret/data/x", Op::Update));
    }

    #[test]
    fn plus_matches_exactly_one_segment() {
        let a = acl(&[r#"path "secret/data/+/git" { capabilities = ["read"] }"#]);
        assert!(can(&a, "secret/data/team-a/git", Op::Read));
        assert!(!can(&a, "secret/data/team-a/b/git", Op::Read));
        assert!(!can(&a, "secret/data/git", Op::Read));
        assert!(!can(&a, "secret/data/team-a/gitx", Op::Read));
        let b = acl(&[r#"path "secret/data/+/ci*" { capabilities = ["read"] }"#]);
        assert!(can(&b, "secret/data/t/ci-token", Op::Read));
        assert!(can(&b, "secret/data/t/ci/deep/er", Op::Read));
        assert!(!can(&b, "secret/data/t/cd", Op::Read));
    }

    #[test]
    fn priority_follows_vaults_documented_order() {
        // The first wildcard of "secret/foo*" comes later (index 10) than that of
        // "secret/+/bar" (index 7), so "secret/foo*" decides for "secret/foo/bar".
        let a = acl(&[
            r#"path "secret/+/bar" { capabilities = ["deny"] }"#,
            r#"path "secret/foo*" { capabilities = ["read"] }"#,
        ]);
        assert!(can(&a, "secret/foo/bar", Op::Read));
        // Same first wildcard: the one not ending in * wins.
        let b = acl(&[
            r#"path "secret/+/bar*" { capabilities = ["read"] }"#,
            r#"path "secret/+/bar" { capabilities = ["deny"] }"#,
        ]);
        assert!(!can(&b, "secret/foo/bar", Op::Read));
        // Same first wildcard and both non-prefix: fewer + wins.
        let c = acl(&[
            r#"path "secret/+/+/baz" { capabilities = ["read"] }"#,
            r#"path "secret/+/bar/baz" { capabilities = ["deny"] }"#,
        ]);
        assert!(!can(&c, "secret/foo/bar/baz", Op::Read));
    }

    #[test]
    fn list_tries_the_path_without_its_trailing_slash() {
        let a = acl(&[r#"path "secret/metadata/jobforge" { capabilities = ["list"] }"#]);
        assert!(can(&a, "secret/metadata/jobforge/", Op::List));
        assert!(!can(&a, "secret/metadata/jobforge/", Op::Read));
    }

    proptest::proptest! {
        /// A glob `P*` matches exactly the paths that start with `P`.
        #[test]
        fn glob_matches_iff_prefix(prefix in "([a-z][a-z/]{0,11})?", path in "[a-z/]{0,16}") {
            let a = acl(&[&format!(r#"path "{prefix}*" {{ capabilities = ["read"] }}"#)]);
            proptest::prop_assert_eq!(can(&a, &path, Op::Read), path.starts_with(&prefix));
        }

        /// `a/+/c` matches exactly three-segment paths `a/<one segment>/c`.
        #[test]
        fn plus_matches_iff_one_segment(seg in "[a-z/]{0,8}", tail in "[a-z]{0,3}") {
            let a = acl(&[r#"path "a/+/c" { capabilities = ["read"] }"#]);
            let path = format!("a/{seg}/{tail}");
            let expect = !seg.contains('/') && tail == "c";
            proptest::prop_assert_eq!(can(&a, &path, Op::Read), expect);
        }

        /// A deny rule on a path always wins over grants of the same path in other policies,
        /// whatever the order of the policies.
        #[test]
        fn deny_wins_on_the_same_path(path in "[a-z]{1,5}(/[a-z]{1,5}){0,3}\\*?", deny_first in proptest::bool::ANY) {
            let grant = format!(r#"path "{path}" {{ capabilities = ["read", "update", "sudo"] }}"#);
            let deny = format!(r#"path "{path}" {{ capabilities = ["deny"] }}"#);
            let a = if deny_first { acl(&[&deny, &grant]) } else { acl(&[&grant, &deny]) };
            let probe = path.trim_end_matches('*').to_string() + "x";
            let d = a.allows(&probe, Op::Read);
            proptest::prop_assert!(!d.allowed && !d.sudo);
        }

        /// The matcher never panics on arbitrary rules and paths.
        #[test]
        fn arbitrary_rules_never_panic(rule in "[a-z+*/]{0,12}", path in "[a-z+*/]{0,16}") {
            if let Ok(p) = parse("x", &format!(r#"path "{rule}" {{ capabilities = ["read"] }}"#)) {
                let a = Acl::new(false, &[p]);
                let _ = a.allows(&path, Op::Read);
                let _ = a.has_mount_access("secret/");
            }
        }
    }
}
