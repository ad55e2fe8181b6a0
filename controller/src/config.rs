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
//!  "tenancy": {"vault_path_prefix": "secret/data/jobforge/{namespace}/",
//!              "vault_policy": "jobforge-{namespace}",
//!              "vault_policies_allowed": {"team-a": ["aws-read"]},
//!              "webhook_allow_cidrs": ["127.0.0.0/8"]},
//!  "concurrency": {"max_builds": 16, "namespace_max_builds": 4, "namespace_max_requests": 10000,
//!                  "namespaces": {"team-a": {"max_builds": 8, "max_priority": 80, "max_requests": 2000}}},
//!  "signing": {"transit_key": "jobforge", "builder_id": "https://ci.example.com/jobforge"},
//!  "build": {"storage_driver": "auto",
//!            "cache": {"enabled": true, "root": "/var/lib/jobforge/buildah-cache", "max_size_mb": 20480},
//!            "registry_mirrors": [{"prefix": "docker.io", "mirror": "mirror.internal:5000/hub"}]}}
//! ```
//!
//! `tenancy` is [`TenancyConfig`] (the rules and their defaults are documented there and in
//! `docs/tenancy.md`); an invalid `tenancy` section makes the whole document invalid, so the
//! previous tenancy rules stay in force, never a looser default.
//!
//! `concurrency` (issue 17): `max_builds` caps the requests running a pipeline at once (all
//! namespaces; the `--max-concurrent-builds` flag when absent, unlimited when that is 0),
//! `namespace_max_builds` the same within one namespace (unlimited when absent), `namespaces`
//! overrides both per namespace and caps `spec.priority` (`max_priority`, 1..=100). Free slots go
//! round-robin to the namespaces with waiting requests (`crate::queue::Slots`).
//! `namespace_max_requests` / `namespaces.<ns>.max_requests` bound how many requests a namespace
//! may store: a request past it ends `Failed`/`InvalidSpec` with the quota in its message, and is
//! deleted after its TTL like any finished request.
//!
//! `build` (issue 19): `storage_driver` (`auto` by default: overlay where buildah can use it on
//! the client, else vfs; `overlay`; `vfs`) and `cache`, the build phase's per-namespace layer
//! cache on the Nomad client (`raw_exec` profile only; `docs/performance.md`, "Layer cache"):
//! `root` (required: an absolute path of `[A-Za-z0-9._-]` segments, no `..`), `enabled`
//! (default true), `max_size_mb` (default 10240; 0 = never pruned). Absent = no cache.
//!
//! `build.registry_mirrors` (issue 19): a list of `{"prefix": "docker.io", "mirror":
//! "mirror.internal:5000/hub", "insecure": false}` (`registry` is an alias of `prefix`; both
//! `host[:port][/path]`, the schema's registry grammar): base-image pulls of the build phase try
//! the mirrors of a prefix in order, then the original. Rendered as the build task's
//! registries.conf (`crate::jobspec::registries`, which also says which host pull credentials
//! go to: never a mirror). An invalid entry makes the whole document invalid (by key), so the
//! previous mirrors stay in force.
//!
//! `signing` (issue 20, `docs/supply-chain.md`): the Vault transit key that signs published
//! images and their provenance; absent = images are not signed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use jobforge_schema::tenancy::TenancyConfig;
use serde::Deserialize;

use crate::egress::EgressPolicy;
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
    /// session is invalidated. 0 by default: every write a leader makes is fenced by
    /// `check-session` on the leader key, so a deposed leader's late writes are refused whatever
    /// the delay (docs/operations.md, "Failover and lock-delay").
    #[arg(long, env = "JOBFORGE_LOCK_DELAY", default_value = "0s", value_parser = parse_duration)]
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
    /// How often the leader stops `jobforge-*` Nomad jobs whose request or generation no longer
    /// exists (matched by the job's Meta; `0s` turns the sweep off). A late register by a
    /// deposed leader runs at most this long.
    #[arg(long, env = "JOBFORGE_SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// How long a namespace of the `requests/` and `status/` watches stays unchanged before its
    /// blocking read stops and it is watched by probes instead (parked; issue 17,
    /// `docs/performance.md` cost model). Shorter parks sooner: an idle leader's cost per minute
    /// falls to its session renewals sooner, and a quiet namespace's next change costs a probe
    /// round (up to 1 s more under churn elsewhere). Between 1 s and 10 min (Consul's longest
    /// blocking wait).
    #[arg(long, env = "JOBFORGE_WATCH_PARK_AFTER", default_value = "60s", value_parser = parse_park_after)]
    pub watch_park_after: Duration,
    /// Register this replica with the local Consul agent as a service with an HTTP check on its
    /// own `/healthz`, and bind the leader session to that check (fast failover; the catalog
    /// and `consul_sd_configs` list the replicas). The token needs `service:write` on the name.
    #[arg(long, env = "JOBFORGE_SERVICE_REGISTRATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub service_registration: bool,
    /// Consul service name of the replicas.
    #[arg(long, env = "JOBFORGE_SERVICE_NAME", default_value = "jobforge")]
    pub service_name: String,
    /// Address the Consul agent reaches this replica's `/healthz` on (default: the IP of
    /// `--http-addr`, or 127.0.0.1 when that is unspecified, 0.0.0.0 / ::).
    #[arg(long, env = "JOBFORGE_SERVICE_ADDRESS")]
    pub service_address: Option<std::net::IpAddr>,
    /// How often the agent runs the `/healthz` check. With the check timeout it bounds how
    /// long a crashed leader keeps the lock.
    #[arg(long, env = "JOBFORGE_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub check_interval: Duration,
    /// How long the agent waits for `/healthz` before the check is critical.
    #[arg(long, env = "JOBFORGE_CHECK_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub check_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 15s or 2m: {e}"))
}

/// `--watch-park-after`: a duration from 1 s to Consul's longest blocking wait (10 min).
fn parse_park_after(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if !(Duration::from_secs(1)..=jobforge_client::consul::MAX_WAIT).contains(&d) {
        return Err(format!(
            "{s:?} is outside 1s..10m (a folder's blocking read waits this long; Consul caps a wait at 10 min)"
        ));
    }
    Ok(d)
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
    /// The tenancy rules (Vault path prefix and policy templates, allowlisted Vault policies per
    /// namespace, webhook CIDR allowlist); [`TenancyConfig::default`] when absent.
    pub tenancy: Option<TenancyConfig>,
    /// Image signing and provenance (issue 20): absent = images are not signed.
    pub signing: Option<KvSigning>,
    /// Build slots, priorities and storage quotas (module docs).
    pub concurrency: Option<KvConcurrency>,
    /// Build-phase settings: storage driver, layer cache and registry mirrors (module docs).
    pub build: Option<KvBuild>,
}

/// `build` in `<prefix>/config` (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvBuild {
    /// `auto`, `overlay` or `vfs` (default `auto`).
    pub storage_driver: Option<String>,
    /// The per-namespace layer cache (absent = none).
    pub cache: Option<KvBuildCache>,
    /// Mirrors of base-image registries, tried in order before the original
    /// ([`crate::jobspec::registries`]).
    #[serde(default)]
    pub registry_mirrors: Vec<KvRegistryMirror>,
}

/// `build.cache` in `<prefix>/config` (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvBuildCache {
    /// Whether builds use it (default true).
    pub enabled: Option<bool>,
    /// Absolute directory on the clients; namespaces get `<root>/<ns>/<driver>/`.
    pub root: String,
    /// Size in MB above which a build prunes its namespace's store (default 10240; 0 = never).
    pub max_size_mb: Option<u64>,
}

/// Default `build.cache.max_size_mb`.
pub const DEFAULT_CACHE_MAX_SIZE_MB: u64 = 10240;

impl KvBuild {
    /// The cache as the renderer takes it; `None` when absent or disabled.
    pub fn cache(&self) -> Option<crate::jobspec::BuildCache> {
        let c = self.cache.as_ref()?;
        c.enabled
            .unwrap_or(true)
            .then(|| crate::jobspec::BuildCache {
                root: c.root.trim_end_matches('/').to_string(),
                max_size_mb: c.max_size_mb.unwrap_or(DEFAULT_CACHE_MAX_SIZE_MB),
            })
    }
}

/// Whether `root` is an absolute directory of `/`-separated `[A-Za-z0-9._-]` segments without
/// `.` or `..` segments and not `/` itself: a path no shell or Nomad interpolation touches.
fn is_plain_absolute_dir(root: &str) -> bool {
    let Some(rest) = root.strip_prefix('/') else {
        return false;
    };
    let rest = rest.trim_end_matches('/');
    !rest.is_empty()
        && rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
}

/// One entry of `build.registry_mirrors`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvRegistryMirror {
    /// What is mirrored: `host[:port][/path]` (`docker.io`, `quay.io/org`); `registry` is an
    /// alias.
    #[serde(alias = "registry")]
    pub prefix: String,
    /// The mirror: `host[:port][/path]`, replacing `prefix` in a pulled reference.
    pub mirror: String,
    /// Plain HTTP or unverified TLS for this mirror (default false).
    #[serde(default)]
    pub insecure: bool,
}

impl KvBuild {
    /// The mirrors as the renderer takes them.
    pub fn mirrors(&self) -> Vec<crate::jobspec::RegistryMirror> {
        self.registry_mirrors
            .iter()
            .map(|m| crate::jobspec::RegistryMirror {
                prefix: m.prefix.clone(),
                location: m.mirror.clone(),
                insecure: m.insecure,
            })
            .collect()
    }
}

/// `signing` in `<prefix>/config`: the Vault transit key that signs published images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSigning {
    /// The transit key (`ecdsa-p256`) signing every namespace without an override.
    pub transit_key: String,
    /// Mount of the transit engine (default `transit`).
    pub transit_mount: Option<String>,
    /// SLSA `runDetails.builder.id` (default `https://example.invalid/jobforge/controller`).
    pub builder_id: Option<String>,
    /// Per-namespace overrides: namespace → `{ "transit_key": ... }`.
    pub namespaces: Option<BTreeMap<String, KvSigningNamespace>>,
}

/// A namespace's signing override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSigningNamespace {
    /// The transit key signing this namespace's images.
    pub transit_key: String,
}

/// Default SLSA builder id when the operator sets none.
pub const DEFAULT_BUILDER_ID: &str = "https://example.invalid/jobforge/controller";

impl KvSigning {
    /// The effective signing configuration.
    pub fn to_config(&self) -> crate::supply_chain::SigningConfig {
        crate::supply_chain::SigningConfig {
            transit_mount: self
                .transit_mount
                .clone()
                .unwrap_or_else(|| "transit".to_string()),
            transit_key: self.transit_key.clone(),
            namespace_keys: self
                .namespaces
                .iter()
                .flatten()
                .map(|(ns, o)| (ns.clone(), o.transit_key.clone()))
                .collect(),
            builder_id: self
                .builder_id
                .clone()
                .unwrap_or_else(|| DEFAULT_BUILDER_ID.to_string()),
        }
    }
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
        if let Some(t) = &cfg.tenancy {
            if let Err(problems) = t.problems() {
                let first = problems.0.into_iter().next();
                let (path, message) = first.map_or_else(
                    || ("tenancy".to_string(), "invalid".to_string()),
                    |p| (p.path, p.message),
                );
                return Err(err(path, message));
            }
            for (i, cidr) in t.webhook_allow_cidrs.iter().enumerate() {
                if let Err(e) = EgressPolicy::new(std::slice::from_ref(cidr)) {
                    return Err(err(format!("tenancy.webhook_allow_cidrs[{i}]"), e));
                }
            }
        }
        if let Some(sg) = &cfg.signing {
            // Vault's GenericNameRegex for key names; a mount is one path segment.
            let name_ok = |n: &str| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
                    && n.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    && n.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            };
            let keys = std::iter::once(("signing.transit_key".to_string(), &sg.transit_key))
                .chain(sg.namespaces.iter().flatten().map(|(ns, o)| {
                    (
                        format!("signing.namespaces.{ns}.transit_key"),
                        &o.transit_key,
                    )
                }))
                .chain(
                    sg.transit_mount
                        .iter()
                        .map(|m| ("signing.transit_mount".to_string(), m)),
                );
            for (path, v) in keys {
                if !name_ok(v) {
                    return Err(err(
                        path,
                        format!(
                            "{v:?} is not a Vault transit name ([A-Za-z0-9_.@-], starting and ending with a letter, digit or _)"
                        ),
                    ));
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
        if let Some(b) = &cfg.build {
            if let Some(d) = &b.storage_driver
                && !matches!(d.as_str(), "auto" | "overlay" | "vfs")
            {
                return Err(err(
                    "build.storage_driver".to_string(),
                    format!("{d:?} is not a storage driver; allowed: auto, overlay, vfs"),
                ));
            }
            if let Some(c) = &b.cache
                && !is_plain_absolute_dir(&c.root)
            {
                return Err(err(
                    "build.cache.root".to_string(),
                    format!(
                        "{:?} is not an absolute directory of [A-Za-z0-9._-] segments without `..`",
                        c.root
                    ),
                ));
            }
            for (i, m) in b.registry_mirrors.iter().enumerate() {
                let at = format!("build.registry_mirrors[{i}]");
                jobforge_schema::grammar::registry(&m.prefix)
                    .map_err(|e| err(format!("{at}.prefix"), e))?;
                jobforge_schema::grammar::registry(&m.mirror)
                    .map_err(|e| err(format!("{at}.mirror"), e))?;
                if m.prefix == m.mirror {
                    return Err(err(
                        format!("{at}.mirror"),
                        format!("{:?} mirrors itself; name another registry", m.mirror),
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
    /// The tenancy rules in force: what requests of a namespace may name (checked before any
    /// job), the Vault policy their tasks get, and where webhooks may go. `render.tenancy` is a
    /// copy, for the renderer.
    pub tenancy: TenancyConfig,
    /// Image signing (`signing` in the KV document); `None` = not signed.
    pub signing: Option<crate::supply_chain::SigningConfig>,
    /// Build slots, priorities and storage quotas per namespace (`concurrency`).
    pub limits: TenancyLimits,
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
        if let Some(b) = &kv.build {
            if let Some(d) = &b.storage_driver {
                render.storage_driver = d.clone();
            }
            render.build_cache = b.cache();
        }
        render.registry_mirrors = kv.build.as_ref().map(KvBuild::mirrors).unwrap_or_default();
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
        let tenancy = kv.tenancy.clone().unwrap_or_default();
        render.tenancy = tenancy.clone();
        let limits = TenancyLimits::from_kv(args, kv.concurrency.as_ref());
        EffectiveConfig {
            machine,
            render,
            tenancy,
            signing: kv.signing.as_ref().map(KvSigning::to_config),
            limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn park_after_is_between_one_second_and_consuls_longest_wait() {
        assert_eq!(parse_park_after("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_park_after("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_park_after("1s"), Ok(Duration::from_secs(1)));
        for bad in ["0s", "500ms", "11m", "forever"] {
            let e = parse_park_after(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let args =
            <ControllerArgs as clap::Parser>::try_parse_from(["jobforge-controller"]).unwrap();
        assert_eq!(args.watch_park_after, Duration::from_secs(60));
    }

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
    fn kv_config_tenancy_section_is_parsed_and_merged() {
        let doc = br#"{"tenancy":{"vault_path_prefix":"kv/data/ci/{namespace}/",
            "vault_policy":"ci-{namespace}","vault_policies_allowed":{"team-a":["aws-read"]},
            "webhook_allow_cidrs":["127.0.0.0/8","::1/128"]}}"#;
        let kv = KvConfig::parse("jobforge/config", doc).expect("valid");
        let args = <ControllerArgs as clap::Parser>::parse_from(["jobforge-controller"]);
        let eff = EffectiveConfig::merge(&args, &kv);
        assert_eq!(
            eff.tenancy.vault_path_prefix_for("team-a"),
            "kv/data/ci/team-a/"
        );
        assert_eq!(eff.tenancy.vault_policy_for("team-b"), "ci-team-b");
        assert_eq!(
            eff.tenancy.vault_policies_allowed["team-a"],
            ["aws-read".to_string()]
        );
        assert_eq!(eff.tenancy.webhook_allow_cidrs, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(
            eff.render.tenancy, eff.tenancy,
            "the renderer sees the same rules"
        );
    }

    #[test]
    fn kv_config_partial_or_absent_tenancy_takes_the_defaults() {
        let args = <ControllerArgs as clap::Parser>::parse_from(["jobforge-controller"]);
        let eff = EffectiveConfig::merge(&args, &KvConfig::default());
        assert_eq!(eff.tenancy, TenancyConfig::default());
        let kv = KvConfig::parse("k", br#"{"tenancy":{"vault_policy":"t-{namespace}"}}"#)
            .expect("valid");
        let eff = EffectiveConfig::merge(&args, &kv);
        assert_eq!(
            eff.tenancy.vault_path_prefix,
            jobforge_schema::tenancy::DEFAULT_VAULT_PATH_PREFIX
        );
        assert_eq!(eff.tenancy.vault_policy_for("a"), "t-a");
    }

    #[test]
    fn kv_config_invalid_tenancy_names_the_key() {
        for (doc, path) in [
            (
                &br#"{"tenancy":{"vault_path_prefx":"x/"}}"#[..],
                "tenancy.vault_path_prefx",
            ),
            (
                br#"{"tenancy":{"vault_path_prefix":"secret/data/{namespace}"}}"#,
                "tenancy.vault_path_prefix",
            ),
            (
                br#"{"tenancy":{"vault_path_prefix":"secret/../{namespace}/"}}"#,
                "tenancy.vault_path_prefix",
            ),
            (
                br#"{"tenancy":{"vault_policy":""}}"#,
                "tenancy.vault_policy",
            ),
            (
                br#"{"tenancy":{"vault_policies_allowed":{"team-a":"aws"}}}"#,
                "tenancy.vault_policies_allowed.team-a",
            ),
            (
                br#"{"tenancy":{"vault_policies_allowed":{"Team A":["aws"]}}}"#,
                "tenancy.vault_policies_allowed[\"Team A\"]",
            ),
            (
                br#"{"tenancy":{"webhook_allow_cidrs":["127.0.0.0/8","localhost"]}}"#,
                "tenancy.webhook_allow_cidrs[1]",
            ),
            (br#"{"tenancy":"strict"}"#, "tenancy"),
        ] {
            let e = KvConfig::parse("jobforge/config", doc).expect_err("invalid");
            assert_eq!(e.path, path, "{e}");
            assert!(e.to_string().starts_with("jobforge/config: tenancy"), "{e}");
        }
    }

    #[test]
    fn kv_concurrency_sets_slots_priorities_and_quotas_per_namespace() {
        use clap::Parser;
        let doc = br#"{"concurrency":{"max_builds":16,"namespace_max_builds":4,"namespace_max_requests":100,
            "namespaces":{"team-a":{"max_builds":8,"max_priority":60,"max_requests":5}}}}"#;
        let kv = KvConfig::parse("k", doc).expect("valid");
        let args = ControllerArgs::parse_from(["jobforge-controller"]);
        let t = EffectiveConfig::merge(&args, &kv).limits;
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
        let t = EffectiveConfig::merge(&args, &KvConfig::default()).limits;
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
    fn kv_build_cache_and_driver_are_validated_and_merged() {
        use clap::Parser;
        let args = ControllerArgs::parse_from(["jobforge-controller"]);
        let r = EffectiveConfig::merge(&args, &KvConfig::default()).render;
        assert_eq!((r.storage_driver.as_str(), &r.build_cache), ("auto", &None));
        let kv = KvConfig::parse(
            "k",
            br#"{"build":{"storage_driver":"vfs","cache":{"root":"/var/lib/jf-cache/","max_size_mb":512}}}"#,
        )
        .expect("valid");
        let r = EffectiveConfig::merge(&args, &kv).render;
        assert_eq!(r.storage_driver, "vfs");
        assert_eq!(
            r.build_cache,
            Some(crate::jobspec::BuildCache {
                root: "/var/lib/jf-cache".into(),
                max_size_mb: 512
            })
        );
        let kv = KvConfig::parse("k", br#"{"build":{"cache":{"root":"/c","enabled":false}}}"#)
            .expect("valid");
        assert_eq!(EffectiveConfig::merge(&args, &kv).render.build_cache, None);
        let kv = KvConfig::parse("k", br#"{"build":{"cache":{"root":"/c"}}}"#).expect("valid");
        assert_eq!(
            EffectiveConfig::merge(&args, &kv)
                .render
                .build_cache
                .map(|c| c.max_size_mb),
            Some(DEFAULT_CACHE_MAX_SIZE_MB)
        );
        for (bad, path) in [
            (
                r#"{"build":{"storage_driver":"btrfs"}}"#,
                "build.storage_driver",
            ),
            (
                r#"{"build":{"cache":{"root":"rel/dir"}}}"#,
                "build.cache.root",
            ),
            (r#"{"build":{"cache":{"root":"/"}}}"#, "build.cache.root"),
            (
                r#"{"build":{"cache":{"root":"/a/../b"}}}"#,
                "build.cache.root",
            ),
            (
                r#"{"build":{"cache":{"root":"/a/${NOMAD_ALLOC_DIR}"}}}"#,
                "build.cache.root",
            ),
            (r#"{"build":{"cache":{"root":"/a b"}}}"#, "build.cache.root"),
            (r#"{"build":{"cache":{}}}"#, "build.cache"),
            (
                r#"{"build":{"cache":{"root":"/c","max_size":1}}}"#,
                "build.cache",
            ),
        ] {
            let e = KvConfig::parse("k", bad.as_bytes()).expect_err(bad);
            assert!(e.path.starts_with(path), "{bad}: {e}");
        }
    }

    #[test]
    fn kv_build_registry_mirrors_are_validated_by_key_and_merged_in_order() {
        use clap::Parser;
        let doc = br#"{"build":{"registry_mirrors":[
            {"prefix":"docker.io","mirror":"mirror.internal:5000/hub"},
            {"registry":"quay.io/org","mirror":"127.0.0.1:5000","insecure":true}]}}"#;
        let kv = KvConfig::parse("k", doc).expect("valid");
        let args = ControllerArgs::parse_from(["jobforge-controller"]);
        let r = EffectiveConfig::merge(&args, &kv).render;
        assert_eq!(
            r.registry_mirrors,
            vec![
                crate::jobspec::RegistryMirror {
                    prefix: "docker.io".into(),
                    location: "mirror.internal:5000/hub".into(),
                    insecure: false
                },
                crate::jobspec::RegistryMirror {
                    prefix: "quay.io/org".into(),
                    location: "127.0.0.1:5000".into(),
                    insecure: true
                },
            ]
        );
        assert!(
            EffectiveConfig::merge(&args, &KvConfig::default())
                .render
                .registry_mirrors
                .is_empty()
        );
        for (bad, path) in [
            (
                r#"{"build":{"registry_mirrors":[{"prefix":"docker.io","mirror":"http://m"}]}}"#,
                "build.registry_mirrors[0].mirror",
            ),
            (
                r#"{"build":{"registry_mirrors":[{"prefix":"docker.io","mirror":"m"},{"prefix":"a b","mirror":"m"}]}}"#,
                "build.registry_mirrors[1].prefix",
            ),
            (
                r#"{"build":{"registry_mirrors":[{"prefix":"docker.io","mirror":"m\"\n[x]"}]}}"#,
                "build.registry_mirrors[0].mirror",
            ),
            (
                r#"{"build":{"registry_mirrors":[{"prefix":"docker.io","mirror":"docker.io"}]}}"#,
                "build.registry_mirrors[0].mirror",
            ),
            (
                r#"{"build":{"registry_mirrors":[{"prefix":"docker.io"}]}}"#,
                "build.registry_mirrors[0]",
            ),
            (
                r#"{"build":{"registry_mirrors":[{"prefix":"docker.io","mirror":"m","tls":false}]}}"#,
                "build.registry_mirrors[0].tls",
            ),
            (r#"{"build":{"mirrors":[]}}"#, "build.mirrors"),
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
