//! The HTTP client: KV, transactions and sessions over reqwest (rustls).

use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::agent::ServiceRegistration;
use super::config::Config;
use super::error::{ConsulError, Result, truncate_body};
use super::kv::{DeleteOptions, KvPair, PutOptions, QueryOptions, WireKvPair, key_arg};
use super::session::{SessionInfo, SessionRequest, WireSession};
use super::txn::{MAX_TXN_OPS, TxnError, TxnOp, TxnResult, WireTxnResponse};

/// Characters escaped in a key path: everything but unreserved characters and `/`.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Histogram of request durations in seconds, label `endpoint`: requests that answer at once
/// (blocking queries are not in it: their duration is mostly the server's wait for a change).
pub const METRIC_REQUEST_DURATION: &str = "jobforge_consul_request_duration_seconds";
/// Histogram of blocking-query durations in seconds (`?index=` with a wait), label `endpoint`:
/// how long Consul held each one, up to its wait plus Consul's jitter of wait/16.
pub const METRIC_BLOCKING_WAIT: &str = "jobforge_consul_blocking_wait_seconds";

/// The histogram a request's duration goes to: [`METRIC_BLOCKING_WAIT`] when the server may hold
/// it (`hold` > 0, a blocking query), else [`METRIC_REQUEST_DURATION`] (issue 18, item 14: the
/// request latency must not include the waits of blocking queries).
fn duration_metric(hold: Duration) -> &'static str {
    if hold.is_zero() {
        METRIC_REQUEST_DURATION
    } else {
        METRIC_BLOCKING_WAIT
    }
}
/// Counter of failed requests (transport, unexpected status, decode), label `endpoint`.
pub const METRIC_REQUEST_ERRORS: &str = "jobforge_consul_request_errors_total";

/// A Consul HTTP API client. Cheap to clone (shares one connection pool).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    cfg: Arc<Config>,
}

/// An answer, read fully: status, `X-Consul-Index` (if present) and body.
struct Answer {
    status: StatusCode,
    index: Option<u64>,
    body: Vec<u8>,
}

impl Client {
    /// Builds a client for `cfg`.
    ///
    /// Errors: [`ConsulError::Config`] when the HTTP client cannot be built (TLS backend).
    pub fn new(cfg: Config) -> Result<Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &cfg.token {
            let mut v =
                reqwest::header::HeaderValue::from_str(t).map_err(|_| ConsulError::Config {
                    field: "token",
                    message: "not a valid header value".to_string(),
                })?;
            v.set_sensitive(true);
            headers.insert("X-Consul-Token", v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .tls_danger_accept_invalid_certs(!cfg.tls_verify)
            .build()
            .map_err(|e| ConsulError::Config {
                field: "tls",
                message: format!("building the HTTP client: {e}"),
            })?;
        Ok(Client {
            http,
            cfg: Arc::new(cfg),
        })
    }

    /// A client configured from the environment ([`Config::from_env`]).
    pub fn from_env() -> Result<Client> {
        Client::new(Config::from_env()?)
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn kv_url(&self, key: &str) -> url::Url {
        let mut u = self.cfg.address.clone();
        u.set_path(&format!("/v1/kv/{}", utf8_percent_encode(key, KEY_SET)));
        u
    }

    fn api_url(&self, path: &str) -> url::Url {
        let mut u = self.cfg.address.clone();
        u.set_path(path);
        u
    }

    /// Sends one request, reads the whole answer and records the metrics. Only transport
    /// failures are errors here; the caller interprets the status.
    async fn send(
        &self,
        endpoint: &'static str,
        method: Method,
        url: url::Url,
        body: Option<Vec<u8>>,
        hold: Duration,
    ) -> Result<Answer> {
        let started = Instant::now();
        let timeout = if hold.is_zero() {
            self.cfg.request_timeout
        } else {
            hold + self.cfg.blocking_margin
        };
        let mut req = self.http.request(method, url).timeout(timeout);
        if let Some(b) = body {
            req = req.body(b);
        }
        let transport = |source| ConsulError::Transport {
            addr: self.cfg.base(),
            endpoint,
            timeout,
            source,
        };
        let result = async {
            let resp = req.send().await.map_err(transport)?;
            let status = resp.status();
            let index = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = resp.bytes().await.map_err(transport)?.to_vec();
            Ok(Answer {
                status,
                index,
                body,
            })
        }
        .await;
        metrics::histogram!(duration_metric(hold), "endpoint" => endpoint)
            .record(started.elapsed().as_secs_f64());
        if result.is_err() {
            record_error(endpoint);
        }
        result
    }

    fn unexpected(endpoint: &'static str, a: &Answer) -> ConsulError {
        record_error(endpoint);
        let body = truncate_body(String::from_utf8_lossy(&a.body).into_owned());
        if a.status == StatusCode::CONFLICT {
            ConsulError::Conflict { endpoint, body }
        } else {
            ConsulError::Status {
                endpoint,
                code: a.status.as_u16(),
                body,
            }
        }
    }

    fn index_of(endpoint: &'static str, a: &Answer) -> Result<u64> {
        a.index.ok_or_else(|| {
            record_error(endpoint);
            ConsulError::Decode {
                endpoint,
                message: "missing or non-numeric X-Consul-Index header".to_string(),
            }
        })
    }

    fn json<T: serde::de::DeserializeOwned>(endpoint: &'static str, a: &Answer) -> Result<T> {
        serde_json::from_slice(&a.body).map_err(|e| {
            record_error(endpoint);
            ConsulError::Decode {
                endpoint,
                message: format!("{e}"),
            }
        })
    }

    async fn kv_read(
        &self,
        endpoint: &'static str,
        key: &str,
        flags: &[(&str, &str)],
        opts: &QueryOptions,
    ) -> Result<(u64, Option<Answer>)> {
        opts.validate()?;
        let mut url = self.kv_url(key);
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in flags {
                q.append_pair(k, v);
            }
            opts.append(&mut q);
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let a = self
            .send(endpoint, Method::GET, url, None, opts.max_server_hold())
            .await?;
        match a.status {
            StatusCode::OK => Ok((Self::index_of(endpoint, &a)?, Some(a))),
            StatusCode::NOT_FOUND => Ok((Self::index_of(endpoint, &a)?, None)),
            _ => Err(Self::unexpected(endpoint, &a)),
        }
    }

    /// `GET /v1/kv/<key>`: one key. Returns `X-Consul-Index` and the entry, or `(index, None)`
    /// when the key does not exist (HTTP 404 still carries the index, so a blocking read on a
    /// missing key can wait for its creation).
    ///
    /// Errors: `InvalidArgument` (empty key, consistent+stale), `Transport`, `Status`, `Decode`.
    pub async fn kv_get(&self, key: &str, opts: QueryOptions) -> Result<(u64, Option<KvPair>)> {
        const EP: &str = "kv_get";
        let key = key_arg("key", key)?;
        let (index, a) = self.kv_read(EP, key, &[], &opts).await?;
        let Some(a) = a else { return Ok((index, None)) };
        let pairs: Vec<WireKvPair> = Self::json(EP, &a)?;
        let pair = pairs.into_iter().next().map(|p| p.decode(EP)).transpose()?;
        Ok((index, pair))
    }

    /// `GET /v1/kv/<prefix>?recurse`: every key under `prefix` (`""` = all). A missing prefix is
    /// `(index, [])`.
    pub async fn kv_list(&self, prefix: &str, opts: QueryOptions) -> Result<(u64, Vec<KvPair>)> {
        const EP: &str = "kv_list";
        let prefix = prefix.strip_prefix('/').unwrap_or(prefix);
        let (index, a) = self.kv_read(EP, prefix, &[("recurse", "")], &opts).await?;
        let Some(a) = a else {
            return Ok((index, Vec::new()));
        };
        let pairs: Vec<WireKvPair> = Self::json(EP, &a)?;
        let pairs = pairs
            .into_iter()
            .map(|p| p.decode(EP))
            .collect::<Result<Vec<_>>>()?;
        Ok((index, pairs))
    }

    /// `GET /v1/kv/<prefix>?keys[&separator=]`: the key names under `prefix`, folded at
    /// `separator` when given. A missing prefix is `(index, [])`.
    pub async fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: QueryOptions,
    ) -> Result<(u64, Vec<String>)> {
        const EP: &str = "kv_keys";
        let prefix = prefix.strip_prefix('/').unwrap_or(prefix);
        let mut flags = vec![("keys", "")];
        if let Some(s) = separator {
            flags.push(("separator", s));
        }
        let (index, a) = self.kv_read(EP, prefix, &flags, &opts).await?;
        let Some(a) = a else {
            return Ok((index, Vec::new()));
        };
        Ok((index, Self::json(EP, &a)?))
    }

    /// `GET /v1/kv/<key>?raw`: the value bytes of one key, `(index, None)` when missing.
    pub async fn kv_get_raw(
        &self,
        key: &str,
        opts: QueryOptions,
    ) -> Result<(u64, Option<Vec<u8>>)> {
        const EP: &str = "kv_get_raw";
        let key = key_arg("key", key)?;
        let (index, a) = self.kv_read(EP, key, &[("raw", "")], &opts).await?;
        Ok((index, a.map(|a| a.body)))
    }

    /// `PUT /v1/kv/<key>` with the raw value as body. Returns Consul's boolean: false when a
    /// `cas` did not match, or `acquire`/`release` was refused (held by another session,
    /// lock-delay, not the holder).
    ///
    /// Errors: `InvalidArgument` (empty key, conflicting flags), `Status` (413 value over the
    /// server's limit, 512 KiB by default; 400/500 for an invalid session), `Transport`, `Decode`.
    pub async fn kv_put(&self, key: &str, value: &[u8], opts: PutOptions) -> Result<bool> {
        const EP: &str = "kv_put";
        let key = key_arg("key", key)?;
        opts.validate()?;
        let mut url = self.kv_url(key);
        {
            let mut q = url.query_pairs_mut();
            if let Some(c) = opts.cas {
                q.append_pair("cas", &c.to_string());
            }
            if let Some(s) = &opts.acquire {
                q.append_pair("acquire", s);
            }
            if let Some(s) = &opts.release {
                q.append_pair("release", s);
            }
            if let Some(f) = opts.flags {
                q.append_pair("flags", &f.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let a = self
            .send(EP, Method::PUT, url, Some(value.to_vec()), Duration::ZERO)
            .await?;
        if a.status != StatusCode::OK {
            return Err(Self::unexpected(EP, &a));
        }
        Self::json(EP, &a)
    }

    /// `DELETE /v1/kv/<key>[?recurse][&cas=]`. True when deleted (a plain delete of a missing
    /// key is true too); false when `cas` did not match (`cas` 0 never deletes).
    ///
    /// Errors: `InvalidArgument` (empty key without recurse, recurse with cas), `Transport`,
    /// `Status`, `Decode`.
    pub async fn kv_delete(&self, key: &str, opts: DeleteOptions) -> Result<bool> {
        const EP: &str = "kv_delete";
        if opts.recurse && opts.cas.is_some() {
            return Err(ConsulError::InvalidArgument {
                field: "DeleteOptions",
                message: "recurse and cas are mutually exclusive".to_string(),
            });
        }
        let key = if opts.recurse {
            key.strip_prefix('/').unwrap_or(key)
        } else {
            key_arg("key", key)?
        };
        let mut url = self.kv_url(key);
        {
            let mut q = url.query_pairs_mut();
            if opts.recurse {
                q.append_pair("recurse", "");
            }
            if let Some(c) = opts.cas {
                q.append_pair("cas", &c.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let a = self
            .send(EP, Method::DELETE, url, None, Duration::ZERO)
            .await?;
        if a.status != StatusCode::OK {
            return Err(Self::unexpected(EP, &a));
        }
        Self::json(EP, &a)
    }

    /// `PUT /v1/txn`: applies `ops` atomically. HTTP 200 → [`TxnResult::Committed`], HTTP 409 →
    /// [`TxnResult::RolledBack`] with each failing operation's index and Consul's reason.
    ///
    /// Errors: `InvalidArgument` (no ops, or more than 64), `Status` (400 malformed, 413),
    /// `Transport`, `Decode`.
    pub async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        const EP: &str = "txn";
        if ops.is_empty() || ops.len() > MAX_TXN_OPS {
            return Err(ConsulError::InvalidArgument {
                field: "ops",
                message: format!("{} operations; Consul allows 1 to {MAX_TXN_OPS}", ops.len()),
            });
        }
        let body = Value::Array(ops.iter().map(TxnOp::to_json).collect());
        let body = serde_json::to_vec(&body).map_err(|e| ConsulError::InvalidArgument {
            field: "ops",
            message: e.to_string(),
        })?;
        let a = self
            .send(
                EP,
                Method::PUT,
                self.api_url("/v1/txn"),
                Some(body),
                Duration::ZERO,
            )
            .await?;
        match a.status {
            StatusCode::OK => {
                let r: WireTxnResponse = Self::json(EP, &a)?;
                let pairs = r
                    .results
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.kv)
                    .map(|p| p.decode(EP))
                    .collect::<Result<Vec<_>>>()?;
                Ok(TxnResult::Committed(pairs))
            }
            StatusCode::CONFLICT => {
                let r: WireTxnResponse = Self::json(EP, &a)?;
                let errors = r
                    .errors
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| TxnError {
                        op_index: e.op_index,
                        what: e.what,
                    })
                    .collect();
                Ok(TxnResult::RolledBack(errors))
            }
            _ => Err(Self::unexpected(EP, &a)),
        }
    }

    /// `PUT /v1/session/create`: returns the new session's ID.
    ///
    /// Errors: `InvalidArgument` (TTL outside 10 s..86400 s, lock-delay over 60 s), `Status`,
    /// `Transport`, `Decode`.
    pub async fn session_create(&self, req: &SessionRequest) -> Result<String> {
        const EP: &str = "session_create";
        let body =
            serde_json::to_vec(&req.to_json()?).map_err(|e| ConsulError::InvalidArgument {
                field: "SessionRequest",
                message: e.to_string(),
            })?;
        let a = self
            .send(
                EP,
                Method::PUT,
                self.api_url("/v1/session/create"),
                Some(body),
                Duration::ZERO,
            )
            .await?;
        if a.status != StatusCode::OK {
            return Err(Self::unexpected(EP, &a));
        }
        #[derive(serde::Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let c: Created = Self::json(EP, &a)?;
        Ok(c.id)
    }

    /// `PUT /v1/session/renew/<id>`: `Some(info)` with the TTL the server now holds (callers
    /// adopt it: Consul may return a larger TTL than requested), `None` when the session no
    /// longer exists (HTTP 404).
    pub async fn session_renew(&self, id: &str) -> Result<Option<SessionInfo>> {
        const EP: &str = "session_renew";
        let id = key_arg("id", id)?;
        let url = self.api_url(&format!(
            "/v1/session/renew/{}",
            utf8_percent_encode(id, KEY_SET)
        ));
        let a = self
            .send(EP, Method::PUT, url, None, Duration::ZERO)
            .await?;
        match a.status {
            StatusCode::OK => {
                let s: Vec<WireSession> = Self::json(EP, &a)?;
                s.into_iter().next().map(|s| s.decode(EP)).transpose()
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::unexpected(EP, &a)),
        }
    }

    /// Registers (or replaces) a service with the local agent (`PUT
    /// /v1/agent/service/register`, `api-docs/agent/service.mdx`). The agent runs the
    /// registration's check and syncs both to the catalog.
    ///
    /// Errors: `Status` (400 invalid definition, 403 without `service:write`), transport errors.
    pub async fn agent_service_register(&self, reg: &ServiceRegistration) -> Result<()> {
        const EP: &str = "agent_service_register";
        let body =
            serde_json::to_vec(&reg.to_json()).map_err(|e| ConsulError::InvalidArgument {
                field: "ServiceRegistration",
                message: e.to_string(),
            })?;
        let a = self
            .send(
                EP,
                Method::PUT,
                self.api_url("/v1/agent/service/register"),
                Some(body),
                Duration::ZERO,
            )
            .await?;
        if a.status != StatusCode::OK {
            return Err(Self::unexpected(EP, &a));
        }
        Ok(())
    }

    /// Deregisters service `id` from the local agent (`PUT /v1/agent/service/deregister/<id>`);
    /// `Ok(false)` when the agent does not know it (404).
    ///
    /// Errors: `Status` (403 without `service:write`), transport errors.
    pub async fn agent_service_deregister(&self, id: &str) -> Result<bool> {
        const EP: &str = "agent_service_deregister";
        let id = key_arg("id", id)?;
        let url = self.api_url(&format!(
            "/v1/agent/service/deregister/{}",
            utf8_percent_encode(id, KEY_SET)
        ));
        let a = self
            .send(EP, Method::PUT, url, None, Duration::ZERO)
            .await?;
        match a.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::unexpected(EP, &a)),
        }
    }

    /// `PUT /v1/session/destroy/<id>`: idempotent; releases (or deletes) every key the session
    /// holds. Returns Consul's boolean.
    pub async fn session_destroy(&self, id: &str) -> Result<bool> {
        const EP: &str = "session_destroy";
        let id = key_arg("id", id)?;
        let url = self.api_url(&format!(
            "/v1/session/destroy/{}",
            utf8_percent_encode(id, KEY_SET)
        ));
        let a = self
            .send(EP, Method::PUT, url, None, Duration::ZERO)
            .await?;
        if a.status != StatusCode::OK {
            return Err(Self::unexpected(EP, &a));
        }
        Self::json(EP, &a)
    }

    /// `GET /v1/session/info/<id>`: the session, or `None` when unknown (Consul answers `[]`).
    pub async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>> {
        const EP: &str = "session_info";
        let id = key_arg("id", id)?;
        let url = self.api_url(&format!(
            "/v1/session/info/{}",
            utf8_percent_encode(id, KEY_SET)
        ));
        let a = self
            .send(EP, Method::GET, url, None, Duration::ZERO)
            .await?;
        match a.status {
            StatusCode::OK => {
                let s: Option<Vec<WireSession>> = Self::json(EP, &a)?;
                s.unwrap_or_default()
                    .into_iter()
                    .next()
                    .map(|s| s.decode(EP))
                    .transpose()
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::unexpected(EP, &a)),
        }
    }
}

fn record_error(endpoint: &'static str) {
    metrics::counter!(METRIC_REQUEST_ERRORS, "endpoint" => endpoint).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_queries_are_measured_apart_from_request_latency() {
        assert_eq!(duration_metric(Duration::ZERO), METRIC_REQUEST_DURATION);
        assert_eq!(
            duration_metric(Duration::from_secs(5)),
            METRIC_BLOCKING_WAIT
        );
    }
}
