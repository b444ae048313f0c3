//! The `shiplog` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use shiplog_engine::forge::ForgeConfig;
use shiplog_engine::runtime::Registry;
use shiplog_engine::secret::Secret;
use shiplog_engine::store::EventFilter;
use shiplog_projections::{audit, runner};
use tokio_util::sync::CancellationToken;

use crate::client::ClientCommand;
use crate::config::{
    ApiConfig, DEFAULT_IDLE_POLL, DatabaseConfig, ReleaseConfig, RuntimeConfig, ServerConfig, WorkConfig, WorkerConfig,
};
use crate::database::Database;
use crate::graphql::Limits;
use crate::server;
use crate::webhooks::WebhookConfig;

#[derive(Parser, Debug)]
#[command(name = "shiplog", version, about = "Event-sourced environment lifecycle engine")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: API on --listen and a worker, PostgreSQL from DATABASE_URL or a
    /// private cluster.
    Serve(ServeArgs),
    /// Run only a worker: claim runs and execute them (several may share one database).
    Worker(WorkerArgs),
    /// Auditor tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Read models folded from the event log.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Print a completion script for a shell, e.g.
    /// `shiplog completions bash > /etc/bash_completion.d/shiplog`.
    Completions { shell: clap_complete::Shell },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Recompute every hash chain and seal; exit 1 and name the first broken position.
    Verify(DatabaseArgs),
    /// Write events as JSON Lines with their hashes (all, or those the filters select).
    Export(ExportArgs),
    /// Print every change of each environment's state with the event that caused it.
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Only this stream, e.g. `environment-hello.staging` (repeatable).
    #[arg(long = "stream")]
    streams: Vec<String>,
    /// Only this event type, e.g. `RunRequested` (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Only events recorded at or after this moment (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only events recorded before this moment (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Only environments of this application.
    #[arg(long)]
    application: Option<String>,
    /// Only environments with this name.
    #[arg(long)]
    environment: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ProjectionsCommand {
    /// Replay the whole log into fresh tables and swap them in atomically; the
    /// server keeps serving the old ones meanwhile. All projections without NAME.
    Rebuild {
        #[command(flatten)]
        database: DatabaseArgs,
        /// lifecycle, runs or audit.
        name: Option<String>,
    },
    /// Show each projection's generation, checkpoint and lag.
    Status(DatabaseArgs),
}

/// Where the database is.
#[derive(Args, Debug, Clone)]
struct DatabaseArgs {
    /// PostgreSQL to use; without it shiplog runs a private cluster in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Data directory of the private cluster (ignored with DATABASE_URL).
    #[arg(long, env = "SHIPLOG_DATA_DIR", default_value = ".shiplog/pg")]
    data_dir: PathBuf,
}

impl From<DatabaseArgs> for DatabaseConfig {
    fn from(args: DatabaseArgs) -> Self {
        DatabaseConfig { url: args.database_url, data_dir: args.data_dir }
    }
}

/// How runs are executed.
#[derive(Args, Debug, Clone)]
struct WorkerArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Where services, release commands and jobs run.
    #[arg(long, env = "SHIPLOG_RUNTIME", value_enum, default_value_t = RuntimeKind::Process)]
    runtime: RuntimeKind,
    /// Where the process runtime keeps images, services and their state.
    #[arg(long, env = "SHIPLOG_PROCESS_ROOT", default_value = ".shiplog/process")]
    process_root: PathBuf,
    /// The image the docker runtime runs jobs and hooks from when they have none
    /// of their own.
    #[arg(long, env = "SHIPLOG_DOCKER_JOB_IMAGE", default_value = shiplog_engine::runtime::docker::DEFAULT_JOB_IMAGE)]
    docker_job_image: String,
    /// The registry the release stage pushes built images to, as
    /// `<registry>/<app>/<service>:<commit>`, and deploys them from by digest, e.g.
    /// `127.0.0.1:5000/team` (loopback registries are reached over plain HTTP).
    #[arg(long, env = "SHIPLOG_REGISTRY", value_parser = clap::value_parser!(Registry))]
    registry: Option<Registry>,
    /// A Secret of the cluster that holds the registry's credentials, given to
    /// pods as `imagePullSecrets` (repeat for several; kubernetes runtime).
    #[arg(long = "image-pull-secret", env = "SHIPLOG_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    image_pull_secrets: Vec<String>,
    /// Where repositories are checked out for builds.
    #[arg(long, env = "SHIPLOG_WORK_DIR", default_value = ".shiplog/work")]
    work_dir: PathBuf,
    /// How long a claimed run stays claimed without a heartbeat; after that another
    /// worker resumes it.
    #[arg(long, env = "SHIPLOG_LEASE", default_value = "30s", value_parser = shiplog_engine::template::parse_duration)]
    lease: Duration,
    /// This worker's name in run events (default: host name and process id).
    #[arg(long, env = "SHIPLOG_WORKER_ID")]
    worker_id: Option<String>,
}

/// The runtimes `--runtime` offers.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum RuntimeKind {
    /// Local processes (the embedded default; no Docker needed).
    Process,
    /// Containers on the Docker engine of DOCKER_HOST, or of /var/run/docker.sock.
    Docker,
}

impl WorkerArgs {
    /// The database, the runtime and the worker these flags name.
    fn config(self) -> WorkConfig {
        let runtime = match self.runtime {
            RuntimeKind::Process => RuntimeConfig::Process { root: self.process_root },
            RuntimeKind::Docker => RuntimeConfig::Docker { job_image: self.docker_job_image },
        };
        let id = self.worker_id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let worker = WorkerConfig { id, work_dir: self.work_dir, lease: self.lease, idle_poll: DEFAULT_IDLE_POLL };
        let release = ReleaseConfig { registry: self.registry, pull_secrets: self.image_pull_secrets };
        WorkConfig { database: self.database.into(), runtime, release, worker }
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Address for the HTTP API; port 0 picks a free port (the address is printed).
    #[arg(long, env = "SHIPLOG_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How often the sealer extends the seal chain over new events.
    #[arg(long, env = "SHIPLOG_SEAL_INTERVAL", default_value = "10s", value_parser = shiplog_engine::template::parse_duration)]
    seal_interval: Duration,
    /// How often every environment is observed for drift (±10% jitter).
    #[arg(long, env = "SHIPLOG_DRIFT_INTERVAL", default_value = "30s", value_parser = shiplog_engine::template::parse_duration)]
    drift_interval: Duration,
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
    #[command(flatten)]
    forge: ForgeArgs,
}

/// Limits of the GraphQL API.
#[derive(Args, Debug)]
struct ApiArgs {
    /// The largest request body /graphql accepts, in bytes.
    #[arg(long, env = "SHIPLOG_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// The deepest selection nesting a query may have.
    #[arg(long, env = "SHIPLOG_MAX_DEPTH", default_value_t = Limits::default().depth)]
    max_depth: usize,
    /// The highest cost a query may have (a connection field costs its page size
    /// times the cost of what is selected in it).
    #[arg(long, env = "SHIPLOG_MAX_COMPLEXITY", default_value_t = Limits::default().complexity)]
    max_complexity: usize,
    /// Refuse `__schema` and `__type` queries.
    #[arg(long, env = "SHIPLOG_NO_INTROSPECTION")]
    no_introspection: bool,
}

impl ApiArgs {
    fn config(&self) -> ApiConfig {
        ApiConfig {
            limits: Limits {
                depth: self.max_depth,
                complexity: self.max_complexity,
                introspection: !self.no_introspection,
            },
            max_body: self.max_body_bytes,
            ..ApiConfig::default()
        }
    }
}

/// Push webhooks; each endpoint is enabled by its secret. Prefer the environment
/// variables: a command-line argument is visible to every user of the machine.
#[derive(Args, Debug, Clone, Default)]
struct WebhookArgs {
    /// Enables POST /webhooks/github: the secret set in the GitHub webhook's settings.
    #[arg(long, env = "SHIPLOG_GITHUB_WEBHOOK_SECRET", hide_env_values = true, value_name = "SECRET")]
    github_webhook_secret: Option<Secret>,
    /// Enables POST /webhooks/gitlab: the secret token set in the GitLab webhook's settings.
    #[arg(long, env = "SHIPLOG_GITLAB_WEBHOOK_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    gitlab_webhook_token: Option<Secret>,
}

/// Deployment status back to the forges; each forge is reported to once its
/// token is set. Prefer the environment variables for the tokens.
#[derive(Args, Debug, Clone)]
struct ForgeArgs {
    /// A GitHub token that may create deployments and deployment statuses
    /// (`deployments: write`) in the repositories of merge requests shiplog deploys.
    #[arg(long, env = "SHIPLOG_GITHUB_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    github_token: Option<Secret>,
    /// GitHub's REST API (`https://<host>/api/v3` for GitHub Enterprise Server).
    #[arg(long, env = "SHIPLOG_GITHUB_API_URL", default_value = "https://api.github.com")]
    github_api_url: String,
    /// A GitLab token with the `api` scope, for commit statuses.
    #[arg(long, env = "SHIPLOG_GITLAB_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    gitlab_token: Option<Secret>,
    /// The GitLab instance.
    #[arg(long, env = "SHIPLOG_GITLAB_URL", default_value = "https://gitlab.com")]
    gitlab_url: String,
    /// Where this shiplog is reached, for the log and environment links in statuses.
    #[arg(long, env = "SHIPLOG_PUBLIC_URL")]
    public_url: Option<String>,
    /// A deployed environment's address, with `{application}` and `{environment}`
    /// replaced, e.g. `https://{environment}.{application}.example.com`.
    #[arg(long, env = "SHIPLOG_ENVIRONMENT_URL")]
    environment_url: Option<String>,
    /// A PEM file of CA certificates to trust besides the system's, for a forge
    /// behind a private CA.
    #[arg(long, env = "SHIPLOG_FORGE_CA_FILE", value_name = "PEM", value_parser = ca_file)]
    forge_ca_file: Option<String>,
}

/// The contents of a PEM file of CA certificates, checked.
fn ca_file(path: &str) -> Result<String, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    shiplog_engine::forge::certificates(&pem).map_err(|e| format!("{path}: {e}"))?;
    Ok(pem)
}

impl From<ForgeArgs> for ForgeConfig {
    fn from(args: ForgeArgs) -> Self {
        ForgeConfig {
            github_token: args.github_token,
            github_api_url: args.github_api_url,
            gitlab_token: args.gitlab_token,
            gitlab_url: args.gitlab_url,
            public_url: args.public_url,
            environment_url: args.environment_url,
            extra_ca_pem: args.forge_ca_file,
            ..ForgeConfig::default()
        }
    }
}

impl From<WebhookArgs> for WebhookConfig {
    fn from(args: WebhookArgs) -> Self {
        WebhookConfig { github_secret: args.github_webhook_secret, gitlab_token: args.gitlab_webhook_token }
    }
}

impl Cli {
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Serve(args) => serve(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Audit { command: AuditCommand::Verify(args) } => verify(args).await,
            Command::Audit { command: AuditCommand::Export(args) } => export(args).await,
            Command::Audit { command: AuditCommand::Replay(args) } => replay(args).await,
            Command::Projections { command: ProjectionsCommand::Rebuild { database, name } } => {
                rebuild(database, name).await
            }
            Command::Projections { command: ProjectionsCommand::Status(args) } => projection_status(args).await,
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut <Cli as clap::CommandFactory>::command(),
                    "shiplog",
                    &mut std::io::stdout(),
                );
                Ok(ExitCode::SUCCESS)
            }
            // Client commands have exit statuses of their own (docs/cli.md).
            Command::Client(command) => return command.run().await,
        };
        result.unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        })
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let WorkConfig { database, runtime, release, worker } = args.worker.config();
    let config = ServerConfig {
        database,
        runtime,
        release,
        worker: Some(worker),
        api: ApiConfig { webhooks: args.webhooks.into(), ..args.api.config() },
        seal_interval: args.seal_interval,
        drift_interval: args.drift_interval,
        forge: args.forge.into(),
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    server::run(listener, config, cancelled_on_signal("shutting down")).await?;
    Ok(ExitCode::SUCCESS)
}

async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = cancelled_on_signal("shutting down; the run in progress is finished first");
    server::work(args.config(), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled on Ctrl-C or SIGTERM, which logs `why` then.
fn cancelled_on_signal(why: &'static str) -> CancellationToken {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("{why}");
        cancel.cancel();
    });
    shutdown
}

async fn verify(args: DatabaseArgs) -> anyhow::Result<ExitCode> {
    let database = Database::open(&args.into()).await?;
    let report = database.store().verify().await;
    database.close().await?;
    let report = report?;
    println!(
        "checked {} events in {} streams, {} seals ({} events not sealed yet)",
        report.events_checked, report.streams_checked, report.seals_checked, report.unsealed_events
    );
    if report.is_intact() {
        println!("intact");
        return Ok(ExitCode::SUCCESS);
    }
    match report.first_broken_position() {
        Some(position) => println!("BROKEN: first broken position {position}"),
        None => println!("BROKEN"),
    }
    for problem in &report.problems {
        println!("  {problem}");
    }
    Ok(ExitCode::from(1))
}

async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let filter = EventFilter {
        streams: args.streams,
        types: args.types,
        since: args.since,
        until: args.until,
        ..EventFilter::default()
    };
    let database = Database::open(&args.database.into()).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let exported = audit::export(&database.store(), &filter, &mut out).await;
    out.flush()?;
    drop(out);
    database.close().await?;
    eprintln!("exported {} events", exported?);
    Ok(ExitCode::SUCCESS)
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let database = Database::open(&args.database.into()).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let replayed =
        audit::replay(&database.store(), args.application.as_deref(), args.environment.as_deref(), &mut out).await;
    out.flush()?;
    drop(out);
    database.close().await?;
    replayed?;
    Ok(ExitCode::SUCCESS)
}

async fn rebuild(args: DatabaseArgs, name: Option<String>) -> anyhow::Result<ExitCode> {
    // One pass over the log feeds every projection asked for.
    let projections = match name {
        Some(name) => vec![runner::Descriptor::named(&name)?],
        None => runner::all().to_vec(),
    };
    let database = Database::open(&args.into()).await?;
    let rebuilt = runner::rebuild(&database.store(), &projections, runner::DEFAULT_BATCH).await;
    database.close().await?;
    for r in rebuilt? {
        println!("{}: generation {} from {} events", r.name, r.generation, r.events);
    }
    Ok(ExitCode::SUCCESS)
}

async fn projection_status(args: DatabaseArgs) -> anyhow::Result<ExitCode> {
    let database = Database::open(&args.into()).await?;
    let status = runner::status(database.store().pool()).await;
    database.close().await?;
    for s in status? {
        println!(
            "{}: version {} generation {} at {} ({} events), {} behind ({:.1}s)",
            s.name, s.version, s.generation, s.cursor, s.events, s.lag_events, s.lag_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
