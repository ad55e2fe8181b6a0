//! `jobforge verify IMAGE`: checks the image's cosign signature and SLSA provenance against the
//! transit public key (from Vault, or `--key-file`) and prints the provenance summary. Exit 0
//! only when both verify (`jobforge_controller::supply_chain::verify`). Talks to Vault and the
//! registry, never to Consul or Nomad.
//!
//! Registry credentials (a registry that requires auth to read): `--username` with the password
//! from `--password-stdin` or `--password-file` (never argv), else the authfile container users
//! already have (containers-auth.json(5), which podman, buildah, skopeo and docker's
//! `config.json` share): `--authfile`, else the first of `REGISTRY_AUTH_FILE`,
//! `${XDG_RUNTIME_DIR}/containers/auth.json`, `~/.docker/config.json` that holds an entry for
//! the image's registry. An entry is `auths.<key>.auth` = base64 of `user:password`; keys are
//! tried most specific first (`host/ns/repo`, `host/ns`, `host`), then docker's legacy
//! `https://host` forms. Credential helpers (`credHelpers`, `credsStore`) are not run.

use jobforge_controller::supply_chain::Auth;
use jobforge_controller::supply_chain::verify::{Verified, summary, verify_image};
use jobforge_controller::vault::VaultChecker;

use crate::args::VerifyArgs;
use crate::error::CliError;

/// Runs `jobforge verify`. Errors: the key cannot be read, or the image does not verify (the
/// message says which artifact and why).
pub async fn run(a: VerifyArgs) -> Result<(), CliError> {
    let pem = match &a.key_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| CliError::Input(format!("reading {}: {e}", f.display())))?,
        None => transit_public_key(&a.transit_mount, &a.transit_key).await?,
    };
    let auth = registry_auth(&a)?;
    let v = verify_with(&a.image, &pem, !a.insecure_registry, &auth).await?;
    println!("{}", summary(&v));
    Ok(())
}

/// The registry credentials of `a` (module docs). Errors: an unreadable password source or
/// authfile, or a malformed entry for the image's registry.
fn registry_auth(a: &VerifyArgs) -> Result<Auth, CliError> {
    if let Some(user) = &a.username {
        let raw = match &a.password_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| CliError::Input(format!("reading {}: {e}", f.display())))?,
            None => {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map_err(|e| {
                    CliError::Input(format!("reading the password from stdin: {e}"))
                })?;
                line
            }
        };
        let password = raw.lines().next().unwrap_or_default().to_string();
        return Ok(Auth::Basic(user.clone(), password));
    }
    let reference: jobforge_controller::supply_chain::Reference = a
        .image
        .parse()
        .map_err(|e| CliError::Input(format!("{}: {e}", a.image)))?;
    let files: Vec<std::path::PathBuf> = match &a.authfile {
        Some(f) => vec![f.clone()],
        None => default_authfiles(),
    };
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if a.authfile.is_none() && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(CliError::Input(format!("reading {}: {e}", f.display())));
            }
        };
        if let Some(auth) = authfile_entry(&text, reference.registry(), reference.repository())
            .map_err(|e| CliError::Input(format!("{}: {e}", f.display())))?
        {
            return Ok(auth);
        }
    }
    Ok(Auth::Anonymous)
}

/// `REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`, `~/.docker/config.json`
/// (those whose variables are set), in that order.
fn default_authfiles() -> Vec<std::path::PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut out = Vec::new();
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        out.push(f.into());
    }
    if let Some(d) = var("XDG_RUNTIME_DIR") {
        out.push(std::path::PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = var("HOME") {
        out.push(std::path::PathBuf::from(h).join(".docker/config.json"));
    }
    out
}

/// The credentials an authfile `text` holds for `registry`/`repository` (module docs), `None`
/// when it has no entry. Errors: not JSON, or an entry whose `auth` is not base64 of
/// `user:password`.
pub fn authfile_entry(
    text: &str,
    registry: &str,
    repository: &str,
) -> Result<Option<Auth>, String> {
    use base64::Engine as _;
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let auths = &doc["auths"];
    let mut keys: Vec<String> = Vec::new();
    let parts: Vec<&str> = repository.split('/').collect();
    for n in (1..=parts.len()).rev() {
        keys.push(format!("{registry}/{}", parts[..n].join("/")));
    }
    keys.push(registry.to_string());
    for scheme in ["https://", "http://"] {
        keys.push(format!("{scheme}{registry}"));
        keys.push(format!("{scheme}{registry}/v1/"));
        keys.push(format!("{scheme}{registry}/v2/"));
    }
    let Some(entry) = keys.iter().find_map(|k| auths.get(k)) else {
        return Ok(None);
    };
    let Some(b64) = entry["auth"].as_str().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("the entry for {registry} is not base64: {e}"))?;
    let text =
        String::from_utf8(raw).map_err(|_| format!("the entry for {registry} is not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| format!("the entry for {registry} is not user:password"))?;
    Ok(Some(Auth::Basic(user.to_string(), password.to_string())))
}

/// The newest public key (PKIX PEM) of transit key `key` at `mount`, read from Vault with
/// `VAULT_ADDR` / `VAULT_TOKEN`. Errors: Vault not configured or refusing, or a key without a
/// public key.
pub async fn transit_public_key(mount: &str, key: &str) -> Result<String, CliError> {
    let vault = VaultChecker::from_env().map_err(|e| CliError::Input(e.to_string()))?;
    let keys = vault.transit_public_keys(mount, key).await.map_err(|e| {
        CliError::Input(format!("reading the public key of {mount}/keys/{key}: {e}"))
    })?;
    keys.into_iter()
        .next_back()
        .map(|(_, pem)| pem)
        .ok_or_else(|| {
            CliError::Input(format!(
                "the transit key {mount}/keys/{key} has no public key"
            ))
        })
}

/// Verifies `image`'s signature and provenance with `pem` (the registry read anonymously).
/// Errors: the image does not verify; the message says which artifact and why.
pub async fn verify(image: &str, pem: &str, tls_verify: bool) -> Result<Verified, CliError> {
    verify_with(image, pem, tls_verify, &Auth::Anonymous).await
}

/// [`verify`] with registry credentials.
pub async fn verify_with(
    image: &str,
    pem: &str,
    tls_verify: bool,
    auth: &Auth,
) -> Result<Verified, CliError> {
    verify_image(image, pem, tls_verify, auth)
        .await
        .map_err(|e| CliError::Input(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn basic(a: Option<Auth>) -> Option<(String, String)> {
        match a {
            Some(Auth::Basic(u, p)) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn authfile_entries_are_matched_most_specific_first() {
        // base64("a:1"), base64("b:2:x"), base64("c:3")
        let doc = r#"{"auths": {"reg:5000": {"auth": "YTox"},
            "reg:5000/team/app": {"auth": "YjoyOng="},
            "https://legacy.example/v1/": {"auth": "Yzoz"}}}"#;
        assert_eq!(
            basic(authfile_entry(doc, "reg:5000", "team/app").unwrap()),
            Some(("b".into(), "2:x".into()))
        );
        assert_eq!(
            basic(authfile_entry(doc, "reg:5000", "other/app").unwrap()),
            Some(("a".into(), "1".into()))
        );
        assert_eq!(
            basic(authfile_entry(doc, "legacy.example", "x").unwrap()),
            Some(("c".into(), "3".into()))
        );
        assert!(authfile_entry(doc, "elsewhere", "x").unwrap().is_none());
        assert!(authfile_entry(r#"{"auths": {"r": {"auth": "%%"}}}"#, "r", "x").is_err());
        assert!(authfile_entry("not json", "r", "x").is_err());
        assert!(
            authfile_entry(r#"{"credHelpers": {"r": "x"}}"#, "r", "x")
                .unwrap()
                .is_none()
        );
    }
}
