//! The BuildRequest document: desired state, written by clients at `<prefix>/requests/<namespace>/<name>`.
//!
//! Spec field names are the seed's `job_config` names (snake_case) so existing jobforge files keep
//! working; the envelope (`apiVersion`, `kind`, `metadata`) follows Kubernetes. Unknown fields are an
//! error everywhere (`deny_unknown_fields`), reported with their JSON path by [`crate::parse`].
//!
//! The **generation** of a request is not stored in the document: it is the Consul `ModifyIndex` of
//! the spec key, so every write of the spec is a new generation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only `apiVersion` this crate reads and writes.
pub const API_VERSION: &str = "jobforge/v1alpha1";
/// The only `kind` of a request document.
pub const KIND: &str = "BuildRequest";
/// Namespace used when a document does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A request to build, test and publish one container image.
///
/// Shape (YAML):
/// ```yaml
/// apiVersion: jobforge/v1alpha1
/// kind: BuildRequest
/// metadata: {name: myapp-42, namespace: team-a, labels: {app: myapp}}
/// spec: {owner: team-a, repo_url: ..., git_ref: main, image_name: myapp, registry_url: ...}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// Always `jobforge/v1alpha1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always `BuildRequest`.
    pub kind: String,
    /// Name, namespace and labels; name and namespace also form the KV key.
    pub metadata: ObjectMeta,
    /// What to build, test and publish.
    pub spec: BuildSpec,
}

/// Identity of a request: `namespace/name` is unique, and is the work-queue key of the controller.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectMeta {
    /// DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
    pub name: String,
    /// DNS label like `name`; `default` when absent.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Free-form labels used by `jobforge list -l` and `jobforge apply --prune -l`.
    /// Keys and values follow Kubernetes label syntax (validated).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// What to build. Field names are the seed's `job_config` names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Team or person the build belongs to (required; used by `list --owner` and `history --owner`).
    pub owner: String,
    /// Git repository to clone: `https://`, `http://`, `ssh://`, `git://`, `file://` or scp-like `git@host:path`.
    pub repo_url: String,
    /// Branch, tag or commit to build (required).
    pub git_ref: String,
    /// Vault KV v2 path of the git credentials (`username`/`password` or `ssh_key`), for example
    /// `secret/data/jobforge/team-a/git`: under the namespace's prefix (docs/tenancy.md). Never a
    /// secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_credentials_path: Option<String>,
    /// Containerfile path relative to the repository root; `Dockerfile` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_path: Option<String>,
    /// Build context relative to the repository root; `.` when absent. Never absolute, never `..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_context: Option<String>,
    /// Image repository name (OCI distribution path component(s)), for example `myapp` or `tools/myapp`.
    pub image_name: String,
    /// Final tags to publish; `[latest]` when empty. Each `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_tags: Vec<String>,
    /// Registry and optional path: `host[:port][/path]`, for example `registry.internal:5000/team-a`.
    pub registry_url: String,
    /// Vault KV v2 path of the registry credentials (`username`, `password`). Never a secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_credentials_path: Option<String>,
    /// Test phase; absent (or no entry point and no commands) means the test phase is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestSpec>,
    /// Nomad resources (MHz / MB) for all phases, with per-phase overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<ResourceLimits>,
    /// Deadline of the build phase as a humantime duration (`30m`); enforced by the controller,
    /// which stops the job and fails the request with reason `Timeout`. 1s ..= 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_timeout: Option<String>,
    /// Build arguments, as `--build-arg NAME=VALUE` for the Containerfile's `ARG` lines. Names
    /// `[A-Za-z_][A-Za-z0-9_]*`; values are data (never shell, template or Nomad-interpolated
    /// text), at most [`crate::validate::MAX_VALUE_BYTES`] bytes without control characters. At
    /// most [`crate::validate::MAX_MAP_ENTRIES`] entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
    /// Secrets for `RUN --mount=type=secret,id=<id>` steps, read from Vault by the build task and
    /// mounted from its secrets directory: never in argv, the environment, a layer or a log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_secrets: Vec<BuildSecret>,
    /// Stage of a multi-stage Containerfile to build (`--target`); the last stage when absent.
    /// `[A-Za-z][A-Za-z0-9_.-]{0,127}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Registry host (`host[:port]`) the base images are pulled from with
    /// `pull_credentials_path`; those credentials are given to this host only. Required with
    /// `pull_credentials_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_registry: Option<String>,
    /// Vault KV v2 path of the credentials (`username`, `password`) for base-image pulls from
    /// `pull_registry`. Never a secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_credentials_path: Option<String>,
    /// Check out git submodules (`git submodule update --init --recursive`) with the same
    /// host-bound credentials as the repository; `true` when absent (see
    /// [`BuildSpec::submodules`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submodules: Option<bool>,
    /// OCI image labels (config `Labels`, `--label KEY=VALUE`). Keys
    /// `[A-Za-z0-9][A-Za-z0-9._/-]{0,252}` (for example `org.opencontainers.image.source`);
    /// values as `build_args` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_labels: BTreeMap<String, String>,
    /// OCI manifest annotations (`--annotation KEY=VALUE`); keys and values as `image_labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_annotations: BTreeMap<String, String>,
    /// Start the build without the layer cache (the seed's `clear_cache`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_cache: bool,
    /// Whole-pipeline retries after a failure (not after an invalid spec or a cancel). 0 ..= 10.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// `true` stops every Nomad job of this request; the request ends `Cancelled`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancel: bool,
    /// How long a finished request (with its status and logs) is kept, humantime (`168h`);
    /// the controller's configured default (7 days) when absent. 1s ..= 8760h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<String>,
    /// Notifications about this request's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Order of this request among its namespace's waiting requests: higher starts first
    /// (equal priorities start in arrival order). 1 ..= 100; 50 when absent. Also the Nomad job
    /// priority of its jobs. An operator may cap it per namespace (`<prefix>/config`
    /// `concurrency.namespaces.<ns>.max_priority`); a higher value is lowered to that cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub priority: Option<u32>,
    /// Requests of one namespace with the same group supersede each other: when a newer one
    /// starts, older unfinished ones end `Cancelled` with reason `Superseded` (GitHub Actions'
    /// `cancel-in-progress`, Tekton TEP-0120). A DNS-label-like name, at most 63 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_group: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The test phase (the seed's `TestConfig`). Commands run inside the freshly built image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Shell command lines, each run as `/bin/sh -c <command>` inside the image, in order; the
    /// first non-zero exit fails the phase (`TestFailed`). Passed as one argv element, never spliced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Run the image's entry point / CMD as a test (exit 0 passes).
    #[serde(default, skip_serializing_if = "is_false")]
    pub entry_point: bool,
    /// Environment of the test commands. Names `[A-Za-z_][A-Za-z0-9_]*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Vault secrets exported into the test environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vault_secrets: Vec<VaultSecret>,
    /// Extra Vault policies the test task needs (passed to Nomad's `vault` block); only those the
    /// operator allowlists for the namespace (`tenancy.vault_policies_allowed`, docs/tenancy.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vault_policies: Vec<String>,
    /// Resources of the test phase; overrides `spec.resource_limits.test`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<PhaseResources>,
    /// Deadline of the test phase, humantime (`10m`); enforced by the controller. 1s ..= 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Run tests with the NVIDIA runtime (docker profile only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub gpu_required: bool,
    /// Number of GPUs (0 = all available); only with `gpu_required`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpu_count: u32,
    /// Extra Nomad constraints for placing the test job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
}

impl TestSpec {
    /// Whether this test spec runs anything (an entry point or at least one command).
    pub fn has_tests(&self) -> bool {
        self.entry_point || !self.commands.is_empty()
    }
}

/// A Vault KV v2 secret whose fields become environment variables: `{vault_field: ENV_NAME}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultSecret {
    /// Vault KV v2 path, for example `secret/data/aws/transcription`.
    pub path: String,
    /// Field mappings `{vault_field: ENV_VAR_NAME}`.
    pub fields: BTreeMap<String, String>,
}

/// A build secret: Vault field `field` of the KV v2 secret at `vault_path`, mounted for
/// `RUN --mount=type=secret,id=<id>` (Docker's and buildah's `--secret id=…,src=…`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSecret {
    /// The id `RUN --mount=type=secret,id=…` names: `[A-Za-z0-9_.-]+`, unique in the request.
    pub id: String,
    /// Vault KV v2 path under the namespace's prefix, for example
    /// `secret/data/jobforge/team-a/npm`. Never a secret value.
    pub vault_path: String,
    /// Field of that secret holding the value: `[A-Za-z0-9_.-]+`.
    pub field: String,
}

/// A Nomad constraint (`attribute operand value`), for example `${meta.gpu} = true`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// Node attribute, `${attr.*}`, `${meta.*}` or `${node.*}`.
    pub attribute: String,
    /// Expected value.
    #[serde(default)]
    pub value: String,
    /// Nomad operand: `=`, `!=`, `>`, `>=`, `<`, `<=`, `regexp`, `set_contains`, `version`,
    /// `semver`, `is_set`, `is_not_set`; `=` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operand: String,
}

/// Resources for all phases (the seed's legacy global `cpu`/`memory`/`disk`) with per-phase overrides.
/// Resolution per field: phase value, then global value, then the controller's default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU in MHz for every phase, as a decimal string (`"1000"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory in MB for every phase, as a decimal string (`"2048"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Ephemeral disk in MB for every phase, as a decimal string (`"10240"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Build phase override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<PhaseResources>,
    /// Test phase override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PhaseResources>,
    /// Publish phase override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PhaseResources>,
}

/// Resources of one phase; absent fields fall back to the global value, then to the default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseResources {
    /// CPU in MHz, decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory in MB, decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Ephemeral disk in MB, decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

/// Webhook notifications: a JSON POST signed with `X-Jobforge-Signature: sha256=<hex HMAC-SHA256>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://` URL to POST to.
    pub url: String,
    /// Vault KV v2 path whose `secret` field is the HMAC key. Unsigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_path: Option<String>,
    /// Extra request headers (names are HTTP tokens; values must not contain CR/LF).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Events to deliver; `[succeeded, failed]` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<WebhookEvent>,
}

/// Events a webhook can subscribe to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    /// The pipeline started (first build job registered).
    Started,
    /// Every phase transition (build → test → publish).
    Phase,
    /// The request ended `Succeeded`.
    Succeeded,
    /// The request ended `Failed`.
    Failed,
    /// The request ended `Cancelled`.
    Cancelled,
}

impl BuildRequest {
    /// A new request with the standard `apiVersion` and `kind`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, spec: BuildSpec) -> Self {
        BuildRequest {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: namespace.into(),
                labels: BTreeMap::new(),
            },
            spec,
        }
    }
}
