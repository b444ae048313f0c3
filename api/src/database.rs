//! The database a shiplog process works on: its two pools (the owner's, for
//! migrations, and the runtime role's, for everything else) and, when this
//! process started it, the private cluster it must stop on the way out.

use anyhow::Context;
use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use shiplog_engine::store::EventStore;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::config::DatabaseConfig;

/// An open database; [`Database::close`] it on the way out.
pub struct Database {
    owner: PgPool,
    runtime: PgPool,
    /// The one store of the process: its clones share the signal that wakes the
    /// event feed after an append.
    store: EventStore,
    cluster: Option<Cluster>,
}

/// The database a private cluster holds shiplog's data in.
const DATABASE_NAME: &str = "shiplog";

impl Database {
    /// Connects to `DATABASE_URL`, or to the private cluster in the data directory
    /// (starting it unless another shiplog process already runs it), and applies
    /// pending migrations.
    pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Database> {
        let (options, cluster) = match &config.url {
            Some(url) => (postgres::options_from_url(url).context("DATABASE_URL is not a PostgreSQL URL")?, None),
            None => private_cluster(config).await?,
        };
        let owner = postgres::owner_pool(options.clone(), 5).await.context("connecting to PostgreSQL")?;
        postgres::migrate(&owner).await.context("applying migrations")?;
        let runtime = postgres::runtime_pool(options, 20).await.context("connecting as shiplog_runtime")?;
        let store = EventStore::new(runtime.clone());
        Ok(Database { owner, runtime, store, cluster })
    }

    /// The process's event store (a clone of the one store).
    pub fn store(&self) -> EventStore {
        self.store.clone()
    }

    /// Closes every connection, then stops the private cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.runtime.close().await;
        self.owner.close().await;
        if let Some(cluster) = self.cluster {
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
            tracing::info!("private PostgreSQL stopped");
        }
        Ok(())
    }
}

async fn private_cluster(config: &DatabaseConfig) -> anyhow::Result<(PgConnectOptions, Option<Cluster>)> {
    if let Some(options) = postgres::running_cluster(&config.data_dir) {
        tracing::info!(data_dir = %config.data_dir.display(), "using the private PostgreSQL another shiplog runs");
        return Ok((options.database(DATABASE_NAME), None));
    }
    let options =
        ClusterOptions { data_dir: config.data_dir.clone(), ephemeral: false, unsafe_no_fsync: false, tls: None };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options)).await??;
    tracing::info!(data_dir = %cluster.data_dir().display(), url = %cluster.url(DATABASE_NAME), "private PostgreSQL started");
    let admin = postgres::owner_pool(cluster.connect_options("postgres"), 1).await?;
    let created = postgres::ensure_database(&admin, DATABASE_NAME).await;
    admin.close().await;
    created?;
    Ok((cluster.connect_options(DATABASE_NAME), Some(cluster)))
}
