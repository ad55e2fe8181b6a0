//! The one vocabulary of reasons used in conditions, failures, metrics labels and webhook payloads.
//!
//! Reasons are CamelCase, as `metav1.Condition.reason` requires. The set is closed: adding a reason
//! is a schema change (and a new row in the table below).
//!
//! | reason | when | condition `Succeeded` |
//! |---|---|---|
//! | `Pending` | accepted, no job yet, or the job waits for placement | Unknown |
//! | `Building` / `Testing` / `Publishing` | that phase's Nomad job runs | Unknown |
//! | `Succeeded` | every tag published | True |
//! | `InvalidSpec` | the document does not parse or validate; every problem is in the message | False |
//! | `BuildFailed` | clone, `buildah bud` or the temp push exited non-zero | False |
//! | `TestFailed` | the entry point or a test command exited non-zero | False |
//! | `PublishFailed` | copying to a final tag failed | False |
//! | `Timeout` | `build_timeout` or `test.timeout` passed; the job was stopped | False |
//! | `Cancelled` | `spec.cancel: true` | False |
//! | `Unschedulable` | Nomad placed no allocation (the evaluation's reason is in the message); the job waits | Unknown |
//! | `SecretNotFound` | a referenced Vault path does not exist; no job was created | False |
//! | `NomadUnavailable` | Nomad did not answer; the controller retries with backoff | Unknown |
//! | `GitRevisionNotFound` | `git_ref` does not exist in the repository | False |
//! | `RetryScheduled` | a failed attempt will be retried (`retries`) | Unknown |
//! | `Queued` | waits for a build slot (namespace or global concurrency cap); the message gives its position | Unknown |
//! | `Superseded` | a newer request of the same `concurrency_group` started; the message names it | False |

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reason from jobforge's vocabulary (see the module docs for when each applies).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Reason {
    /// Accepted; no job yet, or waiting for placement.
    #[default]
    Pending,
    /// The build job runs.
    Building,
    /// The test job runs.
    Testing,
    /// The publish job runs.
    Publishing,
    /// Every tag is published.
    Succeeded,
    /// The document is invalid; no job was created.
    InvalidSpec,
    /// The build phase failed.
    BuildFailed,
    /// A test failed.
    TestFailed,
    /// Publishing a tag failed.
    PublishFailed,
    /// A phase deadline passed; its job was stopped.
    Timeout,
    /// Stopped by `spec.cancel: true`.
    Cancelled,
    /// Nomad could not place the job; it waits for capacity.
    Unschedulable,
    /// A referenced Vault secret path does not exist.
    SecretNotFound,
    /// Nomad did not answer; retried with backoff.
    NomadUnavailable,
    /// `git_ref` is not in the repository.
    GitRevisionNotFound,
    /// The pipeline failed and will be retried.
    RetryScheduled,
    /// Waits for a build slot (a concurrency cap is reached); phase `Pending`.
    Queued,
    /// A newer request of the same `concurrency_group` started; phase `Cancelled`.
    Superseded,
}

impl Reason {
    /// Every reason of the vocabulary.
    pub const ALL: [Reason; 18] = [
        Reason::Pending,
        Reason::Building,
        Reason::Testing,
        Reason::Publishing,
        Reason::Succeeded,
        Reason::InvalidSpec,
        Reason::BuildFailed,
        Reason::TestFailed,
        Reason::PublishFailed,
        Reason::Timeout,
        Reason::Cancelled,
        Reason::Unschedulable,
        Reason::SecretNotFound,
        Reason::NomadUnavailable,
        Reason::GitRevisionNotFound,
        Reason::RetryScheduled,
        Reason::Queued,
        Reason::Superseded,
    ];

    /// The CamelCase name written in documents and used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Pending => "Pending",
            Reason::Building => "Building",
            Reason::Testing => "Testing",
            Reason::Publishing => "Publishing",
            Reason::Succeeded => "Succeeded",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::BuildFailed => "BuildFailed",
            Reason::TestFailed => "TestFailed",
            Reason::PublishFailed => "PublishFailed",
            Reason::Timeout => "Timeout",
            Reason::Cancelled => "Cancelled",
            Reason::Unschedulable => "Unschedulable",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::NomadUnavailable => "NomadUnavailable",
            Reason::GitRevisionNotFound => "GitRevisionNotFound",
            Reason::RetryScheduled => "RetryScheduled",
            Reason::Queued => "Queued",
            Reason::Superseded => "Superseded",
        }
    }

    /// Whether a request with this failure reason may be retried under `spec.retries`
    /// (never after an invalid spec, a missing secret or a cancel).
    pub fn is_retryable_failure(self) -> bool {
        matches!(
            self,
            Reason::BuildFailed
                | Reason::TestFailed
                | Reason::PublishFailed
                | Reason::Timeout
                | Reason::GitRevisionNotFound
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_name_equals_as_str_for_every_reason() {
        for r in Reason::ALL {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }

    #[test]
    fn module_table_documents_every_reason() {
        let doc = include_str!("reason.rs");
        for r in Reason::ALL {
            assert!(
                doc.contains(&format!("`{}`", r.as_str())),
                "{r} missing from the table"
            );
        }
    }
}
