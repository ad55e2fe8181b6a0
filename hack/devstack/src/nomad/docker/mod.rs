//! The `docker` task driver: runs a task as a container of a Docker Engine API (Docker, or
//! podman's compatibility service), as Nomad's own docker driver does.
//!
//! Read from Nomad's `drivers/docker`:
//! - `driver.go` (`StartTask`, `createImage`, `createContainerConfig`): the image is pulled
//!   through the engine when absent (or with `force_pull`), with the task's `auth` as
//!   `X-Registry-Auth`; a pull failure is the task's `Driver Failure` ``Failed to pull `<image>`:
//!   …``. The container is named `<task>-<alloc ID>` and labelled `com.hashicorp.nomad.alloc_id`,
//!   `…job_id`, `…task_name`, `…node_id`; its environment is the task's (`NOMAD_*` with container
//!   paths `/alloc`, `/local`, `/secrets`, the task's `env` interpolated, template env) and never
//!   the agent's own, which only `raw_exec`/`exec` inherit. Config rules: [`config`].
//! - `handle.go` (`run`): wait for the exit, inspect, `State.OOMKilled` makes the exit
//!   message `OOM Killed` (the `Terminated` event's `oom_killed` detail); the container is then
//!   stopped with timeout 0 in case the engine's wait returned early.
//! - `driver.go` (`StopTask`): the task's `kill_signal` (SIGTERM when unset, Docker's default),
//!   then SIGKILL after `kill_timeout`. `DestroyTask` removes the container (`force`); the
//!   emulator destroys it as soon as the task is dead and its logs are drained (Nomad does it at
//!   allocation GC), so nothing is left in the engine.
//! - `fingerprint.go`: the node has `driver.docker` (and `driver.docker.version`) only while an
//!   engine answers; the emulator fingerprints once, at start ([`Docker::fingerprint`]).
//!
//! Logs are the engine's (`GET /containers/{id}/logs?follow=1`, demultiplexed) copied into the
//! same sinks as `raw_exec` output, so the log API is the same for both drivers.

pub mod config;
pub mod engine;
pub mod images;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::NomadState;
use super::model::{TaskEvent, TaskResources, TaskStateRecord};
use super::spec::{DEFAULT_KILL_TIMEOUT_NS, JobSpec, TaskSpec};
use super::taskdir::interpolate;
use config::{CreateInput, PluginConfig, TaskConfig, TaskPaths, create_body};
use engine::{Engine, pump_logs};

/// Label every container of the emulator carries: the node ID, for cleanup.
pub const NODE_LABEL: &str = "com.hashicorp.nomad.node_id";

/// The docker driver of the node: an engine client and the plugin configuration.
#[derive(Debug, Clone)]
pub struct Docker {
    /// The engine.
    pub engine: Engine,
    /// `plugin "docker" { config { ... } }`.
    pub plugin: PluginConfig,
    /// The engine's version, when it answered the fingerprint.
    pub version: Option<String>,
    /// References of tasks on images, for image garbage collection ([`images`]).
    pub images: Arc<images::ImageRefs>,
}

impl Docker {
    /// A driver for the engine at `host` (`unix:///…`, `tcp://…`), fingerprinted now: `version`
    /// is `None` when nothing listens there, or the engine does not answer `GET /version` within
    /// 15 s (a loaded engine can take seconds); the node then has no `driver.docker`.
    ///
    /// Errors: `host` is not a Docker host string.
    pub fn fingerprint(host: &str, plugin: PluginConfig) -> Result<Docker, engine::EngineError> {
        let engine = Engine::new(host)?;
        let version = engine::probe_blocking(host, Duration::from_secs(15));
        Ok(Docker {
            engine,
            plugin,
            version,
            images: Arc::default(),
        })
    }

    /// Removes every container labelled with `node_id` (shutdown and start-up cleanup).
    pub async fn remove_all(&self, node_id: &str) {
        if let Ok(ids) = self.engine.list_labelled(NODE_LABEL, node_id).await {
            for id in ids {
                let _ = self.engine.remove(&id).await;
            }
        }
    }
}

/// What the allocation runner hands the driver for one task.
pub struct TaskRun<'a> {
    /// Allocation ID.
    pub alloc: &'a str,
    /// The job.
    pub job: &'a JobSpec,
    /// The task.
    pub task: &'a TaskSpec,
    /// `<alloc dir>`.
    pub alloc_dir: &'a Path,
    /// `<alloc dir>/<task>`.
    pub task_dir: &'a Path,
    /// The task environment as built for `raw_exec` (agent env, `NOMAD_*`, task env).
    pub env: &'a BTreeMap<String, String>,
    /// Variables exported by templates (`env = true`).
    pub template_env: &'a BTreeMap<String, String>,
    /// Allocated resources.
    pub resources: TaskResources,
    /// Group restart policy: attempts.
    pub attempts: u64,
    /// Group restart policy: delay.
    pub delay: Duration,
    /// Cancelled on stop (deregister, shutdown).
    pub kill: &'a CancellationToken,
}

async fn event(state: &NomadState, alloc: &str, task: &str, e: TaskEvent) {
    state.update_task(alloc, task, |ts| ts.push(e));
}

async fn finish(state: &NomadState, alloc: &str, task: &str, failed: bool, e: TaskEvent) {
    state.update_task(alloc, task, |ts| {
        ts.push(e);
        ts.state = "dead";
        ts.failed = failed;
        ts.finished_at = Some(Utc::now());
        ts.pid = None;
    });
    for s in state.sinks(alloc, task) {
        s.close();
    }
}

async fn driver_failure(state: &NomadState, alloc: &str, task: &str, err: String) {
    let mut ev = TaskEvent::new("Driver Failure", err.clone());
    ev.driver_error = err;
    ev.fails_task = true;
    event(state, alloc, task, ev).await;
    let mut nr = TaskEvent::new("Not Restarting", "Error was unrecoverable");
    nr.fails_task = true;
    finish(state, alloc, task, true, nr).await;
}

/// The container's environment: `NOMAD_*` (directories as the container sees them) and the
/// task's Vault token (`VAULT_TOKEN`, `VAULT_NAMESPACE`, set by `client/taskenv` for every driver
/// unless the vault block's `env = false`), the task's `env` interpolated against them, then
/// template variables. The agent's own environment is not passed (Nomad gives it only to
/// `raw_exec`/`exec`).
pub fn container_env(
    run_env: &BTreeMap<String, String>,
    task: &TaskSpec,
    template_env: &BTreeMap<String, String>,
    node: &super::placement::Node,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = run_env
        .iter()
        .filter(|(k, _)| {
            k.starts_with("NOMAD_") || matches!(k.as_str(), "VAULT_TOKEN" | "VAULT_NAMESPACE")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.insert("NOMAD_ALLOC_DIR".into(), "/alloc".into());
    env.insert("NOMAD_TASK_DIR".into(), "/local".into());
    env.insert("NOMAD_SECRETS_DIR".into(), "/secrets".into());
    let base = env.clone();
    for (k, v) in &task.env {
        env.insert(k.clone(), interpolate(v, &base, node));
    }
    env.extend(template_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

fn interpolate_value(
    v: &serde_json::Value,
    env: &BTreeMap<String, String>,
    node: &super::placement::Node,
) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(interpolate(s, env, node)),
        Value::Array(a) => {
            Value::Array(a.iter().map(|x| interpolate_value(x, env, node)).collect())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), interpolate_value(x, env, node)))
                .collect(),
        ),
        other => other.clone(),
    }
}

enum End {
    /// The engine's wait returned (the exit code is read back with inspect, as handle.go does).
    Exited,
    Kill(&'static str),
}

/// Runs one docker task to the end: pull, create, start, logs, wait, OOM, kill, remove; task
/// events as Nomad records them.
pub async fn run_task(state: Arc<NomadState>, run: TaskRun<'_>) {
    let name = run.task.name.as_str();
    let alloc = run.alloc;
    let Some(docker) = state.docker().filter(|d| d.version.is_some()).cloned() else {
        let err = "failed to start task: docker driver is not available on this node".to_string();
        return driver_failure(&state, alloc, name, err).await;
    };
    let env = container_env(run.env, run.task, run.template_env, state.node());
    let config_map = match interpolate_value(
        &serde_json::Value::Object(run.task.config.clone()),
        &env,
        state.node(),
    ) {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let cfg = match TaskConfig::parse(&config_map) {
        Ok(c) => c,
        Err(e) => return driver_failure(&state, alloc, name, e.to_string()).await,
    };
    let mut labels = BTreeMap::new();
    labels.insert(
        "com.hashicorp.nomad.alloc_id".to_string(),
        alloc.to_string(),
    );
    labels.insert("com.hashicorp.nomad.job_id".to_string(), run.job.id.clone());
    labels.insert(
        "com.hashicorp.nomad.task_name".to_string(),
        name.to_string(),
    );
    labels.insert(NODE_LABEL.to_string(), state.node().id.clone());
    let body = match create_body(
        &docker.plugin,
        &cfg,
        &CreateInput {
            env: &env,
            memory_mb: run.resources.memory_mb,
            cpu: run.resources.cpu,
            labels,
            paths: TaskPaths {
                alloc_dir: run.alloc_dir,
                task_dir: run.task_dir,
            },
        },
    ) {
        Ok(b) => b,
        Err(e) => {
            return driver_failure(
                &state,
                alloc,
                name,
                format!(
                    "failed to create container configuration for image {:?}: {e}",
                    cfg.image
                ),
            )
            .await;
        }
    };
    let kill_timeout = Duration::from_nanos(
        u64::try_from(run.task.kill_timeout.unwrap_or(DEFAULT_KILL_TIMEOUT_NS)).unwrap_or(0),
    );
    let signal = if run.task.kill_signal.is_empty() {
        "SIGTERM".to_string()
    } else {
        run.task.kill_signal.clone()
    };
    let deadline = run
        .task
        .max_run_duration
        .or(run.job.max_run_duration)
        .and_then(|ns| u64::try_from(ns).ok())
        .map(Duration::from_nanos);
    let container_name = format!("{name}-{alloc}");
    let mut restarts = 0u64;
    loop {
        if run.kill.is_cancelled() {
            let ev = TaskEvent::new("Killed", "Task successfully killed");
            return finish(&state, alloc, name, false, ev).await;
        }
        // Image: pull when absent or forced.
        let present = docker
            .engine
            .image_exists(&cfg.image)
            .await
            .unwrap_or(false);
        if !present || cfg.force_pull {
            event(
                &state,
                alloc,
                name,
                TaskEvent::new("Driver", "Downloading image"),
            )
            .await;
            let pulled = tokio::select! {
                r = docker.engine.pull(&cfg.image, cfg.auth.as_ref()) => Some(r),
                () = run.kill.cancelled() => None,
            };
            match pulled {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    let err = format!("Failed to pull `{}`: {e}", cfg.image);
                    return driver_failure(&state, alloc, name, err).await;
                }
                None => {
                    let ev = TaskEvent::new("Killed", "Task successfully killed");
                    return finish(&state, alloc, name, false, ev).await;
                }
            }
        }
        // The task holds its image until it ends (image garbage collection, `images.rs`).
        let _image_ref = docker.images.acquire(
            &docker.engine,
            &cfg.image,
            docker.plugin.gc_image.then_some(docker.plugin.image_delay),
        );
        // A container of an earlier attempt with the same name goes first.
        let _ = docker.engine.remove(&container_name).await;
        let id = match docker.engine.create(&container_name, &body).await {
            Ok(id) => id,
            Err(e) => {
                let err = format!("failed to create container: {e}");
                return driver_failure(&state, alloc, name, err).await;
            }
        };
        if let Err(e) = docker.engine.start(&id).await {
            let _ = docker.engine.remove(&id).await;
            let err = format!("failed to start container {id}: {e}");
            return driver_failure(&state, alloc, name, err).await;
        }
        let mut pumps = Vec::new();
        let mut follower = None;
        let sinks = state.sinks(alloc, name);
        if let ([o, e], Ok(stream)) = (sinks.as_slice(), docker.engine.logs(&id, true).await) {
            let (ow, or) = tokio::io::duplex(64 * 1024);
            let (ew, er) = tokio::io::duplex(64 * 1024);
            let (o, e) = (o.clone(), e.clone());
            pumps.push(tokio::spawn(async move {
                let _ = o.pump(or).await;
            }));
            pumps.push(tokio::spawn(async move {
                let _ = e.pump(er).await;
            }));
            follower = Some(tokio::spawn(pump_logs(Box::pin(stream), ow, ew)));
        }
        state.update_task(alloc, name, |ts: &mut TaskStateRecord| {
            ts.push(TaskEvent::new("Started", "Task started by client"));
            ts.state = "running";
            if ts.started_at.is_none() {
                ts.started_at = Some(Utc::now());
            }
        });
        let sleep_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            _ = docker.engine.wait_exit(&id) => End::Exited,
            () = run.kill.cancelled() => End::Kill("Sent interrupt"),
            () = sleep_deadline => End::Kill("Task exceeded its max run duration"),
        };
        let (killed, deadline_hit) = match end {
            End::Exited => (false, false),
            End::Kill(why) => {
                let mut ev = TaskEvent::new(
                    "Killing",
                    format!(
                        "{why}. Waiting {}s before force killing",
                        kill_timeout.as_secs_f64()
                    ),
                );
                ev.kill_timeout = i64::try_from(kill_timeout.as_nanos()).unwrap_or(i64::MAX);
                event(&state, alloc, name, ev).await;
                let _ = docker.engine.kill(&id, &signal).await;
                if tokio::time::timeout(kill_timeout, docker.engine.wait_exit(&id))
                    .await
                    .is_err()
                {
                    let _ = docker.engine.kill(&id, "SIGKILL").await;
                    let _ = docker.engine.wait_exit(&id).await;
                }
                (true, why.starts_with("Task exceeded"))
            }
        };
        let inspected = docker.engine.inspect(&id).await.ok();
        let code = inspected
            .as_ref()
            .and_then(|v| v["State"]["ExitCode"].as_i64())
            .unwrap_or(-1);
        let oom = inspected
            .as_ref()
            .and_then(|v| v["State"]["OOMKilled"].as_bool())
            .unwrap_or(false);
        // Logs end when the container is gone from the engine's point of view; wait for them,
        // bounded, then destroy the container.
        let followed = match follower {
            Some(f) => tokio::time::timeout(Duration::from_secs(10), f)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            None => None,
        };
        let mut drained = true;
        for p in pumps {
            drained &= tokio::time::timeout(Duration::from_secs(10), p)
                .await
                .is_ok();
        }
        // A followed stream may end before the engine delivered the container's last lines
        // (podman's `logs?follow=1` returns as the container stops; the lost tail was a test's
        // last output, issue 14 item 6). Read everything once more, without follow, and append
        // what the followed stream did not deliver, before the task is reported dead.
        if let (Some((n_out, n_err)), true, [o, e]) = (followed, drained, sinks.as_slice())
            && let Ok((out, err)) = docker.engine.all_logs(&id).await
        {
            for (sink, all, n) in [(o, &out, n_out), (e, &err, n_err)] {
                if let Some(rest) = all.get(n..).filter(|r| !r.is_empty()) {
                    let _ = sink.pump(rest).await;
                }
            }
        }
        if let Err(e) = docker.engine.remove(&id).await {
            tracing::warn!(container = %id, error = %e, "docker: container not removed");
        }
        let mut term = TaskEvent::new(
            "Terminated",
            if oom {
                format!("Exit Code: {code}, Exit Message: \"OOM Killed\"")
            } else {
                format!("Exit Code: {code}")
            },
        );
        term.exit_code = code;
        term.oom_killed = oom;
        if killed {
            event(&state, alloc, name, term).await;
            let ev = TaskEvent::new("Killed", "Task successfully killed");
            return finish(&state, alloc, name, deadline_hit, ev).await;
        }
        if code == 0 && !oom {
            return finish(&state, alloc, name, false, term).await;
        }
        event(&state, alloc, name, term).await;
        if restarts >= run.attempts {
            let mut nr = TaskEvent::new(
                "Not Restarting",
                format!(
                    "Exceeded allowed attempts {} in interval and mode is \"fail\"",
                    run.attempts
                ),
            );
            nr.fails_task = true;
            return finish(&state, alloc, name, true, nr).await;
        }
        restarts += 1;
        state.update_task(alloc, name, |ts| {
            ts.push(TaskEvent::new(
                "Restarting",
                format!("Task restarting in {}s", run.delay.as_secs()),
            ));
            ts.state = "pending";
            ts.restarts = restarts;
            ts.last_restart = Some(Utc::now());
        });
        tokio::select! {
            () = tokio::time::sleep(run.delay) => {}
            () = run.kill.cancelled() => {}
        }
    }
}
