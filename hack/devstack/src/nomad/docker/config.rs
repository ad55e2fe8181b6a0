//! The docker task's `config` block and the plugin's options, and the pure translation of both
//! into a Docker Engine API `POST /containers/create` body.
//!
//! Rules, from Nomad's `drivers/docker`:
//! - `config.go` (`TaskConfig`): the fields read here; any other key fails the task, as the
//!   plugin's HCL spec decode does (`failed to decode driver config`). `command` set →
//!   `Cmd = [command] + args`; only `args` → `Cmd = args` (appended to the image's entry point);
//!   `entrypoint` replaces the image's.
//! - `config.go` (`PluginConfig`): `allow_caps` defaults to Nomad's capability set
//!   (`drivers/shared/capabilities/defaults.go` `NomadDefaults`: Docker's defaults minus
//!   `NET_RAW`); `allow_privileged` defaults to false; `volumes.enabled` defaults to false (then
//!   only relative host paths, inside the allocation directory, may be bound).
//! - `driver.go` (`createContainerConfig`): the effective capability set is Docker's defaults
//!   minus `cap_drop` plus `cap_add` (`"all"` in either), and every capability of it must be in
//!   `allow_caps`, else the task fails with `Docker driver doesn't have the following caps
//!   allowlisted on this Nomad agent: [...]`; `privileged` without `allow_privileged` fails with
//!   `Docker privileged mode is disabled on this Nomad agent`. Memory is a hard limit
//!   (`Memory` = `MemorySwap` = MB × 2^20, so no swap), CPU is `CpuShares` = MHz. The task's
//!   `alloc/`, `local/` and `secrets/` directories are bound at `/alloc`, `/local`, `/secrets`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use serde::Deserialize;
use serde_json::{Value, json};

/// Docker's default capability set (`capabilities.DockerDefaults`).
pub const DOCKER_DEFAULT_CAPS: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Nomad's default `allow_caps` (`capabilities.NomadDefaults`): Docker's set without `NET_RAW`.
pub fn nomad_default_caps() -> Vec<String> {
    DOCKER_DEFAULT_CAPS
        .iter()
        .filter(|c| **c != "NET_RAW")
        .map(|c| (*c).to_string())
        .collect()
}

/// Every capability the kernel knows (`capabilities.Supported`), for `"all"`.
const ALL_CAPS: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// The docker plugin's configuration on this client (`plugin "docker" { config { ... } }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// `allow_caps`, upper case without `CAP_`.
    pub allow_caps: Vec<String>,
    /// `allow_privileged`.
    pub allow_privileged: bool,
    /// `volumes { enabled }`: absolute host paths in `volumes`/`mounts`.
    pub volumes_enabled: bool,
    /// `gc { image = true }`: remove an image once no task uses it, after `image_delay`.
    pub gc_image: bool,
    /// `gc { image_delay = "3m" }`: how long an unused image is kept for a task that may want it.
    pub image_delay: std::time::Duration,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            allow_caps: nomad_default_caps(),
            allow_privileged: false,
            volumes_enabled: false,
            gc_image: true,
            // Nomad's default (`drivers/docker/config.go`, `image_delay`).
            image_delay: std::time::Duration::from_secs(180),
        }
    }
}

/// `auth { ... }` of a task.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Registry user.
    pub username: String,
    /// Registry password.
    pub password: String,
    /// Registry host (`registry.example:5000`).
    pub server_address: String,
    /// Email (ignored by registries, kept for the wire format).
    pub email: String,
}

/// `devices = [{ ... }]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Device {
    /// Host device path (`/dev/fuse`).
    pub host_path: String,
    /// Path in the container (host path when empty).
    pub container_path: String,
    /// cgroup permissions (`rwm` when empty).
    pub cgroup_permissions: String,
}

/// `mount { ... }` (only `bind` and `tmpfs`, the types jobforge and its tests use; `volume` is
/// refused with the name of the type).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Mount {
    /// `bind` (default) or `tmpfs`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Path in the container.
    pub target: String,
    /// Host path (bind), relative paths are relative to the task directory.
    pub source: String,
    /// Read-only.
    pub readonly: bool,
}

/// The subset of Nomad's docker `TaskConfig` the emulator runs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Image reference (required).
    pub image: String,
    /// Command (first element of `Cmd`).
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Entry point override.
    pub entrypoint: Vec<String>,
    /// Working directory.
    pub work_dir: String,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    pub cap_drop: Vec<String>,
    /// Privileged container (needs `allow_privileged`).
    pub privileged: bool,
    /// Host devices.
    pub devices: Vec<Device>,
    /// `host:container[:ro]` binds.
    pub volumes: Vec<String>,
    /// Mounts.
    #[serde(alias = "mount")]
    pub mounts: Vec<Mount>,
    /// Registry credentials for the pull.
    pub auth: Option<Auth>,
    /// Pull even when the image is present.
    pub force_pull: bool,
    /// `NetworkMode` (`bridge`, `host`, `none`).
    pub network_mode: String,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// `--security-opt` values.
    pub security_opt: Vec<String>,
    /// OCI runtime (`runc`, `nvidia`, ...).
    pub runtime: String,
}

/// Why a task config cannot run; the text is the task's `Driver Failure` message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The block does not decode (unknown key, wrong type).
    #[error("failed to decode driver config: {0}")]
    Decode(String),
    /// `image` missing.
    #[error("failed to decode driver config: image must be set")]
    NoImage,
    /// Capabilities outside `allow_caps`.
    #[error("Docker driver doesn't have the following caps allowlisted on this Nomad agent: {0:?}")]
    CapsNotAllowed(Vec<String>),
    /// An unknown capability name.
    #[error("unknown capability {0:?}")]
    UnknownCap(String),
    /// `privileged` without `allow_privileged`.
    #[error("Docker privileged mode is disabled on this Nomad agent")]
    Privileged,
    /// A host path outside the allocation directory without `volumes.enabled`.
    #[error("volumes are not enabled; cannot mount host paths: {0:?}")]
    VolumesDisabled(String),
    /// A malformed `volumes` entry or mount.
    #[error("invalid docker volume/mount {0:?}")]
    BadVolume(String),
}

impl TaskConfig {
    /// Decodes a task's `config` map. Errors: [`ConfigError::Decode`], [`ConfigError::NoImage`].
    pub fn parse(config: &serde_json::Map<String, Value>) -> Result<TaskConfig, ConfigError> {
        let c: TaskConfig = serde_json::from_value(Value::Object(config.clone()))
            .map_err(|e| ConfigError::Decode(e.to_string()))?;
        if c.image.trim().is_empty() {
            return Err(ConfigError::NoImage);
        }
        Ok(c)
    }
}

fn normalize_cap(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    up.strip_prefix("CAP_").map_or(up.clone(), str::to_string)
}

/// The `(CapAdd, CapDrop)` the engine gets, relative to Docker's defaults, after checking the
/// effective set against `allow_caps`.
///
/// Errors: [`ConfigError::UnknownCap`], [`ConfigError::CapsNotAllowed`] (names sorted).
pub fn capabilities(
    plugin: &PluginConfig,
    cap_add: &[String],
    cap_drop: &[String],
) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let known: BTreeSet<&str> = ALL_CAPS.iter().copied().collect();
    let mut effective: BTreeSet<String> = DOCKER_DEFAULT_CAPS
        .iter()
        .map(|c| (*c).to_string())
        .collect();
    // Nomad drops what allow_caps does not hold from the defaults (NET_RAW by default) before
    // applying the task's own lists.
    let allow: BTreeSet<String> = plugin.allow_caps.iter().map(|c| normalize_cap(c)).collect();
    let allow_all = allow.contains("ALL");
    if !allow_all {
        effective.retain(|c| allow.contains(c));
    }
    for d in cap_drop.iter().map(|c| normalize_cap(c)) {
        if d == "ALL" {
            effective.clear();
        } else if known.contains(d.as_str()) {
            effective.remove(&d);
        } else {
            return Err(ConfigError::UnknownCap(d));
        }
    }
    for a in cap_add.iter().map(|c| normalize_cap(c)) {
        if a == "ALL" {
            effective.extend(ALL_CAPS.iter().map(|c| (*c).to_string()));
        } else if known.contains(a.as_str()) {
            effective.insert(a);
        } else {
            return Err(ConfigError::UnknownCap(a));
        }
    }
    if !allow_all {
        let missing: Vec<String> = effective
            .iter()
            .filter(|c| !allow.contains(*c))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::CapsNotAllowed(missing));
        }
    }
    let defaults: BTreeSet<String> = DOCKER_DEFAULT_CAPS
        .iter()
        .map(|c| (*c).to_string())
        .collect();
    let add = effective.difference(&defaults).cloned().collect();
    let drop = defaults.difference(&effective).cloned().collect();
    Ok((add, drop))
}

/// Where a task's directories are on the host.
#[derive(Debug, Clone)]
pub struct TaskPaths<'a> {
    /// `<alloc dir>`.
    pub alloc_dir: &'a Path,
    /// `<alloc dir>/<task>`.
    pub task_dir: &'a Path,
}

/// Resolves a bind source: relative paths are relative to the task directory and may not
/// leave the allocation directory; absolute paths need `volumes.enabled`.
fn bind_source(
    plugin: &PluginConfig,
    paths: &TaskPaths<'_>,
    source: &str,
) -> Result<String, ConfigError> {
    let p = Path::new(source);
    if p.is_absolute() {
        if !plugin.volumes_enabled {
            return Err(ConfigError::VolumesDisabled(source.to_string()));
        }
        return Ok(source.to_string());
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        // `../alloc` style paths are how Nomad jobs reach the shared dir; resolve lexically and
        // keep them inside the allocation directory.
        let mut out = paths.task_dir.to_path_buf();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(s) => out.push(s),
                _ => {}
            }
        }
        if !out.starts_with(paths.alloc_dir) || !plugin.volumes_enabled && out == paths.alloc_dir {
            return Err(ConfigError::VolumesDisabled(source.to_string()));
        }
        return Ok(out.display().to_string());
    }
    Ok(paths.task_dir.join(p).display().to_string())
}

/// What the container is created from, besides the task config.
#[derive(Debug, Clone)]
pub struct CreateInput<'a> {
    /// The task's environment, already interpolated (container paths for `NOMAD_*_DIR`).
    pub env: &'a BTreeMap<String, String>,
    /// Memory limit, MB.
    pub memory_mb: i64,
    /// CPU, MHz (CPU shares).
    pub cpu: i64,
    /// Labels Nomad puts on every container (`com.hashicorp.nomad.*`).
    pub labels: BTreeMap<String, String>,
    /// Host directories.
    pub paths: TaskPaths<'a>,
}

/// The `POST /containers/create` body for `cfg`.
///
/// Errors: capability, privilege and volume rules (see the module docs).
pub fn create_body(
    plugin: &PluginConfig,
    cfg: &TaskConfig,
    input: &CreateInput<'_>,
) -> Result<Value, ConfigError> {
    if cfg.privileged && !plugin.allow_privileged {
        return Err(ConfigError::Privileged);
    }
    let (cap_add, cap_drop) = capabilities(plugin, &cfg.cap_add, &cfg.cap_drop)?;
    let mut binds = vec![
        format!("{}:/alloc", input.paths.alloc_dir.join("alloc").display()),
        format!("{}:/local", input.paths.task_dir.join("local").display()),
        format!(
            "{}:/secrets",
            input.paths.task_dir.join("secrets").display()
        ),
    ];
    for v in &cfg.volumes {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [s, d] => (*s, *d, None),
            [s, d, m] => (*s, *d, Some(*m)),
            _ => return Err(ConfigError::BadVolume(v.clone())),
        };
        if src.is_empty() || !dst.starts_with('/') {
            return Err(ConfigError::BadVolume(v.clone()));
        }
        let src = bind_source(plugin, &input.paths, src)?;
        binds.push(match mode {
            Some(m) => format!("{src}:{dst}:{m}"),
            None => format!("{src}:{dst}"),
        });
    }
    let mut mounts = Vec::new();
    for m in &cfg.mounts {
        if !m.target.starts_with('/') {
            return Err(ConfigError::BadVolume(m.target.clone()));
        }
        match m.type_.as_str() {
            "" | "bind" => {
                let src = bind_source(plugin, &input.paths, &m.source)?;
                mounts.push(json!({"Type": "bind", "Source": src, "Target": m.target, "ReadOnly": m.readonly}));
            }
            "tmpfs" => {
                mounts.push(json!({"Type": "tmpfs", "Target": m.target, "ReadOnly": m.readonly}))
            }
            other => return Err(ConfigError::BadVolume(format!("mount type {other:?}"))),
        }
    }
    let devices: Vec<Value> = cfg
        .devices
        .iter()
        .map(|d| {
            json!({
                "PathOnHost": d.host_path,
                "PathInContainer": if d.container_path.is_empty() { &d.host_path } else { &d.container_path },
                "CgroupPermissions": if d.cgroup_permissions.is_empty() { "rwm" } else { &d.cgroup_permissions },
            })
        })
        .collect();
    let cmd: Option<Vec<String>> = if !cfg.command.is_empty() {
        Some(
            std::iter::once(cfg.command.clone())
                .chain(cfg.args.iter().cloned())
                .collect(),
        )
    } else if !cfg.args.is_empty() {
        Some(cfg.args.clone())
    } else {
        None
    };
    let mut labels = cfg.labels.clone();
    labels.extend(input.labels.clone());
    let memory = input.memory_mb.max(0).saturating_mul(1024 * 1024);
    let mut host = json!({
        "Binds": binds,
        "Mounts": mounts,
        "Memory": memory,
        "MemorySwap": memory,
        "CpuShares": input.cpu.max(2),
        "CapAdd": cap_add,
        "CapDrop": cap_drop,
        "Privileged": cfg.privileged,
        "Devices": devices,
        "SecurityOpt": cfg.security_opt,
        "NetworkMode": if cfg.network_mode.is_empty() { "bridge" } else { &cfg.network_mode },
    });
    if !cfg.runtime.is_empty()
        && let Some(h) = host.as_object_mut()
    {
        h.insert("Runtime".into(), json!(cfg.runtime));
    }
    let mut body = json!({
        "Image": cfg.image,
        "Env": input.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "Labels": labels,
        "HostConfig": host,
        "AttachStdin": false, "AttachStdout": true, "AttachStderr": true, "Tty": false,
    });
    if let Some(b) = body.as_object_mut() {
        if let Some(c) = cmd {
            b.insert("Cmd".into(), json!(c));
        }
        if !cfg.entrypoint.is_empty() {
            b.insert("Entrypoint".into(), json!(cfg.entrypoint));
        }
        if !cfg.work_dir.is_empty() {
            b.insert("WorkingDir".into(), json!(cfg.work_dir));
        }
    }
    Ok(body)
}

/// Splits `name[:tag]` / `name@digest` into the `fromImage` and `tag` of `POST /images/create`
/// (`tag` is `latest` when absent, as Docker clients do).
pub fn split_image(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input<'a>(env: &'a BTreeMap<String, String>) -> CreateInput<'a> {
        CreateInput {
            env,
            memory_mb: 64,
            cpu: 500,
            labels: BTreeMap::new(),
            paths: TaskPaths {
                alloc_dir: Path::new("/a"),
                task_dir: Path::new("/a/t"),
            },
        }
    }

    #[test]
    fn unknown_config_keys_fail_as_the_plugin_decode_does() {
        let m = json!({"image": "x", "imagee": "y"});
        let e = TaskConfig::parse(m.as_object().unwrap()).unwrap_err();
        assert!(e.to_string().starts_with("failed to decode driver config"));
        let m = json!({"command": "/bin/true"});
        assert_eq!(
            TaskConfig::parse(m.as_object().unwrap()).unwrap_err(),
            ConfigError::NoImage
        );
    }

    #[test]
    fn default_caps_drop_net_raw_and_cap_add_outside_allowlist_fails() {
        let p = PluginConfig::default();
        let (add, drop) = capabilities(&p, &[], &[]).unwrap();
        assert!(add.is_empty());
        assert_eq!(drop, vec!["NET_RAW".to_string()]);
        let e = capabilities(&p, &["sys_admin".into(), "CAP_NET_ADMIN".into()], &[]).unwrap_err();
        assert_eq!(
            e,
            ConfigError::CapsNotAllowed(vec!["NET_ADMIN".into(), "SYS_ADMIN".into()])
        );
        assert!(
            e.to_string()
                .contains("doesn't have the following caps allowlisted")
        );
        let mut p2 = p.clone();
        p2.allow_caps.push("SYS_ADMIN".into());
        let (add, drop) = capabilities(&p2, &["SYS_ADMIN".into()], &["all".into()]).unwrap();
        assert_eq!(add, vec!["SYS_ADMIN".to_string()]);
        assert_eq!(drop.len(), DOCKER_DEFAULT_CAPS.len());
        assert!(matches!(
            capabilities(&p, &["bogus".into()], &[]),
            Err(ConfigError::UnknownCap(_))
        ));
    }

    #[test]
    fn privileged_is_refused_unless_allowed() {
        let env = BTreeMap::new();
        let cfg = TaskConfig {
            image: "x".into(),
            privileged: true,
            ..Default::default()
        };
        assert_eq!(
            create_body(&PluginConfig::default(), &cfg, &input(&env)).unwrap_err(),
            ConfigError::Privileged
        );
        let p = PluginConfig {
            allow_privileged: true,
            ..Default::default()
        };
        assert_eq!(
            create_body(&p, &cfg, &input(&env)).unwrap()["HostConfig"]["Privileged"],
            true
        );
    }

    #[test]
    fn create_body_maps_command_args_entrypoint_env_limits_and_task_dirs() {
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "b c".to_string());
        let cfg = TaskConfig {
            image: "reg:5000/x:1".into(),
            command: "/bin/sh".into(),
            args: vec!["-c".into(), "echo hi".into()],
            entrypoint: vec!["/init".into()],
            work_dir: "/w".into(),
            volumes: vec!["local/data:/data:ro".into()],
            devices: vec![Device {
                host_path: "/dev/fuse".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let b = create_body(&PluginConfig::default(), &cfg, &input(&env)).unwrap();
        assert_eq!(b["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(b["Entrypoint"], json!(["/init"]));
        assert_eq!(b["WorkingDir"], "/w");
        assert_eq!(b["Env"], json!(["A=b c"]));
        assert_eq!(b["HostConfig"]["Memory"], 64 * 1024 * 1024);
        assert_eq!(b["HostConfig"]["MemorySwap"], 64 * 1024 * 1024);
        assert_eq!(b["HostConfig"]["CpuShares"], 500);
        assert_eq!(
            b["HostConfig"]["Binds"],
            json!([
                "/a/alloc:/alloc",
                "/a/t/local:/local",
                "/a/t/secrets:/secrets",
                "/a/t/local/data:/data:ro"
            ])
        );
        assert_eq!(
            b["HostConfig"]["Devices"][0]["PathInContainer"],
            "/dev/fuse"
        );
        let args_only = TaskConfig {
            image: "x".into(),
            args: vec!["a".into()],
            ..Default::default()
        };
        let b = create_body(&PluginConfig::default(), &args_only, &input(&env)).unwrap();
        assert_eq!(b["Cmd"], json!(["a"]));
        assert!(b.get("Entrypoint").is_none());
    }

    #[test]
    fn host_paths_need_volumes_enabled() {
        let env = BTreeMap::new();
        for v in ["/etc:/x", "../../etc:/x"] {
            let cfg = TaskConfig {
                image: "x".into(),
                volumes: vec![v.into()],
                ..Default::default()
            };
            assert!(matches!(
                create_body(&PluginConfig::default(), &cfg, &input(&env)),
                Err(ConfigError::VolumesDisabled(_))
            ));
        }
        let cfg = TaskConfig {
            image: "x".into(),
            volumes: vec!["../alloc/data:/d".into()],
            ..Default::default()
        };
        let b = create_body(&PluginConfig::default(), &cfg, &input(&env)).unwrap();
        assert_eq!(b["HostConfig"]["Binds"][3], "/a/alloc/data:/d");
    }

    #[test]
    fn image_references_split_like_docker_clients() {
        assert_eq!(
            split_image("127.0.0.1:5000/a/b:t1"),
            ("127.0.0.1:5000/a/b".into(), "t1".into())
        );
        assert_eq!(
            split_image("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_image("r/a@sha256:ab"),
            ("r/a".into(), "sha256:ab".into())
        );
    }
}
