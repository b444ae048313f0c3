//! `bench engine`: what a patch run costs, from its request to `RunSucceeded`,
//! beside the database writes it records; [`Command::Engine`](crate::Command::Engine)
//! says what is measured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use shiplog_engine::domain::environment::{EnvironmentKind, EnvironmentSpec, Tracking};
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::domain::{CommitId, Name, StreamRef};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::runtime::{EnvironmentRef, Runtime};
use shiplog_engine::store::{EventStore, Metadata};
use shiplog_engine::worker::{Tick, Worker};
use shiplog_engine::{git as engine_git, logs};
use shiplog_tests::example::{Scratch, git};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::EngineArgs;
use crate::measure::{Latency, WARMUP_CALLS};
use crate::report::{Figure, Pair, Report};
use crate::server::{BenchDb, describe_server};

/// Connections per pool: the worker's claim and run, its lease watcher, its log
/// writer, and the bench's own queries.
pub const ENGINE_CONNECTIONS: u32 = 6;
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
pub fn environment(app: &Name, name: &Name, kind: EnvironmentKind, branch: &str) -> EnvironmentSpec {
    EnvironmentSpec {
        application: app.clone(),
        name: name.clone(),
        kind,
        tracking: Tracking::Branch(branch.into()),
        ttl_seconds: None,
        drift_mode: Default::default(),
    }
}

/// `bench engine`; see [`Command::Engine`](crate::Command::Engine).
pub async fn engine_benchmark(options: PgConnectOptions, args: &EngineArgs) -> anyhow::Result<Report> {
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

        let lifecycle = Lifecycle::new(EventStore::new(db.runtime.clone())).with_repositories(scratch.repositories());
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

pub fn head_commit(repo: &Path) -> anyhow::Result<CommitId> {
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
