//! The lifecycle end to end: the example application is set up, patched twice,
//! fails a release command (the previous version keeps serving), is retried after
//! the fix, and torn down (with a real `terraform destroy` when terraform is
//! installed and the hook runs on this machine). The whole scenario runs on the
//! `process` runtime and, where a Docker engine answers, on `docker`; the other
//! tests run on `process`.

use std::sync::Arc;

use chrono::Utc;
use shiplog_engine::domain::environment::{EnvironmentKind, EnvironmentSpec, Status, Tracking};
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::domain::{DomainError, Name};
use shiplog_engine::lifecycle::{Lifecycle, LifecycleError};
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::runtime::{AnyRuntime, Registry, Runtime};
use shiplog_engine::store::Metadata;
use shiplog_engine::worker::{Tick, Worker};
use shiplog_engine::{logs, runtime::EnvironmentRef};
use std::time::Duration;

use shiplog_tests::example::{ExampleRepo, Gate, Scratch, copy_dir, installed};
use shiplog_tests::{TestDb, docker, eventually};
use uuid::Uuid;

const SECRET: &str = "s3cret-token-value";

/// Where the example runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Process,
    Docker,
}

pub(crate) struct Example {
    pub(crate) db: TestDb,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) runtime: Arc<AnyRuntime>,
    pub(crate) worker: Worker<AnyRuntime>,
    pub(crate) scratch: Scratch,
    pub(crate) repo: ExampleRepo,
    /// `$RELEASE_GATE`: closed, the release command fails.
    pub(crate) gate: Gate,
    pub(crate) app: Name,
    pub(crate) env: Name,
}

/// An environment of `app` tracking `main`.
fn environment(app: &Name, name: &Name, kind: EnvironmentKind, ttl_seconds: Option<u64>) -> EnvironmentSpec {
    EnvironmentSpec {
        application: app.clone(),
        name: name.clone(),
        kind,
        tracking: Tracking::Branch("main".into()),
        ttl_seconds,
        drift_mode: Default::default(),
    }
}

fn metadata() -> Metadata {
    Metadata { actor: Some("tests".into()), ..Metadata::default() }
}

impl Example {
    pub(crate) async fn new() -> Example {
        Example::on(Backend::Process).await.expect("the process runtime is always there")
    }

    /// The example on `backend`; `None` when that is Docker and no engine answers
    /// (the test then skips, unless SHIPLOG_REQUIRE_DOCKER=1 makes it fail).
    pub(crate) async fn on(backend: Backend) -> Option<Example> {
        Example::pushing_to(backend, None).await
    }

    /// The example on `backend`, its runs pushing built images to `registry` in
    /// their release stage.
    pub(crate) async fn pushing_to(backend: Backend, registry: Option<Registry>) -> Option<Example> {
        let scratch = Scratch::new("shiplog-e2e");
        let (runtime, app, gate_host) = match backend {
            Backend::Process => {
                (AnyRuntime::Process(ProcessRuntime::new(scratch.path().join("process"))), "hello".into(), "127.0.0.1")
            }
            // Containers of other tests and of earlier runs share the engine: a name of its own.
            Backend::Docker => (
                AnyRuntime::Docker(docker::docker().await?),
                docker::unique_env("staging").application,
                "host.docker.internal",
            ),
        };
        let db = TestDb::new().await;
        let repo = ExampleRepo::create(&scratch);
        let template = match backend {
            Backend::Process => repo.template(),
            Backend::Docker => repo.docker_template(),
        };
        let tf_state = scratch.path().join("infra");
        copy_dir(&repo.dir.join("infra"), &tf_state);
        let marks = scratch.path().join("marks");
        std::fs::create_dir_all(&marks).unwrap();
        let gate = Gate::start().await;
        let variables = format!(
            "GREETING: \"hello from ${{ENVIRONMENT}}\"\nAPI_TOKEN: {{ secret: \"{SECRET}\" }}\nRELEASE_GATE: \"{}\"\n\
             TF_STATE_DIR: \"{}\"\nMARKS: \"{}\"\n",
            gate.address(gate_host),
            tf_state.display(),
            marks.display()
        );

        let lifecycle = Lifecycle::new(db.store()).with_registry(registry).with_repositories(scratch.repositories());
        let (app, env): (Name, Name) = (app.parse().unwrap(), "staging".parse().unwrap());
        let now = Utc::now();
        lifecycle.create_application(&app, repo.dir.to_str().unwrap(), &metadata(), now).await.unwrap();
        lifecycle.update_template(&app, &template, &metadata(), now).await.unwrap();
        lifecycle.update_variables(&app, &variables, &metadata(), now).await.unwrap();
        lifecycle
            .create_environment(&environment(&app, &env, EnvironmentKind::Staging, None), &metadata(), now)
            .await
            .unwrap();
        let runtime = Arc::new(runtime);
        let worker = Worker::new(lifecycle.clone(), runtime.clone(), "worker-1", scratch.path().join("work"));
        Some(Example { db, lifecycle, runtime, worker, scratch, repo, gate, app, env })
    }

    fn backend(&self) -> Backend {
        match *self.runtime {
            AnyRuntime::Process(_) => Backend::Process,
            AnyRuntime::Docker(_) => Backend::Docker,
            AnyRuntime::Kubernetes(_) => unreachable!("the lifecycle scenario does not run on kubernetes yet"),
        }
    }

    pub(crate) fn env_ref(&self) -> EnvironmentRef {
        EnvironmentRef { application: self.app.to_string(), environment: self.env.to_string() }
    }

    /// The page the environment's web service serves, or `None` when nothing answers.
    pub(crate) async fn page(&self) -> Option<String> {
        match &*self.runtime {
            AnyRuntime::Process(_) => self.repo.page().await,
            AnyRuntime::Docker(docker) => {
                let ip = docker.service_address(&self.env_ref(), "web").await.unwrap()?;
                self.repo.page_at(ip).await
            }
            AnyRuntime::Kubernetes(_) => unreachable!("the lifecycle scenario does not run on kubernetes yet"),
        }
    }

    /// Lets the worker run the next queued run to its end.
    pub(crate) async fn work(&self) -> (Uuid, RunStatus) {
        match self.worker.tick().await.unwrap() {
            Tick::Finished { run_id, status } => {
                if status == RunStatus::Failed {
                    // Shown when an assertion on this run fails.
                    eprintln!("run {run_id} failed; its log:\n{}", self.log_text(run_id).await);
                }
                (run_id, status)
            }
            other => panic!("expected a finished run, got {other:?}"),
        }
    }

    /// The run's events as `Type [stage or job]`, in order.
    async fn event_types(&self, run_id: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT rtrim(event_type || ' ' || coalesce(payload::jsonb->>'job', payload::jsonb->>'stage', '')) \
             FROM events WHERE stream_id = $1 ORDER BY version",
        )
        .bind(format!("run-{run_id}"))
        .fetch_all(&self.db.owner)
        .await
        .unwrap()
    }

    pub(crate) async fn log_text(&self, run_id: Uuid) -> String {
        logs::read(&self.db.runtime, run_id, 0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|l| format!("{}: {}\n", l.job, l.line))
            .collect()
    }
}

impl Drop for Example {
    /// A Docker test that failed halfway leaves containers behind: remove them.
    fn drop(&mut self) {
        if self.backend() == Backend::Docker {
            docker::remove_leftovers(&self.env_ref());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_goes_through_its_whole_lifecycle_on_the_process_runtime() {
    whole_lifecycle(Example::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_goes_through_its_whole_lifecycle_on_docker() {
    let Some(ex) = Example::on(Backend::Docker).await else { return };
    whole_lifecycle(ex).await;
}

async fn whole_lifecycle(ex: Example) {
    let now = Utc::now;

    // A patch before any setup is refused.
    let refused = ex.lifecycle.request_patch(&ex.app, &ex.env, None, "push", &metadata(), now()).await.unwrap_err();
    assert!(matches!(refused, LifecycleError::Domain(DomainError::SetupRequired(_))), "{refused}");

    // Setup: build, infrastructure, release command, roll-out.
    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), now()).await.unwrap();
    assert_eq!(ex.work().await, (setup.run_id, RunStatus::Succeeded));
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v1</h1>"));
    if ex.backend() == Backend::Docker {
        assert_eq!(docker::labelled("network", &ex.env_ref()).len(), 1);
        assert_eq!(docker::labelled("volume", &ex.env_ref()).len(), 1);
    }
    let setup_log = ex.log_text(setup.run_id).await;
    assert!(setup_log.contains("release-migrate: migration done"), "{setup_log}");
    assert!(setup_log.contains("using API token ***") && !setup_log.contains(SECRET), "{setup_log}");

    // Two patches.
    ex.repo.commit_version(2);
    let patch2 = ex.lifecycle.request_patch(&ex.app, &ex.env, None, "push", &metadata(), now()).await.unwrap();
    assert_eq!(ex.work().await, (patch2.run_id, RunStatus::Succeeded));
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v2</h1>"));

    // A failing release command fails the run; v2 keeps serving.
    ex.gate.close();
    ex.repo.commit_version(3);
    let patch3 = ex.lifecycle.request_patch(&ex.app, &ex.env, None, "push", &metadata(), now()).await.unwrap();
    assert_eq!(ex.work().await, (patch3.run_id, RunStatus::Failed));
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v2</h1>"));
    assert!(ex.log_text(patch3.run_id).await.contains("migration blocked"));
    let (env, _) = ex.lifecycle.environment(&ex.app, &ex.env).await.unwrap();
    assert_eq!(env.status, Some(Status::Failed));

    // Fixed: the retry resumes at the release stage, reusing the built image.
    ex.gate.open();
    ex.lifecycle.retry_run(patch3.run_id, &metadata(), now()).await.unwrap();
    assert_eq!(ex.work().await, (patch3.run_id, RunStatus::Succeeded));
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v3</h1>"));

    // Teardown: the hook runs, then everything is removed.
    let teardown = ex.lifecycle.request_teardown(&ex.app, &ex.env, "deleted", &metadata(), now()).await.unwrap();
    assert_eq!(ex.work().await, (teardown.run_id, RunStatus::Succeeded));
    assert_eq!(ex.page().await, None, "the service still answers after teardown");
    assert!(ex.runtime.observe(&ex.env_ref()).await.unwrap().is_empty());
    if ex.backend() == Backend::Docker {
        for kind in ["container", "network", "volume"] {
            assert_eq!(docker::labelled(kind, &ex.env_ref()), Vec::<String>::new(), "a {kind} is left");
        }
    }
    let (env, _) = ex.lifecycle.environment(&ex.app, &ex.env).await.unwrap();
    assert_eq!(env.status, Some(Status::TornDown));
    let teardown_log = ex.log_text(teardown.run_id).await;
    // In a container the hook finds no terraform.
    if ex.backend() == Backend::Process && installed("terraform") {
        assert!(teardown_log.contains("Destroy complete!"), "{teardown_log}");
    } else {
        assert!(teardown_log.contains("no terraform state to destroy"), "{teardown_log}");
    }

    let mut runs = String::new();
    for (name, run) in [
        ("setup", setup.run_id),
        ("patch v2", patch2.run_id),
        ("patch v3, failed then retried", patch3.run_id),
        ("teardown", teardown.run_id),
    ] {
        runs.push_str(&format!("{name}:\n  {}\n", ex.event_types(run).await.join("\n  ")));
    }
    // The same events on every runtime.
    insta::assert_snapshot!("whole_lifecycle_runs", runs);
    assert!(ex.db.store().verify().await.unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_patches_the_older_is_skipped_as_outdated() {
    let ex = Example::new().await;
    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (setup.run_id, RunStatus::Succeeded));

    ex.repo.commit_version(2);
    let meta = metadata();
    let (first, second) = tokio::join!(
        ex.lifecycle.request_patch(&ex.app, &ex.env, None, "push", &meta, Utc::now()),
        ex.lifecycle.request_patch(&ex.app, &ex.env, None, "push", &meta, Utc::now()),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    // Whichever request was decided second superseded the other.
    let (older, newer) = if second.superseded.contains(&first.run_id) { (first, second) } else { (second, first) };
    assert_eq!(newer.superseded, vec![older.run_id]);

    assert_eq!(ex.work().await, (newer.run_id, RunStatus::Succeeded));
    assert_eq!(ex.worker.tick().await.unwrap(), Tick::Idle);
    assert_eq!(ex.event_types(older.run_id).await, ["RunQueued", "RunSkipped"]);
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v2</h1>"));
    ex.lifecycle.request_teardown(&ex.app, &ex.env, "done", &metadata(), Utc::now()).await.unwrap();
    ex.work().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_run_kills_its_job_and_the_old_version_keeps_serving() {
    let ex = Example::new().await;
    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (setup.run_id, RunStatus::Succeeded));

    // A release command that never ends on its own.
    ex.repo.commit_release_script("#!/bin/sh\necho started > \"$MARKS/started\"\nwhile true; do sleep 0.05; done\n");
    let patch = ex.lifecycle.request_patch(&ex.app, &ex.env, None, "push", &metadata(), Utc::now()).await.unwrap();
    let started = ex.scratch.path().join("marks/started");
    let (worked, cancelled) = tokio::join!(ex.work(), async {
        eventually("the release command to start", Duration::from_secs(60), || async {
            started.exists().then_some(())
        })
        .await;
        ex.lifecycle.cancel_run(patch.run_id, "wrong commit", &metadata(), Utc::now()).await
    });
    cancelled.unwrap();
    assert_eq!(worked, (patch.run_id, RunStatus::Cancelled));
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v1</h1>"));
    assert!(ex.log_text(patch.run_id).await.contains("release-migrate was cancelled"));
    let (env, _) = ex.lifecycle.environment(&ex.app, &ex.env).await.unwrap();
    assert_eq!((env.status, env.queue.len()), (Some(Status::Ready), 0));
    let types = ex.event_types(patch.run_id).await;
    assert_eq!(types.last().map(String::as_str), Some("RunCancelled"));

    ex.lifecycle.request_teardown(&ex.app, &ex.env, "done", &metadata(), Utc::now()).await.unwrap();
    ex.work().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_every_log_line_live_and_a_resumed_one_the_rest() {
    use futures::TryStreamExt;
    let ex = Example::new().await;
    let hub = logs::LogHub::start(ex.db.runtime.clone()).await.unwrap();
    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();

    // Follow from the start while the worker runs; the stream ends with the run.
    let live = tokio::spawn(hub.follow(setup.run_id, 0).try_collect::<Vec<_>>());
    assert_eq!(ex.work().await.1, RunStatus::Succeeded);
    let followed =
        tokio::time::timeout(Duration::from_secs(30), live).await.expect("the follow ended").unwrap().unwrap();
    let stored = logs::read(&ex.db.runtime, setup.run_id, 0, 10_000).await.unwrap();
    assert!(stored.len() > 10, "{stored:?}");
    assert_eq!(followed, stored);
    assert_eq!(followed.iter().map(|l| l.seq).collect::<Vec<_>>(), (1..=stored.len() as i64).collect::<Vec<_>>());

    // Resuming from the middle of a finished run gives exactly the rest, then ends.
    let middle = stored[stored.len() / 2].seq;
    let rest: Vec<_> = hub.follow(setup.run_id, middle).try_collect().await.unwrap();
    assert_eq!(rest, stored[stored.len() / 2 + 1..].to_vec());

    ex.lifecycle.request_teardown(&ex.app, &ex.env, "done", &metadata(), Utc::now()).await.unwrap();
    ex.work().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_sharing_one_tail_each_get_every_line_once_however_late_or_slow() {
    use futures::{StreamExt, TryStreamExt};
    use shiplog_engine::runtime::{LogSink, LogStream};
    let ex = Example::new().await;
    let hub = logs::LogHub::start(ex.db.runtime.clone()).await.unwrap();
    // A queued run nobody executes: the test writes its log and then ends it.
    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();
    let log = logs::RunLog::open(ex.db.runtime.clone(), setup.run_id, vec![]).await.unwrap();
    let job = log.job("test");

    let early = tokio::spawn(hub.follow(setup.run_id, 0).try_collect::<Vec<_>>());
    // A slow follower: it takes its first line, then nothing while hundreds of
    // batches pass (more than the tail keeps), then the rest.
    let mut slow = Box::pin(hub.follow(setup.run_id, 0));
    job.line(LogStream::Stdout, "line 1");
    assert_eq!(slow.next().await.unwrap().unwrap().seq, 1);
    for n in 2..=400 {
        job.line(LogStream::Stdout, &format!("line {n}"));
        log.flush().await; // one chunk, one notification, one batch per line
    }
    // A late follower joins the same tail in the middle, from line 100.
    let late = tokio::spawn(hub.follow(setup.run_id, 100).try_collect::<Vec<_>>());
    for n in 401..=600 {
        job.line(LogStream::Stdout, &format!("line {n}"));
    }
    log.flush().await;
    ex.lifecycle.cancel_run(setup.run_id, "done", &metadata(), Utc::now()).await.unwrap();

    let numbers = |lines: Vec<logs::LogLine>| lines.iter().map(|l| l.seq).collect::<Vec<_>>();
    let patience = Duration::from_secs(30);
    let early = tokio::time::timeout(patience, early).await.expect("the follow ended").unwrap().unwrap();
    assert_eq!(numbers(early), (1..=600).collect::<Vec<_>>());
    let late = tokio::time::timeout(patience, late).await.expect("the follow ended").unwrap().unwrap();
    assert_eq!(numbers(late), (101..=600).collect::<Vec<_>>());
    let slow: Vec<_> = tokio::time::timeout(patience, slow.try_collect()).await.expect("the follow ended").unwrap();
    assert_eq!(numbers(slow), (2..=600).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_follower_gets_every_line_once_in_order_with_all_that_is_stored_at_once() {
    use futures::{StreamExt, TryStreamExt};
    use shiplog_engine::runtime::{LogSink, LogStream};
    let ex = Example::new().await;
    let hub = logs::LogHub::start(ex.db.runtime.clone()).await.unwrap();
    // A queued run nobody executes: the test writes its log and then ends it.
    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();
    let log = logs::RunLog::open(ex.db.runtime.clone(), setup.run_id, vec![]).await.unwrap();
    let job = log.job("test");

    let early = tokio::spawn(hub.follow_chunks(setup.run_id, 0).try_collect::<Vec<_>>());
    // A slow follower takes its first chunk, then nothing while more batches pass
    // than the tail keeps.
    let mut slow = Box::pin(hub.follow_chunks(setup.run_id, 0));
    job.line(LogStream::Stdout, "line 1");
    let first: Vec<i64> = slow.next().await.unwrap().unwrap().iter().map(|l| l.seq).collect();
    assert_eq!(first, vec![1]);
    for n in 2..=400 {
        job.line(LogStream::Stdout, &format!("line {n}"));
        log.flush().await; // one chunk, one notification, one batch per line
    }
    // A follower resuming from line 100's cursor gets every stored line after it
    // in its first chunk.
    let mut late = Box::pin(hub.follow_chunks(setup.run_id, 100));
    let late_first = late.next().await.unwrap().unwrap();
    assert_eq!(late_first.first().map(|l| l.seq), Some(101));
    assert!(late_first.len() >= 300, "{} lines", late_first.len());
    let late_rest = tokio::spawn(late.try_collect::<Vec<_>>());
    for n in 401..=600 {
        job.line(LogStream::Stdout, &format!("line {n}"));
    }
    log.flush().await;
    ex.lifecycle.cancel_run(setup.run_id, "done", &metadata(), Utc::now()).await.unwrap();

    let numbers = |chunks: Vec<Vec<logs::LogLine>>| {
        assert!(chunks.iter().all(|c| !c.is_empty()), "an empty chunk");
        chunks.into_iter().flatten().map(|l| l.seq).collect::<Vec<_>>()
    };
    let patience = Duration::from_secs(30);
    let early = tokio::time::timeout(patience, early).await.expect("the follow ended").unwrap().unwrap();
    assert_eq!(numbers(early), (1..=600).collect::<Vec<_>>());
    let late_rest = tokio::time::timeout(patience, late_rest).await.expect("the follow ended").unwrap().unwrap();
    let mut late = vec![late_first];
    late.extend(late_rest);
    assert_eq!(numbers(late), (101..=600).collect::<Vec<_>>());
    let slow: Vec<_> = tokio::time::timeout(patience, slow.try_collect()).await.expect("the follow ended").unwrap();
    assert_eq!(numbers(slow), (2..=600).collect::<Vec<_>>());
    // The same lines as the line-by-line subscription and the stored log.
    let stored = logs::read(&ex.db.runtime, setup.run_id, 0, 10_000).await.unwrap();
    let followed: Vec<_> = hub.follow(setup.run_id, 0).try_collect().await.unwrap();
    let chunked: Vec<_> = hub.follow_chunks(setup.run_id, 0).try_collect::<Vec<_>>().await.unwrap();
    assert_eq!(chunked.concat(), stored);
    assert_eq!(followed, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_never_set_up_is_torn_down_with_nothing_to_undo() {
    let ex = Example::new().await;
    // Created without a setup: nothing was checked out, built or deployed, so the
    // teardown hook has no code to run from and nothing to undo.
    let teardown =
        ex.lifecycle.request_teardown(&ex.app, &ex.env, "never used", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (teardown.run_id, RunStatus::Succeeded));
    let (env, _) = ex.lifecycle.environment(&ex.app, &ex.env).await.unwrap();
    assert_eq!(env.status, Some(Status::TornDown));
    assert_eq!(
        ex.event_types(teardown.run_id).await,
        [
            "RunQueued",
            "RunStarted",
            "StageStarted teardown",
            "JobStarted remove",
            "JobSucceeded remove",
            "StageSucceeded teardown",
            "RunSucceeded"
        ]
    );
    assert!(!ex.scratch.path().join("work").join("checkouts").exists(), "a teardown checks nothing out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_past_its_ttl_is_torn_down_once() {
    let ex = Example::new().await;
    let preview: Name = "preview-1".parse().unwrap();
    ex.lifecycle
        .create_environment(
            &environment(&ex.app, &preview, EnvironmentKind::Preview, Some(3600)),
            &metadata(),
            Utc::now(),
        )
        .await
        .unwrap();
    let setup = ex.lifecycle.request_setup(&ex.app, &preview, None, "created", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (setup.run_id, RunStatus::Succeeded));
    let (env, _) = ex.lifecycle.environment(&ex.app, &preview).await.unwrap();
    let expires_at = env.expires_at.expect("a TTL sets an expiry");

    // Time comes in as an argument: nothing expires a second early.
    let early = expires_at - chrono::Duration::seconds(1);
    assert!(ex.lifecycle.expire_due(&metadata(), early).await.unwrap().is_empty());
    let due = ex.lifecycle.expire_due(&metadata(), expires_at).await.unwrap();
    assert_eq!(due.len(), 1, "only the preview has a TTL");
    assert!(ex.lifecycle.expire_due(&metadata(), expires_at).await.unwrap().is_empty(), "asked twice");
    assert_eq!(ex.work().await, (due[0].run_id, RunStatus::Succeeded));
    let (env, _) = ex.lifecycle.environment(&ex.app, &preview).await.unwrap();
    assert_eq!(env.status, Some(Status::TornDown));
    assert!(ex.lifecycle.expire_due(&metadata(), expires_at + chrono::Duration::days(1)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_stage_runs_on_the_source_before_build_and_fails_fast() {
    let ex = Example::new().await;
    // A `test` stage whose job checks the page in the checkout mentions "v1".
    let template = format!(
        "{}stages: [test]\njobs:\n  - name: unit\n    stage: test\n    command: [\"grep\", \"-q\", \"v1\", \"public/index.html\"]\n",
        ex.repo.template()
    );
    ex.lifecycle.update_template(&ex.app, &template, &metadata(), Utc::now()).await.unwrap();
    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (setup.run_id, RunStatus::Succeeded));
    assert_eq!(ex.event_types(setup.run_id).await[2..5], ["StageStarted test", "JobStarted unit", "JobSucceeded unit"]);

    // v2 fails the test: the run stops before build, v1 keeps serving.
    ex.repo.commit_version(2);
    let patch = ex.lifecycle.request_patch(&ex.app, &ex.env, None, "push", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (patch.run_id, RunStatus::Failed));
    let types = ex.event_types(patch.run_id).await;
    assert!(!types.iter().any(|t| t.contains("build")), "{types:?}");
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v1</h1>"));

    ex.lifecycle.request_teardown(&ex.app, &ex.env, "done", &metadata(), Utc::now()).await.unwrap();
    ex.work().await;
}

#[tokio::test]
async fn an_invalid_template_lists_every_problem_and_stores_nothing() {
    let ex = Example::new().await;
    let (_, version_before) = ex.lifecycle.application(&ex.app).await.unwrap();
    let bad = "services:\n  Web:\n    image: busybox\n    ports: [0]\nrelease:\n  - name: migrate\n    command: []\n";
    let err = ex.lifecycle.update_template(&ex.app, bad, &metadata(), Utc::now()).await.unwrap_err();
    let LifecycleError::Template(problems) = err else { panic!("{err}") };
    let paths: Vec<&str> = problems.0.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.len() >= 3, "{problems}");
    assert!(paths.iter().any(|p| p.starts_with("services.Web")), "{problems}");
    assert!(paths.iter().any(|p| p.starts_with("release[0].command")), "{problems}");
    let (_, version_after) = ex.lifecycle.application(&ex.app).await.unwrap();
    assert_eq!(version_after, version_before, "an invalid template changed the log");
}
