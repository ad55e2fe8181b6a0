//! The seed's example files in `examples/seed-compat/` stay valid.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use jobforge_schema::{Format, WebhookEvent, merge_global_and_build, parse_seed_job};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-compat")
}

#[test]
fn every_seed_job_config_example_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Err(p) = parse_seed_job(&bytes, Format::Json) {
            panic!("{}:\n{p}", path.display());
        }
        checked += 1;
    }
    assert!(
        checked >= 6,
        "expected the seed's JSON examples, found {checked}"
    );
}

#[test]
fn seed_global_and_build_pair_merges_into_a_valid_spec() {
    let g = std::fs::read(dir().join("global.yaml")).unwrap();
    let b = std::fs::read(dir().join("build.yaml")).unwrap();
    let spec = merge_global_and_build(&g, &b).unwrap();
    assert_eq!(spec.owner, "myteam");
    assert_eq!(spec.git_ref, "feature/new-feature");
    assert_eq!(spec.image_tags, vec!["test", "dev"]);
    assert!(spec.has_tests());
}

#[test]
fn seed_per_build_file_alone_names_the_missing_fields() {
    let b = std::fs::read(dir().join("build.yaml")).unwrap();
    let err = parse_seed_job(&b, Format::Yaml).unwrap_err();
    let paths: Vec<&str> = err.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["owner", "repo_url", "image_name", "registry_url"]
    );
}

#[test]
fn seed_webhook_flags_map_to_events() {
    let doc =
        br#"{"owner": "o", "repo_url": "https://h/r.git", "git_ref": "main", "image_name": "a",
        "registry_url": "r", "webhook_url": "https://hooks/x", "webhook_on_failure": false,
        "webhook_headers": {"X-Team": "a"}}"#;
    let job = parse_seed_job(doc, Format::Json).unwrap();
    let w = job.spec.webhook.unwrap();
    assert_eq!(w.on, vec![WebhookEvent::Succeeded]);
    assert_eq!(w.headers.get("X-Team").map(String::as_str), Some("a"));
}
