//! [`Client`]: the Nomad HTTP client. Every call records the histogram
//! `jobforge_nomad_request_duration_seconds{endpoint}` and, on failure, the counter
//! `jobforge_nomad_request_errors_total{endpoint}`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::events::{EventBatch, LineDecoder};
use super::job_spec::{Job, RegisterRequest};
use super::logs::{FrameDecoder, LogOptions, LogOrigin, LogStream};
use super::{
    Allocation, AllocationStub, Config, Error, Evaluation, JobInfo, JobListStub, JobSummary,
    RegisterResponse, Result,
};

/// Characters escaped in a path segment (IDs are placed into URL paths).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Nomad's text for an `EnforceIndex` failure (`nomad/job_endpoint.go`,
/// `RegisterEnforceIndexErrPrefix`).
const ENFORCE_PREFIX: &str = "Enforcing job modify index";

/// Blocking-query options (Nomad API docs, "Blocking Queries").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryOptions {
    /// Return only when the result's index exceeds this (0 = answer at once). Use the index of
    /// the previous answer; reset to 0 if it goes backwards.
    pub index: u64,
    /// Longest time to block (Nomad's default and cap are both 5 min: `nomad/rpc.go`
    /// `defaultQueryTime`, `maxQueryTime`; Nomad adds up to wait/16 jitter). `None` = Nomad's
    /// default.
    pub wait: Option<Duration>,
}

/// The Nomad HTTP client. Cheap to clone (shares the connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    cfg: Config,
}

impl Client {
    /// Builds a client for `cfg` (TLS with rustls; `NOMAD_CACERT` added to the roots).
    ///
    /// Errors: [`Error::Config`] when the CA file cannot be read or parsed, or the HTTP client
    /// cannot be built.
    pub fn new(cfg: Config) -> Result<Client> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .tls_danger_accept_invalid_certs(cfg.skip_verify);
        if let Some(path) = &cfg.ca_cert {
            let pem = std::fs::read(path).map_err(|e| Error::Config {
                var: "NOMAD_CACERT",
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
                var: "NOMAD_CACERT",
                reason: format!("{} is not a PEM bundle: {e}", path.display()),
            })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| Error::Config {
            var: "NOMAD_ADDR",
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Client { http, cfg })
    }

    /// [`Client::new`] with [`Config::from_env`].
    pub fn from_env() -> Result<Client> {
        Client::new(Config::from_env()?)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Registers (creates or updates) `job` with `POST /v1/jobs`.
    ///
    /// `enforce`: `None` = unconditional; `Some(0)` = only if the job does not exist yet;
    /// `Some(n)` = only if its `JobModifyIndex` is still `n` (Nomad's `EnforceIndex` +
    /// `JobModifyIndex`).
    ///
    /// Errors: [`Error::JobExists`] (`Some(0)` and the job exists), [`Error::IndexConflict`]
    /// (`Some(n)` and the index moved), [`Error::InvalidInput`] (empty job ID or one with spaces
    /// or NUL), and the transport/status/decode errors.
    pub async fn register_job(&self, job: &Job, enforce: Option<u64>) -> Result<RegisterResponse> {
        validate_id("job id", &job.id)?;
        let body = RegisterRequest {
            job: job.clone(),
            enforce_index: enforce.is_some(),
            job_modify_index: enforce.unwrap_or(0),
        };
        let req = self.request(Method::POST, "/v1/jobs", &[]).json(&body);
        match self.send("register_job", req, None).await {
            Ok(resp) => decode("register_job", resp).await,
            Err(Error::Status { code, body, .. }) if body.contains(ENFORCE_PREFIX) => {
                tracing::debug!(job = %job.id, code, %body, "EnforceIndex rejected the registration");
                match enforce {
                    Some(0) => Err(Error::JobExists {
                        job_id: job.id.clone(),
                    }),
                    Some(n) => Err(Error::IndexConflict {
                        job_id: job.id.clone(),
                        expected: n,
                        body,
                    }),
                    None => Err(Error::Status {
                        endpoint: "register_job",
                        code,
                        body,
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a job (`GET /v1/job/:id`); `None` when Nomad answers 404 (never registered, or
    /// purged).
    pub async fn get_job(&self, id: &str) -> Result<Option<JobInfo>> {
        validate_id("job id", id)?;
        let path = format!("/v1/job/{}", seg(id));
        let req = self.request(Method::GET, &path, &[]);
        self.get_optional("get_job", req).await
    }

    /// Lists jobs whose ID starts with `prefix` (`GET /v1/jobs?prefix=`); `""` lists all.
    pub async fn list_jobs(&self, prefix: &str) -> Result<Vec<JobListStub>> {
        Ok(self
            .list_jobs_blocking(prefix, QueryOptions::default())
            .await?
            .1)
    }

    /// [`Client::list_jobs`] as a blocking query: with `q.index > 0` Nomad answers when the
    /// jobs table's index exceeds it (any job registered, deregistered, or whose status
    /// changed), or after `q.wait` (Nomad caps it at 5 min: `nomad/rpc.go` `maxQueryTime`, plus
    /// up to wait/16 of jitter). Returns `(X-Nomad-Index, jobs)`.
    pub async fn list_jobs_blocking(
        &self,
        prefix: &str,
        q: QueryOptions,
    ) -> Result<(u64, Vec<JobListStub>)> {
        let mut params = blocking_params(q);
        params.push(("prefix", prefix.to_string()));
        let req = self.request(Method::GET, "/v1/jobs", &params);
        let resp = self.send("list_jobs", req, Some(q)).await?;
        let index = nomad_index(&resp);
        Ok((index, decode("list_jobs", resp).await?))
    }

    /// A job's allocations (`GET /v1/job/:id/allocations`), as a blocking query: with
    /// `q.index > 0` Nomad answers when the allocations' index exceeds it, or after `q.wait`.
    /// Returns `(X-Nomad-Index, allocations)`; an unknown job yields `[]`, not an error.
    pub async fn job_allocations(
        &self,
        id: &str,
        q: QueryOptions,
    ) -> Result<(u64, Vec<AllocationStub>)> {
        validate_id("job id", id)?;
        let path = format!("/v1/job/{}/allocations", seg(id));
        let req = self.request(Method::GET, &path, &blocking_params(q));
        let resp = self.send("job_allocations", req, Some(q)).await?;
        let index = nomad_index(&resp);
        let allocs = decode("job_allocations", resp).await?;
        Ok((index, allocs))
    }

    /// A job's summary (`GET /v1/job/:id/summary`); `None` on 404.
    pub async fn job_summary(&self, id: &str) -> Result<Option<JobSummary>> {
        validate_id("job id", id)?;
        let path = format!("/v1/job/{}/summary", seg(id));
        let req = self.request(Method::GET, &path, &[]);
        self.get_optional("job_summary", req).await
    }

    /// A job's evaluations (`GET /v1/job/:id/evaluations`), newest first as Nomad sends them;
    /// an unknown job yields `[]`.
    pub async fn job_evaluations(&self, id: &str) -> Result<Vec<Evaluation>> {
        validate_id("job id", id)?;
        let path = format!("/v1/job/{}/evaluations", seg(id));
        let req = self.request(Method::GET, &path, &[]);
        Ok(self
            .get_optional("job_evaluations", req)
            .await?
            .unwrap_or_default())
    }

    /// Reads an allocation (`GET /v1/allocation/:id`); `None` on 404 (unknown or garbage
    /// collected).
    pub async fn get_allocation(&self, id: &str) -> Result<Option<Allocation>> {
        validate_id("allocation id", id)?;
        let path = format!("/v1/allocation/{}", seg(id));
        let req = self.request(Method::GET, &path, &[]);
        self.get_optional("get_allocation", req).await
    }

    /// Stops a job (`DELETE /v1/job/:id?purge=`), and with `purge` removes it from Nomad's
    /// state. Idempotent: a 404 or an answer with an empty `EvalID` (nothing to do) is `Ok(None)`;
    /// otherwise the ID of the deregistration evaluation.
    pub async fn deregister_job(&self, id: &str, purge: bool) -> Result<Option<String>> {
        validate_id("job id", id)?;
        let path = format!("/v1/job/{}", seg(id));
        let req = self.request(Method::DELETE, &path, &[("purge", purge.to_string())]);
        let resp: Option<RegisterResponse> = self.get_optional("deregister_job", req).await?;
        Ok(resp.map(|r| r.eval_id).filter(|e| !e.is_empty()))
    }

    /// Streams a task's log (`GET /v1/client/fs/logs/:alloc?task=&type=&origin=&offset=&follow=&plain=`).
    /// Items are the log bytes in order: with `plain` the raw body chunks, otherwise the decoded
    /// `Data` of the JSON frames (heartbeats and file events dropped). With `follow` the stream
    /// stays open (no request timeout) until the task's log ends or it is dropped.
    ///
    /// Errors: the call fails at once on a non-2xx answer ([`Error::Status`], Nomad answers 404
    /// for an unknown allocation); stream items fail with [`Error::Transport`] or
    /// [`Error::LogFrame`].
    pub async fn alloc_logs(
        &self,
        alloc: &str,
        task: &str,
        stream: LogStream,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        validate_id("allocation id", alloc)?;
        if task.is_empty() {
            return Err(Error::InvalidInput {
                field: "task",
                reason: "must not be empty".into(),
            });
        }
        let path = format!("/v1/client/fs/logs/{}", seg(alloc));
        let params = [
            ("task", task.to_string()),
            ("type", stream.as_str().to_string()),
            ("origin", opts.origin.as_str().to_string()),
            ("offset", opts.offset.to_string()),
            ("follow", opts.follow.to_string()),
            ("plain", opts.plain.to_string()),
        ];
        let mut req = self.request(Method::GET, &path, &params);
        // A followed stream has no deadline (the client has no global timeout either).
        if !opts.follow {
            req = req.timeout(self.cfg.request_timeout);
        }
        let resp = self.send_raw("alloc_logs", req).await?;
        let addr = self.cfg.address.to_string();
        let body = resp.bytes_stream().map_err(move |e| Error::Transport {
            addr: addr.clone(),
            endpoint: "alloc_logs",
            source: e,
        });
        if opts.plain {
            return Ok(body.boxed());
        }
        Ok(decode_frames(body).boxed())
    }

    /// The last `max_bytes` bytes of a task's output: at most `max_bytes` of stdout followed by
    /// stderr, both read with `origin=end&offset=max_bytes&plain=true` (not following). When
    /// both together exceed `max_bytes`, stderr keeps at least half the budget (it usually
    /// explains a failure) and stdout keeps its last bytes. A stream Nomad has no file for yet
    /// (404) counts as empty.
    pub async fn log_tail(&self, alloc: &str, task: &str, max_bytes: usize) -> Result<Vec<u8>> {
        let out = self
            .log_tail_of(alloc, task, LogStream::Stdout, max_bytes)
            .await?;
        let err = self
            .log_tail_of(alloc, task, LogStream::Stderr, max_bytes)
            .await?;
        Ok(join_tails(&out, &err, max_bytes))
    }

    /// The last `max_bytes` bytes of one log stream (empty when Nomad has none: 404).
    pub async fn log_tail_of(
        &self,
        alloc: &str,
        task: &str,
        stream: LogStream,
        max_bytes: usize,
    ) -> Result<Vec<u8>> {
        let opts = LogOptions {
            origin: LogOrigin::End,
            offset: max_bytes as u64,
            follow: false,
            plain: true,
        };
        let s = match self.alloc_logs(alloc, task, stream, opts).await {
            Ok(s) => s,
            Err(Error::Status { code: 404, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let chunks: Vec<Bytes> = s.try_collect().await?;
        let mut all: Vec<u8> = chunks.concat();
        if all.len() > max_bytes {
            all.drain(..all.len() - max_bytes);
        }
        Ok(all)
    }

    /// Subscribes to the event stream (`GET /v1/event/stream?topic=..&index=`), for example
    /// `topics = [("Job", "jobforge-a-1-build"), ("Allocation", "*")]`; `index` resumes after a
    /// batch already seen (0 = from now). Items are batches with events, heartbeats dropped; the
    /// stream has no timeout and ends when Nomad closes it.
    ///
    /// Errors: [`Error::InvalidInput`] for an empty topic list; non-2xx answers at once as
    /// [`Error::Status`]; items fail with [`Error::Transport`] or [`Error::Decode`].
    pub async fn event_stream(
        &self,
        topics: &[(&str, &str)],
        index: u64,
    ) -> Result<BoxStream<'static, Result<EventBatch>>> {
        if topics.is_empty() {
            return Err(Error::InvalidInput {
                field: "topics",
                reason: "at least one (topic, key) pair, for example (\"Job\", \"*\")".into(),
            });
        }
        let mut params: Vec<(&str, String)> = topics
            .iter()
            .map(|(t, k)| ("topic", format!("{t}:{k}")))
            .collect();
        if index > 0 {
            params.push(("index", index.to_string()));
        }
        let req = self.request(Method::GET, "/v1/event/stream", &params);
        let resp = self.send_raw("event_stream", req).await?;
        let addr = self.cfg.address.to_string();
        let body = resp.bytes_stream().map_err(move |e| Error::Transport {
            addr: addr.clone(),
            endpoint: "event_stream",
            source: e,
        });
        let state = (
            Box::pin(body),
            LineDecoder::new(),
            std::collections::VecDeque::new(),
            false,
        );
        Ok(futures::stream::unfold(
            state,
            |(mut body, mut dec, mut ready, mut done)| async move {
                loop {
                    if let Some(b) = ready.pop_front() {
                        return Some((Ok(b), (body, dec, ready, done)));
                    }
                    if done {
                        return None;
                    }
                    match body.next().await {
                        Some(Ok(chunk)) => match dec.push(&chunk) {
                            Ok(batches) => ready.extend(batches),
                            Err(e) => return Some((Err(e), (body, dec, ready, true))),
                        },
                        Some(Err(e)) => return Some((Err(e), (body, dec, ready, true))),
                        None => {
                            done = true;
                            match dec.finish() {
                                Ok(last) => ready.extend(last),
                                Err(e) => return Some((Err(e), (body, dec, ready, true))),
                            }
                        }
                    }
                }
            },
        )
        .boxed())
    }

    fn request(&self, method: Method, path: &str, params: &[(&str, String)]) -> RequestBuilder {
        let mut url = self.cfg.address.clone();
        url.set_path(path);
        {
            let mut qp = url.query_pairs_mut();
            for (k, v) in params {
                qp.append_pair(k, v);
            }
            if let Some(r) = &self.cfg.region {
                qp.append_pair("region", r);
            }
            if let Some(n) = &self.cfg.namespace {
                qp.append_pair("namespace", n);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.cfg.token {
            req = req.header("X-Nomad-Token", t);
        }
        req
    }

    /// Sends with a timeout fitted to the call, and maps non-2xx to [`Error::Status`].
    async fn send(
        &self,
        endpoint: &'static str,
        req: RequestBuilder,
        blocking: Option<QueryOptions>,
    ) -> Result<Response> {
        let timeout = match blocking {
            Some(q) if q.index > 0 => {
                let wait = q.wait.unwrap_or(Duration::from_secs(300));
                wait + wait / 16 + self.cfg.request_timeout
            }
            _ => self.cfg.request_timeout,
        };
        self.send_raw(endpoint, req.timeout(timeout)).await
    }

    async fn send_raw(&self, endpoint: &'static str, req: RequestBuilder) -> Result<Response> {
        let start = Instant::now();
        let res = self.send_inner(endpoint, req).await;
        metrics::histogram!("jobforge_nomad_request_duration_seconds", "endpoint" => endpoint)
            .record(start.elapsed().as_secs_f64());
        match &res {
            // A 404 is an answer, not a failure, for the endpoints that map it to `None`.
            Err(Error::Status { code: 404, .. }) => {}
            Err(e) => {
                metrics::counter!("jobforge_nomad_request_errors_total", "endpoint" => endpoint)
                    .increment(1);
                tracing::debug!(endpoint, error = %e, "Nomad request failed");
            }
            Ok(_) => {}
        }
        res
    }

    async fn send_inner(&self, endpoint: &'static str, req: RequestBuilder) -> Result<Response> {
        let resp = req.send().await.map_err(|e| self.transport(endpoint, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.map_err(|e| self.transport(endpoint, e))?;
        Err(Error::Status {
            endpoint,
            code: status.as_u16(),
            body: body.trim().to_string(),
        })
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        req: RequestBuilder,
    ) -> Result<Option<T>> {
        match self.send(endpoint, req, None).await {
            Ok(resp) => decode(endpoint, resp).await.map(Some),
            Err(Error::Status { code, .. }) if code == StatusCode::NOT_FOUND.as_u16() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn transport(&self, endpoint: &'static str, source: reqwest::Error) -> Error {
        Error::Transport {
            addr: self.cfg.address.to_string(),
            endpoint,
            source,
        }
    }
}

/// Decodes a framed log body into the `Data` bytes, dropping heartbeats and empty frames.
fn decode_frames(
    body: impl Stream<Item = Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
    let state = (Box::pin(body), FrameDecoder::new(), false);
    futures::stream::unfold(state, |(mut body, mut dec, done)| async move {
        if done {
            return None;
        }
        loop {
            match body.next().await {
                Some(Ok(chunk)) => match dec.push(&chunk) {
                    Ok(frames) => {
                        let data: Vec<u8> =
                            frames.iter().flat_map(|f| f.data.iter().copied()).collect();
                        if !data.is_empty() {
                            return Some((Ok(Bytes::from(data)), (body, dec, false)));
                        }
                    }
                    Err(e) => return Some((Err(e), (body, dec, true))),
                },
                Some(Err(e)) => return Some((Err(e), (body, dec, true))),
                None => {
                    return dec.finish().err().map(|e| (Err(e), (body, dec, true)));
                }
            }
        }
    })
}

/// Joins a stdout tail and a stderr tail into at most `max` bytes, as [`Client::log_tail`]
/// does: stderr keeps at least half the budget (it usually explains a failure), stdout its last
/// bytes.
pub fn join_tails(out: &[u8], err: &[u8], max: usize) -> Vec<u8> {
    let err_keep = err.len().min(max.saturating_sub(out.len().min(max / 2)));
    let out_keep = out.len().min(max - err_keep);
    let mut v = Vec::with_capacity(out_keep + err_keep);
    v.extend_from_slice(&out[out.len() - out_keep..]);
    v.extend_from_slice(&err[err.len() - err_keep..]);
    v
}

fn blocking_params(q: QueryOptions) -> Vec<(&'static str, String)> {
    let mut p = Vec::new();
    if q.index > 0 {
        p.push(("index", q.index.to_string()));
    }
    if let Some(w) = q.wait {
        p.push(("wait", go_duration(w)));
    }
    p
}

/// A Go duration string Nomad parses: whole seconds as `Ns`, otherwise milliseconds.
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// The `X-Nomad-Index` header, 0 when absent or not a number.
fn nomad_index(resp: &Response) -> u64 {
    resp.headers()
        .get("X-Nomad-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn decode<T: DeserializeOwned>(endpoint: &'static str, resp: Response) -> Result<T> {
    let url = resp.url().to_string();
    let bytes = resp.bytes().await.map_err(|e| Error::Transport {
        addr: url,
        endpoint,
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Decode { endpoint, source })
}

fn seg(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// Nomad job IDs: non-empty, no spaces, no NUL (`structs.Job.Validate`). Allocation IDs are
/// UUIDs; the same check keeps them out of trouble in URL paths.
fn validate_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidInput {
            field,
            reason: "must not be empty".into(),
        });
    }
    if id.contains(' ') || id.contains('\0') {
        return Err(Error::InvalidInput {
            field,
            reason: format!("{id:?} contains a space or NUL; not allowed in Nomad IDs"),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
