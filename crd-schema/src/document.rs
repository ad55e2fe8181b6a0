//! Which kind of document a file is: a BuildRequest or the seed's flat `job_config`. Kept apart
//! from [`crate::parse`] (BuildRequest parsing) and [`crate::seed`] (seed conversion), which both
//! build on `parse`'s steps, so neither of those two modules needs the other.

use crate::parse::{Format, parse_value, request_from_value};
use crate::problem::Problems;
use crate::request::BuildRequest;
use crate::seed::{SeedJob, seed_job_from_value};

/// Either kind of document the CLI accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// A BuildRequest (`apiVersion`, `kind`, `metadata`, `spec`).
    Request(BuildRequest),
    /// The seed's flat `job_config` (optionally wrapped in `{"job_config": {...}}`).
    Seed(SeedJob),
}

/// Parses either a BuildRequest or a seed flat `job_config`: a top-level map with `apiVersion`,
/// `kind`, `metadata` or `spec` is a BuildRequest, anything else a seed job_config.
pub fn parse_document(bytes: &[u8], format: Format) -> Result<Document, Problems> {
    let value = parse_value(bytes, format)?;
    let is_request = value.as_object().is_some_and(|m| {
        ["apiVersion", "kind", "metadata", "spec"]
            .iter()
            .any(|k| m.contains_key(*k))
    });
    if is_request {
        request_from_value(&value).map(Document::Request)
    } else {
        seed_job_from_value(&value).map(Document::Seed)
    }
}
