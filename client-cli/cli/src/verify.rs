//! `jobforge verify IMAGE`: checks the image's cosign signature and SLSA provenance against the
//! transit public key (from Vault, or `--key-file`) and prints the provenance summary. Exit 0
//! only when both verify (`jobforge_controller::supply_chain::verify`). Talks to Vault and the
//! registry, never to Consul or Nomad.

use jobforge_controller::supply_chain::Auth;
use jobforge_controller::supply_chain::verify::{summary, verify_image};
use jobforge_controller::vault::VaultChecker;

use crate::args::VerifyArgs;
use crate::error::CliError;

/// Runs `jobforge verify`. Errors: the key cannot be read, or the image does not verify (the
/// message says which artifact and why).
pub async fn run(a: VerifyArgs) -> Result<(), CliError> {
    let pem = match &a.key_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| CliError::Input(format!("reading {}: {e}", f.display())))?,
        None => {
            let vault = VaultChecker::from_env().map_err(|e| CliError::Input(e.to_string()))?;
            let keys = vault
                .transit_public_keys(&a.transit_mount, &a.transit_key)
                .await
                .map_err(|e| CliError::Input(format!("reading the public key: {e}")))?;
            keys.into_iter()
                .next_back()
                .map(|(_, pem)| pem)
                .ok_or_else(|| CliError::Input("the transit key has no public key".into()))?
        }
    };
    let v = verify_image(&a.image, &pem, !a.insecure_registry, &Auth::Anonymous)
        .await
        .map_err(|e| CliError::Input(e.to_string()))?;
    println!("{}", summary(&v));
    Ok(())
}
