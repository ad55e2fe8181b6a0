//! Nomad job rendering: pure functions from `(request, generation, attempt, phase, config)` to the
//! Nomad batch job of that phase ([`render`], [`render_all`]).
//!
//! Every job is `batch` with one group and one task, both named after the phase; restart and
//! reschedule attempts are 0 (the controller owns retries); Meta carries `jobforge.request`
//! (`<ns>/<name>`), `jobforge.generation`, `jobforge.phase` and `jobforge.attempt`. The job's `ID`
//! and `Name` are both [`job_id`] (the state machine's rule, capped at 128 characters), so what
//! `jobforge render` prints is what the controller registers.
//!
//! Each task runs a FIXED shell script (a `const`, reviewed as code: [`build::BUILD_SCRIPT`],
//! [`test::TEST_SCRIPT`], [`test::IMAGE_TEST_SCRIPT`], [`publish::PUBLISH_SCRIPT`]) as
//! `/bin/sh -c <script> jobforge-<phase>`. Markers on stdout for the controller:
//! `::jobforge::commit=<sha>` (build, printed before any user code runs: take the first),
//! `::jobforge::digest=<digest>` (build and publish, printed last: take the last),
//! `::jobforge::reason=<Reason>` (for example `GitRevisionNotFound`), and
//! `::jobforge::failed-command=<n>` (test, 1-based).
//!
//! **No user value is ever interpolated by Nomad** (issue 14). Nomad replaces `${name}` in every
//! task `env` value, driver `command`/`args`/config and template destination
//! (`helper/args.ReplaceEnv`, regular expression `\$\{[a-zA-Z0-9_\-\.]+\}`), with the task's
//! environment, node attributes and, while the vault block's `Env` is true, `VAULT_TOKEN`. So
//! every value a request supplies reaches a task only base64-encoded, in an env variable named
//! `JF_*_B64` ([`b64`]; the alphabet has no `$`), decoded by the fixed script (`jf_dec`), never
//! in script text, args or template text (Vault paths and field names reach templates only as
//! escaped Go string literals: [`escaping`]). Env names a request chooses are checked
//! identifiers. The vault block sets `Env: false`: no task has `VAULT_TOKEN` in its environment
//! (the token stays in `secrets/vault_token`, which only Nomad's template runner needs).
//! Constants of the operator's configuration (`work_root`, for example `${NOMAD_ALLOC_DIR}`)
//! may use interpolation on purpose. What the schema's grammar already restricts to characters
//! without `$` (image name, registry, tags) still travels encoded, except the temporary image in
//! the docker driver's `image` option, which cannot be encoded (see [`test`]).
//!
//! Secrets (git, registry, test `vault_secrets`) are rendered by templates into files under
//! `secrets/` (mode 0600, never `Envvars`), so they are in no task's environment and no argv.

use std::collections::BTreeMap;

use jobforge_schema::{BuildRequest, PipelinePhase};

use crate::nomad::job_spec::{
    EphemeralDisk, Job, LogConfig, NS_PER_SEC, ReschedulePolicy, Resources, RestartPolicy, Task,
    TaskGroup,
};

/// The shell prelude shared by every script: strict mode, task directories, `jf_dec` (base64
/// decoding of a `JF_*_B64` variable), the per-allocation buildah storage and its `bh` wrapper,
/// `jf_fail` and `jf_login`. `umask 022` keeps the checkout's file modes as git records them (a
/// stricter umask would leak into image layers); the authfile is created under `umask 077`
/// (buildah/skopeo `login` write it 0600 themselves).
///
/// Storage (issue 14, builds are isolated): with `JF_WORK_ROOT` set (the `raw_exec` profile
/// always sets it), buildah's `--root`/`--runroot` are `$JF_WORK_ROOT/jobforge-buildah-<alloc
/// ID>/{storage,run}`, a directory of this allocation only, removed on exit
/// (`jf_drop_storage`, called by each script's EXIT trap); a build never sees another
/// request's images or tags. The docker profile's tool container has storage of its own.
/// The build script may point `jf_storage` at its namespace's layer cache instead and set
/// `jf_cache` (issue 19, see [`build`]): `jf_drop_storage` then keeps the directory.
///
/// Storage driver (issue 19): `JF_STORAGE_DRIVER` is `overlay`, `vfs` or `auto`; `auto` is
/// resolved by `jf_pick_driver` (called by `bh` on first use, or explicitly) to `overlay` when
/// buildah can initialise an overlay store in a scratch directory of the task (c/storage's
/// overlay driver test-mounts at initialisation and fails where the kernel, or rootless
/// operation without `fuse-overlayfs`, does not allow it), else `vfs`.
macro_rules! sh_prelude {
    () => {
        r#"set -eu
umask 022
jf_secrets=${NOMAD_SECRETS_DIR:-$PWD/secrets}
jf_task=${NOMAD_TASK_DIR:-$PWD/local}
jf_auth=$jf_secrets/jobforge-auth.json
jf_dec() {
  jf_v=$(printenv -- "$1" | base64 -d && echo x)
  jf_v=${jf_v%x}
}
jf_storage=
if [ -n "${JF_WORK_ROOT:-}" ]; then
  jf_storage=$JF_WORK_ROOT/jobforge-buildah-${NOMAD_ALLOC_ID:-$$}
fi
jf_driver=
jf_cache=
jf_pick_driver() {
  jf_driver=${JF_STORAGE_DRIVER:-vfs}
  if [ "$jf_driver" = auto ]; then
    jf_driver=vfs
    jf_probe=$jf_task/jobforge-driver-probe
    if buildah --storage-driver overlay --root "$jf_probe/storage" --runroot "$jf_probe/run" images >/dev/null 2>&1; then
      jf_driver=overlay
    fi
    rm -rf -- "$jf_probe" 2>/dev/null || buildah unshare rm -rf -- "$jf_probe" >/dev/null 2>&1 || true
  fi
}
bh() {
  if [ -z "$jf_driver" ]; then
    jf_pick_driver
  fi
  if [ -n "$jf_storage" ]; then
    buildah --storage-driver "$jf_driver" --root "$jf_storage/storage" --runroot "$jf_storage/run" "$@"
  else
    buildah --storage-driver "$jf_driver" "$@"
  fi
}
jf_drop_storage() {
  if [ -n "$jf_storage" ] && [ -z "$jf_cache" ] && [ -d "$jf_storage" ]; then
    bh rm --all >/dev/null 2>&1 || true
    bh rmi --all --force >/dev/null 2>&1 || true
    rm -rf -- "$jf_storage" 2>/dev/null || bh unshare rm -rf -- "$jf_storage" >/dev/null 2>&1 || true
  fi
}
jf_fail() {
  printf '::jobforge::reason=%s\n' "$1"
  shift
  printf 'jobforge: %s\n' "$*"
  exit 1
}
jf_login() {
  if [ "${JF_REGISTRY_AUTH:-0}" = 1 ]; then
    jf_dec JF_REGISTRY_HOST_B64
    "$1" login --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" --username "$(cat -- "$jf_secrets/registry_username")" --password-stdin -- "$jf_v" <"$jf_secrets/registry_password" >/dev/null
  else
    (umask 077 && printf '{"auths":{}}\n' >"$jf_auth")
  fi
}
"#
    };
}

/// `jf_cache_open`, shared by the build and test scripts when the layer cache is on
/// (`JF_CACHE_ROOT` set, issue 19): decodes `JF_CACHE_NS_B64` (the request's namespace), checks
/// it again as a DNS label before it names a directory, needs `flock`, sets `jf_cache_dir` to
/// `JF_CACHE_ROOT/<namespace>/<driver>` (created 0700; `jf_driver` must be picked first) and
/// opens its `lock` file on descriptor 9, unlocked: the caller takes the shared lock
/// (`flock -s 9`) for as long as it uses the store. Nothing else names a cache directory.
macro_rules! cache_open_sh {
    () => {
        r#"jf_cache_open() {
  jf_dec JF_CACHE_NS_B64
  case "$jf_v" in
    ''|-*|*-|*[!a-z0-9-]*) jf_fail InvalidSpec "the namespace is not a DNS label" ;;
  esac
  if [ "${#jf_v}" -gt 63 ]; then
    jf_fail InvalidSpec "the namespace is not a DNS label"
  fi
  if ! command -v flock >/dev/null 2>&1; then
    jf_fail BuildFailed "the layer cache (build.cache) needs flock (util-linux) on the Nomad client"
  fi
  jf_cache_dir=$JF_CACHE_ROOT/$jf_v/$jf_driver
  (umask 077 && mkdir -p -- "$jf_cache_dir")
  exec 9>>"$jf_cache_dir/lock"
}
"#
    };
}

pub mod build;
pub mod config;
pub mod escaping;
pub mod profiles;
pub mod publish;
pub mod registries;
pub mod test;

pub use config::{BuildCache, PhaseDefaults, Profile, RenderConfig};
pub use escaping::escape_template_string;
pub use registries::RegistryMirror;

/// Why a request could not be rendered. Each variant names the spec field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A field holds a value the renderer cannot use.
    #[error("{field}: invalid value {value:?}; expected {allowed}")]
    InvalidField {
        /// JSON path of the field, for example `spec.resource_limits.build.cpu`.
        field: String,
        /// The offending value.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The request asks for something the configured profile cannot do.
    #[error("{field}: not supported by the {profile} profile: {why}")]
    Unsupported {
        /// JSON path of the field.
        field: String,
        /// `raw_exec` or `docker`.
        profile: &'static str,
        /// What to change.
        why: &'static str,
    },
    /// The test phase was requested for a request without tests (it is skipped).
    #[error("spec.test: the request has no entry point and no commands; the test phase is skipped")]
    NoTests,
}

/// The Nomad job ID rule has one owner, [`crate::machine::job_id()`] (capped at
/// [`crate::machine::MAX_JOB_ID_LEN`]); re-exported here for callers of the renderer.
pub use crate::machine::job_id;

/// The temporary image of an attempt:
/// `<registry_url>/<temp prefix>/<image_name>/<namespace>/<name>:<name>-<generation>-a<attempt>`.
///
/// The registry API deletes a manifest by digest, which deletes every tag of that digest in the
/// repository (distribution spec, "Deleting Manifests"). So the repository is the request's own:
/// it differs from the final one (deleting it never deletes a final tag), and from every other
/// request's (two requests of the same commit push the identical, reproducible digest; with a
/// shared temporary repository the first publish's delete removed the other's temporary tag and
/// its publish failed with `manifest unknown`). `<namespace>` and `<name>` are DNS labels (valid
/// repository components, never holding `/`), so the last two components name the request and
/// no two requests share a repository.
pub fn temp_image(req: &BuildRequest, generation: u64, attempt: u32, cfg: &RenderConfig) -> String {
    format!(
        "{}:{}-{}-a{}",
        temp_repository(req, cfg),
        req.metadata.name,
        generation,
        attempt.max(1)
    )
}

/// The request's temporary repository (the temporary image without its tag; see
/// [`temp_image`]).
fn temp_repository(req: &BuildRequest, cfg: &RenderConfig) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        req.spec.registry_url.trim_end_matches('/'),
        cfg.registry_temp_prefix.trim_matches('/'),
        req.spec.image_name,
        req.metadata.namespace,
        req.metadata.name,
    )
}

/// The temporary image the test and publish phases read: pinned by `built`, the manifest digest
/// the build phase reported (`::jobforge::digest=`, recorded in the status), as
/// `<temporary repository>@sha256:<hex>`, so the image tested is byte for byte the one
/// published whatever happens to the tag in between (a registry fetch by digest is verified
/// by the client). Without a digest (`jobforge render`, or a build that reported none) the
/// tag of [`temp_image`]. A `built` that is not `sha256:<64 lowercase hex>` is not used.
pub fn temp_image_ref(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    built: Option<&str>,
    cfg: &RenderConfig,
) -> String {
    match built {
        Some(d) if is_sha256_digest(d) => format!("{}@{d}", temp_repository(req, cfg)),
        _ => temp_image(req, generation, attempt, cfg),
    }
}

/// `sha256:` and 64 lowercase hex digits.
fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The final repository `<registry_url>/<image_name>` (tags are appended by the publish task).
pub fn final_repository(req: &BuildRequest) -> String {
    format!(
        "{}/{}",
        req.spec.registry_url.trim_end_matches('/'),
        req.spec.image_name
    )
}

/// Renders the Nomad job of `phase` for `attempt` (1-based) of `generation` of `req`.
///
/// Errors: [`RenderError::InvalidField`] for a value the renderer cannot use (resources that are
/// not positive integers, env names that are not identifiers, paths with `..`),
/// [`RenderError::Unsupported`] for a profile limitation, [`RenderError::NoTests`] for
/// [`PipelinePhase::Test`] on a request without tests.
pub fn render(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    phase: PipelinePhase,
    cfg: &RenderConfig,
) -> Result<Job, RenderError> {
    render_built(req, generation, attempt, phase, None, cfg)
}

/// [`render`] once the build phase has reported the temporary image's manifest digest
/// (`built`, from the status): the test and publish phases then read the temporary image by
/// that digest ([`temp_image_ref`]); the build phase ignores it. The controller registers
/// every job through this function. Errors as [`render`].
pub fn render_built(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    phase: PipelinePhase,
    built: Option<&str>,
    cfg: &RenderConfig,
) -> Result<Job, RenderError> {
    let rendered = match phase {
        PipelinePhase::Build => build::build_task(req, generation, attempt, cfg)?,
        PipelinePhase::Test => test::test_task(req, generation, attempt, built, cfg)?,
        PipelinePhase::Publish => publish::publish_task(req, generation, attempt, built, cfg)?,
    };
    let res = resolve_resources(req, phase, cfg)?;
    let mut task = rendered.task;
    task.name = phase.as_str().to_string();
    let devices = task.resources.take().map(|r| r.devices).unwrap_or_default();
    task.resources = Some(Resources {
        cpu: res.cpu_mhz,
        memory_mb: res.memory_mb,
        devices,
    });
    task.kill_timeout = Some(duration_ns(cfg.kill_timeout));
    task.log_config = Some(LogConfig {
        max_files: cfg.log_max_files,
        max_file_size_mb: cfg.log_max_file_size_mb,
    });
    let id = job_id(
        &req.metadata.namespace,
        &req.metadata.name,
        generation,
        phase,
        attempt,
    );
    let mut meta = BTreeMap::new();
    meta.insert(
        "jobforge.request".to_string(),
        format!("{}/{}", req.metadata.namespace, req.metadata.name),
    );
    meta.insert("jobforge.generation".to_string(), generation.to_string());
    meta.insert("jobforge.phase".to_string(), phase.as_str().to_string());
    meta.insert("jobforge.attempt".to_string(), attempt.max(1).to_string());
    Ok(Job {
        id: id.clone(),
        name: id,
        type_: "batch".to_string(),
        namespace: cfg.namespace.clone(),
        region: cfg.region.clone(),
        datacenters: cfg.datacenters.clone(),
        priority: cfg.priority_of(&req.spec),
        constraints: Vec::new(),
        task_groups: vec![TaskGroup {
            name: phase.as_str().to_string(),
            count: 1,
            constraints: rendered.group_constraints,
            restart_policy: Some(RestartPolicy {
                attempts: 0,
                interval: 24 * 3600 * NS_PER_SEC,
                delay: 15 * NS_PER_SEC,
                mode: "fail".to_string(),
            }),
            reschedule_policy: Some(ReschedulePolicy {
                attempts: 0,
                interval: 0,
                unlimited: false,
            }),
            ephemeral_disk: Some(EphemeralDisk {
                size_mb: res.disk_mb,
            }),
            tasks: vec![task],
            meta: BTreeMap::new(),
        }],
        meta,
    })
}

/// The jobs of every phase the request runs, in order (build, test when the request has tests,
/// publish), for `jobforge render`. Errors as [`render`].
pub fn render_all(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    cfg: &RenderConfig,
) -> Result<Vec<Job>, RenderError> {
    PipelinePhase::ALL
        .into_iter()
        .filter(|p| *p != PipelinePhase::Test || req.spec.has_tests())
        .map(|p| render(req, generation, attempt, p, cfg))
        .collect()
}

/// A phase's task before the common fields (name, resources, kill timeout, logs) are set.
pub(crate) struct RenderedTask {
    pub(crate) task: Task,
    pub(crate) group_constraints: Vec<crate::nomad::job_spec::Constraint>,
}

/// The resources of `phase`: the schema's rule ([`jobforge_schema::BuildSpec::resources`]) with the
/// configured defaults of the phase.
///
/// Errors: [`RenderError::InvalidField`] when the value taken is not a positive decimal integer.
pub fn resolve_resources(
    req: &BuildRequest,
    phase: PipelinePhase,
    cfg: &RenderConfig,
) -> Result<PhaseDefaults, RenderError> {
    req.spec
        .resources(phase, cfg.defaults_for(phase))
        .map_err(|e| RenderError::InvalidField {
            field: e.field,
            value: e.value,
            allowed: "a positive decimal integer (MHz for cpu, MB for memory and disk)",
        })
}

fn duration_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Checks that a repository-relative path (Dockerfile or context) is relative and has no `..`
/// component. Errors: [`RenderError::InvalidField`].
pub(crate) fn check_relative_path(field: &str, p: &str) -> Result<(), RenderError> {
    let bad =
        p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..") || p.contains('\0');
    if bad {
        Err(RenderError::InvalidField {
            field: field.to_string(),
            value: p.to_string(),
            allowed: "a non-empty path relative to the repository root without `..` components",
        })
    } else {
        Ok(())
    }
}

/// The registry host (`host[:port]`) of a `registry_url` (`host[:port][/path]`), for `login`.
pub(crate) fn registry_host(registry_url: &str) -> &str {
    registry_url.split('/').next().unwrap_or(registry_url)
}

/// Standard base64 (with padding) of `s`: how every request value travels in a task's
/// environment (`JF_*_B64`), out of reach of Nomad's `${...}` interpolation. The scripts decode
/// it with `base64 -d` (coreutils or busybox).
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Whether Nomad would interpolate something in `s`: a match of `helper/args.ReplaceEnv`'s
/// regular expression `\$\{[a-zA-Z0-9_\-\.]+\}` (Nomad `helper/args/args.go`).
pub fn nomad_would_interpolate(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|i| {
        b[i..].starts_with(b"${") && {
            let n = b[i + 2..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
                .count();
            n > 0 && b.get(i + 2 + n) == Some(&b'}')
        }
    })
}

/// `true`/`false` text of a flag for `--tls-verify=`.
pub(crate) fn bool_text(b: bool) -> String {
    if b { "true" } else { "false" }.to_string()
}

#[cfg(test)]
mod id_properties;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod snapshot_tests;
