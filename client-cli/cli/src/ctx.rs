//! What every KV command needs: the store, the namespace and the output format.

use jobforge_client::consul::Client;
use jobforge_client::store::RequestStore;
use jobforge_client::store::consul_kv;
use jobforge_schema::{KeyLayout, check_namespace};

use crate::args::{Global, Output};
use crate::error::{CliError, CliResult};

/// The store type the CLI and the MCP facade use.
pub type Store = RequestStore<Client>;

/// Per-invocation context.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Typed request store.
    pub store: Store,
    /// `--namespace` (a DNS label; checked here, before any key is built).
    pub namespace: String,
    /// Every `--namespace` given (only `jobforge mcp` takes more than one: its scope).
    pub namespaces: Vec<String>,
    /// `--output`.
    pub output: Output,
    /// Whether the user chose the namespace (see [`Global::namespace_chosen`]).
    pub namespace_chosen: bool,
}

impl Ctx {
    /// Builds the context from global options (no network access yet).
    ///
    /// Errors: `--namespace` given more than once, or not a DNS label.
    pub fn new(g: &Global) -> CliResult<Self> {
        if g.namespace.len() > 1 {
            return Err(CliError::Input(format!(
                "--namespace given {} times; only `jobforge mcp` takes several",
                g.namespace.len()
            )));
        }
        Self::with_namespaces(g)
    }

    /// Like [`Ctx::new`], accepting several `--namespace` values (`jobforge mcp`); the first is
    /// the default namespace.
    pub fn with_namespaces(g: &Global) -> CliResult<Self> {
        for ns in &g.namespace {
            check_namespace(ns).map_err(|e| CliError::Input(format!("--namespace: {e}")))?;
        }
        let namespace = g
            .namespace
            .first()
            .cloned()
            .unwrap_or_else(|| "default".to_string());
        let kv = consul_kv::client_with_timeout(
            &g.consul_addr,
            g.token.as_deref(),
            g.consul_ssl,
            g.timeout,
        )?;
        Ok(Ctx {
            store: RequestStore::new(kv, KeyLayout::new(&g.prefix)),
            namespace,
            namespaces: g.namespace.clone(),
            output: g.output,
            namespace_chosen: g.namespace_chosen,
        })
    }
}
