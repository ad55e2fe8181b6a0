//! Rendering configuration: task profile, placement, registry temp prefix, default resources per
//! phase and the buildah/skopeo settings. Built from the controller's flags and `<prefix>/config`;
//! [`RenderConfig::default`] gives the values of the seed system.

use std::path::PathBuf;
use std::time::Duration;

use jobforge_schema::PipelinePhase;
use jobforge_schema::tenancy::TenancyConfig;

/// How a phase's task runs on the Nomad client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `raw_exec` driver: `git`, `buildah` and `skopeo` installed on the client (the dev stack).
    #[default]
    RawExec,
    /// `docker` driver: build and test run in [`RenderConfig::buildah_image`], publish in
    /// [`RenderConfig::skopeo_image`]; vfs storage, chroot isolation, never privileged.
    Docker,
}

/// The build phase's layer cache on the Nomad client (`build.cache` in `<prefix>/config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCache {
    /// Absolute directory on every client that runs builds; namespace `<ns>` keeps its store in
    /// `<root>/<ns>/<driver>/` (`storage`, `run`, `lock`). Checked by
    /// [`crate::config::KvConfig::parse`]: `/`-separated `[A-Za-z0-9._-]` segments, no `..`,
    /// so it is never text Nomad or the shell interpolates.
    pub root: String,
    /// Size in MB above which a build prunes its namespace's store (oldest images first); 0 =
    /// never pruned.
    pub max_size_mb: u64,
}

/// Default resources of one phase, used when the request names none (CPU in MHz, memory and
/// disk in MB; the schema's type, whose [`jobforge_schema::resolve`] applies them).
pub type PhaseDefaults = jobforge_schema::ResolvedResources;

/// Everything the renderer needs besides the request. Pure data; no I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderConfig {
    /// Task profile of every phase.
    pub profile: Profile,
    /// Nomad datacenters (`["*"]` = any).
    pub datacenters: Vec<String>,
    /// Nomad namespace of the jobs; `None` = the client's namespace.
    pub namespace: Option<String>,
    /// Nomad region of the jobs; `None` = the agent's region.
    pub region: Option<String>,
    /// Repository path component of temporary images:
    /// `<registry_url>/<registry_temp_prefix>/<image_name>/<namespace>/<name>:<name>-<generation>-a<attempt>`
    /// (see [`super::temp_image`]). Must differ from the final repository, because deleting a
    /// manifest by digest deletes every tag of that digest in the repository.
    pub registry_temp_prefix: String,
    /// Default resources of the build phase (seed: 1000 MHz, 2048 MB, 10240 MB disk).
    pub build_defaults: PhaseDefaults,
    /// Default resources of the test phase (seed: 500 MHz, 1024 MB, 2048 MB disk).
    pub test_defaults: PhaseDefaults,
    /// Default resources of the publish phase (seed: 500 MHz, 1024 MB, 2048 MB disk).
    pub publish_defaults: PhaseDefaults,
    /// Docker profile: image with `buildah`, `git` and `/bin/sh` for the build and test phases.
    pub buildah_image: String,
    /// Docker profile: image with `skopeo` and `/bin/sh` for the publish phase.
    pub skopeo_image: String,
    /// Docker profile: capabilities added to the buildah container (never `privileged`).
    pub docker_cap_add: Vec<String>,
    /// Docker profile: `network_mode` of the tool containers (`host` in the dev stack, whose
    /// registry and git server listen on loopback); `None` = the driver's default (`bridge`).
    pub docker_network_mode: Option<String>,
    /// Verify registry TLS (`--tls-verify`); `false` only for a loopback development registry.
    pub tls_verify: bool,
    /// buildah storage driver: `overlay`, `vfs` (works unprivileged and inside containers) or
    /// `auto` (the default: the build and test scripts probe overlay and fall back to vfs; see
    /// the prelude in [`super`]). The docker profile always uses `vfs` for `auto`.
    pub storage_driver: String,
    /// The per-namespace layer cache of the build phase (issue 19, `raw_exec` only; see
    /// [`super::build`]); `None` = every build starts from an empty, per-allocation store.
    pub build_cache: Option<BuildCache>,
    /// raw_exec: root of buildah storage (`<root>/storage`, `<root>/run`), for example
    /// `${NOMAD_ALLOC_DIR}/buildah` (Nomad interpolates it) or a shared directory that keeps the
    /// layer cache between builds. `None` = buildah's default for the agent's user.
    pub work_root: Option<PathBuf>,
    /// The tenancy rules (a copy of [`crate::config::EffectiveConfig::tenancy`]): a task of
    /// namespace `<ns>` that reads a secret gets the one Vault policy
    /// [`TenancyConfig::vault_policy_for`]`(<ns>)` (Nomad `vault` block), and the test task adds
    /// only those `spec.test.vault_policies` the namespace's allowlist holds.
    pub tenancy: TenancyConfig,
    /// Time between the kill signal and SIGKILL.
    pub kill_timeout: Duration,
    /// Log files kept per stream by Nomad.
    pub log_max_files: i32,
    /// Size of each log file in MB.
    pub log_max_file_size_mb: i32,
    /// Nomad job priority (1..=100) of requests that set no `spec.priority`; `None` = Nomad's
    /// default (50).
    pub priority: Option<i32>,
    /// Highest Nomad job priority a request of this namespace may have (the operator's
    /// `concurrency.namespaces.<ns>.max_priority` in `<prefix>/config`): a higher
    /// `spec.priority` is lowered to it. `None` = no cap below 100.
    pub max_priority: Option<i32>,
    /// Registry mirrors of base-image pulls in the build phase (`build.registry_mirrors` of
    /// `<prefix>/config`), rendered as the build's registries.conf ([`super::registries`]);
    /// empty = the client's own registries.conf.
    pub registry_mirrors: Vec<super::RegistryMirror>,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            profile: Profile::RawExec,
            datacenters: vec!["*".to_string()],
            namespace: None,
            region: None,
            registry_temp_prefix: "jobforge-tmp".to_string(),
            build_defaults: PhaseDefaults {
                cpu_mhz: 1000,
                memory_mb: 2048,
                disk_mb: 10240,
            },
            test_defaults: PhaseDefaults {
                cpu_mhz: 500,
                memory_mb: 1024,
                disk_mb: 2048,
            },
            publish_defaults: PhaseDefaults {
                cpu_mhz: 500,
                memory_mb: 1024,
                disk_mb: 2048,
            },
            buildah_image: "quay.io/buildah/stable:v1.37".to_string(),
            skopeo_image: "quay.io/skopeo/stable:v1.16".to_string(),
            docker_cap_add: vec!["SETUID".into(), "SETGID".into(), "SETFCAP".into()],
            docker_network_mode: None,
            tls_verify: true,
            storage_driver: "auto".to_string(),
            build_cache: None,
            work_root: None,
            tenancy: TenancyConfig::default(),
            kill_timeout: Duration::from_secs(30),
            log_max_files: 2,
            log_max_file_size_mb: 10,
            priority: None,
            max_priority: None,
            registry_mirrors: Vec::new(),
        }
    }
}

impl RenderConfig {
    /// The Nomad job priority of `spec`'s jobs: `spec.priority` lowered to
    /// [`RenderConfig::max_priority`], else [`RenderConfig::priority`].
    pub fn priority_of(&self, spec: &jobforge_schema::BuildSpec) -> Option<i32> {
        let requested = spec.priority.and_then(|p| i32::try_from(p).ok());
        match (requested, self.max_priority) {
            (Some(p), Some(max)) => Some(p.min(max)),
            (Some(p), None) => Some(p),
            (None, _) => self.priority,
        }
    }

    /// The default resources of `phase`.
    pub fn defaults_for(&self, phase: PipelinePhase) -> PhaseDefaults {
        match phase {
            PipelinePhase::Build => self.build_defaults,
            PipelinePhase::Test => self.test_defaults,
            PipelinePhase::Publish => self.publish_defaults,
        }
    }
}
