//! `bench projections`: a full rebuild of every read model, and an audit export,
//! beside the raw scan of the same rows; [`Command::Projections`](crate::Command::Projections)
//! says what is measured.

use std::time::{Duration, Instant};

use anyhow::ensure;
use chrono::Utc;
use serde_json::json;
use shiplog_engine::domain::environment::{EnvironmentKind, Tracking};
use shiplog_engine::domain::{CommitId, Name, StreamRef};
use shiplog_engine::store::{EventStore, ExpectedVersion, MAX_BATCH_EVENTS, Metadata, NewEvent, StreamId};
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use crate::ProjectionsArgs;
use crate::measure::{peak_rss_mib, reset_peak_rss};
use crate::report::{Figure, Pair, Report};
use crate::server::{BenchDb, describe_server};
use crate::store::{FILL_WRITERS, copy_to_raw, raw_replay};

/// Environments in the history; runs are spread evenly over them.
const HISTORY_ENVIRONMENTS: usize = 500;
/// The target for a full rebuild, as a share of the raw scan's rate.
const REBUILD_TARGET: f64 = 0.25;

pub async fn projections_benchmark(options: PgConnectOptions, args: &ProjectionsArgs) -> anyhow::Result<Report> {
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
            images: vec![],
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
                        release: None,
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
