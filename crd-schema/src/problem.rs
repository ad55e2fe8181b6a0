//! Validation problems: every problem found in a document, each addressed by its JSON path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing wrong with a document.
///
/// `path` is a JSON path from the document root in dotted/indexed form (`spec.image_tags[2]`,
/// `metadata.labels["app"]`); the empty string (`""`) means the document as a whole (size,
/// syntax). `message` says what is wrong and what is allowed.
/// Serializes as `{"path": "...", "message": "..."}` (for JSON output and the MCP facade).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Problem {
    /// JSON path of the offending field, for example `spec.image_tags[2]`; `""` for the whole document.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one document; never empty when returned as an error.
///
/// `Display` writes one `path: message` per line (no trailing newline); serializes as a JSON list
/// of [`Problem`]s.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// One problem.
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problems(vec![Problem::new(path, message)])
    }

    /// Whether no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the problems in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }

    /// Records a problem.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    /// Prefixes every path with `prefix` (for example a file name: `build.yaml: spec.owner`).
    pub fn prefixed(self, prefix: &str) -> Self {
        Problems(
            self.0
                .into_iter()
                .map(|p| Problem {
                    path: if p.path.is_empty() {
                        prefix.to_string()
                    } else {
                        format!("{prefix}: {}", p.path)
                    },
                    message: p.message,
                })
                .collect(),
        )
    }

    /// `Ok(())` when empty, `Err(self)` otherwise.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Appends a field name to a JSON path (`spec` + `owner` = `spec.owner`). Names that are not
/// plain identifiers are quoted: `metadata.labels["app.kubernetes.io/name"]`.
pub fn join_field(path: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => name.to_string(),
        (false, true) => format!("{path}.{name}"),
        (_, false) => format!("{path}[{}]", serde_json::Value::from(name)),
    }
}

/// Appends an index to a JSON path (`spec.image_tags` + 2 = `spec.image_tags[2]`).
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}
