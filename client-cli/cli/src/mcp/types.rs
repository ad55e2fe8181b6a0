//! Argument and result types of the MCP tools. Their JSON Schemas (schemars) are the tools'
//! `inputSchema` / `outputSchema`; field docs become the schema descriptions agents read.

use std::collections::BTreeMap;

use jobforge_schema::{BuildStatus, Phase, ResourceLimits, TestSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Arguments of `submitJob`: the seed's flat `job_config` fields plus `name` and `namespace`.
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)] // Only its schema is used; the values are decoded by the seed conversion.
pub struct SubmitJobArgs {
    /// Request name (DNS label); default `<image_name>-<random>`.
    pub name: Option<String>,
    /// Namespace (DNS label); default the server's namespace.
    pub namespace: Option<String>,
    /// Team or person the build belongs to; default the namespace.
    pub owner: Option<String>,
    /// Git repository URL (https://, ssh://, git@host:path, file://).
    pub repo_url: String,
    /// Branch, tag or commit; default `main`.
    pub git_ref: Option<String>,
    /// Vault KV v2 path of git credentials (never a secret value).
    pub git_credentials_path: Option<String>,
    /// Containerfile path in the repository; default `Dockerfile`.
    pub dockerfile_path: Option<String>,
    /// Build context directory in the repository; default `.`.
    pub dockerfile_context: Option<String>,
    /// Image repository name, for example `myapp`.
    pub image_name: String,
    /// Tags to publish; default `[latest]`.
    pub image_tags: Option<Vec<String>>,
    /// Registry `host[:port][/path]`.
    pub registry_url: String,
    /// Vault KV v2 path of registry credentials.
    pub registry_credentials_path: Option<String>,
    /// Shell command lines run inside the built image as tests.
    pub test_commands: Option<Vec<String>>,
    /// Run the image's entry point as a test.
    pub test_entry_point: Option<bool>,
    /// Full test settings (env, timeout, vault secrets, ...), merged with test_commands/test_entry_point.
    pub test: Option<TestSpec>,
    /// CPU (MHz) / memory / disk (MB) for all phases, with per-phase overrides.
    pub resource_limits: Option<ResourceLimits>,
    /// Build deadline, humantime (`30m`).
    pub build_timeout: Option<String>,
    /// Build without the layer cache.
    pub clear_cache: Option<bool>,
    /// Whole-pipeline retries after a failure (0..=10).
    pub retries: Option<u32>,
    /// Keep the finished request this long (`168h`).
    pub ttl_after_finished: Option<String>,
    /// Webhook URL notified on success/failure.
    pub webhook_url: Option<String>,
    /// Extra webhook headers.
    pub webhook_headers: Option<BTreeMap<String, String>>,
    /// Notify on success (default true).
    pub webhook_on_success: Option<bool>,
    /// Notify on failure (default true).
    pub webhook_on_failure: Option<bool>,
}

/// Arguments naming one request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestRef {
    /// Request name, as returned by submitJob.
    pub name: String,
    /// Namespace; default the server's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Arguments of `getLogs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    /// Request name.
    pub name: String,
    /// Namespace; default the server's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `build`, `test` or `publish`; every phase with logs when absent.
    #[serde(default)]
    pub phase: Option<String>,
}

/// Arguments of `cleanup`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanupArgs {
    /// Request name.
    pub name: String,
    /// Namespace; default the server's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Also delete status and logs immediately (otherwise the controller does it).
    #[serde(default)]
    pub purge: bool,
}

/// Arguments of `verifyImage`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyImageArgs {
    /// Request name whose published image is verified (its `status.image.reference`).
    pub name: String,
    /// Namespace; default the server's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The public key (PKIX PEM); read from Vault (`VAULT_ADDR`, `VAULT_TOKEN` of the server)
    /// when absent.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// The transit key whose public key is read from Vault; `jobforge` when absent.
    #[serde(default)]
    pub transit_key: Option<String>,
    /// Mount of the transit engine; `transit` when absent.
    #[serde(default)]
    pub transit_mount: Option<String>,
    /// Talk plain HTTP to the registry (a loopback development registry).
    #[serde(default)]
    pub insecure_registry: bool,
}

/// Result of `verifyImage` (only when both the signature and the provenance verify; any
/// failure is a tool error saying which and why).
#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifyImageResult {
    /// `registry/path/name@sha256:<hex>` verified.
    pub image: String,
    /// The cosign signature verified against the key.
    pub signature: String,
    /// The SLSA v1 provenance verified against the key.
    pub provenance: String,
    /// The provenance summary `jobforge verify` prints (repository, commit, request, builder,
    /// times), one line per item.
    pub summary: String,
}

/// Arguments of `getHistory`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// Page size (1..=500); default 20.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Finished requests to skip; default 0.
    #[serde(default)]
    pub offset: Option<usize>,
    /// `next_cursor` of the previous page (instead of `offset`).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Only this owner's requests.
    #[serde(default)]
    pub owner: Option<String>,
    /// Namespace; every namespace in this server's scope when absent.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Arguments of `listRequests`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Namespace; every namespace in this server's scope when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only this phase: Pending, Building, Testing, Publishing, Succeeded, Failed, Cancelled.
    #[serde(default)]
    pub phase: Option<String>,
    /// Only this owner's requests.
    #[serde(default)]
    pub owner: Option<String>,
    /// Page size (1..=500); default 100.
    #[serde(default)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page; the first page when absent.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Result of `submitJob`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Submitted {
    /// Namespace.
    pub namespace: String,
    /// Name to pass to getStatus/getLogs/killJob/cleanup.
    pub name: String,
    /// Generation (spec ModifyIndex).
    pub generation: u64,
    /// Tags that will be published.
    pub image_tags: Vec<String>,
    /// What to do next.
    pub next: String,
}

/// Summary of one request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestSummary {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Generation (spec ModifyIndex).
    pub generation: u64,
    /// Effective phase (Pending until the controller observed this generation).
    pub phase: Phase,
    /// Pipeline step, e.g. `build 1/3`.
    pub step: String,
    /// Elapsed time since start.
    pub elapsed: String,
    /// spec.owner.
    pub owner: String,
    /// Whether the phase is final (Succeeded, Failed, Cancelled).
    pub finished: bool,
    /// Failure or cancellation message, with the next step to take.
    pub message: Option<String>,
    /// Decode error when the stored document is not a valid BuildRequest.
    pub invalid: Option<String>,
}

/// Result of `getStatus`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StatusResult {
    /// Summary.
    #[serde(flatten)]
    pub summary: RequestSummary,
    /// The full status document written by the controller.
    pub status: Option<BuildStatus>,
}

/// Result of `getLogs`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct LogsResult {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Log tail per phase (`build`, `test`, `publish`); phases without logs are absent.
    pub logs: BTreeMap<String, String>,
    /// Request phase when read.
    pub phase: Phase,
}

/// Result of `killJob` / `cleanup`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Done {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What happened.
    pub result: String,
}

/// Result of `getHistory` / `listRequests`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RequestList {
    /// Matching requests before paging.
    pub total: usize,
    /// The requests of this page.
    pub items: Vec<RequestSummary>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
