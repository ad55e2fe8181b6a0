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
        parse_two(request)
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
    /// `<prefix>/requests/<namespace>/<name>` (deeper or shallower keys are not requests).
    pub fn parse_request_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        parse_two(key.strip_prefix(&self.requests_prefix())?)
    }

    /// `(namespace, name)` of a status key, like [`KeyLayout::parse_request_key`].
    pub fn parse_status_key<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        parse_two(key.strip_prefix(&self.status_prefix())?)
    }
}

fn parse_two(rest: &str) -> Option<(&str, &str)> {
    let (ns, name) = rest.split_once('/')?;
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((ns, name))
}

#[cfg(test)]
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
