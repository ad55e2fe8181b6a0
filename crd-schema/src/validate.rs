//! Semantic validation of a typed [`BuildRequest`]: every problem at once, each with its JSON path
//! and what is allowed. Shape problems (unknown fields, wrong types) are found earlier by
//! [`crate::parse`]; this module checks the grammar and bounds of every value (see [`crate::grammar`]).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::grammar::{self, quote};
use crate::problem::{Problems, join_field, join_index};
use crate::request::{
    API_VERSION, BuildRequest, BuildSpec, KIND, PhaseResources, ResourceLimits, TestSpec,
    WebhookSpec,
};

/// Bounds of `build_timeout` and `test.timeout`: 1s ..= 24h.
pub const PHASE_TIMEOUT_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));
/// Bounds of `ttl_after_finished`: 1s ..= 8760h (one year).
pub const TTL_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(8760 * 3600));
/// Largest `retries`.
pub const MAX_RETRIES: u32 = 10;
/// Bounds of `priority` (Nomad's job priority range is 1 ..= 100 too).
pub const PRIORITY_BOUNDS: (u32, u32) = (1, 100);
/// `priority` when a request sets none (Nomad's default job priority).
pub const DEFAULT_PRIORITY: u32 = 50;
/// CPU bounds in MHz.
pub const CPU_MHZ_BOUNDS: (u64, u64) = (1, 1_000_000);
/// Memory and disk bounds in MB.
pub const MB_BOUNDS: (u64, u64) = (1, 10_000_000);
/// Most entries of each of `build_args`, `image_labels`, `image_annotations`.
pub const MAX_MAP_ENTRIES: usize = 64;
/// Longest value of a `build_args`, `image_labels` or `image_annotations` entry, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Most `build_secrets`.
pub const MAX_BUILD_SECRETS: usize = 16;
/// Longest `owner`.
pub const MAX_OWNER_LEN: usize = 128;

/// Validates a whole request; `Err` holds every problem found (never empty).
///
/// Checks `apiVersion`/`kind` exactly, metadata names (DNS labels) and labels (Kubernetes syntax),
/// and the spec (see [`validate_spec`]), with paths from the document root (`spec.image_tags[2]`).
pub fn validate(req: &BuildRequest) -> Result<(), Problems> {
    let mut p = Problems::default();
    if req.api_version != API_VERSION {
        p.push(
            "apiVersion",
            format!(
                "{} is not supported; allowed: {API_VERSION}",
                quote(&req.api_version)
            ),
        );
    }
    if req.kind != KIND {
        p.push(
            "kind",
            format!("{} is not supported; allowed: {KIND}", quote(&req.kind)),
        );
    }
    check(
        &mut p,
        "metadata.name",
        grammar::dns_label(&req.metadata.name),
    );
    check(
        &mut p,
        "metadata.namespace",
        grammar::dns_label(&req.metadata.namespace),
    );
    for (k, v) in &req.metadata.labels {
        let path = join_field("metadata.labels", k);
        check(&mut p, &path, grammar::label_key(k));
        check(&mut p, &path, grammar::label_value(v));
    }
    spec_problems(&mut p, "spec", &req.spec);
    p.into_result()
}

/// Validates a spec alone (the seed's flat `job_config`); paths are relative to the spec
/// (`image_tags[2]`). `Err` holds every problem found.
pub fn validate_spec(spec: &BuildSpec) -> Result<(), Problems> {
    let mut p = Problems::default();
    spec_problems(&mut p, "", spec);
    p.into_result()
}

fn check<T>(p: &mut Problems, path: &str, r: Result<T, String>) {
    if let Err(m) = r {
        p.push(path, m);
    }
}

fn required(p: &mut Problems, path: &str, value: &str, rule: impl Fn(&str) -> Result<(), String>) {
    if value.is_empty() {
        p.push(path, "is required and must not be empty");
    } else {
        check(p, path, rule(value));
    }
}

fn spec_problems(p: &mut Problems, at: &str, s: &BuildSpec) {
    let f = |name: &str| join_field(at, name);
    required(p, &f("owner"), &s.owner, |v| {
        if v.len() > MAX_OWNER_LEN || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(format!(
                "{} is not a valid owner: at most {MAX_OWNER_LEN} characters, no whitespace or control characters",
                quote(v)
            ))
        } else {
            Ok(())
        }
    });
    required(p, &f("repo_url"), &s.repo_url, grammar::git_url);
    required(p, &f("git_ref"), &s.git_ref, grammar::git_ref);
    required(p, &f("image_name"), &s.image_name, grammar::image_name);
    required(p, &f("registry_url"), &s.registry_url, grammar::registry);
    for (name, v) in [
        ("git_credentials_path", &s.git_credentials_path),
        ("registry_credentials_path", &s.registry_credentials_path),
        ("pull_credentials_path", &s.pull_credentials_path),
    ] {
        if let Some(v) = v {
            check(p, &f(name), grammar::vault_path(v));
        }
    }
    for (name, v) in [
        ("dockerfile_path", &s.dockerfile_path),
        ("dockerfile_context", &s.dockerfile_context),
    ] {
        if let Some(v) = v {
            check(p, &f(name), grammar::relative_path(v));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, t) in s.image_tags.iter().enumerate() {
        let path = join_index(&f("image_tags"), i);
        check(p, &path, grammar::tag(t));
        if !seen.insert(t) {
            p.push(
                path,
                format!("{} is listed twice; tags must be unique", quote(t)),
            );
        }
    }
    let (lo, hi) = PHASE_TIMEOUT_BOUNDS;
    if let Some(d) = &s.build_timeout {
        check(p, &f("build_timeout"), grammar::duration(d, lo, hi));
    }
    if let Some(d) = &s.ttl_after_finished {
        check(
            p,
            &f("ttl_after_finished"),
            grammar::duration(d, TTL_BOUNDS.0, TTL_BOUNDS.1),
        );
    }
    if s.retries > MAX_RETRIES {
        p.push(
            f("retries"),
            format!("{} is too many; allowed: 0 ..= {MAX_RETRIES}", s.retries),
        );
    }
    build_problems(p, at, s);
    if let Some(n) = s.priority
        && !(PRIORITY_BOUNDS.0..=PRIORITY_BOUNDS.1).contains(&n)
    {
        p.push(
            f("priority"),
            format!(
                "{n} is out of range; allowed: {} ..= {} (higher starts first)",
                PRIORITY_BOUNDS.0, PRIORITY_BOUNDS.1
            ),
        );
    }
    if let Some(g) = &s.concurrency_group {
        check(p, &f("concurrency_group"), grammar::dns_label(g));
    }
    if let Some(t) = &s.test {
        test_problems(p, &f("test"), t);
    }
    if let Some(r) = &s.resource_limits {
        limits_problems(p, &f("resource_limits"), r);
    }
    if let Some(w) = &s.webhook {
        webhook_problems(p, &f("webhook"), w);
    }
    crate::tenancy::spec_problems(p, at, s);
}

/// `build_args`, `build_secrets`, `target`, `pull_registry`/`pull_credentials_path` and the image
/// labels and annotations.
fn build_problems(p: &mut Problems, at: &str, s: &BuildSpec) {
    let f = |name: &str| join_field(at, name);
    data_map(p, &f("build_args"), &s.build_args, grammar::env_name);
    data_map(p, &f("image_labels"), &s.image_labels, grammar::oci_key);
    data_map(
        p,
        &f("image_annotations"),
        &s.image_annotations,
        grammar::oci_key,
    );
    if s.build_secrets.len() > MAX_BUILD_SECRETS {
        p.push(
            f("build_secrets"),
            format!(
                "has {} entries; allowed: at most {MAX_BUILD_SECRETS}",
                s.build_secrets.len()
            ),
        );
    }
    let mut ids = BTreeSet::new();
    for (i, sec) in s.build_secrets.iter().enumerate() {
        let sp = join_index(&f("build_secrets"), i);
        check(p, &join_field(&sp, "id"), grammar::vault_name(&sec.id));
        if !ids.insert(sec.id.as_str()) {
            p.push(
                join_field(&sp, "id"),
                format!("{} is listed twice; ids must be unique", quote(&sec.id)),
            );
        }
        check(
            p,
            &join_field(&sp, "vault_path"),
            grammar::vault_path(&sec.vault_path),
        );
        check(
            p,
            &join_field(&sp, "field"),
            grammar::vault_name(&sec.field),
        );
    }
    if let Some(t) = &s.target {
        check(p, &f("target"), grammar::stage(t));
    }
    if let Some(h) = &s.pull_registry {
        check(p, &f("pull_registry"), grammar::registry_host(h));
    }
    match (&s.pull_registry, &s.pull_credentials_path) {
        (None, Some(_)) => p.push(
            f("pull_registry"),
            "is required with pull_credentials_path: the host those credentials are for \
             (host[:port])",
        ),
        (Some(_), None) => p.push(
            f("pull_credentials_path"),
            "is required with pull_registry: the Vault path of that registry's credentials",
        ),
        _ => {}
    }
}

/// A map of data values (`build_args`, `image_labels`, `image_annotations`): at most
/// [`MAX_MAP_ENTRIES`], keys by `key_rule`, values at most [`MAX_VALUE_BYTES`] without control
/// characters.
fn data_map(
    p: &mut Problems,
    at: &str,
    m: &std::collections::BTreeMap<String, String>,
    key_rule: fn(&str) -> Result<(), String>,
) {
    if m.len() > MAX_MAP_ENTRIES {
        p.push(
            at,
            format!(
                "has {} entries; allowed: at most {MAX_MAP_ENTRIES}",
                m.len()
            ),
        );
    }
    for (k, v) in m {
        let path = join_field(at, k);
        check(p, &path, key_rule(k));
        check(p, &path, grammar::no_control(v, &[]));
        if v.len() > MAX_VALUE_BYTES {
            p.push(
                &path,
                format!(
                    "is {} bytes long; allowed: at most {MAX_VALUE_BYTES}",
                    v.len()
                ),
            );
        }
    }
}

fn test_problems(p: &mut Problems, at: &str, t: &TestSpec) {
    for (i, c) in t.commands.iter().enumerate() {
        let path = join_index(&join_field(at, "commands"), i);
        if c.trim().is_empty() {
            p.push(&path, "must not be empty; allowed: a shell command line");
        }
        // Commands are scripts run by `sh -c`: newlines and tabs are legitimate there.
        check(p, &path, grammar::no_control(c, &['\n', '\t']));
    }
    for (k, v) in &t.env {
        let path = join_field(&join_field(at, "env"), k);
        check(p, &path, grammar::env_name(k));
        check(p, &path, grammar::no_control(v, &['\t']));
    }
    for (i, s) in t.vault_secrets.iter().enumerate() {
        let sp = join_index(&join_field(at, "vault_secrets"), i);
        check(p, &join_field(&sp, "path"), grammar::vault_path(&s.path));
        if s.fields.is_empty() {
            p.push(
                join_field(&sp, "fields"),
                "must map at least one Vault field to an environment variable",
            );
        }
        for (field, env) in &s.fields {
            let path = join_field(&join_field(&sp, "fields"), field);
            check(p, &path, grammar::vault_name(field));
            check(p, &path, grammar::env_name(env));
        }
    }
    for (i, pol) in t.vault_policies.iter().enumerate() {
        check(
            p,
            &join_index(&join_field(at, "vault_policies"), i),
            grammar::vault_name(pol),
        );
    }
    if let Some(r) = &t.resource_limits {
        phase_problems(p, &join_field(at, "resource_limits"), r);
    }
    if let Some(d) = &t.timeout {
        let (lo, hi) = PHASE_TIMEOUT_BOUNDS;
        check(p, &join_field(at, "timeout"), grammar::duration(d, lo, hi));
    }
    if t.gpu_count > 0 && !t.gpu_required {
        p.push(
            join_field(at, "gpu_count"),
            "is set but gpu_required is false; set gpu_required: true or remove gpu_count",
        );
    }
    for (i, c) in t.constraints.iter().enumerate() {
        let cp = join_index(&join_field(at, "constraints"), i);
        check(
            p,
            &join_field(&cp, "attribute"),
            grammar::constraint_attribute(&c.attribute),
        );
        check(
            p,
            &join_field(&cp, "operand"),
            grammar::constraint_operand(&c.operand),
        );
        check(
            p,
            &join_field(&cp, "value"),
            grammar::no_control(&c.value, &[]),
        );
        let unary = matches!(c.operand.as_str(), "is_set" | "is_not_set");
        if !unary && c.value.is_empty() && grammar::constraint_operand(&c.operand).is_ok() {
            p.push(
                join_field(&cp, "value"),
                "is required unless operand is is_set or is_not_set",
            );
        }
        if c.operand == "regexp"
            && let Err(e) = regex::Regex::new(&c.value)
        {
            p.push(
                join_field(&cp, "value"),
                format!("is not a valid regular expression: {e}"),
            );
        }
    }
}

fn phase_problems(p: &mut Problems, at: &str, r: &PhaseResources) {
    resources(
        p,
        at,
        r.cpu.as_deref(),
        r.memory.as_deref(),
        r.disk.as_deref(),
    );
}

fn resources(
    p: &mut Problems,
    at: &str,
    cpu: Option<&str>,
    memory: Option<&str>,
    disk: Option<&str>,
) {
    if let Some(v) = cpu {
        check(
            p,
            &join_field(at, "cpu"),
            grammar::decimal(v, CPU_MHZ_BOUNDS.0, CPU_MHZ_BOUNDS.1, "MHz"),
        );
    }
    for (name, v) in [("memory", memory), ("disk", disk)] {
        if let Some(v) = v {
            check(
                p,
                &join_field(at, name),
                grammar::decimal(v, MB_BOUNDS.0, MB_BOUNDS.1, "MB"),
            );
        }
    }
}

fn limits_problems(p: &mut Problems, at: &str, r: &ResourceLimits) {
    resources(
        p,
        at,
        r.cpu.as_deref(),
        r.memory.as_deref(),
        r.disk.as_deref(),
    );
    for (name, ph) in [
        ("build", &r.build),
        ("test", &r.test),
        ("publish", &r.publish),
    ] {
        if let Some(ph) = ph {
            phase_problems(p, &join_field(at, name), ph);
        }
    }
}

fn webhook_problems(p: &mut Problems, at: &str, w: &WebhookSpec) {
    required(p, &join_field(at, "url"), &w.url, grammar::http_url);
    if let Some(sp) = &w.secret_path {
        check(p, &join_field(at, "secret_path"), grammar::vault_path(sp));
    }
    for (k, v) in &w.headers {
        let path = join_field(&join_field(at, "headers"), k);
        check(p, &path, grammar::header_name(k));
        check(p, &path, grammar::no_control(v, &['\t']));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod build_field_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::request::BuildSecret;

    fn spec() -> BuildSpec {
        BuildSpec {
            owner: "t".into(),
            repo_url: "https://git.example.com/a.git".into(),
            git_ref: "main".into(),
            image_name: "app".into(),
            registry_url: "registry:5000".into(),
            ..BuildSpec::default()
        }
    }

    fn paths(s: &BuildSpec) -> Vec<String> {
        validate_spec(s)
            .err()
            .map(|p| p.0.into_iter().map(|p| p.path).collect())
            .unwrap_or_default()
    }

    #[test]
    fn valid_build_fields_pass() {
        let mut s = spec();
        s.build_args = BTreeMap::from([("VERSION".into(), "${VAULT_TOKEN} $(id)".into())]);
        s.build_secrets = vec![BuildSecret {
            id: "npmrc".into(),
            vault_path: "secret/data/jobforge/team-a/npm".into(),
            field: "npmrc".into(),
        }];
        s.target = Some("runtime".into());
        s.pull_registry = Some("mirror.internal:5000".into());
        s.pull_credentials_path = Some("secret/data/jobforge/team-a/pull".into());
        s.submodules = Some(false);
        s.image_labels = BTreeMap::from([(
            "org.opencontainers.image.source".into(),
            "https://git.example.com/a".into(),
        )]);
        s.image_annotations = BTreeMap::from([("org.example/team".into(), "a".into())]);
        assert_eq!(paths(&s), Vec::<String>::new());
        assert!(!s.submodules());
        assert!(spec().submodules(), "submodules default to true");
    }

    #[test]
    fn bad_build_fields_name_their_paths() {
        let mut s = spec();
        s.build_args = BTreeMap::from([
            ("1BAD".into(), "x".into()),
            ("OK".into(), "line\nbreak".into()),
            ("LONG".into(), "x".repeat(MAX_VALUE_BYTES + 1)),
        ]);
        s.build_secrets = vec![
            BuildSecret {
                id: "a b".into(),
                vault_path: "/abs".into(),
                field: "f".into(),
            },
            BuildSecret {
                id: "x".into(),
                vault_path: "secret/data/x".into(),
                field: "".into(),
            },
            BuildSecret {
                id: "x".into(),
                vault_path: "secret/data/x".into(),
                field: "f".into(),
            },
        ];
        s.target = Some("-stage".into());
        s.pull_credentials_path = Some("secret/data/x".into());
        s.image_labels = BTreeMap::from([("-k".into(), "v".into())]);
        s.image_annotations = BTreeMap::from([("k".into(), "\u{7}".into())]);
        let got = paths(&s);
        for want in [
            "build_args.1BAD",
            "build_args.OK",
            "build_args.LONG",
            "build_secrets[0].id",
            "build_secrets[0].vault_path",
            "build_secrets[1].field",
            "build_secrets[2].id",
            "target",
            "pull_registry",
            "image_labels.-k",
            "image_annotations.k",
        ] {
            assert!(got.iter().any(|g| g == want), "{want} missing in {got:?}");
        }
    }

    #[test]
    fn pull_registry_is_a_host_and_needs_its_credentials() {
        let mut s = spec();
        s.pull_registry = Some("https://mirror/x".into());
        assert_eq!(paths(&s), ["pull_registry", "pull_credentials_path"]);
    }

    #[test]
    fn map_and_list_sizes_are_capped() {
        let mut s = spec();
        s.build_args = (0..=MAX_MAP_ENTRIES)
            .map(|i| (format!("A{i}"), String::new()))
            .collect();
        s.build_secrets = (0..=MAX_BUILD_SECRETS)
            .map(|i| BuildSecret {
                id: format!("s{i}"),
                vault_path: "secret/data/x".into(),
                field: "f".into(),
            })
            .collect();
        assert_eq!(paths(&s), ["build_args", "build_secrets"]);
    }
}
