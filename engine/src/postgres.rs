//! PostgreSQL for shiplog: a private cluster started from the installed server
//! binaries when no `DATABASE_URL` is given, migrations, and the connection pools.
//!
//! The cluster runs under a small `sh` supervisor whose standard input is a pipe
//! from this process. When this process ends, however it ends (exit, panic,
//! SIGKILL), the pipe closes and the supervisor shuts PostgreSQL down, so no
//! server is ever left behind.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};

/// The superuser of a private cluster.
pub const SUPERUSER: &str = "shiplog";
/// The role the server works as once migrations are applied (see migrations/0001).
pub const RUNTIME_ROLE: &str = "shiplog_runtime";
/// The unprivileged account that runs a private cluster when shiplog runs as root.
pub const ROOT_FALLBACK_USER: &str = "postgres";

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Unix socket paths are limited to 107 bytes; `/.s.PGSQL.5432` takes 15 of them.
const MAX_SOCKET_DIR_LEN: usize = 90;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH or under \
         /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: `apt-get install postgresql`) \
         or set DATABASE_URL to use a server you already run."
    )]
    NotInstalled,
    #[error(
        "shiplog runs as root and PostgreSQL refuses to; the unprivileged user `{0}` that would run \
         the private cluster does not exist. Create it (`useradd --system {0}`), run shiplog as a \
         normal user, or set DATABASE_URL."
    )]
    NoUnprivilegedUser(String),
    #[error(
        "data directory {dir} cannot be used by user `{user}`: every parent directory must be \
         searchable by it. Choose another with --data-dir (e.g. /var/lib/shiplog) or set DATABASE_URL."
    )]
    DataDirUnreachable { dir: PathBuf, user: String },
    #[error("{what} failed: {detail}")]
    Command { what: &'static str, detail: String },
    #[error("PostgreSQL did not become ready within {0:?}; its log says:\n{1}")]
    StartTimeout(Duration, String),
    #[error("PostgreSQL exited while starting; its log says:\n{0}")]
    Exited(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// How a private cluster is run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// Remove the data directory once the cluster stops (test clusters).
    pub ephemeral: bool,
    /// Turn fsync off. Only for throwaway clusters: a crash can lose committed data.
    pub unsafe_no_fsync: bool,
    /// Also listen on `127.0.0.1` over TLS (how a managed PostgreSQL is reached);
    /// by default the cluster is reachable only through its Unix socket.
    pub tls: Option<ClusterTls>,
}

/// The TCP port and server certificate of a cluster reachable over TLS.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub port: u16,
    /// The server's certificate chain and private key, PEM.
    pub certificate_pem: String,
    pub key_pem: String,
}

/// A running private PostgreSQL cluster, reachable only through its Unix socket.
#[derive(Debug)]
pub struct Cluster {
    supervisor: Child,
    socket_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// The port of its socket (and of its TCP listener, with TLS).
    port: u16,
}

/// PostgreSQL's default port, which names the socket file when no other is set.
const DEFAULT_PORT: u16 = 5432;

/// The shell supervisor: runs postgres, and stops it when its stdin closes.
const SUPERVISOR: &str = r#"
exec 3<&0 0</dev/null
"$@" &
pg=$!
( read -r _ <&3; kill -INT "$pg" 2>/dev/null ) &
wait "$pg"
status=$?
if [ -n "$SHIPLOG_PG_REMOVE" ]; then rm -rf "$SHIPLOG_PG_REMOVE"; fi
exit $status
"#;

impl Cluster {
    /// Initialises the data directory if it is empty, starts PostgreSQL on a Unix
    /// socket only (no TCP), and waits until it accepts connections. Blocking.
    pub fn start(options: &ClusterOptions) -> Result<Cluster, ClusterError> {
        let bin_dir = find_server_binaries()?;
        let account = Account::for_cluster()?;
        let data_dir = absolute(&options.data_dir)?;
        fs::create_dir_all(&data_dir).map_err(|e| ClusterError::Io(format!("creating {}", data_dir.display()), e))?;
        account.own(&data_dir)?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| ClusterError::Io(format!("securing {}", data_dir.display()), e))?;
        if !account.can_write(&data_dir) {
            return Err(ClusterError::DataDirUnreachable { dir: data_dir, user: account.name.clone() });
        }

        if !data_dir.join("PG_VERSION").exists() {
            let mut initdb = account.command(bin_dir.join("initdb"));
            initdb.arg("-D").arg(&data_dir).args(["-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C"]);
            if options.ephemeral {
                initdb.arg("--no-sync");
            }
            run("initdb", &mut initdb)?;
        }

        // The socket lives in the data directory, which only the cluster's owner can
        // enter, unless that path is too long for a socket address.
        let socket_dir = if data_dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            data_dir.clone()
        } else {
            let dir = std::env::temp_dir().join(format!("shiplog-pg-{}", uuid::Uuid::new_v4().simple()));
            fs::create_dir(&dir).map_err(|e| ClusterError::Io(format!("creating {}", dir.display()), e))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| ClusterError::Io(format!("securing {}", dir.display()), e))?;
            account.own(&dir)?;
            dir
        };

        let log_file = data_dir.join("postgres.log");
        let log =
            File::create(&log_file).map_err(|e| ClusterError::Io(format!("creating {}", log_file.display()), e))?;
        account.own(&log_file)?;
        let mut supervisor = account.command("sh");
        supervisor
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("shiplog-postgres")
            .arg(bin_dir.join("postgres"))
            .arg("-D")
            .arg(&data_dir)
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=", "-c", "unix_socket_permissions=0700"])
            .args(["-c", "max_connections=200", "-c", "idle_in_transaction_session_timeout=60s"])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(|e| ClusterError::Io("log file".into(), e))?)
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal reaches shiplog, which
            // then stops the cluster in order, instead of reaching PostgreSQL directly.
            .process_group(0);
        if options.unsafe_no_fsync {
            supervisor.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        let port = match &options.tls {
            None => DEFAULT_PORT,
            Some(tls) => {
                for (file, pem) in [("server.crt", &tls.certificate_pem), ("server.key", &tls.key_pem)] {
                    let path = data_dir.join(file);
                    fs::write(&path, pem).map_err(|e| ClusterError::Io(format!("writing {}", path.display()), e))?;
                    // PostgreSQL refuses a key that others can read.
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .map_err(|e| ClusterError::Io(format!("securing {}", path.display()), e))?;
                    account.own(&path)?;
                }
                let port = tls.port.to_string();
                supervisor.args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-p", &port]);
                tls.port
            }
        };
        if options.ephemeral {
            let remove = if socket_dir == data_dir { data_dir.clone() } else { socket_dir.clone() };
            supervisor.env("SHIPLOG_PG_REMOVE", remove);
        }
        // A postmaster that was killed leaves its lock file behind, saying `ready`:
        // what it says is only news once the new postmaster has rewritten it.
        let stale_pid_file = fs::read_to_string(data_dir.join("postmaster.pid")).ok();
        let supervisor = supervisor
            .spawn()
            .map_err(|e| ClusterError::Command { what: "starting postgres", detail: e.to_string() })?;
        let mut cluster = Cluster { supervisor, socket_dir, data_dir, log_file, port };
        cluster.wait_ready(stale_pid_file.as_deref())?;
        Ok(cluster)
    }

    /// Waits for PostgreSQL to mark itself ready in `postmaster.pid`, as `pg_ctl -w`
    /// does; a file still as a killed postmaster left it (`stale`) does not count.
    fn wait_ready(&mut self, stale: Option<&str>) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            if let Ok(text) = fs::read_to_string(&pid_file)
                && Some(text.as_str()) != stale
                && text.lines().nth(7).is_some_and(|status| status.trim() == "ready")
            {
                return Ok(());
            }
            if let Ok(Some(_)) = self.supervisor.try_wait() {
                return Err(ClusterError::Exited(self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(ClusterError::StartTimeout(START_TIMEOUT, self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = File::open(&self.log_file).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Connection options for `database` as the cluster's superuser.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.socket_dir).port(self.port).username(SUPERUSER).database(database)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A `DATABASE_URL` for `psql` and other tools.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@localhost:{}/{database}?host={}", self.port, self.socket_dir.display())
    }

    /// Stops PostgreSQL (fast shutdown: sessions are ended, committed data is kept)
    /// and waits for it to exit. Blocking.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        drop(self.supervisor.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.supervisor.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    return Err(ClusterError::Command {
                        what: "stopping postgres",
                        detail: "it did not exit in 30s".into(),
                    });
                }
                Err(e) => return Err(ClusterError::Io("waiting for postgres".into(), e)),
            }
        }
        if self.socket_dir != self.data_dir {
            let _ = fs::remove_dir_all(&self.socket_dir);
        }
        Ok(())
    }
}

/// Finds `initdb` (and `postgres` beside it) on PATH, then under /usr/lib/postgresql.
fn find_server_binaries() -> Result<PathBuf, ClusterError> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("initdb"));
    let mut packaged: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/initdb"))
        .collect();
    // Newest major version first.
    packaged.sort_by_key(|p| std::cmp::Reverse(p.iter().nth(3).and_then(|v| v.to_str()?.parse::<u32>().ok())));
    on_path
        .chain(packaged)
        .filter_map(|initdb| fs::canonicalize(initdb).ok())
        .find_map(|initdb| {
            let dir = initdb.parent()?.to_path_buf();
            dir.join("postgres").exists().then_some(dir)
        })
        .ok_or(ClusterError::NotInstalled)
}

fn absolute(path: &Path) -> Result<PathBuf, ClusterError> {
    std::path::absolute(path).map_err(|e| ClusterError::Io(format!("resolving {}", path.display()), e))
}

/// The operating-system account that runs the cluster: this process's own, or an
/// unprivileged one when this process is root.
struct Account {
    name: String,
    /// Set when the cluster must run as another user.
    switch_to: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
}

impl Account {
    fn for_cluster() -> Result<Account, ClusterError> {
        if !nix::unistd::geteuid().is_root() {
            let name = std::env::var("USER").unwrap_or_else(|_| "current user".into());
            return Ok(Account { name, switch_to: None });
        }
        let name = ROOT_FALLBACK_USER.to_owned();
        match nix::unistd::User::from_name(&name) {
            Ok(Some(user)) => Ok(Account { name, switch_to: Some((user.uid, user.gid)) }),
            _ => Err(ClusterError::NoUnprivilegedUser(name)),
        }
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.switch_to {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }

    fn own(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some((uid, gid)) = self.switch_to {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .map_err(|e| ClusterError::Io(format!("handing {} to {}", path.display(), self.name), e.into()))?;
        }
        Ok(())
    }

    fn can_write(&self, dir: &Path) -> bool {
        self.command("sh")
            .args(["-c", "test -w \"$1\" && test -x \"$1\"", "sh"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

fn run(what: &'static str, command: &mut Command) -> Result<(), ClusterError> {
    let output = command.output().map_err(|e| ClusterError::Command { what, detail: e.to_string() })?;
    if output.status.success() {
        Ok(())
    } else {
        let detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(ClusterError::Command { what, detail })
    }
}

/// Settings every shiplog connection gets: a transaction left open by a crashed
/// worker must not stall gap-free readers for long (ARCHITECTURE.md, "And from
/// the event store": readers never pass a transaction still in flight).
fn session_defaults(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("idle_in_transaction_session_timeout", "60s")]).application_name("shiplog")
}

/// Parses a `DATABASE_URL`, which must be a `postgres://` or `postgresql://` URL.
pub fn options_from_url(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(sqlx::Error::Configuration("the URL must start with postgres:// or postgresql://".into()));
    }
    PgConnectOptions::from_str(url)
}

/// A pool connected as the database owner: for migrations and administration.
pub async fn owner_pool(options: PgConnectOptions, max_connections: u32) -> sqlx::Result<PgPool> {
    PgPoolOptions::new().max_connections(max_connections).connect_with(session_defaults(options)).await
}

/// A pool whose sessions act as [`RUNTIME_ROLE`], which may read and append events
/// but never change or remove them. The server does all its work through this pool.
pub async fn runtime_pool(options: PgConnectOptions, max_connections: u32) -> sqlx::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Kept literal: RUNTIME_ROLE is this same name.
                conn.execute("SET ROLE shiplog_runtime").await?;
                Ok(())
            })
        })
        .connect_with(session_defaults(options))
        .await
}

/// Applies every migration in `migrations/` that the database lacks.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}

/// Creates `database` unless it exists, connecting through `admin` (any database
/// on the same server).
pub async fn ensure_database(admin: &PgPool, database: &str) -> sqlx::Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(admin)
        .await?;
    if !exists {
        // Identifiers cannot be bound; the name is quoted, which makes any text safe.
        let sql = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        admin.execute(sqlx::AssertSqlSafe(sql)).await?;
    }
    Ok(())
}

/// Connection options for a cluster already running in `data_dir` (started by
/// another shiplog process), read from its `postmaster.pid`; `None` when no live
/// postmaster owns that directory.
pub fn running_cluster(data_dir: &Path) -> Option<PgConnectOptions> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    let socket_dir = lines.get(4)?.trim();
    let ready = lines.get(7).is_some_and(|status| status.trim() == "ready");
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    (ready && alive && !socket_dir.is_empty()).then(|| PgConnectOptions::new().socket(socket_dir).username(SUPERUSER))
}
