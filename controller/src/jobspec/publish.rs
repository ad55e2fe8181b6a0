//! The publish phase: copy the temporary image to every final tag, record the digest, delete the
//! temporary tag.
//!
//! Environment of [`PUBLISH_SCRIPT`] (request values base64-encoded, see [`super`]):
//! `JF_TEMP_IMAGE_B64` (the temporary image by the digest the build reported, when the
//! controller knows it: [`super::temp_image_ref`]; then the published manifest is exactly the
//! one built and tested), `JF_FINAL_REPO_B64` (`<registry_url>/<image_name>`), `JF_IMAGE_TAGS_B64`
//! (one tag per line; `latest` when the request names none) plus the prelude's. Credentials:
//! `skopeo login --password-stdin` (from `secrets/registry_password`) for `registry_url`'s host
//! only, into an authfile in `secrets/`, then `--authfile` for every skopeo command (never
//! `--creds` in argv).
//! The digest it reports is the one the temporary image is pinned by (`--preserve-digests` makes
//! `skopeo copy` fail rather than publish another manifest, and a pull by digest is verified by
//! the client); only an unpinned temporary image (`jobforge render` without a build's digest) is
//! asked for its digest with `skopeo inspect`, one registry round trip a pinned one saves.
//! A failed delete of the temporary tag (a registry with deletes disabled) is a warning, not a
//! failure: the final tags are already published.

use std::collections::BTreeMap;

use jobforge_schema::BuildRequest;

use super::profiles::{Tool, add_registry_credentials, tool_task};
use super::{RenderConfig, RenderError, RenderedTask, b64, final_repository, temp_image_ref};

/// The publish task's fixed script (run as `/bin/sh -c PUBLISH_SCRIPT jobforge-publish`).
/// The `{{.Digest}}` Go template passed to `skopeo inspect` is this constant's text, never input.
pub const PUBLISH_SCRIPT: &str = concat!(
    sh_prelude!(),
    r#"jf_dec JF_TEMP_IMAGE_B64
jf_image=$jf_v
jf_dec JF_FINAL_REPO_B64
jf_repo=$jf_v
jf_dec JF_IMAGE_TAGS_B64
jf_tags=$jf_v
jf_login skopeo
jf_n=0
while IFS= read -r jf_tag; do
  if [ -n "$jf_tag" ]; then
    printf 'jobforge: publishing %s:%s\n' "$jf_repo" "$jf_tag"
    skopeo copy --authfile "$jf_auth" --src-tls-verify="$JF_TLS_VERIFY" --dest-tls-verify="$JF_TLS_VERIFY" --preserve-digests -- "docker://$jf_image" "docker://$jf_repo:$jf_tag"
    jf_n=$((jf_n + 1))
  fi
done <<JF_EOF
$jf_tags
JF_EOF
if [ "$jf_n" -eq 0 ]; then
  jf_fail PublishFailed "no image tags to publish"
fi
case "$jf_image" in
  *@sha256:*) jf_digest=${jf_image##*@} ;;
  *) jf_digest=$(skopeo inspect --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" --format '{{.Digest}}' -- "docker://$jf_image") ;;
esac
if ! skopeo delete --authfile "$jf_auth" --tls-verify="$JF_TLS_VERIFY" -- "docker://$jf_image"; then
  echo "jobforge: warning: could not delete the temporary image; the registry may not allow deletes"
fi
printf '::jobforge::digest=%s\n' "$jf_digest"
"#
);

/// OCI distribution tag syntax: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok && t.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

pub(crate) fn publish_task(
    req: &BuildRequest,
    generation: u64,
    attempt: u32,
    built: Option<&str>,
    cfg: &RenderConfig,
) -> Result<RenderedTask, RenderError> {
    let tags = req.spec.effective_tags();
    for t in &tags {
        if !is_valid_tag(t) {
            return Err(RenderError::InvalidField {
                field: "spec.image_tags".into(),
                value: t.clone(),
                allowed: "tags matching [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
            });
        }
    }
    let mut env = BTreeMap::new();
    env.insert(
        "JF_TEMP_IMAGE_B64".to_string(),
        b64(&temp_image_ref(req, generation, attempt, built, cfg)),
    );
    env.insert("JF_FINAL_REPO_B64".to_string(), b64(&final_repository(req)));
    env.insert("JF_IMAGE_TAGS_B64".to_string(), b64(&tags.join("\n")));
    let mut task = tool_task(cfg, Tool::Skopeo, "publish", PUBLISH_SCRIPT, env);
    add_registry_credentials(&mut task, req, cfg)?;
    Ok(RenderedTask {
        task,
        group_constraints: Vec::new(),
    })
}
