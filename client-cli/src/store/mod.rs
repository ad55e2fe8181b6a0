//! The typed BuildRequest store: what the CLI, the MCP facade and GitOps `apply` use to read and
//! write the KV records of `docs/consul-nomad-vault-semantics.md` § "The BuildRequest document"
//! under a [`KeyLayout`].
//!
//! The store talks to KV through the small [`Kv`] trait so that its logic (create-only writes,
//! CAS replace, cancel read-modify-write, history ordering) is tested without a server
//! ([`memory::MemoryKv`]) and served in production by our Consul client (see [`consul_kv`]).
//!
//! Every namespace and name it is given is checked first with
//! [`jobforge_schema::check_request_ref`] (both DNS labels; [`StoreError::InvalidRef`] otherwise),
//! so no input can build a key outside its own `requests/<ns>/<name>` (a `..` or a `/` never
//! reaches Consul); keys read back from listings are parsed by the same rule
//! ([`KeyLayout::parse_request_key`]).
//!
//! Rules it follows (Consul KV, `/v1/kv` endpoint docs):
//! - create is `PUT ?cas=0` (succeeds only when the key does not exist);
//! - replace and cancel are `PUT ?cas=<ModifyIndex>`; a `false` answer means somebody else wrote
//!   in between: replace reports [`StoreError::Conflict`], cancel re-reads and retries;
//! - the generation of a request is its spec key's `ModifyIndex` (the value written is never
//!   counted by hand);
//! - `delete` removes the spec key only: the controller notices the missing spec, stops the
//!   Nomad jobs and deletes the status and log keys. Without a running controller the status and
//!   logs stay until one runs (or `jobforge delete --purge` removes them too).

pub mod consul_kv;
pub mod memory;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use jobforge_schema::{
    BuildRequest, BuildStatus, KeyLayout, Phase, PipelinePhase, RefError, check_namespace,
    check_request_ref,
};
use serde::Serialize;

/// One KV entry as the store needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Full key.
    pub key: String,
    /// Raw value bytes.
    pub value: Vec<u8>,
    /// Consul `ModifyIndex` of the entry.
    pub modify_index: u64,
}

/// Blocking-query parameters: wait until the index of the answer passes `index`, at most `wait`.
/// `index == 0` answers at once (Consul `?index=&wait=` semantics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocking {
    /// Last index seen (`X-Consul-Index`); 0 = do not block.
    pub index: u64,
    /// Longest wait; Consul caps it at 10 minutes and adds up to wait/16 jitter.
    pub wait: Option<Duration>,
}

/// Errors of a KV backend.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The KV server could not be reached (connection refused, DNS, TLS, timeout).
    #[error("cannot reach Consul at {addr}: {message} (set CONSUL_HTTP_ADDR or --consul-addr)")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// Consul's ACL system refused the call (HTTP 403): the token in use may not touch `key`.
    #[error(
        "Consul refused to {op} {key}: the ACL token in use (CONSUL_HTTP_TOKEN or --token) lacks \
         key:{permission} permission on it (HTTP 403: {detail})"
    )]
    Denied {
        /// What was tried: `read`, `list`, `write` or `delete`.
        op: &'static str,
        /// The key (or prefix, for a listing).
        key: String,
        /// The ACL permission that is missing: `read`, `list` or `write`.
        permission: &'static str,
        /// Consul's own words (`Permission denied: token with AccessorID ... lacks permission ...`).
        detail: String,
    },
    /// The server answered with an error (bad request, 5xx).
    #[error("Consul error: {0}")]
    Server(String),
    /// The connection settings are unusable (an address that does not parse).
    #[error("Consul settings: {0} (check CONSUL_HTTP_ADDR or --consul-addr)")]
    Config(String),
}

/// The KV operations the store needs. Implemented for our Consul client and for an in-memory map.
pub trait Kv: Send + Sync {
    /// Reads one key: `(X-Consul-Index, entry)`; the index is returned also when the key is missing.
    fn get(
        &self,
        key: &str,
        blocking: Blocking,
    ) -> impl Future<Output = Result<(u64, Option<KvEntry>), KvError>> + Send;
    /// Reads every key below `prefix` (recursive), sorted by key.
    fn list(
        &self,
        prefix: &str,
        blocking: Blocking,
    ) -> impl Future<Output = Result<(u64, Vec<KvEntry>), KvError>> + Send;
    /// Writes `key`; with `cas = Some(i)` only when its ModifyIndex is `i` (0 = create-only).
    /// `Ok(false)` when the CAS check failed.
    fn put(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u64>,
    ) -> impl Future<Output = Result<bool, KvError>> + Send;
    /// Deletes `key` (or every key below it with `recurse`); with `cas` only at that ModifyIndex.
    fn delete(
        &self,
        key: &str,
        cas: Option<u64>,
        recurse: bool,
    ) -> impl Future<Output = Result<bool, KvError>> + Send;
}

/// Errors of [`RequestStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// KV failure (see [`KvError`]).
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A namespace or name that is not a DNS label (it would not name one request's key).
    #[error("invalid request reference: {0}")]
    InvalidRef(#[from] RefError),
    /// `create` found the key already present.
    #[error("request {namespace}/{name} already exists (use --replace to write a new generation)")]
    AlreadyExists {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// No request (spec key) with that namespace and name.
    #[error("request {namespace}/{name} not found")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A CAS write lost against a concurrent writer.
    #[error(
        "request {namespace}/{name} changed concurrently (expected generation {expected}); re-read and retry"
    )]
    Conflict {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The generation the write expected.
        expected: u64,
    },
    /// The stored spec is not a valid BuildRequest document (cancel cannot rewrite it).
    #[error("request {namespace}/{name} holds an invalid document: {message}")]
    Invalid {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The decoding error.
        message: String,
    },
    /// A document could not be serialized (should not happen for our types).
    #[error("cannot encode request: {0}")]
    Encode(String),
}

impl StoreError {
    /// Whether the error means the KV server was unreachable (the CLI exits 2 for those).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Kv(KvError::Unreachable { .. }))
    }
}

/// A request as stored: the decoded document (or why it did not decode), its generation and the
/// controller's status, if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRequest {
    /// Namespace (from the key).
    pub namespace: String,
    /// Name (from the key).
    pub name: String,
    /// The document, or why a spec written by hand is not a BuildRequest: the problems
    /// [`jobforge_schema::parse_request`] reports, joined by `; ` (see
    /// [`StoredRequest::invalid_message`] for the text to show).
    #[serde(serialize_with = "ser_request")]
    pub request: Result<BuildRequest, String>,
    /// The spec key's ModifyIndex.
    pub generation: u64,
    /// The status document, when the controller wrote one (and it decoded).
    pub status: Option<BuildStatus>,
}

fn ser_request<S: serde::Serializer>(
    r: &Result<BuildRequest, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Invalid<'a> {
        invalid: &'a str,
    }
    match r {
        Ok(req) => req.serialize(s),
        Err(e) => Invalid { invalid: e }.serialize(s),
    }
}

impl StoredRequest {
    /// The phase to display: the status phase when the status describes this generation,
    /// `Pending` otherwise (the controller has not caught up yet).
    pub fn phase(&self) -> Phase {
        match &self.status {
            Some(s) if s.observed_generation == self.generation => s.phase,
            _ => Phase::Pending,
        }
    }

    /// Why the stored document is not a usable BuildRequest, worded as the controller words it,
    /// for every client (`get`, `list`, MCP): the controller's failure message when its status
    /// for this generation has one, else the problems of [`jobforge_schema::parse_request`] (what
    /// the controller parses the spec with) joined by `; `. `None` for a document that decodes.
    pub fn invalid_message(&self) -> Option<String> {
        let problems = self.request.as_ref().err()?;
        let from_status = self
            .status
            .as_ref()
            .filter(|s| s.observed_generation == self.generation)
            .and_then(|s| s.failure.as_ref())
            .map(|f| f.message.clone());
        Some(from_status.unwrap_or_else(|| problems.clone()))
    }

    /// The owner (`spec.owner`), empty for an invalid document.
    pub fn owner(&self) -> &str {
        self.request
            .as_ref()
            .map(|r| r.spec.owner.as_str())
            .unwrap_or("")
    }

    /// The labels, empty for an invalid document.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.request
            .as_ref()
            .map(|r| r.metadata.labels.clone())
            .unwrap_or_default()
    }
}

/// A `key=value[,key=value]` label selector (equality only, every term must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<(String, String)>);

impl LabelSelector {
    /// Parses `a=b,c=d` (also `a==b`). Errors name the bad term.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| format!("selector term `{term}` is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(format!("selector term `{term}` has an empty key"));
            }
            terms.push((k.to_string(), v.to_string()));
        }
        Ok(LabelSelector(terms))
    }

    /// Whether `labels` satisfy every term (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// One page of finished requests, newest `completionTime` first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    /// Finished requests in this page.
    pub items: Vec<StoredRequest>,
    /// How many finished requests matched in total (before paging).
    pub total: usize,
}

/// What [`RequestStore::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// `spec.cancel` was set; `generation` is the new generation.
    Requested {
        /// The generation written.
        generation: u64,
    },
    /// `spec.cancel` was already set; nothing was written.
    AlreadyRequested {
        /// The current generation.
        generation: u64,
    },
    /// The current generation has finished; nothing was written.
    Finished {
        /// The current generation.
        generation: u64,
        /// Its final phase (Succeeded, Failed or Cancelled).
        phase: Phase,
    },
}

impl CancelOutcome {
    /// The generation after the call.
    pub fn generation(&self) -> u64 {
        match *self {
            CancelOutcome::Requested { generation }
            | CancelOutcome::AlreadyRequested { generation }
            | CancelOutcome::Finished { generation, .. } => generation,
        }
    }

    /// One line for people and agents: `cancel requested`, `cancel already requested`, or
    /// `already Succeeded; nothing to cancel`.
    pub fn message(&self) -> String {
        match self {
            CancelOutcome::Requested { .. } => "cancel requested".into(),
            CancelOutcome::AlreadyRequested { .. } => "cancel already requested".into(),
            CancelOutcome::Finished { phase, .. } => {
                format!("already {phase}; nothing to cancel")
            }
        }
    }
}

/// Typed access to BuildRequests in KV.
#[derive(Debug, Clone)]
pub struct RequestStore<K> {
    kv: K,
    keys: KeyLayout,
}

/// How many times `cancel` re-reads and retries after losing a CAS race.
const CANCEL_ATTEMPTS: usize = 8;

impl<K: Kv> RequestStore<K> {
    /// A store over `kv` with the key layout `keys`.
    pub fn new(kv: K, keys: KeyLayout) -> Self {
        RequestStore { kv, keys }
    }

    /// The key layout in use.
    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// The KV backend.
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// `<prefix>/requests/<ns>/<name>` after [`check_request_ref`]: the one way the store builds a
    /// key from a namespace and a name it was given.
    fn request_key(&self, ns: &str, name: &str) -> Result<String, StoreError> {
        check_request_ref(ns, name)?;
        Ok(self.keys.request_key(ns, name))
    }

    fn encode(req: &BuildRequest) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec_pretty(req).map_err(|e| StoreError::Encode(e.to_string()))
    }

    /// Writes a new request, create-only (`?cas=0`). Returns its generation.
    ///
    /// Errors: [`StoreError::AlreadyExists`] when the key exists; KV errors.
    pub async fn create(&self, req: &BuildRequest) -> Result<u64, StoreError> {
        let (ns, name) = (&req.metadata.namespace, &req.metadata.name);
        let key = self.request_key(ns, name)?;
        if !self.kv.put(&key, &Self::encode(req)?, Some(0)).await? {
            return Err(StoreError::AlreadyExists {
                namespace: ns.clone(),
                name: name.clone(),
            });
        }
        self.generation_of(&key, ns, name).await
    }

    /// Writes `req` as a new generation. With `expected = Some(g)` only if the current generation
    /// is `g` ([`StoreError::Conflict`] otherwise); with `None` it writes over whatever is there
    /// (CAS on the ModifyIndex just read, or create-only when missing), retrying once per race
    /// up to a few times. Returns the new generation.
    pub async fn replace(
        &self,
        req: &BuildRequest,
        expected: Option<u64>,
    ) -> Result<u64, StoreError> {
        let (ns, name) = (&req.metadata.namespace, &req.metadata.name);
        let key = self.request_key(ns, name)?;
        let body = Self::encode(req)?;
        if let Some(g) = expected {
            if !self.kv.put(&key, &body, Some(g)).await? {
                return Err(StoreError::Conflict {
                    namespace: ns.clone(),
                    name: name.clone(),
                    expected: g,
                });
            }
            return self.generation_of(&key, ns, name).await;
        }
        let mut last = 0;
        for _ in 0..CANCEL_ATTEMPTS {
            let (_, cur) = self.kv.get(&key, Blocking::default()).await?;
            last = cur.map(|e| e.modify_index).unwrap_or(0);
            if self.kv.put(&key, &body, Some(last)).await? {
                return self.generation_of(&key, ns, name).await;
            }
        }
        Err(StoreError::Conflict {
            namespace: ns.clone(),
            name: name.clone(),
            expected: last,
        })
    }

    async fn generation_of(&self, key: &str, ns: &str, name: &str) -> Result<u64, StoreError> {
        match self.kv.get(key, Blocking::default()).await? {
            (_, Some(e)) => Ok(e.modify_index),
            (_, None) => Err(StoreError::NotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// Reads one request and its status. `None` when the spec key does not exist.
    pub async fn get(&self, ns: &str, name: &str) -> Result<Option<StoredRequest>, StoreError> {
        let (_, spec) = self
            .kv
            .get(&self.request_key(ns, name)?, Blocking::default())
            .await?;
        let Some(spec) = spec else { return Ok(None) };
        let (_, status) = self
            .kv
            .get(&self.keys.status_key(ns, name), Blocking::default())
            .await?;
        Ok(Some(stored(ns, name, &spec, status.as_ref())))
    }

    /// Like [`RequestStore::get`] but [`StoreError::NotFound`] when missing.
    pub async fn require(&self, ns: &str, name: &str) -> Result<StoredRequest, StoreError> {
        self.get(ns, name)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
    }

    /// Every request (of one namespace, or all with `None`) with its status, sorted by
    /// namespace then name. Two recursive reads: the requests prefix and the status prefix.
    pub async fn list(&self, ns: Option<&str>) -> Result<Vec<StoredRequest>, StoreError> {
        Ok(self.list_at(ns, Blocking::default()).await?.1)
    }

    /// [`RequestStore::list`] as a blocking query on the requests prefix: returns when a request
    /// changed after `blocking.index` (or the wait ran out), with the new index.
    pub async fn list_at(
        &self,
        ns: Option<&str>,
        blocking: Blocking,
    ) -> Result<(u64, Vec<StoredRequest>), StoreError> {
        if let Some(ns) = ns {
            check_namespace(ns)?;
        }
        let prefix = match ns {
            Some(ns) => self.keys.namespace_requests_prefix(ns),
            None => self.keys.requests_prefix(),
        };
        let (idx, specs) = self.kv.list(&prefix, blocking).await?;
        let status_prefix = match ns {
            Some(ns) => format!("{}{ns}/", self.keys.status_prefix()),
            None => self.keys.status_prefix(),
        };
        let (_, statuses) = self.kv.list(&status_prefix, Blocking::default()).await?;
        let statuses: BTreeMap<(String, String), KvEntry> = statuses
            .into_iter()
            .filter_map(|e| {
                let (n, m) = self.keys.parse_status_key(&e.key)?;
                Some(((n.to_string(), m.to_string()), e.clone()))
            })
            .collect();
        let mut out: Vec<StoredRequest> = specs
            .iter()
            .filter_map(|e| {
                let (n, m) = self.keys.parse_request_key(&e.key)?;
                Some(stored(
                    n,
                    m,
                    e,
                    statuses.get(&(n.to_string(), m.to_string())),
                ))
            })
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok((idx, out))
    }

    /// Waits (blocking query on the status key) until the status of `ns/name` changes after
    /// `index`; returns the new index and the status. `index = 0` answers at once.
    pub async fn watch_status(
        &self,
        ns: &str,
        name: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(u64, Option<BuildStatus>), StoreError> {
        check_request_ref(ns, name)?;
        let (idx, e) = self
            .kv
            .get(
                &self.keys.status_key(ns, name),
                Blocking {
                    index,
                    wait: Some(wait),
                },
            )
            .await?;
        Ok((idx, e.and_then(|e| serde_json::from_slice(&e.value).ok())))
    }

    /// The log tail of one phase (`<prefix>/logs/<ns>/<name>/<phase>`), with the key's index for
    /// a following blocking read. `None` when the controller has not written it yet.
    pub async fn logs(
        &self,
        ns: &str,
        name: &str,
        phase: PipelinePhase,
        blocking: Blocking,
    ) -> Result<(u64, Option<String>), StoreError> {
        check_request_ref(ns, name)?;
        let (idx, e) = self
            .kv
            .get(&self.keys.logs_key(ns, name, phase), blocking)
            .await?;
        Ok((
            idx,
            e.map(|e| String::from_utf8_lossy(&e.value).into_owned()),
        ))
    }

    /// Cancels a request: sets `spec.cancel: true` with a CAS read-modify-write on the spec's
    /// `ModifyIndex`, re-reading and retrying when another writer won.
    ///
    /// The one rule for every client (CLI `cancel`/`kill-job`, MCP `killJob`): a request whose
    /// status says the current generation has finished (Succeeded, Failed or Cancelled) is left
    /// alone — writing `spec.cancel` would make a new generation, and the controller would turn a
    /// published build into a `Cancelled` one without its image. That check and the write are one
    /// step: the write is `PUT ?cas=<the ModifyIndex the check read>`, so a spec rewritten in
    /// between (a new generation) makes the write fail and the check run again.
    ///
    /// Errors: [`StoreError::NotFound`], [`StoreError::Invalid`] (a spec that does not decode is
    /// not rewritten), [`StoreError::Conflict`] after repeated lost races.
    pub async fn cancel(&self, ns: &str, name: &str) -> Result<CancelOutcome, StoreError> {
        let key = self.request_key(ns, name)?;
        let status_key = self.keys.status_key(ns, name);
        let mut last = 0;
        for _ in 0..CANCEL_ATTEMPTS {
            let (_, cur) = self.kv.get(&key, Blocking::default()).await?;
            let cur = cur.ok_or_else(|| StoreError::NotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            })?;
            last = cur.modify_index;
            let (_, status) = self.kv.get(&status_key, Blocking::default()).await?;
            let status: Option<BuildStatus> =
                status.and_then(|s| serde_json::from_slice(&s.value).ok());
            if let Some(st) = status
                .filter(|s| s.observed_generation == cur.modify_index && s.phase.is_terminal())
            {
                return Ok(CancelOutcome::Finished {
                    generation: cur.modify_index,
                    phase: st.phase,
                });
            }
            let mut req: BuildRequest =
                serde_json::from_slice(&cur.value).map_err(|e| StoreError::Invalid {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    message: e.to_string(),
                })?;
            if req.spec.cancel {
                return Ok(CancelOutcome::AlreadyRequested {
                    generation: cur.modify_index,
                });
            }
            req.spec.cancel = true;
            if self
                .kv
                .put(&key, &Self::encode(&req)?, Some(cur.modify_index))
                .await?
            {
                return Ok(CancelOutcome::Requested {
                    generation: self.generation_of(&key, ns, name).await?,
                });
            }
        }
        Err(StoreError::Conflict {
            namespace: ns.to_string(),
            name: name.to_string(),
            expected: last,
        })
    }

    /// Deletes the spec key only (see the module docs for what happens to status and logs).
    /// With `purge`, also deletes the status key and the log keys (for use without a controller).
    /// Errors: [`StoreError::NotFound`] when there is no such request.
    pub async fn delete(&self, ns: &str, name: &str, purge: bool) -> Result<(), StoreError> {
        let key = self.request_key(ns, name)?;
        let (_, cur) = self.kv.get(&key, Blocking::default()).await?;
        let Some(cur) = cur else {
            return Err(StoreError::NotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            });
        };
        if !self.kv.delete(&key, Some(cur.modify_index), false).await? {
            return Err(StoreError::Conflict {
                namespace: ns.to_string(),
                name: name.to_string(),
                expected: cur.modify_index,
            });
        }
        if purge {
            self.kv
                .delete(&self.keys.status_key(ns, name), None, false)
                .await?;
            self.kv
                .delete(&self.keys.logs_prefix(ns, name), None, true)
                .await?;
        }
        Ok(())
    }

    /// Finished requests (terminal phase for their current generation), newest `completionTime`
    /// first, optionally of one owner, then `offset`/`limit` applied.
    pub async fn history(
        &self,
        ns: Option<&str>,
        owner: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<HistoryPage, StoreError> {
        let all = self.list(ns).await?;
        Ok(history_page(all, owner, limit, offset))
    }
}

/// Filters, sorts and pages finished requests (pure part of [`RequestStore::history`]).
pub fn history_page(
    all: Vec<StoredRequest>,
    owner: Option<&str>,
    limit: usize,
    offset: usize,
) -> HistoryPage {
    let mut done: Vec<StoredRequest> = all
        .into_iter()
        .filter(|r| r.phase().is_terminal())
        .filter(|r| owner.is_none_or(|o| r.owner() == o))
        .collect();
    done.sort_by(|a, b| {
        let ta = a.status.as_ref().and_then(|s| s.completion_time);
        let tb = b.status.as_ref().and_then(|s| s.completion_time);
        tb.cmp(&ta)
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    let total = done.len();
    HistoryPage {
        items: done.into_iter().skip(offset).take(limit).collect(),
        total,
    }
}

/// The problems of a spec that does not decode, as the controller sees them (it parses specs with
/// [`jobforge_schema::parse_request`]); the serde error when that finds none.
fn decode_problems(bytes: &[u8], serde_error: serde_json::Error) -> String {
    match jobforge_schema::parse_request(bytes, jobforge_schema::Format::detect(bytes)) {
        Err(p) => p
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        Ok(_) => serde_error.to_string(),
    }
}

fn stored(ns: &str, name: &str, spec: &KvEntry, status: Option<&KvEntry>) -> StoredRequest {
    StoredRequest {
        namespace: ns.to_string(),
        name: name.to_string(),
        request: serde_json::from_slice(&spec.value).map_err(|e| decode_problems(&spec.value, e)),
        generation: spec.modify_index,
        status: status.and_then(|s| serde_json::from_slice(&s.value).ok()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
