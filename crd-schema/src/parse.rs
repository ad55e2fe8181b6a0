//! Parsing a BuildRequest from JSON or YAML bytes, reporting every problem with its path.
//!
//! Steps:
//! 1. size: at most [`MAX_DOCUMENT_BYTES`] (512 KiB, Consul's default `kv_max_value_size`, see
//!    Consul's agent configuration reference, `limits.kv_max_value_size`);
//! 2. syntax: JSON (serde_json) or YAML (serde_yaml_ng) errors with line and column (YAML tabs and
//!    duplicate keys included);
//! 3. shape: a walk of the value against the JSON Schema collecting every unknown field, missing
//!    required field and wrong type at once;
//! 4. typed deserialization (serde_path_to_error, for anything the walk missed);
//! 5. semantics: [`crate::validate()`].
//!
//! Steps 1 and 2 stop at their problem (there is no document to look at). Shape problems do not
//! hide semantic ones: when step 3 finds any, steps 4 and 5 still run on the part of the document
//! that has the right shape (`structure::well_shaped`: wrong-shaped fields left out, missing
//! required ones as empty placeholders), and their problems are added except at a path step 3
//! already reported ([`extend_unshadowed`]). So one run lists every problem, as `jobforge
//! validate` promises.
//!
//! Which kind of document a file is (a BuildRequest or the seed's job_config) is decided in
//! [`crate::document`].
//!
//! Nothing here panics on any input.

use std::path::Path;
use std::sync::LazyLock;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::Problems;
use crate::request::BuildRequest;
use crate::schema::request_schema;
use crate::structure::{walk, well_shaped};
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
        Format::Yaml => {
            // Through serde_yaml_ng's own Value: it rejects duplicate keys (serde_json's map would
            // silently keep the last one) and reports the position.
            let yaml = serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(bytes)
                .map_err(|e| Problems::one("", yaml_error_message(bytes, &e)))?;
            serde_json::to_value(yaml).map_err(|e| {
                Problems::one(
                    "",
                    format!("YAML document is not representable as JSON (map keys must be strings, no tags): {e}"),
                )
            })
        }
    }
}

/// A YAML error with the line and column of its cause. serde_yaml_ng reports a duplicate key at
/// the start of its mapping; the duplicate itself is located in the text (see [`locate_duplicate`]).
fn yaml_error_message(bytes: &[u8], e: &serde_yaml_ng::Error) -> String {
    let msg = e.to_string();
    let mut loc = e.location().map(|l| (l.line(), l.column()));
    let tab_hint = e
        .location()
        .and_then(|l| bytes.get(l.index()))
        .is_some_and(|b| *b == b'\t');
    if let Some(key) = duplicate_key(&msg) {
        let text = String::from_utf8_lossy(bytes);
        if let Some(found) = locate_duplicate(&text, &key, loc.map_or(1, |l| l.0)) {
            loc = Some(found);
        }
    }
    let at = loc
        .map(|(l, c)| format!(" at line {l} column {c}"))
        .unwrap_or_default();
    // serde_yaml_ng appends its own (mapping-start) position; keep only the message part.
    let core = msg.split(" at line ").next().unwrap_or(&msg);
    let hint = if tab_hint {
        " (a tab: YAML indentation must use spaces)"
    } else {
        ""
    };
    format!("YAML syntax error{at}: {core}{hint}")
}

/// The key of a serde_yaml_ng `duplicate entry with key "k"` message.
fn duplicate_key(msg: &str) -> Option<String> {
    let rest = msg.split("duplicate entry with key ").nth(1)?;
    let quoted = rest.split(" at line").next()?.trim();
    serde_json::from_str::<String>(quoted)
        .ok()
        .or_else(|| Some(quoted.trim_matches('"').to_string()))
}

/// Line and column (1-based) of the second occurrence of `key` in one mapping, searching from line
/// `from`: block mappings by indentation (a shallower line closes a mapping; a `- ` item opens a
/// new one), flow mappings by two occurrences on one line.
fn locate_duplicate(text: &str, key: &str, from: usize) -> Option<(usize, usize)> {
    let patterns = [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ];
    let mut seen: Vec<usize> = Vec::new(); // indents where `key` was seen in the open mappings
    for (i, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        seen.retain(|&n| n <= indent);
        let mut body = trimmed;
        while let Some(rest) = body.strip_prefix("- ") {
            // A sequence item starts a new mapping deeper than the dash.
            seen.retain(|&n| n <= indent);
            indent += 2;
            body = rest.trim_start();
        }
        let at_key = |b: &str| patterns.iter().any(|p| b.starts_with(p.as_str()));
        if at_key(body) {
            if seen.contains(&indent) {
                return Some((i + 1, indent + 1));
            }
            seen.push(indent);
        }
        // Flow mapping on one line: `{a: 1, a: 2}`.
        let hits: Vec<usize> = patterns
            .iter()
            .flat_map(|p| line.match_indices(p.as_str()).map(|(c, _)| c))
            .filter(|&c| c == 0 || matches!(line.as_bytes()[c - 1], b'{' | b',' | b' '))
            .collect();
        if hits.len() >= 2 && line.contains('{') {
            let mut hits = hits;
            hits.sort_unstable();
            return Some((i + 1, hits[1] + 1));
        }
    }
    None
}

/// Parses and validates a BuildRequest (all five steps); `Err` holds every problem found.
///
/// `metadata.namespace` defaults to `default`. Paths are from the document root (`spec.image_tags[2]`).
pub fn parse_request(bytes: &[u8], format: Format) -> Result<BuildRequest, Problems> {
    let value = parse_value(bytes, format)?;
    request_from_value(&value)
}

/// Steps 3 to 5 of [`parse_request`] on an already parsed value (every problem at once, see the
/// module docs).
pub fn request_from_value(value: &Value) -> Result<BuildRequest, Problems> {
    let mut p = Problems::default();
    walk(&SCHEMA, &SCHEMA, value, "", &mut p);
    if p.is_empty() {
        let req: BuildRequest = typed(value)?;
        validate(&req)?;
        return Ok(req);
    }
    if let Some(readable) = well_shaped(&SCHEMA, &SCHEMA, value)
        && let Ok(req) = typed::<BuildRequest>(&readable)
        && let Err(semantic) = validate(&req)
    {
        extend_unshadowed(&mut p, semantic);
    }
    Err(p)
}

/// Appends the problems of `more` that are not at or below a path `p` already holds: the semantic
/// problems of a document with shape problems, where a field the walk reported (missing, wrong
/// type) must not be reported a second time (for example `spec.owner: is required but missing`
/// and then `spec.owner: is required and must not be empty`).
pub(crate) fn extend_unshadowed(p: &mut Problems, more: Problems) {
    let shadowed = |path: &str, by: &str| {
        by.is_empty()
            || path.strip_prefix(by).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
    };
    let fresh: Vec<_> = more
        .into_iter()
        .filter(|q| !p.iter().any(|x| shadowed(&q.path, &x.path)))
        .collect();
    p.0.extend(fresh);
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
    walk(&SCHEMA, def_node(def), value, path, p);
}

/// [`well_shaped`] against a definition (see [`walk_def`]).
pub(crate) fn well_shaped_def(def: &str, value: &Value) -> Option<Value> {
    well_shaped(&SCHEMA, def_node(def), value)
}

fn def_node(def: &str) -> &'static Value {
    SCHEMA
        .get("$defs")
        .and_then(|d| d.get(def))
        .unwrap_or(&Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_located_in_their_own_mapping() {
        let text = "a:\n  cpu: 1\nb:\n  cpu: 2\n  mem: 3\n  cpu: 4\n";
        assert_eq!(locate_duplicate(text, "cpu", 1), Some((6, 3)));
        let list = "l:\n  - k: 1\n  - k: 2\n    k: 3\n";
        assert_eq!(locate_duplicate(list, "k", 1), Some((4, 5)));
        assert_eq!(locate_duplicate("m: {x: 1, x: 2}\n", "x", 1), Some((1, 11)));
    }
}
