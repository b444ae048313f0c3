//! What a shiplog process is configured with, as plain data.
//!
//! `cli` builds these from flags and environment variables; tests build them
//! directly and hand them to the same `server::run`. Nothing here parses text or
//! reads the environment.

use std::path::PathBuf;
use std::time::Duration;

use shiplog_engine::forge::ForgeConfig;
use shiplog_engine::runtime::Registry;

use crate::graphql::Limits;
use crate::webhooks::WebhookConfig;

/// Where the database is.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The PostgreSQL to use; without one, shiplog runs a private cluster in `data_dir`.
    pub url: Option<String>,
    /// Data directory of the private cluster (unused with `url`).
    pub data_dir: PathBuf,
}

/// Where services, release commands and jobs run.
#[derive(Debug, Clone)]
pub enum RuntimeConfig {
    /// Local processes, with images, services and their state under `root`.
    Process { root: PathBuf },
    /// Containers on the Docker engine; jobs and hooks without an image of their
    /// own run from `job_image`.
    Docker { job_image: String },
}

/// The release stage: where built images are pushed, and the credentials a
/// cluster pulls them with.
#[derive(Debug, Clone, Default)]
pub struct ReleaseConfig {
    /// `None`: no push; services run from the image their build made.
    pub registry: Option<Registry>,
    /// Names of the cluster's Secrets given to pods as `imagePullSecrets`.
    pub pull_secrets: Vec<String>,
}

/// How a worker claims and executes runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name in run events.
    pub id: String,
    /// Where repositories are checked out for builds.
    pub work_dir: PathBuf,
    /// How long a claimed run stays claimed without a heartbeat; after that
    /// another worker resumes it.
    pub lease: Duration,
    /// How often an idle worker looks for queued runs.
    pub idle_poll: Duration,
}

/// How often an idle worker looks for queued runs, unless configured otherwise.
pub const DEFAULT_IDLE_POLL: Duration = Duration::from_millis(200);

/// How the HTTP API is configured.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub limits: Limits,
    /// The largest request body `/graphql` accepts, in bytes.
    pub max_body: usize,
    /// How often the event feed looks for events other processes appended.
    pub feed_poll: Duration,
    /// Which push webhooks are enabled, with their secrets.
    pub webhooks: WebhookConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            limits: Limits::default(),
            max_body: 1 << 20,
            feed_poll: Duration::from_millis(100),
            webhooks: WebhookConfig::default(),
        }
    }
}

/// Everything `shiplog serve` runs: the API, the background loops and, unless
/// `worker` is `None`, a worker.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub database: DatabaseConfig,
    /// The runtime the worker executes runs on and the drift reconciler observes.
    pub runtime: RuntimeConfig,
    /// Runs planned by this server push to its registry; its worker pulls with its secrets.
    pub release: ReleaseConfig,
    /// `None` serves without a worker: runs stay queued for other processes.
    pub worker: Option<WorkerConfig>,
    pub api: ApiConfig,
    /// How often the sealer extends the seal chain over new events.
    pub seal_interval: Duration,
    /// How often every environment is observed for drift (±10% jitter).
    pub drift_interval: Duration,
    /// Deployment status back to GitHub and GitLab (reported only to a forge
    /// whose token is set).
    pub forge: ForgeConfig,
}

/// Everything `shiplog worker` runs: a worker alone.
#[derive(Debug, Clone)]
pub struct WorkConfig {
    pub database: DatabaseConfig,
    pub runtime: RuntimeConfig,
    pub release: ReleaseConfig,
    pub worker: WorkerConfig,
}
