//! Process groups: how the runtime starts a command away from shiplog (its own
//! group, a clean environment), recognises a process it started again from its
//! record (pid, group, start time against pid reuse), and stops a group it may not
//! be the parent of (SIGTERM, then SIGKILL).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::records::io_error;
use crate::runtime::policy::STOP_GRACE;
use crate::runtime::{RuntimeError, deadline_after};

/// How long to wait for a process group to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for a process group that is not our child to exit.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// `PATH` for processes when shiplog itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A process group this runtime started, as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ProcRef {
    /// The process group leader, the process shiplog spawned.
    pub(super) pid: i32,
    pub(super) pgid: i32,
    /// The leader's start time (clock ticks after boot, from `/proc/<pid>/stat`), to
    /// tell it from a later process that got the same pid. `None` without procfs.
    pub(super) start_time: Option<u64>,
}

/// A command with a clean environment (`PATH` and `HOME` of shiplog plus `vars`), in
/// its own process group so that it and everything it starts can be signalled
/// together, and away from shiplog's terminal signals (Ctrl-C).
pub(super) fn base_command(command: &[String], cwd: &Path, vars: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()));
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    cmd.envs(vars).stdin(Stdio::null()).process_group(0);
    cmd
}

/// What became of a recorded group leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leader {
    Alive {
        pgrp: i32,
    },
    /// Exited, not yet reaped by its parent.
    Zombie,
    /// The pid now belongs to another process: ours is gone, and so is its group
    /// (Linux does not reuse a pid while a process group of that id exists).
    Reused,
    Gone,
}

impl ProcRef {
    pub(super) fn spawned(pid: u32) -> ProcRef {
        let pid = i32::try_from(pid).expect("pids fit in i32");
        ProcRef { pid, pgid: pid, start_time: proc_stat(pid).map(|stat| stat.start_time) }
    }

    /// A record that could never be ours: signalling it would hit shiplog itself, its
    /// group, or every process.
    fn is_sane(&self) -> bool {
        self.pid > 1 && self.pgid > 1 && Pid::from_raw(self.pgid) != nix::unistd::getpgrp()
    }

    fn leader(&self) -> Leader {
        if !self.is_sane() {
            return Leader::Gone;
        }
        // kill(pid, 0) fails with EPERM for a live process of another user.
        if signal::kill(Pid::from_raw(self.pid), None) == Err(Errno::ESRCH) {
            return Leader::Gone;
        }
        if !have_procfs() {
            return Leader::Alive { pgrp: self.pgid };
        }
        match proc_stat(self.pid) {
            None => Leader::Gone,
            Some(stat) if self.start_time.is_some_and(|t| t != stat.start_time) => Leader::Reused,
            Some(stat) if matches!(stat.state, 'Z' | 'X') => Leader::Zombie,
            Some(stat) => Leader::Alive { pgrp: stat.pgrp },
        }
    }

    /// The process shiplog started is still running.
    pub(super) fn alive(&self) -> bool {
        matches!(self.leader(), Leader::Alive { .. })
    }

    /// The process or anything left in its group is still running.
    pub(super) fn group_alive(&self) -> bool {
        match self.leader() {
            Leader::Alive { .. } => true,
            Leader::Reused => false,
            Leader::Zombie | Leader::Gone => self.is_sane() && group_has_live_members(self.pgid),
        }
    }

    /// Signals the group (and the leader, if it moved to another group). Returns
    /// whether anything was there to signal; "already gone" is not an error.
    pub(super) fn signal(&self, sig: Signal) -> Result<bool, RuntimeError> {
        let leader = self.leader();
        if !self.is_sane() || leader == Leader::Reused {
            return Ok(false);
        }
        let context = || format!("sending {sig} to process group {}", self.pgid);
        let mut hit = match signal::killpg(Pid::from_raw(self.pgid), sig) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(e) => return Err(io_error(context())(e.into())),
        };
        if let Leader::Alive { pgrp } = leader
            && pgrp != self.pgid
        {
            match signal::kill(Pid::from_raw(self.pid), sig) {
                Ok(()) => hit = true,
                Err(Errno::ESRCH) => {}
                Err(e) => return Err(io_error(context())(e.into())),
            }
        }
        Ok(hit)
    }
}

/// SIGTERM to the child's group, SIGKILL after the grace period; waits (bounded) for
/// the child to exit.
pub(super) async fn stop_child(child: &mut Child, process: ProcRef) {
    if let Err(e) = process.signal(Signal::SIGTERM) {
        tracing::warn!(pid = process.pid, error = %e, "cannot send SIGTERM");
    }
    if let Ok(Ok(_)) = tokio::time::timeout(STOP_GRACE, child.wait()).await {
        return;
    }
    if let Err(e) = process.signal(Signal::SIGKILL) {
        tracing::warn!(pid = process.pid, error = %e, "cannot send SIGKILL");
    }
    if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
        tracing::warn!(pid = process.pid, "process did not exit after SIGKILL");
    }
}

/// Stops process groups that are not (necessarily) our children: SIGTERM to all,
/// SIGKILL to those still there after the grace period. Fails only if a group
/// survives SIGKILL or cannot be signalled.
pub(super) async fn stop_all(processes: &[ProcRef]) -> Result<(), RuntimeError> {
    let mut signalled = Vec::new();
    for process in processes {
        if process.signal(Signal::SIGTERM)? {
            signalled.push(*process);
        }
    }
    if signalled.is_empty() || wait_gone(&signalled, STOP_GRACE).await {
        return Ok(());
    }
    for process in &signalled {
        if process.group_alive() {
            tracing::warn!(pid = process.pid, "still running {STOP_GRACE:?} after SIGTERM; sending SIGKILL");
            process.signal(Signal::SIGKILL)?;
        }
    }
    if wait_gone(&signalled, KILL_WAIT).await {
        return Ok(());
    }
    let left: Vec<String> = signalled.iter().filter(|p| p.group_alive()).map(|p| p.pgid.to_string()).collect();
    Err(RuntimeError::Failed(format!("process group(s) {} did not stop after SIGKILL", left.join(", "))))
}

/// Polls until no process of the groups runs, or the timeout passes.
async fn wait_gone(processes: &[ProcRef], timeout: Duration) -> bool {
    let deadline = deadline_after(timeout);
    loop {
        if !processes.iter().any(ProcRef::group_alive) {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep_until((now + EXIT_POLL).min(deadline)).await;
    }
}

struct ProcStat {
    state: char,
    pgrp: i32,
    start_time: u64,
}

/// Fields of `/proc/<pid>/stat` (Linux), or `None` if there is no such process.
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 of proc(5): field n is fields[n - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn have_procfs() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| Path::new("/proc/self/stat").exists())
}

/// Whether a process group still has a member that is not a zombie.
fn group_has_live_members(pgid: i32) -> bool {
    if signal::killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    if !have_procfs() {
        return true;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return true;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .any(|stat| stat.pgrp == pgid && !matches!(stat.state, 'Z' | 'X'))
}

pub(super) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by {}", signal_name(signal)),
        (None, None) => "ended".to_string(),
    }
}

pub(super) fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string())
}

/// "cannot run `x`: No such file or directory (os error 2)"
pub(super) fn spawn_error(program: &str, error: &io::Error) -> String {
    format!("cannot run `{program}`: {error}")
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::super::testing::{is_running, spawn_orphan};
    use super::*;

    #[tokio::test]
    async fn a_reused_pid_is_not_the_recorded_process() {
        let mut other = spawn_orphan();
        let genuine = ProcRef::spawned(other.id());
        assert!(genuine.start_time.is_some());
        assert!(genuine.alive());
        let reused = ProcRef { start_time: genuine.start_time.map(|t| t + 1), ..genuine };
        assert!(!reused.alive());
        assert!(!reused.group_alive());
        assert!(!reused.signal(Signal::SIGKILL).unwrap());
        assert!(is_running(genuine.pid), "a process that merely has the recorded pid was signalled");

        // Records that would hit shiplog itself or everything are never signalled.
        let ours = ProcRef { pid: std::process::id() as i32, pgid: nix::unistd::getpgrp().as_raw(), start_time: None };
        assert!(!ours.signal(Signal::SIGTERM).unwrap());
        let everyone = ProcRef { pid: -1, pgid: -1, start_time: None };
        assert!(!everyone.signal(Signal::SIGTERM).unwrap());

        assert!(genuine.signal(Signal::SIGKILL).unwrap());
        assert_eq!(other.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));
        assert!(!genuine.alive());
        assert!(!genuine.signal(Signal::SIGKILL).unwrap(), "already gone is not an error");
    }
}
