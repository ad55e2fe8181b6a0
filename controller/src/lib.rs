//! The jobforge controller: drives BuildRequests stored in Consul KV to completion through Nomad
//! batch jobs, and writes their status back into KV.
//!
//! Map (see `ARCHITECTURE.md` for the data flow and invariants):
//! - [`nomad`]: Nomad HTTP client and the typed job specification.
//! - [`vault`]: Vault KV v2 existence checks of referenced secret paths.
//! - [`jobspec`]: pure rendering of a request's Nomad jobs, per phase and task profile.
//! - [`queue`]: the work queue (dedup, one reconcile per key, concurrency cap, backoff, requeue).
//! - [`machine`]: the pure phase state machine `(status, observation, now) -> (status, actions)`.

pub mod jobspec;
pub mod machine;
pub mod nomad;
pub mod queue;
pub mod vault;
