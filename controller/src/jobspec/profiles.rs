//! Task profiles: how a phase's fixed script becomes a Nomad task.
//!
//! - `raw_exec`: `{"command": "/bin/sh", "args": ["-c", SCRIPT, "jobforge-<phase>", args...]}`,
//!   with the client's `git`, `buildah` and `skopeo`.
//! - `docker`: the tool image ([`RenderConfig::buildah_image`] or [`RenderConfig::skopeo_image`])
//!   with `entrypoint: ["/bin/sh"]` and the same args; never `privileged`; `cap_add` only
//!   [`RenderConfig::docker_cap_add`]; `STORAGE_DRIVER=vfs`, `BUILDAH_ISOLATION=chroot`.
//!
//! Both profiles set the common environment of the prelude (`JF_STORAGE_DRIVER`,
//! `JF_TLS_VERIFY`, `JF_WORK_ROOT`) and, when the request names registry credentials, a template
//! exporting `JF_REGISTRY_USERNAME`/`JF_REGISTRY_PASSWORD` plus `JF_REGISTRY_AUTH=1` and
//! `JF_REGISTRY_HOST`.

use std::collections::BTreeMap;

use jobforge_schema::BuildRequest;
use serde_json::{Map, Value, json};

use crate::nomad::job_spec::{Task, Vault};

use super::escaping::env_template;
use super::{Profile, RenderConfig, RenderError, bool_text, registry_host};

/// Which tool image a docker-profile task needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// git + buildah (build and test phases).
    Buildah,
    /// skopeo (publish phase).
    Skopeo,
}

/// The driver name of a profile.
pub fn driver(profile: Profile) -> &'static str {
    match profile {
        Profile::RawExec => "raw_exec",
        Profile::Docker => "docker",
    }
}

/// The argv after `/bin/sh`: `["-c", script, "jobforge-<phase>", extra...]`.
pub fn sh_args(script: &str, phase: &str, extra: &[String]) -> Vec<Value> {
    let mut args = vec![
        Value::from("-c"),
        Value::from(script),
        Value::from(format!("jobforge-{phase}")),
    ];
    args.extend(extra.iter().map(|s| Value::from(s.as_str())));
    args
}

/// A task that runs `script` with `/bin/sh -c` in the profile's tool environment.
/// `env` holds every user value; templates and Vault policies are added by the caller or by
/// [`add_registry_credentials`].
pub fn tool_task(
    cfg: &RenderConfig,
    tool: Tool,
    phase: &str,
    script: &str,
    env: BTreeMap<String, String>,
) -> Task {
    let mut env = env;
    env.insert("JF_STORAGE_DRIVER".into(), cfg.storage_driver.clone());
    env.insert("JF_TLS_VERIFY".into(), bool_text(cfg.tls_verify));
    let config = match cfg.profile {
        Profile::RawExec => {
            if let Some(root) = &cfg.work_root {
                env.insert("JF_WORK_ROOT".into(), root.display().to_string());
            }
            let mut m = Map::new();
            m.insert("command".into(), json!("/bin/sh"));
            m.insert("args".into(), Value::Array(sh_args(script, phase, &[])));
            m
        }
        Profile::Docker => {
            if tool == Tool::Buildah {
                env.insert("STORAGE_DRIVER".into(), cfg.storage_driver.clone());
                env.insert("BUILDAH_ISOLATION".into(), "chroot".into());
            }
            let image = match tool {
                Tool::Buildah => &cfg.buildah_image,
                Tool::Skopeo => &cfg.skopeo_image,
            };
            let mut m = Map::new();
            m.insert("image".into(), json!(image));
            m.insert("entrypoint".into(), json!(["/bin/sh"]));
            m.insert("args".into(), Value::Array(sh_args(script, phase, &[])));
            if tool == Tool::Buildah && !cfg.docker_cap_add.is_empty() {
                m.insert("cap_add".into(), json!(cfg.docker_cap_add));
            }
            if let Some(mode) = &cfg.docker_network_mode {
                m.insert("network_mode".into(), json!(mode));
            }
            m
        }
    };
    Task {
        driver: driver(cfg.profile).to_string(),
        config,
        env,
        ..Default::default()
    }
}

/// Adds registry login to a tool task when `spec.registry_credentials_path` is set: a template
/// `secrets/registry.env` exporting `JF_REGISTRY_USERNAME` and `JF_REGISTRY_PASSWORD` (fields
/// `username`, `password`), `JF_REGISTRY_AUTH=1`, `JF_REGISTRY_HOST` and the Vault block.
/// Without credentials sets `JF_REGISTRY_AUTH=0` (anonymous).
pub fn add_registry_credentials(
    task: &mut Task,
    req: &BuildRequest,
    cfg: &RenderConfig,
) -> Result<(), RenderError> {
    match &req.spec.registry_credentials_path {
        Some(path) => {
            task.templates.push(env_template(
                "spec.registry_credentials_path",
                "registry",
                path,
                &[
                    ("username", "JF_REGISTRY_USERNAME"),
                    ("password", "JF_REGISTRY_PASSWORD"),
                ],
            )?);
            task.env.insert("JF_REGISTRY_AUTH".into(), "1".into());
            task.env.insert(
                "JF_REGISTRY_HOST".into(),
                registry_host(&req.spec.registry_url).to_string(),
            );
            ensure_vault(task, &req.metadata.namespace, cfg, &[]);
        }
        None => {
            task.env.insert("JF_REGISTRY_AUTH".into(), "0".into());
        }
    }
    Ok(())
}

/// Sets the task's Vault block to namespace `ns`'s policy ([`TenancyConfig::vault_policy_for`],
/// default `jobforge-<ns>`) plus those of `extra` the namespace's allowlist
/// (`tenancy.vault_policies_allowed`) holds, deduplicated, in order. A policy outside the
/// allowlist never reaches a task, even if validation was skipped: the controller refuses such a
/// request with `InvalidSpec` before any job (`jobforge_schema::tenancy::tenancy_problems`).
///
/// [`TenancyConfig::vault_policy_for`]: jobforge_schema::tenancy::TenancyConfig::vault_policy_for
pub fn ensure_vault(task: &mut Task, ns: &str, cfg: &RenderConfig, extra: &[String]) {
    let vault = task.vault.get_or_insert_with(|| Vault {
        policies: Vec::new(),
        change_mode: "noop".into(),
    });
    let own = cfg.tenancy.vault_policy_for(ns);
    let allowed = cfg.tenancy.vault_policies_allowed.get(ns);
    let extra = extra
        .iter()
        .filter(|p| allowed.is_some_and(|a| a.contains(p)));
    for p in std::iter::once(&own).chain(extra) {
        if !vault.policies.contains(p) {
            vault.policies.push(p.clone());
        }
    }
}
