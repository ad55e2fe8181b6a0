//! The build phase: clone, check out `git_ref`, `buildah bud`, push the temporary image.
//!
//! Environment of [`BUILD_SCRIPT`] (every user value travels here, never in script text):
//! `JF_REPO_URL`, `JF_GIT_REF`, `JF_DOCKERFILE`, `JF_CONTEXT`, `JF_TEMP_IMAGE`, `JF_NO_CACHE`
//! (`0|1`), `JF_GIT_AUTH` (`none|https|ssh`), plus the prelude's (`JF_STORAGE_DRIVER`,
//! `JF_TLS_VERIFY`, `JF_WORK_ROOT`, `JF_REGISTRY_*`).
//!
//! Git credentials (`spec.git_credentials_path`, Vault KV v2):
//! - https: fields `username`/`password` exported by a template into `JF_GIT_USERNAME` /
//!   `JF_GIT_PASSWORD`, handed to git by a fixed credential helper set through
//!   `GIT_CONFIG_COUNT` (git >= 2.31): never in the URL, argv or logs; unset after the clone.
//! - ssh (`ssh://` or scp-like `user@host:path` URLs): field `ssh_key` written to
//!   `secrets/git_ssh_key` (0600) and used through `GIT_SSH_COMMAND` (`IdentitiesOnly=yes`,
//!   `StrictHostKeyChecking=accept-new`: the first connection trusts the host key).
//!
//! Reproducible images: the image is built with `--timestamp` = the commit's committer time
//! (`SOURCE_DATE_EPOCH`, <https://reproducible-builds.org/specs/source-date-epoch/>, exported for
//! the tools too), so every created time in the config and history is the commit's and two
//! builds of the same commit, Containerfile and base images push the same manifest digest.
//! Layer caching is off (`--layers=false`): buildah 1.28's cache ignores `--timestamp`, so a
//! cached step built at another time (or for another commit) would bring its own times in.
//! buildah records the last stage's base image in the manifest annotations
//! `org.opencontainers.image.base.name` / `.base.digest`, which the provenance reads back.
//!
//! Exit codes: 0 success; 3 `git_ref` not found (`::jobforge::reason=GitRevisionNotFound`);
//! otherwise the failing tool's code or 1.

use std::collections::BTreeMap;

use jobforge_schema::BuildRequest;

use super::escaping::{env_template, file_template};
use super::profiles::{Tool, add_registry_credentials, ensure_vault, tool_task};
use super::{RenderConfig, RenderError, RenderedTask, check_relative_path, temp_image};

/// The build task's fixed script (run as `/bin/sh -c BUILD_SCRIPT jobforge-build`).
pub const BUILD_SCRIPT: &str = concat!(
    sh_prelude!(),
    r#"case "$JF_CONTEXT" in
  /*|..|../*|*/..|*/../*) jf_fail InvalidSpec "dockerfile_context must be relative without '..'" ;;
esac
case "$JF_DOCKERFILE" in
  /*|..|../*|*/..|*/../*) jf_fail InvalidSpec "dockerfile_path must be relative without '..'" ;;
esac
export GIT_TERMINAL_PROMPT=0
case "$JF_GIT_AUTH" in
  none) ;;
  https)
    export GIT_CONFIG_COUNT=2
    export GIT_CONFIG_KEY_0=credential.helper GIT_CONFIG_VALUE_0=
    export GIT_CONFIG_KEY_1=credential.helper
    export GIT_CONFIG_VALUE_1='!f() { test "$1" = get || exit 0; printf "username=%s\npassword=%s\n" "$JF_GIT_USERNAME" "$JF_GIT_PASSWORD"; }; f'
    ;;
  ssh)
    export GIT_SSH_COMMAND="ssh -i '$jf_secrets/git_ssh_key' -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    ;;
  *) jf_fail BuildFailed "unknown JF_GIT_AUTH" ;;
esac
jf_login bh
jf_src=$jf_task/src
rm -rf -- "$jf_src"
echo "jobforge: cloning the repository"
if ! git clone --quiet --no-checkout -- "$JF_REPO_URL" "$jf_src"; then
  jf_fail BuildFailed "git clone failed; check repo_url and git_credentials_path"
fi
unset GIT_CONFIG_COUNT GIT_CONFIG_KEY_0 GIT_CONFIG_VALUE_0 GIT_CONFIG_KEY_1 GIT_CONFIG_VALUE_1 JF_GIT_USERNAME JF_GIT_PASSWORD
cd -- "$jf_src"
jf_commit=
for jf_cand in "refs/remotes/origin/$JF_GIT_REF" "refs/tags/$JF_GIT_REF" "$JF_GIT_REF"; do
  if jf_commit=$(git rev-parse --verify --quiet --end-of-options "$jf_cand^{commit}"); then
    break
  fi
  jf_commit=
done
if [ -z "$jf_commit" ]; then
  echo '::jobforge::reason=GitRevisionNotFound'
  printf 'jobforge: git ref "%s" not found in the repository (expected a branch, tag or commit SHA)\n' "$(printf '%s' "$JF_GIT_REF" | tr '\n\r' '  ')"
  exit 3
fi
git -c advice.detachedHead=false checkout --quiet --detach "$jf_commit"
printf '::jobforge::commit=%s\n' "$jf_commit"
SOURCE_DATE_EPOCH=$(git show -s --format=%ct "$jf_commit")
export SOURCE_DATE_EPOCH
set -- --layers=false --isolation chroot --timestamp "$SOURCE_DATE_EPOCH" --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" --file "$jf_src/$JF_DOCKERFILE" --tag "$JF_TEMP_IMAGE"
if [ "$JF_NO_CACHE" = 1 ]; then
  set -- "$@" --no-cache
fi
bh bud "$@" -- "$jf_src/$JF_CONTEXT"
jf_digestfile=$jf_task/jobforge-digest
bh push --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" --digestfile "$jf_digestfile" -- "$JF_TEMP_IMAGE" "docker://$JF_TEMP_IMAGE"
jf_digest=$(cat -- "$jf_digestfile")
bh rmi -- "$JF_TEMP_IMAGE" >/dev/null 2>&1 || true
printf '::jobforge::digest=%s\n' "$jf_digest"
"#
);

/// Whether `url` uses SSH transport (`ssh://` or scp-like `user@host:path`).
pub fn is_ssh_url(url: &str) -> bool {
    if url.starts_with("ssh://") || url.starts_with("git+ssh://") {
        return true;
    }
    if url.contains("://") {
        return false;
    }
    // scp-like: a ':' before any '/', as git decides (git-clone(1), GIT URLS).
    match (url.find(':'), url.find('/')) {
        (Some(c), Some(s)) => c < s,
        (Some(_), None) => true,
        _ => false,
    }
}

pub(crate) fn build_task(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    cfg: &RenderConfig,
) -> Result<RenderedTask, RenderError> {
    let spec = &req.spec;
    let dockerfile = spec.dockerfile_path.as_deref().unwrap_or("Dockerfile");
    let context = spec.dockerfile_context.as_deref().unwrap_or(".");
    check_relative_path("spec.dockerfile_path", dockerfile)?;
    check_relative_path("spec.dockerfile_context", context)?;

    let mut env = BTreeMap::new();
    env.insert("JF_REPO_URL".to_string(), spec.repo_url.clone());
    env.insert("JF_GIT_REF".to_string(), spec.git_ref.clone());
    env.insert("JF_DOCKERFILE".to_string(), dockerfile.to_string());
    env.insert("JF_CONTEXT".to_string(), context.to_string());
    env.insert(
        "JF_TEMP_IMAGE".to_string(),
        temp_image(req, generation, attempt, cfg),
    );
    env.insert(
        "JF_NO_CACHE".to_string(),
        if spec.clear_cache { "1" } else { "0" }.to_string(),
    );
    let ssh = is_ssh_url(&spec.repo_url);
    let auth = match (&spec.git_credentials_path, ssh) {
        (None, _) => "none",
        (Some(_), true) => "ssh",
        (Some(_), false) => "https",
    };
    env.insert("JF_GIT_AUTH".to_string(), auth.to_string());

    let mut task = tool_task(cfg, Tool::Buildah, "build", BUILD_SCRIPT, env);
    if let Some(path) = &spec.git_credentials_path {
        let t = if ssh {
            file_template("git_ssh_key", path, "ssh_key")
        } else {
            env_template(
                "spec.git_credentials_path",
                "git",
                path,
                &[
                    ("username", "JF_GIT_USERNAME"),
                    ("password", "JF_GIT_PASSWORD"),
                ],
            )?
        };
        task.templates.push(t);
        ensure_vault(&mut task, cfg, &[]);
    }
    add_registry_credentials(&mut task, req, cfg)?;
    Ok(RenderedTask {
        task,
        group_constraints: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ssh_and_scp_like_urls_use_ssh_transport() {
        assert!(is_ssh_url("ssh://git@host/x.git"));
        assert!(is_ssh_url("git@github.com:org/repo.git"));
        assert!(!is_ssh_url("https://host/x.git"));
        assert!(!is_ssh_url("file:///tmp/repo"));
        assert!(!is_ssh_url("/tmp/repo:x"));
    }
}
