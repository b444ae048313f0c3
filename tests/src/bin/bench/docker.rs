//! `bench docker`: a setup and a patch of the example application on the docker
//! runtime, beside the same steps as a shell script of `docker` commands
//! (`docker.sh`); [`Command::Docker`](crate::Command::Docker) says what is measured.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use shiplog_engine::domain::environment::EnvironmentKind;
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::domain::{CommitId, Name};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::logs;
use shiplog_engine::runtime::{AnyRuntime, EnvironmentRef, Runtime};
use shiplog_engine::store::{EventStore, Metadata};
use shiplog_engine::worker::{Tick, Worker};
use shiplog_tests::example::{ExampleRepo, Scratch};
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::DockerArgs;
use crate::engine::{ENGINE_CONNECTIONS, environment, head_commit};
use crate::report::{Figure, Report};
use crate::server::{BenchDb, describe_server};

/// The target: engine time over script time, for a setup and for a patch.
const DOCKER_RATIO_TARGET: f64 = 1.2;

/// `bench docker`; see [`Command::Docker`](crate::Command::Docker).
pub async fn docker_benchmark(options: PgConnectOptions, args: &DockerArgs) -> anyhow::Result<Report> {
    let Some(docker) = shiplog_tests::docker::docker().await else { bail!("no Docker engine answers") };
    let db = BenchDb::open(options, ENGINE_CONNECTIONS).await?;
    let mut header = describe_server(&db.owner).await?;
    let scratch = Scratch::new("shiplog-bench-docker");
    let repo = ExampleRepo::create(&scratch);
    let runtime = Arc::new(AnyRuntime::Docker(docker));
    let lifecycle = Lifecycle::new(EventStore::new(db.runtime.clone())).with_repositories(scratch.repositories());
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
