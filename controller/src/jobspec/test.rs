//! The test phase: run the entry point and/or each command inside the temporary image.
//!
//! Two ways, chosen per request:
//! - **buildah** (the `raw_exec` profile, and the `docker` profile when a request without a GPU
//!   asks for both the entry point and commands, whose order only one container can keep): the tool task
//!   runs [`TEST_SCRIPT`]: `buildah from` the temporary image (pulled from the registry), then
//!   `buildah run <ctr> -- /bin/sh -c "$cmd"` for each command in order, then the image's
//!   entry point + CMD (read with `buildah inspect`) when `entry_point` is set. The first failure
//!   stops the phase: it prints `::jobforge::failed-command=<n>` and exits with that code. The
//!   container and the pulled image are removed on exit (trap). Commands travel as env values
//!   `JF_TEST_CMD_1..N` (`JF_TEST_CMD_COUNT`); the test environment as `JF_TEST_ENV_<NAME>` with
//!   the names listed one per line in `JF_TEST_ENV_NAMES`, passed to `buildah run --env`
//!   (so, in this mode, values are visible in the host's process list while a command runs).
//! - **image** (the `docker` profile otherwise): the docker driver runs the temporary image
//!   itself as the task's container (with `runtime: nvidia` when `gpu_required`). Commands:
//!   `entrypoint: ["/bin/sh"]`, args
//!   `["-c", IMAGE_TEST_SCRIPT, "jobforge-test", cmd1, cmd2, ...]` (each command one argv element);
//!   entry point: the image's own entry point and CMD, unchanged. Both at once is unsupported
//!   with a GPU (the entry point is not known at render time; without a GPU that case uses
//!   the buildah way). `gpu_count > 0` requests that many
//!   `nvidia/gpu` devices; 0 sets `NVIDIA_VISIBLE_DEVICES=all`. Env and Vault secrets keep their
//!   own names. Registry TLS settings and pull credentials are the Nomad client's docker plugin
//!   configuration (`auth { config = ... }`): per-job credentials would be visible to the tests.
//!
//! `test.vault_secrets` become templates `secrets/test-<i>.env`; `test.vault_policies` join the
//! task's Vault block; `test.constraints` become group constraints.

use std::collections::BTreeMap;

use jobforge_schema::{BuildRequest, TestSpec};
use serde_json::{Value, json};

use crate::nomad::job_spec::{Constraint, RequestedDevice, Template};

use super::escaping::{env_template, validate_env_name};
use super::profiles::{Tool, add_registry_credentials, ensure_vault, sh_args, tool_task};
use super::{Profile, RenderConfig, RenderError, RenderedTask, temp_image};

/// The buildah-mode test script (run as `/bin/sh -c TEST_SCRIPT jobforge-test`).
pub const TEST_SCRIPT: &str = concat!(
    sh_prelude!(),
    r#"jf_ctr=
jf_cleanup() {
  if [ -n "$jf_ctr" ]; then
    bh rm -- "$jf_ctr" >/dev/null 2>&1 || true
    bh rmi -- "$JF_TEMP_IMAGE" >/dev/null 2>&1 || true
  fi
}
trap jf_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
jf_getenv() {
  jf_v=$(printenv "$1"; echo x)
  jf_v=${jf_v%x}
  jf_v=${jf_v%?}
}
jf_run() {
  set -- "$jf_ctr" -- "$@"
  while IFS= read -r jf_n; do
    if [ -n "$jf_n" ]; then
      jf_getenv "JF_TEST_ENV_$jf_n"
      set -- --env "$jf_n=$jf_v" "$@"
    fi
  done <<JF_EOF
$JF_TEST_ENV_NAMES
JF_EOF
  bh run --isolation chroot "$@"
}
jf_login bh
jf_ctr=$(bh from --quiet --pull=always --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" -- "docker://$JF_TEMP_IMAGE")
jf_i=1
while [ "$jf_i" -le "$JF_TEST_CMD_COUNT" ]; do
  jf_getenv "JF_TEST_CMD_$jf_i"
  jf_cmd=$jf_v
  printf 'jobforge: test command %s of %s: %s\n' "$jf_i" "$JF_TEST_CMD_COUNT" "$(printf '%s' "$jf_cmd" | tr '\n\r' '  ')"
  jf_rc=0
  jf_run /bin/sh -c "$jf_cmd" || jf_rc=$?
  if [ "$jf_rc" -ne 0 ]; then
    printf '::jobforge::failed-command=%s\n' "$jf_i"
    printf 'jobforge: test command %s failed with exit code %s\n' "$jf_i" "$jf_rc"
    exit "$jf_rc"
  fi
  jf_i=$((jf_i + 1))
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

/// The image-mode script: runs each argument after `$0` as `/bin/sh -c <arg>`, in order, and
/// stops at the first failure with its exit code.
pub const IMAGE_TEST_SCRIPT: &str = r#"set -u
jf_i=0
for jf_cmd in "$@"; do
  jf_i=$((jf_i + 1))
  printf 'jobforge: test command %s of %s\n' "$jf_i" "$#"
  jf_rc=0
  /bin/sh -c "$jf_cmd" || jf_rc=$?
  if [ "$jf_rc" -ne 0 ]; then
    printf '::jobforge::failed-command=%s\n' "$jf_i"
    printf 'jobforge: test command %s failed with exit code %s\n' "$jf_i" "$jf_rc"
    exit "$jf_rc"
  fi
done
echo "jobforge: all tests passed"
"#;

/// The test phase's task. About 80 lines on purpose: it reads top to bottom in the order the
/// test script consumes its inputs (constraints, mode, secrets, then the script's env); the
/// secret templates and the GPU image task are already their own functions.
pub(crate) fn test_task(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    cfg: &RenderConfig,
) -> Result<RenderedTask, RenderError> {
    let test = match &req.spec.test {
        Some(t) if t.has_tests() => t,
        _ => return Err(RenderError::NoTests),
    };
    for name in test.env.keys() {
        validate_env_name("spec.test.env", name)?;
    }
    let image = temp_image(req, generation, attempt, cfg);
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
        (Profile::Docker, false) => !test.entry_point || test.commands.is_empty(),
        _ => false,
    };
    // Vault secrets: one template per secret; env names prefixed in buildah mode.
    let prefix = if image_mode { "" } else { "JF_TEST_ENV_" };
    let (templates, secret_names) = secret_templates(test, prefix)?;

    let mut task = if image_mode {
        image_task(
            test,
            &image,
            cfg.profile == Profile::Docker && test.gpu_required,
        )?
    } else {
        let mut env = BTreeMap::new();
        env.insert("JF_TEMP_IMAGE".to_string(), image);
        env.insert(
            "JF_TEST_CMD_COUNT".to_string(),
            test.commands.len().to_string(),
        );
        for (i, cmd) in test.commands.iter().enumerate() {
            env.insert(format!("JF_TEST_CMD_{}", i + 1), cmd.clone());
        }
        env.insert(
            "JF_TEST_ENTRY_POINT".to_string(),
            if test.entry_point { "1" } else { "0" }.to_string(),
        );
        let mut names: Vec<String> = test.env.keys().cloned().collect();
        for (k, v) in &test.env {
            env.insert(format!("JF_TEST_ENV_{k}"), v.clone());
        }
        for n in &secret_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        env.insert("JF_TEST_ENV_NAMES".to_string(), names.join("\n"));
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

/// One env template per `spec.test.vault_secrets` entry (the env names prefixed with `prefix`),
/// and the names of the variables they set, in order.
///
/// Errors: [`RenderError::InvalidField`] for an env name that is not an identifier or a path the
/// template cannot carry.
fn secret_templates(
    test: &TestSpec,
    prefix: &str,
) -> Result<(Vec<Template>, Vec<String>), RenderError> {
    let mut templates = Vec::new();
    let mut secret_names = Vec::new();
    for (i, secret) in test.vault_secrets.iter().enumerate() {
        let field = format!("spec.test.vault_secrets[{i}].fields");
        let mut pairs = Vec::new();
        for (vault_field, env) in &secret.fields {
            validate_env_name(&field, env)?;
            pairs.push((vault_field.as_str(), format!("{prefix}{env}")));
            secret_names.push(env.clone());
        }
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(f, e)| (*f, e.as_str())).collect();
        templates.push(env_template(
            &field,
            &format!("test-{i}"),
            &secret.path,
            &refs,
        )?);
    }
    Ok((templates, secret_names))
}

/// The docker task that runs the temporary image itself (with the NVIDIA runtime when `gpu`).
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
    if !test.commands.is_empty() {
        config.insert("entrypoint".into(), json!(["/bin/sh"]));
        config.insert(
            "args".into(),
            Value::Array(sh_args(IMAGE_TEST_SCRIPT, "test", &test.commands)),
        );
    }
    let mut env: BTreeMap<String, String> = test.env.clone();
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
