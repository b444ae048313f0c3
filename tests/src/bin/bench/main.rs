//! `bench`: what shiplog costs over what it runs on, each figure beside a raw
//! baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p shiplog-tests --bin bench -- store [--events N] [--json PATH] [--no-fsync]
//! cargo run --release -p shiplog-tests --bin bench -- engine [--runs N] [--json PATH] [--no-fsync]
//! cargo run --release -p shiplog-tests --bin bench -- projections [--events N] [--json PATH] [--no-fsync]
//! cargo run --release -p shiplog-tests --bin bench -- docker [--runs N] [--json PATH] [--no-fsync]
//! cargo build --release -p shiplog && cargo run --release -p shiplog-tests --bin bench -- api [--json PATH]
//! ```
//!
//! `bench api` drives a `shiplog serve` process as clients do; see [`Command::Api`].
//!
//! `bench docker` times a setup and a patch of the example on the docker runtime
//! beside the same steps as a shell script of `docker` commands; see
//! [`Command::Docker`].
//!
//! `bench engine` times patch runs end to end; [`Command::Engine`] says what it
//! measures. The rest of this comment is about `bench store`: what shiplog's event
//! store costs over the PostgreSQL it runs on.
//!
//! Every shiplog figure is printed beside a raw baseline measured in the same run, on
//! the same server, with the same durability, so the ratio isolates what shiplog
//! adds: the stream row lock and version check, canonical JSON, the hash chain, the
//! gap-free read condition. What is measured:
//!
//! 1. Single-event appends by 1 and by `--writers` concurrent writers, each writer on
//!    its own stream and passing `ExpectedVersion::Exact` as a real writer would.
//! 2. Appends of `--batch-size` events, by 1 and by `--writers` concurrent writers.
//! 3. A full replay: the store is topped up to `--events` events (untimed), then
//!    read from the start with `read_all`, page by page, following its cursor.
//!
//! The baseline writes to `raw_events`, a plain table with the same columns, column
//! types and indexes as `events` but no streams table, triggers, foreign key or
//! checks. It receives the same bytes: the same stream names and versions, the same
//! canonical payload and metadata text, real 32-byte chain hashes, fresh event ids and
//! a timestamp. Those bytes are prepared before the clock starts, so the baseline pays
//! only for the database round trip and the write, while shiplog's timed call includes
//! everything `append` does, canonicalising and hashing included: that work is part
//! of what shiplog costs. Single events go in as one autocommit `INSERT … VALUES`,
//! batches as one `INSERT … SELECT FROM UNNEST(…)`, the statement shape shiplog uses.
//! For the replay the raw table is made an exact copy of `events` and read by plain
//! keyset paging on its primary key, selecting and decoding the same columns.
//!
//! Latencies are per call (one append, one insert statement); throughput is events
//! over the wall time of the whole run. For throughput the ratio is shiplog events/s
//! over baseline rows/s (below 1 means slower); for latency and memory it is shiplog
//! over baseline (above 1 means slower or bigger). Nothing here asserts on timings:
//! this is a measuring tool, its figures depend on the machine.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
mod api;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};
use shiplog_engine::canonical;
use shiplog_engine::domain::environment::{EnvironmentKind, EnvironmentSpec, Tracking};
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::domain::{CommitId, Name, StreamRef};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::runtime::{AnyRuntime, EnvironmentRef, Runtime};
use shiplog_engine::store::hash::{self, EventFields, GENESIS, Hash};
use shiplog_engine::store::{Cursor, EventStore, ExpectedVersion, MAX_BATCH_EVENTS, Metadata, NewEvent, StreamId};
use shiplog_engine::worker::{Tick, Worker};
use shiplog_engine::{git as engine_git, logs};
use shiplog_tests::example::{ExampleRepo, Scratch, git};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Executor, PgPool};
use tokio::sync::Barrier;
use uuid::Uuid;

/// Untimed calls each writer makes first, so connections are open and statements
/// prepared before the clock starts.
const WARMUP_CALLS: usize = 5;
/// Events per `read_all` page and per keyset page of the baseline.
const REPLAY_PAGE: usize = 10_000;
/// The fill appends batches of this many events, spread over `FILL_STREAMS` streams.
const FILL_BATCH: usize = MAX_BATCH_EVENTS;
const FILL_STREAMS: usize = 1000;
/// Concurrent appenders during the (untimed) fill.
const FILL_WRITERS: usize = 4;
const EVENT_TYPE: &str = "step.finished";

#[derive(Parser)]
#[command(about = "Measures shiplog against raw PostgreSQL baselines on the same server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The event store: appends and a full replay, each beside a raw-table baseline.
    Store(StoreArgs),
    /// The engine: what a patch run costs, from its request to `RunSucceeded`.
    ///
    /// Set-up, untimed: a private cluster as for `store` (durable unless --no-fsync);
    /// an application whose one service runs a prebuilt image (for the process
    /// runtime, a directory) as `sh -c "exec sleep 100000"`, without ports or health
    /// check, plus a stage `test` whose one job `unit` runs `true`; an environment
    /// set up once; then a few warm-up patches.
    ///
    /// Timed, --runs times: `request_patch` with an explicit commit (so resolving
    /// a branch is not measured), then one in-process worker `tick()` on the
    /// process runtime, which must return the run as succeeded. The `true` job is a
    /// real subprocess, run in the checkout of the commit the worker makes for a
    /// run's jobs (git clone and checkout of a one-commit repository); the roll-out
    /// is a no-op because nothing about the service changes (the bench checks that
    /// the service process is never restarted). A teardown run at the end stops the
    /// service.
    ///
    /// Baseline 1, the database writes a patch records and nothing else: right
    /// after each patch, the events it wrote (its run stream, and the environment's
    /// events naming it) are read back (untimed), and the same rows, byte for byte,
    /// are inserted into `raw_events` (the columns and indexes of `events`, no
    /// streams table, triggers or checks), one autocommit INSERT per transaction
    /// the engine committed them in. That is the least work that stores the same
    /// facts with the same durability on the same server; interleaving it with the
    /// patches gives both the same table sizes, WAL and checkpoints. Everything
    /// above it is the engine's: reading and folding streams, deciding, version
    /// checks, hashing, the queue and its lease, the run log, the subprocess.
    ///
    /// Baseline 2: `true` spawned and waited for with `std::process::Command`, to
    /// show what part of a patch is the one subprocess it spawns. Baseline 3: the
    /// engine's own `git::checkout` of the commit into a fresh directory, to show
    /// what part is the job's checkout.
    ///
    /// Latencies (mean, p50, p99) are given for the whole patch and split into the
    /// request (`request_patch` returning) and the worker (`tick`), beside the
    /// baseline's matching transactions: the request's one, and the rest. Counts per
    /// patch: event rows and event transactions (equal on both sides by
    /// construction), and write transactions (transaction ids assigned while the
    /// patch ran), which also counts the engine's writes that are not events. The
    /// issue's target, a p50 of at most 20 ms, is printed beside the result, never
    /// asserted.
    Engine(EngineArgs),
    /// Read models: a full rebuild of every projection, and an audit export, from
    /// `--events` events, beside the raw scan of the same rows.
    ///
    /// Set-up, untimed: a history of one application with 500 environments, each
    /// set up once and patched many times; every run's stream is what the engine
    /// writes for a run of build, release and deploy (decided by the domain), and
    /// each environment's stream holds its lifecycle facts. Then `raw_events` is
    /// made a copy of `events`, both vacuumed.
    ///
    /// Timed: each projection rebuilt alone (`rebuild`: a fresh generation filled
    /// from the whole log, then swapped in), all three in one pass over the log (what
    /// `shiplog projections rebuild` does),
    /// and `audit export` of every event to a sink, with its peak RSS after a tenth
    /// and at the end (equal figures: constant memory). Baseline: the keyset scan of
    /// `raw_events` selecting and decoding the same columns, with its own RSS.
    /// The issue's target, a full rebuild at ≥ 25% of the raw scan, is printed, never asserted.
    Projections(ProjectionsArgs),

    /// The docker runtime: a setup and a patch of the example application through
    /// the engine, beside the same steps done by a shell script of `docker`
    /// commands (`bench/docker.sh`), in the same run on the same engine.
    ///
    /// Each of --runs rounds (after one untimed warm-up round, which fills the
    /// engine's build cache for both sides) works on fresh environments: on the
    /// engine side `request_setup` and one worker `tick` (build at the commit,
    /// network and volume, the release command in a one-off container, roll-out with
    /// its HTTP health check), then a new commit, `request_patch` and a `tick`
    /// (build, release command, roll-out replacing the old container). The script
    /// does the same for the same two commits: clone and check out the commit,
    /// `docker build` with the same labels and build argument, `docker network
    /// create` and `docker volume create` (setup), `docker run --rm` of the release
    /// command, `docker run -d` of the new version, a GET until it answers 200,
    /// the alias moved to it (`network disconnect`/`connect`), `docker update
    /// --restart`, `docker stop` and `docker rm` of the old one. Teardowns are not
    /// timed. The sides alternate which goes first in each round. The issue's
    /// target, engine time at most 1.2 times the script's, is printed, not asserted.
    Docker(DockerArgs),
    /// The GraphQL API through a `shiplog serve` process (the release binary next
    /// to this one) on the bench database, as clients use it.
    ///
    /// Live logs: for each --subscribers count, that many websockets subscribe
    /// (`graphql-transport-ws`) to one run's `runLogs`; the bench writes lines with
    /// the engine's own run-log writer, as a worker does. Latency: 300 lines, 5 ms
    /// apart, each timed from its writing to its arrival at every subscriber (p50,
    /// p99 over all arrivals), beside the floor of a database-backed live log: a
    /// row INSERTed with a NOTIFY in its transaction, heard by one listener. Rate:
    /// --lines lines written at once, lines/s until the last subscriber has the last
    /// line, beside plain 500-row INSERTs of the same lines.
    ///
    /// Lists: --environments environments (a tenth production), folded by the
    /// server's projections; then 8 clients each ask `environments(first: 50)`
    /// 50 times over HTTP, beside the same two statements (count and page) on the
    /// read model asked the same way. Targets (printed, not asserted): p99 delivery
    /// at most 100 ms; at least 20,000 lines/s into one run's subscribers.
    Api(ApiArgs),
}

/// Options every benchmark takes.
#[derive(clap::Args)]
struct CommonArgs {
    /// Write the JSON results here instead of printing them after the table.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Private cluster only: run PostgreSQL without fsync (figures then say little about durable writes).
    #[arg(long)]
    no_fsync: bool,
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Events in the store for the replay benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Single-event appends per writer configuration, shared among its writers.
    #[arg(long, default_value_t = 2000)]
    appends: usize,
    /// Batch appends per writer configuration, shared among its writers.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Events per batch append.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH_EVENTS as i64))]
    batch_size: u16,
    /// Writers in the concurrent configurations.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    writers: u16,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct EngineArgs {
    /// Timed patch runs.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct ProjectionsArgs {
    /// Events in the history the read models are rebuilt from.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct DockerArgs {
    /// Timed rounds (each: a setup and a patch on each side).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct ApiArgs {
    /// Subscriber counts to measure live-log delivery with.
    #[arg(long, value_delimiter = ',', default_value = "1,500")]
    subscribers: Vec<usize>,
    /// Lines in the burst that measures the delivery rate.
    #[arg(long, default_value_t = 20_000)]
    lines: usize,
    /// Environments in the list the query pages through.
    #[arg(long, default_value_t = 10_000)]
    environments: usize,
    #[command(flatten)]
    common: CommonArgs,
}

/// What a benchmark reports: lines printed above the table, and its figures.
type Report = (Vec<String>, Vec<Figure>);

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Store(args) => run_on_server(&args.common, |options| store_benchmarks(options, &args)),
        Command::Engine(args) => run_on_server(&args.common, |options| engine_benchmark(options, &args)),
        Command::Projections(args) => run_on_server(&args.common, |options| projections_benchmark(options, &args)),
        Command::Docker(args) => run_on_server(&args.common, |options| docker_benchmark(options, &args)),
        Command::Api(args) => run_on_server(&args.common, |options| api::api_benchmark(options, &args)),
    }
}

/// Starts the server, runs `bench` in a fresh database on it and prints the report.
fn run_on_server<F, Fut>(common: &CommonArgs, bench: F) -> anyhow::Result<()>
where
    F: FnOnce(PgConnectOptions) -> Fut,
    Fut: Future<Output = anyhow::Result<Report>>,
{
    // Starting a private cluster blocks, so it happens before the runtime exists.
    let server = Server::start(common.no_fsync)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run_in_fresh_database(&server, bench));
    drop(runtime);
    server.stop()?;
    let (header, figures) = result?;
    print_report(&header, &figures, common.json.as_deref())
}

// ---------------------------------------------------------------------------
// The server and the benchmark database
// ---------------------------------------------------------------------------

/// The PostgreSQL server the bench runs on: `DATABASE_URL`'s, or a private cluster.
struct Server {
    /// Options for any database on the server; the database is set per use.
    options: PgConnectOptions,
    cluster: Option<Cluster>,
}

impl Server {
    fn start(no_fsync: bool) -> anyhow::Result<Server> {
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
        let cluster = Cluster::start(&ClusterOptions { data_dir, ephemeral: true, unsafe_no_fsync: no_fsync })
            .context("starting the private cluster")?;
        Ok(Server { options: cluster.connect_options("postgres"), cluster: Some(cluster) })
    }

    fn stop(self) -> anyhow::Result<()> {
        match self.cluster {
            Some(cluster) => cluster.stop().context("stopping the private cluster"),
            None => Ok(()),
        }
    }
}

/// The pools of the fresh, migrated database every run gets.
struct BenchDb {
    /// The store's pool: the runtime role, as the server uses it.
    runtime: PgPool,
    /// Owner: set-up and the baselines.
    owner: PgPool,
}

impl BenchDb {
    /// Migrates the database, opens both pools and creates `raw_events`.
    async fn open(options: PgConnectOptions, connections: u32) -> anyhow::Result<BenchDb> {
        let owner = postgres::owner_pool(options.clone(), connections).await?;
        postgres::migrate(&owner).await.context("migrating the bench database")?;
        let runtime = postgres::runtime_pool(options, connections).await?;
        create_raw_table(&owner).await?;
        Ok(BenchDb { runtime, owner })
    }

    async fn close(self) {
        self.runtime.close().await;
        self.owner.close().await;
    }
}

/// Creates `bench_<uuid>`, runs `bench` in it and drops it again, also when the
/// benchmark fails.
async fn run_in_fresh_database<F, Fut>(server: &Server, bench: F) -> anyhow::Result<Report>
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

/// `bench store`: appends and a replay, on shiplog and on `raw_events`.
async fn store_benchmarks(options: PgConnectOptions, args: &StoreArgs) -> anyhow::Result<Report> {
    let db = BenchDb::open(options, u32::from(args.writers) + 2).await?;
    let header = describe_server(&db.owner).await?;
    let mut figures = append_benchmarks(&db, args).await?;
    figures.extend(replay_benchmark(&db, args.events).await?);
    db.close().await;
    Ok((header, figures))
}

/// `events` without anything shiplog adds: same columns, types, defaults and
/// indexes; no streams table, foreign key, checks or triggers.
async fn create_raw_table(owner: &PgPool) -> anyhow::Result<()> {
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
async fn describe_server(owner: &PgPool) -> anyhow::Result<Vec<String>> {
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

// ---------------------------------------------------------------------------
// What gets written
// ---------------------------------------------------------------------------

/// The content of every benchmark event: a realistic step result of about 200 bytes
/// of canonical JSON, with metadata naming an actor and a correlation id.
#[derive(Clone)]
struct Content {
    run_id: Uuid,
    metadata: Metadata,
}

impl Content {
    fn new() -> Content {
        let metadata =
            Metadata { actor: Some("bench".into()), correlation_id: Some(Uuid::new_v4()), ..Metadata::default() };
        Content { run_id: Uuid::new_v4(), metadata }
    }

    fn payload(&self, seq: u64) -> Value {
        json!({
            "run_id": self.run_id,
            "step": format!("build-{seq}"),
            "status": "succeeded",
            "exit_code": 0,
            "attempt": 1,
            "duration_ms": 1500 + seq % 1000,
            "runner": "runner-7",
            "summary": "compiled 214 crates, 0 warnings",
        })
    }

    fn event(&self, seq: u64) -> NewEvent {
        NewEvent::new(EVENT_TYPE, self.payload(seq)).with_metadata(self.metadata.clone())
    }
}

// ---------------------------------------------------------------------------
// Writers and the one runner that times them all
// ---------------------------------------------------------------------------

/// One writer of an append benchmark. Everything a call needs is prepared before
/// the clock starts; only `call` is timed.
trait Writer: Send + 'static {
    type Call: Send + 'static;
    fn prepare(&mut self) -> Self::Call;
    fn call(&mut self, call: Self::Call) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Appends through shiplog, tracking its stream's version as a real writer does.
struct ShiplogWriter {
    store: EventStore,
    stream: StreamId,
    version: u64,
    batch: usize,
    seq: u64,
    content: Content,
}

impl Writer for ShiplogWriter {
    type Call = Vec<NewEvent>;

    fn prepare(&mut self) -> Vec<NewEvent> {
        (0..self.batch)
            .map(|_| {
                self.seq += 1;
                self.content.event(self.seq)
            })
            .collect()
    }

    async fn call(&mut self, events: Vec<NewEvent>) -> anyhow::Result<()> {
        let appended = self.store.append(&self.stream, ExpectedVersion::Exact(self.version), &events).await?;
        self.version = appended.last_version;
        Ok(())
    }
}

/// Inserts the same bytes straight into `raw_events`.
struct RawWriter {
    pool: PgPool,
    stream: String,
    version: u64,
    prev_hash: Hash,
    batch: usize,
    seq: u64,
    content: Content,
}

/// The rows of one raw insert, column by column (the shape UNNEST takes).
struct RawRows {
    versions: Vec<i64>,
    ids: Vec<Uuid>,
    types: Vec<&'static str>,
    schemas: Vec<i32>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    recorded_at: DateTime<Utc>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl Writer for RawWriter {
    type Call = RawRows;

    fn prepare(&mut self) -> RawRows {
        let metadata =
            canonical::canonicalize(&serde_json::to_value(&self.content.metadata).expect("metadata is JSON"))
                .expect("metadata is canonical");
        let recorded_at = Utc::now();
        let mut rows = RawRows {
            versions: Vec::with_capacity(self.batch),
            ids: Vec::with_capacity(self.batch),
            types: vec![EVENT_TYPE; self.batch],
            schemas: vec![1; self.batch],
            payloads: Vec::with_capacity(self.batch),
            metadata: vec![metadata.clone(); self.batch],
            recorded_at,
            prev_hashes: Vec::with_capacity(self.batch),
            hashes: Vec::with_capacity(self.batch),
        };
        for _ in 0..self.batch {
            self.seq += 1;
            self.version += 1;
            let event_id = Uuid::new_v4();
            let payload = canonical::canonicalize(&self.content.payload(self.seq)).expect("payload is canonical");
            // Real chain hashes, so the baseline stores bytes like shiplog's.
            let hash = hash::event_hash(&EventFields {
                prev_hash: &self.prev_hash,
                stream_id: &self.stream,
                version: self.version,
                event_id,
                event_type: EVENT_TYPE,
                schema_version: 1,
                recorded_at,
                payload: &payload,
                metadata: &metadata,
            });
            rows.versions.push(self.version as i64);
            rows.ids.push(event_id);
            rows.payloads.push(payload);
            rows.prev_hashes.push(self.prev_hash.to_vec());
            rows.hashes.push(hash.to_vec());
            self.prev_hash = hash;
        }
        rows
    }

    async fn call(&mut self, rows: RawRows) -> anyhow::Result<()> {
        if rows.versions.len() == 1 {
            sqlx::query(
                "INSERT INTO raw_events (stream_id, version, event_id, event_type, schema_version, payload, \
                                         metadata, recorded_at, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&self.stream)
            .bind(rows.versions[0])
            .bind(rows.ids[0])
            .bind(rows.types[0])
            .bind(rows.schemas[0])
            .bind(&rows.payloads[0])
            .bind(&rows.metadata[0])
            .bind(rows.recorded_at)
            .bind(&rows.prev_hashes[0])
            .bind(&rows.hashes[0])
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO raw_events (stream_id, version, event_id, event_type, schema_version, payload, \
                                         metadata, recorded_at, prev_hash, hash) \
                 SELECT $1, v, id, t, s, p, m, $8, ph, h \
                 FROM UNNEST($2::bigint[], $3::uuid[], $4::text[], $5::int[], $6::text[], $7::text[], \
                             $9::bytea[], $10::bytea[]) AS x(v, id, t, s, p, m, ph, h)",
            )
            .bind(&self.stream)
            .bind(&rows.versions)
            .bind(&rows.ids)
            .bind(&rows.types)
            .bind(&rows.schemas)
            .bind(&rows.payloads)
            .bind(&rows.metadata)
            .bind(rows.recorded_at)
            .bind(&rows.prev_hashes)
            .bind(&rows.hashes)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// What one timed run produced.
struct Sample {
    wall: Duration,
    /// One per call, in no particular order.
    latencies: Vec<Duration>,
    events_per_call: usize,
}

/// Runs every writer in a task of its own: warm-up and preparation first, then, all
/// together from a barrier, `calls` timed calls each.
async fn run_writers<W: Writer>(writers: Vec<W>, calls: usize, events_per_call: usize) -> anyhow::Result<Sample> {
    let barrier = Arc::new(Barrier::new(writers.len() + 1));
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|mut writer| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let ready = warm_up_and_prepare(&mut writer, calls).await;
                // Wait even after a failure, or the others would wait for this writer forever.
                barrier.wait().await;
                let mut latencies = Vec::with_capacity(calls);
                for call in ready? {
                    let started = Instant::now();
                    writer.call(call).await?;
                    latencies.push(started.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Sample { wall: started.elapsed(), latencies, events_per_call })
}

async fn warm_up_and_prepare<W: Writer>(writer: &mut W, calls: usize) -> anyhow::Result<Vec<W::Call>> {
    for _ in 0..WARMUP_CALLS {
        let call = writer.prepare();
        writer.call(call).await?;
    }
    Ok((0..calls).map(|_| writer.prepare()).collect())
}

/// Throughput and latency of one sample.
#[derive(Clone, Copy)]
struct Stats {
    events_per_s: f64,
    calls_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Stats {
    fn of(mut sample: Sample) -> Stats {
        sample.latencies.sort_unstable();
        let calls = sample.latencies.len() as f64;
        let secs = sample.wall.as_secs_f64();
        Stats {
            events_per_s: calls * sample.events_per_call as f64 / secs,
            calls_per_s: calls / secs,
            p50_ms: percentile(&sample.latencies, 0.50),
            p99_ms: percentile(&sample.latencies, 0.99),
        }
    }
}

/// Mean, p50 and p99 of a set of latencies, in milliseconds.
#[derive(Clone, Copy)]
struct Latency {
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Latency {
    fn of(latencies: &[Duration]) -> Latency {
        let mut sorted = latencies.to_vec();
        sorted.sort_unstable();
        let mean_ms = sorted.iter().sum::<Duration>().as_secs_f64() * 1000.0 / sorted.len() as f64;
        Latency { mean_ms, p50_ms: percentile(&sorted, 0.50), p99_ms: percentile(&sorted, 0.99) }
    }
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------
// The benchmarks
// ---------------------------------------------------------------------------

/// Single-event and batch appends, each by one writer and by `--writers` writers.
async fn append_benchmarks(db: &BenchDb, args: &StoreArgs) -> anyhow::Result<Vec<Figure>> {
    let writers = usize::from(args.writers);
    let batch = usize::from(args.batch_size);
    let configs = [
        ("single", 1, 1, args.appends),
        ("single", 1, writers, args.appends),
        ("batch", batch, 1, args.batches),
        ("batch", batch, writers, args.batches),
    ];
    let mut figures = Vec::new();
    for (kind, batch, writers, total_calls) in configs {
        let calls = total_calls.div_ceil(writers).max(1);
        let name = format!(
            "append {batch} event{}, {writers} writer{}",
            if batch == 1 { "" } else { "s" },
            if writers == 1 { "" } else { "s" }
        );
        eprintln!("{name}: {} calls ...", calls * writers);
        // Each configuration writes streams of its own, named alike on both sides.
        let stream = |w: usize| format!("bench-{kind}{writers}-{w}");
        let shiplog = (0..writers)
            .map(|w| {
                Ok(ShiplogWriter {
                    store: EventStore::new(db.runtime.clone()),
                    stream: stream(w).parse()?,
                    version: 0,
                    batch,
                    seq: 0,
                    content: Content::new(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let raw = (0..writers)
            .map(|w| RawWriter {
                pool: db.owner.clone(),
                stream: stream(w),
                version: 0,
                prev_hash: GENESIS,
                batch,
                seq: 0,
                content: Content::new(),
            })
            .collect();
        let shiplog = Stats::of(run_writers(shiplog, calls, batch).await?);
        let raw = Stats::of(run_writers(raw, calls, batch).await?);
        figures.push(Figure::append(name, shiplog, raw));
    }
    Ok(figures)
}

/// Tops the store up to `target` events, copies it into `raw_events` and times a full
/// read of each.
async fn replay_benchmark(db: &BenchDb, target: u64) -> anyhow::Result<Vec<Figure>> {
    let store = EventStore::new(db.runtime.clone());
    fill(&store, &db.owner, target).await?;
    let total = copy_to_raw(&db.owner).await?;

    eprintln!("replaying {total} events through read_all ...");
    let shiplog = timed_replay(total, Cursor::START, |after| {
        let store = store.clone();
        async move {
            let page = store.read_all(after, REPLAY_PAGE).await?;
            Ok(page.last().map(|last| (last.cursor, page.len())))
        }
    })
    .await?;

    let raw = raw_replay(db, total).await?;

    for (who, replay) in [("shiplog", &shiplog), ("raw", &raw)] {
        if replay.events != total {
            bail!("the {who} replay read {} events, the store holds {total}", replay.events);
        }
    }
    Ok(Figure::replay(total, &shiplog, &raw))
}

/// The baseline of every full read: `raw_events` by keyset paging, the same columns
/// decoded into the same Rust types as `read_all`.
async fn raw_replay(db: &BenchDb, total: u64) -> anyhow::Result<Replay> {
    eprintln!("replaying {total} rows of raw_events by keyset ...");
    timed_replay(total, 0i64, |after| {
        let pool = db.owner.clone();
        async move {
            // The same columns as read_all, decoded into the same Rust types.
            type Row = (i64, i64, String, i64, Uuid, String, i32, String, String, DateTime<Utc>, Vec<u8>, Vec<u8>);
            let page: Vec<Row> = sqlx::query_as(
                "SELECT global_position, tx_id::text::bigint AS tx_id, stream_id, version, event_id, event_type, \
                        schema_version, payload, metadata, recorded_at, prev_hash, hash \
                 FROM raw_events WHERE global_position > $1 ORDER BY global_position LIMIT $2",
            )
            .bind(after)
            .bind(REPLAY_PAGE as i64)
            .fetch_all(&pool)
            .await?;
            Ok(page.last().map(|last| (last.0, page.len())))
        }
    })
    .await
}

/// Appends batches of `FILL_BATCH` events over `FILL_STREAMS` streams until the store
/// holds `target` events. Untimed set-up; its time is printed for information.
async fn fill(store: &EventStore, owner: &PgPool, target: u64) -> anyhow::Result<()> {
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(owner).await?;
    let missing = target.saturating_sub(held as u64) as usize;
    eprintln!("filling the store with {missing} events (it holds {held}) ...");
    let started = Instant::now();
    let batches = missing.div_ceil(FILL_BATCH);
    let fillers = (0..FILL_WRITERS).map(|first| {
        let store = store.clone();
        let content = Content::new();
        tokio::spawn(async move {
            for batch in (first..batches).step_by(FILL_WRITERS) {
                let size = FILL_BATCH.min(missing - batch * FILL_BATCH);
                let events: Vec<_> = (0..size).map(|i| content.event((batch * FILL_BATCH + i) as u64)).collect();
                let stream: StreamId = format!("fill-{}", batch % FILL_STREAMS).parse()?;
                store.append(&stream, ExpectedVersion::Any, &events).await?;
            }
            anyhow::Ok(())
        })
    });
    for filler in futures::future::join_all(fillers).await {
        filler??;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("filled {missing} events in {secs:.1} s ({:.0} events/s)", missing as f64 / secs);
    Ok(())
}

/// Makes `raw_events` an exact copy of `events`, positions included, then vacuums
/// both so neither replay pays for setting hint bits on fresh rows, and the vacuum's
/// full read leaves both tables equally cached.
async fn copy_to_raw(owner: &PgPool) -> anyhow::Result<u64> {
    let started = Instant::now();
    owner.execute("TRUNCATE raw_events").await?;
    let copied = owner
        .execute(
            "INSERT INTO raw_events OVERRIDING SYSTEM VALUE \
             SELECT global_position, tx_id, stream_id, version, event_id, event_type, schema_version, \
                    payload, metadata, recorded_at, prev_hash, hash FROM events ORDER BY global_position",
        )
        .await?
        .rows_affected();
    owner.execute("VACUUM (ANALYZE) events, raw_events").await?;
    // Flush what the copy and vacuum dirtied now rather than during a timed read;
    // a non-superuser owner may not checkpoint, which only costs some noise.
    if let Err(e) = owner.execute("CHECKPOINT").await {
        eprintln!("note: CHECKPOINT not allowed ({e}); replay figures may include checkpoint noise");
    }
    eprintln!("copied {copied} rows to raw_events and vacuumed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(copied)
}

/// One full read, page by page.
struct Replay {
    events: u64,
    wall: Duration,
    /// Peak resident memory of this process once a tenth of the events were read,
    /// and at the end: equal figures mean the replay runs in constant memory.
    peak_rss_tenth_mib: f64,
    peak_rss_mib: f64,
}

/// Reads every page from `start`, timing the whole read. `next_page(after)` returns
/// the cursor of the page's last event and the page's size, or `None` at the end.
async fn timed_replay<C, F, Fut>(expected: u64, start: C, mut next_page: F) -> anyhow::Result<Replay>
where
    C: Copy,
    F: FnMut(C) -> Fut,
    Fut: Future<Output = anyhow::Result<Option<(C, usize)>>>,
{
    reset_peak_rss();
    let started = Instant::now();
    let (mut after, mut events, mut peak_rss_tenth_mib) = (start, 0u64, None);
    let mut tenths_reported = 0;
    while let Some((last, len)) = next_page(after).await? {
        after = last;
        events += len as u64;
        if peak_rss_tenth_mib.is_none() && events * 10 >= expected {
            peak_rss_tenth_mib = Some(peak_rss_mib());
        }
        // Progress, because a slow read path makes a long replay look hung.
        let tenths = (events * 10 / expected.max(1)).min(10);
        if tenths > tenths_reported {
            tenths_reported = tenths;
            eprintln!("  {events} events read in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    let wall = started.elapsed();
    let peak_rss_mib = peak_rss_mib();
    Ok(Replay { events, wall, peak_rss_tenth_mib: peak_rss_tenth_mib.unwrap_or(peak_rss_mib), peak_rss_mib })
}

/// Resets the kernel's peak-RSS mark (VmHWM) of this process, so each replay's peak
/// is its own and not the fill's.
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("note: cannot reset the peak RSS mark ({e}); peaks include earlier phases");
    }
}

/// VmHWM from /proc/self/status, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

// ---------------------------------------------------------------------------
// The engine benchmark
// ---------------------------------------------------------------------------

/// Connections per pool: the worker's claim and run, its lease watcher, its log
/// writer, and the bench's own queries.
const ENGINE_CONNECTIONS: u32 = 6;
/// The issue's target for the p50 of a patch run, reported beside the result.
const PATCH_P50_TARGET_MS: f64 = 20.0;

/// The bench application: one service running a prebuilt image without ports or
/// health check, and a `test` stage whose one job does nothing.
fn engine_template(image: &Path) -> String {
    format!(
        r#"services:
  app:
    image: "{}"
    command: ["sh", "-c", "exec sleep 100000"]
stages: [test]
jobs:
  - name: unit
    stage: test
    command: ["true"]
"#,
        image.display()
    )
}

/// An environment of `app` tracking `branch`, no TTL, drift mode `warn`.
fn environment(app: &Name, name: &Name, kind: EnvironmentKind, branch: &str) -> EnvironmentSpec {
    EnvironmentSpec {
        application: app.clone(),
        name: name.clone(),
        kind,
        tracking: Tracking::Branch(branch.into()),
        ttl_seconds: None,
        drift_mode: Default::default(),
    }
}

/// `bench engine`; see [`Command::Engine`].
async fn engine_benchmark(options: PgConnectOptions, args: &EngineArgs) -> anyhow::Result<Report> {
    let runs = args.runs as usize;
    let db = BenchDb::open(options, ENGINE_CONNECTIONS).await?;
    let mut header = describe_server(&db.owner).await?;
    let fixture = EngineFixture::create(&db).await?;
    // Once the setup has started the service, the teardown must run whatever happens.
    let measured = async {
        let service = fixture.set_up().await?;
        let patches = measure_patches(&fixture, &db, runs).await?;
        let now = fixture.service_processes();
        ensure!(now == service, "the service was restarted during the patches (pids {service:?}, now {now:?}): the roll-outs were not no-ops");
        Ok(patches)
    }
    .await;
    let torn_down = fixture.tear_down().await;
    let patches = measured?;
    torn_down?;
    db.close().await;

    eprintln!("spawning `true` {runs} times ...");
    let spawns = tokio::task::spawn_blocking(move || spawn_true(runs)).await??;
    eprintln!("checking the commit out {runs} times ...");
    let checkouts = fixture.time_checkouts(runs).await?;

    let p50 = Latency::of(&patches.shiplog.total).p50_ms;
    let verdict = if p50 <= PATCH_P50_TARGET_MS { "met" } else { "not met" };
    header.push(format!(
        "{runs} patch runs after a setup and {WARMUP_CALLS} warm-up patches: process runtime, \
         no-op roll-out of a prebuilt image, one `true` job"
    ));
    header.push(format!("target (issue): patch run p50 <= {PATCH_P50_TARGET_MS} ms; measured {p50:.1} ms: {verdict}"));
    Ok((header, patches.figures(&spawns, &checkouts)))
}

/// An application with an environment on the process runtime, and the worker that
/// drives its runs. Lives in a scratch directory removed on drop.
struct EngineFixture {
    lifecycle: Lifecycle,
    runtime: Arc<ProcessRuntime>,
    worker: Worker<ProcessRuntime>,
    app: Name,
    env: Name,
    /// The application's repository and the commit every run deploys.
    repository: String,
    commit: CommitId,
    metadata: Metadata,
    /// The service's image: the process runtime runs the service in it.
    image: PathBuf,
    scratch: Scratch,
}

impl EngineFixture {
    /// The repository, the image, the application with its template and the
    /// environment. Starts nothing.
    async fn create(db: &BenchDb) -> anyhow::Result<EngineFixture> {
        let scratch = Scratch::new("shiplog-bench-engine");
        let repo = scratch.path().join("repo");
        std::fs::create_dir_all(&repo)?;
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        git(&repo, &["commit", "--quiet", "--allow-empty", "-m", "bench"]);
        let commit = head_commit(&repo)?;
        // Canonical, so it compares equal to the working directories of processes.
        let image = scratch.path().join("image");
        std::fs::create_dir_all(&image)?;
        let image = image.canonicalize()?;

        let lifecycle = Lifecycle::new(EventStore::new(db.runtime.clone()));
        let (app, env): (Name, Name) = ("bench".parse()?, "patches".parse()?);
        let metadata = Metadata { actor: Some("bench".into()), ..Metadata::default() };
        let now = Utc::now();
        let repository = repo.to_str().context("the scratch path is not UTF-8")?.to_owned();
        lifecycle.create_application(&app, &repository, &metadata, now).await?;
        lifecycle.update_template(&app, &engine_template(&image), &metadata, now).await?;
        lifecycle
            .create_environment(&environment(&app, &env, EnvironmentKind::Preview, "main"), &metadata, now)
            .await?;
        let runtime = Arc::new(ProcessRuntime::new(scratch.path().join("process")));
        let worker = Worker::new(lifecycle.clone(), runtime.clone(), "bench-worker", scratch.path().join("work"));
        Ok(EngineFixture { lifecycle, runtime, worker, app, env, repository, commit, metadata, image, scratch })
    }

    /// Sets the environment up, so patches are allowed; returns the service's pids.
    async fn set_up(&self) -> anyhow::Result<Vec<u32>> {
        let requested = self
            .lifecycle
            .request_setup(&self.app, &self.env, Some(self.commit.clone()), "bench set-up", &self.metadata, Utc::now())
            .await?;
        self.drive(requested.run_id).await?;
        let service = self.service_processes();
        ensure!(!service.is_empty(), "the setup succeeded but no service process runs in {}", self.image.display());
        Ok(service)
    }

    /// One patch: its request, then one worker tick that must finish it. Returns the
    /// run and the time each took.
    async fn patch(&self) -> anyhow::Result<(Uuid, Duration, Duration)> {
        let started = Instant::now();
        let requested = self
            .lifecycle
            .request_patch(&self.app, &self.env, Some(self.commit.clone()), "bench", &self.metadata, Utc::now())
            .await?;
        let request = started.elapsed();
        self.drive(requested.run_id).await?;
        Ok((requested.run_id, request, started.elapsed() - request))
    }

    /// One worker tick, which must run `run_id` to success.
    async fn drive(&self, run_id: Uuid) -> anyhow::Result<()> {
        match self.worker.tick().await? {
            Tick::Finished { run_id: done, status: RunStatus::Succeeded } if done == run_id => Ok(()),
            other => {
                let log = logs::read(self.lifecycle.store().pool(), run_id, 0, 200).await.unwrap_or_default();
                let log: String = log.iter().map(|l| format!("\n  {}: {}", l.job, l.line)).collect();
                bail!("run {run_id} did not succeed: the worker's tick returned {other:?}; its log:{log}")
            }
        }
    }

    /// Tears the environment down with a teardown run, or straight through the
    /// runtime when that fails, and checks that no service process is left.
    async fn tear_down(&self) -> anyhow::Result<()> {
        eprintln!("tearing the environment down ...");
        let through_engine = async {
            let requested =
                self.lifecycle.request_teardown(&self.app, &self.env, "bench done", &self.metadata, Utc::now()).await?;
            self.drive(requested.run_id).await
        };
        if let Err(e) = through_engine.await {
            eprintln!("warning: the teardown run failed ({e:#}); removing the environment through the runtime");
            let env = EnvironmentRef { application: self.app.to_string(), environment: self.env.to_string() };
            self.runtime.teardown(&env).await.context("tearing the environment down through the runtime")?;
        }
        let left = self.service_processes();
        ensure!(left.is_empty(), "service processes {left:?} still run in {} after the teardown", self.image.display());
        Ok(())
    }

    /// Checks the commit out as the worker does for a run's jobs, into a fresh
    /// directory each time: `WARMUP_CALLS` times untimed, then `runs` times timed.
    async fn time_checkouts(&self, runs: usize) -> anyhow::Result<Vec<Duration>> {
        let dir = self.scratch.path().join("checkouts");
        let mut times = Vec::with_capacity(runs);
        for i in 0..WARMUP_CALLS + runs {
            let started = Instant::now();
            engine_git::checkout(&self.repository, &self.commit, &dir.join(i.to_string())).await?;
            if i >= WARMUP_CALLS {
                times.push(started.elapsed());
            }
        }
        Ok(times)
    }

    /// Pids of the processes working in the image directory: the service (the
    /// process runtime starts services there), and nothing else, since the directory
    /// is this run's own.
    fn service_processes(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        let mut pids: Vec<u32> = entries
            .filter_map(|entry| {
                let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
                (cwd == self.image).then_some(pid)
            })
            .collect();
        pids.sort_unstable();
        pids
    }
}

fn head_commit(repo: &Path) -> anyhow::Result<CommitId> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo).output()?;
    ensure!(out.status.success(), "git rev-parse HEAD: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Latencies of one side, one entry per patch: the request, the worker, both.
#[derive(Default)]
struct Phases {
    request: Vec<Duration>,
    worker: Vec<Duration>,
    total: Vec<Duration>,
}

impl Phases {
    fn push(&mut self, request: Duration, worker: Duration) {
        self.request.push(request);
        self.worker.push(worker);
        self.total.push(request + worker);
    }
}

/// What the timed patches measured, on shiplog and on the raw baseline; counts are
/// summed over the patches.
#[derive(Default)]
struct PatchRuns {
    shiplog: Phases,
    raw: Phases,
    events: u64,
    transactions: u64,
    shiplog_xids: u64,
    raw_xids: u64,
}

impl PatchRuns {
    fn figures(&self, spawns: &[Duration], checkouts: &[Duration]) -> Vec<Figure> {
        let patches = self.shiplog.total.len() as f64;
        let per_patch = |shiplog: u64, baseline: u64| Pair::new(shiplog as f64 / patches, baseline as f64 / patches);
        vec![
            Figure::latency("patch run vs its event writes", &self.shiplog.total, &self.raw.total),
            Figure::latency("request_patch vs its transaction", &self.shiplog.request, &self.raw.request),
            Figure::latency("worker tick vs its transactions", &self.shiplog.worker, &self.raw.worker),
            Figure::latency("patch run vs `true` spawn+wait", &self.shiplog.total, spawns),
            Figure::latency("patch run vs git checkout", &self.shiplog.total, checkouts),
            Figure::plain("event rows per patch".into(), "rows", per_patch(self.events, self.events)),
            Figure::plain(
                "event transactions per patch".into(),
                "commits",
                per_patch(self.transactions, self.transactions),
            ),
            Figure::plain("write transactions per patch".into(), "xids", per_patch(self.shiplog_xids, self.raw_xids)),
        ]
    }
}

/// Runs `WARMUP_CALLS` untimed patches, then `runs` timed ones, each followed by its
/// raw baseline.
async fn measure_patches(fixture: &EngineFixture, db: &BenchDb, runs: usize) -> anyhow::Result<PatchRuns> {
    eprintln!("{WARMUP_CALLS} warm-up patches, then {runs} timed patches, each beside its raw baseline ...");
    let env_stream = StreamRef::environment(&fixture.app, &fixture.env).to_string();
    let mut measured = PatchRuns::default();
    for patch in 0..WARMUP_CALLS + runs {
        let before = next_xid(&db.owner).await?;
        let (run_id, request, worker) = fixture.patch().await?;
        let after_shiplog = next_xid(&db.owner).await?;
        let transactions = events_of_run(&db.owner, &env_stream, run_id).await?;
        let (raw_request, raw_worker) = insert_raw_transactions(&db.owner, &transactions).await?;
        let after_raw = next_xid(&db.owner).await?;
        if patch < WARMUP_CALLS {
            continue;
        }
        measured.shiplog.push(request, worker);
        measured.raw.push(raw_request, raw_worker);
        measured.events += transactions.iter().map(|tx| tx.streams.len() as u64).sum::<u64>();
        measured.transactions += transactions.len() as u64;
        measured.shiplog_xids += after_shiplog - before;
        measured.raw_xids += after_raw - after_shiplog;
    }
    Ok(measured)
}

/// The next transaction id the server will assign. Only writing transactions are
/// assigned one, and reading this assigns none, so the difference between two
/// readings counts the write transactions in between (on a private cluster, only
/// the bench's).
async fn next_xid(owner: &PgPool) -> anyhow::Result<u64> {
    let xid: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetch_one(owner).await?;
    Ok(xid as u64)
}

/// The events of one transaction, column by column (the shape UNNEST takes).
#[derive(Default)]
struct TxRows {
    streams: Vec<String>,
    versions: Vec<i64>,
    ids: Vec<Uuid>,
    types: Vec<String>,
    schemas: Vec<i32>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    recorded_at: Vec<DateTime<Utc>>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

/// The events a run wrote, on its own stream and on its environment's, grouped by
/// the transaction that wrote them, in the order they were written. The first is
/// the request's.
async fn events_of_run(owner: &PgPool, env_stream: &str, run_id: Uuid) -> anyhow::Result<Vec<TxRows>> {
    type Row = (String, String, i64, Uuid, String, i32, String, String, DateTime<Utc>, Vec<u8>, Vec<u8>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT tx_id::text, stream_id, version, event_id, event_type, schema_version, payload, metadata, \
                recorded_at, prev_hash, hash \
         FROM events \
         WHERE stream_id = $1 OR (stream_id = $2 AND payload::jsonb ->> 'run_id' = $3) \
         ORDER BY global_position",
    )
    .bind(StreamRef::Run(run_id).to_string())
    .bind(env_stream)
    .bind(run_id.to_string())
    .fetch_all(owner)
    .await?;
    let mut transactions: Vec<(String, TxRows)> = Vec::new();
    for (tx_id, stream, version, id, event_type, schema, payload, metadata, recorded_at, prev_hash, hash) in rows {
        let index = match transactions.iter().position(|(seen, _)| *seen == tx_id) {
            Some(index) => index,
            None => {
                transactions.push((tx_id, TxRows::default()));
                transactions.len() - 1
            }
        };
        let tx = &mut transactions[index].1;
        tx.streams.push(stream);
        tx.versions.push(version);
        tx.ids.push(id);
        tx.types.push(event_type);
        tx.schemas.push(schema);
        tx.payloads.push(payload);
        tx.metadata.push(metadata);
        tx.recorded_at.push(recorded_at);
        tx.prev_hashes.push(prev_hash);
        tx.hashes.push(hash);
    }
    ensure!(
        transactions.first().is_some_and(|(_, tx)| tx.types.iter().any(|t| t == "RunQueued")),
        "run {run_id}: the first transaction of its events is not its request"
    );
    Ok(transactions.into_iter().map(|(_, tx)| tx).collect())
}

/// Inserts a run's events into `raw_events`, one autocommit statement per
/// transaction. Returns the time of the first (the request's) and of the rest.
async fn insert_raw_transactions(owner: &PgPool, transactions: &[TxRows]) -> anyhow::Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(transactions.len());
    for tx in transactions {
        let started = Instant::now();
        sqlx::query(
            "INSERT INTO raw_events (stream_id, version, event_id, event_type, schema_version, payload, \
                                     metadata, recorded_at, prev_hash, hash) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::int[], $6::text[], \
                                  $7::text[], $8::timestamptz[], $9::bytea[], $10::bytea[])",
        )
        .bind(&tx.streams)
        .bind(&tx.versions)
        .bind(&tx.ids)
        .bind(&tx.types)
        .bind(&tx.schemas)
        .bind(&tx.payloads)
        .bind(&tx.metadata)
        .bind(&tx.recorded_at)
        .bind(&tx.prev_hashes)
        .bind(&tx.hashes)
        .execute(owner)
        .await?;
        times.push(started.elapsed());
    }
    Ok((times[0], times[1..].iter().sum()))
}

/// Spawns `true` and waits for it, `WARMUP_CALLS` times untimed, then `runs` times
/// timed. Blocking: call it off the async runtime's threads.
fn spawn_true(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let spawn = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = std::process::Command::new("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("spawning `true`")?;
        let elapsed = started.elapsed();
        ensure!(status.success(), "`true` failed: {status}");
        Ok(elapsed)
    };
    for _ in 0..WARMUP_CALLS {
        spawn()?;
    }
    (0..runs).map(|_| spawn()).collect()
}

// ---------------------------------------------------------------------------
// The docker benchmark
// ---------------------------------------------------------------------------

/// The issue's target: engine time over script time, for a setup and for a patch.
const DOCKER_RATIO_TARGET: f64 = 1.2;

/// `bench docker`; see [`Command::Docker`].
async fn docker_benchmark(options: PgConnectOptions, args: &DockerArgs) -> anyhow::Result<Report> {
    let Some(docker) = shiplog_tests::docker::docker().await else { bail!("no Docker engine answers") };
    let db = BenchDb::open(options, ENGINE_CONNECTIONS).await?;
    let mut header = describe_server(&db.owner).await?;
    let scratch = Scratch::new("shiplog-bench-docker");
    let repo = ExampleRepo::create(&scratch);
    let runtime = Arc::new(AnyRuntime::Docker(docker));
    let lifecycle = Lifecycle::new(EventStore::new(db.runtime.clone()));
    let worker = Worker::new(lifecycle.clone(), runtime.clone(), "bench-worker", scratch.path().join("work"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/bench/docker.sh");

    let (mut engine, mut baseline) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for round in 0..=args.runs {
        let commits = [head_commit(&repo.dir)?, {
            repo.commit_version(round + 2);
            head_commit(&repo.dir)?
        }];
        let id = &Uuid::new_v4().simple().to_string()[..8];
        let engine_side = async {
            let app: Name = format!("bench-{id}").parse()?;
            eprintln!("round {round}: engine ...");
            let times = docker_engine_round(&lifecycle, &worker, &repo, &app, &commits).await;
            let env = EnvironmentRef { application: app.to_string(), environment: "staging".into() };
            runtime.teardown(&env).await?;
            shiplog_tests::docker::remove_leftovers(&env);
            times
        };
        let script_side = async {
            eprintln!("round {round}: script ...");
            let times = docker_script_round(&script, &repo, &scratch, &format!("s{id}"), &commits).await;
            docker_script_teardown(&format!("s{id}"));
            times
        };
        let (e, b) = if round % 2 == 0 {
            let e = engine_side.await?;
            (e, script_side.await?)
        } else {
            let b = script_side.await?;
            (engine_side.await?, b)
        };
        if round > 0 {
            engine.0.push(e.0);
            engine.1.push(e.1);
            baseline.0.push(b.0);
            baseline.1.push(b.1);
        }
    }
    db.close().await;

    let figures = vec![
        Figure::latency("docker setup: engine vs docker script", &engine.0, &baseline.0),
        Figure::latency("docker patch: engine vs docker script", &engine.1, &baseline.1),
    ];
    header.push(format!(
        "{} rounds after a warm-up: setup and patch of examples/hello on the docker runtime, beside bench/docker.sh",
        args.runs
    ));
    for figure in &figures {
        let ratio = figure.value.ratio;
        let verdict = if ratio <= DOCKER_RATIO_TARGET { "met" } else { "not met" };
        header.push(format!(
            "target (issue): {} mean ratio <= {DOCKER_RATIO_TARGET}; measured {ratio:.2}: {verdict}",
            figure.name
        ));
    }
    Ok((header, figures))
}

/// A setup at `commits[0]` and a patch to `commits[1]` of a new application's
/// staging environment through the engine; returns the time of each.
async fn docker_engine_round(
    lifecycle: &Lifecycle,
    worker: &Worker<AnyRuntime>,
    repo: &ExampleRepo,
    app: &Name,
    commits: &[CommitId; 2],
) -> anyhow::Result<(Duration, Duration)> {
    let metadata = Metadata { actor: Some("bench".into()), ..Metadata::default() };
    let env: Name = "staging".parse()?;
    let now = Utc::now();
    lifecycle
        .create_application(app, repo.dir.to_str().context("the scratch path is not UTF-8")?, &metadata, now)
        .await?;
    lifecycle.update_template(app, &repo.docker_template(), &metadata, now).await?;
    lifecycle.create_environment(&environment(app, &env, EnvironmentKind::Staging, "main"), &metadata, now).await?;
    let mut times = Vec::new();
    for (i, commit) in commits.iter().enumerate() {
        let started = Instant::now();
        let run_id = if i == 0 {
            lifecycle.request_setup(app, &env, Some(commit.clone()), "bench", &metadata, Utc::now()).await?.run_id
        } else {
            lifecycle.request_patch(app, &env, Some(commit.clone()), "bench", &metadata, Utc::now()).await?.run_id
        };
        match worker.tick().await? {
            Tick::Finished { run_id: done, status: RunStatus::Succeeded } if done == run_id => {}
            other => {
                let log = logs::read(lifecycle.store().pool(), run_id, 0, 200).await.unwrap_or_default();
                let log: String = log.iter().map(|l| format!("\n  {}: {}", l.job, l.line)).collect();
                bail!("run {run_id} did not succeed: {other:?}; its log:{log}")
            }
        }
        times.push(started.elapsed());
    }
    Ok((times[0], times[1]))
}

/// The same setup and patch as [`docker_engine_round`], by `bench/docker.sh`.
async fn docker_script_round(
    script: &Path,
    repo: &ExampleRepo,
    scratch: &Scratch,
    app: &str,
    commits: &[CommitId; 2],
) -> anyhow::Result<(Duration, Duration)> {
    let work = scratch.path().join("script-work");
    let mut times = Vec::new();
    for (mode, commit) in ["setup", "patch"].into_iter().zip(commits) {
        let started = Instant::now();
        let out = tokio::process::Command::new("bash")
            .arg(script)
            .args([mode, repo.dir.to_str().unwrap_or_default(), commit.as_str(), app, "staging"])
            .arg(&work)
            .args([shiplog_tests::docker::BASE_IMAGE, &repo.port.to_string()])
            .output()
            .await?;
        ensure!(out.status.success(), "bench/docker.sh {mode}: {}", String::from_utf8_lossy(&out.stderr));
        times.push(started.elapsed());
    }
    Ok((times[0], times[1]))
}

/// Removes what the script created for `app`, and its images.
fn docker_script_teardown(app: &str) {
    let env = EnvironmentRef { application: app.to_string(), environment: "staging".to_string() };
    shiplog_tests::docker::remove_leftovers(&env);
    let reference = format!("reference=bench/{app}/*");
    if let Ok(tags) =
        shiplog_tests::docker::cli(&["image", "ls", "--filter", &reference, "--format", "{{.Repository}}:{{.Tag}}"])
    {
        for tag in tags.lines() {
            let _ = shiplog_tests::docker::cli(&["image", "rm", tag]);
        }
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// A shiplog figure beside its baseline.
#[derive(Serialize, Clone, Copy)]
struct Pair {
    shiplog: f64,
    baseline: f64,
    ratio: f64,
}

impl Pair {
    fn new(shiplog: f64, baseline: f64) -> Pair {
        Pair { shiplog, baseline, ratio: shiplog / baseline }
    }
}

/// One benchmark's result, as JSON and as rows of the table.
#[derive(Serialize)]
struct Figure {
    name: String,
    unit: &'static str,
    #[serde(flatten)]
    value: Pair,
    #[serde(skip_serializing_if = "Option::is_none")]
    ops_per_s: Option<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<Pair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<Pair>,
}

impl Figure {
    fn plain(name: String, unit: &'static str, value: Pair) -> Figure {
        Figure { name, unit, value, ops_per_s: None, p50_ms: None, p99_ms: None }
    }

    fn append(name: String, shiplog: Stats, raw: Stats) -> Figure {
        Figure {
            ops_per_s: Some(Pair::new(shiplog.calls_per_s, raw.calls_per_s)),
            p50_ms: Some(Pair::new(shiplog.p50_ms, raw.p50_ms)),
            p99_ms: Some(Pair::new(shiplog.p99_ms, raw.p99_ms)),
            ..Figure::plain(name, "events/s", Pair::new(shiplog.events_per_s, raw.events_per_s))
        }
    }

    /// Latencies of one operation: the mean as the figure's value, then p50 and p99.
    fn latency(name: &str, shiplog: &[Duration], baseline: &[Duration]) -> Figure {
        let (shiplog, baseline) = (Latency::of(shiplog), Latency::of(baseline));
        Figure {
            p50_ms: Some(Pair::new(shiplog.p50_ms, baseline.p50_ms)),
            p99_ms: Some(Pair::new(shiplog.p99_ms, baseline.p99_ms)),
            ..Figure::plain(format!("{name}, mean"), "ms", Pair::new(shiplog.mean_ms, baseline.mean_ms))
        }
    }

    fn replay(total: u64, shiplog: &Replay, raw: &Replay) -> Vec<Figure> {
        let rate = |r: &Replay| r.events as f64 / r.wall.as_secs_f64();
        vec![
            Figure::plain(format!("replay {total} events"), "events/s", Pair::new(rate(shiplog), rate(raw))),
            Figure::plain(
                "replay peak RSS, first 10%".into(),
                "MiB",
                Pair::new(shiplog.peak_rss_tenth_mib, raw.peak_rss_tenth_mib),
            ),
            Figure::plain("replay peak RSS, whole".into(), "MiB", Pair::new(shiplog.peak_rss_mib, raw.peak_rss_mib)),
        ]
    }

    /// The figure's rows: its value, then calls/s where a call carries several
    /// events, then latencies.
    fn rows(&self) -> Vec<(String, Pair, usize)> {
        let mut rows = vec![(format!("{} ({})", self.name, self.unit), self.value, decimals(self.unit))];
        if let Some(ops) = self.ops_per_s.filter(|ops| ops.shiplog != self.value.shiplog) {
            rows.push(("  calls/s".into(), ops, 0));
        }
        for (label, pair) in [("  p50 latency (ms)", self.p50_ms), ("  p99 latency (ms)", self.p99_ms)] {
            if let Some(pair) = pair {
                rows.push((label.into(), pair, 3));
            }
        }
        rows
    }
}

fn decimals(unit: &str) -> usize {
    match unit {
        "ms" => 3,
        // Rates are large; sizes and per-patch counts (means over many patches) are small.
        "MiB" | "rows" | "commits" | "xids" => 1,
        _ => 0,
    }
}

fn print_report(header: &[String], figures: &[Figure], json_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    println!();
    for line in header {
        println!("{line}");
    }
    println!("{:<44} {:>12} {:>12} {:>8}", "benchmark", "shiplog", "baseline", "ratio");
    println!("{}", "-".repeat(79));
    for figure in figures {
        for (label, pair, decimals) in figure.rows() {
            println!("{label:<44} {:>12.decimals$} {:>12.decimals$} {:>8.2}", pair.shiplog, pair.baseline, pair.ratio);
        }
    }
    println!();
    let json = serde_json::to_string_pretty(figures)?;
    match json_path {
        Some(path) => {
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            println!("JSON written to {}", path.display());
        }
        None => println!("{json}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The projections benchmark
// ---------------------------------------------------------------------------

/// Environments in the history; runs are spread evenly over them.
const HISTORY_ENVIRONMENTS: usize = 500;
/// The issue's target for a full rebuild, as a share of the raw scan's rate.
const REBUILD_TARGET: f64 = 0.25;

async fn projections_benchmark(options: PgConnectOptions, args: &ProjectionsArgs) -> anyhow::Result<Report> {
    use shiplog_projections::runner;

    let db = BenchDb::open(options, 12).await?;
    let mut header = describe_server(&db.owner).await?;
    let store = EventStore::new(db.runtime.clone());
    let started = Instant::now();
    let written = fill_history(&store, args.events).await?;
    eprintln!("wrote a history of {written} events in {:.1} s", started.elapsed().as_secs_f64());
    let total = copy_to_raw(&db.owner).await?;
    let raw = raw_replay(&db, total).await?;
    let rate = |events: u64, wall: Duration| events as f64 / wall.as_secs_f64();
    let raw_rate = rate(raw.events, raw.wall);

    let mut figures = Vec::new();
    eprintln!("exporting {total} events ...");
    reset_peak_rss();
    let mut sink = RssSampler { expected: total, lines: 0, tenth_mib: None };
    let started = Instant::now();
    let exported = shiplog_projections::audit::export(&store, &Default::default(), &mut sink).await?;
    let wall = started.elapsed();
    ensure!(exported == total, "exported {exported} events of {total}");
    let whole = peak_rss_mib();
    figures.push(Figure::plain(
        format!("audit export {total} events"),
        "events/s",
        Pair::new(rate(total, wall), raw_rate),
    ));
    figures.push(Figure::plain(
        "export peak RSS, first 10%".into(),
        "MiB",
        Pair::new(sink.tenth_mib.unwrap_or(whole), raw.peak_rss_tenth_mib),
    ));
    figures.push(Figure::plain("export peak RSS, whole".into(), "MiB", Pair::new(whole, raw.peak_rss_mib)));
    let mut timed = |name: &str, wall: Duration| {
        eprintln!("  {name}: {:.1} s", wall.as_secs_f64());
        figures.push(Figure::plain(
            format!("{name}, {total} events"),
            "events/s",
            Pair::new(rate(total, wall), raw_rate),
        ));
    };
    for projection in runner::all() {
        eprintln!("rebuilding {} ...", projection.name);
        let started = Instant::now();
        let rebuilt = runner::rebuild(&store, &[projection], runner::DEFAULT_BATCH).await?;
        ensure!(rebuilt[0].events == total, "{} folded {} events of {total}", projection.name, rebuilt[0].events);
        timed(&format!("rebuild {}", projection.name), started.elapsed());
    }
    eprintln!("rebuilding all three in one pass ...");
    let started = Instant::now();
    let rebuilt = runner::rebuild(&store, &runner::all(), runner::DEFAULT_BATCH).await?;
    ensure!(rebuilt.iter().all(|r| r.events == total), "a projection missed events: {rebuilt:?}");
    let all = started.elapsed();
    timed("rebuild all read models", all);
    header.push(format!(
        "full rebuild of all read models: {:.0}% of the raw scan (target ≥ {:.0}%)",
        100.0 * rate(total, all) / raw_rate,
        100.0 * REBUILD_TARGET
    ));

    db.close().await;
    Ok((header, figures))
}

/// Discards the export, noting the peak RSS once a tenth of the lines went by.
struct RssSampler {
    expected: u64,
    lines: u64,
    tenth_mib: Option<f64>,
}

impl std::io::Write for RssSampler {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        if self.tenth_mib.is_none() && self.lines * 10 >= self.expected {
            self.tenth_mib = Some(peak_rss_mib());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a history of about `target` events: an application, environments each
/// set up once then patched, every run's stream as the domain decides it.
async fn fill_history(store: &EventStore, target: u64) -> anyhow::Result<u64> {
    use shiplog_engine::domain::application::ApplicationEvent;
    use shiplog_engine::domain::environment::{EnvironmentEvent, RunOutcome};
    use shiplog_engine::domain::run::{self, PlanInput, RunCommand, RunEvent};
    use shiplog_engine::domain::{RunKind, TemplateVersions};

    let metadata = Metadata { actor: Some("bench".into()), ..Metadata::default() };
    let app: Name = "bench".parse()?;
    let now = Utc::now();
    let templates = TemplateVersions {
        template_version: 1,
        template_digest: "sha256:template".into(),
        variables_version: 1,
        variables_digest: "sha256:variables".into(),
    };
    let app_events = [
        ApplicationEvent::ApplicationCreated { name: app.clone(), repository: "/bench".into(), created_at: now },
        ApplicationEvent::ApplicationTemplateUpdated {
            version: 1,
            digest: templates.template_digest.clone(),
            template: json!({ "services": { "web": { "build": { "context": "." } } } }),
            updated_at: now,
        },
        ApplicationEvent::EnvironmentVariablesUpdated {
            version: 1,
            digest: templates.variables_digest.clone(),
            variables: json!({ "GREETING": "hello" }),
            updated_at: now,
        },
    ];
    let app_stream = StreamId::from(&StreamRef::Application(app.clone()));
    store.append(&app_stream, ExpectedVersion::NoStream, &NewEvent::domain_all(&app_events, &metadata)).await?;

    let input = PlanInput {
        built_services: vec!["web".into()],
        services: vec!["web".into()],
        release_commands: vec!["migrate".into()],
        ..PlanInput::default()
    };
    // Events per run: the run's own stream and three in its environment's.
    let (run_app, run_templates) = (app.clone(), templates.clone());
    let run_events = move |kind: RunKind| -> Vec<RunEvent> {
        let (app, templates) = (&run_app, &run_templates);
        let run_id = Uuid::new_v4();
        let mut events = vec![RunEvent::RunQueued {
            run_id,
            application: app.clone(),
            environment: "e".parse().expect("valid"),
            kind,
            commit: None,
            repository: "/bench".into(),
            reason: "bench".into(),
            template: json!({}),
            templates: templates.clone(),
            plan: run::plan(kind, &input),
            queued_at: now,
        }];
        let mut state = run::fold(&events).expect("queued");
        let mut command = RunCommand::Start { worker: "bench".into(), now };
        loop {
            let decided = run::decide(&state, command).expect("a valid run");
            events.extend(decided);
            state = run::fold(&events).expect("a run");
            if state.status.is_final() {
                return events;
            }
            command = RunCommand::JobFinished { result: Ok(Some("image".into())), now };
        }
    };
    let per_run = run_events(RunKind::Patch).len() as u64 + 3;
    let runs_per_env = (target / per_run / HISTORY_ENVIRONMENTS as u64).max(1);
    let writers = (0..FILL_WRITERS).map(|first| {
        let (store, app, metadata, templates) = (store.clone(), app.clone(), metadata.clone(), templates.clone());
        let run_events = run_events.clone();
        tokio::spawn(async move {
            let mut written = 0u64;
            for e in (first..HISTORY_ENVIRONMENTS).step_by(FILL_WRITERS) {
                let env: Name = format!("env-{e}").parse()?;
                let mut env_events = vec![EnvironmentEvent::EnvironmentCreated {
                    application: app.clone(),
                    name: env.clone(),
                    kind: EnvironmentKind::Staging,
                    tracking: Tracking::Branch("main".into()),
                    ttl_seconds: None,
                    drift_mode: Default::default(),
                    created_at: now,
                }];
                for r in 0..runs_per_env {
                    let kind = if r == 0 { RunKind::Setup } else { RunKind::Patch };
                    let mut events = run_events(kind);
                    let RunEvent::RunQueued { run_id, environment, .. } = &mut events[0] else { unreachable!() };
                    *environment = env.clone();
                    let run_id = *run_id;
                    let commit: CommitId = format!("{:040x}", r).parse()?;
                    env_events.push(EnvironmentEvent::RunRequested {
                        run_id,
                        kind,
                        commit: Some(commit),
                        reason: "bench".into(),
                        templates: (kind == RunKind::Setup).then(|| templates.clone()),
                        requested_at: now,
                        auto_for: None,
                    });
                    env_events.push(EnvironmentEvent::RunStarted { run_id, started_at: now });
                    env_events.push(EnvironmentEvent::RunFinished {
                        run_id,
                        outcome: RunOutcome::Succeeded,
                        images: vec![("web".into(), format!("image-{r}"))],
                        finished_at: now,
                    });
                    let stream = StreamId::from(&StreamRef::Run(run_id));
                    store.append(&stream, ExpectedVersion::NoStream, &NewEvent::domain_all(&events, &metadata)).await?;
                    written += events.len() as u64;
                }
                let stream = StreamId::from(&StreamRef::environment(&app, &env));
                for chunk in env_events.chunks(MAX_BATCH_EVENTS) {
                    store.append(&stream, ExpectedVersion::Any, &NewEvent::domain_all(chunk, &metadata)).await?;
                }
                written += env_events.len() as u64;
            }
            anyhow::Ok(written)
        })
    });
    let mut written = app_events.len() as u64;
    for writer in futures::future::join_all(writers).await {
        written += writer??;
    }
    Ok(written)
}
