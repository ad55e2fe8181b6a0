//! What every end-to-end build test starts: a dev stack, a local registry and a controller that
//! has become leader, plus the few things such a test does with them (write a request as a
//! client would, wait for its terminal status). Everything stops when the value drops, even when
//! the test fails.

use std::time::Duration;

use serde_json::Value;

use crate::controller::ControllerProcess;
use crate::devstack::{DevStackOptions, DevStackProcess};
use crate::kv::request_json;
use crate::registry::Registry;

/// How long [`BuildEnv`] waits for its controller to become leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// A dev stack, a registry (plain HTTP on loopback) and a leading controller (`raw_exec` profile
/// unless the controller arguments say otherwise).
pub struct BuildEnv {
    /// Dropped first, so the controller stops before the stack it talks to.
    pub controller: ControllerProcess,
    /// The Consul, Nomad and Vault emulators.
    pub stack: DevStackProcess,
    /// The registry builds push to; its address is `registry.addr` (`127.0.0.1:<port>`).
    pub registry: Registry,
}

impl BuildEnv {
    /// Starts a dev stack with `opts`, a registry and a controller, and waits until the controller
    /// leads.
    ///
    /// Errors: any of them does not start, or no leader within [`LEADER_TIMEOUT`].
    pub async fn start(opts: DevStackOptions) -> anyhow::Result<BuildEnv> {
        BuildEnv::start_on(DevStackProcess::start(opts)?, &[]).await
    }

    /// Like [`BuildEnv::start`] on a stack the caller has prepared (`<prefix>/config`, Vault
    /// mounts and keys) before the controller starts, with extra controller flags.
    ///
    /// Errors: as [`BuildEnv::start`].
    pub async fn start_on(
        stack: DevStackProcess,
        controller_args: &[&str],
    ) -> anyhow::Result<BuildEnv> {
        BuildEnv::start_with_registry(stack, Registry::start().await?, controller_args).await
    }

    /// Like [`BuildEnv::start_on`] with a registry the caller started (one that requires
    /// authentication, for example).
    ///
    /// Errors: the controller does not start or lead within [`LEADER_TIMEOUT`].
    pub async fn start_with_registry(
        stack: DevStackProcess,
        registry: Registry,
        controller_args: &[&str],
    ) -> anyhow::Result<BuildEnv> {
        let controller = ControllerProcess::start(&stack, controller_args).await?;
        controller.wait_leader(LEADER_TIMEOUT).await?;
        Ok(BuildEnv {
            controller,
            stack,
            registry,
        })
    }

    /// Writes the request `namespace/name` with `spec` into KV (a plain PUT, as `curl` or
    /// `consul kv put` would).
    ///
    /// Errors: the PUT fails.
    pub async fn submit(&self, namespace: &str, name: &str, spec: Value) -> anyhow::Result<()> {
        self.stack
            .kv()
            .put(
                &format!("jobforge/requests/{namespace}/{name}"),
                &request_json(namespace, name, spec),
            )
            .await
            .map(|_| ())
    }

    /// Waits up to `timeout` for the status of `default/name` to be terminal and returns it.
    ///
    /// Errors: the timeout, with the last status seen.
    pub async fn wait_terminal(&self, name: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.stack.wait_terminal("default", name, timeout).await
    }
}

/// `base` with every top-level field of `extra` set over it: a test's own fields on a common spec.
/// A non-object `extra` changes nothing.
pub fn with_fields(mut base: Value, extra: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (base.as_object_mut(), extra) {
        a.extend(b);
    }
    base
}
