//! Our Consul HTTP client, the watch stream and leader election with fencing.
//!
//! - [`Client`]: KV (get, list, keys, raw, put with cas/acquire/release/flags, delete with
//!   cas/recurse), `/v1/txn`, sessions. Reads return `X-Consul-Index` also for missing keys,
//!   which is what makes blocking watches on absent keys possible.
//! - [`watch`]: a `Stream` of added/modified/deleted keys (of one key, a prefix, or just the key
//!   names under a prefix) following Consul's blocking-query rules.
//! - [`leader`]: leader election on a session lock, and fenced writes that commit only while the
//!   session still holds the leader key.
//!
//! Semantics follow hashicorp/consul's `api-docs/{kv,txn,session}` and `api/lock.go`; the facts
//! relied on are in `docs/consul-nomad-vault-semantics.md` § Consul KV.

pub mod agent;
mod client;
mod config;
pub mod duration;
mod error;
pub mod fence;
mod kv;
pub mod leader;
mod session;
mod txn;
pub mod watch;

pub use agent::ServiceRegistration;
pub use client::{Client, METRIC_BLOCKING_WAIT, METRIC_REQUEST_DURATION, METRIC_REQUEST_ERRORS};
pub use config::{Config, DEFAULT_ADDR};
pub use error::{ConsulError, Result};
pub use kv::{DEFAULT_WAIT, DeleteOptions, KvPair, MAX_WAIT, PutOptions, QueryOptions};
pub use session::{
    MAX_LOCK_DELAY, MAX_SESSION_TTL, MIN_SESSION_TTL, SessionBehavior, SessionInfo, SessionRequest,
};
pub use txn::{MAX_TXN_OPS, TxnError, TxnOp, TxnResult};
