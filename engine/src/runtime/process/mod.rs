//! The `process` runtime, shiplog's embedded default: services are supervised local
//! processes, tasks are subprocesses, images are directories. No Docker.
//!
//! # State
//!
//! Everything lives under the runtime's root (shiplog uses `.shiplog/process`), so
//! another shiplog process with the same root (a worker resuming a run after the
//! first one was killed) sees and controls the same services:
//!
//! ```text
//! root/images/<app>/<service>/<commit>-<context hash>/   built images (copies of the context)
//! root/environments/<app>/<env>/                          an environment's working directory
//!     volumes/<name>/                                     named volumes
//!     services/<service>.json                             the version that serves (mode 0600)
//!     candidates/<service>.json                           a version being rolled out, not yet healthy
//!     tasks/<task>.json                                   a task that is running
//!     logs/<service>.log                                  services' stdout and stderr, appended
//! ```
//!
//! Services are not children shiplog keeps: they run in their own process group,
//! survive the shiplog process that started them, and are found again through their
//! state file (pid, process group, the process's start time to detect pid reuse, and
//! everything needed to start that version again: image, command, environment,
//! ports, volumes). State files hold the service's environment, secrets included, so
//! they are created with mode 0600 in directories of mode 0700, and always replaced
//! atomically (write a temporary file, then rename).
//!
//! # How services see their environment
//!
//! - Working directory: the image directory.
//! - Environment: `PATH` and `HOME` of shiplog, the request's variables, `PORT` = the
//!   first port (unless the request sets `PORT` itself), and one variable per volume:
//!   `SHIPLOG_VOLUME_<NAME>` (upper-cased, `-` becomes `_`) = the volume's directory.
//!   A volume's mount path means nothing to a local process and is ignored.
//! - Standard input is `/dev/null`; standard output and error are appended to
//!   `logs/<service>.log`.
//! - A `HealthCheck::Command` runs like a task, from the image directory with the
//!   service's environment; a `HealthCheck::Http` is an HTTP/1.0 GET on 127.0.0.1.
//!
//! # Limitations
//!
//! - Local processes cannot share a port, so a roll-out stops the old version
//!   before it starts the new one: the service is briefly unavailable (from the old
//!   version's exit until the new one listens), and for as long again when a failed
//!   new version is replaced by the old one.
//! - One process per service: `replicas` above 1 runs one process (and says so in the
//!   roll-out's log); `replicas` 0 stops the service.
//! - Without a health check a service counts as healthy once it has run for 300 ms.
//! - Nothing restarts a service that exits on its own; `observe` reports it as not
//!   running and the next roll-out starts it again.
//! - Images are shared by the environments of an application and never removed;
//!   services should write to volumes, not to their working directory.
//! - A task whose shiplog process dies keeps running until the task is run again or
//!   the environment is torn down (both stop it, from its record in `tasks/`).
//! - Callers do not act on the same environment concurrently (the run lease ensures
//!   it); the runtime takes no locks of its own.

mod groups;
mod health;
mod images;
mod records;
mod services;
mod tasks;
#[cfg(test)]
mod testing;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use self::groups::stop_all;
use self::records::{EnvDirs, ServiceState, io_error, json_files, read_json};
use super::{
    BuildRequest, EnvironmentRef, Image, ImageRef, LogSink, ObservedService, PushRequest, Runtime, RuntimeError,
    ServiceRequest, TaskOutcome, TaskRequest, check_name,
};

pub use self::services::volume_variable;

/// The `process` runtime. Cheap to construct; holds no state besides its root, so any
/// number of instances (in any number of processes) can share one root.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    root: PathBuf,
}

impl ProcessRuntime {
    /// A runtime keeping its images and environments under `root` (created on first
    /// use). A relative root is made absolute against the current directory now, so
    /// image paths stay valid whatever the working directory later is.
    pub fn new(root: impl Into<PathBuf>) -> ProcessRuntime {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        ProcessRuntime { root }
    }

    /// The directory holding the runtime's images and environments (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn env_dirs(&self, env: &EnvironmentRef) -> Result<EnvDirs, RuntimeError> {
        EnvDirs::of(&self.root, env)
    }
}

impl Runtime for ProcessRuntime {
    /// The image is a copy of `source_dir/context` without `.git`, in
    /// `root/images/<app>/<service>/<commit>-<context hash>`; an existing copy for the
    /// same commit and context is reused. The copy is made in a temporary directory
    /// and renamed into place, so an image directory is always complete.
    async fn build(&self, req: &BuildRequest, logs: &dyn LogSink) -> Result<Image, RuntimeError> {
        images::build(&self.root, req, logs).await
    }

    /// Images here are directories, which no registry takes: a run that has a
    /// release stage to push fails there, saying so.
    async fn push(&self, req: &PushRequest, _logs: &dyn LogSink) -> Result<ImageRef, RuntimeError> {
        Err(RuntimeError::Failed(format!(
            "the process runtime cannot push {} to {}: its images are directories; use the docker or kubernetes \
             runtime with a registry",
            req.service, req.repository
        )))
    }

    /// Creates the environment's working directory and `volumes/<name>/` for each
    /// volume.
    async fn ensure_infrastructure(&self, env: &EnvironmentRef, volumes: &[String]) -> Result<(), RuntimeError> {
        let dirs = self.env_dirs(env)?;
        for volume in volumes {
            check_name("volume", volume)?;
        }
        dirs.ensure(&volumes.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Runs the command from the image directory (the environment's directory without
    /// an image) in its own process group, with a clean environment: `PATH` and
    /// `HOME` of shiplog plus the request's variables. Output is forwarded line by
    /// line as it arrives. On timeout or cancellation the whole group gets SIGTERM,
    /// then SIGKILL after 5 s. Processes the task leaves behind in its group when it
    /// exits are killed. An instance of the same task left running by an earlier
    /// attempt (its worker died) is stopped first.
    async fn run_task(
        &self,
        req: &TaskRequest,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, RuntimeError> {
        tasks::run(&self.env_dirs(&req.env)?, req, logs, cancel).await
    }

    /// Rolls the service out as the module docs describe: stop the old version, start
    /// the new one, wait until it is healthy and record it; if it never becomes
    /// healthy, stop it and start the old version again from its state file. A
    /// request equal to what runs (same image, command, variables, ports and volumes)
    /// changes nothing; a version that has died is started again.
    async fn roll_out(&self, req: &ServiceRequest, logs: &dyn LogSink) -> Result<(), RuntimeError> {
        services::roll_out(&self.env_dirs(&req.env)?, req, logs).await
    }

    /// Stops every process group recorded for the environment (services, candidates,
    /// tasks) and removes its directory, volumes included. Tearing down an unknown or
    /// already removed environment succeeds. If a process cannot be stopped the
    /// directory is kept, so a retry still finds it.
    async fn teardown(&self, env: &EnvironmentRef) -> Result<(), RuntimeError> {
        let dirs = self.env_dirs(env)?;
        if !dirs.root.exists() {
            return Ok(());
        }
        let processes = dirs.recorded_processes()?;
        stop_all(&processes).await?;
        match fs::remove_dir_all(&dirs.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(format!("removing {}", dirs.root.display()))(e)),
        }
        // The application's directory goes with its last environment; failing is fine.
        let _ = fs::remove_dir(&dirs.app);
        tracing::info!(application = %env.application, environment = %env.environment, stopped = processes.len(), "torn down");
        Ok(())
    }

    /// One entry per state file, sorted by service: `running` means the recorded
    /// process (the one shiplog started, not a later process with the same pid) is
    /// alive.
    async fn observe(&self, env: &EnvironmentRef) -> Result<Vec<ObservedService>, RuntimeError> {
        let dirs = self.env_dirs(env)?;
        let mut observed = Vec::new();
        for path in json_files(&dirs.services())? {
            if let Some(state) = read_json::<ServiceState>(&path)? {
                observed.push(ObservedService {
                    service: state.service,
                    image: state.spec.image,
                    running: state.process.alive(),
                    // Nothing checks a local process continuously.
                    health: None,
                });
            }
        }
        observed.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(observed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use nix::sys::signal::Signal;

    use super::testing::*;
    use super::*;
    use crate::runtime::LogStream;

    #[tokio::test]
    async fn teardown_stops_services_and_tasks_and_removes_the_environment() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let environment = env("review-1");
        fx.runtime.ensure_infrastructure(&environment, &["data".to_string()]).await.unwrap();
        fx.runtime.roll_out(&service(&image, sh("exec sleep 30")), &Collect::default()).await.unwrap();
        let mut worker = service(&image, sh("sleep 30 & exec sleep 30"));
        worker.service = "worker".to_string();
        fx.runtime.roll_out(&worker, &Collect::default()).await.unwrap();
        let observed = fx.runtime.observe(&environment).await.unwrap();
        assert_eq!(observed.iter().map(|o| o.service.as_str()).collect::<Vec<_>>(), ["web", "worker"]);
        let pids = [fx.state("review-1", "web").process.pid, fx.state("review-1", "worker").process.pid];

        // A task that is running when the environment goes.
        let runtime = fx.runtime.clone();
        let logs = Arc::new(Collect::default());
        let task_logs = logs.clone();
        let running = tokio::spawn(async move {
            let request = task(sh("echo $$; exec sleep 30"), None, Duration::from_secs(60));
            runtime.run_task(&request, &*task_logs, &CancellationToken::new()).await
        });
        eventually("the task runs", Duration::from_secs(5), || !logs.of(LogStream::Stdout).is_empty()).await;
        let task_pid: i32 = logs.of(LogStream::Stdout)[0].parse().unwrap();

        let started = Instant::now();
        fx.runtime.teardown(&environment).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        for pid in pids.into_iter().chain([task_pid]) {
            eventually("every process is gone", Duration::from_secs(5), || !is_running(pid)).await;
        }
        assert_eq!(running.await.unwrap().unwrap(), TaskOutcome::Signalled(Signal::SIGTERM as i32));
        assert!(!fx.env_dir("review-1").exists());
        assert!(fx.runtime.observe(&environment).await.unwrap().is_empty());

        // Again, and for an environment that never existed.
        fx.runtime.teardown(&environment).await.unwrap();
        fx.runtime.teardown(&env("never-existed")).await.unwrap();
    }

    #[tokio::test]
    async fn another_runtime_on_the_same_root_controls_the_services() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let request = service(&image, sh("exec sleep 30"));
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        let process = fx.state("review-1", "web").process;

        let second = ProcessRuntime::new(fx.root.path().join("process"));
        let environment = env("review-1");
        let observed = second.observe(&environment).await.unwrap();
        assert_eq!(observed, [ObservedService { service: "web".to_string(), image, running: true, health: None }]);
        let logs = Collect::default();
        second.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "nothing to do"), "{}", logs.dump());
        second.teardown(&environment).await.unwrap();
        eventually("the service is gone", Duration::from_secs(5), || !is_running(process.pid)).await;
        assert!(fx.runtime.observe(&environment).await.unwrap().is_empty());
    }
}
