//! `bench store`: what shiplog's event store costs over the PostgreSQL it runs on.
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
//! over baseline (above 1 means slower or bigger).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shiplog_engine::canonical;
use shiplog_engine::store::hash::{self, EventFields, GENESIS, Hash};
use shiplog_engine::store::{Cursor, EventStore, ExpectedVersion, MAX_BATCH_EVENTS, Metadata, NewEvent, StreamId};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Executor, PgPool};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::StoreArgs;
use crate::measure::{WARMUP_CALLS, peak_rss_mib, percentile, reset_peak_rss};
use crate::report::{Figure, Report};
use crate::server::{BenchDb, describe_server};

/// Events per `read_all` page and per keyset page of the baseline.
const REPLAY_PAGE: usize = 10_000;
/// The fill appends batches of this many events, spread over `FILL_STREAMS` streams.
const FILL_BATCH: usize = MAX_BATCH_EVENTS;
const FILL_STREAMS: usize = 1000;
/// Concurrent appenders during the (untimed) fill.
pub const FILL_WRITERS: usize = 4;
const EVENT_TYPE: &str = "step.finished";

/// `bench store`: appends and a replay, on shiplog and on `raw_events`.
pub async fn store_benchmarks(options: PgConnectOptions, args: &StoreArgs) -> anyhow::Result<Report> {
    let db = BenchDb::open(options, u32::from(args.writers) + 2).await?;
    let header = describe_server(&db.owner).await?;
    let mut figures = append_benchmarks(&db, args).await?;
    figures.extend(replay_benchmark(&db, args.events).await?);
    db.close().await;
    Ok((header, figures))
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
pub struct Stats {
    pub events_per_s: f64,
    pub calls_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
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
pub async fn raw_replay(db: &BenchDb, total: u64) -> anyhow::Result<Replay> {
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
pub async fn copy_to_raw(owner: &PgPool) -> anyhow::Result<u64> {
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
pub struct Replay {
    pub events: u64,
    pub wall: Duration,
    /// Peak resident memory of this process once a tenth of the events were read,
    /// and at the end: equal figures mean the replay runs in constant memory.
    pub peak_rss_tenth_mib: f64,
    pub peak_rss_mib: f64,
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
