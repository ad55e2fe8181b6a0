//! The allocation runner and the `raw_exec`/`exec` driver (Nomad `client/allocrunner`,
//! `drivers/rawexec`). Each task: `Received`, `Task Setup` (task dir, templates), then the command
//! runs as a child process in its own process group with stdout/stderr piped into the log sinks;
//! `Started`, `Terminated` (exit code, signal), restarts per the group's `RestartPolicy`, `Not
//! Restarting` when exhausted. A stop (deregister, shutdown) sends the kill signal (SIGINT by
//! default, as raw_exec) to the group, waits `KillTimeout`, then SIGKILLs: `Killing`, `Terminated`,
//! `Killed`. `exec` runs exactly like `raw_exec` (no isolation in the emulator). Children are
//! reaped by tokio; the group is SIGKILLed after the leader exits so no grandchild survives.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::NomadState;
use super::model::{TaskEvent, TaskStateRecord};
use super::spec::{DEFAULT_KILL_TIMEOUT_NS, JobSpec, TaskSpec};
use super::store::Launch;
use super::taskdir::{EnvInput, build_alloc_dir, build_task_dir, interpolate, task_env};
use super::template::{parse_env_file, render};

/// Runs every task of an allocation to the end.
pub async fn run_alloc(state: Arc<NomadState>, launch: Launch, kill: CancellationToken) {
    let dir = state.alloc_dir(&launch.alloc_id);
    let group = &launch.job.task_groups[launch.group];
    let mock = state.mock_run_for().is_some();
    if let Err(e) = if mock { Ok(()) } else { build_alloc_dir(&dir) } {
        for t in &group.tasks {
            let msg = format!("failed to build alloc dir: {e}");
            finish(
                &state,
                &launch.alloc_id,
                &t.name,
                true,
                Some(setup_failed(msg)),
            )
            .await;
        }
        return;
    }
    let runs = group
        .tasks
        .iter()
        .enumerate()
        .map(|(ti, _)| run_task(state.clone(), launch.clone(), ti, kill.clone()));
    futures::future::join_all(runs).await;
    state.forget_runner(&launch.alloc_id);
}

fn setup_failed(msg: String) -> TaskEvent {
    let mut e = TaskEvent::new("Task Setup", msg);
    e.fails_task = true;
    e
}

async fn event(state: &NomadState, alloc: &str, task: &str, e: TaskEvent) {
    state.update_task(alloc, task, |ts| ts.push(e));
}

async fn finish(state: &NomadState, alloc: &str, task: &str, failed: bool, e: Option<TaskEvent>) {
    state.update_task(alloc, task, |ts| {
        if let Some(e) = e {
            ts.push(e);
        }
        ts.state = "dead";
        ts.failed = failed;
        ts.finished_at = Some(Utc::now());
        ts.pid = None;
    });
    for s in state.sinks(alloc, task) {
        s.close();
    }
}

fn alloc_index(state: &NomadState, alloc: &str) -> usize {
    state
        .with_alloc(alloc, |a| {
            a.name
                .rsplit_once('[')
                .and_then(|(_, n)| n.trim_end_matches(']').parse().ok())
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

fn string_list(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn run_task(state: Arc<NomadState>, launch: Launch, ti: usize, kill: CancellationToken) {
    let job: &JobSpec = &launch.job;
    let group = &job.task_groups[launch.group];
    let task: &TaskSpec = &group.tasks[ti];
    let alloc = launch.alloc_id.as_str();
    let name = task.name.as_str();
    event(
        &state,
        alloc,
        name,
        TaskEvent::new("Received", "Task received by client"),
    )
    .await;
    event(
        &state,
        alloc,
        name,
        TaskEvent::new("Task Setup", "Building Task Directory"),
    )
    .await;
    if let Some(run_for) = state.mock_run_for() {
        return run_mock(&state, alloc, name, run_for, &kill).await;
    }
    let alloc_dir = state.alloc_dir(alloc);
    let task_dir = match build_task_dir(&alloc_dir, name) {
        Ok(d) => d,
        Err(e) => {
            let msg = format!("failed to build task directory for {name:?}: {e}");
            return finish(&state, alloc, name, true, Some(setup_failed(msg))).await;
        }
    };
    let resources = state
        .with_alloc(alloc, |a| a.resources.get(name).copied())
        .flatten()
        .unwrap_or(super::model::TaskResources {
            cpu: 100,
            memory_mb: 300,
        });
    let mut env = task_env(&EnvInput {
        job,
        group: &group.name,
        task,
        alloc_id: alloc,
        alloc_index: alloc_index(&state, alloc),
        alloc_dir: &alloc_dir,
        resources,
        node: state.node(),
    });
    // Templates, in order, before the task starts.
    let mut template_env = BTreeMap::new();
    for t in &task.templates {
        let rendered = render(
            &t.embedded_tmpl,
            &t.left_delim,
            &t.right_delim,
            &env,
            state.vault(),
        )
        .await;
        let text = match rendered {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("Template failed: {e}");
                return finish(&state, alloc, name, true, Some(setup_failed(msg))).await;
            }
        };
        let dest = interpolate(&t.dest_path, &env, state.node());
        let dest = task_dir.join(dest.trim_start_matches('/'));
        if !dest.starts_with(&task_dir) || t.dest_path.split('/').any(|c| c == "..") {
            let msg = format!(
                "Template failed: destination {:?} escapes the task directory",
                t.dest_path
            );
            return finish(&state, alloc, name, true, Some(setup_failed(msg))).await;
        }
        let perms = if t.perms.is_empty() { "0644" } else { &t.perms };
        let Ok(mode) = u32::from_str_radix(perms, 8) else {
            let msg = format!("Template failed: Perms {perms:?} is not an octal file mode");
            return finish(&state, alloc, name, true, Some(setup_failed(msg))).await;
        };
        if let Err(e) = write_file(&dest, text.as_bytes(), mode) {
            let msg = format!("Template failed: writing {}: {e}", dest.display());
            return finish(&state, alloc, name, true, Some(setup_failed(msg))).await;
        }
        if t.envvars {
            template_env.extend(parse_env_file(&text));
        }
    }
    // --- docker driver: its own lifecycle (hack/devstack/src/nomad/docker) ---
    if task.driver == "docker" {
        let run = super::docker::TaskRun {
            alloc,
            job,
            task,
            alloc_dir: &alloc_dir,
            task_dir: &task_dir,
            env: &env,
            template_env: &template_env,
            resources,
            attempts: u64::try_from(
                group
                    .restart_policy
                    .as_ref()
                    .and_then(|p| p.attempts)
                    .unwrap_or(3),
            )
            .unwrap_or(0),
            delay: Duration::from_nanos(
                u64::try_from(
                    group
                        .restart_policy
                        .as_ref()
                        .and_then(|p| p.delay)
                        .unwrap_or(15_000_000_000),
                )
                .unwrap_or(0),
            ),
            kill: &kill,
        };
        return super::docker::run_task(state.clone(), run).await;
    }
    // --- end docker driver ---
    env.extend(template_env);

    let command = task
        .config
        .get("command")
        .and_then(|v| v.as_str())
        .map(|c| interpolate(c, &env, state.node()))
        .unwrap_or_default();
    let args: Vec<String> = string_list(task.config.get("args"))
        .iter()
        .map(|a| interpolate(a, &env, state.node()))
        .collect();
    let kill_timeout = Duration::from_nanos(
        u64::try_from(task.kill_timeout.unwrap_or(DEFAULT_KILL_TIMEOUT_NS)).unwrap_or(0),
    );
    let kill_signal = if task.kill_signal.is_empty() {
        "SIGINT"
    } else {
        &task.kill_signal
    };
    let signal = kill_signal.parse::<Signal>().unwrap_or(Signal::SIGINT);
    let deadline = task
        .max_run_duration
        .or(job.max_run_duration)
        .and_then(|ns| u64::try_from(ns).ok())
        .map(Duration::from_nanos);
    let policy = group.restart_policy.clone().unwrap_or_default();
    let attempts = u64::try_from(policy.attempts.unwrap_or(3)).unwrap_or(0);
    let delay =
        Duration::from_nanos(u64::try_from(policy.delay.unwrap_or(15_000_000_000)).unwrap_or(0));
    let interval = Duration::from_nanos(
        u64::try_from(policy.interval.unwrap_or(86_400_000_000_000)).unwrap_or(0),
    );
    let mode = policy.mode.unwrap_or_else(|| "fail".into());
    let sinks = state.sinks(alloc, name);
    let mut restarts = 0u64;
    loop {
        if kill.is_cancelled() {
            return finish(
                &state,
                alloc,
                name,
                false,
                Some(TaskEvent::new("Killed", "Task successfully killed")),
            )
            .await;
        }
        let mut cmd = tokio::process::Command::new(&command);
        cmd.args(&args)
            .current_dir(&task_dir)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let err = if command.is_empty() {
                    "failed to launch command with executor: missing command in driver config"
                        .to_string()
                } else if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "failed to launch command with executor: rpc error: code = Unknown desc = exec: {command:?}: executable file not found in $PATH"
                    )
                } else {
                    format!("failed to launch command with executor: {command:?}: {e}")
                };
                let mut ev = TaskEvent::new("Driver Failure", err.clone());
                ev.driver_error = err;
                ev.fails_task = true;
                event(&state, alloc, name, ev).await;
                let nr = TaskEvent::new("Not Restarting", "Error was unrecoverable");
                return finish(&state, alloc, name, true, Some(nr)).await;
            }
        };
        let pid = child.id().unwrap_or(0);
        state.record_pid(pid);
        let mut pumps = Vec::new();
        if let (Some(out), [o, e]) = (child.stdout.take(), sinks.as_slice()) {
            let o = o.clone();
            pumps.push(tokio::spawn(async move { o.pump(out).await }));
            if let Some(err) = child.stderr.take() {
                let e = e.clone();
                pumps.push(tokio::spawn(async move { e.pump(err).await }));
            }
        }
        state.update_task(alloc, name, |ts: &mut TaskStateRecord| {
            ts.push(TaskEvent::new("Started", "Task started by client"));
            ts.state = "running";
            ts.pid = Some(pid);
            if ts.started_at.is_none() {
                ts.started_at = Some(Utc::now());
            }
        });
        let pgid = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
        let sleep_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        enum End {
            Exited(std::io::Result<std::process::ExitStatus>),
            Kill(&'static str),
        }
        let end = tokio::select! {
            r = child.wait() => End::Exited(r),
            () = kill.cancelled() => End::Kill("Sent interrupt"),
            () = sleep_deadline => End::Kill("Task exceeded its max run duration"),
        };
        let (status, killed, deadline_hit) = match end {
            End::Exited(r) => (r, false, false),
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
                let _ = killpg(pgid, signal);
                let r = match tokio::time::timeout(kill_timeout, child.wait()).await {
                    Ok(r) => r,
                    Err(_) => {
                        let _ = killpg(pgid, Signal::SIGKILL);
                        child.wait().await
                    }
                };
                (r, true, why.starts_with("Task exceeded"))
            }
        };
        // Whatever the leader left behind in its group goes too.
        let _ = killpg(pgid, Signal::SIGKILL);
        for p in pumps {
            let _ = p.await;
        }
        let (code, sig) = match &status {
            Ok(s) => (
                i64::from(s.code().unwrap_or(-1)),
                i64::from(s.signal().unwrap_or(0)),
            ),
            Err(_) => (-1, 0),
        };
        let mut term = TaskEvent::new("Terminated", format!("Exit Code: {code}"));
        term.exit_code = code;
        term.signal = sig;
        if killed {
            event(&state, alloc, name, term).await;
            let failed = deadline_hit;
            return finish(
                &state,
                alloc,
                name,
                failed,
                Some(TaskEvent::new("Killed", "Task successfully killed")),
            )
            .await;
        }
        let failed = !matches!(&status, Ok(s) if s.success());
        if !failed {
            return finish(&state, alloc, name, false, Some(term)).await;
        }
        term.fails_task = false;
        event(&state, alloc, name, term).await;
        if restarts >= attempts {
            let msg = format!(
                "Exceeded allowed attempts {attempts} in interval {} and mode is {mode:?}",
                humanize(interval)
            );
            let mut nr = TaskEvent::new("Not Restarting", msg);
            nr.fails_task = true;
            return finish(&state, alloc, name, true, Some(nr)).await;
        }
        restarts += 1;
        state.update_task(alloc, name, |ts| {
            ts.push(TaskEvent::new(
                "Restarting",
                format!("Task restarting in {}", humanize(delay)),
            ));
            ts.state = "pending";
            ts.restarts = restarts;
            ts.last_restart = Some(Utc::now());
            ts.pid = None;
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = kill.cancelled() => {}
        }
    }
}

/// The mock driver (Nomad's `drivers/mock` with `run_for` and `exit_code = 0`): `Started`, then
/// `Terminated` with exit code 0 after `run_for`; a stop before then is `Killing`, `Terminated`,
/// `Killed` as for a process that honours its kill signal.
async fn run_mock(
    state: &NomadState,
    alloc: &str,
    name: &str,
    run_for: Duration,
    kill: &CancellationToken,
) {
    if kill.is_cancelled() {
        let killed = TaskEvent::new("Killed", "Task successfully killed");
        return finish(state, alloc, name, false, Some(killed)).await;
    }
    state.update_task(alloc, name, |ts: &mut TaskStateRecord| {
        ts.push(TaskEvent::new("Started", "Task started by client"));
        ts.state = "running";
        if ts.started_at.is_none() {
            ts.started_at = Some(Utc::now());
        }
    });
    let stopped = tokio::select! {
        () = tokio::time::sleep(run_for) => false,
        () = kill.cancelled() => true,
    };
    if stopped {
        let ev = TaskEvent::new("Killing", "Sent interrupt. Waiting 0s before force killing");
        event(state, alloc, name, ev).await;
        let mut term = TaskEvent::new("Terminated", "Exit Code: 0");
        term.exit_code = 0;
        event(state, alloc, name, term).await;
        let killed = TaskEvent::new("Killed", "Task successfully killed");
        return finish(state, alloc, name, false, Some(killed)).await;
    }
    let mut term = TaskEvent::new("Terminated", "Exit Code: 0");
    term.exit_code = 0;
    finish(state, alloc, name, false, Some(term)).await;
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

fn write_file(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
