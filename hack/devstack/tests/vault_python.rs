//! Third-party wire checks with hvac against the Vault emulator: `tests/python/vault_conformance.py`
//! (KV v2), `tests/python/vault_acl_conformance.py` (policies and tokens) and
//! `tests/python/vault_transit_conformance.py` (the transit engine, with `cryptography`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Arg, python_check};

const PACKAGES: &str = "hvac 2.4.0";

#[tokio::test]
async fn hvac_writes_and_reads_kv_v2_secrets() {
    python_check(
        "vault_conformance.py",
        PACKAGES,
        &[Arg::Vault, Arg::RootToken],
    )
    .await;
}

#[tokio::test]
async fn hvac_policies_and_tokens_are_enforced() {
    python_check(
        "vault_acl_conformance.py",
        PACKAGES,
        &[Arg::Vault, Arg::RootToken],
    )
    .await;
}

#[tokio::test]
async fn hvac_transit_signs_and_cryptography_verifies() {
    python_check(
        "vault_transit_conformance.py",
        "hvac 2.4.0 and cryptography",
        &[Arg::Vault, Arg::RootToken],
    )
    .await;
}
