//! The error type of the Consul layer.

use std::time::Duration;

/// Everything a Consul call can fail with.
///
/// `endpoint` is the short name also used as the `endpoint` label of the request metrics
/// (`kv_get`, `kv_put`, `txn`, `session_create`, ...).
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The client configuration (environment or builder) is unusable.
    #[error("invalid Consul configuration: {field}: {message}")]
    Config {
        /// The setting, e.g. `CONSUL_HTTP_ADDR`.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// An argument of a call was rejected before sending (Consul would reject it too).
    #[error("invalid argument {field}: {message}")]
    InvalidArgument {
        /// The argument, e.g. `ttl`.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The request never got an HTTP answer (connect, TLS, timeout, reset).
    #[error("Consul at {addr} unreachable ({endpoint}): {source}")]
    Transport {
        /// Base address of the agent, e.g. `http://127.0.0.1:8500`.
        addr: String,
        /// The endpoint label.
        endpoint: &'static str,
        /// The request's timeout (the request timeout, or a blocking query's wait plus margin):
        /// when `source.is_timeout()`, how long it waited for an answer.
        timeout: std::time::Duration,
        /// The underlying reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// Consul answered with an unexpected HTTP status.
    #[error("Consul {endpoint} answered HTTP {code}: {body}")]
    Status {
        /// The endpoint label.
        endpoint: &'static str,
        /// HTTP status code.
        code: u16,
        /// Response body (Consul's errors are plain text), truncated to 1 KiB.
        body: String,
    },
    /// Consul answered HTTP 409 (used by `/v1/txn` for rollbacks; other endpoints never should).
    #[error("Consul {endpoint} answered 409 Conflict: {body}")]
    Conflict {
        /// The endpoint label.
        endpoint: &'static str,
        /// Response body.
        body: String,
    },
    /// The answer could not be decoded (JSON shape, base64, missing `X-Consul-Index`).
    #[error("decoding Consul's {endpoint} answer: {message}")]
    Decode {
        /// The endpoint label.
        endpoint: &'static str,
        /// What did not parse.
        message: String,
    },
}

impl ConsulError {
    /// True when retrying the same request later may succeed: transport failures, HTTP 5xx and
    /// 429. Configuration, argument, 4xx and decoding errors are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsulError::Transport { .. } => true,
            ConsulError::Status { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }

    /// The HTTP status code, when Consul answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ConsulError::Status { code, .. } => Some(*code),
            ConsulError::Conflict { .. } => Some(409),
            _ => None,
        }
    }
}

/// Result alias of the Consul layer.
pub type Result<T, E = ConsulError> = std::result::Result<T, E>;

/// Truncates a response body for error messages (1 KiB, on a char boundary).
pub(crate) fn truncate_body(mut body: String) -> String {
    const MAX: usize = 1024;
    if body.len() > MAX {
        let mut cut = MAX;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push('…');
    }
    body
}

/// Formats a duration the way Consul parses it (Go `time.ParseDuration`): whole seconds as `15s`,
/// otherwise milliseconds as `1500ms`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_throttling_are_transient_client_errors_are_not() {
        let s = |code| ConsulError::Status {
            endpoint: "kv_get",
            code,
            body: String::new(),
        };
        assert!(s(500).is_transient());
        assert!(s(503).is_transient());
        assert!(s(429).is_transient());
        assert!(!s(400).is_transient());
        assert!(!s(403).is_transient());
        assert!(
            !ConsulError::Decode {
                endpoint: "kv_get",
                message: String::new()
            }
            .is_transient()
        );
    }

    #[test]
    fn durations_are_rendered_as_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_millis(1)), "1ms");
    }

    #[test]
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let b = truncate_body("é".repeat(1000));
        assert!(b.len() <= 1024 + '…'.len_utf8());
        assert!(b.ends_with('…'));
    }
}
