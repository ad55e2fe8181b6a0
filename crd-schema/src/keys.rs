//! The Consul KV key layout, under a configurable prefix (default `jobforge`):
//!
//! | key | written by | content |
//! |---|---|---|
//! | `<prefix>/requests/<namespace>/<name>` | clients | BuildRequest JSON (the spec; its `ModifyIndex` is the generation) |
//! | `<prefix>/status/<namespace>/<name>` | the leader, fenced CAS | BuildStatus JSON |
//! | `<prefix>/logs/<namespace>/<name>/<phase>` | the leader | last 64 KiB of the phase's stdout+stderr |
//! | `<prefix>/outbox/<namespace>/<name>/<entry>` | the leader, fenced, in the commit of the status transition | a webhook event waiting for delivery (JSON; removed, fenced, once delivered or given up) |
//! | `<prefix>/config` | operators | controller defaults (JSON) |
//! | `<prefix>/leader` | the leader's session (`?acquire=`) | leader identity JSON |
//!
//! # The one rule for namespaces and names
//!
//! `<namespace>` and `<name>` are DNS labels ([`grammar::dns_label`], the rule `metadata.namespace`
//! and `metadata.name` follow). This module owns that rule at every boundary:
//!
//! - **building** a key from a namespace and a name: callers that take them from input (the store,
//!   every CLI command, every MCP tool) first call [`check_request_ref`]; a `..` or a `/` therefore
//!   never reaches a key (`cleanup` with `name: "../../../jobforge/leader"` is an error, not a
//!   delete of the leader key);
//! - **parsing** a key a watch or a listing reported: [`KeyLayout::classify_request_key`] (and
//!   [`KeyLayout::parse_request_key`] / [`KeyLayout::parse_status_key`] over it) accepts exactly
//!   `<prefix>/requests/<namespace>/<name>` with both segments DNS labels. Consul stores keys
//!   verbatim — `/v1/txn` with the literal key `jobforge/requests/../x` is accepted, while the
//!   `/v1/kv/` URL of a read would be normalised by HTTP clients — so anything else is not a
//!   request and must never be reconciled.

use crate::grammar;
use crate::status::PipelinePhase;

/// Default KV prefix.
pub const DEFAULT_PREFIX: &str = "jobforge";

/// Key builder for one prefix. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout::new(DEFAULT_PREFIX)
    }
}

impl KeyLayout {
    /// A layout under `prefix` (leading and trailing `/` are ignored; empty means the default).
    pub fn new(prefix: &str) -> Self {
        let p = prefix.trim_matches('/');
        KeyLayout {
            prefix: if p.is_empty() {
                DEFAULT_PREFIX.to_string()
            } else {
                p.to_string()
            },
        }
    }

    /// The prefix without trailing slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/requests/` — every request key is below it.
    pub fn requests_prefix(&self) -> String {
        format!("{}/requests/", self.prefix)
    }

    /// `<prefix>/requests/<namespace>/` — the requests of one namespace.
    pub fn namespace_requests_prefix(&self, namespace: &str) -> String {
        format!("{}/requests/{namespace}/", self.prefix)
    }

    /// `<prefix>/status/` — every status key is below it.
    pub fn status_prefix(&self) -> String {
        format!("{}/status/", self.prefix)
    }

    /// `<prefix>/logs/` — every log key is below it.
    pub fn logs_root(&self) -> String {
        format!("{}/logs/", self.prefix)
    }

    /// `<prefix>/requests/<namespace>/<name>`.
    pub fn request_key(&self, namespace: &str, name: &str) -> String {
        format!("{}/requests/{namespace}/{name}", self.prefix)
    }

    /// `<prefix>/status/<namespace>/<name>`.
    pub fn status_key(&self, namespace: &str, name: &str) -> String {
        format!("{}/status/{namespace}/{name}", self.prefix)
    }

    /// `<prefix>/logs/<namespace>/<name>/` — the log keys of one request.
    pub fn logs_prefix(&self, namespace: &str, name: &str) -> String {
        format!("{}/logs/{namespace}/{name}/", self.prefix)
    }

    /// `<prefix>/logs/<namespace>/<name>/<phase>`.
    pub fn logs_key(&self, namespace: &str, name: &str, phase: PipelinePhase) -> String {
        format!("{}/logs/{namespace}/{name}/{}", self.prefix, phase.as_str())
    }

    /// `<prefix>/outbox/` — every webhook event waiting for delivery is below it.
    pub fn outbox_prefix(&self) -> String {
        format!("{}/outbox/", self.prefix)
    }

    /// `<prefix>/outbox/<namespace>/<name>/` — the events of one request waiting for delivery;
    /// their `<entry>` names sort in the order the events happened.
    pub fn request_outbox_prefix(&self, namespace: &str, name: &str) -> String {
        format!("{}/outbox/{namespace}/{name}/", self.prefix)
    }

    /// `<prefix>/outbox/<namespace>/<name>/<entry>`.
    pub fn outbox_key(&self, namespace: &str, name: &str, entry: &str) -> String {
        format!("{}/outbox/{namespace}/{name}/{entry}", self.prefix)
    }

    /// `(namespace, name)` of an outbox entry key (`<prefix>/outbox/<namespace>/<name>/<entry>`),
    /// or `None` for any other shape.
    pub fn parse_outbox_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key.strip_prefix(&self.outbox_prefix())?;
        let (request, entry) = rest.rsplit_once('/')?;
        if entry.is_empty() {
            return None;
        }
        let (namespace, name) = request.split_once('/')?;
        check_request_ref(namespace, name).ok()?;
        Some((namespace, name))
    }

    /// `<prefix>/config`.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/leader`.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// `(namespace, name)` of a request key, or `None` if `key` is not exactly
    /// `<prefix>/requests/<namespace>/<name>` with both segments DNS labels (see
    /// [`KeyLayout::classify_request_key`], which also says why).
    pub fn parse_request_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        match self.classify_request_key(key) {
            KeyClass::Request { namespace, name } => Some((namespace, name)),
            KeyClass::Folder | KeyClass::NotARequest(_) => None,
        }
    }

    /// `(namespace, name)` of a status key, by the same rule as [`KeyLayout::parse_request_key`].
    pub fn parse_status_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        match classify_below(key, &self.status_prefix()) {
            KeyClass::Request { namespace, name } => Some((namespace, name)),
            KeyClass::Folder | KeyClass::NotARequest(_) => None,
        }
    }

    /// What a key under `<prefix>/requests/` is: a request (`<namespace>/<name>`, both DNS
    /// labels), a folder (ends in `/`, as Consul's UI creates them), or not a request, with the
    /// reason (wrong depth, a segment such as `..` that is not a DNS label, another prefix).
    pub fn classify_request_key<'a>(&self, key: &'a str) -> KeyClass<'a> {
        classify_below(key, &self.requests_prefix())
    }
}

/// What a key below `requests/` (or `status/`) is; see [`KeyLayout::classify_request_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClass<'a> {
    /// `<namespace>/<name>`, both DNS labels.
    Request {
        /// The namespace segment.
        namespace: &'a str,
        /// The name segment.
        name: &'a str,
    },
    /// A key ending in `/` (Consul's folder convention): not a document.
    Folder,
    /// Anything else; the reason, for a log line.
    NotARequest(String),
}

fn classify_below<'a>(key: &'a str, prefix: &str) -> KeyClass<'a> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return KeyClass::NotARequest(format!("not under {prefix}"));
    };
    if rest.is_empty() || rest.ends_with('/') {
        return KeyClass::Folder;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let [namespace, name] = segments.as_slice() else {
        return KeyClass::NotARequest(format!(
            "{} path segment(s) after {prefix}; expected <namespace>/<name>",
            segments.len()
        ));
    };
    match check_request_ref(namespace, name) {
        Ok(()) => KeyClass::Request { namespace, name },
        Err(e) => KeyClass::NotARequest(e.to_string()),
    }
}

/// A namespace or name that cannot be part of a key (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The namespace is not a DNS label.
    #[error("namespace {0}")]
    Namespace(String),
    /// The name is not a DNS label.
    #[error("name {0}")]
    Name(String),
}

/// Checks that `namespace` and `name` are DNS labels ([`grammar::dns_label`]), so that the keys
/// built from them are exactly one level each below `requests/`, `status/` and `logs/`. Every
/// boundary that takes a namespace or a name from input calls this before building a key.
///
/// Errors: [`RefError`] naming the segment, e.g. `name "../x" is not a DNS label: ...`.
pub fn check_request_ref(namespace: &str, name: &str) -> Result<(), RefError> {
    check_namespace(namespace)?;
    grammar::dns_label(name).map_err(RefError::Name)
}

/// Checks one namespace (for listings of a namespace): a DNS label.
///
/// Errors: [`RefError::Namespace`].
pub fn check_namespace(namespace: &str) -> Result<(), RefError> {
    grammar::dns_label(namespace).map_err(RefError::Namespace)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = KeyLayout::new("/jf/");
        assert_eq!(k.request_key("team-a", "app"), "jf/requests/team-a/app");
        assert_eq!(k.status_key("team-a", "app"), "jf/status/team-a/app");
        assert_eq!(
            k.logs_key("team-a", "app", PipelinePhase::Test),
            "jf/logs/team-a/app/test"
        );
        assert_eq!(k.config_key(), "jf/config");
        assert_eq!(k.leader_key(), "jf/leader");
        assert_eq!(KeyLayout::new("").prefix(), "jobforge");
    }

    #[test]
    fn parse_request_key_accepts_only_two_segments() {
        let k = KeyLayout::default();
        assert_eq!(
            k.parse_request_key("jobforge/requests/a/b"),
            Some(("a", "b"))
        );
        assert_eq!(k.parse_request_key("jobforge/requests/a/b/c"), None);
        assert_eq!(k.parse_request_key("jobforge/requests/a/"), None);
        assert_eq!(k.parse_request_key("jobforge/status/a/b"), None);
        assert_eq!(k.parse_status_key("jobforge/status/a/b"), Some(("a", "b")));
        assert_eq!(k.parse_status_key("jobforge/status/../b"), None);
    }

    #[test]
    fn only_two_dns_labels_under_requests_are_requests() {
        let k = KeyLayout::default();
        assert_eq!(
            k.classify_request_key("jobforge/requests/default/app"),
            KeyClass::Request {
                namespace: "default",
                name: "app"
            }
        );
        assert_eq!(
            k.classify_request_key("jobforge/requests/"),
            KeyClass::Folder
        );
        assert_eq!(
            k.classify_request_key("jobforge/requests/default/"),
            KeyClass::Folder
        );
        for bad in [
            "jobforge/requests/default/a/b",
            "jobforge/requests/a/b/c",
            "jobforge/requests/justns",
            "jobforge/requests/../x",
            "jobforge/requests/x/..",
            "jobforge/requests/Default/A",
            "jobforge/requests/default/a b",
            "jobforge/requests//x",
            "jobforge/requests/default/-x",
            "jobforge/status/default/app",
        ] {
            assert!(
                matches!(k.classify_request_key(bad), KeyClass::NotARequest(_)),
                "{bad}: {:?}",
                k.classify_request_key(bad)
            );
        }
    }

    #[test]
    fn refs_that_would_escape_their_level_are_refused() {
        assert!(check_request_ref("team-a", "app-1").is_ok());
        let e = check_request_ref("default", "../../../jobforge/leader").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("name \"../../../jobforge/leader\" is not a DNS label"),
            "{e}"
        );
        assert!(matches!(
            check_request_ref("..", "x"),
            Err(RefError::Namespace(_))
        ));
        assert!(check_request_ref("a/b", "x").is_err());
        assert!(check_request_ref("", "x").is_err());
        assert!(check_namespace("team-b").is_ok());
        assert!(check_namespace("team-b/").is_err());
    }

    proptest::proptest! {
        /// Whatever a key is, if it classifies as a request, rebuilding the key from its parts
        /// gives the same key: a request key names exactly one request.
        #[test]
        fn a_classified_request_rebuilds_its_key(rest in "[a-z0-9./-]{0,20}") {
            let k = KeyLayout::default();
            let key = format!("jobforge/requests/{rest}");
            if let KeyClass::Request { namespace, name } = k.classify_request_key(&key) {
                proptest::prop_assert_eq!(k.request_key(namespace, name), key.clone());
                proptest::prop_assert!(check_request_ref(namespace, name).is_ok());
            }
        }
    }

    #[test]
    fn outbox_keys_are_three_segments_under_outbox() {
        let k = KeyLayout::default();
        let key = k.outbox_key(
            "team-a",
            "app",
            "00000000000000000012-0000000001-4-succeeded",
        );
        assert_eq!(
            key,
            "jobforge/outbox/team-a/app/00000000000000000012-0000000001-4-succeeded"
        );
        assert!(key.starts_with(&k.request_outbox_prefix("team-a", "app")));
        assert!(key.starts_with(&k.outbox_prefix()));
        assert_eq!(k.parse_outbox_key(&key), Some(("team-a", "app")));
        assert_eq!(k.parse_outbox_key("jobforge/outbox/team-a/app/"), None);
        assert_eq!(k.parse_outbox_key("jobforge/outbox/team-a/app"), None);
        assert_eq!(k.parse_outbox_key("jobforge/outbox/a/b/c/d"), None);
        assert_eq!(k.parse_outbox_key("jobforge/status/a/b/c"), None);
    }
}
