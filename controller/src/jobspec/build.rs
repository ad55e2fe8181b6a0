//! The build phase: clone, check out `git_ref`, `buildah bud`, push the temporary image.
//!
//! Environment of [`BUILD_SCRIPT`] (every request value base64-encoded, never in script text nor
//! interpolated by Nomad: see [`super`]): `JF_REPO_URL_B64`, `JF_GIT_REF_B64`,
//! `JF_DOCKERFILE_B64`, `JF_CONTEXT_B64`, `JF_TEMP_IMAGE_B64`, `JF_NO_CACHE` (`0|1`),
//! `JF_GIT_AUTH` (`none|https|ssh`), `JF_GIT_HOST_B64` (https), plus the prelude's
//! (`JF_STORAGE_DRIVER`, `JF_TLS_VERIFY`, `JF_WORK_ROOT`, `JF_REGISTRY_*`).
//!
//! Git credentials (`spec.git_credentials_path`, Vault KV v2), only for `repo_url`'s own host:
//! - https: fields `username`/`password` rendered by templates into `secrets/git_username` and
//!   `secrets/git_password` (files, never the environment, argv, URL or logs). git gets them
//!   from a fixed credential helper configured through `GIT_CONFIG_COUNT` (git >= 2.31) under
//!   the URL-scoped key `credential.https://<host>.helper` (git-config(1) `credential.<url>.*`,
//!   gitcredentials(7)), after `credential.helper=` emptied every helper the agent's own
//!   configuration lists; the helper itself answers only a `get` whose `protocol` is `https`
//!   and whose `host` is `repo_url`'s host (with port), so a redirect or a submodule on another
//!   host, or any `http://` step, gets nothing. Credentials with a `repo_url` that is neither
//!   https nor SSH are refused at render time.
//! - ssh (`ssh://` or scp-like `user@host:path` URLs): field `ssh_key` written to
//!   `secrets/git_ssh_key` (0600) and used through `GIT_SSH_COMMAND` (`IdentitiesOnly=yes`,
//!   `StrictHostKeyChecking=accept-new`: the first connection trusts the host key).
//!
//! Build options (issue 19), each a list of base64 words decoded by the script, so a value is
//! one argv element of `buildah bud` and never shell or Nomad text: `JF_BUILD_ARGS`
//! (`--build-arg`, one `<base64 of NAME=VALUE>` word per entry), `JF_LABELS` (`--label`),
//! `JF_ANNOTATIONS` (`--annotation`), `JF_SECRET_IDS` (`--secret id=<id>,src=secrets/build_secret_<i>`,
//! the i-th word's file written by a Vault template: the value is in no argv, environment or
//! layer), `JF_TARGET_B64` (`--target`, empty for the last stage), `JF_SUBMODULES` (`0|1`:
//! `git submodule update --init --recursive` with the same host-bound credential helper), and
//! `JF_PULL_AUTH` (`0|1`) with `JF_PULL_HOST_B64`: a login into the task's authfile for the
//! base-image registry only, with `secrets/pull_username` / `secrets/pull_password`.
//!
//! Registry mirrors (operator configuration, `build.registry_mirrors` of `<prefix>/config`):
//! `JF_REGISTRIES_CONF_B64`, a registries.conf v2 document ([`super::registries`]) the script
//! writes to `local/registries.conf` and exports as `CONTAINERS_REGISTRIES_CONF`; with it and
//! verified TLS, `buildah bud` gets no `--tls-verify` so a mirror's `insecure` applies (the
//! push and the logins keep `--tls-verify`). Absent = the client's registries.conf, as before.
//!
//! The build context is the checkout without `.git` (as BuildKit's git contexts): identical
//! sources give identical `COPY` layers whatever the clone, and the history stays out of the
//! image; the commit SHA is printed before `.git` goes. `--force-rm` removes the working
//! container of a failed step.
//!
//! Cache environment (raw_exec with `build.cache`, see below): `JF_CACHE_ROOT` (operator
//! configuration, an absolute path of `[A-Za-z0-9._-]` segments), `JF_CACHE_NS_B64`,
//! `JF_CACHE_MAX_MB`.
//!
//! Reproducible images: `SOURCE_DATE_EPOCH` is the commit's committer time
//! (<https://reproducible-builds.org/specs/source-date-epoch/>, exported for the tools too), and
//! two builds of the same commit, Containerfile and base images push the same manifest digest,
//! in either of the two modes below. Without a layer cache (`build.cache` absent, or the docker
//! profile): `bud --layers=false --timestamp $SOURCE_DATE_EPOCH --tag <temp image>`, so every
//! created time in the config and history is the commit's; buildah records the last stage's base
//! image in the manifest annotations `org.opencontainers.image.base.name` / `.base.digest`,
//! which the provenance reads back; the temporary tag is removed with the per-allocation store.
//!
//! Layer cache (issue 19; `build.cache` in `<prefix>/config`, raw_exec only): the store is
//! `JF_CACHE_ROOT/<namespace>/<driver>/` (`storage`, `run`, `lock`), created 0700, shared by
//! the builds of that namespace and no other; `<namespace>` comes from `JF_CACHE_NS_B64`, the
//! request's validated namespace (a DNS label, checked again by the script before it names a
//! directory), never from the spec. Everything else (checkout, authfile, secrets, iid file)
//! stays in the allocation's directories. buildah 1.28's cache ignores `--timestamp` (a step
//! cached by a build of another commit keeps that build's times and file mtimes, so the digest
//! would depend on what the cache holds; measured: same commit, cold store vs store warmed by
//! another commit, two digests), so:
//! - `bud --layers --timestamp 0 --iidfile <task dir>`: every layer and intermediate image is
//!   built at the constant time 0 (as ko and Bazel's rules_oci do), so a cached step is byte for
//!   byte what a fresh build of it would give, whichever commit built it first. No `--label` or
//!   `--annotation` here: buildah 1.28 copies labels into every intermediate image without
//!   making them part of the cache key, and the history comments name intermediate IDs, so
//!   labels at this stage would make the digest depend on the cache again.
//! - a last commit on top (`from` the built image ID, `config --label/--annotation`, `commit
//!   --timestamp $SOURCE_DATE_EPOCH`): the request's labels and annotations, the commit's time as
//!   the image's `created` and last history entry (one empty layer, 34 bytes compressed). The
//!   base-image annotations are set from the last stage's base as named by buildah and that
//!   image's digest in the store (`bud --layers` records the digest of its last intermediate
//!   image instead), or removed when there is none (`FROM scratch`).
//! - the result is pushed by image ID and never tagged in the shared store, so nothing is
//!   removed after the push: removing an image also removes its untagged parents, which are the
//!   cache (issue 19: the `rmi` of the temporary tag destroyed it). `--force-rm` and the EXIT
//!   trap remove working containers; a failed build leaves no container and no tagged image
//!   (its finished steps stay, untagged, as cache).
//! - concurrency and size: builds hold a shared `flock` on `lock` for their whole run; before
//!   and after a build the script tries the exclusive lock without waiting and, when it gets it
//!   (no other build of the namespace is running), removes leftover containers (of killed
//!   builds) and, when `du` of the store exceeds `JF_CACHE_MAX_MB` (0 = never), removes images
//!   oldest first (by their directory in the store; removing one also removes its untagged
//!   parents) until it is under the limit, else everything. So a prune never deletes a layer a
//!   running build of the namespace uses, and builds of other namespaces never wait for it.
//! - `spec.clear_cache` (`--no-cache`) rebuilds every step and stores the fresh layers.
//! - the test phase opens the same store (`jf_cache_open`, shared lock) to run the image it
//!   pushed without pulling it again ([`super::test`]); its container is the only thing it adds
//!   and it removes it on exit. A prune's `rm --all` (under the exclusive lock, so no test of the
//!   namespace is running) also removes a test container a killed test left.
//!
//! The docker profile has no layer cache: the tool container's store lives and dies with the
//! allocation. A host volume per namespace would need the client's `docker.volumes.enabled`
//! (which lets every job mount any host path) and overlay inside an unprivileged container
//! (`/dev/fuse`); it is not offered.
//!
//! Base images of every stage: after the build the script prints `::jobforge::base-image=`
//! markers for each `FROM` / `COPY --from` reference of the Containerfile, looked up in the
//! build's own storage ([`BASE_IMAGES_SH`]; never its output, never everything a shared cache
//! store holds), and the provenance lists them with the last stage's annotation.
//!
//! `buildah bud`'s stdout (the Containerfile's `RUN` output, user code) is passed through `sed`,
//! which indents any line starting with `::jobforge::`, so only this script prints markers.
//!
//! Exit codes: 0 success; 3 `git_ref` not found (`::jobforge::reason=GitRevisionNotFound`);
//! otherwise the failing tool's code or 1.

use std::collections::BTreeMap;

use jobforge_schema::BuildRequest;

use super::escaping::{file_template, value_file_template};
use super::profiles::{Tool, add_registry_credentials, ensure_vault, tool_task};
use super::{
    Profile, RenderConfig, RenderError, RenderedTask, b64, check_relative_path, temp_image,
};

/// The fixed git credential helper (a `!` helper git runs with `sh -c`); see the module docs.
/// It reads `JF_GIT_HOST` (decoded by the script, never request text in a script) and the files
/// in `JF_GIT_CRED_DIR`, and refuses values with a newline (they would add attributes). It
/// holds no `'`: the script quotes it with single quotes.
macro_rules! git_credential_helper {
    () => {
        r#"!f() { test "$1" = get || exit 0; jf_p=; jf_h=; while IFS= read -r jf_l && test -n "$jf_l"; do case "$jf_l" in protocol=*) jf_p=${jf_l#protocol=} ;; host=*) jf_h=${jf_l#host=} ;; esac; done; test "$jf_p" = https && test "$jf_h" = "$JF_GIT_HOST" || exit 0; jf_u=$(cat -- "$JF_GIT_CRED_DIR/git_username"); jf_w=$(cat -- "$JF_GIT_CRED_DIR/git_password"); test "$(printf %s "$jf_u$jf_w" | wc -l)" -eq 0 || exit 0; printf "username=%s\npassword=%s\n" "$jf_u" "$jf_w"; }; f"#
    };
}

/// The text of the git credential helper the build script configures.
pub const GIT_CREDENTIAL_HELPER: &str = git_credential_helper!();

/// The awk program printing the base image references of a Containerfile (see
/// [`BASE_IMAGES_SH`]). No `'` (it is single-quoted) and no `${` (Nomad would interpolate it).
macro_rules! base_refs_awk {
    () => {
        r#"function subst(s,   out, i, c, name, op, w) {
  out = ""
  while ((i = index(s, "$")) > 0) {
    out = out substr(s, 1, i - 1); s = substr(s, i + 1)
    if (substr(s, 1, 1) == "{") {
      c = index(s, "}"); if (c == 0) return ""
      name = substr(s, 2, c - 2); s = substr(s, c + 1); op = ""; w = ""
      if ((i = index(name, ":-")) > 0) { op = "-"; w = substr(name, i + 2); name = substr(name, 1, i - 1) }
      else if ((i = index(name, ":+")) > 0) { op = "+"; w = substr(name, i + 2); name = substr(name, 1, i - 1) }
      if (op == "-") out = out ((name in val) && val[name] != "" ? val[name] : w)
      else if (op == "+") out = out ((name in val) && val[name] != "" ? w : "")
      else if (name in val) out = out val[name]
    } else if (match(s, /^[A-Za-z_][A-Za-z0-9_]*/)) {
      name = substr(s, 1, RLENGTH); s = substr(s, RLENGTH + 1)
      if (name in val) out = out val[name]
    } else out = out "$"
  }
  return out s
}
function emit(r,   l) {
  l = tolower(r)
  if (r == "" || l == "scratch" || (l in stage) || r ~ /^[0-9]+$/ || (r in done)) return
  done[r] = 1; print r
}
BEGIN {
  while ((getline l < argsfile) > 0) { i = index(l, "="); if (i > 1) arg[substr(l, 1, i - 1)] = substr(l, i + 1) }
}
{
  line = $0; sub(/\r$/, "", line)
  if (line ~ /^[ \t]*#/) next
  if (line ~ /\\[ \t]*$/) { sub(/\\[ \t]*$/, "", line); cont = cont line " "; next }
  line = cont line; cont = ""; sub(/^[ \t]+/, "", line)
  n = split(line, w, /[ \t]+/); kw = tolower(w[1])
  if (kw == "arg" && !from) {
    for (j = 2; j <= n; j++) {
      i = index(w[j], "=")
      if (i > 0) { nm = substr(w[j], 1, i - 1); dv = substr(w[j], i + 1); gsub(/^"|"$/, "", dv) } else { nm = w[j]; dv = "" }
      val[nm] = (nm in arg) ? arg[nm] : dv
    }
  } else if (kw == "from") {
    if (last) exit
    from = 1
    for (j = 2; j <= n && w[j] ~ /^--/; j++) ;
    if (j > n) next
    emit(subst(w[j]))
    if (j + 2 <= n && tolower(w[j + 1]) == "as") {
      stage[tolower(w[j + 2])] = 1
      if (target != "" && tolower(w[j + 2]) == tolower(target)) last = 1
    }
  } else if (kw == "copy" || kw == "add") {
    for (j = 2; j <= n && w[j] ~ /^--/; j++) if (w[j] ~ /^--from=/) emit(subst(substr(w[j], 8)))
  }
}"#
    };
}

/// Prints `::jobforge::base-image=<name>@<digest>` for every base image of the build (every
/// stage's `FROM`, and each `COPY`/`ADD --from=` naming an image rather than a stage), read
/// from the build's own image storage after `buildah bud`: the Containerfile's references are
/// parsed (line continuations, comments, global `ARG` defaults overridden by the request's
/// build args, `$NAME`, `${NAME}`, `${NAME:-w}`, `${NAME:+w}`; stage names, stage numbers and
/// `scratch` skipped; parsing stops at the `--target` stage's end), and each one is looked up
/// BY THAT NAME with `buildah inspect --type image`: `FromImage` is what buildah resolved it
/// to and `FromImageDigest` its manifest digest as pulled, the same field buildah writes into
/// `org.opencontainers.image.base.digest` for the last stage. Never the build's output: that is
/// user-controlled. Only the images the Containerfile names are read, so images other builds
/// left in a shared storage are never listed. A reference not found (a stage buildah skipped)
/// is a warning, not a failure. Known limits: `RUN --mount=from=` images are not listed; a
/// parser directive `# escape=` is not honoured; in a storage shared with concurrent builds, a
/// tag pulled anew by another build between this build's `FROM` and the lookup would be read as
/// the newer image (the controller also keeps buildah's own annotation for the last stage, so
/// both would be listed, never neither).
macro_rules! base_images_sh {
    () => {
        concat!(
            r#"jf_base_images() {
  jf_argsf=$jf_task/jobforge-build-args
  : >"$jf_argsf"
  for jf_w in ${JF_BUILD_ARGS:-}; do
    printf '%s\n' "$(printf '%s' "$jf_w" | base64 -d)" >>"$jf_argsf"
  done
  jf_dec JF_TARGET_B64
  echo
  awk -v argsfile="$jf_argsf" -v target="$jf_v" '"#,
            base_refs_awk!(),
            r#"' "$jf_src/$jf_dockerfile" | while IFS= read -r jf_b; do
    if jf_v=$(bh inspect --type image --format '{{.FromImage}}@{{.FromImageDigest}}' -- "$jf_b" 2>/dev/null); then
      printf '::jobforge::base-image=%s\n' "$jf_v"
    else
      echo "jobforge: warning: a base image named in the Containerfile is not in the build's storage (a stage not built?); it is not recorded"
    fi
  done
}
"#
        )
    };
}

/// The shell function `jf_base_images` of the build script (see [`base_images_sh`]).
pub const BASE_IMAGES_SH: &str = base_images_sh!();

/// The build task's fixed script (run as `/bin/sh -c BUILD_SCRIPT jobforge-build`).
pub const BUILD_SCRIPT: &str = concat!(
    sh_prelude!(),
    cache_open_sh!(),
    base_images_sh!(),
    r#"jf_ctr=
jf_build_cleanup() {
  if [ -n "$jf_ctr" ]; then
    bh rm -- "$jf_ctr" >/dev/null 2>&1 || true
  fi
  jf_drop_storage
}
trap jf_build_cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
jf_pick_driver
if [ -n "${JF_CACHE_ROOT:-}" ]; then
  jf_cache_open
  jf_cache=$jf_cache_dir
  jf_storage=$jf_cache
  jf_cache_size() {
    du -sm -- "$jf_cache" 2>/dev/null | cut -f1
  }
  jf_prune() {
    bh rm --all >/dev/null 2>&1 || true
    if [ "${JF_CACHE_MAX_MB:-0}" -eq 0 ] || [ "$(jf_cache_size)" -le "$JF_CACHE_MAX_MB" ]; then
      return 0
    fi
    printf 'jobforge: layer cache over %s MB: removing its oldest images\n' "$JF_CACHE_MAX_MB"
    for jf_id in $(ls -tr -- "$jf_cache/storage/$jf_driver-images" 2>/dev/null); do
      case "$jf_id" in
        *[!0-9a-f]*) continue ;;
      esac
      bh rmi -- "$jf_id" >/dev/null 2>&1 || continue
      if [ "$(jf_cache_size)" -le "$JF_CACHE_MAX_MB" ]; then
        return 0
      fi
    done
    bh rmi --all --force >/dev/null 2>&1 || true
  }
  if flock -x -n 9; then
    jf_prune
  fi
  flock -s 9
fi
jf_dec JF_CONTEXT_B64
jf_context=$jf_v
jf_dec JF_DOCKERFILE_B64
jf_dockerfile=$jf_v
jf_dec JF_REPO_URL_B64
jf_repo=$jf_v
jf_dec JF_GIT_REF_B64
jf_ref=$jf_v
jf_dec JF_TEMP_IMAGE_B64
jf_image=$jf_v
case "$jf_context" in
  /*|..|../*|*/..|*/../*) jf_fail InvalidSpec "dockerfile_context must be relative without '..'" ;;
esac
case "$jf_dockerfile" in
  /*|..|../*|*/..|*/../*) jf_fail InvalidSpec "dockerfile_path must be relative without '..'" ;;
esac
export GIT_TERMINAL_PROMPT=0
case "$JF_GIT_AUTH" in
  none) ;;
  https)
    jf_dec JF_GIT_HOST_B64
    export JF_GIT_HOST="$jf_v" JF_GIT_CRED_DIR="$jf_secrets"
    export GIT_CONFIG_COUNT=2
    export GIT_CONFIG_KEY_0=credential.helper GIT_CONFIG_VALUE_0=
    export GIT_CONFIG_KEY_1="credential.https://$JF_GIT_HOST.helper"
    export GIT_CONFIG_VALUE_1='"#,
    git_credential_helper!(),
    r#"'
    ;;
  ssh)
    export GIT_SSH_COMMAND="ssh -i '$jf_secrets/git_ssh_key' -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    ;;
  *) jf_fail BuildFailed "unknown JF_GIT_AUTH" ;;
esac
jf_login bh
jf_regconf=
if [ -n "${JF_REGISTRIES_CONF_B64:-}" ]; then
  jf_regconf=$jf_task/registries.conf
  jf_dec JF_REGISTRIES_CONF_B64
  printf '%s' "$jf_v" >"$jf_regconf"
  export CONTAINERS_REGISTRIES_CONF="$jf_regconf"
fi
if [ "${JF_PULL_AUTH:-0}" = 1 ]; then
  jf_dec JF_PULL_HOST_B64
  bh login --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" --username "$(cat -- "$jf_secrets/pull_username")" --password-stdin -- "$jf_v" <"$jf_secrets/pull_password" >/dev/null
fi
jf_src=$jf_task/src
rm -rf -- "$jf_src"
echo "jobforge: cloning the repository"
if ! git clone --quiet --no-checkout -- "$jf_repo" "$jf_src"; then
  jf_fail BuildFailed "git clone failed; check repo_url and git_credentials_path"
fi
cd -- "$jf_src"
jf_commit=
for jf_cand in "refs/remotes/origin/$jf_ref" "refs/tags/$jf_ref" "$jf_ref"; do
  if jf_commit=$(git rev-parse --verify --quiet --end-of-options "$jf_cand^{commit}"); then
    break
  fi
  jf_commit=
done
if [ -z "$jf_commit" ]; then
  echo '::jobforge::reason=GitRevisionNotFound'
  printf 'jobforge: git ref "%s" not found in the repository (expected a branch, tag or commit SHA)\n' "$(printf '%s' "$jf_ref" | tr '\n\r' '  ')"
  exit 3
fi
git -c advice.detachedHead=false checkout --quiet --detach "$jf_commit"
printf '::jobforge::commit=%s\n' "$jf_commit"
if [ "${JF_SUBMODULES:-1}" = 1 ] && [ -f .gitmodules ]; then
  echo "jobforge: checking out submodules"
  if ! git submodule update --quiet --init --recursive; then
    jf_fail BuildFailed "git submodule update failed; submodules are fetched with the repository's credentials only from repo_url's host (set submodules: false to skip them)"
  fi
fi
SOURCE_DATE_EPOCH=$(git show -s --format=%ct "$jf_commit")
export SOURCE_DATE_EPOCH
unset GIT_CONFIG_COUNT GIT_CONFIG_KEY_0 GIT_CONFIG_VALUE_0 GIT_CONFIG_KEY_1 GIT_CONFIG_VALUE_1
find . -name .git -prune -exec rm -rf -- {} +
jf_iid=$jf_task/jobforge-iid
rm -f -- "$jf_iid"
if [ -n "$jf_cache" ]; then
  set -- --layers --force-rm --isolation chroot --timestamp 0 --authfile "$jf_auth" --file "$jf_src/$jf_dockerfile" --iidfile "$jf_iid"
else
  set -- --layers=false --force-rm --isolation chroot --timestamp "$SOURCE_DATE_EPOCH" --authfile "$jf_auth" --file "$jf_src/$jf_dockerfile" --tag "$jf_image"
fi
if [ -z "$jf_regconf" ] || [ "$JF_TLS_VERIFY" != true ]; then
  set -- "$@" --tls-verify="$JF_TLS_VERIFY"
fi
if [ "$JF_NO_CACHE" = 1 ]; then
  set -- "$@" --no-cache
fi
jf_dec JF_TARGET_B64
if [ -n "$jf_v" ]; then
  set -- "$@" --target "$jf_v"
fi
for jf_w in ${JF_BUILD_ARGS:-}; do
  jf_v=$(printf '%s' "$jf_w" | base64 -d && echo x)
  set -- "$@" --build-arg "${jf_v%x}"
done
if [ -z "$jf_cache" ]; then
  for jf_w in ${JF_LABELS:-}; do
    jf_v=$(printf '%s' "$jf_w" | base64 -d && echo x)
    set -- "$@" --label "${jf_v%x}"
  done
  for jf_w in ${JF_ANNOTATIONS:-}; do
    jf_v=$(printf '%s' "$jf_w" | base64 -d && echo x)
    set -- "$@" --annotation "${jf_v%x}"
  done
fi
jf_i=0
for jf_w in ${JF_SECRET_IDS:-}; do
  jf_v=$(printf '%s' "$jf_w" | base64 -d && echo x)
  set -- "$@" --secret "id=${jf_v%x},src=$jf_secrets/build_secret_$jf_i"
  jf_i=$((jf_i + 1))
done
jf_rc=$jf_task/jobforge-bud-rc
rm -f -- "$jf_rc"
{ bh bud "$@" -- "$jf_src/$jf_context" || echo "$?" >"$jf_rc"; } | sed -u 's/^::jobforge::/ ::jobforge::/'
if [ -s "$jf_rc" ]; then
  exit "$(cat -- "$jf_rc")"
fi
jf_push=$jf_image
if [ -n "$jf_cache" ]; then
  jf_finish_image() {
    jf_stage=$(cat -- "$jf_iid")
    set -- --created-by "jobforge: image labels and annotations, committed at the source commit's time"
    for jf_w in ${JF_LABELS:-}; do
      jf_v=$(printf '%s' "$jf_w" | base64 -d && echo x)
      set -- "$@" --label "${jf_v%x}"
    done
    for jf_w in ${JF_ANNOTATIONS:-}; do
      jf_v=$(printf '%s' "$jf_w" | base64 -d && echo x)
      set -- "$@" --annotation "${jf_v%x}"
    done
    jf_base=$(bh inspect --type image --format '{{index .ImageAnnotations "org.opencontainers.image.base.name"}}' -- "$jf_stage")
    jf_base_digest=
    if [ -n "$jf_base" ]; then
      jf_base_digest=$(bh inspect --type image --format '{{.FromImageDigest}}' -- "$jf_base" 2>/dev/null) || jf_base_digest=
    fi
    if [ -n "$jf_base_digest" ]; then
      set -- "$@" --annotation "org.opencontainers.image.base.name=$jf_base" --annotation "org.opencontainers.image.base.digest=$jf_base_digest"
    else
      set -- "$@" --annotation org.opencontainers.image.base.name- --annotation org.opencontainers.image.base.digest-
    fi
    jf_ctr=$(bh from --quiet --pull=never -- "$jf_stage")
    bh config "$@" -- "$jf_ctr"
    jf_push=$(bh commit --quiet --timestamp "$SOURCE_DATE_EPOCH" --rm -- "$jf_ctr")
    jf_ctr=
  }
  jf_finish_image
fi
jf_base_images
jf_digestfile=$jf_task/jobforge-digest
bh push --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" --digestfile "$jf_digestfile" -- "$jf_push" "docker://$jf_image"
jf_digest=$(cat -- "$jf_digestfile")
if [ -n "$jf_cache" ]; then
  if flock -x -n 9; then
    jf_prune
  fi
else
  bh rmi -- "$jf_image" >/dev/null 2>&1 || true
fi
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

/// The host (`host[:port]`, as written) of an `https://` URL, when it is a plain DNS name, IPv4
/// or bracketed IPv6 address with an optional decimal port: what git's credential protocol sends
/// as `host=` and what `credential.https://<host>.helper` is scoped to. `None` for any other
/// scheme or host syntax. Userinfo (`user@`) is not part of the host.
pub fn https_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(r) => {
            let (inner, after) = r.split_once(']')?;
            if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                return None;
            }
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':')?),
            };
            (&hostport[..inner.len() + 2], port)
        }
        None => match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (host_ok && port_ok).then_some(hostport)
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
    env.insert("JF_REPO_URL_B64".to_string(), b64(&spec.repo_url));
    env.insert("JF_GIT_REF_B64".to_string(), b64(&spec.git_ref));
    env.insert("JF_DOCKERFILE_B64".to_string(), b64(dockerfile));
    env.insert("JF_CONTEXT_B64".to_string(), b64(context));
    env.insert(
        "JF_TEMP_IMAGE_B64".to_string(),
        b64(&temp_image(req, generation, attempt, cfg)),
    );
    env.insert(
        "JF_NO_CACHE".to_string(),
        if spec.clear_cache { "1" } else { "0" }.to_string(),
    );
    build_options(&mut env, req);
    if cache_env(&mut env, req, cfg)?
        && let Some(cache) = &cfg.build_cache
    {
        env.insert("JF_CACHE_MAX_MB".into(), cache.max_size_mb.to_string());
    }
    if let Some(conf) = super::registries::registries_conf(&cfg.registry_mirrors).map_err(|e| {
        RenderError::InvalidField {
            field: "<prefix>/config build.registry_mirrors".into(),
            value: e,
            allowed: "mirrors that serialize as registries.conf",
        }
    })? {
        env.insert("JF_REGISTRIES_CONF_B64".to_string(), b64(&conf));
    }
    let ssh = is_ssh_url(&spec.repo_url);
    let auth = match (&spec.git_credentials_path, ssh) {
        (None, _) => "none",
        (Some(_), true) => "ssh",
        (Some(_), false) => {
            let host = https_host(&spec.repo_url).ok_or_else(|| RenderError::InvalidField {
                field: "spec.repo_url".into(),
                value: spec.repo_url.clone(),
                allowed: "an https:// URL with a DNS name or IP address host (or an SSH URL) when git_credentials_path is set: credentials are never sent over http:// or git://",
            })?;
            env.insert("JF_GIT_HOST_B64".to_string(), b64(host));
            "https"
        }
    };
    env.insert("JF_GIT_AUTH".to_string(), auth.to_string());

    let mut task = tool_task(cfg, Tool::Buildah, "build", BUILD_SCRIPT, env);
    if let Some(path) = &spec.git_credentials_path {
        if ssh {
            task.templates
                .push(file_template("git_ssh_key", path, "ssh_key"));
        } else {
            for field in ["username", "password"] {
                task.templates.push(value_file_template(
                    &format!("secrets/git_{field}"),
                    path,
                    field,
                ));
            }
        }
        ensure_vault(&mut task, &req.metadata.namespace, cfg, &[]);
    }
    add_registry_credentials(&mut task, req, cfg)?;
    add_build_secrets(&mut task, req, cfg);
    Ok(RenderedTask {
        task,
        group_constraints: Vec::new(),
    })
}

/// The layer cache's environment of a buildah task (`raw_exec` with `build.cache` only):
/// `JF_CACHE_ROOT` (operator configuration) and `JF_CACHE_NS_B64` (the request's namespace,
/// checked as a DNS label here and again by `jf_cache_open`). Returns whether the cache is on.
///
/// Errors: [`RenderError::InvalidField`] for a namespace that is not a DNS label.
pub(crate) fn cache_env(
    env: &mut BTreeMap<String, String>,
    req: &BuildRequest,
    cfg: &RenderConfig,
) -> Result<bool, RenderError> {
    let (Some(cache), Profile::RawExec) = (&cfg.build_cache, cfg.profile) else {
        return Ok(false);
    };
    let ns = &req.metadata.namespace;
    if jobforge_schema::grammar::dns_label(ns).is_err() {
        return Err(RenderError::InvalidField {
            field: "metadata.namespace".into(),
            value: ns.clone(),
            allowed: "a DNS label (it names the namespace's layer cache directory)",
        });
    }
    env.insert("JF_CACHE_ROOT".into(), cache.root.clone());
    env.insert("JF_CACHE_NS_B64".into(), b64(ns));
    Ok(true)
}

/// One base64 word per `KEY=VALUE` entry, space-separated (see the module docs).
fn kv_words(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| b64(&format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The build options of the spec as the script's environment (see the module docs).
fn build_options(env: &mut BTreeMap<String, String>, req: &BuildRequest) {
    let spec = &req.spec;
    env.insert("JF_BUILD_ARGS".into(), kv_words(&spec.build_args));
    env.insert("JF_LABELS".into(), kv_words(&spec.image_labels));
    env.insert("JF_ANNOTATIONS".into(), kv_words(&spec.image_annotations));
    env.insert(
        "JF_TARGET_B64".into(),
        b64(spec.target.as_deref().unwrap_or_default()),
    );
    env.insert(
        "JF_SUBMODULES".into(),
        if spec.submodules() { "1" } else { "0" }.into(),
    );
    env.insert(
        "JF_SECRET_IDS".into(),
        spec.build_secrets
            .iter()
            .map(|s| b64(&s.id))
            .collect::<Vec<_>>()
            .join(" "),
    );
}

/// The Vault templates of the build secrets (`secrets/build_secret_<i>`, 0600, byte for byte)
/// and of the pull credentials (`secrets/pull_username`, `secrets/pull_password`, with
/// `JF_PULL_AUTH=1` and `JF_PULL_HOST_B64`), and the Vault block when any is present.
fn add_build_secrets(
    task: &mut crate::nomad::job_spec::Task,
    req: &BuildRequest,
    cfg: &RenderConfig,
) {
    let spec = &req.spec;
    for (i, sec) in spec.build_secrets.iter().enumerate() {
        task.templates.push(value_file_template(
            &format!("secrets/build_secret_{i}"),
            &sec.vault_path,
            &sec.field,
        ));
    }
    match (&spec.pull_registry, &spec.pull_credentials_path) {
        (Some(host), Some(path)) => {
            for field in ["username", "password"] {
                task.templates.push(value_file_template(
                    &format!("secrets/pull_{field}"),
                    path,
                    field,
                ));
            }
            task.env.insert("JF_PULL_AUTH".into(), "1".into());
            task.env.insert("JF_PULL_HOST_B64".into(), b64(host));
            ensure_vault(task, &req.metadata.namespace, cfg, &[]);
        }
        _ => {
            task.env.insert("JF_PULL_AUTH".into(), "0".into());
        }
    }
    if !spec.build_secrets.is_empty() {
        ensure_vault(task, &req.metadata.namespace, cfg, &[]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jobforge_schema::PipelinePhase;

    #[test]
    fn ssh_and_scp_like_urls_use_ssh_transport() {
        assert!(is_ssh_url("ssh://git@host/x.git"));
        assert!(is_ssh_url("git@github.com:org/repo.git"));
        assert!(!is_ssh_url("https://host/x.git"));
        assert!(!is_ssh_url("file:///tmp/repo"));
        assert!(!is_ssh_url("/tmp/repo:x"));
    }

    #[test]
    fn https_host_is_the_authority_without_userinfo_and_only_for_https() {
        assert_eq!(
            https_host("https://git.example.com/a.git"),
            Some("git.example.com")
        );
        assert_eq!(
            https_host("https://u@127.0.0.1:8443/a.git"),
            Some("127.0.0.1:8443")
        );
        assert_eq!(https_host("https://[::1]:8443/a"), Some("[::1]:8443"));
        assert_eq!(https_host("https://[::1]/a"), Some("[::1]"));
        for bad in [
            "http://git.example.com/a.git",
            "git://git.example.com/a.git",
            "https://",
            "https://h:x/a",
            "https://h:/a",
            "https://h${VAULT_TOKEN}/a",
            "https://a b/c",
            "https://[::1]x/a",
            "file:///tmp/a",
        ] {
            assert_eq!(https_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_layer_cache_is_the_namespace_s_on_raw_exec_only() {
        let mut r = crate::jobspec::snapshot_tests::minimal();
        r.metadata.namespace = "team-a".into();
        let mut cfg = RenderConfig {
            build_cache: Some(crate::jobspec::BuildCache {
                root: "/var/lib/jf".into(),
                max_size_mb: 100,
            }),
            ..RenderConfig::default()
        };
        let env = build_task(&r, 1, 1, &cfg).unwrap().task.env;
        assert_eq!(env["JF_CACHE_ROOT"], "/var/lib/jf");
        assert_eq!(env["JF_CACHE_NS_B64"], b64("team-a"));
        assert_eq!(env["JF_CACHE_MAX_MB"], "100");
        assert_eq!(env["JF_STORAGE_DRIVER"], "auto");
        // A namespace that is not a DNS label never names a directory.
        r.metadata.namespace = "../team-b".into();
        let err = build_task(&r, 1, 1, &cfg).err();
        assert!(
            matches!(&err, Some(RenderError::InvalidField { field, .. }) if field == "metadata.namespace"),
            "{err:?}"
        );
        // The docker profile keeps per-allocation storage, and vfs for `auto`.
        r.metadata.namespace = "team-a".into();
        cfg.profile = Profile::Docker;
        let env = build_task(&r, 1, 1, &cfg).unwrap().task.env;
        assert!(!env.contains_key("JF_CACHE_ROOT"), "{env:?}");
        assert_eq!(env["JF_STORAGE_DRIVER"], "vfs");
        assert_eq!(env["STORAGE_DRIVER"], "vfs");
    }

    /// The test phase gets the same cache environment as the build (raw_exec only), and the
    /// test and publish phases read the temporary image by the build's digest once it is known.
    #[test]
    fn the_test_phase_uses_the_namespace_s_cache_and_the_build_s_digest() {
        use crate::jobspec::{render_built, temp_image_ref};
        let mut r = crate::jobspec::snapshot_tests::minimal();
        r.spec.test = Some(jobforge_schema::TestSpec {
            commands: vec!["true".into()],
            ..Default::default()
        });
        let mut cfg = RenderConfig {
            build_cache: Some(crate::jobspec::BuildCache {
                root: "/var/lib/jf".into(),
                max_size_mb: 100,
            }),
            ..RenderConfig::default()
        };
        let digest = format!("sha256:{}", "ab".repeat(32));
        let env = |r: &BuildRequest, phase, built: Option<&str>, cfg: &RenderConfig| {
            render_built(r, 3, 1, phase, built, cfg)
                .unwrap()
                .task_groups[0]
                .tasks[0]
                .env
                .clone()
        };
        let test = env(&r, PipelinePhase::Test, Some(&digest), &cfg);
        assert_eq!(test["JF_CACHE_ROOT"], "/var/lib/jf");
        assert_eq!(test["JF_CACHE_NS_B64"], b64("team-a"));
        assert!(!test.contains_key("JF_CACHE_MAX_MB"), "only builds prune");
        let pinned =
            format!("registry.internal:5000/team-a/jobforge-tmp/myapp/team-a/myapp-42@{digest}");
        assert_eq!(test["JF_TEMP_IMAGE_B64"], b64(&pinned));
        let publish = env(&r, PipelinePhase::Publish, Some(&digest), &cfg);
        assert_eq!(publish["JF_TEMP_IMAGE_B64"], b64(&pinned));
        assert!(!publish.contains_key("JF_CACHE_ROOT"), "{publish:?}");
        // Without a digest (or with anything that is not one), the temporary tag as before.
        let tag = temp_image(&r, 3, 1, &cfg);
        assert!(tag.ends_with(":myapp-42-3-a1"), "{tag}");
        for built in [None, Some("sha256:AB"), Some("md5:00"), Some("sha256:../x")] {
            assert_eq!(temp_image_ref(&r, 3, 1, built, &cfg), tag, "{built:?}");
            assert_eq!(
                env(&r, PipelinePhase::Test, built, &cfg)["JF_TEMP_IMAGE_B64"],
                b64(&tag)
            );
        }
        // The build ignores the digest.
        assert_eq!(
            env(&r, PipelinePhase::Build, Some(&digest), &cfg),
            env(&r, PipelinePhase::Build, None, &cfg)
        );
        // A namespace that is not a DNS label never names a directory, in the test phase either.
        r.metadata.namespace = "../team-b".into();
        let err = render_built(&r, 3, 1, PipelinePhase::Test, None, &cfg).err();
        assert!(
            matches!(&err, Some(RenderError::InvalidField { field, .. }) if field == "metadata.namespace"),
            "{err:?}"
        );
        // The docker profile has no cache: its test phase pulls.
        r.metadata.namespace = "team-a".into();
        cfg.profile = Profile::Docker;
        r.spec.test.as_mut().unwrap().entry_point = true;
        let test = env(&r, PipelinePhase::Test, Some(&digest), &cfg);
        assert!(!test.contains_key("JF_CACHE_ROOT"), "{test:?}");
    }

    #[test]
    fn credentials_over_http_or_git_are_refused() {
        let mut r = crate::jobspec::snapshot_tests::minimal();
        r.spec.git_credentials_path = Some("secret/data/jobforge/team-a/git".into());
        for url in [
            "http://git.example.com/a.git",
            "git://git.example.com/a.git",
        ] {
            r.spec.repo_url = url.into();
            let err = build_task(&r, 1, 1, &RenderConfig::default()).err();
            assert!(
                matches!(&err, Some(RenderError::InvalidField { field, .. }) if field == "spec.repo_url"),
                "{url}: {err:?}"
            );
        }
    }
}
