//! Tasks: release commands, jobs and hooks as subprocesses in a process group of
//! their own, with their output forwarded line by line, a timeout and
//! cancellation, and a record in `tasks/` while they run, so that a later attempt or
//! teardown stops one whose worker died.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::groups::{ProcRef, base_command, spawn_error, stop_all, stop_child};
use super::images::image_dir;
use super::records::{AnyRecord, EnvDirs, TaskRecord, io_error, read_json, remove_file_if_exists, write_private_json};
use crate::runtime::output::Lines;
use crate::runtime::policy::OUTPUT_DRAIN;
use crate::runtime::{LogSink, LogStream, RuntimeError, TaskOutcome, TaskRequest, fmt_duration};

/// Runs the task in the environment `dirs` (see `ProcessRuntime`'s `run_task`).
pub(super) async fn run(
    dirs: &EnvDirs,
    req: &TaskRequest,
    logs: &dyn LogSink,
    cancel: &CancellationToken,
) -> Result<TaskOutcome, RuntimeError> {
    if req.command.is_empty() {
        return Err(RuntimeError::Failed(format!("task `{}` has no command", req.name)));
    }
    let cwd = match (&req.source_dir, &req.image) {
        (Some(source), _) => source.clone(),
        (None, Some(image)) => image_dir(image)?,
        (None, None) => dirs.root.clone(),
    };
    dirs.ensure(&[])?;

    let record_path = dirs.task(&req.name);
    if let Some(leftover) = read_json::<AnyRecord>(&record_path)? {
        if leftover.process.group_alive() {
            logs.line(
                LogStream::System,
                &format!(
                    "stopping an instance of task `{}` left running by an earlier attempt (pid {})",
                    req.name, leftover.process.pid
                ),
            );
            stop_all(&[leftover.process]).await?;
        }
        remove_file_if_exists(&record_path)?;
    }
    if cancel.is_cancelled() {
        return Ok(TaskOutcome::Cancelled);
    }

    let command = base_command(&req.command, &cwd, &req.env_vars);
    let record = TaskRecordFile { path: &record_path, task: &req.name };
    run_to_completion(command, &req.command[0], logs, req.timeout, cancel, Some(record)).await
}

/// Where a task records itself while it runs.
pub(super) struct TaskRecordFile<'a> {
    pub(super) path: &'a Path,
    pub(super) task: &'a str,
}

/// Spawns `command`, forwards its output line by line, and waits for it to end, for
/// the timeout, or for `cancel`.
pub(super) async fn run_to_completion(
    mut command: Command,
    program: &str,
    logs: &dyn LogSink,
    timeout: Duration,
    cancel: &CancellationToken,
    record: Option<TaskRecordFile<'_>>,
) -> Result<TaskOutcome, RuntimeError> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| RuntimeError::Failed(spawn_error(program, &e)))?;
    let Some(pid) = child.id() else {
        return Err(RuntimeError::Failed(format!("`{program}` exited as soon as it started")));
    };
    let process = ProcRef::spawned(pid);
    // If this future is dropped half-way, the task must not run on unsupervised.
    let mut guard = KillGroupOnDrop(Some(process));
    if let Some(record) = &record {
        let task = TaskRecord { task: record.task.to_string(), process, started_at: chrono::Utc::now() };
        write_private_json(record.path, &task)?;
    }
    tracing::debug!(program, pid, "task started");

    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let ended = CancellationToken::new();
    let forward = async {
        let both = async {
            tokio::join!(forward_lines(stdout, LogStream::Stdout, logs), forward_lines(stderr, LogStream::Stderr, logs))
        };
        tokio::select! {
            _ = both => {}
            () = async { ended.cancelled().await; tokio::time::sleep(OUTPUT_DRAIN).await } => {
                tracing::warn!(program, pid, "a process outside the task's group holds its output open; no longer reading it");
            }
        }
    };
    let supervise = async {
        let outcome = tokio::select! {
            status = child.wait() => status
                .map(outcome_of)
                .map_err(io_error(format!("waiting for `{program}`"))),
            () = tokio::time::sleep(timeout) => {
                logs.line(LogStream::System, &format!("`{program}` did not finish within {}; stopping it", fmt_duration(timeout)));
                stop_child(&mut child, process).await;
                Ok(TaskOutcome::TimedOut)
            }
            () = cancel.cancelled() => {
                logs.line(LogStream::System, &format!("cancelled; stopping `{program}`"));
                stop_child(&mut child, process).await;
                Ok(TaskOutcome::Cancelled)
            }
        };
        // Like a container, the task ends with its main process: whatever it left
        // running in its group goes too (and releases the output pipes).
        if let Err(e) = signal::killpg(Pid::from_raw(process.pgid), Signal::SIGKILL)
            && e != Errno::ESRCH
        {
            tracing::warn!(program, pid, error = %e, "cannot kill what the task left running");
        }
        ended.cancel();
        outcome
    };
    let (outcome, ()) = tokio::join!(supervise, forward);
    guard.0 = None;
    if let Some(record) = &record {
        remove_file_if_exists(record.path)?;
    }
    tracing::debug!(program, pid, ?outcome, "task ended");
    outcome
}

fn outcome_of(status: ExitStatus) -> TaskOutcome {
    match (status.code(), status.signal()) {
        (Some(code), _) => TaskOutcome::Exited(code),
        (None, Some(signal)) => TaskOutcome::Signalled(signal),
        // Neither exited nor signalled can only be a stopped process, which wait() skips.
        (None, None) => TaskOutcome::Exited(-1),
    }
}

/// Sends output to the sink line by line as it arrives (see [`Lines`]).
async fn forward_lines(mut reader: impl AsyncRead + Unpin, stream: LogStream, logs: &dyn LogSink) {
    let mut lines = Lines::new(stream);
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => lines.push(&chunk[..n], logs),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a task's output");
                break;
            }
        }
    }
    lines.finish(logs);
}

/// SIGKILLs a task's process group when dropped while armed.
struct KillGroupOnDrop(Option<ProcRef>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(process) = self.0.take() {
            let _ = process.signal(Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;
    use std::time::Instant;

    use super::super::records::json_files;
    use super::super::testing::*;
    use super::*;
    use crate::runtime::Runtime;

    #[tokio::test]
    async fn run_task_forwards_output_and_returns_the_exit_code() {
        let fx = Fixture::new();
        let logs = Collect::default();
        let script = "echo one; echo two >&2; echo three; printf 'no newline'; exit 3";
        let outcome = fx
            .runtime
            .run_task(&task(sh(script), None, Duration::from_secs(30)), &logs, &CancellationToken::new())
            .await;
        assert_eq!(outcome.unwrap(), TaskOutcome::Exited(3));
        assert_eq!(logs.of(LogStream::Stdout), ["one", "three", "no newline"]);
        assert_eq!(logs.of(LogStream::Stderr), ["two"]);
        // The record of the running task is gone.
        assert_eq!(json_files(&fx.env_dir("review-1").join("tasks")).unwrap(), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn run_task_forwards_lines_as_they_arrive_and_stops_on_cancel() {
        let fx = Fixture::new();
        let cancel = CancellationToken::new();
        // The sink cancels the task when it sees "ready": only possible if the line
        // arrives while the task still runs.
        let logs = Collect { trigger: Some(("ready".to_string(), cancel.clone())), ..Collect::default() };
        let started = Instant::now();
        let request = task(sh("echo ready; sleep 30; echo never"), None, Duration::from_secs(60));
        let outcome = tokio::time::timeout(Duration::from_secs(20), fx.runtime.run_task(&request, &logs, &cancel))
            .await
            .expect("the task was not cancelled: its output was not forwarded while it ran");
        assert_eq!(outcome.unwrap(), TaskOutcome::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert_eq!(logs.of(LogStream::Stdout), ["ready"]);

        // Cancelled before it starts: it does not run at all.
        let logs = Collect::default();
        let outcome = fx.runtime.run_task(&task(sh("echo ran"), None, Duration::from_secs(5)), &logs, &cancel).await;
        assert_eq!(outcome.unwrap(), TaskOutcome::Cancelled);
        assert!(logs.of(LogStream::Stdout).is_empty());
    }

    #[tokio::test]
    async fn run_task_timeout_kills_the_whole_process_group() {
        let fx = Fixture::new();
        let logs = Collect::default();
        let started = Instant::now();
        let request = task(sh("sleep 30 & echo $!; wait"), None, Duration::from_millis(500));
        let outcome = fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await.unwrap();
        assert_eq!(outcome, TaskOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        let sleeper: i32 = logs.of(LogStream::Stdout)[0].parse().unwrap();
        eventually("the task's child is gone", Duration::from_secs(5), || !is_running(sleeper)).await;
        assert!(logs.has(LogStream::System, "did not finish within 500ms"), "{}", logs.dump());
    }

    #[tokio::test]
    async fn run_task_kills_what_the_task_leaves_behind() {
        let fx = Fixture::new();
        let logs = Collect::default();
        let request = task(sh("sleep 30 & echo $!"), None, Duration::from_secs(30));
        let started = Instant::now();
        let outcome = fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await.unwrap();
        assert_eq!(outcome, TaskOutcome::Exited(0));
        assert!(started.elapsed() < Duration::from_secs(10));
        let sleeper: i32 = logs.of(LogStream::Stdout)[0].parse().unwrap();
        eventually("the background child is gone", Duration::from_secs(5), || !is_running(sleeper)).await;
    }

    #[tokio::test]
    async fn run_task_reports_signals_and_commands_that_cannot_run() {
        let fx = Fixture::new();
        let logs = Collect::default();
        let request = task(sh("kill -9 $$"), None, Duration::from_secs(30));
        let outcome = fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await;
        assert_eq!(outcome.unwrap(), TaskOutcome::Signalled(9));

        let request = task(vec!["shiplog-no-such-command".to_string()], None, Duration::from_secs(5));
        match fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await {
            Err(RuntimeError::Failed(message)) => {
                assert!(
                    message.starts_with("cannot run `shiplog-no-such-command`: No such file or directory"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn run_task_has_a_clean_environment_and_runs_in_the_image() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let mut request = task(vec!["env".to_string()], Some(image.clone()), Duration::from_secs(30));
        request.env_vars.insert("FOO".to_string(), "bar baz".to_string());
        let logs = Collect::default();
        assert_eq!(
            fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await.unwrap(),
            TaskOutcome::Exited(0)
        );
        let mut expected = vec!["FOO=bar baz".to_string(), format!("PATH={}", std::env::var("PATH").unwrap())];
        if let Ok(home) = std::env::var("HOME") {
            expected.push(format!("HOME={home}"));
        }
        let mut seen = logs.of(LogStream::Stdout);
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "only PATH, HOME and the request's variables");

        let request = task(sh("cat version; echo; pwd -P"), Some(image.clone()), Duration::from_secs(30));
        let logs = Collect::default();
        assert!(fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await.unwrap().succeeded());
        let lines = logs.of(LogStream::Stdout);
        assert_eq!(lines[0], "v1");
        assert_eq!(Path::new(&lines[1]), fs::canonicalize(&image.0).unwrap());

        // Without an image: the environment's directory.
        let logs = Collect::default();
        let request = task(sh("pwd -P"), None, Duration::from_secs(30));
        assert!(fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await.unwrap().succeeded());
        assert_eq!(Path::new(&logs.of(LogStream::Stdout)[0]), fs::canonicalize(fx.env_dir("review-1")).unwrap());
    }

    #[tokio::test]
    async fn run_task_stops_an_instance_left_by_an_earlier_attempt() {
        let fx = Fixture::new();
        let mut orphan = spawn_orphan();
        let process = ProcRef::spawned(orphan.id());
        let dirs = fx.runtime.env_dirs(&env("review-1")).unwrap();
        dirs.ensure(&[]).unwrap();
        let record = TaskRecord { task: "release-migrate".to_string(), process, started_at: chrono::Utc::now() };
        write_private_json(&dirs.task("release-migrate"), &record).unwrap();

        let logs = Collect::default();
        let request = task(sh("true"), None, Duration::from_secs(30));
        let outcome = fx.runtime.run_task(&request, &logs, &CancellationToken::new()).await;
        assert!(outcome.unwrap().succeeded());
        assert!(logs.has(LogStream::System, "left running by an earlier attempt"), "{}", logs.dump());
        assert_eq!(orphan.wait().unwrap().signal(), Some(Signal::SIGTERM as i32));
    }
}
