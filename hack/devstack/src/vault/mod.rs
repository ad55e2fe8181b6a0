//! Vault emulator (being written).
use std::sync::Arc;

/// Shared state of the Vault emulator.
#[derive(Debug, Default)]
pub struct VaultState {}

impl VaultState {
    /// Creates the state with the dev root token.
    pub fn new(_root_token: &str) -> Arc<VaultState> {
        Arc::new(VaultState {})
    }
}

/// The Vault HTTP API router.
pub fn router(_state: Arc<VaultState>) -> axum::Router {
    axum::Router::new()
}
