//! Workers as separate processes sharing one database: a worker killed with SIGKILL
//! in the middle of a long job is replaced by another, which resumes the run from
//! its events once the lease expires; no job that had succeeded runs again. The
//! process runtime's services outlive a stopped server until a teardown.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shiplog_engine::domain::Name;
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::store::Metadata;
use shiplog_engine::worker::{Tick, Worker};
use shiplog_tests::example::{ExampleRepo, Scratch};
use shiplog_tests::{Spawned, TestDb, eventually};

/// A release command that records each start and then waits for a go-ahead file:
/// a long job the test can interrupt at a known point.
const SLOW_RELEASE: &str = "#!/bin/sh\necho started >> \"$MARKS/release-started\"\n\
    while [ ! -e \"$MARKS/go\" ]; do sleep 0.05; done\necho \"migration done\"\n";

fn start_worker(db: &TestDb, scratch: &Scratch, id: &str) -> Spawned {
    start_shiplog(db, scratch, &["worker", "--lease", "2s", "--worker-id", id])
}

/// `shiplog <args>` on the test's database, process root and work directory.
fn start_shiplog(db: &TestDb, scratch: &Scratch, args: &[&str]) -> Spawned {
    Spawned::start(
        Command::new(env!("CARGO_BIN_EXE_shiplog"))
            .args(args)
            .env("DATABASE_URL", db.url())
            .env("SHIPLOG_PROCESS_ROOT", scratch.path().join("process"))
            .env("SHIPLOG_WORK_DIR", scratch.path().join("work"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
        "shiplog",
    )
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Application `hello` of `repo` with its template and variables, and its
/// environment `staging` tracking `main`, not yet set up.
async fn example_environment(
    db: &TestDb,
    scratch: &Scratch,
    repo: &ExampleRepo,
    marks: &Path,
) -> (Lifecycle, Metadata, Name, Name) {
    std::fs::create_dir_all(marks).unwrap();
    let lifecycle = Lifecycle::new(db.store()).with_repositories(scratch.repositories());
    let variables = format!("MARKS: \"{}\"\n", marks.display());
    let (app, env) = repo.create_staging(&lifecycle, "hello", &repo.template(), Some(&variables)).await;
    (lifecycle, Metadata::default(), app, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_no_finished_job_runs_twice() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-kill");
    let repo = ExampleRepo::create(&scratch);
    repo.commit_release_script(SLOW_RELEASE);
    let marks = scratch.path().join("marks");
    let (lifecycle, meta, app, env) = example_environment(&db, &scratch, &repo, &marks).await;

    let mut first = start_worker(&db, &scratch, "first");
    let setup = lifecycle.request_setup(&app, &env, None, "created", &meta, Utc::now()).await.unwrap();
    let started = marks.join("release-started");
    eventually("the first worker to reach the release command", Duration::from_secs(60), || async {
        (lines(&started) == 1).then_some(())
    })
    .await;
    kill(Pid::from_raw(first.id() as i32), Signal::SIGKILL).unwrap();
    first.wait().unwrap();

    let mut second = start_worker(&db, &scratch, "second");
    eventually("the second worker to resume the release command", Duration::from_secs(60), || async {
        (lines(&started) == 2).then_some(())
    })
    .await;
    std::fs::write(marks.join("go"), "").unwrap();
    let run = eventually("the resumed run to end", Duration::from_secs(60), || async {
        let (run, _) = lifecycle.run(setup.run_id).await.unwrap().unwrap();
        run.status.is_final().then_some(run)
    })
    .await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(repo.page().await.as_deref(), Some("<h1>hello from shiplog v1</h1>"));

    // The build had succeeded before the kill: it was not run again. The release
    // command had not finished: it ran again, and succeeded once.
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, coalesce(payload::jsonb->>'job', '') FROM events WHERE stream_id = $1 ORDER BY version",
    )
    .bind(format!("run-{}", setup.run_id))
    .fetch_all(&db.owner)
    .await
    .unwrap();
    let count = |kind: &str, job: &str| events.iter().filter(|(k, j)| k == kind && j == job).count();
    assert_eq!((count("JobStarted", "build-web"), count("JobSucceeded", "build-web")), (1, 1));
    assert_eq!((count("JobStarted", "release-migrate"), count("JobSucceeded", "release-migrate")), (1, 1));
    for (kind, job) in &events {
        if kind == "JobSucceeded" {
            assert_eq!(count("JobSucceeded", job), 1, "{job} succeeded twice");
        }
    }

    lifecycle.request_teardown(&app, &env, "done", &meta, Utc::now()).await.unwrap();
    eventually("the teardown", Duration::from_secs(60), || async {
        let (env, _) = lifecycle.environment(&app, &env).await.unwrap();
        env.queue.is_empty().then_some(())
    })
    .await;
    kill(Pid::from_raw(second.id() as i32), Signal::SIGTERM).unwrap();
    assert!(second.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_services_outlive_a_stopped_server_until_torn_down() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-outlive");
    let repo = ExampleRepo::create(&scratch);
    let marks = scratch.path().join("marks");
    let (lifecycle, meta, app, env) = example_environment(&db, &scratch, &repo, &marks).await;

    let mut server = start_shiplog(&db, &scratch, &["serve", "--listen", "127.0.0.1:0"]);
    let setup = lifecycle.request_setup(&app, &env, None, "created", &meta, Utc::now()).await.unwrap();
    let run = eventually("the setup to end", Duration::from_secs(60), || async {
        let (run, _) = lifecycle.run(setup.run_id).await.unwrap().unwrap();
        run.status.is_final().then_some(run)
    })
    .await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);

    // Stopping the server stops shiplog, not the environments it runs: like
    // containers, they keep serving until torn down.
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || server.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(repo.page().await.as_deref(), Some("<h1>hello from shiplog v1</h1>"));

    // Any later worker finds them from their state files and tears them down.
    let teardown = lifecycle.request_teardown(&app, &env, "done", &meta, Utc::now()).await.unwrap();
    let runtime = std::sync::Arc::new(ProcessRuntime::new(scratch.path().join("process")));
    let worker = Worker::new(lifecycle.clone(), runtime, "after", scratch.path().join("work"));
    let tick = worker.tick().await.unwrap();
    assert!(
        matches!(tick, Tick::Finished { run_id, status: RunStatus::Succeeded } if run_id == teardown.run_id),
        "{tick:?}"
    );
    assert_eq!(repo.page().await, None, "the service still answers after teardown");
}
