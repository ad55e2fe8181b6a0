//! The MCP tools: the seed's names (`submitJob`, `getStatus`, `getLogs`, `killJob`, `cleanup`,
//! `getHistory`) plus `listRequests`, each a thin call into the [`RequestStore`]. Arguments are
//! taken as a raw JSON object and decoded here (with the field path of any problem), so that bad
//! input becomes a tool result with `isError: true` an agent can read and fix, never a protocol
//! error. Input schemas come from the argument structs below; outputs are structured.
//!
//! Every call is confined to the caller's [`Scope`] (see [`super::scope`]): a namespace outside
//! it is a tool error naming it and the allowed ones; lists without a namespace read only the
//! namespaces in scope, at most [`MAX_PAGE`] items per page with a `next_cursor` to continue.
//! Every namespace and name is checked as a DNS label ([`check_request_ref`]) before any key is
//! built from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use jobforge_client::store::{Blocking, StoreError, StoredRequest, history_page};
use jobforge_schema::seed::seed_job_from_value;
use jobforge_schema::validate::validate;
use jobforge_schema::{BuildRequest, BuildStatus, Phase, PipelinePhase, check_request_ref};
use rmcp::handler::server::common::schema_for_type;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    Extensions, JsonObject, ListResourceTemplatesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ResourceContents,
    ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::de::DeserializeOwned;

use serde_json::Value;

use super::scope::Scope;
use super::types::*;
use crate::ctx::Store;
use crate::output::{elapsed, step};
use crate::submit::generated_name;

/// State shared by every MCP session (the service factory runs once per session).
#[derive(Debug)]
pub struct Shared {
    /// The request store.
    pub store: Store,
    /// Namespace used when a tool call names none (if in scope; else the first in scope).
    pub default_namespace: String,
    /// The scope of calls that carry none of their own (stdio; see [`super::scope`]).
    pub scope: Scope,
}

/// Most items one page of `listRequests` / `getHistory` holds.
pub const MAX_PAGE: usize = 500;
/// Page size of `listRequests` when the call gives no `limit`.
pub const DEFAULT_LIST_PAGE: usize = 100;
/// Page size of `getHistory` when the call gives no `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 20;

/// `limit` checked against `1..=MAX_PAGE`.
fn page_size(limit: Option<usize>, default: usize) -> Result<usize, String> {
    let limit = limit.unwrap_or(default);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(format!(
            "invalid argument `limit`: {limit} is outside 1..={MAX_PAGE}"
        ));
    }
    Ok(limit)
}

/// One page of `items` (sorted by namespace, name) after `cursor` (`namespace/name` of the
/// last item of the previous page), and the cursor of the next page when more remain.
pub fn page_after(
    items: Vec<StoredRequest>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<StoredRequest>, Option<String>), String> {
    let after = match cursor {
        None => None,
        Some(c) => Some(c.split_once('/').ok_or_else(|| {
            format!("invalid argument `cursor`: `{c}` is not a cursor returned as next_cursor")
        })?),
    };
    let mut rest: Vec<StoredRequest> = items
        .into_iter()
        .filter(|r| after.is_none_or(|(ns, n)| (r.namespace.as_str(), r.name.as_str()) > (ns, n)))
        .collect();
    let more = rest.len() > limit;
    rest.truncate(limit);
    let next = more
        .then(|| rest.last().map(|r| format!("{}/{}", r.namespace, r.name)))
        .flatten();
    Ok((rest, next))
}

/// The scope of the call whose context extensions are `ext`: over HTTP the one the bearer-token
/// layer attached to the HTTP request (none attached: no namespace at all, fail closed); on
/// stdio the server's.
fn scope_of(ext: &Extensions, server: &Scope) -> Scope {
    match ext.get::<axum::http::request::Parts>() {
        Some(parts) => parts
            .extensions
            .get::<Scope>()
            .cloned()
            .unwrap_or_else(|| Scope::Only(Default::default())),
        None => server.clone(),
    }
}

/// Rewrites the CLI commands the controller suggests in its messages (`` `jobforge logs app -n
/// team-a --phase test` ``) into the tool call an agent makes (`getLogs with name=app
/// namespace=team-a phase=test`). The controller writes one status for every client and words
/// its hints for people at a shell; agents cannot run them. Commands without a tool counterpart
/// are left as they are.
pub fn for_agents(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("`jobforge ") {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        let command = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        match tool_call(command) {
            Some(call) => out.push_str(&call),
            None => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// `jobforge CMD NAME [-n NS] [--phase P] [--follow]` → `TOOL with name=NAME namespace=NS ...`.
fn tool_call(command: &str) -> Option<String> {
    let mut words = command.split_whitespace().skip(1);
    let tool = match words.next()? {
        "logs" => "getLogs",
        "get" | "watch" => "getStatus",
        "cancel" => "killJob",
        "delete" => "cleanup",
        "submit" => return Some("submitJob with the corrected fields".into()),
        _ => return None,
    };
    let mut args = Vec::new();
    let mut name = None;
    while let Some(w) = words.next() {
        match w {
            "-n" | "--namespace" => args.push(format!("namespace={}", words.next()?)),
            "--phase" => args.push(format!("phase={}", words.next()?)),
            "--follow" | "-f" => {}
            w if w.starts_with('-') => return None,
            w if name.is_none() => name = Some(w),
            _ => return None,
        }
    }
    let name = name?;
    Some(
        format!("{tool} with name={name} {}", args.join(" "))
            .trim_end()
            .to_string(),
    )
}

/// A status with every message in [`for_agents`] wording.
fn status_for_agents(status: &BuildStatus) -> BuildStatus {
    let mut st = status.clone();
    for c in &mut st.conditions {
        c.message = for_agents(&c.message);
    }
    if let Some(f) = &mut st.failure {
        f.message = for_agents(&f.message);
    }
    st
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
                .map(|f| format!("{}: {}", f.reason, for_agents(&f.message)))
        }),
        invalid: r.invalid_message().map(|m| for_agents(&m)),
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

/// A store error in tool terms (the store's own messages name CLI flags such as `--replace`).
fn store_err(e: StoreError) -> String {
    match e {
        StoreError::NotFound { namespace, name } => format!(
            "request {namespace}/{name} not found; call listRequests to see existing requests"
        ),
        StoreError::AlreadyExists { namespace, name } => format!(
            "request {namespace}/{name} already exists; call submitJob with another name, or cleanup it first"
        ),
        StoreError::Conflict {
            namespace, name, ..
        } => {
            format!("request {namespace}/{name} changed concurrently; call getStatus and try again")
        }
        StoreError::InvalidRef(e) => format!("invalid argument: {e}"),
        other => for_agents(&other.to_string()),
    }
}

/// The answer of submitJob: the tags are the ones that will be published
/// ([`BuildSpec::effective_tags`](jobforge_schema::BuildSpec::effective_tags): `[latest]` when
/// the request names none), not the (possibly empty) list written.
pub fn submitted(req: &BuildRequest, generation: u64) -> Submitted {
    Submitted {
        namespace: req.metadata.namespace.clone(),
        name: req.metadata.name.clone(),
        generation,
        image_tags: req.spec.effective_tags(),
        next: format!(
            "call getStatus with name={} namespace={}",
            req.metadata.name, req.metadata.namespace
        ),
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

    fn scope(&self, ext: &Extensions) -> Scope {
        scope_of(ext, &self.shared.scope)
    }

    /// The namespace of a call naming `ns` and `name`: in scope, and both DNS labels.
    fn target(&self, ext: &Extensions, ns: Option<String>, name: &str) -> Result<String, String> {
        let ns = self
            .scope(ext)
            .resolve(ns, &self.shared.default_namespace)?;
        check_request_ref(&ns, name).map_err(|e| format!("invalid argument: {e}"))?;
        Ok(ns)
    }

    /// Every stored request of the namespaces a listing covers (see [`Scope::list_targets`]),
    /// sorted by namespace and name.
    async fn list_in_scope(
        &self,
        ext: &Extensions,
        ns: Option<&str>,
    ) -> Result<Vec<StoredRequest>, String> {
        let store = &self.shared.store;
        match self.scope(ext).list_targets(ns)? {
            None => store.list(None).await.map_err(store_err),
            Some(namespaces) => {
                let mut all = Vec::new();
                for ns in namespaces {
                    all.extend(store.list(Some(&ns)).await.map_err(store_err)?);
                }
                Ok(all)
            }
        }
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
        ext: Extensions,
    ) -> Result<Json<Submitted>, String> {
        let scope = self.scope(&ext);
        let default = scope
            .resolve(None, &self.shared.default_namespace)
            .unwrap_or_else(|_| self.shared.default_namespace.clone());
        let req = submit_request(args, &default)?;
        scope.check(&req.metadata.namespace)?;
        let generation = self.shared.store.create(&req).await.map_err(store_err)?;
        Ok(Json(submitted(&req, generation)))
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
        ext: Extensions,
    ) -> Result<Json<StatusResult>, String> {
        let a: RequestRef = decode(args)?;
        let ns = self.target(&ext, a.namespace, &a.name)?;
        let r = self
            .shared
            .store
            .require(&ns, &a.name)
            .await
            .map_err(store_err)?;
        Ok(Json(StatusResult {
            summary: summary(&r),
            status: r.status.as_ref().map(status_for_agents),
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
        ext: Extensions,
    ) -> Result<Json<LogsResult>, String> {
        let a: LogsArgs = decode(args)?;
        let ns = self.target(&ext, a.namespace, &a.name)?;
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
        description = "Cancel a build request: sets spec.cancel so the controller stops its Nomad jobs; the phase becomes Cancelled. Idempotent. A request that already finished (Succeeded, Failed, Cancelled) is left unchanged and result says so (for example \"already Succeeded; nothing to cancel\").",
        input_schema = schema_for_type::<RequestRef>()
    )]
    pub async fn kill_job(
        &self,
        Parameters(args): Parameters<JsonObject>,
        ext: Extensions,
    ) -> Result<Json<Done>, String> {
        let a: RequestRef = decode(args)?;
        let ns = self.target(&ext, a.namespace, &a.name)?;
        let outcome = self
            .shared
            .store
            .cancel(&ns, &a.name)
            .await
            .map_err(store_err)?;
        Ok(Json(Done {
            namespace: ns,
            name: a.name,
            result: outcome.message(),
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
        ext: Extensions,
    ) -> Result<Json<Done>, String> {
        let a: CleanupArgs = decode(args)?;
        let ns = self.target(&ext, a.namespace, &a.name)?;
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

    /// verifyImage.
    #[tool(
        name = "verifyImage",
        description = "Verify the image a build request published: its cosign signature and its SLSA v1 provenance, against the Vault transit public key (or public_key_pem). Succeeds only when both verify, with the provenance summary (repository, commit, request, builder, times); otherwise the error says which artifact failed and why. Only images of requests in this server's scope.",
        input_schema = schema_for_type::<VerifyImageArgs>()
    )]
    pub async fn verify_image(
        &self,
        Parameters(args): Parameters<JsonObject>,
        ext: Extensions,
    ) -> Result<Json<VerifyImageResult>, String> {
        let a: VerifyImageArgs = decode(args)?;
        let ns = self.target(&ext, a.namespace, &a.name)?;
        let r = self
            .shared
            .store
            .require(&ns, &a.name)
            .await
            .map_err(store_err)?;
        // Only what jobforge published for a request in scope: the tool never fetches an
        // address the caller chose.
        let image = r
            .status
            .as_ref()
            .and_then(|s| s.image.as_ref())
            .map(|i| i.reference.clone())
            .filter(|reference| reference.contains("@sha256:"))
            .ok_or_else(|| {
                format!(
                    "{ns}/{}: no published image yet (status.image.reference is empty)",
                    a.name
                )
            })?;
        let pem = match a.public_key_pem {
            Some(p) => p,
            None => crate::verify::transit_public_key(
                a.transit_mount.as_deref().unwrap_or("transit"),
                a.transit_key.as_deref().unwrap_or("jobforge"),
            )
            .await
            .map_err(|e| e.to_string())?,
        };
        let v = crate::verify::verify(&image, &pem, !a.insecure_registry)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Json(VerifyImageResult {
            image: format!("{}@{}", v.repository, v.digest),
            signature: "verified".into(),
            provenance: "verified (SLSA v1)".into(),
            summary: jobforge_controller::supply_chain::verify::summary(&v),
        }))
    }

    /// getHistory.
    #[tool(
        name = "getHistory",
        description = "List finished build requests (Succeeded, Failed, Cancelled) of the namespaces in this server's scope, newest completion first, with an optional owner filter. Paged: limit (1..=500, default 20) and offset; pass next_cursor of a result as cursor to get the next page (null when there is none).",
        input_schema = schema_for_type::<HistoryArgs>()
    )]
    pub async fn get_history(
        &self,
        Parameters(args): Parameters<JsonObject>,
        ext: Extensions,
    ) -> Result<Json<RequestList>, String> {
        let a: HistoryArgs = decode(args)?;
        let limit = page_size(a.limit, DEFAULT_HISTORY_PAGE)?;
        let offset = match (&a.cursor, a.offset) {
            (Some(_), Some(_)) => {
                return Err("give either `cursor` or `offset`, not both".to_string());
            }
            (Some(c), None) => c.parse::<usize>().map_err(|_| {
                format!("invalid argument `cursor`: `{c}` is not a cursor returned as next_cursor")
            })?,
            (None, o) => o.unwrap_or(0),
        };
        let all = self.list_in_scope(&ext, a.namespace.as_deref()).await?;
        let page = history_page(all, a.owner.as_deref(), limit, offset);
        let end = offset.saturating_add(page.items.len());
        Ok(Json(RequestList {
            total: page.total,
            items: page.items.iter().map(summary).collect(),
            next_cursor: (end < page.total).then(|| end.to_string()),
        }))
    }

    /// listRequests.
    #[tool(
        name = "listRequests",
        description = "List build requests (running and finished) with their phase, in the namespaces of this server's scope, optionally filtered by namespace, phase and owner; sorted by namespace and name. Paged: limit (1..=500, default 100); pass next_cursor of a result as cursor to get the next page (null when there is none).",
        input_schema = schema_for_type::<ListArgs>()
    )]
    pub async fn list_requests(
        &self,
        Parameters(args): Parameters<JsonObject>,
        ext: Extensions,
    ) -> Result<Json<RequestList>, String> {
        let a: ListArgs = decode(args)?;
        let limit = page_size(a.limit, DEFAULT_LIST_PAGE)?;
        let phase = match a.phase.as_deref() {
            Some(p) => Some(Phase::parse(p).ok_or_else(|| {
                format!("invalid argument `phase`: `{p}` is not one of Pending, Building, Testing, Publishing, Succeeded, Failed, Cancelled")
            })?),
            None => None,
        };
        let matching: Vec<StoredRequest> = self
            .list_in_scope(&ext, a.namespace.as_deref())
            .await?
            .into_iter()
            .filter(|r| phase.is_none_or(|p| r.phase() == p))
            .filter(|r| a.owner.as_deref().is_none_or(|o| r.owner() == o))
            .collect();
        let total = matching.len();
        let (items, next_cursor) = page_after(matching, a.cursor.as_deref(), limit)?;
        Ok(Json(RequestList {
            total,
            items: items.iter().map(summary).collect(),
            next_cursor,
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
                 cancel with killJob, remove with cleanup; find requests with listRequests (all) or \
                 getHistory (finished ones); check a published image's signature and provenance with \
                 verifyImage. Resources: \
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
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let scope = self.scope(&context.extensions);
        let uri = request.uri;
        let not_found = |why: String| McpError::resource_not_found(why, None);
        let rest = uri
            .strip_prefix(RESOURCE_SCHEME)
            .ok_or_else(|| not_found(format!("{uri}: not a {RESOURCE_SCHEME} URI")))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let store = &self.shared.store;
        let in_scope = |ns: &str, name: &str| -> Result<(), McpError> {
            scope
                .check(ns)
                .and_then(|()| check_request_ref(ns, name).map_err(|e| e.to_string()))
                .map_err(|why| McpError::invalid_params(format!("{uri}: {why}"), None))
        };
        let text = match parts.as_slice() {
            ["requests", ns, name] => {
                in_scope(ns, name)?;
                let r = store
                    .get(ns, name)
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?
                    .ok_or_else(|| not_found(format!("request {ns}/{name} not found")))?;
                serde_json::to_string_pretty(&StatusResult {
                    summary: summary(&r),
                    status: r.status.as_ref().map(status_for_agents),
                })
                .map_err(|e| McpError::internal_error(e.to_string(), None))?
            }
            ["logs", ns, name, phase] => {
                in_scope(ns, name)?;
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
    fn submit_answers_the_tags_that_will_be_published() {
        let r = submit_request(
            obj(json!({"repo_url": "https://h/r.git", "image_name": "app", "registry_url": "r:5000"})),
            "default",
        )
        .unwrap();
        assert_eq!(submitted(&r, 7).image_tags, ["latest"]);
    }

    #[test]
    fn controller_hints_become_tool_calls() {
        // The controller's own wording (controller/src/machine/rules).
        let msg = "test exited 1. Read `jobforge logs app -n team-a --phase test`; cancel with \
                   `jobforge cancel app -n team-a`, follow with `jobforge watch app -n team-a`";
        assert_eq!(
            for_agents(msg),
            "test exited 1. Read getLogs with name=app namespace=team-a phase=test; cancel with \
             killJob with name=app namespace=team-a, follow with getStatus with name=app namespace=team-a"
        );
        assert_eq!(
            for_agents("run `jobforge logs app -n t --phase build --follow` or `kubectl get`"),
            "run getLogs with name=app namespace=t phase=build or `kubectl get`"
        );
        assert_eq!(
            for_agents("`jobforge version-info` stays"),
            "`jobforge version-info` stays"
        );
        let r = StoredRequest {
            namespace: "team-a".into(),
            name: "app".into(),
            request: Err("x".into()),
            generation: 3,
            status: Some(BuildStatus {
                observed_generation: 3,
                phase: Phase::Failed,
                failure: Some(jobforge_schema::Failure {
                    phase: None,
                    reason: jobforge_schema::Reason::InvalidSpec,
                    message: "invalid. Fix it and submit again with `jobforge submit FILE`".into(),
                }),
                ..Default::default()
            }),
        };
        let s = summary(&r);
        let m = s.message.unwrap();
        assert!(
            m.contains("submitJob") && !m.contains("jobforge submit"),
            "{m}"
        );
        assert!(!s.invalid.unwrap().contains("jobforge submit"));
    }

    #[test]
    fn decode_names_unknown_and_mistyped_fields() {
        let e = decode::<RequestRef>(obj(json!({"name": "a", "nmespace": "x"}))).unwrap_err();
        assert!(e.contains("nmespace"), "{e}");
        let e = decode::<HistoryArgs>(obj(json!({"limit": "ten"}))).unwrap_err();
        assert!(e.contains("`limit`"), "{e}");
    }
}
