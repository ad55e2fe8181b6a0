//! Compatibility with the seed system's inputs: the flat `job_config` JSON (optionally wrapped in
//! `{"job_config": {...}}`) and the CLI's `global.yaml` + `build.yaml` pair.
//!
//! Mapping to [`BuildSpec`]: spec fields keep their names; the README's flat `test_commands` and
//! `test_entry_point` become `test.commands` / `test.entry_point`; `webhook_url`, `webhook_headers`,
//! `webhook_on_success`, `webhook_on_failure` become `webhook.{url, headers, on}`. `webhook_secret`
//! (a secret value) is rejected: store the secret in Vault and set `webhook.secret_path`.
//! `deploy_dir` is a CLI-only setting, returned beside the spec.
//!
//! Merge rule (fixing the seed, which only overrode non-zero values): a per-build value overrides
//! the global one whenever it is *present*, including `false`, `0` and empty lists; lists replace;
//! maps (`test`, `resource_limits`, `webhook_headers`) merge key by key, recursively.

use serde_json::{Map, Value};

use crate::parse::{Format, extend_unshadowed, parse_value, typed, walk_def, well_shaped_def};
use crate::problem::{Problems, join_field};
use crate::request::{BuildSpec, WebhookEvent};
use crate::validate::validate_spec;

/// A seed job_config converted: the spec plus the CLI-only `deploy_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedJob {
    /// The converted, validated spec.
    pub spec: BuildSpec,
    /// The seed CLI's `deploy_dir` (where version files live), when given.
    pub deploy_dir: Option<String>,
}

/// Parses a seed flat job_config (JSON or YAML bytes) into a validated spec.
/// Paths in problems are the seed document's own (`image_tags[2]`, `webhook_secret`).
pub fn parse_seed_job(bytes: &[u8], format: Format) -> Result<SeedJob, Problems> {
    let value = parse_value(bytes, format)?;
    seed_job_from_value(&value)
}

/// Converts and validates an already parsed seed job_config (see the module docs for the mapping).
/// Conversion and shape problems do not hide semantic ones: as in [`crate::parse`], the semantic
/// checks also run on the part of the document that has the right shape.
pub fn seed_job_from_value(value: &Value) -> Result<SeedJob, Problems> {
    let (converted, deploy_dir, mut p) = convert(value);
    let mut shape = Problems::default();
    walk_def("BuildSpec", &converted, "", &mut shape);
    p.0.extend(shape.0);
    if p.is_empty() {
        let spec: BuildSpec = typed(&converted)?;
        validate_spec(&spec)?;
        return Ok(SeedJob { spec, deploy_dir });
    }
    if let Some(readable) = well_shaped_def("BuildSpec", &converted)
        && let Ok(spec) = typed::<BuildSpec>(&readable)
        && let Err(semantic) = validate_spec(&spec)
    {
        extend_unshadowed(&mut p, semantic);
    }
    Err(p)
}

/// Merges the seed's `global.yaml` and per-build `build.yaml` (see the module docs for the rule) and
/// returns the validated spec. Problem paths start with `global.yaml: ` or `build.yaml: `, naming
/// the file the offending value came from.
pub fn merge_global_and_build(
    global_yaml: &[u8],
    build_yaml: &[u8],
) -> Result<BuildSpec, Problems> {
    merge_named(("global.yaml", global_yaml), ("build.yaml", build_yaml)).map(|j| j.spec)
}

/// [`merge_global_and_build`] with the file names to use in problem paths, also returning `deploy_dir`.
pub fn merge_named(global: (&str, &[u8]), build: (&str, &[u8])) -> Result<SeedJob, Problems> {
    let g = parse_value(global.1, Format::Yaml).map_err(|p| p.prefixed(global.0));
    let b = parse_value(build.1, Format::Yaml).map_err(|p| p.prefixed(build.0));
    let (g, b) = match (g, b) {
        (Ok(g), Ok(b)) => (g, b),
        (Err(mut e1), Err(e2)) => {
            e1.0.extend(e2.0);
            return Err(e1);
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let mut bad = Problems::default();
    for (name, v) in [(global.0, &g), (build.0, &b)] {
        if !v.is_object() && !v.is_null() {
            bad.push(name, "expected a map of job_config fields");
        }
    }
    bad.into_result()?;
    let empty = Value::Object(Map::new());
    let b = if b.is_null() { &empty } else { &b };
    let g = if g.is_null() { &empty } else { &g };
    let merged = merge(g, b);
    seed_job_from_value(&merged).map_err(|p| {
        Problems(
            p.0.into_iter()
                .map(|mut pr| {
                    let file = if present_in(b, &pr.path) {
                        build.0
                    } else {
                        global.0
                    };
                    pr.path = if pr.path.is_empty() {
                        file.to_string()
                    } else {
                        format!("{file}: {}", pr.path)
                    };
                    pr
                })
                .collect(),
        )
    })
}

/// Presence merge: `over` wins wherever present; maps merge recursively; everything else replaces.
pub fn merge(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match b.get(k) {
                    Some(bv) => merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, o) => o.clone(),
    }
}

/// Whether the field at `path` (dotted, `[i]` indexes ignored) came from `doc`: every field segment
/// is present in it. Seed names moved by the conversion are looked up by their seed name too.
fn present_in(doc: &Value, path: &str) -> bool {
    let mut cur = doc;
    let segments: Vec<&str> = path
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect();
    if segments.is_empty() {
        return false;
    }
    let moved = match segments.as_slice() {
        ["test", "commands", ..] => Some("test_commands"),
        ["test", "entry_point", ..] => Some("test_entry_point"),
        ["webhook", "url", ..] => Some("webhook_url"),
        ["webhook", "headers", ..] => Some("webhook_headers"),
        _ => None,
    };
    if moved.is_some_and(|m| doc.get(m).is_some()) {
        return true;
    }
    for s in segments {
        match cur.get(s) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

/// Converts seed names to spec names; returns the spec value, `deploy_dir` and conversion problems.
fn convert(value: &Value) -> (Value, Option<String>, Problems) {
    let mut p = Problems::default();
    let value = match value.as_object() {
        Some(m) if m.len() == 1 && m.contains_key("job_config") => &m["job_config"],
        _ => value,
    };
    let Some(src) = value.as_object() else {
        p.push("", "expected a map of job_config fields");
        return (Value::Null, None, p);
    };
    let mut out = Map::new();
    let mut deploy_dir = None;
    let mut webhook = Map::new();
    let mut on_success: Option<bool> = None;
    let mut on_failure: Option<bool> = None;
    for (k, v) in src {
        match k.as_str() {
            "deploy_dir" => match v.as_str() {
                Some(s) => deploy_dir = Some(s.to_string()),
                None => p.push("deploy_dir", "expected a string (a directory path)"),
            },
            "webhook_secret" => p.push(
                "webhook_secret",
                "a secret value is not accepted in a request; store it in Vault and set \
                 webhook.secret_path to its Vault KV v2 path (for example secret/data/jobforge/webhook)",
            ),
            "webhook_url" => {
                webhook.insert("url".into(), v.clone());
            }
            "webhook_headers" => {
                webhook.insert("headers".into(), v.clone());
            }
            "webhook_on_success" | "webhook_on_failure" => match v.as_bool() {
                Some(b) if k == "webhook_on_success" => on_success = Some(b),
                Some(b) => on_failure = Some(b),
                None => p.push(k.as_str(), "expected a boolean"),
            },
            "test_commands" | "test_entry_point" => {
                let field = if k == "test_commands" { "commands" } else { "entry_point" };
                let test = out.entry("test").or_insert_with(|| Value::Object(Map::new()));
                match test.as_object_mut() {
                    Some(t) if t.contains_key(field) => {
                        p.push(k.as_str(), format!("conflicts with test.{field}; give only one"))
                    }
                    Some(t) => {
                        t.insert(field.into(), v.clone());
                    }
                    None => {}
                }
            }
            "test" => {
                // Merge with a flat test_* seen earlier; a nested value wins on conflict checks above.
                match (out.get_mut("test").and_then(Value::as_object_mut), v.as_object()) {
                    (Some(existing), Some(nested)) => {
                        for (nk, nv) in nested {
                            if existing.contains_key(nk) {
                                p.push(join_field("test", nk), "conflicts with the flat test_* field; give only one");
                            } else {
                                existing.insert(nk.clone(), nv.clone());
                            }
                        }
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if on_success.is_some() || on_failure.is_some() {
        let mut on = Vec::new();
        if on_success.unwrap_or(true) {
            on.push(WebhookEvent::Succeeded);
        }
        if on_failure.unwrap_or(true) {
            on.push(WebhookEvent::Failed);
        }
        if on.is_empty() {
            p.push(
                "webhook_on_success",
                "webhook_on_success and webhook_on_failure are both false; remove webhook_url to disable webhooks",
            );
        }
        if !webhook.is_empty() || !on.is_empty() {
            webhook.insert("on".into(), serde_json::to_value(on).unwrap_or(Value::Null));
        }
    }
    if !webhook.is_empty() {
        if !webhook.contains_key("url") {
            p.push(
                "webhook_url",
                "is required when webhook_headers or webhook_on_* is given",
            );
        }
        out.insert("webhook".into(), Value::Object(webhook));
    }
    (Value::Object(out), deploy_dir, p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GLOBAL: &str = "owner: t\nrepo_url: https://h/r.git\nimage_name: app\nregistry_url: r:5000\n\
                          clear_cache: true\nimage_tags: [a, b]\nretries: 3\n\
                          test: {entry_point: true, commands: [x], env: {A: '1'}}\n";

    #[test]
    fn per_build_false_zero_and_empty_list_override_global() {
        let build = "git_ref: main\nclear_cache: false\nimage_tags: []\nretries: 0\n";
        let spec = merge_global_and_build(GLOBAL.as_bytes(), build.as_bytes()).unwrap();
        assert!(!spec.clear_cache);
        assert!(spec.image_tags.is_empty());
        assert_eq!(spec.retries, 0);
    }

    #[test]
    fn maps_merge_key_by_key_and_lists_replace() {
        let build = "git_ref: main\ntest: {commands: [y, z], env: {B: '2'}}\n";
        let spec = merge_global_and_build(GLOBAL.as_bytes(), build.as_bytes()).unwrap();
        let t = spec.test.unwrap();
        assert!(t.entry_point);
        assert_eq!(t.commands, vec!["y", "z"]);
        assert_eq!(t.env.len(), 2);
    }

    #[test]
    fn merge_problems_name_the_file_the_value_came_from() {
        let build = "git_ref: main\nimage_tags: ['Latest!']\n";
        let global = GLOBAL.replace("registry_url: r:5000", "registry_url: 'https://r'");
        let err = merge_global_and_build(global.as_bytes(), build.as_bytes()).unwrap_err();
        let paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["global.yaml: registry_url", "build.yaml: image_tags[0]"]
        );
    }

    #[test]
    fn webhook_secret_value_is_rejected_with_a_pointer_to_vault() {
        let v = serde_json::json!({"owner": "o", "repo_url": "https://h/r", "git_ref": "main",
            "image_name": "a", "registry_url": "r", "webhook_url": "https://hook", "webhook_secret": "s3cr3t"});
        let err = seed_job_from_value(&v).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].path, "webhook_secret");
        assert!(err.0[0].message.contains("webhook.secret_path"));
    }

    #[test]
    fn flat_fields_map_into_test_webhook_and_deploy_dir() {
        let v = serde_json::json!({"job_config": {"owner": "o", "repo_url": "https://h/r", "git_ref": "main",
            "image_name": "a", "registry_url": "r", "test_commands": ["t"], "test_entry_point": true,
            "webhook_url": "https://hook", "webhook_on_success": false, "deploy_dir": "deploy"}});
        let job = seed_job_from_value(&v).unwrap();
        assert_eq!(job.deploy_dir.as_deref(), Some("deploy"));
        let t = job.spec.test.unwrap();
        assert_eq!((t.commands.len(), t.entry_point), (1, true));
        assert_eq!(job.spec.webhook.unwrap().on, vec![WebhookEvent::Failed]);
    }
}
