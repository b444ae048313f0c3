//! The fault suite: `shiplog serve` killed with SIGKILL at seeded points of a
//! setup, a patch and a teardown on the process runtime, and the PostgreSQL cluster
//! under a running server killed mid-run. A kill point is the Nth event of the
//! run's stream, N drawn from a seed that each test prints
//! (`SHIPLOG_FAULT_SEED=<seed>` replays it). After the kill a server is started
//! again (the same one, after a database crash, when it survived), and each case
//! asserts what must be true once the run ends, written out below: the run ends as
//! it would have without the kill, no job is started or succeeds twice, and the
//! environment serves what the run deployed with exactly one process per replica.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid};
use proptest::test_runner::TestRunner;
use shiplog_engine::domain::Name;
use shiplog_engine::domain::environment::Status;
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use shiplog_engine::runtime::EnvironmentRef;
use shiplog_engine::store::{EventStore, Metadata};
use shiplog_tests::example::{ExampleRepo, Scratch};
use shiplog_tests::{Spawned, TestDb, docker, eventually, fuzz};
use sqlx::PgPool;
use uuid::Uuid;

/// Kill points drawn per stage: a handful, so the suite stays within CI's budget.
const POINTS_PER_STAGE: usize = 2;
/// Long enough for a run on two busy cores; a kill costs a lease (2 s) on top.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

/// The kill points of one test, drawn from its seed (`SHIPLOG_FAULT_SEED`).
struct KillPoints(TestRunner);

impl KillPoints {
    fn new(test: &str) -> KillPoints {
        KillPoints(fuzz::seeded(test, "SHIPLOG_FAULT_SEED"))
    }

    /// An event number in `1..=last`.
    fn next(&mut self, last: usize) -> usize {
        fuzz::draw(&mut self.0, &(1..=last))
    }
}

/// One server's environment: its database (a URL), process root and work directory.
struct Site<'a> {
    url: String,
    scratch: &'a Scratch,
    runtime: Runtime,
}

/// Where the example's runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Process,
    Docker,
}

impl Site<'_> {
    fn serve(&self) -> Spawned {
        Spawned::start(
            Command::new(env!("CARGO_BIN_EXE_shiplog"))
                .args(["serve", "--listen", "127.0.0.1:0", "--lease", "2s"])
                .env("DATABASE_URL", &self.url)
                .env("SHIPLOG_PROCESS_ROOT", self.scratch.path().join("process"))
                .env("SHIPLOG_WORK_DIR", self.scratch.path().join("work"))
                .env("SHIPLOG_RUNTIME", if self.runtime == Runtime::Docker { "docker" } else { "process" })
                .env("SHIPLOG_DOCKER_JOB_IMAGE", docker::BASE_IMAGE)
                .env("RUST_LOG", "error")
                .stdout(Stdio::null()),
            "shiplog serve",
        )
    }
}

fn sigkill(server: &mut Spawned) {
    kill(Pid::from_raw(server.id() as i32), Signal::SIGKILL).unwrap();
    server.wait().unwrap();
}

/// The run's events as (type, job), in stream order.
async fn run_events(pool: &PgPool, run_id: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event_type, coalesce(payload::jsonb->>'job', '') FROM events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(format!("run-{run_id}"))
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

/// Waits until the run's stream holds `n` events (or the run ended first), then
/// kills with `kill`; returns how many events the stream held just before.
async fn kill_after(pool: &PgPool, run_id: Uuid, n: usize, kill: impl FnOnce()) -> usize {
    let held = eventually(&format!("event {n} of run {run_id}"), RUN_DEADLINE, || async {
        let events = run_events(pool, run_id).await;
        let ended = events.last().is_some_and(|(kind, _)| ["RunSucceeded", "RunFailed"].contains(&kind.as_str()));
        (events.len() >= n || ended).then_some(events.len())
    })
    .await;
    kill();
    held
}

/// The run's final status, once its end is recorded on its environment too (a
/// separate transaction after the run's last event).
async fn final_status(lifecycle: &Lifecycle, run_id: Uuid) -> RunStatus {
    eventually(&format!("run {run_id} to end"), RUN_DEADLINE, || ended(lifecycle, run_id)).await
}

async fn ended(lifecycle: &Lifecycle, run_id: Uuid) -> Option<RunStatus> {
    let (run, _) = lifecycle.run(run_id).await.ok()??;
    let (env, _) = lifecycle.environment(&run.application, &run.environment).await.ok()?;
    (run.status.is_final() && env.queue.iter().all(|queued| queued.run_id != run_id)).then_some(run.status)
}

/// No job started or succeeded twice: a resumed run carries on from its last
/// recorded step.
async fn assert_no_job_doubled(pool: &PgPool, run_id: Uuid, case: &str) {
    let events = run_events(pool, run_id).await;
    for (kind, job) in &events {
        if kind == "JobStarted" || kind == "JobSucceeded" {
            let times = events.iter().filter(|(k, j)| k == kind && j == job).count();
            assert_eq!(times, 1, "{case}: {kind} {job} {times} times in {events:?}");
        }
    }
}

/// The service processes running under `root` (a test's scratch directory), by
/// process group: busybox httpd forks a child per request (the drift
/// reconciler's probes, the test's own), which shares its group.
fn service_processes(root: &Path) -> Vec<i32> {
    let mut groups: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|proc| std::fs::read_link(proc.join("cwd")).is_ok_and(|cwd| cwd.starts_with(root)))
        .filter(|proc| std::fs::read(proc.join("cmdline")).is_ok_and(|c| c.windows(5).any(|w| w == b"httpd")))
        .filter_map(|proc| {
            // `pid (comm) state ppid pgrp …`: the group is the third field after the name.
            let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
            stat.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Kills whatever service processes a case leaves under its scratch directory
/// (they outlive the server by design), pass or fail.
struct Services(PathBuf);

impl Drop for Services {
    fn drop(&mut self) {
        for group in service_processes(&self.0) {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
    }
}

/// Removes whatever a Docker case leaves labelled with its environment, pass or fail.
struct Containers(EnvironmentRef);

impl Drop for Containers {
    fn drop(&mut self) {
        docker::remove_leftovers(&self.0);
    }
}

/// One case's world: a fresh database, the example app in a fresh repository, its
/// environment `staging` tracking `main`, not yet set up (on Docker under an
/// application name of its own: the engine is shared).
struct World {
    db: TestDb,
    scratch: Scratch,
    repo: ExampleRepo,
    lifecycle: Lifecycle,
    runtime: Runtime,
    app: Name,
    env: Name,
    _services: Services,
    containers: Option<Containers>,
}

impl World {
    /// `None` when `runtime` is Docker and no engine answers (see `docker::docker`).
    async fn new(runtime: Runtime) -> Option<World> {
        let db = TestDb::new().await;
        let scratch = Scratch::new("shiplog-faults");
        let repo = ExampleRepo::create(&scratch);
        let lifecycle = Lifecycle::new(db.store()).with_repositories(scratch.repositories());
        let (name, template, containers) = match runtime {
            Runtime::Process => ("hello".to_owned(), repo.template(), None),
            Runtime::Docker => {
                docker::docker().await?;
                let env_ref = docker::unique_env("staging");
                (env_ref.application.clone(), repo.docker_template(), Some(Containers(env_ref)))
            }
        };
        let (app, env) = repo.create_staging(&lifecycle, &name, &template, None).await;
        let services = Services(std::fs::canonicalize(scratch.path()).unwrap());
        Some(World { db, scratch, repo, lifecycle, runtime, app, env, _services: services, containers })
    }

    fn site(&self) -> Site<'_> {
        Site { url: self.db.url(), scratch: &self.scratch, runtime: self.runtime }
    }

    /// Service processes (process runtime) or every container of the environment,
    /// stopped ones included (Docker).
    fn services(&self) -> usize {
        match &self.containers {
            Some(Containers(env_ref)) => docker::labelled("container", env_ref).len(),
            None => service_processes(&self._services.0).len(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Setup,
    Patch,
    Teardown,
}

/// The events of an uninterrupted run of each stage of the example, the range
/// kill points are drawn from (a point past a run's end kills after it ended).
const fn events_of(stage: Stage) -> usize {
    match stage {
        Stage::Setup => 16,
        Stage::Patch => 12,
        Stage::Teardown => 8,
    }
}

/// One case: `stage` of the example with the server killed after event `n` of its
/// run, then a server started again. Returns the table row.
async fn kill_serve_during(runtime: Runtime, stage: Stage, n: usize) -> Option<String> {
    let world = World::new(runtime).await?;
    let meta = Metadata::default();
    let (app, env, lifecycle) = (&world.app, &world.env, &world.lifecycle);
    let mut server = world.site().serve();
    if !matches!(stage, Stage::Setup) {
        let setup = lifecycle.request_setup(app, env, None, "before the fault", &meta, Utc::now()).await.unwrap();
        assert_eq!(final_status(lifecycle, setup.run_id).await, RunStatus::Succeeded);
    }
    let run = match stage {
        Stage::Setup => lifecycle.request_setup(app, env, None, "fault", &meta, Utc::now()).await.unwrap(),
        Stage::Patch => {
            world.repo.commit_version(2);
            lifecycle.request_patch(app, env, None, "fault", &meta, Utc::now()).await.unwrap()
        }
        Stage::Teardown => lifecycle.request_teardown(app, env, "fault", &meta, Utc::now()).await.unwrap(),
    };
    let killed_at = kill_after(&world.db.owner, run.run_id, n, || sigkill(&mut server)).await;
    let mut server = world.site().serve();

    let case = format!("{stage:?} killed after event {n} (held {killed_at})");
    let status = final_status(lifecycle, run.run_id).await;
    let (environment, _) = lifecycle.environment(app, env).await.unwrap();
    // The process runtime serves on 127.0.0.1; containers on their own addresses.
    let page = if runtime == Runtime::Process { world.repo.page().await } else { None };
    let services = world.services();
    // Expected, whatever the kill point: the run succeeds as it would have without
    // the kill; the environment is what that run made it.
    assert_eq!(status, RunStatus::Succeeded, "{case}");
    assert_no_job_doubled(&world.db.owner, run.run_id, &case).await;
    match stage {
        Stage::Setup | Stage::Patch => {
            let version = if matches!(stage, Stage::Setup) { 1 } else { 2 };
            assert_eq!(environment.status, Some(Status::Ready), "{case}");
            if runtime == Runtime::Process {
                assert_eq!(page, Some(format!("<h1>hello from shiplog v{version}</h1>")), "{case}");
            }
            assert_eq!(services, 1, "{case}: one replica of web, nothing else left");
        }
        Stage::Teardown => {
            assert_eq!(environment.status, Some(Status::TornDown), "{case}");
            assert_eq!(page, None, "{case}");
            assert_eq!(services, 0, "{case}: nothing left running");
        }
    }
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    server.wait().unwrap();
    Some(format!(
        "| serve SIGKILL, {runtime:?} {stage:?}, after event {n} (stream held {killed_at} just before) | Succeeded, no job doubled, {} | {status:?}, {environment_status:?}, {services} service(s), {} |",
        if matches!(stage, Stage::Teardown) { "nothing running" } else { "one service" },
        page.as_deref().unwrap_or(if runtime == Runtime::Process { "nothing served" } else { "page not read" }),
        environment_status = environment.status,
    ))
}

async fn kill_serve_at_seeded_points(runtime: Runtime, stage: Stage, test: &str) {
    let mut points = KillPoints::new(test);
    for _ in 0..POINTS_PER_STAGE {
        let n = points.next(events_of(stage));
        let Some(row) = kill_serve_during(runtime, stage, n).await else { return };
        eprintln!("{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_a_setup_resumes_it_to_success() {
    kill_serve_at_seeded_points(Runtime::Process, Stage::Setup, "setup").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_a_docker_setup_resumes_it_to_success() {
    kill_serve_at_seeded_points(Runtime::Docker, Stage::Setup, "docker setup").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_a_patch_resumes_it_to_success() {
    kill_serve_at_seeded_points(Runtime::Process, Stage::Patch, "patch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_a_teardown_resumes_it_to_success() {
    kill_serve_at_seeded_points(Runtime::Process, Stage::Teardown, "teardown").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_a_docker_patch_resumes_it_to_success() {
    kill_serve_at_seeded_points(Runtime::Docker, Stage::Patch, "docker patch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_during_a_docker_teardown_resumes_it_to_success() {
    kill_serve_at_seeded_points(Runtime::Docker, Stage::Teardown, "docker teardown").await;
}

/// Kills every process of the cluster at once (its supervisor's process group:
/// the postmaster and every backend), as a crash of its machine would.
fn crash(cluster: &Cluster) {
    let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
    let postmaster = Pid::from_raw(pid_file.lines().next().unwrap().trim().parse().unwrap());
    killpg(getpgid(Some(postmaster)).unwrap(), Signal::SIGKILL).unwrap();
}

/// Waits until the killed postmaster is gone: a new one refuses a data directory
/// whose lock file names a live process.
async fn wait_gone(data_dir: &Path) {
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    let proc = PathBuf::from(format!("/proc/{}", pid_file.lines().next().unwrap().trim()));
    eventually("the killed postmaster to be gone", RUN_DEADLINE, || async { (!proc.exists()).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_crashing_mid_setup_leaves_a_run_that_ends_truthfully() {
    let mut points = KillPoints::new("database");
    let n = points.next(events_of(Stage::Setup));
    let scratch = Scratch::new("shiplog-faults-pg");
    // A short path, so the cluster's socket lives in its data directory and the
    // restarted cluster answers at the same address.
    let data_dir = PathBuf::from(format!("/tmp/shiplog-crash-{}", &Uuid::new_v4().simple().to_string()[..8]));
    let options = ClusterOptions { data_dir: data_dir.clone(), ephemeral: false, unsafe_no_fsync: false, tls: None };
    let _remove = RemoveDir(data_dir.clone());
    let cluster = tokio::task::spawn_blocking({
        let options = options.clone();
        move || Cluster::start(&options).unwrap()
    })
    .await
    .unwrap();
    let admin = postgres::owner_pool(cluster.connect_options("postgres"), 1).await.unwrap();
    postgres::ensure_database(&admin, "faults").await.unwrap();
    admin.close().await;
    let owner = postgres::owner_pool(cluster.connect_options("faults"), 4).await.unwrap();
    postgres::migrate(&owner).await.unwrap();
    let runtime = postgres::runtime_pool(cluster.connect_options("faults"), 4).await.unwrap();
    let lifecycle = Lifecycle::new(EventStore::new(runtime)).with_repositories(scratch.repositories());
    let repo = ExampleRepo::create(&scratch);
    let _services = Services(std::fs::canonicalize(scratch.path()).unwrap());
    let (app, env) = repo.create_staging(&lifecycle, "hello", &repo.template(), None).await;
    let site = Site { url: cluster.url("faults"), scratch: &scratch, runtime: Runtime::Process };
    let mut server = site.serve();

    let meta = Metadata::default();
    let setup = lifecycle.request_setup(&app, &env, None, "fault", &meta, Utc::now()).await.unwrap();
    let killed_at = kill_after(&owner, setup.run_id, n, || crash(&cluster)).await;
    drop(cluster);
    wait_gone(&data_dir).await;
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options).unwrap()).await.unwrap();
    // A server that exits when its database goes away is started again, as its
    // supervisor (systemd, Kubernetes) would.
    let mut restarts = 0;
    let status = eventually("the run to end after the crash", RUN_DEADLINE, || {
        if server.try_wait().unwrap().is_some() {
            server = site.serve();
            restarts += 1;
        }
        ended(&lifecycle, setup.run_id)
    })
    .await;
    let case = format!("database killed after event {n} (held {killed_at}), server restarts: {restarts}");
    let page = repo.page().await;
    // Expected: the run succeeds, as it would have without the crash, once the
    // database is back; no job is doubled; the service serves v1, once.
    assert_eq!(status, RunStatus::Succeeded, "{case}");
    assert_no_job_doubled(&owner, setup.run_id, &case).await;
    assert_eq!(page.as_deref(), Some("<h1>hello from shiplog v1</h1>"), "{case}");
    assert_eq!(service_processes(&_services.0).len(), 1, "{case}");
    eprintln!(
        "| PostgreSQL SIGKILL (all processes), Setup, after event {n} (stream held {killed_at} just before) | Succeeded, no job doubled | {status:?}, server restarts: {restarts} |"
    );
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    server.wait().unwrap();
    owner.close().await;
    tokio::task::spawn_blocking(move || cluster.stop().unwrap()).await.unwrap();
}

/// Removes a directory when dropped, pass or fail.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cluster started again after a crash is ready when `Cluster::start` returns:
/// the lock file the killed postmaster left says `ready` too, and once was taken
/// for the new one's word, so start returned before anything listened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_started_after_a_crash_accepts_connections_once_start_returns() {
    use sqlx::Connection;

    let data_dir = PathBuf::from(format!("/tmp/shiplog-crash-{}", &Uuid::new_v4().simple().to_string()[..8]));
    let _remove = RemoveDir(data_dir.clone());
    let options = ClusterOptions { data_dir: data_dir.clone(), ephemeral: false, unsafe_no_fsync: true, tls: None };
    let start = |options: ClusterOptions| tokio::task::spawn_blocking(move || Cluster::start(&options).unwrap());
    let cluster = start(options.clone()).await.unwrap();
    crash(&cluster);
    drop(cluster);
    wait_gone(&data_dir).await;

    let cluster = start(options).await.unwrap();
    let mut connection = sqlx::PgConnection::connect_with(&cluster.connect_options("postgres"))
        .await
        .expect("a started cluster accepts a connection at once");
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut connection).await.unwrap();
    assert_eq!(one, 1);
    connection.close().await.unwrap();
    tokio::task::spawn_blocking(move || cluster.stop().unwrap()).await.unwrap();
}
