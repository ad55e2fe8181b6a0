//! `jobforge verify IMAGE`: checks the image's cosign signature and SLSA provenance against the
//! transit public key (from Vault, or `--key-file`) and prints the provenance summary. Exit 0
//! only when both verify (`jobforge_controller::supply_chain::verify`). Talks to Vault and the
//! registry, never to Consul or Nomad.

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
    let v = verify(&a.image, &pem, !a.insecure_registry).await?;
    println!("{}", summary(&v));
    Ok(())
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
    verify_image(image, pem, tls_verify, &Auth::Anonymous)
        .await
        .map_err(|e| CliError::Input(e.to_string()))
}
