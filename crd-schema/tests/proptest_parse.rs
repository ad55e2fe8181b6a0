//! Property tests of the parser: valid requests round-trip JSON → YAML → JSON unchanged; no input
//! makes it panic, and every rejection carries at least one problem.
#![allow(clippy::unwrap_used)]

use jobforge_schema::{
    BuildRequest, BuildSecret, BuildSpec, Constraint, Format, ObjectMeta, PhaseResources,
    ResourceLimits, TestSpec, VaultSecret, WebhookEvent, WebhookSpec, parse_document,
    parse_request, validate,
};
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use serde_json::{Value, json};

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"
}
fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
}
fn image_name() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}((\\.|_|__|-+)[a-z0-9]{1,5}){0,2}(/[a-z0-9]{1,8}){0,2}"
}
fn vault_path() -> impl Strategy<Value = String> {
    "(secret|kv)/data(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,10}){1,3}"
}
fn env_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,10}"
}
fn number(max: u64) -> impl Strategy<Value = String> {
    (1..=max).prop_map(|n| n.to_string())
}
fn phase_resources() -> impl Strategy<Value = PhaseResources> {
    (
        of(number(1_000_000)),
        of(number(10_000_000)),
        of(number(10_000_000)),
    )
        .prop_map(|(cpu, memory, disk)| PhaseResources { cpu, memory, disk })
}
fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u64..=1440).prop_map(|m| format!("{m}m")),
        (1u64..=24).prop_map(|h| format!("{h}h")),
        (1u64..=86_400).prop_map(|s| format!("{s}s"))
    ]
}
fn printable() -> impl Strategy<Value = String> {
    "[ -~äé€]{0,30}"
}
fn git_url() -> impl Strategy<Value = String> {
    prop_oneof![
        "https://[a-z]{1,10}\\.example\\.com/[a-z]{1,8}/[a-z]{1,8}\\.git",
        "ssh://git@[a-z]{1,10}(:[1-9][0-9]{1,3})?/[a-z/]{1,12}",
        "git://[a-z]{1,10}/[a-z]{1,8}",
        "file:///srv/[a-z]{1,8}",
        "git@[a-z]{1,10}\\.com:[a-z]{1,8}/[a-z]{1,8}\\.git",
    ]
}
fn git_ref() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_-]{0,10}(/[a-z0-9][a-z0-9_-]{0,8}){0,2}",
        "[0-9a-f]{40}",
        "v[0-9]\\.[0-9]{1,2}\\.[0-9]"
    ]
}
fn constraint() -> impl Strategy<Value = Constraint> {
    (
        "\\$\\{(attr|meta|node)\\.[a-z_]{1,8}(\\.[a-z]{1,5})?\\}",
        prop::sample::select(vec![
            "",
            "=",
            "!=",
            ">=",
            "set_contains",
            "version",
            "regexp",
        ]),
        "[a-z0-9.]{1,8}",
    )
        .prop_map(|(attribute, operand, value)| Constraint {
            attribute,
            value,
            operand: operand.to_string(),
        })
}
fn test_spec() -> impl Strategy<Value = TestSpec> {
    (
        vec("[ -~]{1,30}", 0..3),
        any::<bool>(),
        btree_map(env_name(), printable(), 0..3),
        vec(
            (vault_path(), btree_map("[a-z_]{1,8}", env_name(), 1..3))
                .prop_map(|(path, fields)| VaultSecret { path, fields }),
            0..2,
        ),
        vec("[a-z][a-z0-9_-]{0,10}", 0..2),
        of(phase_resources()),
        of(duration()),
        any::<bool>(),
        0u32..8,
        vec(constraint(), 0..2),
    )
        .prop_map(
            |(
                commands,
                entry_point,
                env,
                vault_secrets,
                vault_policies,
                resource_limits,
                timeout,
                gpu_required,
                gpu_count,
                constraints,
            )| TestSpec {
                commands,
                entry_point,
                env,
                vault_secrets,
                vault_policies,
                resource_limits,
                timeout,
                gpu_required,
                gpu_count: if gpu_required { gpu_count } else { 0 },
                constraints,
            },
        )
}
fn webhook() -> impl Strategy<Value = WebhookSpec> {
    (
        "https?://[a-z]{1,10}(\\.[a-z]{2,5})?(:[1-9][0-9]{1,3})?(/[a-z0-9]{0,8}){0,2}",
        of(vault_path()),
        btree_map("X-[A-Za-z]{1,8}", "[ -~]{0,20}", 0..3),
        vec(
            prop::sample::select(vec![
                WebhookEvent::Started,
                WebhookEvent::Phase,
                WebhookEvent::Succeeded,
                WebhookEvent::Failed,
                WebhookEvent::Cancelled,
            ]),
            0..3,
        ),
    )
        .prop_map(|(url, secret_path, headers, on)| WebhookSpec {
            url,
            secret_path,
            headers,
            on,
        })
}

fn spec() -> impl Strategy<Value = BuildSpec> {
    let a = (
        "[a-z][a-z0-9@._-]{0,15}",
        git_url(),
        git_ref(),
        of(vault_path()),
        of("[A-Za-z0-9_][A-Za-z0-9_./-]{0,10}Dockerfile"),
        of(prop_oneof![
            Just(".".to_string()),
            "[a-z]{1,8}(/[a-z]{1,8}){0,2}"
        ]),
        image_name(),
        prop::collection::btree_set(tag(), 0..4).prop_map(|s| s.into_iter().collect::<Vec<_>>()),
        "[a-z]{1,10}(\\.[a-z]{2,5})?(:[1-9][0-9]{1,3})?(/[a-z0-9]{1,8})?",
        of(vault_path()),
    );
    let b = (
        of(test_spec()),
        of((
            of(number(1_000_000)),
            of(number(10_000_000)),
            of(number(10_000_000)),
            of(phase_resources()),
            of(phase_resources()),
            of(phase_resources()),
        )
            .prop_map(|(cpu, memory, disk, build, test, publish)| ResourceLimits {
                cpu,
                memory,
                disk,
                build,
                test,
                publish,
            })),
        of(duration()),
        any::<bool>(),
        0u32..=10,
        any::<bool>(),
        of(prop_oneof![
            (1u64..=8760).prop_map(|h| format!("{h}h")),
            Just("7days".to_string())
        ]),
        of(webhook()),
        of(1u32..=100),
        of(dns_label()),
    );
    let c = (
        btree_map(env_name(), printable(), 0..3),
        prop::collection::btree_map("[a-z][a-z0-9_.-]{0,8}", (vault_path(), "[a-z_]{1,8}"), 0..3)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(id, (vault_path, field))| BuildSecret {
                        id,
                        vault_path,
                        field,
                    })
                    .collect::<Vec<_>>()
            }),
        of("[A-Za-z][A-Za-z0-9_.-]{0,12}"),
        of((
            "[a-z]{1,10}(\\.[a-z]{2,5})?(:[1-9][0-9]{1,3})?",
            vault_path(),
        )),
        of(any::<bool>()),
        btree_map("[a-z]{1,5}(\\.[a-z]{1,5}){0,3}", printable(), 0..3),
        btree_map("[a-z]{1,5}(\\.[a-z]{1,5}){0,3}", printable(), 0..3),
    );
    (a, b, c).prop_map(
        |(
            (
                owner,
                repo_url,
                git_ref,
                gcp,
                dockerfile_path,
                dockerfile_context,
                image_name,
                image_tags,
                registry_url,
                rcp,
            ),
            (
                test,
                resource_limits,
                build_timeout,
                clear_cache,
                retries,
                cancel,
                ttl_after_finished,
                webhook,
                priority,
                concurrency_group,
            ),
            (build_args, build_secrets, target, pull, submodules, image_labels, image_annotations),
        )| BuildSpec {
            // Credentials travel only over https:// or ssh:// (jobforge_schema::tenancy).
            git_credentials_path: gcp.filter(|_| {
                !["http://", "git://", "file://"]
                    .iter()
                    .any(|s| repo_url.starts_with(s))
            }),
            owner,
            repo_url,
            git_ref,
            dockerfile_path,
            dockerfile_context,
            image_name,
            image_tags,
            registry_url,
            registry_credentials_path: rcp,
            test,
            resource_limits,
            build_timeout,
            clear_cache,
            retries,
            cancel,
            ttl_after_finished,
            webhook,
            build_args,
            build_secrets,
            target,
            pull_registry: pull.as_ref().map(|(h, _)| h.clone()),
            pull_credentials_path: pull.map(|(_, p)| p),
            submodules,
            image_labels,
            image_annotations,
            priority,
            concurrency_group,
        },
    )
}

fn request() -> impl Strategy<Value = BuildRequest> {
    (
        dns_label(),
        dns_label(),
        btree_map(
            "([a-z]{1,8}\\.io/)?[a-z][a-z0-9_.-]{0,8}[a-z]",
            "([A-Za-z0-9]([A-Za-z0-9_.-]{0,8}[A-Za-z0-9])?)?",
            0..3,
        ),
        spec(),
    )
        .prop_map(|(name, namespace, labels, spec)| {
            let mut r = BuildRequest::new(namespace, name, spec);
            r.metadata = ObjectMeta {
                labels,
                ..r.metadata
            };
            r
        })
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
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
        "commands",
        "env",
        "resource_limits",
        "cpu",
        "build",
        "webhook",
        "url",
        "on",
        "retries",
        "constraints",
        "vault_secrets",
        "fields",
        "job_config",
        "bogus",
    ])
    .prop_map(String::from);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(prop_oneof![keys.clone(), ".{0,6}"], inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn assert_valid_or_addressed(result: Result<BuildRequest, jobforge_schema::Problems>) {
    match result {
        Ok(req) => assert!(validate(&req).is_ok()),
        Err(p) => {
            assert!(!p.is_empty(), "a rejection must carry at least one problem");
            assert!(p.iter().all(|pr| !pr.message.is_empty()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_requests_round_trip_json_yaml_json_unchanged(req in request()) {
        let json = serde_json::to_vec(&req).unwrap();
        let from_json = parse_request(&json, Format::Json);
        prop_assert!(from_json.is_ok(), "generated request rejected: {}\n{}", from_json.unwrap_err(), String::from_utf8_lossy(&json));
        let from_json = from_json.unwrap();
        prop_assert_eq!(&from_json, &req);
        let yaml = serde_yaml_ng::to_string(&from_json).unwrap();
        let from_yaml = parse_request(yaml.as_bytes(), Format::Yaml);
        prop_assert!(from_yaml.is_ok(), "YAML form rejected: {}\n{}", from_yaml.unwrap_err(), yaml);
        let back: Value = serde_json::to_value(from_yaml.unwrap()).unwrap();
        let original: Value = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(back, original);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_rejections_carry_problems(bytes in vec(any::<u8>(), 0..512)) {
        assert_valid_or_addressed(parse_request(&bytes, Format::Json));
        assert_valid_or_addressed(parse_request(&bytes, Format::Yaml));
        let _ = parse_document(&bytes, Format::detect(&bytes));
    }

    #[test]
    fn arbitrary_json_values_get_path_addressed_problems(v in arbitrary_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let result = parse_request(&bytes, Format::Json);
        if let (Err(p), true) = (&result, v.is_object()) {
            prop_assert!(p.iter().all(|pr| !pr.path.is_empty()), "problems of a map need paths: {}", p);
        }
        assert_valid_or_addressed(result);
        let _ = parse_document(&bytes, Format::Json);
    }

    #[test]
    fn a_valid_request_with_one_field_replaced_is_valid_or_addressed(req in request(), v in arbitrary_json(), field in 0usize..8) {
        let mut doc = serde_json::to_value(&req).unwrap();
        let keys = ["owner", "image_tags", "test", "resource_limits", "webhook", "retries", "git_ref", "registry_url"];
        doc["spec"][keys[field]] = v;
        let bytes = serde_json::to_vec(&doc).unwrap();
        let result = parse_request(&bytes, Format::Json);
        if let Err(p) = &result {
            prop_assert!(p.iter().all(|pr| pr.path.starts_with("spec.")), "{}", p);
        }
        assert_valid_or_addressed(result);
    }
}
