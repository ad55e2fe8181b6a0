//! Processes that are always stopped, with everything they started, even when a test fails.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::wait::wait_until;

/// A child process leading its own session (and process group), killed with everything in that
/// session when dropped.
///
/// The session, not only the group, is what gets cleaned up: the dev stack starts every Nomad
/// task in a process group of its own (as Nomad's executor does), so a group kill of a SIGKILLed
/// dev stack would leave its running tasks behind. Descendants keep the session ID unless they
/// call setsid(2) themselves, which nothing under test does.
#[derive(Debug)]
pub struct ProcessGuard {
    pub(crate) child: Option<Child>,
    name: String,
}

impl ProcessGuard {
    /// A command that runs `program` as the leader of a new session, through util-linux
    /// `setsid`: for a child that is not a group leader it calls setsid(2) and execs in place, so
    /// the PID [`ProcessGuard::spawn`] records is the program's own.
    pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("setsid");
        cmd.arg(program);
        cmd
    }

    /// Spawns `cmd`, built with [`ProcessGuard::command`].
    ///
    /// Errors: spawn failure, naming the program.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<ProcessGuard> {
        let child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        Ok(ProcessGuard {
            child: Some(child),
            name: name.to_string(),
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::killpg(pid, signal).with_context(|| format!("signalling {}", self.name))
    }

    /// SIGKILLs the session (every process in it, its tasks' own process groups included) and
    /// reaps the child.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let sid = c.id() as i32;
            let _ = c.kill();
            let _ = c.wait();
            kill_session(sid);
        }
    }

    /// SIGTERMs the group and waits up to `timeout` for the child to exit, then SIGKILLs.
    /// Returns the exit status if it exited by itself.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                kill_session(c.id() as i32);
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        kill_session(c.id() as i32);
        None
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// SIGKILLs every process whose session ID is `sid` (read from `/proc/<pid>/stat`), repeating
/// until none is left (a dying process may have forked) or 5 s pass.
fn kill_session(sid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let members = session_members(sid);
        if members.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in members {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// PIDs of the live (not zombie) processes in session `sid`.
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid pgrp session ...`; comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(3).and_then(|s| s.parse().ok()) == Some(sid)
        })
        .collect()
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until a process whose command line contains `pattern` is running (`running = true`) or
/// until none is (`false`), as `pgrep -f` sees it.
///
/// Errors: the timeout, naming the pattern.
pub async fn wait_process(pattern: &str, running: bool, timeout: Duration) -> anyhow::Result<()> {
    let what = if running {
        format!("a process matching {pattern:?} runs")
    } else {
        format!("no process matches {pattern:?}")
    };
    wait_until(timeout, &what, || async {
        let out = Command::new("pgrep").args(["-f", pattern]).output()?;
        Ok(out.stdout.is_empty() != running)
    })
    .await
}
