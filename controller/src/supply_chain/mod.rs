//! Supply chain (issue 20): after publish, the controller signs the published image in cosign's
//! format with a Vault transit key and attaches SLSA provenance v1; `docs/supply-chain.md` says
//! who signs and why.
//!
//! Who signs: the controller, never a build, test or publish task. The task tokens of a
//! namespace get that namespace's policy only (`examples/deploy/vault-policy-namespace.hcl`), which
//! grants nothing under `transit/`; the controller's token may `update` `transit/sign/<key>`.
//! Before signing, the controller resolves every published tag in the registry and requires
//! each to name exactly the digest publish reported (`status.phases.publish.digest`): a tag
//! moved by anyone else, or a digest publish did not report, is never signed.
//!
//! Steps ([`sign_published`]): resolve tags → the base images (every stage's from
//! `status.source.baseImages`, which the build script read from the build's own storage, plus
//! the manifest's base-image annotations of the last stage) → sign the simple signing payload → push
//! `sha256-<hex>.sig` → build the provenance statement, sign its DSSE PAE → push
//! `sha256-<hex>.att`. Every push is idempotent (same tag, new content allowed), so a retried
//! reconcile signs again without harm.

pub mod formats;
pub mod verify;

pub use oci_client::Reference;
pub use oci_client::secrets::RegistryAuth as Auth;

use std::collections::BTreeMap;

use base64::Engine;
use jobforge_schema::{BuildRequest, BuildStatus, PipelinePhase};
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::vault::{VaultChecker, VaultError};
use formats::{
    BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION, DSSE_MEDIA_TYPE, IN_TOTO_PAYLOAD_TYPE,
    ProvenanceInput, SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE, SLSA_PROVENANCE_V1,
};

/// The signing configuration (`signing` in `<prefix>/config`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SigningConfig {
    /// Mount of the transit engine (default `transit`).
    pub transit_mount: String,
    /// The transit key signing every namespace without an override.
    pub transit_key: String,
    /// Namespace → transit key overrides.
    pub namespace_keys: BTreeMap<String, String>,
    /// SLSA `runDetails.builder.id`.
    pub builder_id: String,
}

impl SigningConfig {
    /// The key that signs images of `namespace`.
    pub fn key_for(&self, namespace: &str) -> &str {
        self.namespace_keys
            .get(namespace)
            .map_or(self.transit_key.as_str(), String::as_str)
    }
}

/// Where the signature and the attestation were pushed (`<repo>:<tag>@<manifest digest>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The `.sig` image.
    pub signature: String,
    /// The `.att` image.
    pub provenance: String,
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Vault failed (transient when [`VaultError::is_transient`]).
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The registry failed or answered something unexpected.
    #[error("registry: {0}")]
    Registry(String),
    /// What is published is not what publish reported, or the status lacks what signing needs.
    /// Never retried: nothing is signed.
    #[error("{0}")]
    Refused(String),
}

impl SignError {
    /// Whether a retry may succeed (Vault or registry unreachable, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            SignError::Vault(e) => e.is_transient(),
            SignError::Registry(m) => {
                m.contains("error sending request") || m.contains("connect") || m.contains(" 5")
            }
            SignError::Refused(_) => false,
        }
    }
}

fn reg_err(what: &str, e: impl std::fmt::Display) -> SignError {
    SignError::Registry(format!("{what}: {e}"))
}

/// The registry client: plain HTTP when the operator turned registry TLS verification off (the
/// dev stack's loopback registry), as the task scripts do with `--tls-verify=false`.
fn client(tls_verify: bool) -> Client {
    Client::new(ClientConfig {
        protocol: if tls_verify {
            ClientProtocol::Https
        } else {
            ClientProtocol::Http
        },
        ..ClientConfig::default()
    })
}

/// Registry credentials from `spec.registry_credentials_path` (fields `username`, `password`),
/// read with the controller's Vault token; anonymous when the spec names none.
async fn registry_auth(
    vault: &VaultChecker,
    req: &BuildRequest,
) -> Result<RegistryAuth, SignError> {
    let Some(path) = &req.spec.registry_credentials_path else {
        return Ok(RegistryAuth::Anonymous);
    };
    let secret = vault
        .read_secret(path)
        .await?
        .ok_or_else(|| SignError::Refused(format!("registry credentials {path} not found")))?;
    match (secret.get("username"), secret.get("password")) {
        (Some(u), Some(p)) => Ok(RegistryAuth::Basic(u.clone(), p.clone())),
        _ => Err(SignError::Refused(format!(
            "registry credentials {path} lack username/password"
        ))),
    }
}

/// Strips `vault:v<n>:` from a transit signature; the rest is the base64 DER signature.
pub fn transit_signature_b64(sig: &str) -> Result<String, SignError> {
    let rest = sig
        .strip_prefix("vault:v")
        .and_then(|r| r.split_once(':'))
        .map(|(_, b64)| b64.to_string())
        .ok_or_else(|| SignError::Refused(format!("unexpected transit signature {sig:?}")))?;
    base64::engine::general_purpose::STANDARD
        .decode(&rest)
        .map_err(|e| SignError::Refused(format!("transit signature is not base64: {e}")))?;
    Ok(rest)
}

/// Pushes an artifact image (`config`, one `layer`) under `tag` of `repo`; returns its
/// manifest digest.
async fn push_artifact(
    oci: &Client,
    auth: &RegistryAuth,
    repo: &str,
    tag: &str,
    layer: Vec<u8>,
    layer_media_type: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<String, SignError> {
    let reference: Reference = format!("{repo}:{tag}")
        .parse()
        .map_err(|e| reg_err("reference", e))?;
    oci.store_auth_if_needed(reference.resolve_registry(), auth)
        .await;
    let layer_digest = formats::sha256_digest(&layer);
    let config = formats::artifact_config(&layer_digest);
    let manifest = formats::artifact_manifest(&config, &layer, layer_media_type, annotations);
    oci.push_blob(&reference, layer, &layer_digest)
        .await
        .map_err(|e| reg_err("pushing the layer", e))?;
    let config_digest = formats::sha256_digest(&config);
    oci.push_blob(&reference, config, &config_digest)
        .await
        .map_err(|e| reg_err("pushing the config", e))?;
    let digest = formats::sha256_digest(&manifest);
    oci.push_manifest_raw(
        &reference,
        manifest,
        http::HeaderValue::from_static(formats::OCI_MANIFEST_MEDIA_TYPE),
    )
    .await
    .map_err(|e| reg_err("pushing the manifest", e))?;
    Ok(digest)
}

/// The base images of the provenance: every stage's, as the build script read them from the
/// build's own storage after the build (`status.source.baseImages`), then the last stage's from
/// buildah's manifest annotations when that pair is not already listed. Both are kept when they
/// disagree (a tag moved in a shared storage between the build and the script's reading):
/// a dependency is never hidden.
fn base_images(status: &BuildStatus, annotated: Option<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = status
        .source
        .iter()
        .flat_map(|s| &s.base_images)
        .map(|b| (b.name.clone(), b.digest.clone()))
        .collect();
    // buildah writes both annotations empty for `FROM scratch` (and the cache's last commit
    // removes them): no base image then.
    if let Some(pair) = annotated
        && !pair.0.is_empty()
        && !pair.1.is_empty()
        && !out.contains(&pair)
    {
        out.push(pair);
    }
    out
}

/// Everything [`sign_published`] reads besides the connections.
#[derive(Debug)]
pub struct Published<'a> {
    /// The request.
    pub request: &'a BuildRequest,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The generation published.
    pub generation: u64,
    /// The status that says Succeeded, with `image` and `source`.
    pub status: &'a BuildStatus,
}

/// Signs the image `p.status.image` names and attaches its provenance (module docs).
///
/// Errors: [`SignError::Refused`] when a tag does not resolve to the reported digest (nothing
/// is signed) or the status lacks the digest/commit; Vault and registry failures otherwise.
pub async fn sign_published(
    vault: &VaultChecker,
    cfg: &SigningConfig,
    tls_verify: bool,
    p: &Published<'_>,
) -> Result<Signed, SignError> {
    let spec = &p.request.spec;
    let image = p
        .status
        .image
        .as_ref()
        .ok_or_else(|| SignError::Refused("no published image".into()))?;
    // The digest publish reported, never one derived from elsewhere.
    let digest = p
        .status
        .phases
        .get(PipelinePhase::Publish)
        .and_then(|r| r.digest.clone())
        .filter(|d| Some(d) == image.digest.as_ref())
        .ok_or_else(|| {
            SignError::Refused("publish reported no digest; the image is not signed".into())
        })?;
    let commit = p
        .status
        .source
        .as_ref()
        .map(|s| s.commit_sha.clone())
        .ok_or_else(|| SignError::Refused("no commit SHA recorded".into()))?;
    let repo = format!(
        "{}/{}",
        spec.registry_url.trim_end_matches('/'),
        spec.image_name
    );
    let oci = client(tls_verify);
    let auth = registry_auth(vault, p.request).await?;
    for tag in &image.tags {
        let r: Reference = format!("{repo}:{tag}")
            .parse()
            .map_err(|e| reg_err("reference", e))?;
        let got = oci
            .fetch_manifest_digest(&r, &auth)
            .await
            .map_err(|e| reg_err(&format!("resolving {repo}:{tag}"), e))?;
        if got != digest {
            return Err(SignError::Refused(format!(
                "{repo}:{tag} resolves to {got}, not the digest publish reported ({digest}); not signing"
            )));
        }
    }
    // Base images as buildah recorded them in the manifest at build time.
    let by_digest: Reference = format!("{repo}@{digest}")
        .parse()
        .map_err(|e| reg_err("reference", e))?;
    let (raw, _) = oci
        .pull_manifest_raw(
            &by_digest,
            &auth,
            &[
                formats::OCI_MANIFEST_MEDIA_TYPE,
                "application/vnd.docker.distribution.manifest.v2+json",
            ],
        )
        .await
        .map_err(|e| reg_err("reading the manifest", e))?;
    if formats::sha256_digest(&raw) != digest {
        return Err(SignError::Refused(
            "the registry served a manifest whose digest differs from the one requested".into(),
        ));
    }
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    let ann = |k: &str| {
        manifest
            .pointer(&format!("/annotations/{}", k.replace('/', "~1")))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let base_images = base_images(
        p.status,
        ann(BASE_NAME_ANNOTATION).zip(ann(BASE_DIGEST_ANNOTATION)),
    );

    let key = cfg.key_for(p.namespace);
    let mount = cfg.transit_mount.as_str();
    // 1. The signature.
    let payload = formats::simple_signing_payload(&repo, &digest);
    let sig = transit_signature_b64(&vault.transit_sign(mount, key, &payload).await?)?;
    let sig_tag = formats::signature_tag(&digest)
        .ok_or_else(|| SignError::Refused(format!("unsupported digest {digest}")))?;
    let sig_digest = push_artifact(
        &oci,
        &auth,
        &repo,
        &sig_tag,
        payload,
        SIMPLESIGNING_MEDIA_TYPE,
        &BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), sig)]),
    )
    .await?;

    // 2. The provenance.
    let finished = p
        .status
        .phases
        .get(PipelinePhase::Publish)
        .and_then(|r| r.finished_at);
    let statement = formats::provenance_statement(&ProvenanceInput {
        repository: repo.clone(),
        digest: digest.clone(),
        spec: serde_json::to_value(spec).unwrap_or_default(),
        repo_url: spec.repo_url.clone(),
        git_ref: spec.git_ref.clone(),
        commit_sha: commit,
        base_images,
        builder_id: cfg.builder_id.clone(),
        invocation_id: format!(
            "{}/{}/{}/{}",
            p.namespace,
            p.name,
            p.generation,
            p.status.attempt.max(1)
        ),
        started_on: p.status.start_time,
        finished_on: finished.or(p.status.completion_time),
    });
    let pae = formats::pae(IN_TOTO_PAYLOAD_TYPE, &statement);
    let dsse_sig = transit_signature_b64(&vault.transit_sign(mount, key, &pae).await?)?;
    let envelope = formats::dsse_envelope(&statement, &dsse_sig);
    let att_tag = formats::attestation_tag(&digest)
        .ok_or_else(|| SignError::Refused(format!("unsupported digest {digest}")))?;
    let att_digest = push_artifact(
        &oci,
        &auth,
        &repo,
        &att_tag,
        envelope,
        DSSE_MEDIA_TYPE,
        &BTreeMap::from([
            ("predicateType".to_string(), SLSA_PROVENANCE_V1.to_string()),
            (SIGNATURE_ANNOTATION.to_string(), String::new()),
        ]),
    )
    .await?;
    Ok(Signed {
        signature: format!("{repo}:{sig_tag}@{sig_digest}"),
        provenance: format!("{repo}:{att_tag}@{att_digest}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn transit_prefix_is_stripped_and_the_rest_must_be_base64() {
        assert_eq!(transit_signature_b64("vault:v1:TUVV").unwrap(), "TUVV");
        assert_eq!(transit_signature_b64("vault:v12:TUVV").unwrap(), "TUVV");
        assert!(transit_signature_b64("TUVV").is_err());
        assert!(transit_signature_b64("vault:v1:%%").is_err());
    }

    #[test]
    fn every_recorded_base_image_is_kept_and_the_annotation_added_only_when_new() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let mut st = BuildStatus {
            source: Some(jobforge_schema::SourceStatus {
                commit_sha: "e".repeat(40),
                base_images: vec![
                    jobforge_schema::BaseImage {
                        name: "r/one:1".into(),
                        digest: d('a'),
                    },
                    jobforge_schema::BaseImage {
                        name: "r/two:1".into(),
                        digest: d('b'),
                    },
                ],
            }),
            ..BuildStatus::default()
        };
        let two = ("r/two:1".to_string(), d('b'));
        assert_eq!(base_images(&st, Some(two.clone())).len(), 2);
        let moved = ("r/two:1".to_string(), d('c'));
        assert_eq!(base_images(&st, Some(moved.clone()))[2], moved);
        st.source = None;
        assert_eq!(base_images(&st, Some(two.clone())), vec![two]);
    }

    #[test]
    fn a_namespace_override_picks_its_own_key() {
        let c = SigningConfig {
            transit_mount: "transit".into(),
            transit_key: "jobforge".into(),
            namespace_keys: BTreeMap::from([("team-a".into(), "team-a-key".into())]),
            builder_id: "b".into(),
        };
        assert_eq!(c.key_for("team-a"), "team-a-key");
        assert_eq!(c.key_for("team-b"), "jobforge");
    }
}
