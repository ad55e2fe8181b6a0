//! Test harness: a dev stack with only Consul (port 0), the `jobforge` binary pointed at it, and
//! direct KV access for driving statuses and logs the way the controller would.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use jobforge_client::consul::Client as ConsulKv;
use jobforge_client::store::consul_kv;
use jobforge_client::store::{Blocking, Kv, KvEntry};
use jobforge_devstack::{DevStack, DevStackConfig};
use jobforge_schema::{BuildStatus, KeyLayout, Phase};

/// A running Consul emulator; stopped on drop, even when the test fails.
pub struct Consul {
    pub rt: tokio::runtime::Runtime,
    stack: Option<DevStack>,
    pub addr: String,
    pub kv: ConsulKv,
    pub keys: KeyLayout,
}

impl Consul {
    pub fn start() -> Consul {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = DevStackConfig {
            nomad_addr: None,
            vault_addr: None,
            ..DevStackConfig::ephemeral()
        };
        let stack = rt.block_on(DevStack::start(cfg)).unwrap();
        let addr = stack.consul_addr.unwrap().to_string();
        let kv = consul_kv::client(&addr, None, false).unwrap();
        Consul {
            rt,
            stack: Some(stack),
            addr,
            kv,
            keys: KeyLayout::default(),
        }
    }

    /// `jobforge` with `CONSUL_HTTP_ADDR` set to this Consul and a clean environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("jobforge").unwrap();
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CONSUL_HTTP_ADDR", &self.addr);
        c
    }

    pub fn get(&self, key: &str) -> Option<KvEntry> {
        self.rt
            .block_on(self.kv.get(key, Blocking::default()))
            .unwrap()
            .1
    }

    pub fn put(&self, key: &str, value: &[u8]) {
        assert!(self.rt.block_on(self.kv.put(key, value, None)).unwrap());
    }

    pub fn modify_index(&self, ns: &str, name: &str) -> u64 {
        self.get(&self.keys.request_key(ns, name))
            .expect("request exists")
            .modify_index
    }

    /// Writes a status for the request's current generation, as the controller would.
    pub fn set_status(&self, ns: &str, name: &str, f: impl FnOnce(&mut BuildStatus)) {
        let g = self.modify_index(ns, name);
        let mut st = BuildStatus {
            observed_generation: g,
            attempt: 1,
            start_time: Some(chrono::Utc::now()),
            ..Default::default()
        };
        f(&mut st);
        self.put(
            &self.keys.status_key(ns, name),
            &serde_json::to_vec(&st).unwrap(),
        );
    }

    pub fn set_phase(&self, ns: &str, name: &str, phase: Phase) {
        self.set_status(ns, name, |s| s.phase = phase);
    }
}

impl Drop for Consul {
    fn drop(&mut self) {
        if let Some(s) = self.stack.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

/// A valid BuildRequest YAML document.
pub fn request_yaml(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: jobforge/v1alpha1
kind: BuildRequest
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  owner: team-a
  repo_url: https://git.example.com/team-a/app.git
  git_ref: main
  image_name: app
  image_tags: [v1]
  registry_url: registry.local:5000
"
    )
}

pub fn write(dir: &Path, file: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(file);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

pub fn json_out(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);
