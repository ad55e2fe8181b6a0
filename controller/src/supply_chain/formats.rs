//! The bytes of a signature and an attestation, as cosign writes and reads them. Pure.
//!
//! - Simple signing payload (containers/image "signature" format as cosign uses it,
//!   sigstore/cosign `pkg/cosign/payload`): `{"critical":{"identity":{"docker-reference":R},
//!   "image":{"docker-manifest-digest":D},"type":"cosign container image signature"},
//!   "optional":null}`. The signature is ECDSA over SHA-256 of exactly these bytes.
//! - Signature image: tag `sha256-<hex>.sig` in the image's repository, an OCI image manifest
//!   with one layer (the payload, media type [`SIMPLESIGNING_MEDIA_TYPE`]) annotated
//!   [`SIGNATURE_ANNOTATION`] = base64 of the DER signature (cosign `pkg/oci/static`,
//!   `pkg/oci/remote`).
//! - Attestation: an in-toto Statement v1 (<https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>)
//!   with a SLSA provenance v1 predicate (<https://slsa.dev/spec/v1.0/provenance>), in a DSSE
//!   envelope (<https://github.com/secure-systems-lab/dsse/blob/master/envelope.md>) whose
//!   signature is over the pre-authentication encoding [`pae`]; tag `sha256-<hex>.att`, one
//!   layer of media type [`DSSE_MEDIA_TYPE`] annotated `predicateType`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Media type of the simple signing payload layer.
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Media type of a DSSE envelope layer (cosign attestations).
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// The layer annotation holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1 `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1 predicate type.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// jobforge's SLSA `buildType`: the build a BuildRequest describes (clone, `buildah bud
/// --timestamp <commit time>`, push; `externalParameters` = the request's spec).
pub const BUILD_TYPE: &str = "https://example.invalid/jobforge/build-types/buildrequest/v1";
/// The config blob media type of signature and attestation images (as cosign writes them).
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Annotation buildah writes with the last stage's base image name.
pub const BASE_NAME_ANNOTATION: &str = "org.opencontainers.image.base.name";
/// Annotation buildah writes with the last stage's base image manifest digest.
pub const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";

/// `sha256-<hex>.sig` for `sha256:<hex>` (`None` for another digest shape).
pub fn signature_tag(digest: &str) -> Option<String> {
    hex_of(digest).map(|h| format!("sha256-{h}.sig"))
}

/// `sha256-<hex>.att` for `sha256:<hex>`.
pub fn attestation_tag(digest: &str) -> Option<String> {
    hex_of(digest).map(|h| format!("sha256-{h}.att"))
}

fn hex_of(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The simple signing payload for `docker_reference` (the repository, without tag or digest)
/// and `digest`.
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// DSSE's pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(body) SP body`,
/// lengths in ASCII decimal bytes.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope around `payload` with one signature (base64 DER, no key id).
pub fn dsse_envelope(payload: &[u8], signature_b64: &str) -> Vec<u8> {
    let v = json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": STANDARD.encode(payload),
        "signatures": [{"keyid": "", "sig": signature_b64}],
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// What the provenance states; every field is known to the controller after publish.
#[derive(Debug, Clone)]
pub struct ProvenanceInput {
    /// The image repository (`registry/path/name`), the statement's subject name.
    pub repository: String,
    /// The published manifest digest `sha256:<hex>`.
    pub digest: String,
    /// The request's spec as stored (paths to secrets only, never a value).
    pub spec: Value,
    /// `spec.repo_url`.
    pub repo_url: String,
    /// `spec.git_ref`.
    pub git_ref: String,
    /// The commit the build resolved `git_ref` to.
    pub commit_sha: String,
    /// Base images and their manifest digests, as recorded at build time.
    pub base_images: Vec<(String, String)>,
    /// The operator-configured builder id.
    pub builder_id: String,
    /// `<namespace>/<name>/<generation>/<attempt>`.
    pub invocation_id: String,
    /// When the pipeline started.
    pub started_on: Option<DateTime<Utc>>,
    /// When publish finished.
    pub finished_on: Option<DateTime<Utc>>,
}

fn time(t: &Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(SecondsFormat::Secs, true))
    })
}

/// The in-toto Statement v1 with its SLSA provenance v1 predicate, as JSON bytes.
pub fn provenance_statement(p: &ProvenanceInput) -> Vec<u8> {
    let hex = p.digest.strip_prefix("sha256:").unwrap_or(&p.digest);
    let mut deps = vec![json!({
        "uri": format!("git+{}", p.repo_url),
        "digest": {"gitCommit": p.commit_sha},
        "annotations": {"ref": p.git_ref},
    })];
    for (name, digest) in &p.base_images {
        let (alg, value) = digest.split_once(':').unwrap_or(("sha256", digest));
        deps.push(json!({
            "uri": format!("oci://{name}"),
            "digest": { alg: value },
        }));
    }
    let mut metadata = serde_json::Map::new();
    metadata.insert("invocationId".into(), json!(p.invocation_id));
    if p.started_on.is_some() {
        metadata.insert("startedOn".into(), time(&p.started_on));
    }
    if p.finished_on.is_some() {
        metadata.insert("finishedOn".into(), time(&p.finished_on));
    }
    let v = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": p.repository, "digest": {"sha256": hex}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": p.spec,
                "internalParameters": {},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": p.builder_id},
                "metadata": metadata,
            },
        },
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The config blob of a signature or attestation image (cosign's shape: one layer whose
/// diff id is the layer blob's digest).
pub fn artifact_config(layer_digest: &str) -> Vec<u8> {
    let v = json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// An OCI image manifest with `config` and one `layer` blob of `layer_media_type` carrying
/// `annotations`, as JSON bytes (the bytes pushed, so their digest is the manifest's).
pub fn artifact_manifest(
    config: &[u8],
    layer: &[u8],
    layer_media_type: &str,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": OCI_CONFIG_MEDIA_TYPE,
            "size": config.len(),
            "digest": sha256_digest(config),
        },
        "layers": [{
            "mediaType": layer_media_type,
            "size": layer.len(),
            "digest": sha256_digest(layer),
            "annotations": annotations,
        }],
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn tags_follow_cosigns_naming() {
        assert_eq!(
            signature_tag(D).unwrap(),
            "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"
        );
        assert!(attestation_tag(D).unwrap().ends_with(".att"));
        assert_eq!(signature_tag("sha512:ab"), None);
    }

    #[test]
    fn simple_signing_payload_is_cosigns_shape() {
        let p: Value =
            serde_json::from_slice(&simple_signing_payload("reg:5000/team/app", D)).unwrap();
        assert_eq!(
            p["critical"]["identity"]["docker-reference"],
            "reg:5000/team/app"
        );
        assert_eq!(p["critical"]["image"]["docker-manifest-digest"], D);
        assert_eq!(p["critical"]["type"], "cosign container image signature");
        assert!(p["optional"].is_null());
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // The DSSE spec's test vector: type "http://example.com/HelloWorld", body "hello world".
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn provenance_names_commit_base_images_request_and_builder() {
        let s = provenance_statement(&ProvenanceInput {
            repository: "reg/app".into(),
            digest: D.into(),
            spec: json!({"repo_url": "https://git/x.git", "git_credentials_path": "secret/data/jobforge/t/git"}),
            repo_url: "https://git/x.git".into(),
            git_ref: "main".into(),
            commit_sha: "a".repeat(40),
            base_images: vec![("docker.io/library/alpine:3".into(), D.into())],
            builder_id: "https://jobforge.example/controller".into(),
            invocation_id: "team/app/12/1".into(),
            started_on: None,
            finished_on: None,
        });
        let v: Value = serde_json::from_slice(&s).unwrap();
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["predicateType"], SLSA_PROVENANCE_V1);
        assert_eq!(v["subject"][0]["digest"]["sha256"], &D[7..]);
        let deps = &v["predicate"]["buildDefinition"]["resolvedDependencies"];
        assert_eq!(deps[0]["uri"], "git+https://git/x.git");
        assert_eq!(deps[0]["digest"]["gitCommit"], "a".repeat(40));
        assert_eq!(deps[1]["uri"], "oci://docker.io/library/alpine:3");
        assert_eq!(deps[1]["digest"]["sha256"], &D[7..]);
        assert_eq!(
            v["predicate"]["runDetails"]["metadata"]["invocationId"],
            "team/app/12/1"
        );
    }

    #[test]
    fn manifest_describes_its_blobs() {
        let layer = b"payload";
        let config = artifact_config(&sha256_digest(layer));
        let ann = BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), "c2ln".to_string())]);
        let m: Value = serde_json::from_slice(&artifact_manifest(
            &config,
            layer,
            SIMPLESIGNING_MEDIA_TYPE,
            &ann,
        ))
        .unwrap();
        assert_eq!(m["layers"][0]["digest"], sha256_digest(layer));
        assert_eq!(m["layers"][0]["size"], 7);
        assert_eq!(m["layers"][0]["annotations"][SIGNATURE_ANNOTATION], "c2ln");
        assert_eq!(m["config"]["digest"], sha256_digest(&config));
    }
}
