//! The operator's tenancy rules as `jobforge validate` and `jobforge submit` check them, so a
//! request the controller would refuse (`InvalidSpec`: a Vault path outside its namespace's
//! prefix, a Vault policy the namespace may not request) is refused before it is written.
//!
//! The rules are read from the `tenancy` section of `<prefix>/config` when Consul answers (parsed
//! by the controller's own [`KvConfig::parse`]); otherwise — Consul unreachable, the key absent or
//! unreadable with this token, or the document invalid — the defaults are used. Either way the
//! CLI says which ([`Rules::describe`]). The rule itself is
//! [`jobforge_schema::tenancy::tenancy_problems`], the one the controller applies; nothing is
//! re-implemented here. See `docs/tenancy.md`.

use std::time::Duration;

use jobforge_client::store::{Blocking, Kv, KvError};
use jobforge_controller::config::KvConfig;
use jobforge_schema::tenancy::{TenancyConfig, tenancy_problems};
use jobforge_schema::{BuildRequest, KeyLayout, Problems};

/// How long the CLI waits for Consul to answer the read of `<prefix>/config`.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The tenancy rules a request is checked against, and where they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The rules.
    pub config: TenancyConfig,
    /// Where they come from, as a phrase: `the operator's rules in jobforge/config`, or
    /// `the default rules (Consul is not reachable: …)`.
    pub origin: String,
}

impl Rules {
    /// The defaults, with the reason they are used.
    pub fn defaults(why: impl std::fmt::Display) -> Rules {
        Rules {
            config: TenancyConfig::default(),
            origin: format!("the default rules ({why})"),
        }
    }

    /// Reads `<prefix>/config` through `kv` (at most [`READ_TIMEOUT`]) and keeps its `tenancy`
    /// section; never fails: every way the read can go wrong gives [`Rules::defaults`] naming it.
    pub async fn read<K: Kv>(kv: &K, keys: &KeyLayout) -> Rules {
        let key = keys.config_key();
        let read = tokio::time::timeout(READ_TIMEOUT, kv.get(&key, Blocking::default())).await;
        match read {
            Err(_) => Rules::defaults(format!(
                "Consul did not answer within {} s",
                READ_TIMEOUT.as_secs()
            )),
            Ok(Err(KvError::Unreachable { addr, message })) => {
                Rules::defaults(format!("Consul at {addr} is not reachable: {message}"))
            }
            Ok(Err(e)) => Rules::defaults(format!("{key} cannot be read: {e}")),
            Ok(Ok((_, None))) => Rules::defaults(format!("{key} is absent")),
            Ok(Ok((_, Some(entry)))) => match KvConfig::parse(&key, &entry.value) {
                Err(e) => Rules::defaults(format!(
                    "{key} is invalid, so the controller keeps its previous rules: {e}"
                )),
                Ok(KvConfig { tenancy: None, .. }) => {
                    Rules::defaults(format!("{key} has no tenancy section"))
                }
                Ok(KvConfig {
                    tenancy: Some(config),
                    ..
                }) => Rules {
                    config,
                    origin: format!("the operator's rules in {key}"),
                },
            },
        }
    }

    /// One line saying what was checked and against which template:
    /// `tenancy: checked against the default rules (jobforge/config is absent): Vault paths under
    /// secret/data/jobforge/{namespace}/, task policy jobforge-{namespace}`.
    pub fn describe(&self) -> String {
        format!(
            "tenancy: checked against {}: Vault paths under {}, task policy {}",
            self.origin, self.config.vault_path_prefix, self.config.vault_policy
        )
    }

    /// The tenancy problems of `req` ([`tenancy_problems`]).
    pub fn check(&self, req: &BuildRequest) -> Result<(), Problems> {
        tenancy_problems(req, &self.config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use jobforge_client::store::memory::MemoryKv;
    use jobforge_schema::BuildSpec;

    use super::*;

    fn request(path: &str) -> BuildRequest {
        BuildRequest::new(
            "team-a",
            "app",
            BuildSpec {
                owner: "a".into(),
                repo_url: "https://git.example.com/a.git".into(),
                git_ref: "main".into(),
                image_name: "app".into(),
                registry_url: "registry:5000".into(),
                registry_credentials_path: Some(path.into()),
                ..BuildSpec::default()
            },
        )
    }

    #[tokio::test]
    async fn the_operators_template_is_read_from_kv_and_named() {
        let kv = MemoryKv::default();
        let keys = KeyLayout::new("jobforge");
        let r = Rules::read(&kv, &keys).await;
        assert_eq!(r.config, TenancyConfig::default());
        assert!(r.describe().contains("jobforge/config is absent"), "{r:?}");
        assert!(
            r.describe()
                .contains("Vault paths under secret/data/jobforge/{namespace}/"),
            "{r:?}"
        );

        kv.put(
            "jobforge/config",
            br#"{"tenancy":{"vault_path_prefix":"kv/data/ci/{namespace}/"}}"#,
            None,
        )
        .await
        .unwrap();
        let r = Rules::read(&kv, &keys).await;
        assert!(
            r.describe()
                .contains("the operator's rules in jobforge/config")
                && r.describe().contains("kv/data/ci/{namespace}/"),
            "{}",
            r.describe()
        );
        assert!(r.check(&request("kv/data/ci/team-a/reg")).is_ok());
        let p = r
            .check(&request("secret/data/jobforge/team-a/reg"))
            .unwrap_err();
        assert_eq!(p.0[0].path, "spec.registry_credentials_path");
        assert!(p.0[0].message.contains("kv/data/ci/team-a/"), "{p}");
    }

    #[tokio::test]
    async fn an_invalid_or_tenancy_less_config_gives_the_defaults_and_says_why() {
        let kv = MemoryKv::default();
        let keys = KeyLayout::new("jobforge");
        kv.put("jobforge/config", br#"{"build_timeout":"30m"}"#, None)
            .await
            .unwrap();
        let r = Rules::read(&kv, &keys).await;
        assert_eq!(r.config, TenancyConfig::default());
        assert!(r.origin.contains("no tenancy section"), "{r:?}");
        kv.put(
            "jobforge/config",
            br#"{"tenancy":{"vault_path_prefix":"nope"}}"#,
            None,
        )
        .await
        .unwrap();
        let r = Rules::read(&kv, &keys).await;
        assert_eq!(r.config, TenancyConfig::default());
        assert!(
            r.origin.contains("invalid") && r.origin.contains("tenancy.vault_path_prefix"),
            "{r:?}"
        );
    }
}
