//! Runtimes: where an environment's services, release commands, jobs and hooks
//! actually run. One trait, [`Runtime`], and one implementation per backend:
//! `process` (local processes, the embedded default), `docker` (containers on one
//! Docker engine), later `kubernetes`. Only modules under `runtime/` may import
//! bollard or kube. [`AnyRuntime`] picks one at run time.
//!
//! The contract every backend keeps:
//! - Every operation is idempotent ("ensure" semantics) or safe to repeat after a
//!   crash: a worker that resumes a run may call any of them again, from another
//!   process. So a backend keeps its state where any shiplog process finds it (state
//!   files under one root, labels on the Docker engine), never only in memory.
//! - A roll-out ends with one version serving: the new one once it is healthy, or
//!   else the one that served before (kept, or put back), and then the call fails.
//! - Output reaches the [`LogSink`] line by line while the step runs.
//! - Names reaching a backend are checked ([`check_name`]) before they become
//!   paths, container names or labels.
//!
//! What the backends share lives here too: the waits and limits (`policy`), output
//! as lines (`output`), and waiting for health (`health`). ARCHITECTURE.md's code
//! map (`runtime/`) says which file holds what.

mod any;
pub mod docker;
mod health;
mod image;
pub mod kubernetes;
mod output;
mod policy;
pub mod process;

pub use any::AnyRuntime;
pub use image::{ImageDigest, ImageRef, ImageRefError, Registry, Repository};

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Which environment an operation is for. Names are already validated by the domain
/// (lowercase letters, digits and `-`), so they are safe in paths and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvironmentRef {
    pub application: String,
    pub environment: String,
}

/// A built artifact a runtime can start services and tasks from. For `process` it is
/// a directory; for `docker` an image id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Image(pub String);

/// Build one service's image from a checked-out repository.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub env: EnvironmentRef,
    pub service: String,
    /// The repository checked out at `commit`.
    pub source_dir: PathBuf,
    /// The build context, relative to `source_dir` (`.` for the whole repository).
    pub context: String,
    /// Dockerfile path relative to the context, for runtimes that build images.
    pub dockerfile: Option<String>,
    /// Build arguments (`ARG`s of the Dockerfile), for runtimes that build images.
    pub args: BTreeMap<String, String>,
    /// The Dockerfile stage to build; `None` builds the last one.
    pub target: Option<String>,
    pub commit: String,
}

impl BuildRequest {
    /// The normalised build context and its directory in the checkout, after
    /// checking the names and that the context is a directory inside the
    /// repository, and its Dockerfile (when there is one) a file inside it too,
    /// symbolic links resolved: the template refuses `..` and absolute paths, but
    /// only the checkout shows where a link points.
    pub(crate) fn context_dir(&self) -> Result<(String, PathBuf), RuntimeError> {
        check_name("application", &self.env.application)?;
        check_name("service", &self.service)?;
        let context = normalize_context(&self.context)?;
        let source = self.source_dir.join(&context);
        if !source.is_dir() {
            return Err(RuntimeError::Failed(format!(
                "the build context `{}` of {} does not exist: {} is not a directory",
                self.context,
                self.service,
                source.display()
            )));
        }
        let checkout = std::fs::canonicalize(&self.source_dir)
            .map_err(|source| RuntimeError::Io { context: "resolving the checkout".into(), source })?;
        let inside = |path: &Path, what: String| match std::fs::canonicalize(path) {
            Ok(resolved) if resolved.starts_with(&checkout) => Ok(()),
            Ok(resolved) => Err(RuntimeError::Failed(format!(
                "{what} of {} leaves the repository: it resolves to {}, outside the checkout",
                self.service,
                resolved.display()
            ))),
            // A Dockerfile that does not exist is the builder's to report.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RuntimeError::Io { context: format!("resolving {}", path.display()), source }),
        };
        inside(&source, format!("the build context `{}`", self.context))?;
        let dockerfile = self.dockerfile.as_deref().unwrap_or("Dockerfile");
        inside(&source.join(dockerfile), format!("the Dockerfile `{dockerfile}`"))?;
        Ok((context, source))
    }
}

/// A one-off task: a release command, a job, a teardown hook.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub env: EnvironmentRef,
    /// Unique within the run, e.g. `release-migrate`; used in names and labels.
    pub name: String,
    /// The image to run it from; `None` runs it without one (teardown hooks on
    /// `process` run in the environment's working directory).
    pub image: Option<Image>,
    /// The run's checkout, for jobs that work on the source rather than an image
    /// (a `test` stage before `build`): `process` runs the task in it, a container
    /// runtime mounts it as the working directory. Takes precedence over `image`
    /// for the working directory.
    pub source_dir: Option<PathBuf>,
    pub command: Vec<String>,
    pub env_vars: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Names of the cluster's Secrets holding the registry's credentials
    /// (`imagePullSecrets`); only the kubernetes runtime uses them.
    pub pull_secrets: Vec<String>,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    Exited(i32),
    /// Killed by a signal (Unix), e.g. after a worker was told to stop.
    Signalled(i32),
    TimedOut,
    Cancelled,
}

impl TaskOutcome {
    pub fn succeeded(self) -> bool {
        self == TaskOutcome::Exited(0)
    }
}

/// How to tell that a service is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthCheck {
    /// An HTTP GET on 127.0.0.1:`port``path` that answers 2xx or 3xx.
    Http { path: String, port: u16 },
    /// A command (run from the service's image) that exits 0.
    Command(Vec<String>),
}

/// Run a service from `image`, replacing whatever version runs now.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    pub env: EnvironmentRef,
    pub service: String,
    pub image: Image,
    pub command: Vec<String>,
    pub env_vars: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub replicas: u32,
    pub health_check: Option<HealthCheck>,
    /// How long the new version may take to become healthy.
    pub health_timeout: Duration,
    /// Named volumes: (name, mount path).
    pub volumes: Vec<(String, String)>,
    /// Names of the cluster's Secrets holding the registry's credentials
    /// (`imagePullSecrets`); only the kubernetes runtime uses them.
    pub pull_secrets: Vec<String>,
}

/// Push a built image to a registry (the release stage), so that it can be
/// deployed by digest from anywhere that reaches the registry.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub env: EnvironmentRef,
    pub service: String,
    /// What [`Runtime::build`] returned for the service.
    pub image: Image,
    /// `<registry>/<app>/<service>`.
    pub repository: Repository,
    /// The tag pushed beside the digest: the run's commit.
    pub tag: String,
}

impl ServiceRequest {
    /// Says in the roll-out's log that `runtime`, which runs one `unit` per service,
    /// gives a service asking for more replicas one.
    pub(crate) fn note_one_replica(&self, runtime: &str, unit: &str, logs: &dyn LogSink) {
        if self.replicas > 1 {
            logs.line(
                LogStream::System,
                &format!(
                    "the {runtime} runtime runs one {unit} per service: {} asked for {} replicas and gets 1",
                    self.service, self.replicas
                ),
            );
        }
    }
}

/// The variables a service version gets from its request: `PORT` = the first port
/// (unless the request sets `PORT` itself), then the request's own.
pub(crate) fn service_variables(ports: &[u16], env_vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    if let Some(port) = ports.first() {
        vars.insert("PORT".to_string(), port.to_string());
    }
    vars.extend(env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    vars
}

/// What really runs for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedService {
    pub service: String,
    /// The image as the roll-out was asked to run it.
    pub image: Image,
    pub running: bool,
    /// What the backend's own health checking says, where it has any (a Docker
    /// `HEALTHCHECK`); `None` when nothing checks the service continuously.
    #[serde(default)]
    pub health: Option<ServiceHealth>,
}

/// The health a backend reports for a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceHealth {
    /// Checked, but not passed yet.
    Starting,
    Healthy,
    Unhealthy,
}

/// Which output a log line came from; stored by its lowercase label (`stdout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::AsRefStr, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// shiplog's own notes about the step (e.g. "health check passed").
    System,
}

/// Where a runtime sends the output of builds, tasks and roll-outs, line by line.
/// Must not block: implementations buffer.
pub trait LogSink: Send + Sync {
    fn line(&self, stream: LogStream, line: &str);
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The step failed in a way the user can act on (bad command, build error,
    /// never became healthy); the message says what happened.
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The backend (e.g. the Docker engine) could not be reached or refused a
    /// request for reasons of its own.
    #[error("{context}: {source}")]
    Backend { context: String, source: Box<dyn std::error::Error + Send + Sync> },
}

/// An execution backend. See the module docs for the contract.
pub trait Runtime: Send + Sync + 'static {
    /// Builds (or reuses, for the same commit and context) the service's image.
    fn build(&self, req: &BuildRequest, logs: &dyn LogSink)
    -> impl Future<Output = Result<Image, RuntimeError>> + Send;

    /// Pushes the built image to `req.repository` as `req.tag` and returns it pinned
    /// by the digest the registry stored. Pushing the same image again returns the
    /// same digest. A registry that refuses the push fails the call with the
    /// registry's message.
    fn push(
        &self,
        req: &PushRequest,
        logs: &dyn LogSink,
    ) -> impl Future<Output = Result<ImageRef, RuntimeError>> + Send;

    /// Ensures the environment's infrastructure exists: its network or working
    /// directory, and the named volumes. Running it twice changes nothing.
    fn ensure_infrastructure(
        &self,
        env: &EnvironmentRef,
        volumes: &[String],
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs a one-off task to completion, streaming its output. Kills it on timeout
    /// or when `cancel` fires.
    fn run_task(
        &self,
        req: &TaskRequest,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Result<TaskOutcome, RuntimeError>> + Send;

    /// Rolls the service out to `req.image`: start the new version, wait until it
    /// is healthy, switch to it, stop the old one. If the new version never becomes
    /// healthy it is removed and the old one keeps (or is put back to) serving, and
    /// the call fails. Rolling out the image already running changes nothing.
    fn roll_out(
        &self,
        req: &ServiceRequest,
        logs: &dyn LogSink,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops and removes every service, task, volume and network of the environment.
    fn teardown(&self, env: &EnvironmentRef) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// What really runs for the environment, for drift detection.
    fn observe(&self, env: &EnvironmentRef) -> impl Future<Output = Result<Vec<ObservedService>, RuntimeError>> + Send;
}

/// The context as a relative path inside the repository, `.` for all of it.
pub(crate) fn normalize_context(context: &str) -> Result<String, RuntimeError> {
    let mut parts = Vec::new();
    for component in Path::new(context).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(RuntimeError::Failed(format!(
                    "the build context `{context}` must be a path inside the repository"
                )));
            }
        }
    }
    Ok(if parts.is_empty() { ".".to_string() } else { parts.join("/") })
}

/// Checks a name that ends up in paths, container names or labels.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), RuntimeError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::Failed(format!("invalid {kind} name `{name}`: use letters, digits, `-` and `_`")))
    }
}

/// `text` where it is `plain`, otherwise `h` and a digest of it: free-form text
/// (commits, task names) as part of a path, tag or container name.
pub(crate) fn name_or_digest(text: &str, plain: bool) -> String {
    if plain { text.to_string() } else { format!("h{}", &sha256_hex(text)[..40]) }
}

/// A task name as part of a file or container name (task names are unique within a
/// run, but not checked names).
pub(crate) fn task_component(name: &str) -> String {
    name_or_digest(name, check_name("task", name).is_ok())
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Now plus `timeout`, or in a year for timeouts too large to add.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// `30s`, `1.5s`, `300ms`.
pub(crate) fn fmt_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// Copies a directory tree (a build context into an image, a checkout into a
/// run's own working copy) without `.git` entries (at any depth: submodules have a
/// `.git` file), keeping symlinks as symlinks and permissions; skips special files.
/// Returns the number of files and symlinks copied.
pub(crate) fn copy_tree(source: &Path, target: &Path, skip: Option<&Path>) -> std::io::Result<u64> {
    std::fs::create_dir(target)?;
    let mut files = 0;
    for entry in std::fs::read_dir(source)? {
        let entry = entry?;
        if entry.file_name() == ".git" || skip.is_some_and(|skip| entry.path() == skip) {
            continue;
        }
        let from = entry.path();
        let to = target.join(entry.file_name());
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            files += copy_tree(&from, &to, skip)?;
        } else if file_type.is_file() {
            std::fs::copy(&from, &to)?;
            files += 1;
        } else if file_type.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            files += 1;
        } else {
            tracing::debug!(path = %from.display(), "not copying a special file");
        }
    }
    // Last, in case the directory is read-only.
    std::fs::set_permissions(target, std::fs::metadata(source)?.permissions())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(300)), "300ms");
    }
}
