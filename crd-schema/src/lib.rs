//! BuildRequest and BuildStatus documents of jobforge: types, validation, JSON Schema, KV key layout
//! and the condition/reason vocabulary. This crate does no I/O.
//!
//! - [`request`]: the desired-state document clients write (`BuildRequest`).
//! - [`status`]: the observed-state document the controller writes (`BuildStatus`).
//! - [`reason`]: the reason vocabulary shared by conditions, failures, metrics and webhooks.
//! - [`keys`]: where each document lives in Consul KV.
//! - [`parse`]: bytes (JSON or YAML, ≤ 512 KiB) → validated `BuildRequest`, every problem at once.
//! - [`document`]: either kind of input file (a BuildRequest or the seed's job_config).
//! - [`validate`](mod@validate): the semantic rules, with [`grammar`] for single values.
//! - [`seed`]: the seed's flat `job_config` and `global.yaml` + `build.yaml` merge.
//! - [`tenancy`]: what a namespace's request may name (Vault paths, credentials' hosts, headers).
//! - [`schema`]: the JSON Schema (`crd-schema/buildrequest.schema.json`).
//!
//! # Editor validation
//!
//! Put the YAML-language-server modeline on the first line of a BuildRequest file so editors
//! validate and complete it against the checked-in schema (path relative to the file, or a URL):
//!
//! ```yaml
//! # yaml-language-server: $schema=../crd-schema/buildrequest.schema.json
//! apiVersion: jobforge/v1alpha1
//! kind: BuildRequest
//! metadata: {name: myapp-42}
//! spec: {owner: team-a, repo_url: "https://git.example.com/a.git", git_ref: main,
//!        image_name: myapp, registry_url: "registry.internal:5000"}
//! ```
//!
//! # Example
//!
//! ```
//! use jobforge_schema::{Format, parse_request};
//! let doc = br#"{"apiVersion": "jobforge/v1alpha1", "kind": "BuildRequest",
//!   "metadata": {"name": "app"}, "spec": {"owner": "t", "repo_url": "https://h/r.git",
//!   "git_ref": "main", "image_name": "app", "registry_url": "r:5000", "image_tags": ["Latest!"]}}"#;
//! let err = parse_request(doc, Format::Json).unwrap_err();
//! assert_eq!(err.to_string(),
//!     r#"spec.image_tags[0]: "Latest!" is not a valid tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"#);
//! ```

pub mod accessors;
pub mod document;
pub mod grammar;
pub mod keys;
pub mod parse;
pub mod problem;
pub mod reason;
pub mod request;
pub mod schema;
pub mod seed;
pub mod status;
mod structure;
pub mod tenancy;
pub mod validate;

pub use accessors::{DEFAULT_TAGS, InvalidResource, ResolvedResources, resolve};
pub use document::{Document, parse_document};
pub use keys::{KeyClass, KeyLayout, RefError, check_namespace, check_request_ref};
pub use parse::{Format, MAX_DOCUMENT_BYTES, parse_request, parse_value};
pub use problem::{Problem, Problems};
pub use reason::Reason;
pub use request::{
    BuildRequest, BuildSecret, BuildSpec, Constraint, ObjectMeta, PhaseResources, ResourceLimits,
    TestSpec, VaultSecret, WebhookEvent, WebhookSpec,
};
pub use schema::request_schema;
pub use seed::{SeedJob, merge_global_and_build, merge_named, parse_seed_job};
pub use status::{
    BaseImage, BuildStatus, Condition, ConditionStatus, Failure, ImageStatus, Phase, PhaseRecord,
    PhaseRecords, PipelinePhase, SourceStatus, WebhookStatus,
};
pub use validate::{validate, validate_spec};
