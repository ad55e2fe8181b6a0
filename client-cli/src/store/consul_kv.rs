//! [`Kv`] over Consul's HTTP KV endpoint (`/v1/kv`, Consul docs "KV Store - HTTP API"): blocking
//! reads with `?index=&wait=`, `?recurse`, `?cas=`; `X-Consul-Index` on every read, also on 404.
//! Transport failures become [`KvError::Unreachable`] naming the address.

use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Deserialize;

use super::{Blocking, Kv, KvEntry, KvError};

/// Characters escaped in a key path segment (RFC 3986 path, keeping `/`).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Connection settings, from `CONSUL_HTTP_ADDR` (`host:port` or a URL; `127.0.0.1:8500` when unset),
/// `CONSUL_HTTP_TOKEN` and `CONSUL_HTTP_SSL` like HashiCorp's own tools.
#[derive(Debug, Clone)]
pub struct ConsulKvConfig {
    /// Base URL, for example `http://127.0.0.1:8500`.
    pub address: String,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<String>,
}

impl ConsulKvConfig {
    /// Builds the base URL from an address as users write it (`host:port`, `http://…`, `https://…`);
    /// `ssl` selects `https` when no scheme is given.
    pub fn new(address: &str, token: Option<String>, ssl: bool) -> Self {
        let a = address.trim().trim_end_matches('/');
        let address = if a.starts_with("http://") || a.starts_with("https://") {
            a.to_string()
        } else if ssl {
            format!("https://{a}")
        } else {
            format!("http://{a}")
        };
        ConsulKvConfig {
            address,
            token: token.filter(|t| !t.is_empty()),
        }
    }
}

/// A [`Kv`] speaking Consul's HTTP API.
#[derive(Debug, Clone)]
pub struct ConsulKv {
    http: reqwest::Client,
    cfg: ConsulKvConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

impl ConsulKv {
    /// A client for `cfg`. Errors when the HTTP client cannot be built (TLS setup).
    pub fn new(cfg: ConsulKvConfig) -> Result<Self, KvError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| KvError::Server(format!("cannot build HTTP client: {e}")))?;
        Ok(ConsulKv { http, cfg })
    }

    /// The base URL in use.
    pub fn address(&self) -> &str {
        &self.cfg.address
    }

    fn url(&self, key: &str) -> String {
        format!(
            "{}/v1/kv/{}",
            self.cfg.address,
            utf8_percent_encode(key, PATH)
        )
    }

    fn req(&self, m: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.http.request(m, url);
        match &self.cfg.token {
            Some(t) => r.header("X-Consul-Token", t),
            None => r,
        }
    }

    fn transport(&self, e: reqwest::Error) -> KvError {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        KvError::Unreachable {
            addr: self.cfg.address.clone(),
            message: msg,
        }
    }

    async fn read(
        &self,
        key: &str,
        recurse: bool,
        blocking: Blocking,
    ) -> Result<(u64, Vec<KvEntry>), KvError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if recurse {
            q.push(("recurse", "true".into()));
        }
        let mut timeout = Duration::from_secs(30);
        if blocking.index > 0 {
            q.push(("index", blocking.index.to_string()));
            let wait = blocking.wait.unwrap_or(Duration::from_secs(300));
            q.push(("wait", format!("{}ms", wait.as_millis())));
            // Consul adds up to wait/16 jitter; leave room for it.
            timeout = wait + wait / 16 + Duration::from_secs(10);
        }
        let resp = self
            .req(reqwest::Method::GET, self.url(key))
            .query(&q)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok((index, Vec::new()));
        }
        let body = resp.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(KvError::Server(format!("GET {key}: {status}: {body}")));
        }
        let raw: Vec<Raw> = serde_json::from_str(&body)
            .map_err(|e| KvError::Server(format!("GET {key}: bad response: {e}")))?;
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            let value = match r.value {
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|e| KvError::Server(format!("GET {}: bad base64: {e}", r.key)))?,
                None => Vec::new(),
            };
            out.push(KvEntry {
                key: r.key,
                value,
                modify_index: r.modify_index,
            });
        }
        Ok((index, out))
    }

    async fn write(
        &self,
        m: reqwest::Method,
        key: &str,
        body: Option<Vec<u8>>,
        q: Vec<(&str, String)>,
    ) -> Result<bool, KvError> {
        let mut r = self
            .req(m.clone(), self.url(key))
            .query(&q)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(KvError::Server(format!("{m} {key}: {status}: {text}")));
        }
        Ok(text.trim() == "true")
    }
}

impl Kv for ConsulKv {
    async fn get(&self, key: &str, blocking: Blocking) -> Result<(u64, Option<KvEntry>), KvError> {
        let (i, mut v) = self.read(key, false, blocking).await?;
        Ok((i, v.pop()))
    }

    async fn list(&self, prefix: &str, blocking: Blocking) -> Result<(u64, Vec<KvEntry>), KvError> {
        let (i, mut v) = self.read(prefix, true, blocking).await?;
        v.retain(|e| e.key.starts_with(prefix));
        v.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((i, v))
    }

    async fn put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool, KvError> {
        let q = cas
            .map(|c| vec![("cas", c.to_string())])
            .unwrap_or_default();
        self.write(reqwest::Method::PUT, key, Some(value.to_vec()), q)
            .await
    }

    async fn delete(&self, key: &str, cas: Option<u64>, recurse: bool) -> Result<bool, KvError> {
        let mut q = Vec::new();
        if let Some(c) = cas {
            q.push(("cas", c.to_string()));
        }
        if recurse {
            q.push(("recurse", "true".to_string()));
        }
        self.write(reqwest::Method::DELETE, key, None, q).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme_like_consul_cli() {
        assert_eq!(
            ConsulKvConfig::new("127.0.0.1:8500", None, false).address,
            "http://127.0.0.1:8500"
        );
        assert_eq!(
            ConsulKvConfig::new("c.example:8501", None, true).address,
            "https://c.example:8501"
        );
        assert_eq!(
            ConsulKvConfig::new("http://x:1/", Some(String::new()), true).address,
            "http://x:1"
        );
    }
}
