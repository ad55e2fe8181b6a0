//! The tenancy rules: what a request of namespace `<ns>` may name, so that one team's request can
//! never reach another team's secrets, send credentials to another host, or inject headers that
//! would let a webhook impersonate jobforge or talk to Consul, Nomad or Vault.
//!
//! A namespace is a team. Two kinds of rules live here, both pure:
//!
//! - **Always on** ([`spec_problems`], called by [`crate::validate`]): a `repo_url` never carries a
//!   password (it would be stored in Consul KV in clear); git credentials are only ever sent over
//!   `https://` or `ssh://` (never `http://`, `git://` or `file://`); webhook headers never include
//!   hop-by-hop, framing, proxy, HashiCorp token or `X-Jobforge-*` names ([`DENIED_HEADERS`]).
//! - **Operator policy** ([`TenancyConfig`], the `tenancy` section of `<prefix>/config`, checked by
//!   [`tenancy_problems`]): every Vault path a request names lies under its namespace's prefix
//!   (default `secret/data/jobforge/{namespace}/`), and `test.vault_policies` may only name
//!   policies the operator allows for that namespace. The controller refuses a request that breaks
//!   them with `InvalidSpec` before any job; `jobforge validate`/`submit` report the same problems.
//!
//! The model as a whole (Consul and Vault policies an operator sets up, what tasks get) is in
//! `docs/tenancy.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::grammar::quote;
use crate::problem::{Problems, join_field, join_index};
use crate::request::{BuildRequest, BuildSpec};

/// The placeholder a template replaces with the request's namespace.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// Default template of the Vault path prefix of a namespace.
pub const DEFAULT_VAULT_PATH_PREFIX: &str = "secret/data/jobforge/{namespace}/";

/// Default template of the Vault policy a namespace's tasks get.
pub const DEFAULT_VAULT_POLICY: &str = "jobforge-{namespace}";

/// Webhook header names a request may not set, compared case-insensitively; a name ending in `*`
/// is a prefix. Framing and hop-by-hop headers (RFC 9110 §7.6.1, RFC 9112 §6) would let a request
/// smuggle a second request or confuse a proxy; `Host` would route the POST to another virtual host;
/// HashiCorp token headers would turn a webhook into an authenticated call to Consul, Nomad or
/// Vault; `X-Jobforge-*` are jobforge's own (event, delivery id, signature).
pub const DENIED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-*",
    "x-consul-token",
    "x-nomad-token",
    "x-vault-token",
    "x-jobforge-*",
];

/// Whether `name` is one of [`DENIED_HEADERS`] (case-insensitive; `*` entries match a prefix).
pub fn header_denied(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    DENIED_HEADERS.iter().any(|d| match d.strip_suffix('*') {
        Some(prefix) => lower.starts_with(prefix),
        None => lower == *d,
    })
}

/// The operator's tenancy rules: the `tenancy` object of the `<prefix>/config` KV document.
///
/// ```json
/// {"tenancy": {"vault_path_prefix": "secret/data/jobforge/{namespace}/",
///              "vault_policy": "jobforge-{namespace}",
///              "vault_policies_allowed": {"team-a": ["aws-read"]},
///              "webhook_allow_cidrs": ["127.0.0.0/8"]}}
/// ```
/// Every field is optional; absent fields take the defaults below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    /// Template of the Vault path prefix every Vault path of a request must start with;
    /// `{namespace}` is replaced by the request's namespace. Must end with `/`.
    /// Default [`DEFAULT_VAULT_PATH_PREFIX`]. A template without `{namespace}` shares one prefix
    /// between all namespaces: only for a single-team installation.
    pub vault_path_prefix: String,
    /// Template of the one Vault policy every task of a namespace gets (Nomad `vault` block).
    /// Default [`DEFAULT_VAULT_POLICY`].
    pub vault_policy: String,
    /// Extra Vault policies a namespace's `test.vault_policies` may name, by namespace. A request
    /// naming any other policy is refused. Empty by default: requests choose no policy.
    pub vault_policies_allowed: BTreeMap<String, Vec<String>>,
    /// CIDRs webhooks may reach although they are loopback, private, link-local, unique-local or
    /// otherwise internal (`127.0.0.0/8`, `10.1.2.0/24`, `::1/128`). Empty by default.
    pub webhook_allow_cidrs: Vec<String>,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        TenancyConfig {
            vault_path_prefix: DEFAULT_VAULT_PATH_PREFIX.to_string(),
            vault_policy: DEFAULT_VAULT_POLICY.to_string(),
            vault_policies_allowed: BTreeMap::new(),
            webhook_allow_cidrs: Vec::new(),
        }
    }
}

impl TenancyConfig {
    /// The Vault path prefix of `namespace` (`secret/data/jobforge/team-a/`).
    pub fn vault_path_prefix_for(&self, namespace: &str) -> String {
        self.vault_path_prefix
            .replace(NAMESPACE_PLACEHOLDER, namespace)
    }

    /// The Vault policy of `namespace`'s tasks (`jobforge-team-a`).
    pub fn vault_policy_for(&self, namespace: &str) -> String {
        self.vault_policy.replace(NAMESPACE_PLACEHOLDER, namespace)
    }

    /// The problems of the configuration itself, with paths under `tenancy` (for the controller's
    /// report of an invalid `<prefix>/config`). CIDRs are checked by the code that parses them.
    ///
    /// Rules: `vault_path_prefix` ends with `/`, does not start with one, and with `{namespace}`
    /// replaced is a Vault path ([`crate::grammar::vault_path`]: no empty, `.` or `..` segment);
    /// `vault_policy` with `{namespace}` replaced is a Vault policy name
    /// ([`crate::grammar::vault_name`]); every key of `vault_policies_allowed` is a namespace (a
    /// DNS label) and every policy in it a Vault policy name.
    pub fn problems(&self) -> Result<(), Problems> {
        // Any DNS label stands for the namespace: the rules hold for all of them alike.
        const SAMPLE: &str = "team-a";
        let mut p = Problems::default();
        let prefix = self.vault_path_prefix_for(SAMPLE);
        if !prefix.ends_with('/')
            || prefix.starts_with('/')
            || crate::grammar::vault_path(&format!("{prefix}x")).is_err()
        {
            p.push(
                "tenancy.vault_path_prefix",
                format!(
                    "{} is not a Vault path prefix: mount/path segments ending with '/', not \
                     starting with one, with no empty, '.' or '..' segment, for example \
                     {DEFAULT_VAULT_PATH_PREFIX}",
                    quote(&self.vault_path_prefix)
                ),
            );
        }
        if crate::grammar::vault_name(&self.vault_policy_for(SAMPLE)).is_err() {
            p.push(
                "tenancy.vault_policy",
                format!(
                    "{} is not a Vault policy name template ([A-Za-z0-9_.-] and {NAMESPACE_PLACEHOLDER}), \
                     for example {DEFAULT_VAULT_POLICY}",
                    quote(&self.vault_policy)
                ),
            );
        }
        for (ns, policies) in &self.vault_policies_allowed {
            let at = join_field("tenancy.vault_policies_allowed", ns);
            if let Err(e) = crate::grammar::dns_label(ns) {
                p.push(at.clone(), format!("the key is not a namespace: {e}"));
            }
            for (i, pol) in policies.iter().enumerate() {
                if let Err(e) = crate::grammar::vault_name(pol) {
                    p.push(join_index(&at, i), e);
                }
            }
        }
        p.into_result()
    }
}

/// The always-on rules for a spec, added to `p` with paths under `at` (`spec` or `""`).
/// Called by [`crate::validate`]; see the module docs.
pub fn spec_problems(p: &mut Problems, at: &str, s: &BuildSpec) {
    let f = |name: &str| join_field(at, name);
    if let Some(user) = url_password_user(&s.repo_url) {
        p.push(
            f("repo_url"),
            format!(
                "carries a password for {} in the URL, which would be stored in Consul KV in clear; \
                 remove it and put the credentials in Vault (git_credentials_path)",
                quote(user)
            ),
        );
    }
    // An invalid repo_url is reported by the grammar alone.
    if s.git_credentials_path.is_some()
        && crate::grammar::git_url(&s.repo_url).is_ok()
        && let Some(scheme) = plaintext_scheme(&s.repo_url)
    {
        p.push(
            f("git_credentials_path"),
            format!(
                "credentials are only sent over https:// or ssh://, and repo_url uses {scheme}://; \
                 use an https:// or ssh:// URL, or remove git_credentials_path"
            ),
        );
    }
    if let Some(w) = &s.webhook {
        for name in w.headers.keys() {
            if header_denied(name) {
                p.push(
                    join_field(&join_field(&f("webhook"), "headers"), name),
                    format!(
                        "{} may not be set by a request; not allowed: Host, Content-Length, \
                         Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, Proxy-*, \
                         X-Consul-Token, X-Nomad-Token, X-Vault-Token, X-Jobforge-*",
                        quote(name)
                    ),
                );
            }
        }
    }
}

/// The user name of a URL's userinfo when it carries a password (`https://u:p@host/…`).
fn url_password_user(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, _password) = userinfo.split_once(':')?;
    Some(user)
}

/// The scheme of a URL over which credentials would travel unencrypted or to a local path.
fn plaintext_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    matches!(scheme, "http" | "git" | "file").then_some(scheme)
}

/// Every Vault path a request names, with its JSON path (`spec.test.vault_secrets[0].path`).
pub fn vault_paths(req: &BuildRequest) -> Vec<(String, &str)> {
    let s = &req.spec;
    let mut out = Vec::new();
    if let Some(v) = &s.git_credentials_path {
        out.push(("spec.git_credentials_path".to_string(), v.as_str()));
    }
    if let Some(v) = &s.registry_credentials_path {
        out.push(("spec.registry_credentials_path".to_string(), v.as_str()));
    }
    if let Some(v) = &s.pull_credentials_path {
        out.push(("spec.pull_credentials_path".to_string(), v.as_str()));
    }
    for (i, sec) in s.build_secrets.iter().enumerate() {
        let at = join_index("spec.build_secrets", i);
        out.push((join_field(&at, "vault_path"), sec.vault_path.as_str()));
    }
    if let Some(t) = &s.test {
        for (i, sec) in t.vault_secrets.iter().enumerate() {
            let at = join_index("spec.test.vault_secrets", i);
            out.push((join_field(&at, "path"), sec.path.as_str()));
        }
    }
    if let Some(w) = &s.webhook
        && let Some(v) = &w.secret_path
    {
        out.push(("spec.webhook.secret_path".to_string(), v.as_str()));
    }
    out
}

/// The operator-policy rules for one request (see the module docs): every Vault path under the
/// namespace's prefix, `test.vault_policies` only from the namespace's allowlist. `Err` holds
/// every problem, each naming the field and what is allowed.
pub fn tenancy_problems(req: &BuildRequest, cfg: &TenancyConfig) -> Result<(), Problems> {
    let ns = &req.metadata.namespace;
    let prefix = cfg.vault_path_prefix_for(ns);
    let mut p = Problems::default();
    for (path, value) in vault_paths(req) {
        if !value.starts_with(&prefix) || value.len() == prefix.len() {
            p.push(
                path,
                format!(
                    "{} is outside namespace {}'s Vault paths; allowed: a path under {prefix}",
                    quote(value),
                    quote(ns)
                ),
            );
        }
    }
    if let Some(t) = &req.spec.test {
        let allowed = cfg.vault_policies_allowed.get(ns.as_str());
        for (i, pol) in t.vault_policies.iter().enumerate() {
            if !allowed.is_some_and(|a| a.contains(pol)) {
                let list = allowed
                    .filter(|a| !a.is_empty())
                    .map_or_else(|| "none".to_string(), |a| a.join(", "));
                p.push(
                    join_index("spec.test.vault_policies", i),
                    format!(
                        "{} is not a Vault policy namespace {} may request; tasks get {} and, \
                         from this list, the ones the operator allows: {list}",
                        quote(pol),
                        quote(ns),
                        quote(&cfg.vault_policy_for(ns))
                    ),
                );
            }
        }
    }
    p.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{TestSpec, VaultSecret, WebhookSpec};

    fn request(ns: &str) -> BuildRequest {
        BuildRequest::new(
            ns,
            "app",
            BuildSpec {
                owner: "t".into(),
                repo_url: "https://git.example.com/a.git".into(),
                git_ref: "main".into(),
                image_name: "app".into(),
                registry_url: "registry:5000".into(),
                ..BuildSpec::default()
            },
        )
    }

    fn paths(r: Result<(), Problems>) -> Vec<String> {
        r.err()
            .map(|p| p.0.into_iter().map(|p| p.path).collect())
            .unwrap_or_default()
    }

    #[test]
    fn build_secrets_and_pull_credentials_are_bound_to_the_namespace() {
        let mut r = request("team-a");
        r.spec.pull_registry = Some("mirror:5000".into());
        r.spec.pull_credentials_path = Some("secret/data/jobforge/team-b/pull".into());
        r.spec.build_secrets = vec![
            crate::request::BuildSecret {
                id: "ok".into(),
                vault_path: "secret/data/jobforge/team-a/npm".into(),
                field: "f".into(),
            },
            crate::request::BuildSecret {
                id: "theirs".into(),
                vault_path: "secret/data/jobforge/team-b/npm".into(),
                field: "f".into(),
            },
        ];
        assert_eq!(
            paths(tenancy_problems(&r, &TenancyConfig::default())),
            [
                "spec.pull_credentials_path",
                "spec.build_secrets[1].vault_path"
            ]
        );
    }

    #[test]
    fn vault_paths_of_another_namespace_are_refused_with_the_allowed_prefix() {
        let mut r = request("team-a");
        r.spec.git_credentials_path = Some("secret/data/jobforge/team-b/git".into());
        r.spec.registry_credentials_path = Some("secret/data/jobforge/team-a/registry".into());
        r.spec.test = Some(TestSpec {
            vault_secrets: vec![VaultSecret {
                path: "secret/data/jobforge/team-ab/x".into(),
                fields: BTreeMap::from([("k".into(), "K".into())]),
            }],
            ..TestSpec::default()
        });
        r.spec.webhook = Some(WebhookSpec {
            url: "https://hooks.example.com/".into(),
            secret_path: Some("secret/data/jobforge/team-a".into()),
            ..WebhookSpec::default()
        });
        let err = tenancy_problems(&r, &TenancyConfig::default()).unwrap_err();
        let got: Vec<&str> = err.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            got,
            [
                "spec.git_credentials_path",
                "spec.test.vault_secrets[0].path",
                "spec.webhook.secret_path"
            ]
        );
        assert!(
            err.0[0]
                .message
                .contains("allowed: a path under secret/data/jobforge/team-a/"),
            "{}",
            err.0[0].message
        );
    }

    #[test]
    fn the_operator_template_sets_the_prefix_and_the_policy() {
        let cfg = TenancyConfig {
            vault_path_prefix: "kv/data/teams/{namespace}/ci/".into(),
            vault_policy: "ci-{namespace}".into(),
            ..TenancyConfig::default()
        };
        assert_eq!(cfg.vault_policy_for("team-a"), "ci-team-a");
        let mut r = request("team-a");
        r.spec.git_credentials_path = Some("kv/data/teams/team-a/ci/git".into());
        assert_eq!(tenancy_problems(&r, &cfg), Ok(()));
        r.spec.git_credentials_path = Some("secret/data/jobforge/team-a/git".into());
        assert_eq!(
            paths(tenancy_problems(&r, &cfg)),
            ["spec.git_credentials_path"]
        );
    }

    #[test]
    fn vault_policies_come_only_from_the_namespace_allowlist() {
        let mut r = request("team-a");
        r.spec.test = Some(TestSpec {
            vault_policies: vec!["aws-read".into(), "root".into()],
            ..TestSpec::default()
        });
        assert_eq!(
            paths(tenancy_problems(&r, &TenancyConfig::default())),
            ["spec.test.vault_policies[0]", "spec.test.vault_policies[1]"]
        );
        let cfg = TenancyConfig {
            vault_policies_allowed: BTreeMap::from([("team-a".into(), vec!["aws-read".into()])]),
            ..TenancyConfig::default()
        };
        assert_eq!(
            paths(tenancy_problems(&r, &cfg)),
            ["spec.test.vault_policies[1]"]
        );
        let mut other = r.clone();
        other.metadata.namespace = "team-b".into();
        assert_eq!(
            paths(tenancy_problems(&other, &cfg)).len(),
            2,
            "team-a's allowlist is not team-b's"
        );
    }

    #[test]
    fn passwords_in_repo_url_and_credentials_over_plaintext_are_refused() {
        let mut p = Problems::default();
        let mut s = request("a").spec;
        s.repo_url = "https://bob:hunter2@git.example.com/a.git".into();
        spec_problems(&mut p, "spec", &s);
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].path, "spec.repo_url");
        assert!(!p.0[0].message.contains("hunter2"), "{}", p.0[0].message);

        for (url, refused) in [
            ("http://git.example.com/a.git", true),
            ("git://git.example.com/a.git", true),
            ("file:///srv/a.git", true),
            ("https://git.example.com/a.git", false),
            ("ssh://git@git.example.com/a.git", false),
            ("git@git.example.com:a.git", false),
        ] {
            let mut p = Problems::default();
            let mut s = request("a").spec;
            s.repo_url = url.into();
            s.git_credentials_path = Some("secret/data/jobforge/a/git".into());
            spec_problems(&mut p, "spec", &s);
            assert_eq!(!p.is_empty(), refused, "{url}: {p}");
        }
        // A user name alone (ssh, or a public https mirror) is not a secret.
        let mut p = Problems::default();
        let mut s = request("a").spec;
        s.repo_url = "https://bob@git.example.com/a.git".into();
        spec_problems(&mut p, "spec", &s);
        assert!(p.is_empty(), "{p}");
    }

    #[test]
    fn denied_webhook_headers_are_refused_case_insensitively() {
        for (name, denied) in [
            ("Host", true),
            ("content-LENGTH", true),
            ("Transfer-Encoding", true),
            ("Proxy-Authorization", true),
            ("X-Nomad-Token", true),
            ("x-consul-token", true),
            ("X-Vault-Token", true),
            ("X-Jobforge-Signature", true),
            ("TE", true),
            ("Authorization", false),
            ("X-Team", false),
            ("Hostname", false),
        ] {
            assert_eq!(header_denied(name), denied, "{name}");
        }
        let mut s = request("a").spec;
        s.webhook = Some(WebhookSpec {
            url: "https://h/".into(),
            headers: BTreeMap::from([("X-Nomad-Token".into(), "x".into())]),
            ..WebhookSpec::default()
        });
        let mut p = Problems::default();
        spec_problems(&mut p, "spec", &s);
        assert_eq!(p.0[0].path, "spec.webhook.headers.X-Nomad-Token");
    }

    #[test]
    fn a_prefix_must_end_with_a_slash() {
        let cfg = TenancyConfig {
            vault_path_prefix: "secret/data/jobforge/{namespace}".into(),
            ..TenancyConfig::default()
        };
        assert!(cfg.problems().is_err());
        assert_eq!(TenancyConfig::default().problems(), Ok(()));
    }

    #[test]
    fn templates_and_allowlists_of_the_config_are_checked() {
        for (prefix, ok) in [
            ("kv/data/teams/{namespace}/ci/", true),
            ("secret/data/shared/", true),
            ("/secret/data/{namespace}/", false),
            ("secret//{namespace}/", false),
            ("secret/data/../{namespace}/", false),
            ("secret/", true),
            ("secret/data/{namespace}", false),
        ] {
            let cfg = TenancyConfig {
                vault_path_prefix: prefix.into(),
                ..TenancyConfig::default()
            };
            assert_eq!(cfg.problems().is_ok(), ok, "{prefix}");
        }
        let cfg = TenancyConfig {
            vault_policy: "ci {namespace}".into(),
            vault_policies_allowed: BTreeMap::from([
                ("Team_A".into(), vec!["ok".into()]),
                ("team-b".into(), vec!["ok".into(), "no/slash".into()]),
            ]),
            ..TenancyConfig::default()
        };
        assert_eq!(
            paths(cfg.problems()),
            [
                "tenancy.vault_policy",
                "tenancy.vault_policies_allowed.Team_A",
                "tenancy.vault_policies_allowed.team-b[1]"
            ]
        );
    }
}
