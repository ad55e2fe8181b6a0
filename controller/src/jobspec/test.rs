//! The test phase: run the entry point and/or each command inside the temporary image.
//!
//! Every request value reaches the task base64-encoded (see [`super`]): `JF_TEMP_IMAGE_B64`,
//! `JF_TEST_CMDS_B64` (one `-<base64>` word per command, in order, separated by spaces),
//! `JF_TEST_ENV_LINES` (one `NAME=<base64 of the value>` word per `spec.test.env` entry; names
//! are checked identifiers). `test.vault_secrets` are rendered by templates into
//! `secrets/jobforge-env-secret/<NAME>` (0600, the value byte for byte): no secret is in the
//! task's environment, a job spec, or any argv.
//!
//! The temporary image is read by the manifest digest the build phase reported, once the
//! controller knows it (`JF_TEMP_IMAGE_B64` = `<temporary repository>@sha256:…`,
//! [`super::temp_image_ref`]; the tag only when rendered without it, as `jobforge render` does):
//! the image tested is the one the publish phase copies, byte for byte.
//!
//! Two ways, chosen per request:
//! - **buildah** (the `raw_exec` profile, and the `docker` profile unless the image itself can
//!   run the tests: see below): the tool task runs [`TEST_SCRIPT`]: `buildah from` the
//!   temporary image (pulled from the registry into the allocation's own storage; with the
//!   layer cache, taken from the namespace's store without a pull: see below), then
//!   `buildah run <ctr> -- /bin/sh -c "$cmd"` for each command in order, then the image's
//!   entry point + CMD (read with `buildah inspect`) when `entry_point` is set. The first
//!   failure stops the phase: it prints `::jobforge::failed-command=<n>` and exits with that
//!   code. The container, the pulled image and the storage are removed on exit (trap; with the
//!   cache only the container, see below). The test
//!   environment (plain and secret) is written by the script as one file per variable into
//!   `secrets/jobforge-env/` (0700), bind-mounted read-only at `/run/jobforge-env` and read by
//!   [`ENV_WRAPPER`] inside the container, which exports each file's bytes under its name and
//!   `exec`s the command: values never travel in argv (`buildah run --env`) nor in the tool
//!   script's environment. With an environment, the image needs `/bin/sh`; without one the
//!   entry point runs directly.
//! - **image** (the `docker` profile when `gpu_required`, or when the request has commands and
//!   no entry point): the docker driver runs the temporary image itself as the task's
//!   container (with `runtime: nvidia` when `gpu_required`). Commands:
//!   `entrypoint: ["/bin/sh"]`, args `["-c", IMAGE_TEST_SCRIPT, "jobforge-test"]`; the script
//!   decodes the environment and the commands (with the image's `base64`, as in coreutils or
//!   busybox) and runs each command with `/bin/sh -c`. Entry point (with a GPU only): the
//!   image's own entry point and CMD, unchanged, so test env values travel as plain task env and
//!   a value Nomad would interpolate (`${...}`) is refused at render time, and secrets are
//!   exported by `Envvars` templates (consul-template output is never interpolated). Both at
//!   once is unsupported with a GPU (the entry point is not known at render time). The image
//!   name in the driver's `image` option is built from fields whose grammar has no `$` and
//!   the build's `sha256:` digest. `gpu_count > 0` requests that many `nvidia/gpu` devices; 0 sets
//!   `NVIDIA_VISIBLE_DEVICES=all`. Registry TLS settings and pull credentials are the Nomad
//!   client's docker plugin configuration (`auth { config = ... }`): per-job credentials would
//!   be visible to the tests.
//!
//! Layer cache (issue 19; `raw_exec` with `build.cache`, env `JF_CACHE_ROOT`,
//! `JF_CACHE_NS_B64` as for the build, see [`super::build`]): the build left the image it pushed
//! in the namespace's store `<root>/<namespace>/<driver>/`, so the test phase runs it from there
//! instead of downloading every layer again (10–12 s of a warm request's ~15 s for the
//! multi-stage example, `docs/performance.md`). Under the store's shared `flock` (so a prune,
//! which needs the exclusive lock, cannot remove the image while the test runs) the script reads
//! the manifest BY DIGEST and its config blob with `skopeo inspect --raw --config` (both verified
//! against their digests by containers/image), and takes the config's sha256, which is the
//! image's ID in containers/storage (buildah commits OCI images; c/storage names an image by
//! its config digest). It `buildah from --pull=never` that ID, under a name of the allocation
//! (this fails when the store has no such image), and checks the container's image ID;
//! nothing is pulled, tagged or written to the store but that container, which the EXIT trap
//! removes (never the image: removing it would remove its untagged parents, the cache). Nothing
//! printed by the build (a `RUN` step can print anything) is trusted for this. When the store
//! does not hold it (the test allocation landed on another client, the image was pruned, the
//! config is not buildah's), the script releases the lock and pulls as without the cache, into
//! the allocation's own storage. Only the request's own namespace's store is opened (its
//! directory comes from the validated namespace, `jf_cache_open`). Pulling into the cache store
//! instead was measured and rejected: buildah 1.28 reuses the layers (only the manifest and the
//! config are fetched) but names the cached image after the temporary repository, and the only
//! way to drop a name in buildah 1.28 is `rmi`, which removes the image and its parents.
//!
//! Env names starting with `JF_` or `jobforge_` (any case) are reserved for the scripts.
//! `test.vault_policies` join the task's Vault block; `test.constraints` become group
//! constraints.

use std::collections::BTreeMap;

use jobforge_schema::{BuildRequest, TestSpec};
use serde_json::{Value, json};

use crate::nomad::job_spec::{Constraint, RequestedDevice, Template};

use super::escaping::{env_template, validate_env_name, value_file_template};
use super::profiles::{Tool, add_registry_credentials, ensure_vault, sh_args, tool_task};
use super::{
    Profile, RenderConfig, RenderError, RenderedTask, b64, nomad_would_interpolate, temp_image_ref,
};

/// The wrapper run inside the container as `/bin/sh -c ENV_WRAPPER jobforge-env CMD...` when
/// the test has an environment: exports each regular file in `/run/jobforge-env` under its
/// name, with its exact bytes (only shell built-ins: neither `cat` nor the image's `PATH` is
/// needed), then `exec`s the command. Its own variables are `jobforge_*`, a reserved prefix.
macro_rules! env_wrapper {
    () => {
        r#"for jobforge_f in /run/jobforge-env/*; do
  [ -f "$jobforge_f" ] || continue
  jobforge_v=
  jobforge_nl=
  jobforge_l=
  while IFS= read -r jobforge_l; do
    jobforge_v=$jobforge_v$jobforge_nl$jobforge_l
    jobforge_nl='
'
  done <"$jobforge_f"
  export "${jobforge_f##*/}=$jobforge_v$jobforge_nl$jobforge_l"
done
unset jobforge_f jobforge_v jobforge_nl jobforge_l
exec "$@"
"#
    };
}

/// The text of the in-container environment wrapper (see [`env_wrapper!`]).
pub const ENV_WRAPPER: &str = env_wrapper!();

/// The buildah-mode test script (run as `/bin/sh -c TEST_SCRIPT jobforge-test`).
pub const TEST_SCRIPT: &str = concat!(
    sh_prelude!(),
    cache_open_sh!(),
    r#"set -f
jf_ctr=
jf_image=
jf_cleanup() {
  if [ -n "$jf_ctr" ]; then
    bh rm -- "$jf_ctr" >/dev/null 2>&1 || true
    if [ -z "$jf_cache" ]; then
      bh rmi -- "$jf_image" >/dev/null 2>&1 || true
    fi
  fi
  jf_drop_storage
}
trap jf_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
jf_pick_driver
jf_dec JF_TEMP_IMAGE_B64
jf_image=$jf_v
jf_envdir=$jf_secrets/jobforge-env
rm -rf -- "$jf_envdir"
(umask 077 && mkdir -p -- "$jf_envdir")
jf_nenv=0
for jf_kv in $JF_TEST_ENV_LINES; do
  (umask 077 && printf '%s' "${jf_kv#*=}" | base64 -d >"$jf_envdir/${jf_kv%%=*}")
  jf_nenv=$((jf_nenv + 1))
done
set +f
for jf_f in "$jf_secrets/jobforge-env-secret"/*; do
  if [ -f "$jf_f" ]; then
    (umask 077 && cp -- "$jf_f" "$jf_envdir/")
    jf_nenv=$((jf_nenv + 1))
  fi
done
set -f
jf_wrapper=$(cat <<'JF_WRAPPER'
"#,
    env_wrapper!(),
    r#"JF_WRAPPER
)
jf_run() {
  if [ "$jf_nenv" -gt 0 ]; then
    bh run --isolation chroot --volume "$jf_envdir:/run/jobforge-env:ro" "$jf_ctr" -- /bin/sh -c "$jf_wrapper" jobforge-env "$@"
  else
    bh run --isolation chroot "$jf_ctr" -- "$@"
  fi
}
jf_login bh
jf_from_cache() {
  jf_cfg=$jf_task/jobforge-image-config
  if ! skopeo inspect --raw --config --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" -- "docker://$jf_image" >"$jf_cfg"; then
    return 1
  fi
  jf_id=$(sha256sum -- "$jf_cfg" | cut -d ' ' -f 1)
  case "$jf_id" in
    ''|*[!0-9a-f]*) return 1 ;;
  esac
  jf_storage=$jf_cache_dir
  jf_cache=$jf_cache_dir
  if jf_ctr=$(bh from --quiet --pull=never --name "jobforge-test-${NOMAD_ALLOC_ID:-$$}" -- "$jf_id" 2>/dev/null) \
    && [ "$(bh inspect --type container --format '{{.FromImageID}}' -- "$jf_ctr")" = "$jf_id" ]; then
    printf 'jobforge: testing image %s from the layer cache (not pulled)\n' "$jf_id"
    return 0
  fi
  if [ -n "$jf_ctr" ]; then
    bh rm -- "$jf_ctr" >/dev/null 2>&1 || true
    jf_ctr=
  fi
  jf_storage=$jf_alloc_storage
  jf_cache=
  return 1
}
jf_alloc_storage=$jf_storage
jf_cached=0
if [ -n "${JF_CACHE_ROOT:-}" ]; then
  jf_cache_open
  flock -s 9
  if jf_from_cache; then
    jf_cached=1
  else
    flock -u 9
    echo "jobforge: the image is not in the namespace's layer cache on this client; pulling it"
  fi
fi
if [ "$jf_cached" = 0 ]; then
  jf_ctr=$(bh from --quiet --pull=always --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" -- "docker://$jf_image")
fi
jf_count=0
for jf_b in $JF_TEST_CMDS_B64; do
  jf_count=$((jf_count + 1))
done
jf_i=0
for jf_b in $JF_TEST_CMDS_B64; do
  jf_i=$((jf_i + 1))
  jf_v=$(printf '%s' "${jf_b#-}" | base64 -d && echo x)
  jf_cmd=${jf_v%x}
  printf 'jobforge: test command %s of %s: %s\n' "$jf_i" "$jf_count" "$(printf '%s' "$jf_cmd" | tr '\n\r' '  ')"
  jf_rc=0
  jf_run /bin/sh -c "$jf_cmd" || jf_rc=$?
  if [ "$jf_rc" -ne 0 ]; then
    printf '::jobforge::failed-command=%s\n' "$jf_i"
    printf 'jobforge: test command %s failed with exit code %s\n' "$jf_i" "$jf_rc"
    exit "$jf_rc"
  fi
done
if [ "$JF_TEST_ENTRY_POINT" = 1 ]; then
  jf_ep=$(bh inspect --type container --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}{{range .OCIv1.Config.Cmd}}{{println .}}{{end}}' -- "$jf_ctr")
  if [ -z "$jf_ep" ]; then
    jf_fail TestFailed "entry_point is set but the image has no ENTRYPOINT or CMD"
  fi
  set --
  while IFS= read -r jf_a; do
    set -- "$@" "$jf_a"
  done <<JF_EOF
$jf_ep
JF_EOF
  echo "jobforge: running the image's entry point"
  jf_rc=0
  jf_run "$@" || jf_rc=$?
  if [ "$jf_rc" -ne 0 ]; then
    echo '::jobforge::failed-command=entry_point'
    printf 'jobforge: the entry point failed with exit code %s\n' "$jf_rc"
    exit "$jf_rc"
  fi
fi
echo "jobforge: all tests passed"
"#
);

/// The image-mode script, run by the image's own `/bin/sh`: decodes the test environment
/// (`JF_TEST_ENV_LINES`) into one file per variable in `$NOMAD_SECRETS_DIR/jobforge-env`, then
/// runs each command of `JF_TEST_CMDS_B64` as `/bin/sh -c <command>`, in order, in a subshell
/// that first exports those files and the secret files in
/// `$NOMAD_SECRETS_DIR/jobforge-env-secret` (read with built-ins, after decoding, so a test
/// `PATH` cannot break the script); it stops at the first failure with its exit code. Needs
/// `base64` and `mkdir` in the image (coreutils or busybox).
pub const IMAGE_TEST_SCRIPT: &str = r#"set -uf
jf_sec=${NOMAD_SECRETS_DIR:-/secrets}
jf_envdir=$jf_sec/jobforge-env
(umask 077 && mkdir -p -- "$jf_envdir")
for jf_kv in $JF_TEST_ENV_LINES; do
  (umask 077 && printf '%s' "${jf_kv#*=}" | base64 -d >"$jf_envdir/${jf_kv%%=*}") || exit 1
done
jf_load_env() {
  set +f
  for jf_f in "$jf_envdir"/* "$jf_sec/jobforge-env-secret"/*; do
    [ -f "$jf_f" ] || continue
    jf_v=
    jf_nl=
    jf_l=
    while IFS= read -r jf_l; do
      jf_v=$jf_v$jf_nl$jf_l
      jf_nl='
'
    done <"$jf_f"
    export "${jf_f##*/}=$jf_v$jf_nl$jf_l"
  done
  unset jf_f jf_v jf_nl jf_l
}
jf_count=0
for jf_b in $JF_TEST_CMDS_B64; do
  jf_count=$((jf_count + 1))
done
jf_i=0
for jf_b in $JF_TEST_CMDS_B64; do
  jf_i=$((jf_i + 1))
  jf_v=$(printf '%s' "${jf_b#-}" | base64 -d && echo x) || exit 1
  jf_cmd=${jf_v%x}
  printf 'jobforge: test command %s of %s\n' "$jf_i" "$jf_count"
  jf_rc=0
  (jf_load_env && exec /bin/sh -c "$jf_cmd") || jf_rc=$?
  if [ "$jf_rc" -ne 0 ]; then
    printf '::jobforge::failed-command=%s\n' "$jf_i"
    printf 'jobforge: test command %s failed with exit code %s\n' "$jf_i" "$jf_rc"
    exit "$jf_rc"
  fi
done
echo "jobforge: all tests passed"
"#;

/// Checks a test env name (`spec.test.env` key or a Vault secret's variable): an identifier
/// that does not use the scripts' reserved prefixes `JF_` and `jobforge_` (any case).
///
/// Errors: [`RenderError::InvalidField`] naming `field`.
fn check_test_env_name(field: &str, name: &str) -> Result<(), RenderError> {
    validate_env_name(field, name)?;
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("jf_") || lower.starts_with("jobforge_") {
        return Err(RenderError::InvalidField {
            field: field.to_string(),
            value: name.to_string(),
            allowed: "a variable name not starting with JF_ or jobforge_ (reserved for the task scripts)",
        });
    }
    Ok(())
}

/// `JF_TEST_CMDS_B64`: one `-<base64>` word per command (the `-` keeps an empty command a word).
fn commands_b64(commands: &[String]) -> String {
    commands
        .iter()
        .map(|c| format!("-{}", b64(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `JF_TEST_ENV_LINES`: one `NAME=<base64>` word per variable.
fn env_lines(env: &BTreeMap<String, String>) -> String {
    env.iter()
        .map(|(k, v)| format!("{k}={}", b64(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The test phase's task. It reads top to bottom in the order the test script consumes its
/// inputs (constraints, mode, secrets, then the script's env); the secret templates and the
/// image task are their own functions.
pub(crate) fn test_task(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    built: Option<&str>,
    cfg: &RenderConfig,
) -> Result<RenderedTask, RenderError> {
    let test = match &req.spec.test {
        Some(t) if t.has_tests() => t,
        _ => return Err(RenderError::NoTests),
    };
    for name in test.env.keys() {
        check_test_env_name("spec.test.env", name)?;
    }
    let image = temp_image_ref(req, generation, attempt, built, cfg);
    let group_constraints = test
        .constraints
        .iter()
        .map(|c| Constraint {
            l_target: c.attribute.clone(),
            r_target: c.value.clone(),
            operand: if c.operand.is_empty() {
                "=".to_string()
            } else {
                c.operand.clone()
            },
        })
        .collect();
    let image_mode = match (cfg.profile, test.gpu_required) {
        (Profile::RawExec, true) => {
            return Err(RenderError::Unsupported {
                field: "spec.test.gpu_required".into(),
                profile: "raw_exec",
                why: "GPU tests need the docker profile (NVIDIA runtime)",
            });
        }
        (Profile::Docker, true) => true,
        (Profile::Docker, false) => !test.entry_point,
        _ => false,
    };
    // The image's own entry point, unwrapped (GPU only): secrets as env templates.
    let bare_entry_point = image_mode && test.commands.is_empty();
    let templates = secret_templates(test, bare_entry_point)?;

    let mut task = if image_mode {
        image_task(
            test,
            &image,
            cfg.profile == Profile::Docker && test.gpu_required,
        )?
    } else {
        let mut env = BTreeMap::new();
        env.insert("JF_TEMP_IMAGE_B64".to_string(), b64(&image));
        env.insert("JF_TEST_CMDS_B64".to_string(), commands_b64(&test.commands));
        env.insert(
            "JF_TEST_ENTRY_POINT".to_string(),
            if test.entry_point { "1" } else { "0" }.to_string(),
        );
        env.insert("JF_TEST_ENV_LINES".to_string(), env_lines(&test.env));
        super::build::cache_env(&mut env, req, cfg)?;
        let mut t = tool_task(cfg, Tool::Buildah, "test", TEST_SCRIPT, env);
        add_registry_credentials(&mut t, req, cfg)?;
        t
    };
    let has_secrets = !templates.is_empty();
    task.templates.extend(templates);
    if has_secrets || !test.vault_policies.is_empty() {
        ensure_vault(
            &mut task,
            &req.metadata.namespace,
            cfg,
            &test.vault_policies,
        );
    }
    Ok(RenderedTask {
        task,
        group_constraints,
    })
}

/// The templates of `spec.test.vault_secrets`: one file per variable,
/// `secrets/jobforge-env-secret/<NAME>` holding the field's value byte for byte; or, for an
/// image whose own entry point runs unwrapped (`as_env`), one `Envvars` template per secret
/// (consul-template output is never interpolated by Nomad).
///
/// Errors: [`RenderError::InvalidField`] for an env name that is not an identifier or uses a
/// reserved prefix.
fn secret_templates(test: &TestSpec, as_env: bool) -> Result<Vec<Template>, RenderError> {
    let mut templates = Vec::new();
    for (i, secret) in test.vault_secrets.iter().enumerate() {
        let field = format!("spec.test.vault_secrets[{i}].fields");
        for env in secret.fields.values() {
            check_test_env_name(&field, env)?;
        }
        if as_env {
            let refs: Vec<(&str, &str)> = secret
                .fields
                .iter()
                .map(|(f, e)| (f.as_str(), e.as_str()))
                .collect();
            templates.push(env_template(
                &field,
                &format!("test-{i}"),
                &secret.path,
                &refs,
            )?);
        } else {
            for (vault_field, env) in &secret.fields {
                templates.push(value_file_template(
                    &format!("secrets/jobforge-env-secret/{env}"),
                    &secret.path,
                    vault_field,
                ));
            }
        }
    }
    Ok(templates)
}

/// The docker task that runs the temporary image itself (with the NVIDIA runtime when `gpu`).
///
/// Errors: [`RenderError::Unsupported`] for entry point and commands with a GPU;
/// [`RenderError::InvalidField`] for a test env value Nomad would interpolate when the image's
/// entry point runs unwrapped.
fn image_task(
    test: &jobforge_schema::TestSpec,
    image: &str,
    gpu: bool,
) -> Result<crate::nomad::job_spec::Task, RenderError> {
    if test.entry_point && !test.commands.is_empty() {
        return Err(RenderError::Unsupported {
            field: "spec.test".into(),
            profile: "docker",
            why: "with gpu_required, set either entry_point or commands, not both",
        });
    }
    let mut config = serde_json::Map::new();
    config.insert("image".into(), json!(image));
    if gpu {
        config.insert("runtime".into(), json!("nvidia"));
    }
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if test.commands.is_empty() {
        // The image's entry point runs as is: the values are plain task env.
        for (k, v) in &test.env {
            if nomad_would_interpolate(v) {
                return Err(RenderError::InvalidField {
                    field: format!("spec.test.env.{k}"),
                    value: v.clone(),
                    allowed: "with gpu_required and entry_point, a value without `${name}` (Nomad would replace it); use commands to pass it verbatim",
                });
            }
        }
        env.extend(test.env.clone());
    } else {
        config.insert("entrypoint".into(), json!(["/bin/sh"]));
        config.insert(
            "args".into(),
            Value::Array(sh_args(IMAGE_TEST_SCRIPT, "test", &[])),
        );
        env.insert("JF_TEST_CMDS_B64".into(), commands_b64(&test.commands));
        env.insert("JF_TEST_ENV_LINES".into(), env_lines(&test.env));
    }
    let mut task = crate::nomad::job_spec::Task {
        driver: "docker".into(),
        ..Default::default()
    };
    if gpu && test.gpu_count == 0 {
        env.insert("NVIDIA_VISIBLE_DEVICES".into(), "all".into());
    } else if gpu {
        task.resources = Some(crate::nomad::job_spec::Resources {
            devices: vec![RequestedDevice {
                name: "nvidia/gpu".into(),
                count: u64::from(test.gpu_count),
            }],
            ..Default::default()
        });
    }
    task.config = config;
    env.extend(std::mem::take(&mut task.env));
    task.env = env;
    Ok(task)
}
