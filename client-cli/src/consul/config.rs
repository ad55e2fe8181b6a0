//! Client configuration: the agent address, ACL token, TLS verification and timeouts, from the
//! same environment variables HashiCorp's own tools read (`api.DefaultConfig` in hashicorp/consul).

use std::time::Duration;

use url::Url;

use super::error::{ConsulError, Result};

/// Default agent address when `CONSUL_HTTP_ADDR` is unset (as in the Go API client).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8500";

/// How to reach a Consul agent.
///
/// Build with [`Config::new`] (explicit address) or [`Config::from_env`], then adjust with the
/// `with_*` methods.
#[derive(Clone)]
pub struct Config {
    /// Base URL of the agent: scheme, host and port only, e.g. `http://127.0.0.1:8500`.
    pub address: Url,
    /// ACL token sent as `X-Consul-Token` on every request.
    pub token: Option<String>,
    /// Verify the agent's TLS certificate (`CONSUL_HTTP_SSL_VERIFY`, default true).
    pub tls_verify: bool,
    /// Timeout of a non-blocking request (default 30 s).
    pub request_timeout: Duration,
    /// Added to a blocking request's `wait + wait/16` (the server's jitter) to get its timeout
    /// (default 10 s).
    pub blocking_margin: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("address", &self.address.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_verify", &self.tls_verify)
            .field("request_timeout", &self.request_timeout)
            .field("blocking_margin", &self.blocking_margin)
            .finish()
    }
}

impl Config {
    /// A configuration for `addr`: `host:port` (http) or a URL with scheme `http` or `https`.
    ///
    /// Errors: [`ConsulError::Config`] naming `address` when it does not parse or uses another
    /// scheme (unix sockets are not supported).
    pub fn new(addr: &str) -> Result<Config> {
        Ok(Config {
            address: parse_address("address", addr, false)?,
            token: None,
            tls_verify: true,
            request_timeout: Duration::from_secs(30),
            blocking_margin: Duration::from_secs(10),
        })
    }

    /// Reads `CONSUL_HTTP_ADDR` (default `127.0.0.1:8500`), `CONSUL_HTTP_TOKEN`,
    /// `CONSUL_HTTP_SSL` and `CONSUL_HTTP_SSL_VERIFY` (Go `strconv.ParseBool` values) from the
    /// process environment.
    ///
    /// Errors: [`ConsulError::Config`] naming the variable that does not parse.
    pub fn from_env() -> Result<Config> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Config::from_env`] with an explicit variable lookup (for tests and embedding).
    ///
    /// As in the Go client, `CONSUL_HTTP_SSL=true` turns an `http://` address into https ("never
    /// revert to http if TLS was explicitly requested"), and an `https://` address is https
    /// whatever `CONSUL_HTTP_SSL` says.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let ssl = match non_empty("CONSUL_HTTP_SSL") {
            Some(v) => parse_bool("CONSUL_HTTP_SSL", &v)?,
            None => false,
        };
        let addr = non_empty("CONSUL_HTTP_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let mut cfg = Config::new(DEFAULT_ADDR)?;
        cfg.address = parse_address("CONSUL_HTTP_ADDR", &addr, ssl)?;
        if let Some(token) = non_empty("CONSUL_HTTP_TOKEN") {
            cfg = cfg.with_token_field("CONSUL_HTTP_TOKEN", token)?;
        }
        if let Some(v) = non_empty("CONSUL_HTTP_SSL_VERIFY") {
            cfg.tls_verify = parse_bool("CONSUL_HTTP_SSL_VERIFY", &v)?;
        }
        Ok(cfg)
    }

    /// Sets the ACL token sent as `X-Consul-Token`.
    ///
    /// Errors: [`ConsulError::Config`] when the token is not a valid header value (control
    /// characters).
    pub fn with_token(self, token: impl Into<String>) -> Result<Config> {
        self.with_token_field("token", token.into())
    }

    fn with_token_field(mut self, field: &'static str, token: String) -> Result<Config> {
        if reqwest::header::HeaderValue::from_str(&token).is_err() {
            return Err(ConsulError::Config {
                field,
                message:
                    "the token must be visible ASCII (it is sent as the X-Consul-Token header)"
                        .to_string(),
            });
        }
        self.token = Some(token);
        Ok(self)
    }

    /// Turns TLS certificate verification on or off.
    pub fn with_tls_verify(mut self, verify: bool) -> Config {
        self.tls_verify = verify;
        self
    }

    /// Sets the timeout of non-blocking requests.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Config {
        self.request_timeout = timeout;
        self
    }

    /// Sets the margin added to a blocking request's `wait + wait/16`.
    pub fn with_blocking_margin(mut self, margin: Duration) -> Config {
        self.blocking_margin = margin;
        self
    }

    /// The base address as text without a trailing slash, e.g. `http://127.0.0.1:8500`.
    pub fn base(&self) -> String {
        self.address.as_str().trim_end_matches('/').to_string()
    }
}

/// Go `strconv.ParseBool`: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False.
fn parse_bool(field: &'static str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ConsulError::Config {
            field,
            message: format!("{v:?} is not a boolean (allowed: true, false, 1, 0, t, f)"),
        }),
    }
}

fn parse_address(field: &'static str, addr: &str, force_https: bool) -> Result<Url> {
    let bad = |message: String| ConsulError::Config { field, message };
    let (scheme, rest) = match addr.split_once("://") {
        Some(("http", rest)) => (if force_https { "https" } else { "http" }, rest),
        Some(("https", rest)) => ("https", rest),
        Some((other, _)) => {
            return Err(bad(format!(
                "unsupported scheme {other:?} in {addr:?} (allowed: http, https, or host:port)"
            )));
        }
        None => (if force_https { "https" } else { "http" }, addr),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(bad(format!(
            "{addr:?} must be host:port or scheme://host:port without a path"
        )));
    }
    let url = Url::parse(&format!("{scheme}://{rest}"))
        .map_err(|e| bad(format!("{addr:?} does not parse as an address: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!("{addr:?} has no host")));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_to_local_agent_over_http() {
        let c = Config::from_lookup(env(&[])).unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8500");
        assert!(c.tls_verify);
        assert!(c.token.is_none());
    }

    #[test]
    fn host_port_with_ssl_true_becomes_https() {
        let c = Config::from_lookup(env(&[
            ("CONSUL_HTTP_ADDR", "consul.internal:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_SSL_VERIFY", "0"),
            ("CONSUL_HTTP_TOKEN", "s3cr3t"),
        ]))
        .unwrap();
        assert_eq!(c.base(), "https://consul.internal:8501");
        assert!(!c.tls_verify);
        assert_eq!(c.token.as_deref(), Some("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn https_url_is_https_and_http_url_never_downgrades_requested_tls() {
        let c = Config::from_lookup(env(&[("CONSUL_HTTP_ADDR", "https://h:1")])).unwrap();
        assert_eq!(c.base(), "https://h:1");
        let c = Config::from_lookup(env(&[
            ("CONSUL_HTTP_ADDR", "http://h:1"),
            ("CONSUL_HTTP_SSL", "1"),
        ]))
        .unwrap();
        assert_eq!(c.base(), "https://h:1");
        let c = Config::from_lookup(env(&[("CONSUL_HTTP_ADDR", "http://h:1/")])).unwrap();
        assert_eq!(c.base(), "http://h:1");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Config::from_lookup(env(&[("CONSUL_HTTP_SSL", "yes")])).unwrap_err();
        assert!(e.to_string().contains("CONSUL_HTTP_SSL"), "{e}");
        let e =
            Config::from_lookup(env(&[("CONSUL_HTTP_ADDR", "unix:///tmp/c.sock")])).unwrap_err();
        assert!(e.to_string().contains("CONSUL_HTTP_ADDR"), "{e}");
        let e = Config::from_lookup(env(&[("CONSUL_HTTP_TOKEN", "a\nb")])).unwrap_err();
        assert!(e.to_string().contains("CONSUL_HTTP_TOKEN"), "{e}");
        assert!(Config::new("http://h:1/v1").is_err());
    }
}
