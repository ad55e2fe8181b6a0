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
