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
//! One module per subcommand, each saying what it measures and what its baseline is:
//! [`store`] (appends and a full replay), [`engine`] (patch runs; see
//! [`Command::Engine`]), [`projections`], [`docker`] (see [`Command::Docker`]) and
//! [`api`] (a `shiplog serve` process driven as clients do; see [`Command::Api`]).
//! Beside them: [`server`], the PostgreSQL server and the fresh database each run
//! gets; [`measure`], latency percentiles and peak memory; [`report`], the figures,
//! their table and their JSON.
//!
//! Every shiplog figure is printed beside a raw baseline measured in the same run, on
//! the same server, with the same durability, so the ratio isolates what shiplog
//! adds. Nothing here asserts on timings: this is a measuring tool, its figures
//! depend on the machine.

mod api;
mod docker;
mod engine;
mod measure;
mod projections;
mod report;
mod server;
mod store;

use std::future::Future;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shiplog_engine::store::MAX_BATCH_EVENTS;
use sqlx::postgres::PgConnectOptions;

use crate::report::{Report, print_report};
use crate::server::{Server, run_in_fresh_database};

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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Store(args) => run_on_server(&args.common, |options| store::store_benchmarks(options, &args)),
        Command::Engine(args) => run_on_server(&args.common, |options| engine::engine_benchmark(options, &args)),
        Command::Projections(args) => {
            run_on_server(&args.common, |options| projections::projections_benchmark(options, &args))
        }
        Command::Docker(args) => run_on_server(&args.common, |options| docker::docker_benchmark(options, &args)),
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
