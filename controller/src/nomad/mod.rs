//! Nomad: the HTTP client and the typed job specification.
//!
//! The client speaks the subset of Nomad's HTTP API jobforge needs (Nomad API docs, "Jobs",
//! "Allocations", "Evaluations", "Client FS logs"): register a job with `EnforceIndex`, read and
//! list jobs, watch a job's allocations with blocking queries (`index`/`wait`, answer index from
//! `X-Nomad-Index`), job summaries, evaluations with placement failures (`FailedTGAllocs`),
//! allocations with task states and events, deregister with `purge`, and allocation logs (plain or
//! the framed JSON stream).
//!
//! - [`config`]: [`Config`] from `NOMAD_ADDR`, `NOMAD_TOKEN`, `NOMAD_REGION`, `NOMAD_NAMESPACE`, ...
//! - [`error`]: [`Error`], with [`Error::is_transient`] for retry decisions.
//! - [`client`]: [`Client`] and the blocking-query types.
//! - [`job_answers`], [`alloc`], [`eval`]: wire types of what Nomad answers (PascalCase, unknown
//!   fields ignored, Nomad's `null` collections read as empty).
//! - [`logs`]: the log frame decoder and the log stream options.
//! - [`events`]: the event stream's ndjson decoder and event types.
//! - [`job_spec`]: the typed job specification jobforge renders and sends.

pub mod alloc;
pub mod client;
pub mod config;
pub mod error;
pub mod eval;
pub mod events;
pub mod job_answers;
pub mod job_spec;
pub mod logs;
mod wire;

/// The old name of [`job_spec`], kept so code written against it still compiles.
#[doc(hidden)]
pub use job_spec as job;

pub use alloc::{Allocation, AllocationStub, TaskEvent, TaskState};
pub use client::{Client, QueryOptions, join_tails};
pub use config::Config;
pub use error::Error;
pub use eval::{AllocMetric, Evaluation};
pub use events::{Event, EventBatch, LineDecoder};
pub use job_answers::{JobInfo, JobListStub, JobSummary, RegisterResponse, TaskGroupSummary};
pub use logs::{FrameDecoder, LogFrame, LogOptions, LogOrigin, LogStream};

/// Result of the Nomad client.
pub type Result<T, E = Error> = std::result::Result<T, E>;
