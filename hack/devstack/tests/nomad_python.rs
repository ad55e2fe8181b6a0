//! Third-party wire checks with python-nomad against the Nomad emulator:
//! `tests/python/nomad_conformance.py` (jobs, allocations, logs) and
//! `tests/python/nomad_vault_conformance.py` (task Vault tokens, with hvac).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Arg, python_check};

#[tokio::test]
async fn python_nomad_registers_reads_allocations_and_logs() {
    python_check("nomad_conformance.py", "python-nomad 2.1.0", &[Arg::Nomad]).await;
}

#[tokio::test]
async fn python_nomad_tasks_get_their_own_vault_token_and_nothing_more() {
    python_check(
        "nomad_vault_conformance.py",
        "python-nomad and hvac",
        &[Arg::Nomad, Arg::Vault, Arg::RootToken],
    )
    .await;
}
