//! The PostgreSQL server a bench runs on (`DATABASE_URL`'s, or a private cluster)
//! and the fresh, migrated database every run gets, with `raw_events`, the table
//! every raw baseline writes to.

use std::future::Future;

use anyhow::Context;
use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

use crate::report::Report;

/// The PostgreSQL server the bench runs on: `DATABASE_URL`'s, or a private cluster.
pub struct Server {
    /// Options for any database on the server; the database is set per use.
    options: PgConnectOptions,
    cluster: Option<Cluster>,
}

impl Server {
    pub fn start(no_fsync: bool) -> anyhow::Result<Server> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if no_fsync {
                eprintln!(
                    "warning: --no-fsync only applies to a private cluster; DATABASE_URL's server keeps its settings"
                );
            }
            let options = postgres::options_from_url(&url).context("DATABASE_URL is not a valid PostgreSQL URL")?;
            return Ok(Server { options, cluster: None });
        }
        let data_dir = std::env::temp_dir().join(format!("shiplog-bench-{}", Uuid::new_v4().simple()));
        eprintln!("starting a private PostgreSQL cluster in {}", data_dir.display());
        let cluster =
            Cluster::start(&ClusterOptions { data_dir, ephemeral: true, unsafe_no_fsync: no_fsync, tls: None })
                .context("starting the private cluster")?;
        Ok(Server { options: cluster.connect_options("postgres"), cluster: Some(cluster) })
    }

    pub fn stop(self) -> anyhow::Result<()> {
        match self.cluster {
            Some(cluster) => cluster.stop().context("stopping the private cluster"),
            None => Ok(()),
        }
    }
}

/// The pools of the fresh, migrated database every run gets.
pub struct BenchDb {
    /// The store's pool: the runtime role, as the server uses it.
    pub runtime: PgPool,
    /// Owner: set-up and the baselines.
    pub owner: PgPool,
}

impl BenchDb {
    /// Migrates the database, opens both pools and creates `raw_events`.
    pub async fn open(options: PgConnectOptions, connections: u32) -> anyhow::Result<BenchDb> {
        let owner = postgres::owner_pool(options.clone(), connections).await?;
        postgres::migrate(&owner).await.context("migrating the bench database")?;
        let runtime = postgres::runtime_pool(options, connections).await?;
        create_raw_table(&owner).await?;
        Ok(BenchDb { runtime, owner })
    }

    pub async fn close(self) {
        self.runtime.close().await;
        self.owner.close().await;
    }
}

/// Creates `bench_<uuid>`, runs `bench` in it and drops it again, also when the
/// benchmark fails.
pub async fn run_in_fresh_database<F, Fut>(server: &Server, bench: F) -> anyhow::Result<Report>
where
    F: FnOnce(PgConnectOptions) -> Fut,
    Fut: Future<Output = anyhow::Result<Report>>,
{
    let name = format!("bench_{}", Uuid::new_v4().simple());
    let admin = postgres::owner_pool(server.options.clone(), 1).await.context("connecting to the server")?;
    postgres::ensure_database(&admin, &name).await.context("creating the bench database")?;
    let result = bench(server.options.clone().database(&name)).await;
    let drop_sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    if let Err(e) = admin.execute(sqlx::AssertSqlSafe(drop_sql)).await {
        eprintln!("warning: could not drop database {name}: {e}");
    }
    admin.close().await;
    result
}

/// `events` without anything shiplog adds: same columns, types, defaults and
/// indexes; no streams table, foreign key, checks or triggers.
pub async fn create_raw_table(owner: &PgPool) -> anyhow::Result<()> {
    owner
        .execute(
            "CREATE TABLE raw_events ( \
               global_position bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
               tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(), \
               stream_id       text        NOT NULL, \
               version         bigint      NOT NULL, \
               event_id        uuid        NOT NULL UNIQUE, \
               event_type      text        NOT NULL, \
               schema_version  integer     NOT NULL, \
               payload         text        NOT NULL, \
               metadata        text        NOT NULL, \
               recorded_at     timestamptz NOT NULL, \
               prev_hash       bytea       NOT NULL, \
               hash            bytea       NOT NULL, \
               UNIQUE (stream_id, version) \
             ); \
             CREATE INDEX raw_events_cursor_idx ON raw_events (tx_id, global_position);",
        )
        .await
        .context("creating raw_events")?;
    Ok(())
}

/// The settings that decide what the figures mean, printed above them.
pub async fn describe_server(owner: &PgPool) -> anyhow::Result<Vec<String>> {
    let (version, fsync, sync_commit, shared_buffers): (String, String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('fsync'), \
                current_setting('synchronous_commit'), current_setting('shared_buffers')",
    )
    .fetch_one(owner)
    .await?;
    let server = if std::env::var_os("DATABASE_URL").is_some() { "DATABASE_URL" } else { "private cluster" };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    Ok(vec![format!(
        "PostgreSQL {version} ({server}), fsync={fsync}, synchronous_commit={sync_commit}, \
         shared_buffers={shared_buffers}, {cpus} CPUs"
    )])
}
