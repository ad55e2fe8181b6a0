//! Controller configuration: command-line flags and environment (HashiCorp's variable names for the
//! Consul, Nomad and Vault connections), plus operator defaults stored in Consul KV at
//! `<prefix>/config`, re-read whenever that key changes.
//!
//! Precedence: a value present in the KV document wins over the flag, which wins over the built-in
//! default. An invalid KV document is reported (with the field path) and ignored as a whole: the
//! controller keeps running with the last valid configuration.
//!
//! KV document (JSON, every field optional):
//! ```json
//! {"build_timeout": "30m", "test_timeout": "15m", "ttl_after_finished": "168h",
//!  "registry_temp_prefix": "jobforge-tmp", "profile": "raw_exec", "registry_tls_verify": false,
//!  "datacenters": ["dc1"], "nomad_namespace": "default", "buildah_image": "quay.io/buildah/stable:v1.37",
//!  "skopeo_image": "registry.internal/jobforge/tools:1", "docker_network_mode": "host",
//!  "max_retries": 10,
//!  "default_resources": {"build": {"cpu": "1000", "memory": "2048", "disk": "10240"}},
//!  "concurrency": {"max_builds": 16, "namespace_max_builds": 4, "namespace_max_requests": 10000,
//!                  "namespaces": {"team-a": {"max_builds": 8, "max_priority": 80, "max_requests": 2000}}}}
//! ```
//!
//! `concurrency` (issue 17): `max_builds` caps the requests running a pipeline at once (all
//! namespaces; the `--max-concurrent-builds` flag when absent, unlimited when that is 0),
//! `namespace_max_builds` the same within one namespace (unlimited when absent), `namespaces`
//! overrides both per namespace and caps `spec.priority` (`max_priority`, 1..=100). Free slots go
//! round-robin to the namespaces with waiting requests (`crate::queue::Slots`).
//! `namespace_max_requests` / `namespaces.<ns>.max_requests` bound how many requests a namespace
//! may store: a request past it ends `Failed`/`InvalidSpec` with the quota in its message, and is
//! deleted after its TTL like any finished request.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::jobspec::{PhaseDefaults, Profile, RenderConfig};
use crate::machine::MachineConfig;

/// How build tasks run on Nomad clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileArg {
    /// buildah/skopeo/git installed on the client, `raw_exec` driver (the dev stack).
    #[value(name = "raw_exec", alias = "raw-exec")]
    RawExec,
    /// A buildah image with the `docker` driver, unprivileged (vfs storage, chroot isolation).
    Docker,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `jobforge-controller`. Consul, Nomad and Vault connections are read from the standard
/// environment variables (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_SSL`, `NOMAD_ADDR`,
/// `NOMAD_TOKEN`, `NOMAD_REGION`, `NOMAD_NAMESPACE`, `VAULT_ADDR`, `VAULT_TOKEN`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "jobforge-controller",
    version,
    about = "Drives jobforge BuildRequests stored in Consul KV to completion through Nomad batch jobs.",
    after_help = "Connections use HashiCorp's variables: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, NOMAD_ADDR, \
NOMAD_TOKEN, NOMAD_REGION, NOMAD_NAMESPACE, VAULT_ADDR, VAULT_TOKEN.\n\nExample (dev stack):\n  \
CONSUL_HTTP_ADDR=127.0.0.1:8500 NOMAD_ADDR=http://127.0.0.1:4646 VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root \\\n  \
jobforge-controller --profile raw_exec --registry-tls-verify=false"
)]
pub struct ControllerArgs {
    /// KV prefix of every jobforge key.
    #[arg(long, env = "JOBFORGE_PREFIX", default_value = "jobforge")]
    pub prefix: String,
    /// Address of /healthz, /readyz, /status and /metrics.
    #[arg(long, env = "JOBFORGE_HTTP_ADDR", default_value = "127.0.0.1:9090")]
    pub http_addr: SocketAddr,
    /// Identity written into the leader key (default: host name and process id).
    #[arg(long, env = "JOBFORGE_IDENTITY")]
    pub identity: Option<String>,
    /// Consul session TTL of the leader lock (Consul accepts 10s..=24h).
    #[arg(long, env = "JOBFORGE_SESSION_TTL", default_value = "15s", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// Consul session lock-delay (0s..=60s): how long the lock stays unavailable after a leader's
    /// session is invalidated.
    #[arg(long, env = "JOBFORGE_LOCK_DELAY", default_value = "15s", value_parser = parse_duration)]
    pub lock_delay: Duration,
    /// Reconciles running at once.
    #[arg(long, env = "JOBFORGE_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: usize,
    /// Task profile of rendered Nomad jobs.
    #[arg(long, env = "JOBFORGE_PROFILE", value_enum, default_value = "docker")]
    pub profile: ProfileArg,
    /// Verify the registry's TLS certificate (false for a plain-HTTP loopback registry).
    #[arg(long, env = "JOBFORGE_REGISTRY_TLS_VERIFY", default_value_t = true, action = clap::ArgAction::Set)]
    pub registry_tls_verify: bool,
    /// Repository path component of temporary images: `<registry>/<temp prefix>/<image>:<tag>`.
    #[arg(
        long,
        env = "JOBFORGE_REGISTRY_TEMP_PREFIX",
        default_value = "jobforge-tmp"
    )]
    pub registry_temp_prefix: String,
    /// Nomad datacenters build jobs may run in (comma-separated; `*` = any).
    #[arg(
        long,
        env = "JOBFORGE_DATACENTERS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub datacenters: Vec<String>,
    /// Log format.
    #[arg(long, env = "JOBFORGE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Requests running a pipeline at once, all namespaces together (0 = unlimited);
    /// `<prefix>/config` `concurrency.max_builds` overrides it.
    #[arg(long, env = "JOBFORGE_MAX_CONCURRENT_BUILDS", default_value_t = 0)]
    pub max_concurrent_builds: usize,
    /// On SIGTERM, how long in-flight reconciles may take before they are abandoned.
    #[arg(long, env = "JOBFORGE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 15s or 2m: {e}"))
}

/// Per-phase resource defaults of the KV document (MHz / MB, decimal strings like the spec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvPhaseResources {
    /// CPU in MHz.
    pub cpu: Option<String>,
    /// Memory in MB.
    pub memory: Option<String>,
    /// Ephemeral disk in MB.
    pub disk: Option<String>,
}

/// Default resources per phase in the KV document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvDefaultResources {
    /// Build phase.
    pub build: Option<KvPhaseResources>,
    /// Test phase.
    pub test: Option<KvPhaseResources>,
    /// Publish phase.
    pub publish: Option<KvPhaseResources>,
}

/// The operator defaults document at `<prefix>/config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvConfig {
    /// Default build deadline (humantime) when a request sets none.
    pub build_timeout: Option<String>,
    /// Default test deadline (humantime) when a request sets none.
    pub test_timeout: Option<String>,
    /// Default retention of finished requests (humantime).
    pub ttl_after_finished: Option<String>,
    /// Repository path component of temporary images.
    pub registry_temp_prefix: Option<String>,
    /// Task profile.
    pub profile: Option<ProfileArg>,
    /// Verify registry TLS.
    pub registry_tls_verify: Option<bool>,
    /// Nomad datacenters.
    pub datacenters: Option<Vec<String>>,
    /// Nomad namespace of build jobs.
    pub nomad_namespace: Option<String>,
    /// Image of the docker profile.
    pub buildah_image: Option<String>,
    /// Docker profile: image of the publish phase (skopeo); the buildah image when unset and
    /// `buildah_image` is set (one tool image can hold both, as `hack/docker-engine.sh images`
    /// builds it).
    pub skopeo_image: Option<String>,
    /// Docker profile: `network_mode` of the tool containers (for example `host` when the
    /// registry and git server listen on the client's loopback, as in the dev stack); the
    /// driver's default (`bridge`) when unset.
    pub docker_network_mode: Option<String>,
    /// Upper bound on `spec.retries`.
    pub max_retries: Option<u32>,
    /// Default resources per phase.
    pub default_resources: Option<KvDefaultResources>,
    /// Build slots, priorities and storage quotas (module docs).
    pub concurrency: Option<KvConcurrency>,
}

/// `concurrency` of the KV document (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvConcurrency {
    /// Requests running a pipeline at once, all namespaces (≥ 1).
    pub max_builds: Option<usize>,
    /// Requests running a pipeline at once in one namespace without an override (≥ 1).
    pub namespace_max_builds: Option<usize>,
    /// Requests one namespace may store without an override (≥ 1).
    pub namespace_max_requests: Option<usize>,
    /// Per-namespace overrides, by namespace name.
    #[serde(default)]
    pub namespaces: std::collections::BTreeMap<String, KvNamespaceLimits>,
}

/// One namespace's overrides in `concurrency.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvNamespaceLimits {
    /// Its build slots (≥ 1).
    pub max_builds: Option<usize>,
    /// Highest `spec.priority` it may use (1..=100); higher values are lowered to it.
    pub max_priority: Option<u32>,
    /// Requests it may store (≥ 1).
    pub max_requests: Option<usize>,
}

/// An invalid `<prefix>/config` document: the field path and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {message}")]
pub struct KvConfigError {
    /// The KV key read.
    pub key: String,
    /// JSON path of the offending field (`.` for the whole document).
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl KvConfig {
    /// Parses and checks the KV document. Durations must parse with humantime and be positive;
    /// resources must be positive decimal integers.
    ///
    /// Errors: [`KvConfigError`] naming the field path.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<KvConfig, KvConfigError> {
        let err = |path: String, message: String| KvConfigError {
            key: key.to_string(),
            path,
            message,
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let cfg: KvConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            err(path, e.into_inner().to_string())
        })?;
        for (name, value) in [
            ("build_timeout", &cfg.build_timeout),
            ("test_timeout", &cfg.test_timeout),
            ("ttl_after_finished", &cfg.ttl_after_finished),
        ] {
            if let Some(v) = value {
                match humantime::parse_duration(v) {
                    Ok(d) if !d.is_zero() => {}
                    _ => {
                        return Err(err(
                            name.to_string(),
                            format!("{v:?} is not a positive duration like 30m or 168h"),
                        ));
                    }
                }
            }
        }
        if let Some(res) = &cfg.default_resources {
            for (phase, r) in [
                ("build", &res.build),
                ("test", &res.test),
                ("publish", &res.publish),
            ] {
                let Some(r) = r else { continue };
                for (field, v) in [("cpu", &r.cpu), ("memory", &r.memory), ("disk", &r.disk)] {
                    if let Some(v) = v
                        && !matches!(v.parse::<u64>(), Ok(n) if n > 0)
                    {
                        return Err(err(
                            format!("default_resources.{phase}.{field}"),
                            format!(
                                "{v:?} is not a positive decimal integer (MHz for cpu, MB otherwise)"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(c) = &cfg.concurrency {
            let positive = |path: String, v: Option<usize>| match v {
                Some(0) => Err(err(path, "0 is not allowed; at least 1".to_string())),
                _ => Ok(()),
            };
            positive("concurrency.max_builds".into(), c.max_builds)?;
            positive(
                "concurrency.namespace_max_builds".into(),
                c.namespace_max_builds,
            )?;
            positive(
                "concurrency.namespace_max_requests".into(),
                c.namespace_max_requests,
            )?;
            for (ns, l) in &c.namespaces {
                let at = format!("concurrency.namespaces.{ns}");
                if jobforge_schema::grammar::dns_label(ns).is_err() {
                    return Err(err(at, format!("{ns:?} is not a namespace (a DNS label)")));
                }
                positive(format!("{at}.max_builds"), l.max_builds)?;
                positive(format!("{at}.max_requests"), l.max_requests)?;
                if let Some(p) = l.max_priority
                    && !(1..=100).contains(&p)
                {
                    return Err(err(
                        format!("{at}.max_priority"),
                        format!("{p} is out of range; allowed: 1 ..= 100"),
                    ));
                }
            }
        }
        if let Some(p) = &cfg.registry_temp_prefix {
            let ok = !p.is_empty()
                && p.split('/').all(|seg| {
                    !seg.is_empty()
                        && seg.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)
                        })
                });
            if !ok {
                return Err(err(
                    "registry_temp_prefix".to_string(),
                    format!(
                        "{p:?} is not a repository path: lowercase [a-z0-9._-] segments separated by /"
                    ),
                ));
            }
        }
        Ok(cfg)
    }

    /// Applies the docker-profile fields (`buildah_image`, `skopeo_image`,
    /// `docker_network_mode`) to `render`.
    pub fn apply_docker(&self, render: &mut crate::jobspec::RenderConfig) {
        if let Some(img) = &self.buildah_image {
            render.buildah_image = img.clone();
            if self.skopeo_image.is_none() {
                render.skopeo_image = img.clone();
            }
        }
        if let Some(img) = &self.skopeo_image {
            render.skopeo_image = img.clone();
        }
        if let Some(m) = &self.docker_network_mode {
            render.docker_network_mode = Some(m.clone());
        }
    }

    /// `build_timeout` parsed (validated by [`KvConfig::parse`]).
    pub fn build_timeout(&self) -> Option<Duration> {
        self.build_timeout
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
    }

    /// `test_timeout` parsed.
    pub fn test_timeout(&self) -> Option<Duration> {
        self.test_timeout
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
    }

    /// `ttl_after_finished` parsed.
    pub fn ttl_after_finished(&self) -> Option<Duration> {
        self.ttl_after_finished
            .as_deref()
            .and_then(|s| humantime::parse_duration(s).ok())
    }
}

/// Default identity: `<hostname>-<pid>`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "controller".to_string());
    format!("{host}-{}", std::process::id())
}

/// Configuration the reconciler reads on every call: the flags merged with `<prefix>/config`
/// (re-merged whenever that key changes).
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveConfig {
    /// Defaults of the state machine.
    pub machine: MachineConfig,
    /// Rendering of Nomad jobs.
    pub render: RenderConfig,
    /// Build slots and per-namespace limits.
    pub tenancy: TenancyLimits,
}

/// Per-namespace limits of the effective configuration (module docs, `concurrency`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenancyLimits {
    /// Build slot caps.
    pub slots: crate::queue::SlotLimits,
    /// Highest `spec.priority` per namespace (absent = 100).
    pub max_priority: std::collections::HashMap<String, u32>,
    /// Requests a namespace may store without an override (`None` = unlimited).
    pub max_requests_default: Option<usize>,
    /// Per-namespace storage quotas.
    pub max_requests: std::collections::HashMap<String, usize>,
}

impl TenancyLimits {
    /// The priority a request of `namespace` asking for `requested` (absent = 50) gets.
    pub fn priority(&self, namespace: &str, requested: Option<u32>) -> u32 {
        let p = requested.unwrap_or(jobforge_schema::validate::DEFAULT_PRIORITY);
        self.max_priority
            .get(namespace)
            .map_or(p, |max| p.min(*max))
            .clamp(1, 100)
    }

    /// The storage quota of `namespace` (`None` = unlimited).
    pub fn max_requests(&self, namespace: &str) -> Option<usize> {
        self.max_requests
            .get(namespace)
            .copied()
            .or(self.max_requests_default)
    }

    fn from_kv(args: &ControllerArgs, kv: Option<&KvConcurrency>) -> TenancyLimits {
        let unlimited = |n: usize| if n == 0 { usize::MAX } else { n };
        let default = KvConcurrency::default();
        let c = kv.unwrap_or(&default);
        let slots = crate::queue::SlotLimits {
            global: c
                .max_builds
                .unwrap_or(unlimited(args.max_concurrent_builds)),
            namespace_default: c.namespace_max_builds.unwrap_or(usize::MAX),
            per_namespace: c
                .namespaces
                .iter()
                .filter_map(|(ns, l)| Some((ns.clone(), l.max_builds?)))
                .collect(),
        };
        TenancyLimits {
            slots,
            max_priority: c
                .namespaces
                .iter()
                .filter_map(|(ns, l)| Some((ns.clone(), l.max_priority?)))
                .collect(),
            max_requests_default: c.namespace_max_requests,
            max_requests: c
                .namespaces
                .iter()
                .filter_map(|(ns, l)| Some((ns.clone(), l.max_requests?)))
                .collect(),
        }
    }
}

impl EffectiveConfig {
    /// Merges the flags and the KV document: a value the document sets wins over the flag,
    /// which wins over the built-in default (the module docs' precedence).
    pub fn merge(args: &ControllerArgs, kv: &KvConfig) -> EffectiveConfig {
        let mut machine = MachineConfig::default();
        if let Some(d) = kv.build_timeout() {
            machine.default_build_timeout = d;
        }
        if let Some(d) = kv.test_timeout() {
            machine.default_test_timeout = d;
        }
        if let Some(d) = kv.ttl_after_finished() {
            machine.default_ttl_after_finished = d;
        }
        if let Some(r) = kv.max_retries {
            machine.max_retries = r;
        }
        let mut render = RenderConfig {
            profile: match kv.profile.unwrap_or(args.profile) {
                ProfileArg::RawExec => Profile::RawExec,
                ProfileArg::Docker => Profile::Docker,
            },
            datacenters: kv
                .datacenters
                .clone()
                .unwrap_or_else(|| args.datacenters.clone()),
            registry_temp_prefix: kv
                .registry_temp_prefix
                .clone()
                .unwrap_or_else(|| args.registry_temp_prefix.clone()),
            tls_verify: kv.registry_tls_verify.unwrap_or(args.registry_tls_verify),
            ..RenderConfig::default()
        };
        if let Some(ns) = &kv.nomad_namespace {
            render.namespace = Some(ns.clone());
        }
        kv.apply_docker(&mut render);
        if let Some(res) = &kv.default_resources {
            let apply = |d: &mut PhaseDefaults, r: &Option<KvPhaseResources>| {
                let Some(r) = r else { return };
                let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
                if let Some(v) = num(&r.cpu) {
                    d.cpu_mhz = v;
                }
                if let Some(v) = num(&r.memory) {
                    d.memory_mb = v;
                }
                if let Some(v) = num(&r.disk) {
                    d.disk_mb = v;
                }
            };
            apply(&mut render.build_defaults, &res.build);
            apply(&mut render.test_defaults, &res.test);
            apply(&mut render.publish_defaults, &res.publish);
        }
        let tenancy = TenancyLimits::from_kv(args, kv.concurrency.as_ref());
        EffectiveConfig {
            machine,
            render,
            tenancy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_config_parses_every_documented_field() {
        let doc = br#"{"build_timeout":"30m","test_timeout":"15m","ttl_after_finished":"168h",
            "registry_temp_prefix":"jobforge-tmp","profile":"raw_exec","registry_tls_verify":false,
            "datacenters":["dc1"],"nomad_namespace":"default","buildah_image":"quay.io/buildah/stable:v1.37",
            "max_retries":10,"default_resources":{"build":{"cpu":"1000","memory":"2048","disk":"10240"}}}"#;
        let cfg = KvConfig::parse("jobforge/config", doc).expect("valid");
        assert_eq!(cfg.build_timeout(), Some(Duration::from_secs(1800)));
        assert_eq!(cfg.profile, Some(ProfileArg::RawExec));
        assert_eq!(
            cfg.ttl_after_finished(),
            Some(Duration::from_secs(168 * 3600))
        );
    }

    #[test]
    fn kv_config_unknown_field_is_reported_with_its_path() {
        let e = KvConfig::parse(
            "jobforge/config",
            br#"{"default_resources":{"build":{"gpu":"1"}}}"#,
        )
        .expect_err("invalid");
        assert!(e.path.starts_with("default_resources.build"), "{e}");
        assert!(e.message.contains("gpu"), "{e}");
    }

    #[test]
    fn kv_config_bad_duration_and_resource_name_the_field() {
        let e = KvConfig::parse("k", br#"{"build_timeout":"soon"}"#).expect_err("invalid");
        assert_eq!(e.path, "build_timeout");
        let e = KvConfig::parse("k", br#"{"default_resources":{"test":{"memory":"-1"}}}"#)
            .expect_err("invalid");
        assert_eq!(e.path, "default_resources.test.memory");
        let e = KvConfig::parse("k", br#"{"registry_temp_prefix":"Tmp/"}"#).expect_err("invalid");
        assert_eq!(e.path, "registry_temp_prefix");
    }

    #[test]
    fn kv_concurrency_sets_slots_priorities_and_quotas_per_namespace() {
        use clap::Parser;
        let doc = br#"{"concurrency":{"max_builds":16,"namespace_max_builds":4,"namespace_max_requests":100,
            "namespaces":{"team-a":{"max_builds":8,"max_priority":60,"max_requests":5}}}}"#;
        let kv = KvConfig::parse("k", doc).expect("valid");
        let args = ControllerArgs::parse_from(["jobforge-controller"]);
        let t = EffectiveConfig::merge(&args, &kv).tenancy;
        assert_eq!(t.slots.global, 16);
        assert_eq!((t.slots.of("team-a"), t.slots.of("team-b")), (8, 4));
        assert_eq!(t.priority("team-a", Some(90)), 60);
        assert_eq!(t.priority("team-b", Some(90)), 90);
        assert_eq!(t.priority("team-b", None), 50);
        assert_eq!(
            (t.max_requests("team-a"), t.max_requests("team-b")),
            (Some(5), Some(100))
        );
        // Without the document: the flag (0 = unlimited), no namespace cap, no quota.
        let t = EffectiveConfig::merge(&args, &KvConfig::default()).tenancy;
        assert_eq!((t.slots.global, t.slots.of("x")), (usize::MAX, usize::MAX));
        assert_eq!(t.max_requests("x"), None);
        for (bad, path) in [
            (
                r#"{"concurrency":{"max_builds":0}}"#,
                "concurrency.max_builds",
            ),
            (
                r#"{"concurrency":{"namespaces":{"Team":{}}}}"#,
                "concurrency.namespaces.Team",
            ),
            (
                r#"{"concurrency":{"namespaces":{"a":{"max_priority":101}}}}"#,
                "concurrency.namespaces.a.max_priority",
            ),
        ] {
            let e = KvConfig::parse("k", bad.as_bytes()).expect_err(bad);
            assert_eq!(e.path, path, "{e}");
        }
    }

    #[test]
    fn kv_config_not_json_is_an_error_not_a_panic() {
        assert!(KvConfig::parse("k", b"\xff\x00garbage").is_err());
    }
}
