//! Client configuration from the same environment variables as the `nomad` CLI (Nomad docs,
//! "Nomad CLI environment variables").

use std::path::PathBuf;
use std::time::Duration;

use super::Error;

/// Default Nomad address (`nomad` CLI default).
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:4646";

/// How to reach Nomad.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Base URL, `http` or `https` (`NOMAD_ADDR`, default `http://127.0.0.1:4646`).
    pub address: url::Url,
    /// ACL token sent as `X-Nomad-Token` (`NOMAD_TOKEN`).
    pub token: Option<String>,
    /// Region sent as the `region` query parameter on every request (`NOMAD_REGION`).
    pub region: Option<String>,
    /// Namespace sent as the `namespace` query parameter on every request (`NOMAD_NAMESPACE`).
    pub namespace: Option<String>,
    /// PEM CA bundle trusted for `https` (`NOMAD_CACERT`).
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate (`NOMAD_SKIP_VERIFY`=`true`/`1`). Never in production.
    pub skip_verify: bool,
    /// TCP connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Timeout of a non-blocking request (default 30 s). Blocking queries get `wait` plus
    /// Nomad's jitter (`wait/16`) plus this; followed log streams have none.
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: default_addr(),
            token: None,
            region: None,
            namespace: None,
            ca_cert: None,
            skip_verify: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[allow(clippy::unwrap_used)] // a constant literal that always parses (tested below)
fn default_addr() -> url::Url {
    url::Url::parse(DEFAULT_ADDR).unwrap()
}

impl Config {
    /// A configuration for `address` with every other field at its default.
    ///
    /// Errors: [`Error::Config`] when `address` is not an absolute `http`/`https` URL.
    pub fn with_address(address: &str) -> Result<Config, Error> {
        Ok(Config {
            address: parse_addr(address)?,
            ..Config::default()
        })
    }

    /// Reads `NOMAD_ADDR`, `NOMAD_TOKEN`, `NOMAD_REGION`, `NOMAD_NAMESPACE`, `NOMAD_CACERT` and
    /// `NOMAD_SKIP_VERIFY` from the process environment. Empty values count as unset.
    ///
    /// Errors: [`Error::Config`] naming the variable (bad URL, bad boolean).
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_env`] with a custom lookup (tests, layered configuration).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut cfg = Config::default();
        if let Some(a) = get("NOMAD_ADDR") {
            cfg.address = parse_addr(&a)?;
        }
        cfg.token = get("NOMAD_TOKEN");
        cfg.region = get("NOMAD_REGION");
        cfg.namespace = get("NOMAD_NAMESPACE");
        cfg.ca_cert = get("NOMAD_CACERT").map(PathBuf::from);
        if let Some(v) = get("NOMAD_SKIP_VERIFY") {
            cfg.skip_verify = parse_bool(&v).ok_or_else(|| Error::Config {
                var: "NOMAD_SKIP_VERIFY",
                reason: format!("{v:?} is not a boolean (allowed: true, false, 1, 0)"),
            })?;
        }
        Ok(cfg)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

fn parse_addr(a: &str) -> Result<url::Url, Error> {
    let bad = |reason: String| Error::Config {
        var: "NOMAD_ADDR",
        reason,
    };
    let url = url::Url::parse(a.trim()).map_err(|e| bad(format!("{a:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "{a:?} has scheme {:?}; allowed: http, https",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(bad(format!("{a:?} has no host")));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn empty_environment_gives_the_cli_defaults() {
        let c = Config::from_lookup(lookup(&[])).unwrap();
        assert_eq!(c.address.as_str(), "http://127.0.0.1:4646/");
        assert_eq!(c.token, None);
        assert!(!c.skip_verify);
    }

    #[test]
    fn environment_variables_are_read() {
        let c = Config::from_lookup(lookup(&[
            ("NOMAD_ADDR", "https://nomad.example:4646"),
            ("NOMAD_TOKEN", "tok"),
            ("NOMAD_REGION", "eu"),
            ("NOMAD_NAMESPACE", "builds"),
            ("NOMAD_SKIP_VERIFY", "true"),
        ]))
        .unwrap();
        assert_eq!(c.address.as_str(), "https://nomad.example:4646/");
        assert_eq!(c.token.as_deref(), Some("tok"));
        assert_eq!(c.region.as_deref(), Some("eu"));
        assert_eq!(c.namespace.as_deref(), Some("builds"));
        assert!(c.skip_verify);
    }

    #[test]
    fn bad_address_and_boolean_name_the_variable() {
        let e = Config::from_lookup(lookup(&[("NOMAD_ADDR", "ftp://x")])).unwrap_err();
        assert!(e.to_string().contains("NOMAD_ADDR"), "{e}");
        let e = Config::from_lookup(lookup(&[("NOMAD_SKIP_VERIFY", "maybe")])).unwrap_err();
        assert!(e.to_string().contains("NOMAD_SKIP_VERIFY"), "{e}");
    }
}
