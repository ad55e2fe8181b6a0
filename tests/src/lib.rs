//! Shared helpers for the workspace integration tests: processes that are always stopped (even when
//! a test fails), a local OCI registry, a git repository fixture, the controller and CLI binaries,
//! and KV helpers that wait on conditions with blocking queries and a deadline (never sleep-and-hope).
//!
//! Binaries are taken from the target directory the tests run from (`target/debug`); `hack/test.sh`
//! builds them first (`cargo build --workspace --bins`).
//!
//! One module per concept; every name is re-exported here, so `jobforge_tests::Kv` and the like
//! keep working:
//! - [`env`]: the workspace, built binaries, free ports, programs on PATH, the Python of the
//!   wire checks;
//! - [`process`]: [`ProcessGuard`] (a process and everything it started, killed on drop) and
//!   [`wait_process`];
//! - [`wait`]: [`wait_until`] and [`wait_http_ok`];
//! - [`kv`]: raw KV access ([`Kv`]) and [`request_json`];
//! - [`devstack`], [`controller`], [`registry`], [`git`]: the processes and fixtures a scenario
//!   starts;
//! - [`build_env`]: [`BuildEnv`], the stack + registry + leading controller of an end-to-end build
//!   test.

pub mod acl;
pub mod build_env;
pub mod controller;
pub mod devstack;
pub mod docker;
pub mod env;
pub mod git;
pub mod githttp;
pub mod history;
pub mod kv;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod vault_policies;
pub mod wait;

pub use build_env::{BuildEnv, with_fields};
pub use controller::ControllerProcess;
pub use devstack::{DevStackOptions, DevStackProcess};
pub use env::{bin, free_port, python, which, workspace_root};
pub use git::GitRepo;
pub use kv::{Kv, request_json};
pub use process::{ProcessGuard, wait_process};
pub use registry::Registry;
pub use wait::{telemetry, wait_http_ok, wait_until};
