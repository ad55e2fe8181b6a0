//! [`Kv`] over our Consul client ([`crate::consul::Client`], Consul's `/v1/kv` endpoint with
//! blocking queries and CAS). Transport failures become [`KvError::Unreachable`] naming the
//! address; an ACL refusal (HTTP 403) becomes [`KvError::Denied`] naming the key, what was tried
//! and the permission the token lacks; every other client error becomes [`KvError::Server`].

use crate::consul::{Client, Config, ConsulError, DeleteOptions, KvPair, PutOptions, QueryOptions};

use super::{Blocking, Kv, KvEntry, KvError};

/// Builds a Consul client the way HashiCorp's tools do: `addr` is `CONSUL_HTTP_ADDR`'s value
/// (`host:port` or a URL), `token` is `CONSUL_HTTP_TOKEN`'s, `ssl` is `CONSUL_HTTP_SSL`; the other
/// `CONSUL_*` variables the client understands (for example `CONSUL_HTTP_SSL_VERIFY`) come from
/// the environment.
///
/// Errors: [`KvError::Config`] for an address the client cannot parse.
pub fn client(addr: &str, token: Option<&str>, ssl: bool) -> Result<Client, KvError> {
    client_with_timeout(addr, token, ssl, DEFAULT_TIMEOUT)
}

/// Default timeout of one non-blocking Consul request of the CLI and the MCP facade
/// (`--timeout`, `JOBFORGE_CONSUL_TIMEOUT`): a frozen or black-holed Consul ends a command with
/// an error naming the address within this long instead of hanging.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`client`] whose non-blocking requests give up after `timeout` (blocking reads after their
/// wait plus the client's margin). A request that times out is
/// [`KvError::Unreachable`] saying what it waited for, how long, and the address.
pub fn client_with_timeout(
    addr: &str,
    token: Option<&str>,
    ssl: bool,
    timeout: std::time::Duration,
) -> Result<Client, KvError> {
    let cfg = Config::from_lookup(|name| match name {
        "CONSUL_HTTP_ADDR" => Some(addr.to_string()),
        "CONSUL_HTTP_TOKEN" => token.map(str::to_string),
        "CONSUL_HTTP_SSL" => ssl.then(|| "true".to_string()),
        other => std::env::var(other).ok(),
    })
    .map_err(|e| KvError::Config(e.to_string()))?
    .with_request_timeout(timeout);
    Client::new(cfg).map_err(|e| KvError::Config(e.to_string()))
}

/// [`map_err`] for a call on `key`: a 403 names the key, the operation and the permission.
fn map_err_at(e: ConsulError, op: &'static str, key: &str) -> KvError {
    match e {
        ConsulError::Status {
            code: 403, body, ..
        } => KvError::Denied {
            op,
            key: key.to_string(),
            permission: match op {
                "read" => "read",
                "list" => "list",
                _ => "write",
            },
            detail: body.trim().to_string(),
        },
        other => map_err(other),
    }
}

fn map_err(e: ConsulError) -> KvError {
    match e {
        ConsulError::Transport {
            addr,
            endpoint,
            timeout,
            source,
        } if source.is_timeout() => KvError::Unreachable {
            addr,
            message: format!(
                "timed out after {} waiting for Consul's answer to {endpoint} (--timeout / JOBFORGE_CONSUL_TIMEOUT)",
                humantime::format_duration(timeout)
            ),
        },
        ConsulError::Transport { addr, source, .. } => {
            // The innermost cause ("Connection refused", "dns error: ...") is the useful part;
            // the outer layers repeat the URL.
            let mut message = source.to_string();
            let mut src = std::error::Error::source(&source);
            while let Some(s) = src {
                message = s.to_string();
                src = s.source();
            }
            KvError::Unreachable { addr, message }
        }
        other => KvError::Server(other.to_string()),
    }
}

fn entry(p: KvPair) -> KvEntry {
    KvEntry {
        key: p.key,
        value: p.value,
        modify_index: p.modify_index,
    }
}

fn query(b: Blocking) -> QueryOptions {
    QueryOptions {
        index: b.index,
        wait: if b.index > 0 { b.wait } else { None },
        ..QueryOptions::default()
    }
}

impl Kv for Client {
    async fn get(&self, key: &str, blocking: Blocking) -> Result<(u64, Option<KvEntry>), KvError> {
        let (i, p) = self
            .kv_get(key, query(blocking))
            .await
            .map_err(|e| map_err_at(e, "read", key))?;
        Ok((i, p.map(entry)))
    }

    async fn list(&self, prefix: &str, blocking: Blocking) -> Result<(u64, Vec<KvEntry>), KvError> {
        let (i, ps) = self
            .kv_list(prefix, query(blocking))
            .await
            .map_err(|e| map_err_at(e, "list", prefix))?;
        let mut v: Vec<KvEntry> = ps
            .into_iter()
            .map(entry)
            .filter(|e| e.key.starts_with(prefix))
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((i, v))
    }

    async fn put(&self, key: &str, value: &[u8], cas: Option<u64>) -> Result<bool, KvError> {
        let opts = PutOptions {
            cas,
            ..PutOptions::default()
        };
        self.kv_put(key, value, opts)
            .await
            .map_err(|e| map_err_at(e, "write", key))
    }

    async fn delete(&self, key: &str, cas: Option<u64>, recurse: bool) -> Result<bool, KvError> {
        self.kv_delete(key, DeleteOptions { cas, recurse })
            .await
            .map_err(|e| map_err_at(e, "delete", key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_403_names_the_key_the_operation_and_the_missing_permission() {
        let body = "Permission denied: token with AccessorID 'a1' lacks permission 'key:write' on \"jobforge/requests/team-b/x\"";
        let e = map_err_at(
            ConsulError::Status {
                endpoint: "kv_put",
                code: 403,
                body: body.into(),
            },
            "write",
            "jobforge/requests/team-b/x",
        );
        assert_eq!(
            e.to_string(),
            format!(
                "Consul refused to write jobforge/requests/team-b/x: the ACL token in use \
                 (CONSUL_HTTP_TOKEN or --token) lacks key:write permission on it (HTTP 403: {body})"
            )
        );
        let other = map_err_at(
            ConsulError::Status {
                endpoint: "kv_get",
                code: 500,
                body: "boom".into(),
            },
            "read",
            "k",
        );
        assert!(matches!(other, KvError::Server(_)), "{other:?}");
    }
}
