//! Consul emulator (being written).
use std::path::PathBuf;
use std::sync::Arc;

/// Shared state of the Consul emulator.
#[derive(Debug, Default)]
pub struct ConsulState {}

impl ConsulState {
    /// Creates the state, loading `data_dir`'s snapshot when given.
    pub fn open(_data_dir: Option<PathBuf>) -> anyhow::Result<Arc<ConsulState>> {
        Ok(Arc::new(ConsulState {}))
    }
}

/// The Consul HTTP API router.
pub fn router(_state: Arc<ConsulState>) -> axum::Router {
    axum::Router::new()
}
