//! The jobforge controller: drives BuildRequests stored in Consul KV to completion through Nomad
//! batch jobs, and writes their status back into KV.
//!
//! Map (see `ARCHITECTURE.md` for the data flow and invariants):
//! - [`runtime`]: leadership, watches, the leader term; start reading here.
//! - [`reconcile`]: the I/O shell around the state machine (one request, one step).
//! - [`machine`]: the pure phase state machine `(status, observation, now) -> (status, actions)`.
//! - [`queue`]: the work queue (dedup, one reconcile per key, concurrency cap, backoff, requeue).
//! - [`jobspec`]: pure rendering of a request's Nomad jobs, per phase and task profile.
//! - [`jobwatch`]: blocking watches of in-flight Nomad jobs' allocations.
//! - [`nomad`]: Nomad HTTP client and the typed job specification.
//! - [`vault`]: Vault KV v2 existence checks of referenced secret paths.
//! - [`webhook`]: signed webhook delivery, at least once, through a fenced outbox.
//! - [`egress`]: which addresses request-controlled calls (webhooks) may reach.
//! - [`logging`]: the log subscriber (format, filter, colour only on a terminal).
//! - [`config`], [`health`]: flags and KV configuration; `/healthz`, `/readyz`, `/status`, `/metrics`.

pub mod config;
pub mod egress;
pub mod health;
pub mod jobspec;
pub mod jobwatch;
pub mod logging;
pub mod machine;
pub mod nomad;
pub mod queue;
pub mod reconcile;
pub mod runtime;
pub mod supply_chain;
pub mod sweep;
pub mod vault;
pub mod webhook;
