//! The test harness: real PostgreSQL for every test, nothing mocked.
//!
//! The first test in a process starts one private cluster from the installed server
//! binaries (fsync off, removed when the process ends, however it ends), or uses
//! the server named by `DATABASE_URL`. Every [`TestDb`] is a fresh database with all
//! migrations applied, dropped again when the test is done. No fixed ports: the
//! private cluster listens on a Unix socket in its own temporary directory.

pub mod docker;
pub mod example;
pub mod forge;
pub mod fuzz;
pub mod kube;
pub mod registry;
pub mod tls;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use shiplog_engine::store::{Cursor, EventStore};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Executor, PgPool};

/// Where test databases are created, for the life of the test process.
struct Server {
    /// Options for any database on the server; `database` is set per use.
    options: PgConnectOptions,
    /// A URL for any database on the server, `{db}` standing for the database name:
    /// for `shiplog` processes the tests start.
    url: String,
    /// Kept so the cluster lives as long as the process; it stops when the process ends.
    _cluster: Option<Cluster>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let options = postgres::options_from_url(&url).expect("DATABASE_URL is not a valid PostgreSQL URL");
            // Swap the database name (the URL's path) for the placeholder, keeping any query.
            let (base, query) =
                url.split_once('?').map_or((url.as_str(), String::new()), |(b, q)| (b, format!("?{q}")));
            let (scheme, rest) = base.split_once("://").expect("checked by options_from_url");
            let authority = rest.split('/').next().unwrap_or_default();
            let url = format!("{scheme}://{authority}/{{db}}{query}");
            Server { options, url, _cluster: None }
        }
        Err(_) => {
            let data_dir = std::env::temp_dir().join(format!("shiplog-test-{}", uuid::Uuid::new_v4().simple()));
            let options = ClusterOptions { data_dir, ephemeral: true, unsafe_no_fsync: true, tls: None };
            let cluster = Cluster::start(&options).unwrap_or_else(|e| panic!("starting the test cluster: {e}"));
            Server { options: cluster.connect_options("postgres"), url: cluster.url("{db}"), _cluster: Some(cluster) }
        }
    })
}

/// A fresh, migrated database of its own for one test.
pub struct TestDb {
    pub name: String,
    /// Connected as the database owner (the cluster's superuser on a private cluster):
    /// for set-up and for playing the attacker in tamper tests.
    pub owner: PgPool,
    /// Connected as `shiplog_runtime`, as the server is.
    pub runtime: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = server();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres::owner_pool(server.options.clone().database("postgres"), 1)
            .await
            .expect("connecting to the test server");
        postgres::ensure_database(&admin, &name).await.expect("creating the test database");
        admin.close().await;
        let options = server.options.clone().database(&name);
        let owner = postgres::owner_pool(options.clone(), 10).await.expect("connecting as owner");
        postgres::migrate(&owner).await.expect("migrating the test database");
        let runtime = postgres::runtime_pool(options, 20).await.expect("connecting as the runtime role");
        TestDb { name, owner, runtime }
    }

    /// The event store as the server uses it: through the runtime role.
    pub fn store(&self) -> EventStore {
        EventStore::new(self.runtime.clone())
    }

    /// A `DATABASE_URL` for this database, for `shiplog` processes a test starts.
    pub fn url(&self) -> String {
        server().url.replace("{db}", &self.name)
    }

    /// Connection options for this database as its owner.
    pub fn options(&self) -> PgConnectOptions {
        server().options.clone().database(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any async context we could await in, so the database is
        // dropped from a thread with a runtime of its own. FORCE ends the sessions
        // this test's pools still hold.
        let options = server().options.clone().database("postgres");
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let admin = postgres::owner_pool(options, 1).await?;
                admin.execute(sqlx::AssertSqlSafe(sql)).await?;
                admin.close().await;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`. The way
/// tests wait for something to happen: on a condition, never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `count` events are readable in the global order. Readers cannot pass
/// a transaction still in flight anywhere on the cluster (transaction ids are
/// cluster-wide), so on a server shared with other tests this can take a moment.
pub async fn wait_readable(store: &EventStore, count: usize) {
    eventually(&format!("{count} events readable"), Duration::from_secs(30), || async {
        let events = store.read_all(Cursor::START, count + 1).await.expect("reading events");
        assert!(events.len() <= count, "more than {count} events in the log");
        (events.len() == count).then_some(())
    })
    .await
}

/// A child process a test started: used as the `Child` it holds, and ended with the
/// test, pass or fail. Dropped while it runs, it gets SIGTERM, and SIGKILL if it
/// has not exited ten seconds later, so that no server a failed test started
/// outlives it (holding the test runner's pipes, or a port, or its database).
pub struct Spawned(pub std::process::Child);

impl Spawned {
    /// Starts `command`; a command that cannot start fails the test with `what`.
    pub fn start(command: &mut std::process::Command, what: &str) -> Spawned {
        Spawned(command.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}")))
    }
}

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
