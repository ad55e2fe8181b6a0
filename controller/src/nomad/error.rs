//! Errors of the Nomad client. Nomad answers errors as plain text with an HTTP status (Nomad API
//! docs, "HTTP API": errors are not JSON), so [`Error::Status`] keeps the body verbatim.

/// What went wrong talking to Nomad.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration (an environment variable or a builder value).
    #[error("invalid Nomad configuration {var}: {reason}")]
    Config {
        /// The variable or field, for example `NOMAD_ADDR`.
        var: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Invalid argument to a client call (checked before anything is sent).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The argument, for example `job id`.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The request did not get an HTTP answer (connection refused, reset, timeout, TLS).
    #[error("Nomad at {addr} unreachable ({endpoint}): {source}")]
    Transport {
        /// The Nomad address (`NOMAD_ADDR`).
        addr: String,
        /// The endpoint label, for example `job_allocations`.
        endpoint: &'static str,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// Nomad answered with a non-success status; `body` is Nomad's plain-text error.
    #[error("Nomad {endpoint} answered {code}: {body}")]
    Status {
        /// The endpoint label.
        endpoint: &'static str,
        /// HTTP status code.
        code: u16,
        /// Response body (plain text, trimmed).
        body: String,
    },
    /// The answer was not the JSON we expected.
    #[error("cannot decode Nomad {endpoint} answer: {source}")]
    Decode {
        /// The endpoint label.
        endpoint: &'static str,
        /// The JSON error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// `register_job` with `EnforceIndex` and index 0 found the job already registered
    /// (Nomad: "Enforcing job modify index 0: job already exists").
    #[error("Nomad job {job_id} already exists")]
    JobExists {
        /// The job ID.
        job_id: String,
    },
    /// `register_job` with `EnforceIndex` and index N > 0 found another `JobModifyIndex`
    /// (Nomad: "Enforcing job modify index N: job exists with conflicting job modify index: M").
    #[error("Nomad job {job_id} changed: {body}")]
    IndexConflict {
        /// The job ID.
        job_id: String,
        /// The index we enforced.
        expected: u64,
        /// Nomad's message.
        body: String,
    },
    /// A framed log stream was malformed (bad JSON or bad base64 in `Data`).
    #[error("malformed Nomad log frame: {reason}")]
    LogFrame {
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// Whether retrying the same call later may succeed: transport failures, 5xx answers
    /// (except the `EnforceIndex` conflicts, which are deterministic) and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Status { code, .. } => *code >= 500 || *code == 429,
            Error::Config { .. }
            | Error::InvalidInput { .. }
            | Error::Decode { .. }
            | Error::JobExists { .. }
            | Error::IndexConflict { .. }
            | Error::LogFrame { .. } => false,
        }
    }

    /// The HTTP status if Nomad answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_transient_client_errors_are_not() {
        let s = |code| Error::Status {
            endpoint: "get_job",
            code,
            body: String::new(),
        };
        assert!(s(500).is_transient());
        assert!(s(503).is_transient());
        assert!(s(429).is_transient());
        assert!(!s(400).is_transient());
        assert!(!s(403).is_transient());
        assert!(!Error::JobExists { job_id: "j".into() }.is_transient());
    }
}
