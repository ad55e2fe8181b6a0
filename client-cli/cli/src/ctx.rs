//! What every KV command needs: the store, the namespace and the output format.

use jobforge_client::consul::Client;
use jobforge_client::store::RequestStore;
use jobforge_client::store::consul_kv;
use jobforge_schema::KeyLayout;

use crate::args::{Global, Output};
use crate::error::CliResult;

/// The store type the CLI and the MCP facade use.
pub type Store = RequestStore<Client>;

/// Per-invocation context.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Typed request store.
    pub store: Store,
    /// `--namespace`.
    pub namespace: String,
    /// `--output`.
    pub output: Output,
    /// Whether the user chose the namespace (see [`Global::namespace_chosen`]).
    pub namespace_chosen: bool,
}

impl Ctx {
    /// Builds the context from global options (no network access yet).
    pub fn new(g: &Global) -> CliResult<Self> {
        let kv = consul_kv::client_with_timeout(
            &g.consul_addr,
            g.token.as_deref(),
            g.consul_ssl,
            g.timeout,
        )?;
        Ok(Ctx {
            store: RequestStore::new(kv, KeyLayout::new(&g.prefix)),
            namespace: g.namespace.clone(),
            output: g.output,
            namespace_chosen: g.namespace_chosen,
        })
    }
}
