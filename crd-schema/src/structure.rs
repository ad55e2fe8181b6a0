//! Structural walk of a JSON value against the generated JSON Schema ([`crate::schema`]), collecting
//! every shape problem at once (serde stops at the first): unknown fields (with the allowed ones),
//! missing required fields, wrong types, values outside an enum, integers out of range.
//!
//! Handles the subset of JSON Schema that schemars emits for our types: `$ref` into `$defs`, `type`
//! (one or a list), `properties`, `required`, `additionalProperties`, `items`, `anyOf`/`oneOf`,
//! `const`, `enum`, `format: uint32`, `minimum`.

use serde_json::{Map, Value};

use crate::problem::{Problems, join_field, join_index};

/// Walks `value` against `schema` (a node of `root`), recording problems under `path`.
pub(crate) fn walk(root: &Value, schema: &Value, value: &Value, path: &str, p: &mut Problems) {
    walk_depth(root, schema, value, path, p, 0);
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    // Bounded: our $defs never chain more than a few references.
    for _ in 0..8 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.strip_prefix("#/$defs/") {
                Some(name) => {
                    s = root
                        .get("$defs")
                        .and_then(|d| d.get(name))
                        .unwrap_or(&Value::Null)
                }
                None => return &Value::Null,
            },
            None => return s,
        }
    }
    s
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn type_name(t: &str) -> &str {
    match t {
        "boolean" => "a boolean",
        "integer" => "a non-negative integer",
        "string" => "a string",
        "array" => "a list",
        "object" => "a map",
        "null" => "null",
        other => other,
    }
}

fn walk_depth(
    root: &Value,
    schema: &Value,
    value: &Value,
    path: &str,
    p: &mut Problems,
    depth: u32,
) {
    if depth > 64 {
        p.push(path, "is nested too deeply");
        return;
    }
    let schema = resolve(root, schema);
    let Some(obj) = schema.as_object() else {
        return;
    };
    if let Some(branches) = obj
        .get("anyOf")
        .or_else(|| obj.get("oneOf"))
        .and_then(Value::as_array)
    {
        walk_branches(root, branches, value, path, p, depth);
        return;
    }
    if let Some(c) = obj.get("const") {
        if c != value {
            p.push(path, format!("is {value}; allowed: {c}"));
        }
        return;
    }
    if let Some(allowed) = obj.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        p.push(path, format!("is {value}; allowed: {}", list.join(", ")));
        return;
    }
    let types: Vec<&str> = match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        let expected: Vec<&str> = types
            .iter()
            .filter(|t| **t != "null")
            .map(|t| type_name(t))
            .collect();
        let hint = if value.is_number() && types.contains(&"string") {
            " (quote numbers that are strings, for example \"1000\")"
        } else {
            ""
        };
        p.push(
            path,
            format!(
                "expected {}, found {}{hint}",
                expected.join(" or "),
                kind(value)
            ),
        );
        return;
    }
    match value {
        Value::Number(n)
            if obj.get("format").and_then(Value::as_str) == Some("uint32")
                && n.as_u64().is_none_or(|v| v > u64::from(u32::MAX)) =>
        {
            p.push(
                path,
                format!("{n} is out of range; allowed: 0 ..= {}", u32::MAX),
            );
        }
        Value::Object(map) => walk_object(root, obj, map, path, p, depth),
        Value::Array(items) => {
            if let Some(item_schema) = obj.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_depth(root, item_schema, item, &join_index(path, i), p, depth + 1);
                }
            }
        }
        _ => {}
    }
}

fn walk_branches(
    root: &Value,
    branches: &[Value],
    value: &Value,
    path: &str,
    p: &mut Problems,
    depth: u32,
) {
    let mut first: Option<Problems> = None;
    for b in branches {
        let mut bp = Problems::default();
        walk_depth(root, b, value, path, &mut bp, depth + 1);
        if bp.is_empty() {
            return;
        }
        // Prefer the explanation from a branch of the value's own type (the non-null branch).
        let b_resolved = resolve(root, b);
        let is_null_branch = b_resolved.get("type").and_then(Value::as_str) == Some("null");
        if first.is_none() && !is_null_branch {
            first = Some(bp);
        }
    }
    match first {
        Some(bp)
            if bp
                .iter()
                .all(|pr| pr.path == path && pr.message.starts_with("is "))
                && branches.len() > 2 =>
        {
            // An enum written as oneOf of consts: list every allowed value once.
            let allowed: Vec<String> = branches
                .iter()
                .filter_map(|b| resolve(root, b).get("const").map(Value::to_string))
                .collect();
            p.push(path, format!("is {value}; allowed: {}", allowed.join(", ")));
        }
        Some(bp) => p.0.extend(bp.0),
        None => p.push(path, format!("has the wrong shape ({})", kind(value))),
    }
}

fn walk_object(
    root: &Value,
    obj: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
    p: &mut Problems,
    depth: u32,
) {
    let props = obj.get("properties").and_then(Value::as_object);
    let additional = obj.get("additionalProperties");
    for (k, v) in map {
        let child = join_field(path, k);
        match props.and_then(|pr| pr.get(k)) {
            Some(s) => walk_depth(root, s, v, &child, p, depth + 1),
            None => match additional {
                Some(Value::Bool(false)) => {
                    let allowed: Vec<&str> = props
                        .map(|pr| pr.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    p.push(
                        child,
                        format!("unknown field; allowed fields here: {}", allowed.join(", ")),
                    );
                }
                Some(s @ Value::Object(_)) => walk_depth(root, s, v, &child, p, depth + 1),
                _ => {}
            },
        }
    }
    if let Some(req) = obj.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                p.push(join_field(path, r), "is required but missing");
            }
        }
    }
}

/// The part of `value` that has the shape `schema` asks for, so that the semantic checks can run
/// on every field that did parse even when the walk found shape problems (see [`crate::parse`]):
/// unknown fields and wrong-shaped values are left out (a list with one wrong item is left out
/// whole, so the indices of later problems stay true), and a required field that is missing (or
/// was left out) gets an empty placeholder (`""`, `{}` filled the same way, `[]`), which the
/// caller's semantic pass then reports at the same path as the walk did — the caller drops those
/// duplicates ([`crate::parse::extend_unshadowed`]). `None` when `value`
/// itself has the wrong shape.
pub(crate) fn well_shaped(root: &Value, schema: &Value, value: &Value) -> Option<Value> {
    well_shaped_depth(root, schema, value, 0)
}

fn well_shaped_depth(root: &Value, schema: &Value, value: &Value, depth: u32) -> Option<Value> {
    if depth > 64 {
        return None;
    }
    let schema = resolve(root, schema);
    let Some(obj) = schema.as_object() else {
        return Some(value.clone());
    };
    let clean = |s: &Value| {
        let mut p = Problems::default();
        walk_depth(root, s, value, "", &mut p, depth + 1);
        p.is_empty()
    };
    if let Some(branches) = obj
        .get("anyOf")
        .or_else(|| obj.get("oneOf"))
        .and_then(Value::as_array)
    {
        if branches.iter().any(clean) {
            return Some(value.clone());
        }
        return branches
            .iter()
            .find_map(|b| well_shaped_depth(root, b, value, depth + 1));
    }
    if obj.contains_key("const") || obj.contains_key("enum") {
        return clean(schema).then(|| value.clone());
    }
    let types: Vec<&str> = match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        return None;
    }
    match value {
        Value::Number(_) => clean(schema).then(|| value.clone()),
        Value::Object(map) => {
            let props = obj.get("properties").and_then(Value::as_object);
            let additional = obj.get("additionalProperties");
            let mut out = Map::new();
            for (k, v) in map {
                let child = match props.and_then(|pr| pr.get(k)) {
                    Some(s) => well_shaped_depth(root, s, v, depth + 1),
                    None => match additional {
                        Some(Value::Bool(false)) => None,
                        Some(s @ Value::Object(_)) => well_shaped_depth(root, s, v, depth + 1),
                        _ => Some(v.clone()),
                    },
                };
                if let Some(c) = child {
                    out.insert(k.clone(), c);
                }
            }
            if let Some(req) = obj.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !out.contains_key(r) {
                        let s = props.and_then(|pr| pr.get(r))?;
                        out.insert(r.to_string(), placeholder(root, s, depth + 1)?);
                    }
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => match obj.get("items") {
            Some(item_schema) => items
                .iter()
                .map(|i| well_shaped_depth(root, item_schema, i, depth + 1))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
            None => Some(value.clone()),
        },
        _ => Some(value.clone()),
    }
}

/// An empty value of the type `schema` asks for (see [`well_shaped`]); `None` for other types.
fn placeholder(root: &Value, schema: &Value, depth: u32) -> Option<Value> {
    let s = resolve(root, schema);
    match s.get("type").and_then(Value::as_str)? {
        "string" => Some(Value::String(String::new())),
        "array" => Some(Value::Array(Vec::new())),
        "object" => well_shaped_depth(root, s, &Value::Object(Map::new()), depth + 1),
        _ => None,
    }
}
