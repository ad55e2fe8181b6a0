//! Task profiles: how a phase's fixed script becomes a Nomad task.
//!
//! - `raw_exec`: `{"command": "/bin/sh", "args": ["-c", SCRIPT, "jobforge-<phase>", args...]}`,
//!   with the client's `git`, `buildah` and `skopeo`.
//! - `docker`: the tool image ([`RenderConfig::buildah_image`] or [`RenderConfig::skopeo_image`])
//!   with `entrypoint: ["/bin/sh"]` and the same args; never `privileged`; `cap_add` only
//!   [`RenderConfig::docker_cap_add`]; `STORAGE_DRIVER=vfs`, `BUILDAH_ISOLATION=chroot`.
//!
//! Both profiles set the common environment of the prelude (`JF_STORAGE_DRIVER`,
//! `JF_TLS_VERIFY`, and for `raw_exec` `JF_WORK_ROOT`: the configured work root, by default
//! `${NOMAD_ALLOC_DIR}`, under which each allocation gets buildah storage of its own) and, when
//! the request names registry credentials, templates writing `secrets/registry_username` and
//! `secrets/registry_password` plus `JF_REGISTRY_AUTH=1` and `JF_REGISTRY_HOST_B64` (the host
//! of `registry_url`, the only host `login` is done for, into a per-task authfile in
//! `secrets/`).

use std::collections::BTreeMap;

use jobforge_schema::BuildRequest;
use serde_json::{Map, Value, json};

use crate::nomad::job_spec::{Task, Vault};

use super::escaping::value_file_template;
use super::{Profile, RenderConfig, RenderError, b64, bool_text, registry_host};

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
    // `auto` is probed by the scripts on raw_exec; the docker profile's tool container has no
    // overlay support to probe for (no /dev/fuse, never privileged).
    let driver_name = match (cfg.profile, cfg.storage_driver.as_str()) {
        (Profile::Docker, "auto") => "vfs".to_string(),
        (_, d) => d.to_string(),
    };
    env.insert("JF_STORAGE_DRIVER".into(), driver_name.clone());
    env.insert("JF_TLS_VERIFY".into(), bool_text(cfg.tls_verify));
    let config = match cfg.profile {
        Profile::RawExec => {
            // Operator configuration, not request data: `${NOMAD_ALLOC_DIR}` is meant to be
            // interpolated by Nomad.
            let root = cfg.work_root.as_ref().map_or_else(
                || "${NOMAD_ALLOC_DIR}".to_string(),
                |r| r.display().to_string(),
            );
            env.insert("JF_WORK_ROOT".into(), root);
            let mut m = Map::new();
            m.insert("command".into(), json!("/bin/sh"));
            m.insert("args".into(), Value::Array(sh_args(script, phase, &[])));
            m
        }
        Profile::Docker => {
            if tool == Tool::Buildah {
                env.insert("STORAGE_DRIVER".into(), driver_name.clone());
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

/// Adds registry login to a tool task when `spec.registry_credentials_path` is set: templates
/// writing `secrets/registry_username` and `secrets/registry_password` (fields `username`,
/// `password`; files, never the environment), `JF_REGISTRY_AUTH=1`, `JF_REGISTRY_HOST_B64` and
/// the Vault block. Without credentials sets `JF_REGISTRY_AUTH=0` (anonymous).
pub fn add_registry_credentials(
    task: &mut Task,
    req: &BuildRequest,
    cfg: &RenderConfig,
) -> Result<(), RenderError> {
    match &req.spec.registry_credentials_path {
        Some(path) => {
            for field in ["username", "password"] {
                task.templates.push(value_file_template(
                    &format!("secrets/registry_{field}"),
                    path,
                    field,
                ));
            }
            task.env.insert("JF_REGISTRY_AUTH".into(), "1".into());
            task.env.insert(
                "JF_REGISTRY_HOST_B64".into(),
                b64(registry_host(&req.spec.registry_url)),
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
/// `Env` is false: the token is never in the task's environment (see the module docs of
/// [`super`]).
pub fn ensure_vault(task: &mut Task, ns: &str, cfg: &RenderConfig, extra: &[String]) {
    let vault = task.vault.get_or_insert_with(|| Vault {
        policies: Vec::new(),
        change_mode: "noop".into(),
        env: false,
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
