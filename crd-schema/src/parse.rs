//! Parsing a BuildRequest from JSON or YAML bytes, reporting every problem with its path.
//!
//! Steps, each stopping the pipeline when it finds problems:
//! 1. size: at most [`MAX_DOCUMENT_BYTES`] (512 KiB, Consul's default `kv_max_value_size`, see
//!    Consul's agent configuration reference, `limits.kv_max_value_size`);
//! 2. syntax: JSON (serde_json) or YAML (serde_yaml_ng) errors with line and column (YAML tabs and
//!    duplicate keys included);
//! 3. shape: a walk of the value against the JSON Schema collecting every unknown field, missing
//!    required field and wrong type at once;
//! 4. typed deserialization (serde_path_to_error, for anything the walk missed);
//! 5. semantics: [`crate::validate()`].
//!
//! Nothing here panics on any input.

use std::path::Path;
use std::sync::LazyLock;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::Problems;
use crate::request::BuildRequest;
use crate::schema::request_schema;
use crate::seed::{SeedJob, seed_job_from_value};
use crate::structure::walk;
use crate::validate::validate;

/// Largest document accepted, in bytes: 512 KiB, Consul's default `kv_max_value_size`.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

static SCHEMA: LazyLock<Value> = LazyLock::new(request_schema);

/// Serialization of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JSON (RFC 8259).
    Json,
    /// YAML 1.2 (one document).
    Yaml,
}

impl Format {
    /// Guesses from content: JSON when the first non-whitespace byte is `{` or `[`, YAML otherwise.
    /// (JSON is also YAML, but the JSON parser gives better messages for JSON.)
    pub fn detect(bytes: &[u8]) -> Format {
        let first = bytes
            .iter()
            .copied()
            .find(|b| !(b.is_ascii_whitespace() || *b == 0xEF || *b == 0xBB || *b == 0xBF));
        match first {
            Some(b'{') | Some(b'[') => Format::Json,
            _ => Format::Yaml,
        }
    }

    /// From a file extension: `.json` is JSON, `.yaml`/`.yml` YAML, anything else `None`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }

    /// From the extension when it names a format, else from content.
    pub fn for_file(path: &Path, bytes: &[u8]) -> Format {
        Format::from_path(path).unwrap_or_else(|| Format::detect(bytes))
    }
}

/// Checks the size and parses the syntax into a JSON value (steps 1 and 2). Problems have the
/// empty path (the whole document).
pub fn parse_value(bytes: &[u8], format: Format) -> Result<Value, Problems> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Problems::one(
            "",
            format!(
                "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes (512 KiB, Consul's kv_max_value_size)",
                bytes.len()
            ),
        ));
    }
    match format {
        Format::Json => serde_json::from_slice::<Value>(bytes).map_err(|e| {
            Problems::one(
                "",
                format!(
                    "JSON syntax error at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        }),
        Format::Yaml => serde_yaml_ng::from_slice::<Value>(bytes).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            Problems::one("", format!("YAML syntax error{at}: {e}"))
        }),
    }
}

/// Parses and validates a BuildRequest (all five steps); `Err` holds every problem found.
///
/// `metadata.namespace` defaults to `default`. Paths are from the document root (`spec.image_tags[2]`).
pub fn parse_request(bytes: &[u8], format: Format) -> Result<BuildRequest, Problems> {
    let value = parse_value(bytes, format)?;
    request_from_value(&value)
}

/// Steps 3 to 5 of [`parse_request`] on an already parsed value.
pub fn request_from_value(value: &Value) -> Result<BuildRequest, Problems> {
    let mut p = Problems::default();
    walk(&SCHEMA, &SCHEMA, value, "", &mut p);
    p.into_result()?;
    let req: BuildRequest = typed(value)?;
    validate(&req)?;
    Ok(req)
}

/// Typed deserialization with the failing path (step 4).
pub(crate) fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, Problems> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Problems::one(path, e.inner().to_string())
    })
}

/// The JSON Schema node of a definition (`BuildSpec`), for walking parts of documents.
pub(crate) fn walk_def(def: &str, value: &Value, path: &str, p: &mut Problems) {
    let node = SCHEMA
        .get("$defs")
        .and_then(|d| d.get(def))
        .cloned()
        .unwrap_or(Value::Null);
    walk(&SCHEMA, &node, value, path, p);
}

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
