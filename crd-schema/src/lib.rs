//! BuildRequest and BuildStatus documents of jobforge: types, validation, JSON Schema, KV key layout
//! and the condition/reason vocabulary. This crate does no I/O.
//!
//! - [`request`]: the desired-state document clients write (`BuildRequest`).
//! - [`status`]: the observed-state document the controller writes (`BuildStatus`).
//! - [`reason`]: the reason vocabulary shared by conditions, failures, metrics and webhooks.
//! - [`keys`]: where each document lives in Consul KV.

pub mod keys;
pub mod reason;
pub mod request;
pub mod status;

pub use keys::KeyLayout;
pub use reason::Reason;
pub use request::{
    BuildRequest, BuildSpec, Constraint, ObjectMeta, PhaseResources, ResourceLimits, TestSpec,
    VaultSecret, WebhookEvent, WebhookSpec,
};
pub use status::{
    BuildStatus, Condition, ConditionStatus, Failure, ImageStatus, Phase, PhaseRecord,
    PhaseRecords, PipelinePhase, SourceStatus, WebhookStatus,
};
