//! Read models end to end: folded from a real history (the example application
//! deployed on the process runtime), rebuilt to identical content, unharmed by a
//! runner that dies mid-batch; drift judged from what really runs; time travel
//! equal to the projection after every event; the auditors' export and replay.

use std::sync::Arc;
use std::time::Duration;

use crate::lifecycle::{Backend, Example};
use chrono::Utc;
use shiplog_engine::domain::environment::{
    self, DriftMode, Environment, EnvironmentCommand, EnvironmentEvent, EnvironmentKind, EnvironmentSpec, Health,
    Observation, RunOutcome, Tracking,
};
use shiplog_engine::domain::run::{RunStatus, StepStatus};
use shiplog_engine::domain::{Aggregate, CommitId, Name, StreamRef};
use shiplog_engine::drift::Reconciler;
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::store::{Cursor, EventFilter, Metadata};
use shiplog_projections::lifecycle::{DriftVerdictView, EnvironmentView, HealthView, SyncStatus};
use shiplog_projections::projection::{AuditProjection, LifecycleProjection, Projection, RunsProjection};
use shiplog_projections::runner::{self, Runner};
use shiplog_projections::runs::{RunView, duration_ms};
use shiplog_projections::time_travel::{AsOf, environment_at};
use shiplog_projections::{ProjectionError, audit};
use shiplog_tests::{TestDb, eventually, wait_readable};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

fn by(actor: &str) -> Metadata {
    Metadata { actor: Some(actor.into()), ..Metadata::default() }
}

/// The example application's `staging` on the process runtime (the lifecycle
/// tests' fixture), with what these tests do to it.
type Deployed = Example;

impl Deployed {
    async fn set_up_by(&self, actor: &str) -> Uuid {
        let setup = self.lifecycle.request_setup(&self.app, &self.env, None, "asked", &by(actor), Utc::now()).await;
        let run_id = setup.unwrap().run_id;
        assert_eq!(self.work().await, (run_id, RunStatus::Succeeded));
        run_id
    }

    /// Setup, a patch, a patch whose release command fails (exit 3), its retry,
    /// a template change: a history with something for every read model.
    async fn history(&self) -> Uuid {
        self.set_up_by("alice").await;
        self.repo.commit_version(2);
        let patch = self.lifecycle.request_patch(&self.app, &self.env, None, "push", &by("bob"), Utc::now()).await;
        assert_eq!(self.work().await, (patch.unwrap().run_id, RunStatus::Succeeded));
        self.gate.close();
        self.repo.commit_version(3);
        let failed = self.lifecycle.request_patch(&self.app, &self.env, None, "push", &by("bob"), Utc::now()).await;
        let failed = failed.unwrap().run_id;
        assert_eq!(self.work().await, (failed, RunStatus::Failed));
        self.gate.open();
        self.lifecycle.retry_run(failed, &by("carol"), Utc::now()).await.unwrap();
        assert_eq!(self.work().await, (failed, RunStatus::Succeeded));
        let template = self.repo.template().replace("timeout: 5m", "timeout: 4m");
        self.lifecycle.update_template(&self.app, &template, &by("alice"), Utc::now()).await.unwrap();
        failed
    }

    async fn tear_down(&self) {
        self.lifecycle.request_teardown(&self.app, &self.env, "done", &by("tests"), Utc::now()).await.unwrap();
        self.work().await;
    }

    async fn event_count(&self) -> usize {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events").fetch_one(&self.db.owner).await.unwrap() as usize
    }

    async fn catch_up_all(&self) {
        wait_readable(&self.db.store(), self.event_count().await).await;
        catch_up::<LifecycleProjection>(self).await;
        catch_up::<RunsProjection>(self).await;
        catch_up::<AuditProjection>(self).await;
    }

    async fn environment_row(&self) -> EnvironmentView {
        view(&self.db.runtime, "environments", &format!("{}/{}", self.app, self.env)).await.expect("a row")
    }
}

/// Every row of a live read model, as (key, view text), in key order.
async fn rows(pool: &PgPool, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(AssertSqlSafe(format!("SELECT key, view::text FROM read.{table} ORDER BY key")))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn all_rows(pool: &PgPool) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    for table in ["applications", "environments", "runs", "audit_index"] {
        all.push(rows(pool, table).await);
    }
    all
}

async fn view<V: serde::de::DeserializeOwned>(pool: &PgPool, table: &str, key: &str) -> Option<V> {
    let text: Option<String> =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT view::text FROM read.{table} WHERE key = $1")))
            .bind(key)
            .fetch_optional(pool)
            .await
            .unwrap();
    text.map(|t| serde_json::from_str(&t).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_show_the_history_and_rebuild_to_identical_rows() {
    let d = Deployed::new().await;
    let failed = d.history().await;
    d.catch_up_all().await;

    let env = d.environment_row().await;
    assert_eq!(env.status, environment::Status::Ready);
    assert_eq!(env.sync_status, SyncStatus::OutOfSync);
    assert_eq!(env.sync_reasons, vec!["application template changed: v1 → v2".to_string()]);
    assert_eq!(env.health, HealthView::Healthy);
    assert_eq!(env.drift.verdict, DriftVerdictView::InSync);
    assert_eq!(env.last_run.as_ref().map(|r| r.run_id), Some(failed));
    assert_eq!(env.state.images.len(), 1);

    let run: RunView = view(&d.db.runtime, "runs", &failed.to_string()).await.unwrap();
    assert_eq!((run.state.status, run.state.attempt, run.triggered_by(1)), (RunStatus::Succeeded, 2, Some("bob")));
    assert_eq!(run.triggered_by(2), Some("carol"));
    assert_eq!(run.state.attempts[1].from_stage.as_deref(), Some("release"));
    let release = run.state.stages.iter().find(|s| s.name == "release").unwrap();
    assert_eq!((release.status, release.attempt), (StepStatus::Succeeded, 2));
    assert!(run.duration_ms().is_some() && duration_ms(release.started_at, release.finished_at).is_some());
    // The failed attempt's exit code is in the log of events, and in the audit trail.
    let first_attempt_failure: String =
        sqlx::query_scalar("SELECT payload FROM events WHERE stream_id = $1 AND event_type = 'JobFailed'")
            .bind(format!("run-{failed}"))
            .fetch_one(&d.db.owner)
            .await
            .unwrap();
    assert!(first_attempt_failure.contains("\"exit_code\":3"), "{first_attempt_failure}");

    let audit: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT actor, view->>'summary' FROM read.audit_index WHERE environment = 'staging' ORDER BY position",
    )
    .fetch_all(&d.db.runtime)
    .await
    .unwrap();
    assert!(
        audit.contains(&(Some("carol".into()), "retried the run from stage release (attempt 2)".into())),
        "{audit:?}"
    );
    assert!(audit.iter().any(|(who, what)| who.as_deref() == Some("bob") && what.starts_with("requested a patch of")));

    // A rebuild while the live tables serve: a new generation, the same rows.
    let live = all_rows(&d.db.runtime).await;
    let rebuilt = runner::rebuild(&d.db.store(), &runner::all(), 7).await.unwrap();
    assert_eq!(
        rebuilt.iter().map(|r| (r.name, r.generation)).collect::<Vec<_>>(),
        [("lifecycle", 2), ("runs", 2), ("audit", 2)]
    );
    assert_eq!(all_rows(&d.db.runtime).await, live);

    // Every read model dropped, then rebuilt from the log alone.
    sqlx::raw_sql(
        "DROP VIEW read.applications, read.environments, read.runs, read.audit_index; \
         DROP TABLE read.applications_g2, read.environments_g2, read.runs_g2, read.audit_index_g2; \
         DELETE FROM read.checkpoints;",
    )
    .execute(&d.db.owner)
    .await
    .unwrap();
    d.catch_up_all().await;
    assert_eq!(all_rows(&d.db.runtime).await, live);
    assert!(matches!(runner::Descriptor::named("nope"), Err(ProjectionError::Unknown(name)) if name == "nope"));
    d.tear_down().await;
}

async fn catch_up<P: Projection>(d: &Deployed) {
    let runner = Runner::<P>::new(d.db.store());
    runner.ensure().await.unwrap();
    runner.catch_up().await.unwrap();
}

/// A runner of `P` dies in its third batch after writing rows and before saving
/// its checkpoint; a new runner resumes. The result equals a rebuild from scratch.
async fn crash_and_resume<P: Projection>(d: &Deployed, table: &str) {
    let store = d.db.store();
    let folded = sqlx::query_scalar("SELECT events FROM read.checkpoints WHERE projection = $1 AND live");
    let before: i64 = folded.bind(P::NAME).fetch_one(&d.db.runtime).await.unwrap();
    let crashing = Runner::<P>::new(store.clone()).with_batch(5).crash_before_checkpoint(2);
    let crashed = crashing.catch_up().await.unwrap_err();
    assert!(matches!(crashed, ProjectionError::Injected(_)), "{crashed}");
    let folded: i64 = sqlx::query_scalar("SELECT events FROM read.checkpoints WHERE projection = $1 AND live")
        .bind(P::NAME)
        .fetch_one(&d.db.runtime)
        .await
        .unwrap();
    assert_eq!(folded, before + 10, "the checkpoint of the two committed batches");

    Runner::<P>::new(store.clone()).with_batch(5).catch_up().await.unwrap();
    let resumed = rows(&d.db.runtime, table).await;
    assert!(!resumed.is_empty());
    runner::rebuild(&store, &[runner::Descriptor::of::<P>()], 1000).await.unwrap();
    assert_eq!(rows(&d.db.runtime, table).await, resumed, "{}", P::NAME);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_batch_resumes_to_the_same_read_models() {
    let d = Deployed::new().await;
    // Live, empty generations first; then a history for them to follow.
    runner::rebuild(&d.db.store(), &runner::all(), 100).await.unwrap();
    d.history().await;
    wait_readable(&d.db.store(), d.event_count().await).await;
    crash_and_resume::<LifecycleProjection>(&d, "environments").await;
    crash_and_resume::<RunsProjection>(&d, "runs").await;
    crash_and_resume::<AuditProjection>(&d, "audit_index").await;
    d.tear_down().await;
}

/// Kills the process group of the environment's `web` service, as an operator
/// (or the OOM killer) would, behind shiplog's back.
/// Kills the web service's process group and waits until it is gone: a SIGKILL is
/// only sent, and under load the group outlives the call for a moment.
async fn kill_web_service(d: &Deployed) {
    let state = d.scratch.path().join(format!("process/environments/{}/{}/services/web.json", d.app, d.env));
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    let group = format!("-{}", state["process"]["pgid"].as_i64().expect("a process group"));
    let signal = |signal: &str| std::process::Command::new("kill").args([signal, "--", &group]).output().unwrap();
    assert!(signal("-KILL").status.success());
    eventually("the killed service's process group to be gone", Duration::from_secs(10), || async {
        (!signal("-0").status.success()).then_some(())
    })
    .await;
}

async fn drift_events(d: &Deployed) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type || ' ' || payload FROM events WHERE stream_id = $1 AND event_type LIKE 'Drift%' \
         ORDER BY version",
    )
    .bind(StreamRef::environment(&d.app, &d.env).to_string())
    .fetch_all(&d.db.owner)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_behind_shiplogs_back_is_drift_until_a_setup_repairs_it() {
    let d = Deployed::new().await;
    d.set_up_by("alice").await;
    let reconciler = Reconciler::new(d.lifecycle.clone(), d.runtime.clone());
    let checked = reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
    assert_eq!((checked.observation, checked.recorded), (Some(Observation::InSync), vec![]));

    // The reconciler's loop notices within an interval, and records it once.
    let (shutdown, wake) = (tokio_util::sync::CancellationToken::new(), Arc::new(tokio::sync::Notify::new()));
    let looping = Reconciler::new(d.lifecycle.clone(), d.runtime.clone());
    let (stop, woken) = (shutdown.clone(), wake.clone());
    let loop_task = tokio::spawn(async move { looping.run(Duration::from_millis(200), woken, stop).await });
    kill_web_service(&d).await;
    eventually("the drift to be recorded", Duration::from_secs(10), || async {
        (!drift_events(&d).await.is_empty()).then_some(())
    })
    .await;
    for _ in 0..3 {
        wake.notify_one();
        let again = reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
        assert!(again.recorded.is_empty(), "the same drift recorded again: {:?}", again.recorded);
    }
    shutdown.cancel();
    loop_task.await.unwrap();
    let events = drift_events(&d).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("\"reasons\":[\"service web is not running\"]"), "{events:?}");
    assert!(events[0].contains("\"health\":\"missing\""), "{events:?}");
    d.catch_up_all().await;
    let env = d.environment_row().await;
    assert_eq!(
        (env.drift.verdict, env.health, env.sync_status),
        (DriftVerdictView::Drifted, HealthView::Missing, SyncStatus::Synced)
    );
    assert_eq!(env.drift.reasons, vec!["service web is not running".to_string()]);
    assert!(env.drift.since.is_some());

    // A manual setup repairs it; the next check resolves the drift.
    d.set_up_by("alice").await;
    let checked = reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
    assert!(matches!(checked.recorded[..], [EnvironmentEvent::DriftResolved { .. }]), "{:?}", checked.recorded);
    d.catch_up_all().await;
    let env = d.environment_row().await;
    assert_eq!((env.drift.verdict, env.health), (DriftVerdictView::InSync, HealthView::Healthy));

    // A template change is config drift, named, recorded once; what runs stays healthy.
    let template = d.repo.template().replace("timeout: 5m", "timeout: 4m");
    d.lifecycle.update_template(&d.app, &template, &by("alice"), Utc::now()).await.unwrap();
    for _ in 0..2 {
        reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
    }
    let events = drift_events(&d).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[2].contains("application template changed: v1 → v2"), "{events:?}");
    assert!(events[2].contains("\"health\":\"healthy\""), "{events:?}");

    // In `auto` mode the reconciler repairs a killed service with one setup.
    d.set_up_by("alice").await;
    reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
    d.lifecycle.set_drift_mode(&d.app, &d.env, DriftMode::Auto, &by("alice"), Utc::now()).await.unwrap();
    kill_web_service(&d).await;
    let checked = reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
    let repair = checked.auto_setup.expect("an automatic setup");
    assert_eq!(d.work().await, (repair.run_id, RunStatus::Succeeded));
    assert!(d.page().await.is_some(), "the repaired service serves");
    let checked = reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
    assert!(matches!(checked.recorded[..], [EnvironmentEvent::DriftResolved { .. }]), "{:?}", checked.recorded);
    d.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_stopped_or_removed_behind_shiplogs_back_is_drift_and_a_setup_repairs_it() {
    use shiplog_tests::docker::{cli, labelled};
    let Some(d) = Example::on(Backend::Docker).await else { return };
    d.set_up_by("alice").await;
    let reconciler = Reconciler::new(d.lifecycle.clone(), d.runtime.clone());
    assert_eq!(reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap().observation, Some(Observation::InSync));

    for (sabotage, reason) in [("stop", "service web is not running"), ("rm", "service web is missing")] {
        let containers = labelled("container", &d.env_ref());
        assert_eq!(containers.len(), 1, "{containers:?}");
        let args: &[&str] = if sabotage == "rm" { &["rm", "-f"] } else { &["stop"] };
        cli(&[args, &[containers[0].as_str()]].concat()).unwrap();
        let checked = reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
        let [EnvironmentEvent::DriftDetected { reasons, health, .. }] = &checked.recorded[..] else {
            panic!("{sabotage}: {:?}", checked.recorded)
        };
        assert_eq!((reasons.clone(), *health), (vec![reason.to_string()], Health::Missing));
        assert!(reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap().recorded.is_empty(), "recorded twice");

        d.set_up_by("alice").await;
        assert!(d.page().await.is_some(), "{sabotage}: the setup did not bring the service back");
        let checked = reconciler.check(&d.app, &d.env, Utc::now()).await.unwrap();
        assert!(matches!(checked.recorded[..], [EnvironmentEvent::DriftResolved { .. }]), "{:?}", checked.recorded);
    }
    d.tear_down().await;
}

/// A tiny deterministic generator (xorshift64*), so a failing sequence can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Decides `command` on the environment and appends what the domain decided.
async fn decide_and_append(lifecycle: &Lifecycle, app: &Name, env: &Name, command: EnvironmentCommand) {
    let stream = StreamRef::environment(app, env);
    let (state, version) = lifecycle.load::<Environment>(&stream).await.unwrap();
    let Ok(events) = state.decide(command) else { return };
    lifecycle.append(&stream, state, version, &events, &by("generator")).await.unwrap();
}

/// One random but valid history of an application with two environments.
async fn generated_step(lifecycle: &Lifecycle, rng: &mut Rng, app: &Name, envs: &[Name], n: usize) {
    let now = Utc::now();
    let env = &envs[rng.below(envs.len())];
    let (state, _) = lifecycle.environment(app, env).await.unwrap();
    if state.created.is_none() {
        let created = EnvironmentSpec {
            application: app.clone(),
            name: env.clone(),
            kind: [EnvironmentKind::Preview, EnvironmentKind::Staging][rng.below(2)],
            tracking: Tracking::Branch("main".into()),
            ttl_seconds: [None, Some(3600)][rng.below(2)],
            drift_mode: DriftMode::Warn,
        };
        return lifecycle.create_environment(&created, &by("generator"), now).await.unwrap();
    }
    let current = lifecycle.application(app).await.unwrap().0.current().unwrap();
    let commit: CommitId = format!("{:040x}", rng.below(4)).parse().unwrap();
    let run_id = Uuid::new_v4();
    let oldest = state.queue.first().map(|q| q.run_id).unwrap_or(run_id);
    let command = match rng.below(12) {
        0 => {
            let template = format!("services:\n  web:\n    image: \"img-{}\"\n", rng.below(3));
            lifecycle.update_template(app, &template, &by("generator"), now).await.unwrap();
            return;
        }
        1 => {
            lifecycle
                .update_variables(app, &format!("N: \"{}\"\n", rng.below(3)), &by("generator"), now)
                .await
                .unwrap();
            return;
        }
        2 => EnvironmentCommand::RequestSetup { run_id, commit, templates: current, reason: "generated".into(), now },
        3 => EnvironmentCommand::RequestPatch { run_id, commit, current, reason: "generated".into(), now },
        4 => EnvironmentCommand::MarkStarted { run_id: oldest, now },
        5 | 6 => EnvironmentCommand::MarkFinished {
            run_id: oldest,
            outcome: [RunOutcome::Succeeded, RunOutcome::Failed, RunOutcome::Cancelled][rng.below(3)],
            images: vec![("web".into(), format!("img-{n}"))],
            now,
        },
        7 => EnvironmentCommand::RecordObservation {
            observation: match rng.below(3) {
                0 => Observation::InSync,
                1 => Observation::Drifted {
                    reasons: vec![format!("service web is missing ({})", rng.below(2))],
                    health: Health::Missing,
                },
                _ => Observation::Unknown("no answer".into()),
            },
            now,
        },
        8 => EnvironmentCommand::SetDriftMode { mode: [DriftMode::Warn, DriftMode::Auto][rng.below(2)], now },
        9 => EnvironmentCommand::RequestAutoSetup {
            run_id,
            commit,
            templates: current,
            digest: format!("d{}", rng.below(2)),
            now,
        },
        10 if rng.below(4) == 0 => EnvironmentCommand::RequestTeardown { run_id, reason: "generated".into(), now },
        _ => EnvironmentCommand::Expire { run_id, now: now + chrono::Duration::hours(2) },
    };
    decide_and_append(lifecycle, app, env, command).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_equals_the_projection_after_every_event() {
    for seed in [0x5eed_0001_u64, 0x5eed_0002, 0x5eed_0003, 0x5eed_0004] {
        let db = TestDb::new().await;
        let store = db.store();
        let lifecycle = Lifecycle::new(store.clone());
        let runner = Runner::<LifecycleProjection>::new(store.clone()).with_batch(1);
        runner.ensure().await.unwrap();
        let app: Name = "shop".parse().unwrap();
        let envs: Vec<Name> = vec!["a".parse().unwrap(), "b".parse().unwrap()];
        lifecycle
            .create_application(&app, "https://git.example.invalid/shop.git", &by("generator"), Utc::now())
            .await
            .unwrap();
        lifecycle
            .update_template(&app, "services:\n  web:\n    image: \"img-0\"\n", &by("generator"), Utc::now())
            .await
            .unwrap();
        let mut rng = Rng(seed);
        let mut compared = 0;
        for n in 0..100 {
            generated_step(&lifecycle, &mut rng, &app, &envs, n).await;
            let count = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events").fetch_one(&db.owner).await.unwrap();
            wait_readable(&store, count as usize).await;
            while runner.step().await.unwrap() == 1 {
                let (tx_id, position): (i64, i64) = sqlx::query_as(
                    "SELECT tx_id, position FROM read.checkpoints WHERE projection = 'lifecycle' AND live",
                )
                .fetch_one(&db.runtime)
                .await
                .unwrap();
                for env in &envs {
                    let projected: Option<EnvironmentView> =
                        view(&db.runtime, "environments", &format!("shop/{env}")).await;
                    let travelled =
                        environment_at(&store, &app, env, AsOf::Cursor(Cursor { tx_id, position })).await.unwrap();
                    assert_eq!(
                        travelled, projected,
                        "seed {seed:#x}, step {n}, environment {env}, at {tx_id}:{position}"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared >= 60, "seed {seed:#x}: only {compared} comparisons");
        for env in &envs {
            let now = environment_at(&store, &app, env, AsOf::Time(Utc::now())).await.unwrap();
            assert_eq!(now, view(&db.runtime, "environments", &format!("shop/{env}")).await, "as of now");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_carries_what_an_auditor_needs_and_the_replay_tells_the_story() {
    use shiplog_engine::store::hash::{EventFields, event_hash};
    let d = Deployed::new().await;
    d.history().await;
    let store = d.db.store();
    let total = d.event_count().await;
    wait_readable(&store, total).await;

    let mut out = Vec::new();
    assert_eq!(audit::export(&store, &EventFilter::default(), &mut out).await.unwrap(), total as u64);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), total);
    // Each line re-hashes to its own hash and chains to the previous one of its stream.
    let mut last_hash = std::collections::HashMap::new();
    for line in &lines {
        let text = |k: &str| line[k].as_str().unwrap().to_owned();
        let prev: [u8; 32] = hex_bytes(&text("prev_hash"));
        let fields = EventFields {
            prev_hash: &prev,
            stream_id: &text("stream_id"),
            version: line["version"].as_u64().unwrap(),
            event_id: text("event_id").parse().unwrap(),
            event_type: &text("event_type"),
            schema_version: line["schema_version"].as_u64().unwrap() as u32,
            recorded_at: text("recorded_at").parse().unwrap(),
            payload: &shiplog_engine::canonical::canonicalize(&line["payload"]).unwrap(),
            metadata: &shiplog_engine::canonical::canonicalize(&line["metadata"]).unwrap(),
        };
        assert_eq!(hex::encode(event_hash(&fields)), text("hash"), "{line}");
        if let Some(previous) = last_hash.insert(text("stream_id"), text("hash")) {
            assert_eq!(previous, text("prev_hash"));
        }
    }

    let only = |types: &[&str], streams: &[String]| EventFilter {
        types: types.iter().map(|t| t.to_string()).collect(),
        streams: streams.to_vec(),
        ..EventFilter::default()
    };
    let mut out = Vec::new();
    let requested = audit::export(&store, &only(&["RunRequested"], &[]), &mut out).await.unwrap();
    assert_eq!(requested, 4, "setup, two patches, the retry's requeue");
    assert!(String::from_utf8(out).unwrap().lines().all(|l| l.contains("\"event_type\":\"RunRequested\"")));
    let env_stream = StreamRef::environment(&d.app, &d.env).to_string();
    let in_env = audit::export(&store, &only(&[], &[env_stream]), &mut Vec::new()).await.unwrap();
    assert!(in_env > 4 && in_env < total as u64);
    let first_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT min(recorded_at) FROM events").fetch_one(&d.db.owner).await.unwrap();
    let before = EventFilter { until: Some(first_at), ..EventFilter::default() };
    assert_eq!(audit::export(&store, &before, &mut Vec::new()).await.unwrap(), 0);

    let mut out = Vec::new();
    audit::replay(&store, Some("hello"), None, &mut out).await.unwrap();
    let replay = String::from_utf8(out).unwrap();
    let story: Vec<&str> = replay.lines().collect();
    assert!(story[0].contains("EnvironmentCreated by tests  hello/staging  status pending · commit - · sync out_of_sync (no setup has succeeded yet)"), "{replay}");
    assert!(
        story.iter().any(|l| l.contains("RunFinished by worker:worker-1  hello/staging  status ready")),
        "{replay}"
    );
    assert!(story.iter().any(|l| l.contains("status failed")), "{replay}");
    let last = story.last().unwrap();
    assert!(
        last.contains("ApplicationTemplateUpdated by alice")
            && last.contains("sync out_of_sync (application template changed: v1 → v2)"),
        "{replay}"
    );
    d.tear_down().await;
}

fn hex_bytes(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}
