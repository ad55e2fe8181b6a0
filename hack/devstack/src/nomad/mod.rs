//! Nomad emulator (being written).
use std::path::PathBuf;
use std::sync::Arc;

/// Options of the Nomad emulator.
#[derive(Debug, Clone, Default)]
pub struct NomadOptions {
    /// Where allocation directories live; a temp dir when `None`.
    pub data_dir: Option<PathBuf>,
    /// Vault address templates read secrets from (`http://127.0.0.1:8200`).
    pub vault_addr: Option<String>,
    /// Token templates use to read Vault.
    pub vault_token: Option<String>,
}

/// Shared state of the Nomad emulator.
#[derive(Debug, Default)]
pub struct NomadState {}

impl NomadState {
    /// Creates the emulator state.
    pub fn new(_opts: NomadOptions) -> anyhow::Result<Arc<NomadState>> {
        Ok(Arc::new(NomadState {}))
    }

    /// Kills every running task (SIGTERM, then SIGKILL after its KillTimeout) and waits for them.
    pub async fn shutdown(&self) {}
}

/// The Nomad HTTP API router.
pub fn router(_state: Arc<NomadState>) -> axum::Router {
    axum::Router::new()
}
