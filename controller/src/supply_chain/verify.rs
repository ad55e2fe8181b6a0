//! Verification of a signed image (`jobforge verify`): the `.sig` and the `.att` of the image's
//! digest, against an ECDSA P-256 public key (PKIX PEM, as Vault's `transit/keys/<key>` gives
//! it). Both must verify and both must name the digest being verified.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;

use super::formats::{
    self, DSSE_MEDIA_TYPE, SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE, SLSA_PROVENANCE_V1,
    STATEMENT_TYPE,
};

/// Why an image does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The public key or the image reference is malformed.
    #[error("{0}")]
    Input(String),
    /// The registry failed.
    #[error("registry: {0}")]
    Registry(String),
    /// A signature or a payload does not check out.
    #[error("NOT VERIFIED: {0}")]
    Invalid(String),
}

/// What verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The repository (`registry/path/name`).
    pub repository: String,
    /// The manifest digest verified.
    pub digest: String,
    /// The provenance statement (in-toto Statement v1).
    pub statement: Value,
}

fn invalid(m: impl Into<String>) -> VerifyError {
    VerifyError::Invalid(m.into())
}

/// Pulls the one layer of `media_type` of `<repo>:<tag>` with its annotations.
async fn layer(
    oci: &Client,
    auth: &RegistryAuth,
    repo: &str,
    tag: &str,
    media_type: &str,
) -> Result<(Vec<u8>, serde_json::Map<String, Value>), VerifyError> {
    let r: Reference = format!("{repo}:{tag}")
        .parse()
        .map_err(|e| VerifyError::Input(format!("{repo}:{tag}: {e}")))?;
    let (raw, _) = oci
        .pull_manifest_raw(&r, auth, &[formats::OCI_MANIFEST_MEDIA_TYPE])
        .await
        .map_err(|e| VerifyError::Registry(format!("{repo}:{tag}: {e}")))?;
    let m: Value = serde_json::from_slice(&raw)
        .map_err(|e| invalid(format!("{tag}: manifest is not JSON: {e}")))?;
    let layers: Vec<&Value> = m["layers"]
        .as_array()
        .map(|a| a.iter().filter(|l| l["mediaType"] == media_type).collect())
        .unwrap_or_default();
    let [l] = layers.as_slice() else {
        return Err(invalid(format!(
            "{tag}: expected one {media_type} layer, found {}",
            layers.len()
        )));
    };
    let digest = l["digest"].as_str().unwrap_or_default();
    let mut blob = Vec::new();
    oci.pull_blob(&r, digest, &mut blob)
        .await
        .map_err(|e| VerifyError::Registry(format!("{tag} layer: {e}")))?;
    if formats::sha256_digest(&blob) != digest {
        return Err(invalid(format!(
            "{tag}: the layer does not match its digest"
        )));
    }
    Ok((
        blob,
        l["annotations"].as_object().cloned().unwrap_or_default(),
    ))
}

fn check_sig(
    key: &VerifyingKey,
    der_b64: &str,
    data: &[u8],
    what: &str,
) -> Result<(), VerifyError> {
    let der = STANDARD
        .decode(der_b64)
        .map_err(|e| invalid(format!("{what}: signature is not base64: {e}")))?;
    let sig = Signature::from_der(&der)
        .map_err(|e| invalid(format!("{what}: not a DER signature: {e}")))?;
    key.verify(data, &sig).map_err(|_| {
        invalid(format!(
            "{what}: the signature does not verify with this key"
        ))
    })
}

/// Verifies `image` (`registry/repo:tag` or `registry/repo@sha256:...`) against `public_key_pem`.
///
/// Errors: [`VerifyError::Invalid`] when either artifact is missing, malformed, signed by
/// another key or names another digest; [`VerifyError::Registry`] / [`VerifyError::Input`].
pub async fn verify_image(
    image: &str,
    public_key_pem: &str,
    tls_verify: bool,
    auth: &RegistryAuth,
) -> Result<Verified, VerifyError> {
    let key = VerifyingKey::from_public_key_pem(public_key_pem)
        .map_err(|e| VerifyError::Input(format!("the public key is not a P-256 PEM: {e}")))?;
    let r: Reference = image
        .parse()
        .map_err(|e| VerifyError::Input(format!("{image}: {e}")))?;
    let repo = format!("{}/{}", r.registry(), r.repository());
    let oci = super::client(tls_verify);
    let digest = match r.digest() {
        Some(d) => d.to_string(),
        None => oci
            .fetch_manifest_digest(&r, auth)
            .await
            .map_err(|e| VerifyError::Registry(format!("resolving {image}: {e}")))?,
    };
    let sig_tag = formats::signature_tag(&digest)
        .ok_or_else(|| VerifyError::Input(format!("unsupported digest {digest}")))?;
    let (payload, ann) = layer(&oci, auth, &repo, &sig_tag, SIMPLESIGNING_MEDIA_TYPE).await?;
    let sig = ann
        .get(SIGNATURE_ANNOTATION)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{sig_tag}: no {SIGNATURE_ANNOTATION} annotation")))?;
    check_sig(&key, sig, &payload, "signature")?;
    let p: Value = serde_json::from_slice(&payload)
        .map_err(|e| invalid(format!("signature payload is not JSON: {e}")))?;
    if p["critical"]["image"]["docker-manifest-digest"] != digest.as_str() {
        return Err(invalid(format!(
            "the signature is for {}, not {digest}",
            p["critical"]["image"]["docker-manifest-digest"]
        )));
    }
    if p["critical"]["identity"]["docker-reference"] != repo.as_str() {
        return Err(invalid(format!(
            "the signature names {}, not {repo}",
            p["critical"]["identity"]["docker-reference"]
        )));
    }

    let att_tag = formats::attestation_tag(&digest)
        .ok_or_else(|| VerifyError::Input(format!("unsupported digest {digest}")))?;
    let (blob, _) = layer(&oci, auth, &repo, &att_tag, DSSE_MEDIA_TYPE).await?;
    let env: Value =
        serde_json::from_slice(&blob).map_err(|e| invalid(format!("envelope: {e}")))?;
    let body = STANDARD
        .decode(env["payload"].as_str().unwrap_or_default())
        .map_err(|e| invalid(format!("envelope payload is not base64: {e}")))?;
    let ptype = env["payloadType"].as_str().unwrap_or_default();
    let pae = formats::pae(ptype, &body);
    let dsse_sig = env["signatures"][0]["sig"].as_str().unwrap_or_default();
    check_sig(&key, dsse_sig, &pae, "provenance")?;
    let statement: Value =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("statement: {e}")))?;
    let hex = digest.trim_start_matches("sha256:");
    if statement["_type"] != STATEMENT_TYPE
        || statement["predicateType"] != SLSA_PROVENANCE_V1
        || statement["subject"][0]["digest"]["sha256"] != hex
    {
        return Err(invalid(format!(
            "the provenance is not a SLSA v1 statement about {digest}"
        )));
    }
    Ok(Verified {
        repository: repo,
        digest,
        statement,
    })
}

/// One line per fact of the provenance: repository, commit, base images, request, builder,
/// times.
pub fn summary(v: &Verified) -> String {
    let pred = &v.statement["predicate"];
    let def = &pred["buildDefinition"];
    let run = &pred["runDetails"];
    let s = |x: &Value| x.as_str().unwrap_or("-").to_string();
    let mut out = vec![
        format!("image:       {}@{}", v.repository, v.digest),
        "signature:   verified".to_string(),
        "provenance:  verified (SLSA v1)".to_string(),
    ];
    for d in def["resolvedDependencies"].as_array().into_iter().flatten() {
        let uri = s(&d["uri"]);
        if let Some(c) = d["digest"]["gitCommit"].as_str() {
            out.push(format!("source:      {uri} @ {c}"));
        } else if let Some(h) = d["digest"]["sha256"].as_str() {
            out.push(format!("base image:  {uri} @ sha256:{h}"));
        }
    }
    if !out.iter().any(|l| l.starts_with("base image:")) {
        out.push("base image:  none (FROM scratch)".to_string());
    }
    out.push(format!(
        "request:     {}",
        s(&run["metadata"]["invocationId"])
    ));
    out.push(format!("builder:     {}", s(&run["builder"]["id"])));
    out.push(format!("started:     {}", s(&run["metadata"]["startedOn"])));
    out.push(format!(
        "finished:    {}",
        s(&run["metadata"]["finishedOn"])
    ));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn verified(deps: Value) -> Verified {
        Verified {
            repository: "r.example/team-a/app".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            statement: json!({"predicate": {
                "buildDefinition": {"resolvedDependencies": deps},
                "runDetails": {"builder": {"id": "https://ci.example/jobforge"},
                               "metadata": {"invocationId": "team-a/app/3/1"}}}}),
        }
    }

    #[test]
    fn summary_names_the_commit_and_each_base_image_or_says_there_is_none() {
        let git =
            json!({"uri": "git+https://git.example/a.git", "digest": {"gitCommit": "c0ffee"}});
        let text = summary(&verified(json!([git.clone()])));
        assert!(
            text.contains("source:      git+https://git.example/a.git @ c0ffee"),
            "{text}"
        );
        assert!(text.contains("base image:  none (FROM scratch)"), "{text}");
        let base = json!({"uri": "oci://r.example/library/debian:bookworm-slim", "digest": {"sha256": "b".repeat(64)}});
        let text = summary(&verified(json!([git, base])));
        assert!(
            text.contains(&format!(
                "base image:  oci://r.example/library/debian:bookworm-slim @ sha256:{}",
                "b".repeat(64)
            )),
            "{text}"
        );
        assert!(!text.contains("none (FROM scratch)"), "{text}");
        assert!(text.contains("request:     team-a/app/3/1"), "{text}");
    }
}
