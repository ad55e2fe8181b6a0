//! Fuzzing of BuildRequest parsing (`parse_request`, `parse_document`) with proptest: arbitrary
//! bytes, arbitrary JSON trees, and byte- and token-level mutations of the example documents
//! (`examples/gitops`, `examples/seed-compat`). No input may panic; a rejection carries at least one
//! problem with a message; an accepted request validates and survives a JSON round trip unchanged.
//!
//! The number of cases comes from `PROPTEST_CASES` (proptest reads it; 256 when unset, the CI
//! mode). The long mode (docs/faults.md):
//! `PROPTEST_CASES=100000 cargo test -p jobforge-schema --release --test fuzz_parse`.

#![allow(clippy::unwrap_used)]

use jobforge_schema::{Document, Format, Problems, parse_document, parse_request, validate};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

/// Valid documents the mutations start from.
const SEEDS: &[&[u8]] = &[
    include_bytes!("../../examples/gitops/hello-web.yaml"),
    include_bytes!("../../examples/gitops/hello-worker.json"),
    include_bytes!("../../examples/seed-compat/job_config_hello_world.json"),
    include_bytes!("../../examples/seed-compat/job_config_per_phase_resource_limits.json"),
    include_bytes!("../../examples/seed-compat/job_config_mixed_resource_limits.json"),
    include_bytes!("../../examples/seed-compat/job_config_submit_job.json"),
    include_bytes!("../../examples/seed-compat/build.yaml"),
    include_bytes!("../../examples/seed-compat/global.yaml"),
];

/// Tokens that tend to reach parser corners: YAML anchors, aliases, tags, merge keys, flow
/// collections, deep nesting, numbers at the edges, escapes, template delimiters, NUL, BOM.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "!!binary ",
    "!!str ",
    "<<: ",
    "{",
    "}",
    "[",
    "]",
    "[[[[[[[[[[[[[[[[",
    "{\"a\":{\"a\":{\"a\":",
    "\"",
    "'",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "#",
    "---\n",
    "...\n",
    "~",
    "null",
    "true",
    "-0",
    "1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "0x1F",
    ".inf",
    "\\u0000",
    "\\ud800",
    "{{",
    "}}",
    "\u{0}",
    "\u{feff}",
    "é",
    "spec",
    "metadata",
    "apiVersion",
    "job_config",
    "resource_limits",
    "image_tags",
    "build_timeout",
    "webhook",
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Token { at: usize, token: usize },
    Duplicate { at: usize, len: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), vec(any::<u8>(), 1..8)).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Edit::Token { at, token }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Duplicate { at, len }),
    ]
}

fn apply(doc: &mut Vec<u8>, e: &Edit) {
    let pos = |at: usize, len: usize| if len == 0 { 0 } else { at % (len + 1) };
    match e {
        Edit::Flip { at, bit } => {
            if !doc.is_empty() {
                let i = at % doc.len();
                doc[i] ^= 1 << bit;
            }
        }
        Edit::Delete { at, len } => {
            let i = pos(*at, doc.len());
            let end = (i + len).min(doc.len());
            doc.drain(i..end);
        }
        Edit::Insert { at, bytes } => {
            let i = pos(*at, doc.len());
            doc.splice(i..i, bytes.iter().copied());
        }
        Edit::Token { at, token } => {
            let i = pos(*at, doc.len());
            doc.splice(i..i, TOKENS[*token].bytes());
        }
        Edit::Duplicate { at, len } => {
            let i = pos(*at, doc.len());
            let end = (i + len).min(doc.len());
            let copy = doc[i..end].to_vec();
            doc.splice(end..end, copy);
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~é\u{0}]{0,24}".prop_map(Value::String),
        prop::sample::select(TOKENS).prop_map(|t| Value::String(t.to_string())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        let key = prop_oneof![
            prop::sample::select(
                &[
                    "apiVersion",
                    "kind",
                    "metadata",
                    "spec",
                    "name",
                    "namespace",
                    "labels",
                    "owner",
                    "repo_url",
                    "git_ref",
                    "image_name",
                    "image_tags",
                    "registry_url",
                    "test",
                    "resource_limits",
                    "build",
                    "cpu",
                    "memory",
                    "build_timeout",
                    "retries",
                    "cancel",
                    "webhook",
                    "url",
                    "on",
                    "job_config",
                ][..]
            )
            .prop_map(String::from),
            "[a-z_]{0,10}",
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check_rejection(p: &Problems) {
    assert!(!p.is_empty(), "a rejection must carry at least one problem");
    assert!(
        p.iter().all(|pr| !pr.message.is_empty()),
        "every problem says what is wrong: {p}"
    );
}

/// The properties every input must satisfy, in both formats and through both entry points.
fn check(bytes: &[u8]) {
    for format in [Format::Json, Format::Yaml, Format::detect(bytes)] {
        match parse_request(bytes, format) {
            Ok(req) => {
                assert!(validate(&req).is_ok(), "accepted but invalid: {req:?}");
                let json = serde_json::to_vec(&req).unwrap();
                let again = parse_request(&json, Format::Json)
                    .unwrap_or_else(|p| panic!("accepted request does not re-parse: {p}"));
                assert_eq!(again, req, "JSON round trip changed the request");
            }
            Err(p) => check_rejection(&p),
        }
        match parse_document(bytes, format) {
            Ok(Document::Request(req)) => assert!(validate(&req).is_ok()),
            Ok(Document::Seed(_)) => {}
            Err(p) => check_rejection(&p),
        }
    }
}

proptest! {
    // Cases from PROPTEST_CASES (ProptestConfig::default reads it); nothing here overrides it.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_json_trees_never_panic(v in arbitrary_json()) {
        check(&serde_json::to_vec(&v).unwrap());
        check(serde_yaml_ng::to_string(&v).unwrap_or_default().as_bytes());
    }

    #[test]
    fn mutated_example_documents_never_panic(seed in 0..SEEDS.len(), edits in vec(edit(), 1..8)) {
        let mut doc = SEEDS[seed].to_vec();
        for e in &edits {
            apply(&mut doc, e);
        }
        check(&doc);
    }
}

#[test]
fn the_seed_documents_parse_unmutated() {
    for (i, seed) in SEEDS.iter().enumerate() {
        let r = parse_document(seed, Format::detect(seed));
        // build.yaml and global.yaml (the last two) are the halves of a seed pair, partial alone.
        if i < SEEDS.len() - 2 {
            assert!(
                r.is_ok(),
                "seed {i} rejected: {:?}",
                r.err().map(|p| p.to_string())
            );
        }
    }
}
