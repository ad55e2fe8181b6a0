//! CLI errors and their exit codes: 1 for anything about the request or its input, 2 when Consul
//! cannot be reached. Messages are single lines (or one line per problem), never a backtrace.

use jobforge_client::store::{KvError, StoreError};
use jobforge_schema::Problems;

/// Exit code for a request/input problem (unknown request, invalid file, failed build).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when Consul cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 2;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Store or KV error (unreachable Consul maps to exit 2).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A document had problems; each is printed on its own line with its path.
    #[error("{source_name} is invalid:\n{problems}")]
    Invalid {
        /// File name (or `-` for stdin).
        source_name: String,
        /// Every problem found.
        problems: Problems,
    },
    /// Bad input that is not a document problem (missing file, bad flag combination).
    #[error("{0}")]
    Input(String),
    /// The request ended in a non-success phase (`--wait`, `watch NAME`); the message was printed.
    #[error("{0}")]
    Finished(String),
}

impl CliError {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Store(StoreError::Kv(KvError::Unreachable { .. })) => EXIT_UNREACHABLE,
            _ => EXIT_FAILURE,
        }
    }
}

impl From<KvError> for CliError {
    fn from(e: KvError) -> Self {
        CliError::Store(StoreError::Kv(e))
    }
}

/// Shorthand result.
pub type CliResult<T> = Result<T, CliError>;
