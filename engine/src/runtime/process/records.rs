//! The records that let any worker resume, observe or tear down what another one
//! started: the layout of an environment's directory, the state files of services
//! and tasks, and writing them privately and atomically (they hold the services'
//! environment, secrets included).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::groups::ProcRef;
use crate::runtime::{EnvironmentRef, HealthCheck, Image, RuntimeError, ServiceRequest, check_name, task_component};

/// The directories and files of one environment.
pub(super) struct EnvDirs {
    pub(super) app: PathBuf,
    pub(super) root: PathBuf,
}

impl EnvDirs {
    /// The environment's directories under the runtime's `root`, once its names are
    /// known to be safe in paths.
    pub(super) fn of(root: &Path, env: &EnvironmentRef) -> Result<EnvDirs, RuntimeError> {
        check_name("application", &env.application)?;
        check_name("environment", &env.environment)?;
        let app = root.join("environments").join(&env.application);
        Ok(EnvDirs { root: app.join(&env.environment), app })
    }

    pub(super) fn services(&self) -> PathBuf {
        self.root.join("services")
    }
    pub(super) fn state(&self, service: &str) -> PathBuf {
        self.services().join(format!("{service}.json"))
    }
    pub(super) fn candidates(&self) -> PathBuf {
        self.root.join("candidates")
    }
    pub(super) fn candidate(&self, service: &str) -> PathBuf {
        self.candidates().join(format!("{service}.json"))
    }
    pub(super) fn tasks(&self) -> PathBuf {
        self.root.join("tasks")
    }
    pub(super) fn task(&self, name: &str) -> PathBuf {
        self.tasks().join(format!("{}.json", task_component(name)))
    }
    pub(super) fn log(&self, service: &str) -> PathBuf {
        self.root.join("logs").join(format!("{service}.log"))
    }
    pub(super) fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// The process groups recorded for the environment: its services, candidates
    /// and running tasks. An unreadable record is skipped with a warning: records
    /// are replaced atomically, so it is not a torn write, and it must not make the
    /// environment impossible to remove.
    pub(super) fn recorded_processes(&self) -> Result<Vec<ProcRef>, RuntimeError> {
        let mut processes = Vec::new();
        for dir in [self.services(), self.candidates(), self.tasks()] {
            for path in json_files(&dir)? {
                match read_json::<AnyRecord>(&path) {
                    Ok(Some(record)) => processes.push(record.process),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable record"),
                }
            }
        }
        Ok(processes)
    }

    /// Creates the environment's directories and the given volumes. The directories
    /// holding state and logs (which contain secrets) are private to the user.
    pub(super) fn ensure(&self, volumes: &[&str]) -> Result<(), RuntimeError> {
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

/// What a service runs: two roll-outs with equal specs run the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ServiceSpec {
    pub(super) image: Image,
    pub(super) command: Vec<String>,
    pub(super) env_vars: BTreeMap<String, String>,
    pub(super) ports: Vec<u16>,
    pub(super) volumes: Vec<(String, String)>,
}

impl ServiceSpec {
    pub(super) fn of(req: &ServiceRequest) -> ServiceSpec {
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
pub(super) struct ServiceState {
    pub(super) service: String,
    #[serde(flatten)]
    pub(super) spec: ServiceSpec,
    pub(super) health_check: Option<HealthCheck>,
    pub(super) health_timeout_ms: u64,
    pub(super) process: ProcRef,
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
}

/// A running task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TaskRecord {
    pub(super) task: String,
    pub(super) process: ProcRef,
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
}

/// The part of any record that teardown needs.
#[derive(Debug, Deserialize)]
pub(super) struct AnyRecord {
    pub(super) process: ProcRef,
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
pub(super) fn write_private_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RuntimeError> {
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
pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RuntimeError::Failed(format!("{} is not a valid record: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("reading {}", path.display()))(e)),
    }
}

/// The records in a directory (none if it does not exist), skipping temporary files.
pub(super) fn json_files(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
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

pub(super) fn remove_file_if_exists(path: &Path) -> Result<(), RuntimeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(format!("removing {}", path.display()))(e)),
    }
}

pub(super) fn io_error(context: String) -> impl FnOnce(io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { context, source }
}
