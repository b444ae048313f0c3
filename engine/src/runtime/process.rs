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

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::health::http_probe;
use super::{
    BuildRequest, EnvironmentRef, HealthCheck, Image, LogSink, LogStream, ObservedService, Runtime, RuntimeError,
    ServiceRequest, TaskOutcome, TaskRequest, check_name, copy_tree, deadline_after, fmt_duration,
};

/// How long a process group may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for a process group to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for a process group that is not our child to exit.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// Interval between health checks.
const HEALTH_POLL: Duration = Duration::from_millis(250);
/// Without a health check, a service is healthy once it has run this long.
const SETTLE: Duration = Duration::from_millis(300);
/// The longest one HTTP health check may take.
const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Where health checks find local services.
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The shortest time a command health check is given, even at the deadline.
const MIN_COMMAND_PROBE: Duration = Duration::from_secs(1);
/// How long a task's output is still read once the task has ended: a process that
/// left the task's process group may hold the pipes open forever.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Longer output lines are forwarded in pieces of this many bytes.
const MAX_LINE: u64 = 64 * 1024;
/// How much of a failed service's log is shown in the roll-out's log.
const FAILED_OUTPUT_LINES: usize = 40;
const FAILED_OUTPUT_BYTES: u64 = 64 * 1024;
/// `PATH` for processes when shiplog itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

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
        check_name("application", &env.application)?;
        check_name("environment", &env.environment)?;
        let app = self.root.join("environments").join(&env.application);
        Ok(EnvDirs { root: app.join(&env.environment), app })
    }
}

/// The directories and files of one environment.
struct EnvDirs {
    app: PathBuf,
    root: PathBuf,
}

impl EnvDirs {
    fn services(&self) -> PathBuf {
        self.root.join("services")
    }
    fn state(&self, service: &str) -> PathBuf {
        self.services().join(format!("{service}.json"))
    }
    fn candidates(&self) -> PathBuf {
        self.root.join("candidates")
    }
    fn candidate(&self, service: &str) -> PathBuf {
        self.candidates().join(format!("{service}.json"))
    }
    fn tasks(&self) -> PathBuf {
        self.root.join("tasks")
    }
    fn task(&self, name: &str) -> PathBuf {
        self.tasks().join(format!("{}.json", file_name_for(name)))
    }
    fn log(&self, service: &str) -> PathBuf {
        self.root.join("logs").join(format!("{service}.log"))
    }
    fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// Creates the environment's directories and the given volumes. The directories
    /// holding state and logs (which contain secrets) are private to the user.
    fn ensure(&self, volumes: &[&str]) -> Result<(), RuntimeError> {
        for dir in [self.services(), self.candidates(), self.tasks(), self.root.join("logs")] {
            create_private_dir(&dir)?;
        }
        for volume in volumes {
            let dir = self.volume(volume);
            fs::create_dir_all(&dir).map_err(io_error(format!("creating volume directory {}", dir.display())))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Records kept on disk

/// A process group this runtime started, as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ProcRef {
    /// The process group leader, the process shiplog spawned.
    pid: i32,
    pgid: i32,
    /// The leader's start time (clock ticks after boot, from `/proc/<pid>/stat`), to
    /// tell it from a later process that got the same pid. `None` without procfs.
    start_time: Option<u64>,
}

/// What a service runs: two roll-outs with equal specs run the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ServiceSpec {
    image: Image,
    command: Vec<String>,
    env_vars: BTreeMap<String, String>,
    ports: Vec<u16>,
    volumes: Vec<(String, String)>,
}

impl ServiceSpec {
    fn of(req: &ServiceRequest) -> ServiceSpec {
        ServiceSpec {
            image: req.image.clone(),
            command: req.command.clone(),
            env_vars: req.env_vars.clone(),
            ports: req.ports.clone(),
            volumes: req.volumes.clone(),
        }
    }
}

/// A state file: one running (or, after a crash, formerly running) service version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceState {
    service: String,
    #[serde(flatten)]
    spec: ServiceSpec,
    health_check: Option<HealthCheck>,
    health_timeout_ms: u64,
    process: ProcRef,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// A running task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TaskRecord {
    task: String,
    process: ProcRef,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// The part of any record that teardown needs.
#[derive(Debug, Deserialize)]
struct AnyRecord {
    process: ProcRef,
}

// ---------------------------------------------------------------------------------
// The runtime

impl Runtime for ProcessRuntime {
    /// The image is a copy of `source_dir/context` without `.git`, in
    /// `root/images/<app>/<service>/<commit>-<context hash>`; an existing copy for the
    /// same commit and context is reused. The copy is made in a temporary directory
    /// and renamed into place, so an image directory is always complete.
    async fn build(&self, req: &BuildRequest, logs: &dyn LogSink) -> Result<Image, RuntimeError> {
        let (context, source) = req.context_dir()?;
        if let Some(dockerfile) = &req.dockerfile {
            logs.line(
                LogStream::System,
                &format!(
                    "the process runtime ignores the Dockerfile `{dockerfile}`: its image is a copy of the build context"
                ),
            );
        }
        if !req.args.is_empty() || req.target.is_some() {
            logs.line(LogStream::System, "the process runtime ignores build arguments and targets");
        }
        let images = self.root.join("images").join(&req.env.application).join(&req.service);
        let key = format!("{}-{}", commit_component(&req.commit), &sha256_hex(&context)[..12]);
        let target = images.join(&key);
        if target.is_dir() {
            logs.line(
                LogStream::System,
                &format!("reusing image {} (commit {}, context `{context}`)", target.display(), req.commit),
            );
            return Ok(image_of(&target));
        }

        logs.line(LogStream::System, &format!("building image of {} from `{context}` at {}", req.service, req.commit));
        let started = Instant::now();
        let (root, target_for_copy) = (self.root.clone(), target.clone());
        let outcome =
            tokio::task::spawn_blocking(move || snapshot(&source, &images, &target_for_copy, &root))
                .await
                .map_err(|e| RuntimeError::Failed(format!("building the image of {} panicked: {e}", req.service)))??;
        match outcome {
            Snapshot::Copied(files) => {
                tracing::info!(service = %req.service, image = %target.display(), files, "built image");
                logs.line(
                    LogStream::System,
                    &format!("copied {files} files into {} in {}", target.display(), fmt_duration(started.elapsed())),
                );
            }
            Snapshot::BuiltElsewhere => logs.line(
                LogStream::System,
                &format!("reusing image {} (built concurrently by another worker)", target.display()),
            ),
        }
        Ok(image_of(&target))
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
        let dirs = self.env_dirs(&req.env)?;
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

    /// Rolls the service out as the module docs describe: stop the old version, start
    /// the new one, wait until it is healthy and record it; if it never becomes
    /// healthy, stop it and start the old version again from its state file. A
    /// request equal to what runs (same image, command, variables, ports and volumes)
    /// changes nothing; a version that has died is started again.
    async fn roll_out(&self, req: &ServiceRequest, logs: &dyn LogSink) -> Result<(), RuntimeError> {
        let dirs = self.env_dirs(&req.env)?;
        let service = req.service.as_str();
        check_name("service", service)?;
        for (volume, _) in &req.volumes {
            check_name("volume", volume)?;
        }
        if req.command.is_empty() {
            return Err(RuntimeError::Failed(format!(
                "{service} has no command; the process runtime needs one to start a service"
            )));
        }
        if let Some(HealthCheck::Http { path, .. }) = &req.health_check
            && path.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(RuntimeError::Failed(format!(
                "the health check path of {service} is not a valid URL path: {path:?}"
            )));
        }
        image_dir(&req.image)?;
        dirs.ensure(&req.volumes.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())?;

        let current = read_json::<ServiceState>(&dirs.state(service))?;
        self.clear_candidate(&dirs, service, current.as_ref(), logs).await?;

        if req.replicas == 0 {
            if let Some(current) = &current {
                logs.line(LogStream::System, &format!("stopping {service}: 0 replicas requested"));
                stop_all(&[current.process]).await?;
                remove_file_if_exists(&dirs.state(service))?;
            }
            return Ok(());
        }
        if req.replicas > 1 {
            logs.line(
                LogStream::System,
                &format!(
                    "the process runtime runs one process per service: {service} asked for {} replicas and gets 1",
                    req.replicas
                ),
            );
        }

        let spec = ServiceSpec::of(req);
        if let Some(current) = &current
            && current.spec == spec
            && current.process.alive()
        {
            logs.line(
                LogStream::System,
                &format!("{service} already runs {} (pid {}); nothing to do", spec.image.0, current.process.pid),
            );
            return Ok(());
        }

        // Local processes cannot share a port: the old version goes first.
        if let Some(current) = &current {
            if current.process.group_alive() {
                logs.line(
                    LogStream::System,
                    &format!("stopping {service} {} (pid {})", current.spec.image.0, current.process.pid),
                );
            }
            stop_all(&[current.process]).await?;
        }

        let launch =
            Launch { service, spec: &spec, health_check: &req.health_check, health_timeout: req.health_timeout };
        match self.start_healthy(&dirs, &launch, Record::Candidate, logs).await {
            Ok(state) => {
                // The state file is replaced before the candidate record goes: a crash
                // in between leaves a candidate equal to the state, which is kept.
                write_private_json(&dirs.state(service), &state)?;
                remove_file_if_exists(&dirs.candidate(service))?;
                tracing::info!(service, image = %spec.image.0, pid = state.process.pid, "rolled out");
                logs.line(LogStream::System, &format!("{service} now runs {}", spec.image.0));
                Ok(())
            }
            Err(failure) => {
                let previous = current.filter(|current| current.spec != spec);
                let Some(previous) = previous else {
                    return Err(RuntimeError::Failed(failure));
                };
                logs.line(
                    LogStream::System,
                    &format!("restarting the previous version of {service} ({})", previous.spec.image.0),
                );
                let health_timeout = Duration::from_millis(previous.health_timeout_ms);
                let launch =
                    Launch { service, spec: &previous.spec, health_check: &previous.health_check, health_timeout };
                match self.start_healthy(&dirs, &launch, Record::State, logs).await {
                    Ok(restored) => {
                        tracing::warn!(service, image = %restored.spec.image.0, "roll-out failed; previous version restored");
                        logs.line(
                            LogStream::System,
                            &format!("the previous version of {service} serves again (pid {})", restored.process.pid),
                        );
                        Err(RuntimeError::Failed(format!("{failure}; the previous version keeps serving")))
                    }
                    Err(restore_failure) => Err(RuntimeError::Failed(format!(
                        "{failure}; restarting the previous version failed too: {restore_failure}"
                    ))),
                }
            }
        }
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
        let mut processes = Vec::new();
        for dir in [dirs.services(), dirs.candidates(), dirs.tasks()] {
            for path in json_files(&dir)? {
                match read_json::<AnyRecord>(&path) {
                    Ok(Some(record)) => processes.push(record.process),
                    Ok(None) => {}
                    // Records are replaced atomically, so this is not a torn write; an
                    // unreadable record must not make the environment impossible to remove.
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable record"),
                }
            }
        }
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

/// One version of a service to start.
struct Launch<'a> {
    service: &'a str,
    spec: &'a ServiceSpec,
    health_check: &'a Option<HealthCheck>,
    health_timeout: Duration,
}

/// Where a started version is recorded until it is known to be healthy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    /// In `candidates/`: a new version, committed to the state file only once healthy.
    Candidate,
    /// Straight in the state file: the previous version being put back.
    State,
}

enum Unhealthy {
    TimedOut { last_check: String },
    Exited(String),
}

impl ProcessRuntime {
    /// Stops a candidate left by a roll-out whose worker died before it finished.
    async fn clear_candidate(
        &self,
        dirs: &EnvDirs,
        service: &str,
        current: Option<&ServiceState>,
        logs: &dyn LogSink,
    ) -> Result<(), RuntimeError> {
        let path = dirs.candidate(service);
        let Some(candidate) = read_json::<AnyRecord>(&path)? else {
            return Ok(());
        };
        // Equal to the state: the roll-out committed it and died before removing the record.
        if current.is_none_or(|current| current.process != candidate.process) && candidate.process.group_alive() {
            logs.line(
                LogStream::System,
                &format!(
                    "stopping a version of {service} left by an interrupted roll-out (pid {})",
                    candidate.process.pid
                ),
            );
            stop_all(&[candidate.process]).await?;
        }
        remove_file_if_exists(&path)
    }

    /// Starts one version of a service, records it, and waits until it is healthy.
    /// On failure the process is stopped and the error says what happened.
    async fn start_healthy(
        &self,
        dirs: &EnvDirs,
        launch: &Launch<'_>,
        record: Record,
        logs: &dyn LogSink,
    ) -> Result<ServiceState, String> {
        let service = launch.service;
        let log_path = dirs.log(service);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;

        let cwd = image_dir(&launch.spec.image).map_err(|e| e.to_string())?;
        let mut command = base_command(&launch.spec.command, &cwd, &service_env(launch.spec, dirs));
        command.stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {service}: {}", spawn_error(&launch.spec.command[0], &e)))?;
        let Some(pid) = child.id() else {
            return Err(format!("{service} exited as soon as it started"));
        };
        let process = ProcRef::spawned(pid);

        // The service outlives this call (and this process): nobody keeps the Child,
        // but while this process lives a task reaps it, so no zombie is left, and
        // reports how it ended to the health wait.
        let (exit_tx, mut exit_rx) = watch::channel(None::<String>);
        let reaper_service = service.to_string();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("could not be waited for: {e}"),
            };
            tracing::info!(service = %reaper_service, pid, "service process {how}");
            exit_tx.send_replace(Some(how));
        });

        let state = ServiceState {
            service: service.to_string(),
            spec: launch.spec.clone(),
            health_check: launch.health_check.clone(),
            health_timeout_ms: u64::try_from(launch.health_timeout.as_millis()).unwrap_or(u64::MAX),
            process,
            started_at: chrono::Utc::now(),
        };
        let record_path = match record {
            Record::Candidate => dirs.candidate(service),
            Record::State => dirs.state(service),
        };
        if let Err(e) = write_private_json(&record_path, &state) {
            // Unrecorded, nobody could ever stop it: stop it now.
            let _ = stop_all(&[process]).await;
            return Err(format!("cannot record {service}: {e}"));
        }
        tracing::info!(service, pid, image = %launch.spec.image.0, "started service");
        logs.line(
            LogStream::System,
            &format!(
                "started {service} {} (pid {pid}); its output goes to {}",
                launch.spec.image.0,
                log_path.display()
            ),
        );

        let started = Instant::now();
        let unhealthy = match self.wait_healthy(launch, dirs, &mut exit_rx).await {
            Ok(()) => {
                logs.line(
                    LogStream::System,
                    &format!("{service} is healthy after {}", fmt_duration(started.elapsed())),
                );
                return Ok(state);
            }
            Err(unhealthy) => unhealthy,
        };

        let failure = match &unhealthy {
            Unhealthy::TimedOut { last_check } => {
                let timeout = fmt_duration(launch.health_timeout);
                logs.line(LogStream::System, &format!("last health check of {service}: {last_check}"));
                format!("{service} did not become healthy within {timeout}")
            }
            Unhealthy::Exited(how) => format!("{service} {how} before becoming healthy"),
        };
        logs.line(LogStream::System, &format!("{failure}; stopping it"));
        let output = output_since(&log_path, log_offset);
        if !output.is_empty() {
            logs.line(LogStream::System, &format!("its last output ({}):", log_path.display()));
            for line in &output {
                logs.line(LogStream::Stdout, line);
            }
        }
        tracing::warn!(service, pid, "{failure}");
        if let Err(e) = stop_all(&[process]).await {
            // The record stays, so a later roll-out or teardown stops it.
            return Err(format!("{failure}, and stopping it failed: {e}"));
        }
        if record == Record::Candidate {
            remove_file_if_exists(&record_path).map_err(|e| e.to_string())?;
        }
        Err(failure)
    }

    /// Waits until the service passes its health check (or, without one, has run for
    /// a moment), it exits, or the health timeout passes.
    async fn wait_healthy(
        &self,
        launch: &Launch<'_>,
        dirs: &EnvDirs,
        exit: &mut watch::Receiver<Option<String>>,
    ) -> Result<(), Unhealthy> {
        let Some(check) = launch.health_check else {
            return match tokio::time::timeout(SETTLE, exited(exit)).await {
                Ok(how) => Err(Unhealthy::Exited(how)),
                Err(_settled) => Ok(()),
            };
        };
        let deadline = deadline_after(launch.health_timeout);
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let probe = async {
                match check {
                    HealthCheck::Http { path, port } => {
                        http_probe(LOCALHOST, *port, path, remaining.min(HTTP_PROBE_TIMEOUT)).await
                    }
                    HealthCheck::Command(command) => {
                        command_probe(command, launch.spec, dirs, remaining.max(MIN_COMMAND_PROBE)).await
                    }
                }
            };
            let last_check = tokio::select! {
                how = exited(exit) => return Err(Unhealthy::Exited(how)),
                result = probe => match result {
                    Ok(()) => return Ok(()),
                    Err(why) => why,
                },
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Unhealthy::TimedOut { last_check });
            }
            tokio::select! {
                how = exited(exit) => return Err(Unhealthy::Exited(how)),
                () = tokio::time::sleep_until((now + HEALTH_POLL).min(deadline)) => {}
            }
        }
    }
}

/// Resolves with how the process ended once its reaper reports it.
async fn exited(exit: &mut watch::Receiver<Option<String>>) -> String {
    let how = exit.wait_for(Option::is_some).await.map(|how| how.clone().unwrap_or_default());
    match how {
        Ok(how) => how,
        // The reaper is gone without a word (the tokio runtime is shutting down).
        Err(_) => std::future::pending().await,
    }
}

/// The variables a service version gets (besides `PATH` and `HOME`).
fn service_env(spec: &ServiceSpec, dirs: &EnvDirs) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for (volume, _mount_path) in &spec.volumes {
        vars.insert(volume_variable(volume), dirs.volume(volume).to_string_lossy().into_owned());
    }
    if let Some(port) = spec.ports.first() {
        vars.insert("PORT".to_string(), port.to_string());
    }
    // What the request sets explicitly wins.
    vars.extend(spec.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    vars
}

/// `SHIPLOG_VOLUME_<NAME>`: the variable holding a volume's directory.
pub fn volume_variable(volume: &str) -> String {
    format!("SHIPLOG_VOLUME_{}", volume.to_ascii_uppercase().replace('-', "_"))
}

// ---------------------------------------------------------------------------------
// Health checks

/// Runs a command health check like a task: from the service's image, with the
/// service's environment; it must exit 0.
async fn command_probe(
    command: &[String],
    spec: &ServiceSpec,
    dirs: &EnvDirs,
    timeout: Duration,
) -> Result<(), String> {
    let Some(program) = command.first() else {
        return Err("the health check command is empty".to_string());
    };
    let cwd = image_dir(&spec.image).map_err(|e| e.to_string())?;
    let output = LastLine::default();
    let never = CancellationToken::new();
    let command_line = base_command(command, &cwd, &service_env(spec, dirs));
    match run_to_completion(command_line, program, &output, timeout, &never, None).await {
        Ok(TaskOutcome::Exited(0)) => Ok(()),
        Ok(outcome) => {
            let how = match outcome {
                TaskOutcome::Exited(code) => format!("exited with code {code}"),
                TaskOutcome::Signalled(signal) => format!("was killed by {}", signal_name(signal)),
                TaskOutcome::TimedOut => format!("did not finish within {}", fmt_duration(timeout)),
                TaskOutcome::Cancelled => "was cancelled".to_string(),
            };
            match output.get() {
                Some(line) => Err(format!("`{program}` {how}: {line}")),
                None => Err(format!("`{program}` {how}")),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Keeps the last line of output (a failing health check's reason, usually).
#[derive(Default)]
struct LastLine(Mutex<Option<String>>);

impl LastLine {
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl LogSink for LastLine {
    fn line(&self, stream: LogStream, line: &str) {
        if stream != LogStream::System && !line.trim().is_empty() {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.to_string());
        }
    }
}

/// The last lines a service wrote to its log since `offset`.
fn output_since(log: &Path, offset: u64) -> Vec<String> {
    let read = || -> io::Result<Vec<String>> {
        let mut file = File::open(log)?;
        let len = file.metadata()?.len();
        let start = offset.max(len.saturating_sub(FAILED_OUTPUT_BYTES));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(len - start.min(len)).read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let skip = lines.len().saturating_sub(FAILED_OUTPUT_LINES);
        Ok(lines.into_iter().skip(skip).collect())
    };
    read().unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Tasks

/// Where a task records itself while it runs.
struct TaskRecordFile<'a> {
    path: &'a Path,
    task: &'a str,
}

/// A command with a clean environment (`PATH` and `HOME` of shiplog plus `vars`), in
/// its own process group so that it and everything it starts can be signalled
/// together, and away from shiplog's terminal signals (Ctrl-C).
fn base_command(command: &[String], cwd: &Path, vars: &BTreeMap<String, String>) -> Command {
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

/// Spawns `command`, forwards its output line by line, and waits for it to end, for
/// the timeout, or for `cancel`.
async fn run_to_completion(
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

/// SIGTERM to the child's group, SIGKILL after the grace period; waits (bounded) for
/// the child to exit.
async fn stop_child(child: &mut Child, process: ProcRef) {
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

/// Sends output to the sink line by line as it arrives; invalid UTF-8 is replaced,
/// overlong lines are split.
async fn forward_lines(reader: impl AsyncRead + Unpin, stream: LogStream, logs: &dyn LogSink) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                logs.line(stream, &String::from_utf8_lossy(&line));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a task's output");
                return;
            }
        }
    }
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

// ---------------------------------------------------------------------------------
// Processes

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
    fn spawned(pid: u32) -> ProcRef {
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
    fn alive(&self) -> bool {
        matches!(self.leader(), Leader::Alive { .. })
    }

    /// The process or anything left in its group is still running.
    fn group_alive(&self) -> bool {
        match self.leader() {
            Leader::Alive { .. } => true,
            Leader::Reused => false,
            Leader::Zombie | Leader::Gone => self.is_sane() && group_has_live_members(self.pgid),
        }
    }

    /// Signals the group (and the leader, if it moved to another group). Returns
    /// whether anything was there to signal; "already gone" is not an error.
    fn signal(&self, sig: Signal) -> Result<bool, RuntimeError> {
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

/// Stops process groups that are not (necessarily) our children: SIGTERM to all,
/// SIGKILL to those still there after the grace period. Fails only if a group
/// survives SIGKILL or cannot be signalled.
async fn stop_all(processes: &[ProcRef]) -> Result<(), RuntimeError> {
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

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by {}", signal_name(signal)),
        (None, None) => "ended".to_string(),
    }
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_string())
}

/// "cannot run `x`: No such file or directory (os error 2)"
fn spawn_error(program: &str, error: &io::Error) -> String {
    format!("cannot run `{program}`: {error}")
}

// ---------------------------------------------------------------------------------
// Images

enum Snapshot {
    Copied(u64),
    /// Another worker renamed the same image into place first.
    BuiltElsewhere,
}

/// Copies `source` to `target` through a temporary directory next to it.
fn snapshot(source: &Path, images: &Path, target: &Path, root: &Path) -> Result<Snapshot, RuntimeError> {
    fs::create_dir_all(images).map_err(io_error(format!("creating {}", images.display())))?;
    remove_abandoned_copies(images);
    let temp = images.join(format!(".tmp-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    // The root may lie inside the context (a context of `.` in shiplog's own
    // directory); copying it would copy the copy.
    let skip = fs::canonicalize(root).ok();
    let source = fs::canonicalize(source).map_err(io_error(format!("reading {}", source.display())))?;
    let copied = copy_tree(&source, &temp, skip.as_deref())
        .map_err(|e| RuntimeError::Failed(format!("copying {} into an image failed: {e}", source.display())));
    let files = match copied {
        Ok(files) => files,
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            return Err(e);
        }
    };
    match fs::rename(&temp, target) {
        Ok(()) => Ok(Snapshot::Copied(files)),
        Err(_) if target.is_dir() => {
            let _ = fs::remove_dir_all(&temp);
            Ok(Snapshot::BuiltElsewhere)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            Err(io_error(format!("moving the image into {}", target.display()))(e))
        }
    }
}

/// Removes temporary copies whose builder process no longer exists (it crashed).
fn remove_abandoned_copies(images: &Path) {
    let Ok(entries) = fs::read_dir(images) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|name| name.strip_prefix(".tmp-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|pid| pid.parse::<i32>().ok()) else {
            continue;
        };
        if pid > 0 && signal::kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            tracing::info!(path = %entry.path().display(), "removing an abandoned image copy");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The commit as a path component: itself if it is a plain revision id.
fn commit_component(commit: &str) -> String {
    let plain =
        !commit.is_empty() && commit.len() <= 64 && commit.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain { commit.to_string() } else { format!("h{}", &sha256_hex(commit)[..40]) }
}

fn image_of(dir: &Path) -> Image {
    Image(dir.to_string_lossy().into_owned())
}

/// The directory of an image this runtime built.
fn image_dir(image: &Image) -> Result<PathBuf, RuntimeError> {
    let dir = PathBuf::from(&image.0);
    if dir.is_absolute() && dir.is_dir() {
        Ok(dir)
    } else {
        Err(RuntimeError::Failed(format!(
            "image `{}` is not an image of the process runtime: no such directory (build it again)",
            image.0
        )))
    }
}

// ---------------------------------------------------------------------------------
// Files

/// A file name for a free-form name (task names are only unique, not validated).
fn file_name_for(name: &str) -> String {
    if check_name("task", name).is_ok() { name.to_string() } else { format!("h{}", &sha256_hex(name)[..40]) }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn create_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("creating {}", dir.display())))
}

/// Writes JSON readable only by the user, atomically: a reader sees the old content
/// or the new one, never a part.
fn write_private_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
    let context = || format!("writing {}", path.display());
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("record");
    let temp = path.with_file_name(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp)?;
        // The mode above is subject to the umask, which can only remove bits: enforce it.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(&serde_json::to_vec_pretty(value).map_err(io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_error(context())(e)
    })
}

/// `None` if the file does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RuntimeError::Failed(format!("{} is not a valid record: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("reading {}", path.display()))(e)),
    }
}

/// The records in a directory (none if it does not exist), skipping temporary files.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(format!("listing {}", dir.display()))(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io_error(format!("listing {}", dir.display())))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.starts_with('.') && name.ends_with(".json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn remove_file_if_exists(path: &Path) -> Result<(), RuntimeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(format!("removing {}", path.display()))(e)),
    }
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { context, source }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::sync::Arc;

    use tempfile::TempDir;

    use super::*;

    /// Collects log lines; cancels `trigger.1` when a line equal to `trigger.0` arrives.
    #[derive(Default)]
    struct Collect {
        lines: Mutex<Vec<(LogStream, String)>>,
        trigger: Option<(String, CancellationToken)>,
    }

    impl LogSink for Collect {
        fn line(&self, stream: LogStream, line: &str) {
            self.lines.lock().unwrap().push((stream, line.to_string()));
            if let Some((text, token)) = &self.trigger
                && line == text
            {
                token.cancel();
            }
        }
    }

    impl Collect {
        fn of(&self, stream: LogStream) -> Vec<String> {
            self.lines.lock().unwrap().iter().filter(|(s, _)| *s == stream).map(|(_, l)| l.clone()).collect()
        }
        fn has(&self, stream: LogStream, needle: &str) -> bool {
            self.of(stream).iter().any(|line| line.contains(needle))
        }
        fn dump(&self) -> String {
            format!("{:#?}", self.lines.lock().unwrap())
        }
    }

    struct Fixture {
        root: TempDir,
        source: TempDir,
        runtime: ProcessRuntime,
    }

    impl Fixture {
        fn new() -> Fixture {
            let root = TempDir::new().unwrap();
            let runtime = ProcessRuntime::new(root.path().join("process"));
            Fixture { root, source: TempDir::new().unwrap(), runtime }
        }

        fn write_source(&self, path: &str, content: &str) {
            let path = self.source.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }

        fn build_request(&self, commit: &str, context: &str) -> BuildRequest {
            BuildRequest {
                env: env("review-1"),
                service: "web".to_string(),
                source_dir: self.source.path().to_path_buf(),
                context: context.to_string(),
                dockerfile: None,
                args: BTreeMap::new(),
                target: None,
                commit: commit.to_string(),
            }
        }

        /// An image whose `version` file says `version`.
        async fn image(&self, version: &str) -> Image {
            self.write_source("app/version", version);
            self.runtime.build(&self.build_request(version, "app"), &Collect::default()).await.unwrap()
        }

        fn env_dir(&self, environment: &str) -> PathBuf {
            self.runtime.root().join("environments/shop").join(environment)
        }

        fn state(&self, environment: &str, service: &str) -> ServiceState {
            read_json(&self.env_dir(environment).join(format!("services/{service}.json"))).unwrap().unwrap()
        }
    }

    impl Drop for Fixture {
        /// Whatever a failing test left running goes (http.server would run forever).
        fn drop(&mut self) {
            let Ok(envs) = fs::read_dir(self.runtime.root().join("environments/shop")) else { return };
            for env in envs.flatten() {
                for dir in ["services", "candidates", "tasks"] {
                    for path in json_files(&env.path().join(dir)).unwrap_or_default() {
                        if let Ok(Some(record)) = read_json::<AnyRecord>(&path) {
                            let _ = record.process.signal(Signal::SIGKILL);
                        }
                    }
                }
            }
        }
    }

    fn env(name: &str) -> EnvironmentRef {
        EnvironmentRef { application: "shop".to_string(), environment: name.to_string() }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".to_string(), "-c".to_string(), script.to_string()]
    }

    fn task(command: Vec<String>, image: Option<Image>, timeout: Duration) -> TaskRequest {
        TaskRequest {
            env: env("review-1"),
            name: "release-migrate".to_string(),
            image,
            source_dir: None,
            command,
            env_vars: BTreeMap::new(),
            timeout,
        }
    }

    fn service(image: &Image, command: Vec<String>) -> ServiceRequest {
        ServiceRequest {
            env: env("review-1"),
            service: "web".to_string(),
            image: image.clone(),
            command,
            env_vars: BTreeMap::new(),
            ports: Vec::new(),
            replicas: 1,
            health_check: None,
            health_timeout: Duration::from_secs(10),
            volumes: Vec::new(),
        }
    }

    /// Independent of the code under test: the process exists and is not a zombie.
    fn is_running(pid: i32) -> bool {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        let state = stat[stat.rfind(')').unwrap() + 1..].trim_start().chars().next();
        !matches!(state, Some('Z' | 'X'))
    }

    async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A process group the runtime did not start (as if a dead worker had).
    fn spawn_orphan() -> std::process::Child {
        std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap()
    }

    // --- build ---

    #[tokio::test]
    async fn build_copies_the_context_without_git_and_reuses_it() {
        let fx = Fixture::new();
        fx.write_source("app/hello.txt", "v1");
        fx.write_source("app/sub/run.sh", "#!/bin/sh\necho hi\n");
        fs::set_permissions(fx.source.path().join("app/sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fx.write_source("app/.git/HEAD", "ref: refs/heads/main");
        fx.write_source("outside.txt", "not in the context");
        std::os::unix::fs::symlink("hello.txt", fx.source.path().join("app/link")).unwrap();

        let logs = Collect::default();
        let mut request = fx.build_request("abc123", "app");
        request.dockerfile = Some("Dockerfile".to_string());
        let image = fx.runtime.build(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "ignores the Dockerfile"), "{}", logs.dump());
        assert!(!logs.has(LogStream::System, "reusing image"));

        let dir = PathBuf::from(&image.0);
        assert!(dir.is_absolute());
        assert!(dir.starts_with(fx.runtime.root().join("images/shop/web")), "{}", dir.display());
        assert_eq!(fs::read_to_string(dir.join("hello.txt")).unwrap(), "v1");
        assert_eq!(fs::read_to_string(dir.join("sub/run.sh")).unwrap(), "#!/bin/sh\necho hi\n");
        assert_eq!(fs::metadata(dir.join("sub/run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_link(dir.join("link")).unwrap(), Path::new("hello.txt"));
        assert!(!dir.join(".git").exists());
        assert!(!dir.join("outside.txt").exists());

        // Same commit and context (spelled differently): the image is reused as it is.
        fx.write_source("app/hello.txt", "v2");
        let logs = Collect::default();
        let again = fx.runtime.build(&fx.build_request("abc123", "./app/"), &logs).await.unwrap();
        assert_eq!(again, image);
        assert!(logs.has(LogStream::System, "reusing image"), "{}", logs.dump());
        assert!(!logs.has(LogStream::System, "building image"), "a reused image is not copied again: {}", logs.dump());
        assert_eq!(fs::read_to_string(dir.join("hello.txt")).unwrap(), "v1");

        // Another commit is another image.
        let newer = fx.runtime.build(&fx.build_request("def456", "app"), &Collect::default()).await.unwrap();
        assert_ne!(newer, image);
        assert_eq!(fs::read_to_string(Path::new(&newer.0).join("hello.txt")).unwrap(), "v2");

        // No temporary copies are left beside the images.
        let names: Vec<String> = fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[tokio::test]
    async fn build_of_the_whole_repository_leaves_out_git() {
        let fx = Fixture::new();
        fx.write_source("README", "hi");
        fx.write_source(".git/config", "[core]");
        let image = fx.runtime.build(&fx.build_request("abc", "."), &Collect::default()).await.unwrap();
        let dir = PathBuf::from(&image.0);
        assert_eq!(fs::read_to_string(dir.join("README")).unwrap(), "hi");
        assert!(!dir.join(".git").exists());
    }

    #[tokio::test]
    async fn build_of_a_missing_or_escaping_context_fails() {
        let fx = Fixture::new();
        match fx.runtime.build(&fx.build_request("abc", "nope"), &Collect::default()).await {
            Err(RuntimeError::Failed(message)) => {
                assert!(message.contains("`nope`") && message.contains("does not exist"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        match fx.runtime.build(&fx.build_request("abc", "../elsewhere"), &Collect::default()).await {
            Err(RuntimeError::Failed(message)) => assert!(message.contains("inside the repository"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(!fx.runtime.root().join("images/shop/web").exists());
    }

    // --- run_task ---

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

    // --- roll_out and observe ---

    #[tokio::test]
    async fn roll_out_starts_a_service_that_observe_reports_running() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let environment = env("review-1");
        fx.runtime.ensure_infrastructure(&environment, &["data".to_string()]).await.unwrap();
        fx.runtime.ensure_infrastructure(&environment, &["data".to_string()]).await.unwrap();

        let mut request = service(
            &image,
            sh(r#"echo "$PORT $GREETING $(cat version)" > "$SHIPLOG_VOLUME_DATA/seen"; echo started; exec sleep 30"#),
        );
        request.ports = vec![18080, 18081];
        request.volumes = vec![("data".to_string(), "/var/lib/data".to_string())];
        request.env_vars.insert("GREETING".to_string(), "s3cret".to_string());
        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "web now runs"), "{}", logs.dump());

        let observed = fx.runtime.observe(&environment).await.unwrap();
        assert_eq!(
            observed,
            [ObservedService { service: "web".to_string(), image: image.clone(), running: true, health: None }]
        );

        let seen = fx.env_dir("review-1").join("volumes/data/seen");
        eventually("the service wrote to its volume", Duration::from_secs(5), || seen.exists()).await;
        eventually("the service wrote its line", Duration::from_secs(5), || {
            fs::read_to_string(&seen).is_ok_and(|s| s.ends_with('\n'))
        })
        .await;
        assert_eq!(fs::read_to_string(&seen).unwrap(), "18080 s3cret v1\n");
        let log = fx.env_dir("review-1").join("logs/web.log");
        eventually("the output reaches the log", Duration::from_secs(5), || {
            fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))
        })
        .await;

        // Detached: its own process group; its state file (which holds the secret) is private.
        let state = fx.state("review-1", "web");
        assert_eq!(state.process.pgid, state.process.pid);
        assert_ne!(Pid::from_raw(state.process.pgid), nix::unistd::getpgrp());
        assert!(is_running(state.process.pid));
        let state_file = fx.env_dir("review-1").join("services/web.json");
        assert_eq!(fs::metadata(&state_file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(state_file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);

        // Rolling out the same thing again changes nothing.
        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "nothing to do"), "{}", logs.dump());
        assert_eq!(fx.state("review-1", "web").process, state.process);

        fx.runtime.teardown(&environment).await.unwrap();
    }

    #[tokio::test]
    async fn roll_out_of_a_new_image_replaces_the_old_version() {
        let fx = Fixture::new();
        let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
        fx.runtime.roll_out(&service(&v1, sh("exec sleep 30")), &Collect::default()).await.unwrap();
        let old = fx.state("review-1", "web").process;

        let logs = Collect::default();
        fx.runtime.roll_out(&service(&v2, sh("exec sleep 30")), &logs).await.unwrap();
        let new = fx.state("review-1", "web").process;
        assert_ne!(new.pid, old.pid);
        assert!(!is_running(old.pid), "the old version still runs");
        assert!(is_running(new.pid));
        let observed = fx.runtime.observe(&env("review-1")).await.unwrap();
        assert_eq!(observed, [ObservedService { service: "web".to_string(), image: v2, running: true, health: None }]);
        assert!(logs.has(LogStream::System, "stopping web"), "{}", logs.dump());

        // A new environment variable is a new version too, even with the same image.
        let mut request = service(&fx.state("review-1", "web").spec.image, sh("exec sleep 30"));
        request.env_vars.insert("FEATURE".to_string(), "on".to_string());
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        assert_ne!(fx.state("review-1", "web").process, new);
        assert!(!is_running(new.pid));

        fx.runtime.teardown(&env("review-1")).await.unwrap();
    }

    #[tokio::test]
    async fn a_version_that_never_becomes_healthy_is_replaced_by_the_old_one() {
        let fx = Fixture::new();
        let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
        let port = free_port();
        let health = HealthCheck::Http { path: "/version".to_string(), port };
        let port_arg = port.to_string();
        let server = ["python3", "-m", "http.server", &port_arg, "--bind", "127.0.0.1"];
        let mut request = service(&v1, server.iter().map(|s| s.to_string()).collect());
        request.health_check = Some(health.clone());
        request.health_timeout = Duration::from_secs(20);
        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "web is healthy"), "{}", logs.dump());
        http_probe(LOCALHOST, port, "/version", Duration::from_secs(2)).await.unwrap();
        let first = fx.state("review-1", "web").process;

        // v2 does not serve HTTP.
        let mut broken = service(&v2, sh("echo v2 starting; exec sleep 30"));
        broken.health_check = Some(health);
        broken.health_timeout = Duration::from_secs(1);
        let logs = Collect::default();
        match fx.runtime.roll_out(&broken, &logs).await {
            Err(RuntimeError::Failed(message)) => {
                assert_eq!(message, "web did not become healthy within 1s; the previous version keeps serving")
            }
            other => panic!("{other:?}\n{}", logs.dump()),
        }
        assert!(logs.has(LogStream::System, "last health check of web: GET http://127.0.0.1:"), "{}", logs.dump());
        assert!(logs.has(LogStream::Stdout, "v2 starting"), "the failed version's output is shown: {}", logs.dump());

        // v1 runs (again) and serves; nothing of v2 is left.
        assert!(!is_running(first.pid));
        let observed = fx.runtime.observe(&env("review-1")).await.unwrap();
        assert_eq!(
            observed,
            [ObservedService { service: "web".to_string(), image: v1.clone(), running: true, health: None }]
        );
        http_probe(LOCALHOST, port, "/version", Duration::from_secs(2)).await.unwrap();
        let state = fx.state("review-1", "web");
        assert_eq!(state.spec, ServiceSpec::of(&request));
        assert!(json_files(&fx.env_dir("review-1").join("candidates")).unwrap().is_empty());

        fx.runtime.teardown(&env("review-1")).await.unwrap();
        assert!(http_probe(LOCALHOST, port, "/", Duration::from_secs(1)).await.is_err());
    }

    #[tokio::test]
    async fn a_version_that_exits_is_replaced_by_the_old_one() {
        let fx = Fixture::new();
        let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
        fx.runtime.roll_out(&service(&v1, sh("exec sleep 30")), &Collect::default()).await.unwrap();

        let logs = Collect::default();
        let started = Instant::now();
        match fx.runtime.roll_out(&service(&v2, sh("echo boom >&2; exit 1")), &logs).await {
            Err(RuntimeError::Failed(message)) => assert_eq!(
                message,
                "web exited with code 1 before becoming healthy; the previous version keeps serving"
            ),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(logs.has(LogStream::Stdout, "boom"), "{}", logs.dump());
        let observed = fx.runtime.observe(&env("review-1")).await.unwrap();
        assert_eq!(observed, [ObservedService { service: "web".to_string(), image: v1, running: true, health: None }]);
        fx.runtime.teardown(&env("review-1")).await.unwrap();
    }

    #[tokio::test]
    async fn command_health_checks_run_with_the_services_environment() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let mut request = service(
            &image,
            sh(r#"echo $$ > "$SHIPLOG_VOLUME_DATA/pid"; sleep 0.5; touch "$SHIPLOG_VOLUME_DATA/ready"; exec sleep 30"#),
        );
        request.volumes = vec![("data".to_string(), "/data".to_string())];
        request.health_check = Some(HealthCheck::Command(sh(r#"test -f "$SHIPLOG_VOLUME_DATA/ready""#)));
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        assert!(fx.env_dir("review-1").join("volumes/data/ready").exists());
        fx.runtime.teardown(&env("review-1")).await.unwrap();

        // A first version that never passes: an error, and nothing left running.
        request.health_check = Some(HealthCheck::Command(sh("echo not ready >&2; false")));
        request.health_timeout = Duration::from_secs(1);
        let logs = Collect::default();
        match fx.runtime.roll_out(&request, &logs).await {
            Err(RuntimeError::Failed(message)) => assert_eq!(message, "web did not become healthy within 1s"),
            other => panic!("{other:?}"),
        }
        assert!(logs.has(LogStream::System, "`sh` exited with code 1: not ready"), "{}", logs.dump());
        let pid: i32 =
            fs::read_to_string(fx.env_dir("review-1").join("volumes/data/pid")).unwrap().trim().parse().unwrap();
        assert!(!is_running(pid));
        assert!(fx.runtime.observe(&env("review-1")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_service_killed_behind_shiplogs_back_is_reported_and_restarted() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let request = service(&image, sh("exec sleep 30"));
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        let process = fx.state("review-1", "web").process;
        signal::killpg(Pid::from_raw(process.pgid), Signal::SIGKILL).unwrap();

        let environment = env("review-1");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let observed = fx.runtime.observe(&environment).await.unwrap();
            assert_eq!(observed.len(), 1);
            assert_eq!(observed[0].image, image);
            if !observed[0].running {
                break;
            }
            assert!(Instant::now() < deadline, "observe still reports the killed service running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Rolling out the same version starts it again.
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        let restarted = fx.state("review-1", "web").process;
        assert_ne!(restarted.pid, process.pid);
        assert!(fx.runtime.observe(&environment).await.unwrap()[0].running);
        fx.runtime.teardown(&environment).await.unwrap();
    }

    #[tokio::test]
    async fn a_roll_out_stops_a_version_left_by_an_interrupted_one() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let mut orphan = spawn_orphan();
        let dirs = fx.runtime.env_dirs(&env("review-1")).unwrap();
        dirs.ensure(&[]).unwrap();
        let request = service(&image, sh("exec sleep 30"));
        let candidate = ServiceState {
            service: "web".to_string(),
            spec: ServiceSpec::of(&request),
            health_check: None,
            health_timeout_ms: 1000,
            process: ProcRef::spawned(orphan.id()),
            started_at: chrono::Utc::now(),
        };
        write_private_json(&dirs.candidate("web"), &candidate).unwrap();

        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "left by an interrupted roll-out"), "{}", logs.dump());
        assert_eq!(orphan.wait().unwrap().signal(), Some(Signal::SIGTERM as i32));
        assert!(!dirs.candidate("web").exists());
        assert!(fx.runtime.observe(&env("review-1")).await.unwrap()[0].running);
        fx.runtime.teardown(&env("review-1")).await.unwrap();
    }

    #[tokio::test]
    async fn zero_replicas_stop_the_service() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let mut request = service(&image, sh("exec sleep 30"));
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        let process = fx.state("review-1", "web").process;
        request.replicas = 0;
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        assert!(!is_running(process.pid));
        assert!(fx.runtime.observe(&env("review-1")).await.unwrap().is_empty());
    }

    // --- teardown ---

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

    // --- process records ---

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

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
    }

    #[test]
    fn volumes_become_variables() {
        assert_eq!(volume_variable("pg-data"), "SHIPLOG_VOLUME_PG_DATA");
    }
}
