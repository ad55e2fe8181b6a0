//! The MCP tools: the seed's names (`submitJob`, `getStatus`, `getLogs`, `killJob`, `cleanup`,
//! `getHistory`) plus `listRequests`, each a thin call into the [`RequestStore`]. Arguments are
//! taken as a raw JSON object and decoded here (with the field path of any problem), so that bad
//! input becomes a tool result with `isError: true` an agent can read and fix, never a protocol
//! error. Input schemas come from the argument structs below; outputs are structured.

use std::collections::BTreeMap;
use std::sync::Arc;

use jobforge_client::store::{Blocking, StoreError, StoredRequest};
use jobforge_schema::seed::seed_job_from_value;
use jobforge_schema::validate::validate;
use jobforge_schema::{BuildRequest, BuildStatus, Phase, PipelinePhase, ResourceLimits, TestSpec};
use rmcp::handler::server::common::schema_for_type;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    JsonObject, ListResourceTemplatesResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, ResourceContents, ResourceTemplate,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ctx::Store;
use crate::output::{elapsed, step};
use crate::submit::generated_name;

/// State shared by every MCP session (the service factory runs once per session).
#[derive(Debug)]
pub struct Shared {
    /// The request store.
    pub store: Store,
    /// Namespace used when a tool call names none.
    pub default_namespace: String,
}

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
    /// Only this owner's requests.
    #[serde(default)]
    pub owner: Option<String>,
    /// Namespace; every namespace when absent.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Arguments of `listRequests`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Namespace; every namespace when absent.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Only this phase: Pending, Building, Testing, Publishing, Succeeded, Failed, Cancelled.
    #[serde(default)]
    pub phase: Option<String>,
    /// Only this owner's requests.
    #[serde(default)]
    pub owner: Option<String>,
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
    /// The requests.
    pub items: Vec<RequestSummary>,
}

fn summary(r: &StoredRequest) -> RequestSummary {
    let st = r.status.as_ref();
    RequestSummary {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        generation: r.generation,
        phase: r.phase(),
        step: step(r.phase(), st),
        elapsed: elapsed(st),
        owner: r.owner().to_string(),
        finished: r.phase().is_terminal(),
        message: st.and_then(|s| {
            s.failure
                .as_ref()
                .map(|f| format!("{}: {}", f.reason, f.message))
        }),
        invalid: r.request.as_ref().err().cloned(),
    }
}

/// Decodes tool arguments, naming the offending field on error.
pub fn decode<T: DeserializeOwned>(args: JsonObject) -> Result<T, String> {
    serde_path_to_error::deserialize(Value::Object(args)).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("invalid arguments: {}", e.inner())
        } else {
            format!("invalid argument `{path}`: {}", e.inner())
        }
    })
}

fn store_err(e: StoreError) -> String {
    match e {
        StoreError::NotFound { namespace, name } => format!(
            "request {namespace}/{name} not found; call listRequests to see existing requests"
        ),
        other => other.to_string(),
    }
}

/// Converts submitJob arguments into a validated request (pure; errors name the field path).
pub fn submit_request(mut args: JsonObject, default_ns: &str) -> Result<BuildRequest, String> {
    let take_str = |args: &mut JsonObject, k: &str| -> Result<Option<String>, String> {
        match args.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "invalid argument `{k}`: expected a string, got {other}"
            )),
        }
    };
    let name = take_str(&mut args, "name")?;
    let namespace = take_str(&mut args, "namespace")?.unwrap_or_else(|| default_ns.to_string());
    args.entry("git_ref")
        .or_insert_with(|| Value::String("main".into()));
    args.entry("owner")
        .or_insert_with(|| Value::String(namespace.clone()));
    let job = seed_job_from_value(&Value::Object(args)).map_err(|p| {
        let lines: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        format!("invalid job_config:\n{}", lines.join("\n"))
    })?;
    let spec = job.spec;
    let name = name.unwrap_or_else(|| generated_name(&spec));
    let req = BuildRequest::new(namespace, name, spec);
    validate(&req).map_err(|p| {
        let lines: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        format!("invalid request:\n{}", lines.join("\n"))
    })?;
    Ok(req)
}

/// The MCP server; one per session, all sharing [`Shared`].
#[derive(Debug, Clone)]
pub struct JobforgeMcp {
    shared: Arc<Shared>,
    tool_router: ToolRouter<Self>,
}

#[tool_router(router = tool_router)]
impl JobforgeMcp {
    /// A session's server over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        JobforgeMcp {
            shared,
            tool_router: Self::tool_router(),
        }
    }

    fn ns(&self, ns: Option<String>) -> String {
        ns.unwrap_or_else(|| self.shared.default_namespace.clone())
    }

    /// submitJob.
    #[tool(
        name = "submitJob",
        description = "Submit a container image build (build -> test -> publish). Arguments are the jobforge job_config fields (repo_url, image_name, registry_url required; git_ref defaults to main, owner to the namespace). Returns the request name; then call getStatus with it until finished is true, and getLogs if it failed. Fails if a request with the same name exists.",
        input_schema = schema_for_type::<SubmitJobArgs>()
    )]
    pub async fn submit_job(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<Submitted>, String> {
        let req = submit_request(args, &self.shared.default_namespace)?;
        let generation = self.shared.store.create(&req).await.map_err(store_err)?;
        Ok(Json(Submitted {
            namespace: req.metadata.namespace.clone(),
            name: req.metadata.name.clone(),
            generation,
            image_tags: req.spec.image_tags.clone(),
            next: format!(
                "call getStatus with name={} namespace={}",
                req.metadata.name, req.metadata.namespace
            ),
        }))
    }

    /// getStatus.
    #[tool(
        name = "getStatus",
        description = "Get the phase (Pending, Building, Testing, Publishing, Succeeded, Failed, Cancelled), pipeline step, elapsed time and full status of a build request. finished=true means the phase is final; on Failed, message says why and what to do next.",
        input_schema = schema_for_type::<RequestRef>()
    )]
    pub async fn get_status(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<StatusResult>, String> {
        let a: RequestRef = decode(args)?;
        let ns = self.ns(a.namespace);
        let r = self
            .shared
            .store
            .require(&ns, &a.name)
            .await
            .map_err(store_err)?;
        Ok(Json(StatusResult {
            summary: summary(&r),
            status: r.status.clone(),
        }))
    }

    /// getLogs.
    #[tool(
        name = "getLogs",
        description = "Get the captured log tail (last 64 KiB) of a build request's phases: build, test, publish. Give phase to get only one. Logs appear while phases run.",
        input_schema = schema_for_type::<LogsArgs>()
    )]
    pub async fn get_logs(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<LogsResult>, String> {
        let a: LogsArgs = decode(args)?;
        let ns = self.ns(a.namespace);
        let phases = match a.phase.as_deref() {
            Some(p) => vec![PipelinePhase::parse(p).ok_or_else(|| {
                format!(
                    "invalid argument `phase`: `{p}` is not a phase; use build, test or publish"
                )
            })?],
            None => PipelinePhase::ALL.to_vec(),
        };
        let r = self
            .shared
            .store
            .require(&ns, &a.name)
            .await
            .map_err(store_err)?;
        let mut logs = BTreeMap::new();
        for p in phases {
            let (_, text) = self
                .shared
                .store
                .logs(&ns, &a.name, p, Blocking::default())
                .await
                .map_err(store_err)?;
            if let Some(t) = text {
                logs.insert(p.as_str().to_string(), t);
            }
        }
        Ok(Json(LogsResult {
            namespace: ns,
            name: a.name,
            logs,
            phase: r.phase(),
        }))
    }

    /// killJob.
    #[tool(
        name = "killJob",
        description = "Cancel a build request: sets spec.cancel so the controller stops its Nomad jobs; the phase becomes Cancelled. Idempotent.",
        input_schema = schema_for_type::<RequestRef>()
    )]
    pub async fn kill_job(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<Done>, String> {
        let a: RequestRef = decode(args)?;
        let ns = self.ns(a.namespace);
        self.shared
            .store
            .cancel(&ns, &a.name)
            .await
            .map_err(store_err)?;
        Ok(Json(Done {
            namespace: ns,
            name: a.name,
            result: "cancel requested".into(),
        }))
    }

    /// cleanup.
    #[tool(
        name = "cleanup",
        description = "Delete a build request. The controller then stops its jobs and removes its status and logs; purge=true removes status and logs immediately.",
        input_schema = schema_for_type::<CleanupArgs>()
    )]
    pub async fn cleanup(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<Done>, String> {
        let a: CleanupArgs = decode(args)?;
        let ns = self.ns(a.namespace);
        self.shared
            .store
            .delete(&ns, &a.name, a.purge)
            .await
            .map_err(store_err)?;
        Ok(Json(Done {
            namespace: ns,
            name: a.name,
            result: "deleted".into(),
        }))
    }

    /// getHistory.
    #[tool(
        name = "getHistory",
        description = "List finished build requests (Succeeded, Failed, Cancelled), newest completion first, with paging (limit, offset) and an optional owner filter.",
        input_schema = schema_for_type::<HistoryArgs>()
    )]
    pub async fn get_history(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<RequestList>, String> {
        let a: HistoryArgs = decode(args)?;
        let limit = a.limit.unwrap_or(20);
        if !(1..=500).contains(&limit) {
            return Err(format!(
                "invalid argument `limit`: {limit} is outside 1..=500"
            ));
        }
        let page = self
            .shared
            .store
            .history(
                a.namespace.as_deref(),
                a.owner.as_deref(),
                limit,
                a.offset.unwrap_or(0),
            )
            .await
            .map_err(store_err)?;
        Ok(Json(RequestList {
            total: page.total,
            items: page.items.iter().map(summary).collect(),
        }))
    }

    /// listRequests.
    #[tool(
        name = "listRequests",
        description = "List build requests (running and finished) with their phase, optionally filtered by namespace, phase and owner; sorted by namespace and name.",
        input_schema = schema_for_type::<ListArgs>()
    )]
    pub async fn list_requests(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<RequestList>, String> {
        let a: ListArgs = decode(args)?;
        let phase = match a.phase.as_deref() {
            Some(p) => Some(Phase::parse(p).ok_or_else(|| {
                format!("invalid argument `phase`: `{p}` is not one of Pending, Building, Testing, Publishing, Succeeded, Failed, Cancelled")
            })?),
            None => None,
        };
        let items: Vec<RequestSummary> = self
            .shared
            .store
            .list(a.namespace.as_deref())
            .await
            .map_err(store_err)?
            .iter()
            .filter(|r| phase.is_none_or(|p| r.phase() == p))
            .filter(|r| a.owner.as_deref().is_none_or(|o| r.owner() == o))
            .map(summary)
            .collect();
        Ok(Json(RequestList {
            total: items.len(),
            items,
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for JobforgeMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
            .with_server_info(rmcp::model::Implementation::new(
                "jobforge",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "jobforge builds container images from git repositories (build, test, publish). \
                 Submit with submitJob, follow with getStatus until finished, read getLogs on failure, \
                 cancel with killJob, remove with cleanup. Resources: \
                 jobforge://requests/{namespace}/{name} (status JSON) and \
                 jobforge://logs/{namespace}/{name}/{phase} (log tail).",
            )
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(
                format!("{RESOURCE_SCHEME}requests/{{namespace}}/{{name}}"),
                "request-status",
            )
            .with_description(
                "Phase, step and full status of one build request (JSON, as getStatus returns).",
            )
            .with_mime_type("application/json"),
            ResourceTemplate::new(
                format!("{RESOURCE_SCHEME}logs/{{namespace}}/{{name}}/{{phase}}"),
                "request-logs",
            )
            .with_description(
                "Captured log tail of one phase (build, test or publish) of a build request.",
            )
            .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri;
        let not_found = |why: String| McpError::resource_not_found(why, None);
        let rest = uri
            .strip_prefix(RESOURCE_SCHEME)
            .ok_or_else(|| not_found(format!("{uri}: not a {RESOURCE_SCHEME} URI")))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let store = &self.shared.store;
        let text = match parts.as_slice() {
            ["requests", ns, name] => {
                let r = store
                    .get(ns, name)
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?
                    .ok_or_else(|| not_found(format!("request {ns}/{name} not found")))?;
                serde_json::to_string_pretty(&StatusResult {
                    summary: summary(&r),
                    status: r.status.clone(),
                })
                .map_err(|e| McpError::internal_error(e.to_string(), None))?
            }
            ["logs", ns, name, phase] => {
                let p = PipelinePhase::parse(phase).ok_or_else(|| {
                    not_found(format!(
                        "{phase} is not a phase; use build, test or publish"
                    ))
                })?;
                let (_, t) = store
                    .logs(ns, name, p, Blocking::default())
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                t.ok_or_else(|| not_found(format!("no {phase} logs for {ns}/{name} yet")))?
            }
            _ => return Err(not_found(format!("{uri}: unknown jobforge resource"))),
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, uri.clone())]).into())
    }
}

/// Scheme and authority of jobforge's MCP resources.
pub const RESOURCE_SCHEME: &str = "jobforge://";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn submit_accepts_the_seed_mcp_example_and_defaults_ref_and_owner() {
        let r = submit_request(
            obj(
                json!({"repo_url": "https://github.com/example/repo.git", "image_name": "myapp",
                "registry_url": "registry.example.com", "image_tags": ["latest", "v1.0.0"],
                "test_commands": ["npm test"], "name": "app-1"}),
            ),
            "default",
        )
        .unwrap();
        assert_eq!(r.metadata.name, "app-1");
        assert_eq!(r.spec.git_ref, "main");
        assert_eq!(r.spec.owner, "default");
        assert_eq!(r.spec.test.unwrap().commands, ["npm test"]);
    }

    #[test]
    fn submit_errors_name_the_field_path() {
        let e = submit_request(
            obj(
                json!({"repo_url": "https://h/r.git", "image_name": "app", "registry_url": "r:5000",
                "image_tags": ["ok", "Bad Tag!"]}),
            ),
            "default",
        )
        .unwrap_err();
        assert!(e.contains("image_tags[1]"), "{e}");
        let e = submit_request(obj(json!({"name": 3})), "default").unwrap_err();
        assert!(e.contains("`name`"), "{e}");
    }

    #[test]
    fn decode_names_unknown_and_mistyped_fields() {
        let e = decode::<RequestRef>(obj(json!({"name": "a", "nmespace": "x"}))).unwrap_err();
        assert!(e.contains("nmespace"), "{e}");
        let e = decode::<HistoryArgs>(obj(json!({"limit": "ten"}))).unwrap_err();
        assert!(e.contains("`limit`"), "{e}");
    }
}
