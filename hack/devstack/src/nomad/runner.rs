//! The allocation runner and the `raw_exec`/`exec` driver (Nomad `client/allocrunner`,
//! `drivers/rawexec`). Each task: `Received`, `Task Setup` (task dir, Vault token, templates —
//! a failing Vault or template hook kills the task before it starts with a `Killing` event that
//! fails it, as Nomad's hooks do), then the command
//! runs as a child process in its own process group with stdout/stderr piped into the log sinks;
//! `Started`, `Terminated` (exit code, signal), restarts per the group's `RestartPolicy`, `Not
//! Restarting` when exhausted. A stop (deregister, shutdown) sends the kill signal (SIGINT by
//! default, as raw_exec) to the group, waits `KillTimeout`, then SIGKILLs: `Killing`, `Terminated`,
//! `Killed`. `exec` runs exactly like `raw_exec` (no isolation in the emulator). Children are
//! reaped by tokio; the group is SIGKILLed after the leader exits so no grandchild survives.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::NomadState;
use super::model::{TaskEvent, TaskStateRecord};
use super::spec::{DEFAULT_KILL_TIMEOUT_NS, GroupSpec, JobSpec, TaskSpec, VaultSpec};
use super::store::Launch;
use super::taskdir::{EnvInput, build_alloc_dir, build_task_dir, interpolate, task_env};
use super::template::{VaultSource, parse_env_file, render};
use super::vault_hook::{TaskToken, TokenFor, write_token_file};

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
    let tokens = futures::future::join_all(runs).await;
    // The allocation is terminal: its Vault tokens are revoked, as the Nomad server revokes the
    // accessors of a terminal allocation.
    for t in tokens.into_iter().flatten() {
        if let Err(e) = state.vault().revoke(&t.accessor).await {
            tracing::warn!(alloc = %launch.alloc_id, error = %e, "revoking a task's Vault token");
        }
    }
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

/// Runs one task to the end: prestart hooks ([`prestart`]), then the driver under its restart
/// policy ([`supervise`]). Returns the Vault token derived for it, which the allocation revokes
/// when it ends.
async fn run_task(
    state: Arc<NomadState>,
    launch: Launch,
    ti: usize,
    kill: CancellationToken,
) -> Option<TaskToken> {
    let group = &launch.job.task_groups[launch.group];
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
        run_mock(&state, alloc, name, run_for, &kill).await;
        return None;
    }
    let mut token = None;
    match prestart(&state, &launch, ti, &mut token).await {
        Ok(prepared) if task.driver == "docker" => {
            // The docker driver has a lifecycle of its own (hack/devstack/src/nomad/docker).
            let limits = Limits::of(&launch.job, group, task);
            let run = super::docker::TaskRun {
                alloc,
                job: &launch.job,
                task,
                alloc_dir: &state.alloc_dir(alloc),
                task_dir: &prepared.task_dir,
                env: &prepared.base_env,
                template_env: &prepared.template_env,
                resources: prepared.resources,
                attempts: limits.attempts,
                delay: limits.delay,
                kill: &kill,
            };
            super::docker::run_task(state.clone(), run).await;
        }
        Ok(prepared) => {
            let limits = Limits::of(&launch.job, group, task);
            supervise(&state, alloc, name, &kill, &prepared, &limits).await;
        }
        Err(ev) => finish(&state, alloc, name, true, Some(ev)).await,
    }
    token
}

/// What the driver starts: the task dir, the final environment, command and arguments.
struct Prepared {
    task_dir: PathBuf,
    env: BTreeMap<String, String>,
    command: String,
    args: Vec<String>,
    /// The environment before template variables (the docker driver builds the container's
    /// environment from it).
    base_env: BTreeMap<String, String>,
    /// Variables of `Envvars` templates.
    template_env: BTreeMap<String, String>,
    /// Allocated resources.
    resources: super::model::TaskResources,
}

/// A `Killing` event that fails the task: how Nomad's prestart hooks (vault, template) stop a
/// task that has not started (`Lifecycle.Kill` with `SetFailsTask`).
fn killing_failed(msg: String) -> TaskEvent {
    let mut e = TaskEvent::new("Killing", msg);
    e.fails_task = true;
    e
}

/// The prestart hooks in Nomad's order — task dir, Vault token, environment, templates — then
/// the driver config interpolated against the final environment. `token` receives the Vault
/// token as soon as it exists, so that it is revoked even when a later hook fails.
///
/// Errors: the event that fails the task.
async fn prestart(
    state: &NomadState,
    launch: &Launch,
    ti: usize,
    token: &mut Option<TaskToken>,
) -> Result<Prepared, TaskEvent> {
    let job: &JobSpec = &launch.job;
    let group = &job.task_groups[launch.group];
    let task: &TaskSpec = &group.tasks[ti];
    let alloc = launch.alloc_id.as_str();
    let alloc_dir = state.alloc_dir(alloc);
    let task_dir = build_task_dir(&alloc_dir, &task.name).map_err(|e| {
        setup_failed(format!(
            "failed to build task directory for {:?}: {e}",
            task.name
        ))
    })?;
    vault_prestart(state, job, alloc, task, &task_dir, token).await?;
    let resources = state
        .with_alloc(alloc, |a| a.resources.get(&task.name).copied())
        .flatten()
        .unwrap_or(super::model::TaskResources {
            cpu: 100,
            memory_mb: 300,
        });
    let vault = task.vault.as_ref();
    let env_token = token
        .as_ref()
        .filter(|_| vault.is_some_and(VaultSpec::env))
        .map(|t| t.token.as_str());
    let mut env = task_env(&EnvInput {
        job,
        group: &group.name,
        task,
        alloc_id: alloc,
        alloc_index: alloc_index(state, alloc),
        alloc_dir: &alloc_dir,
        resources,
        node: state.node(),
        vault_token: env_token,
        vault_namespace: vault.map_or("", |v| v.namespace.as_str()),
    });
    let secrets = state
        .vault()
        .source(token.as_ref().map(|t| t.token.clone()));
    let template_env = render_templates(state, task, &task_dir, &env, &secrets).await?;
    let base_env = env.clone();
    env.extend(template_env.clone());
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
    Ok(Prepared {
        task_dir,
        env,
        command,
        args,
        base_env,
        template_env,
        resources,
    })
}

/// The Vault hook (see [`super::vault_hook`]): derives the task's token and writes
/// `secrets/vault_token` unless `DisableFile`.
///
/// Errors: `Killing` (fails the task) with Nomad's message.
async fn vault_prestart(
    state: &NomadState,
    job: &JobSpec,
    alloc: &str,
    task: &TaskSpec,
    task_dir: &Path,
    token: &mut Option<TaskToken>,
) -> Result<(), TaskEvent> {
    let Some(spec) = &task.vault else {
        return Ok(());
    };
    let namespace = if job.namespace.is_empty() {
        "default"
    } else {
        &job.namespace
    };
    let who = TokenFor {
        alloc_id: alloc,
        task: &task.name,
        node_id: &state.node().id,
        namespace,
    };
    let t = state
        .vault()
        .derive(who, spec)
        .await
        .map_err(|e| killing_failed(format!("Vault: failed to derive vault token: {e}")))?;
    let written = if spec.disable_file {
        Ok(())
    } else {
        write_token_file(task_dir, &t.token)
    };
    *token = Some(t);
    written.map_err(|e| killing_failed(format!("Vault failed to write Vault token to disk: {e}")))
}

/// Renders the task's templates in order, with the task's own Vault token; returns the
/// variables of `Envvars` templates.
///
/// Errors: `Killing` (fails the task) with `Template failed: <error>`, as Nomad's template
/// manager reports a template error (`template.go`, `handleFirstRender`). Nomad's
/// consul-template first retries a failing Vault read (`vault_retry`: 12 attempts, 250ms to 1m
/// backoff) and emits `Template` events `Missing: vault.read(...)` meanwhile; the dev stack
/// fails at the first error.
async fn render_templates(
    state: &NomadState,
    task: &TaskSpec,
    task_dir: &Path,
    env: &BTreeMap<String, String>,
    secrets: &VaultSource,
) -> Result<BTreeMap<String, String>, TaskEvent> {
    let failed = |msg: String| killing_failed(format!("Template failed: {msg}"));
    let mut template_env = BTreeMap::new();
    for t in &task.templates {
        let text = render(
            &t.embedded_tmpl,
            &t.left_delim,
            &t.right_delim,
            env,
            secrets,
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
        let dest = interpolate(&t.dest_path, env, state.node());
        let dest = task_dir.join(dest.trim_start_matches('/'));
        if !dest.starts_with(task_dir) || t.dest_path.split('/').any(|c| c == "..") {
            return Err(failed(format!(
                "destination {:?} escapes the task directory",
                t.dest_path
            )));
        }
        let perms = if t.perms.is_empty() { "0644" } else { &t.perms };
        let mode = u32::from_str_radix(perms, 8)
            .map_err(|_| failed(format!("Perms {perms:?} is not an octal file mode")))?;
        write_file(&dest, text.as_bytes(), mode)
            .map_err(|e| failed(format!("writing {}: {e}", dest.display())))?;
        if t.envvars {
            template_env.extend(parse_env_file(&text));
        }
    }
    Ok(template_env)
}

/// Kill signal, timeouts and restart policy of a task.
struct Limits {
    kill_timeout: Duration,
    signal: Signal,
    deadline: Option<Duration>,
    attempts: u64,
    delay: Duration,
    interval: Duration,
    mode: String,
}

impl Limits {
    fn of(job: &JobSpec, group: &GroupSpec, task: &TaskSpec) -> Limits {
        let ns = |v: i64| Duration::from_nanos(u64::try_from(v).unwrap_or(0));
        let kill_signal = if task.kill_signal.is_empty() {
            "SIGINT"
        } else {
            &task.kill_signal
        };
        let policy = group.restart_policy.clone().unwrap_or_default();
        Limits {
            kill_timeout: ns(task.kill_timeout.unwrap_or(DEFAULT_KILL_TIMEOUT_NS)),
            signal: kill_signal.parse::<Signal>().unwrap_or(Signal::SIGINT),
            deadline: task
                .max_run_duration
                .or(job.max_run_duration)
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_nanos),
            attempts: u64::try_from(policy.attempts.unwrap_or(3)).unwrap_or(0),
            delay: ns(policy.delay.unwrap_or(15_000_000_000)),
            interval: ns(policy.interval.unwrap_or(86_400_000_000_000)),
            mode: policy.mode.unwrap_or_else(|| "fail".into()),
        }
    }
}

/// How one run of the process ended.
struct RunEnd {
    status: std::io::Result<std::process::ExitStatus>,
    /// Stopped by a kill or the deadline.
    killed: bool,
    /// Stopped by the deadline (the task fails).
    deadline_hit: bool,
}

/// Runs the process, restarting it per the restart policy, until it succeeds, fails for good or
/// is killed.
async fn supervise(
    state: &NomadState,
    alloc: &str,
    name: &str,
    kill: &CancellationToken,
    p: &Prepared,
    limits: &Limits,
) {
    let sinks = state.sinks(alloc, name);
    let mut restarts = 0u64;
    loop {
        if kill.is_cancelled() {
            let killed = TaskEvent::new("Killed", "Task successfully killed");
            return finish(state, alloc, name, false, Some(killed)).await;
        }
        let mut child = match spawn(p) {
            Ok(c) => c,
            Err(ev) => {
                event(state, alloc, name, ev).await;
                let nr = TaskEvent::new("Not Restarting", "Error was unrecoverable");
                return finish(state, alloc, name, true, Some(nr)).await;
            }
        };
        let pid = child.id().unwrap_or(0);
        state.record_pid(pid);
        let pumps = pump_logs(&mut child, &sinks);
        state.update_task(alloc, name, |ts: &mut TaskStateRecord| {
            ts.push(TaskEvent::new("Started", "Task started by client"));
            ts.state = "running";
            ts.pid = Some(pid);
            if ts.started_at.is_none() {
                ts.started_at = Some(Utc::now());
            }
        });
        let pgid = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
        let end = wait_run(state, alloc, name, &mut child, pgid, kill, limits).await;
        // Whatever the leader left behind in its group goes too.
        let _ = killpg(pgid, Signal::SIGKILL);
        for p in pumps {
            let _ = p.await;
        }
        let mut term = terminated(&end.status);
        if end.killed {
            event(state, alloc, name, term).await;
            let killed = TaskEvent::new("Killed", "Task successfully killed");
            return finish(state, alloc, name, end.deadline_hit, Some(killed)).await;
        }
        if matches!(&end.status, Ok(s) if s.success()) {
            return finish(state, alloc, name, false, Some(term)).await;
        }
        term.fails_task = false;
        event(state, alloc, name, term).await;
        if restarts >= limits.attempts {
            let msg = format!(
                "Exceeded allowed attempts {} in interval {} and mode is {:?}",
                limits.attempts,
                humanize(limits.interval),
                limits.mode
            );
            let mut nr = TaskEvent::new("Not Restarting", msg);
            nr.fails_task = true;
            return finish(state, alloc, name, true, Some(nr)).await;
        }
        restarts += 1;
        state.update_task(alloc, name, |ts| {
            ts.push(TaskEvent::new(
                "Restarting",
                format!("Task restarting in {}", humanize(limits.delay)),
            ));
            ts.state = "pending";
            ts.restarts = restarts;
            ts.last_restart = Some(Utc::now());
            ts.pid = None;
        });
        tokio::select! {
            () = tokio::time::sleep(limits.delay) => {}
            () = kill.cancelled() => {}
        }
    }
}

/// Starts the process in its own process group with exactly the task environment.
///
/// Errors: the `Driver Failure` event, with raw_exec's messages.
fn spawn(p: &Prepared) -> Result<tokio::process::Child, TaskEvent> {
    let mut cmd = tokio::process::Command::new(&p.command);
    cmd.args(&p.args)
        .current_dir(&p.task_dir)
        .env_clear()
        .envs(&p.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn().map_err(|e| {
        let command = &p.command;
        let err = if command.is_empty() {
            "failed to launch command with executor: missing command in driver config".to_string()
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
        ev
    })
}

/// Pipes the child's stdout and stderr into the task's log sinks.
fn pump_logs(
    child: &mut tokio::process::Child,
    sinks: &[Arc<super::logs::LogSink>],
) -> Vec<tokio::task::JoinHandle<std::io::Result<()>>> {
    let mut pumps = Vec::new();
    if let (Some(out), [o, e]) = (child.stdout.take(), sinks) {
        let o = o.clone();
        pumps.push(tokio::spawn(async move { o.pump(out).await }));
        if let Some(err) = child.stderr.take() {
            let e = e.clone();
            pumps.push(tokio::spawn(async move { e.pump(err).await }));
        }
    }
    pumps
}

/// Waits for the process to exit, or stops it on a kill or at its deadline: `Killing`, the kill
/// signal to the group, `KillTimeout`, then SIGKILL.
async fn wait_run(
    state: &NomadState,
    alloc: &str,
    name: &str,
    child: &mut tokio::process::Child,
    pgid: Pid,
    kill: &CancellationToken,
    limits: &Limits,
) -> RunEnd {
    let sleep_deadline = async {
        match limits.deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        r = child.wait() => {
            return RunEnd { status: r, killed: false, deadline_hit: false };
        }
        () = kill.cancelled() => "Sent interrupt",
        () = sleep_deadline => "Task exceeded its max run duration",
    };
    let mut ev = TaskEvent::new(
        "Killing",
        format!(
            "{why}. Waiting {}s before force killing",
            limits.kill_timeout.as_secs_f64()
        ),
    );
    ev.kill_timeout = i64::try_from(limits.kill_timeout.as_nanos()).unwrap_or(i64::MAX);
    event(state, alloc, name, ev).await;
    let _ = killpg(pgid, limits.signal);
    let status = match tokio::time::timeout(limits.kill_timeout, child.wait()).await {
        Ok(r) => r,
        Err(_) => {
            let _ = killpg(pgid, Signal::SIGKILL);
            child.wait().await
        }
    };
    RunEnd {
        status,
        killed: true,
        deadline_hit: why.starts_with("Task exceeded"),
    }
}

/// The `Terminated` event of an exit status.
fn terminated(status: &std::io::Result<std::process::ExitStatus>) -> TaskEvent {
    let (code, sig) = match status {
        Ok(s) => (
            i64::from(s.code().unwrap_or(-1)),
            i64::from(s.signal().unwrap_or(0)),
        ),
        Err(_) => (-1, 0),
    };
    let mut term = TaskEvent::new("Terminated", format!("Exit Code: {code}"));
    term.exit_code = code;
    term.signal = sig;
    term
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
