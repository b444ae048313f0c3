//! `bench store`: what shiplog's event store costs over the PostgreSQL it runs on.
//!
//! ```text
//! cargo run --release -p shiplog-tests --bin bench -- store [--events N] [--json PATH] [--no-fsync]
//! ```
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};
use shiplog_engine::canonical;
use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use shiplog_engine::store::hash::{self, EventFields, GENESIS, Hash};
use shiplog_engine::store::{Cursor, EventStore, ExpectedVersion, MAX_BATCH_EVENTS, Metadata, NewEvent, StreamId};
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
    /// Write the JSON results here instead of printing them after the table.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Private cluster only: run PostgreSQL without fsync (figures then say little about durable writes).
    #[arg(long)]
    no_fsync: bool,
}

fn main() -> anyhow::Result<()> {
    let Command::Store(args) = Cli::parse().command;
    // Starting a private cluster blocks, so it happens before the runtime exists.
    let server = Server::start(args.no_fsync)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run_in_fresh_database(&server, &args));
    drop(runtime);
    server.stop()?;
    let (header, figures) = result?;
    print_report(&header, &figures, args.json.as_deref())
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
                eprintln!("warning: --no-fsync only applies to a private cluster; DATABASE_URL's server keeps its settings");
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

/// Creates `bench_<uuid>`, runs the benchmarks in it and drops it again, also when
/// a benchmark fails.
async fn run_in_fresh_database(server: &Server, args: &StoreArgs) -> anyhow::Result<(Vec<String>, Vec<Figure>)> {
    let name = format!("bench_{}", Uuid::new_v4().simple());
    let admin = postgres::owner_pool(server.options.clone(), 1).await.context("connecting to the server")?;
    postgres::ensure_database(&admin, &name).await.context("creating the bench database")?;
    let result = run_in(server.options.clone().database(&name), args).await;
    let drop_sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    if let Err(e) = admin.execute(sqlx::AssertSqlSafe(drop_sql)).await {
        eprintln!("warning: could not drop database {name}: {e}");
    }
    admin.close().await;
    result
}

async fn run_in(options: PgConnectOptions, args: &StoreArgs) -> anyhow::Result<(Vec<String>, Vec<Figure>)> {
    let connections = u32::from(args.writers) + 2;
    let owner = postgres::owner_pool(options.clone(), connections).await?;
    postgres::migrate(&owner).await.context("migrating the bench database")?;
    let runtime = postgres::runtime_pool(options, connections).await?;
    create_raw_table(&owner).await?;
    let db = BenchDb { runtime, owner };
    let header = describe_server(&db.owner).await?;
    let mut figures = append_benchmarks(&db, args).await?;
    figures.extend(replay_benchmark(&db, args.events).await?);
    db.runtime.close().await;
    db.owner.close().await;
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
        let metadata = Metadata { actor: Some("bench".into()), correlation_id: Some(Uuid::new_v4()), ..Metadata::default() };
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
        let metadata = canonical::canonicalize(&serde_json::to_value(&self.content.metadata).expect("metadata is JSON"))
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

    eprintln!("replaying {total} rows of raw_events by keyset ...");
    let raw = timed_replay(total, 0i64, |after| {
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
    .await?;

    for (who, replay) in [("shiplog", &shiplog), ("raw", &raw)] {
        if replay.events != total {
            bail!("the {who} replay read {} events, the store holds {total}", replay.events);
        }
    }
    Ok(Figure::replay(total, &shiplog, &raw))
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
    if unit == "MiB" { 1 } else { 0 }
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
            println!(
                "{label:<44} {:>12.decimals$} {:>12.decimals$} {:>8.2}",
                pair.shiplog, pair.baseline, pair.ratio
            );
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
