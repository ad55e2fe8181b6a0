//! Table test: each invalid document reports exactly the expected path and reason.
#![allow(clippy::unwrap_used)]

use jobforge_schema::{Format, parse_request};
use serde_json::{Value, json};

fn valid() -> Value {
    json!({
        "apiVersion": "jobforge/v1alpha1",
        "kind": "BuildRequest",
        "metadata": {"name": "myapp-42", "namespace": "team-a", "labels": {"app": "myapp"}},
        "spec": {
            "owner": "team-a",
            "repo_url": "https://git.example.com/team-a/myapp.git",
            "git_ref": "main",
            "git_credentials_path": "secret/data/jobforge/git",
            "dockerfile_path": "Dockerfile",
            "dockerfile_context": ".",
            "image_name": "myapp",
            "image_tags": ["v1.4.2", "latest"],
            "registry_url": "registry.internal:5000/team-a",
            "registry_credentials_path": "secret/data/jobforge/registry",
            "test": {"entry_point": true, "commands": ["/app/selftest"], "env": {"A": "b"}, "timeout": "10m"},
            "resource_limits": {"cpu": "1000", "memory": "2048", "disk": "10240", "build": {"cpu": "4000"}},
            "build_timeout": "30m",
            "retries": 1,
            "ttl_after_finished": "168h",
            "webhook": {"url": "https://hooks.example.com/x", "secret_path": "secret/data/jobforge/hook", "on": ["succeeded", "failed"]}
        }
    })
}

/// Sets (or with `None` removes) the value at a JSON pointer, creating maps on the way.
fn with(pointer: &str, v: Option<Value>) -> Value {
    let mut doc = valid();
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let mut cur = &mut doc;
    for seg in parent.split('/').filter(|s| !s.is_empty()) {
        cur = match cur {
            Value::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
            Value::Object(m) => m.entry(seg).or_insert_with(|| json!({})),
            _ => panic!("bad pointer {pointer}"),
        };
    }
    match (cur, v) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.to_string(), v);
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), Some(v)) => a[last.parse::<usize>().unwrap()] = v,
        _ => panic!("bad pointer {pointer}"),
    }
    doc
}

#[test]
fn the_valid_base_document_is_valid() {
    let bytes = serde_json::to_vec(&valid()).unwrap();
    parse_request(&bytes, Format::Json).unwrap();
}

#[test]
fn every_invalid_document_reports_its_path_and_reason() {
    let s = |v: &str| Some(json!(v));
    #[rustfmt::skip]
    let cases: Vec<(&str, Option<Value>, &str, &str)> = vec![
        // (pointer, new value or removal, expected path, expected reason fragment)
        ("/apiVersion", s("jobforge/v1"), "apiVersion", "\"jobforge/v1\" is not supported; allowed: jobforge/v1alpha1"),
        ("/kind", s("Build"), "kind", "\"Build\" is not supported; allowed: BuildRequest"),
        ("/kind", None, "kind", "is required but missing"),
        ("/metadata/name", None, "metadata.name", "is required but missing"),
        ("/metadata/name", s("MyApp"), "metadata.name", "\"MyApp\" is not a DNS label"),
        ("/metadata/name", s(&"a".repeat(64)), "metadata.name", "at most 63 characters"),
        ("/metadata/name", s(""), "metadata.name", "must not be empty"),
        ("/metadata/namespace", s("team_a"), "metadata.namespace", "\"team_a\" is not a DNS label"),
        ("/metadata/labels/bad key", s("x"), "metadata.labels[\"bad key\"]", "is not a valid label key"),
        ("/metadata/labels/app", s("-x"), "metadata.labels.app", "is not a valid label value"),
        ("/metadata/annotations", Some(json!({})), "metadata.annotations", "unknown field; allowed fields here: name, namespace, labels"),
        ("/spec/owner", None, "spec.owner", "is required but missing"),
        ("/spec/owner", s(""), "spec.owner", "is required and must not be empty"),
        ("/spec/owner", s("team a"), "spec.owner", "is not a valid owner"),
        ("/spec/repo_url", s("ftp://h/x"), "spec.repo_url", "unsupported scheme \"ftp\""),
        ("/spec/repo_url", s("-uevil"), "spec.repo_url", "must not start with '-'"),
        ("/spec/repo_url", s("file://relative"), "spec.repo_url", "must be file:///absolute/path"),
        ("/spec/git_ref", s("--upload-pack=x"), "spec.git_ref", "starts with '-'"),
        ("/spec/git_ref", s("a..b"), "spec.git_ref", "contains '..'"),
        ("/spec/git_ref", s("main branch"), "spec.git_ref", "whitespace"),
        ("/spec/git_ref", None, "spec.git_ref", "is required but missing"),
        ("/spec/image_name", s("MyApp"), "spec.image_name", "is not a valid image name"),
        ("/spec/image_name", s("app//x"), "spec.image_name", "is not a valid image name"),
        ("/spec/image_tags/1", s("Latest!"), "spec.image_tags[1]", "\"Latest!\" is not a valid tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"),
        ("/spec/image_tags/0", s(".v1"), "spec.image_tags[0]", "is not a valid tag"),
        ("/spec/image_tags/1", s("v1.4.2"), "spec.image_tags[1]", "is listed twice"),
        ("/spec/image_tags", s("latest"), "spec.image_tags", "expected a list, found a string"),
        ("/spec/registry_url", s("https://registry.internal"), "spec.registry_url", "has a scheme"),
        ("/spec/registry_url", s("registry:99999"), "spec.registry_url", "is not a valid registry"),
        ("/spec/git_credentials_path", s("/secret/data/git"), "spec.git_credentials_path", "is not a Vault path"),
        ("/spec/registry_credentials_path", s("secret/../sys"), "spec.registry_credentials_path", "is not a Vault path"),
        ("/spec/dockerfile_context", s("/etc"), "spec.dockerfile_context", "\"/etc\" is absolute"),
        ("/spec/dockerfile_context", s("src/../../x"), "spec.dockerfile_context", "contains a '..' component"),
        ("/spec/dockerfile_path", s("../Dockerfile"), "spec.dockerfile_path", "contains a '..' component"),
        ("/spec/build_timeout", s("soon"), "spec.build_timeout", "is not a duration"),
        ("/spec/build_timeout", s("25h"), "spec.build_timeout", "is out of range; allowed: 1s ..= 1day"),
        ("/spec/ttl_after_finished", s("9000h"), "spec.ttl_after_finished", "is out of range"),
        ("/spec/test/timeout", s("0s"), "spec.test.timeout", "is out of range"),
        ("/spec/resource_limits/cpu", s("1.5"), "spec.resource_limits.cpu", "is not a decimal integer"),
        ("/spec/resource_limits/memory", Some(json!(2048)), "spec.resource_limits.memory", "expected a string, found an integer (quote numbers"),
        ("/spec/resource_limits/build/disk", s("0"), "spec.resource_limits.build.disk", "is out of range; allowed: a decimal integer string 1 ..= 10000000 (MB)"),
        ("/spec/resource_limits/build/gpu", s("1"), "spec.resource_limits.build.gpu", "unknown field; allowed fields here: cpu, memory, disk"),
        ("/spec/retries", Some(json!(11)), "spec.retries", "11 is too many; allowed: 0 ..= 10"),
        ("/spec/retries", Some(json!(-1)), "spec.retries", "-1 is out of range"),
        ("/spec/retries", s("1"), "spec.retries", "expected a non-negative integer, found a string"),
        ("/spec/priority", Some(json!(0)), "spec.priority", "0 is out of range; allowed: 1 ..= 100"),
        ("/spec/priority", Some(json!(101)), "spec.priority", "101 is out of range; allowed: 1 ..= 100"),
        ("/spec/priority", s("high"), "spec.priority", "expected a non-negative integer, found a string"),
        ("/spec/concurrency_group", s("Main Branch"), "spec.concurrency_group", "is not a DNS label"),
        ("/spec/concurrency_group", s(""), "spec.concurrency_group", "must not be empty"),
        ("/spec/clear_cache", s("yes"), "spec.clear_cache", "expected a boolean, found a string"),
        ("/spec/bogus", Some(json!(1)), "spec.bogus", "unknown field; allowed fields here: owner, repo_url"),
        ("/spec/test/env/1BAD", s("x"), "spec.test.env.1BAD", "is not a valid environment variable name"),
        ("/spec/test/env/A", s("line\nbreak"), "spec.test.env.A", "control character U+000A"),
        ("/spec/test/commands/0", s("echo \u{1b}[2J"), "spec.test.commands[0]", "control character U+001B"),
        ("/spec/test/gpu_count", Some(json!(2)), "spec.test.gpu_count", "gpu_required is false"),
        ("/spec/test/vault_secrets", Some(json!([{"path": "secret/data/aws", "fields": {"key": "1X"}}])), "spec.test.vault_secrets[0].fields.key", "is not a valid environment variable name"),
        ("/spec/test/vault_secrets", Some(json!([{"path": "secret/data/aws"}])), "spec.test.vault_secrets[0].fields", "is required but missing"),
        ("/spec/test/constraints", Some(json!([{"attribute": "${attr.kernel.name}", "operand": "like", "value": "linux"}])), "spec.test.constraints[0].operand", "is not a Nomad constraint operand"),
        ("/spec/test/constraints", Some(json!([{"attribute": "kernel", "value": "linux"}])), "spec.test.constraints[0].attribute", "is not a valid constraint attribute"),
        ("/spec/test/constraints", Some(json!([{"attribute": "${meta.gpu}", "operand": "regexp", "value": "(unclosed"}])), "spec.test.constraints[0].value", "is not a valid regular expression"),
        ("/spec/webhook/url", s("ftp://hooks"), "spec.webhook.url", "is not an http:// or https:// URL"),
        ("/spec/webhook/headers", Some(json!({"X-Evil": "a\r\nInjected: 1"})), "spec.webhook.headers.X-Evil", "control character U+000D"),
        ("/spec/webhook/headers", Some(json!({"Bad Header": "v"})), "spec.webhook.headers[\"Bad Header\"]", "is not a valid header name"),
        ("/spec/webhook/on", Some(json!(["finished"])), "spec.webhook.on[0]", "is \"finished\"; allowed: \"started\", \"phase\", \"succeeded\", \"failed\", \"cancelled\""),
        ("/spec/webhook/secret", s("s3cr3t"), "spec.webhook.secret", "unknown field; allowed fields here: url, secret_path, headers, on"),
    ];
    assert!(
        cases.len() >= 40,
        "the table must hold at least 40 documents"
    );
    let mut failures = Vec::new();
    for (pointer, value, path, reason) in &cases {
        let doc = with(pointer, value.clone());
        let bytes = serde_json::to_vec(&doc).unwrap();
        match parse_request(&bytes, Format::Json) {
            Ok(_) => failures.push(format!("{pointer}: accepted, expected {path}: {reason}")),
            Err(problems) => {
                let ok = problems.len() == 1
                    && problems.0[0].path == *path
                    && problems.0[0].message.contains(reason);
                if !ok {
                    failures.push(format!(
                        "{pointer}: expected exactly `{path}: …{reason}…`, got:\n{problems}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_of_a_document_is_reported_at_once() {
    let mut doc = with("/spec/image_tags/1", Some(json!("Latest!")));
    doc["spec"]["build_timeout"] = json!("forever");
    doc["metadata"]["name"] = json!("Bad_Name");
    let err = parse_request(&serde_json::to_vec(&doc).unwrap(), Format::Json).unwrap_err();
    let paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["metadata.name", "spec.image_tags[1]", "spec.build_timeout"]
    );

    let mut doc = valid();
    doc["spec"]["bogus"] = json!(1);
    doc["spec"]["retries"] = json!("x");
    doc["spec"].as_object_mut().unwrap().remove("owner");
    doc["extra"] = json!(true);
    let err = parse_request(&serde_json::to_vec(&doc).unwrap(), Format::Json).unwrap_err();
    let mut paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec!["extra", "spec.bogus", "spec.owner", "spec.retries"]
    );
}

#[test]
fn yaml_tab_and_duplicate_key_report_line_and_column() {
    let tab = b"apiVersion: jobforge/v1alpha1\nkind: BuildRequest\nmetadata:\n\tname: x\n";
    let err = parse_request(tab, Format::Yaml).unwrap_err();
    assert!(
        err.to_string().contains("line 4 column") && err.to_string().contains("tab"),
        "{err}"
    );
    let dup = b"apiVersion: jobforge/v1alpha1\nkind: BuildRequest\nkind: BuildRequest\n";
    let err = parse_request(dup, Format::Yaml).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("line 3 column") && msg.contains("duplicate"),
        "{msg}"
    );
}

#[test]
fn oversized_documents_are_rejected_with_size_and_limit() {
    let big = vec![b' '; 600 * 1024];
    let err = parse_request(&big, Format::Json).unwrap_err();
    assert_eq!(
        err.to_string(),
        "document is 614400 bytes; the limit is 524288 bytes (512 KiB, Consul's kv_max_value_size)"
    );
}

/// Issue 18, item 8: shape problems (unknown field, wrong type, missing field) no longer hide the
/// semantic problems of the fields that did parse: one run reports all of them.
#[test]
fn shape_and_semantic_problems_are_reported_in_one_pass() {
    let mut doc = valid();
    // Shape: an unknown field and a wrong type.
    doc["spec"]["bogus"] = json!(1);
    doc["spec"]["retries"] = json!("x");
    // Semantics of fields that parse.
    doc["metadata"]["name"] = json!("Bad_Name");
    doc["spec"]["image_tags"] = json!(["v1", "Latest!"]);
    doc["spec"]["build_timeout"] = json!("forever");
    doc["spec"]["git_ref"] = json!("a..b");
    doc["spec"]["test"]["timeout"] = json!("soon");
    doc["spec"]["webhook"]["url"] = json!("ftp://hooks.example.com/x");
    let err = parse_request(&serde_json::to_vec(&doc).unwrap(), Format::Json).unwrap_err();
    let mut paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "metadata.name",
            "spec.bogus",
            "spec.build_timeout",
            "spec.git_ref",
            "spec.image_tags[1]",
            "spec.retries",
            "spec.test.timeout",
            "spec.webhook.url",
        ],
        "{err}"
    );

    // A missing required field is reported once (not again as "must not be empty"), and the
    // semantic checks still run inside a map that has an unknown field.
    let mut doc = valid();
    doc["spec"].as_object_mut().unwrap().remove("owner");
    doc["spec"]["test"]["colour"] = json!("blue");
    doc["spec"]["test"]["timeout"] = json!("soon");
    let err = parse_request(&serde_json::to_vec(&doc).unwrap(), Format::Json).unwrap_err();
    let mut paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec!["spec.owner", "spec.test.colour", "spec.test.timeout"],
        "{err}"
    );
}

/// The same for the seed's flat job_config.
#[test]
fn seed_job_config_reports_shape_and_semantic_problems_together() {
    let doc = json!({"owner": "o", "repo_url": "https://h/r.git", "git_ref": "main",
        "image_name": "app", "registry_url": "r:5000", "bogus": 1, "image_tags": ["Bad Tag"]});
    let err = jobforge_schema::parse_seed_job(&serde_json::to_vec(&doc).unwrap(), Format::Json)
        .unwrap_err();
    let mut paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, vec!["bogus", "image_tags[0]"], "{err}");
}
