//! The projections: each a name, a version, its tables, and how a batch of facts
//! is folded into them. A batch loads the rows it touches, folds with the pure
//! functions of `lifecycle`, `runs` and `audit`, and writes the changed rows back
//! in one statement per table, inside the runner's transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use shiplog_engine::domain::StreamRef;
use shiplog_engine::domain::run::RunEvent;
use shiplog_engine::store::EventStore;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;
use crate::audit::{self, AuditEntry};
use crate::fact::{Fact, Payload};
use crate::lifecycle::{ApplicationView, EnvironmentView, LifecycleState};
use crate::runs::RunView;
use crate::table::{self, TableDef, physical};

/// A read model folded from the log. Bump `VERSION` whenever the fold or the
/// tables change: a runner finding an older version live rebuilds it.
pub trait Projection: Send + Sync + 'static {
    const NAME: &'static str;
    const VERSION: i32;
    const TABLES: &'static [TableDef];

    /// Folds `facts` (in log order, never empty) into the tables of `generation`.
    /// Must be deterministic and free of side effects beyond those tables.
    fn apply(
        conn: &mut PgConnection,
        generation: i32,
        facts: &[Fact],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// Applications and environments: one projection, because an environment's sync
/// status depends on its application's templates.
pub struct LifecycleProjection;

impl Projection for LifecycleProjection {
    const NAME: &'static str = "lifecycle";
    const VERSION: i32 = 1;
    const TABLES: &'static [TableDef] = &[
        TableDef { name: "applications", columns: "", indexes: &[] },
        TableDef {
            name: "environments",
            columns: ", application text GENERATED ALWAYS AS (view->>'application') STORED\
                      , kind text GENERATED ALWAYS AS (view->>'kind') STORED\
                      , status text GENERATED ALWAYS AS (view->>'status') STORED\
                      , sync_status text GENERATED ALWAYS AS (view->>'sync_status') STORED\
                      , health text GENERATED ALWAYS AS (view->>'health') STORED\
                      , drift text GENERATED ALWAYS AS (view->'drift'->>'verdict') STORED\
                      , expires_at text GENERATED ALWAYS AS (view->'state'->>'expires_at') STORED",
            indexes: &["application", "status", "drift"],
        },
    ];

    async fn apply(conn: &mut PgConnection, generation: i32, facts: &[Fact]) -> Result<(), ProjectionError> {
        let (apps_table, envs_table) = (physical("applications", generation), physical("environments", generation));
        let mut app_keys = BTreeSet::new();
        let mut changed_apps = BTreeSet::new();
        let mut env_keys = BTreeSet::new();
        for fact in facts {
            match &fact.payload {
                Payload::Application { application, .. } => {
                    app_keys.insert(application.to_string());
                    changed_apps.insert(application.to_string());
                }
                Payload::Environment { application, environment, .. } => {
                    app_keys.insert(application.to_string());
                    env_keys.insert(EnvironmentView::key(application.as_str(), environment.as_str()));
                }
                Payload::Run { .. } | Payload::Other => {}
            }
        }
        if app_keys.is_empty() {
            return Ok(());
        }
        let app_keys: Vec<String> = app_keys.into_iter().collect();
        let env_keys: Vec<String> = env_keys.into_iter().collect();
        let changed_apps: Vec<String> = changed_apps.into_iter().collect();
        let mut state = LifecycleState {
            applications: table::load(conn, &apps_table, &app_keys, None).await?,
            // A template change reaches every environment of its application.
            environments: table::load(conn, &envs_table, &env_keys, Some(("application", &changed_apps))).await?,
        };
        for fact in facts {
            state.apply(fact);
        }
        let first = facts[0].cursor;
        let apps = state.applications.iter().filter(|(_, v): &(_, &ApplicationView)| v.cursor >= first);
        table::upsert(conn, &apps_table, apps).await?;
        let envs = state.environments.iter().filter(|(_, v): &(_, &EnvironmentView)| v.cursor >= first);
        table::upsert(conn, &envs_table, envs).await
    }
}

/// Runs: stages, jobs, attempts, durations, exit codes, who and why.
pub struct RunsProjection;

impl Projection for RunsProjection {
    const NAME: &'static str = "runs";
    // 2: a row is the engine's run state (`run::evolve`) plus who asked for each attempt.
    const VERSION: i32 = 2;
    const TABLES: &'static [TableDef] = &[TableDef {
        name: "runs",
        columns: ", application text GENERATED ALWAYS AS (view->>'application') STORED\
                  , environment text GENERATED ALWAYS AS (view->>'environment') STORED\
                  , status text GENERATED ALWAYS AS (view->>'status') STORED\
                  , position bigint GENERATED ALWAYS AS ((view->>'position')::bigint) STORED",
        indexes: &["application, environment, position", "status", "position"],
    }];

    async fn apply(conn: &mut PgConnection, generation: i32, facts: &[Fact]) -> Result<(), ProjectionError> {
        let table = physical("runs", generation);
        let keys: BTreeSet<String> = facts
            .iter()
            .filter_map(|f| match &f.payload {
                Payload::Run { run_id, .. } => Some(run_id.to_string()),
                _ => None,
            })
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut runs: BTreeMap<String, RunView> =
            table::load(conn, &table, &keys.into_iter().collect::<Vec<_>>(), None).await?;
        for fact in facts {
            if let Payload::Run { run_id, .. } = &fact.payload {
                let key = run_id.to_string();
                match RunView::apply(runs.remove(&key), fact) {
                    Some(view) => runs.insert(key, view),
                    None => None,
                };
            }
        }
        let first = facts[0].cursor;
        table::upsert(conn, &table, runs.iter().filter(|(_, v)| v.cursor >= first)).await
    }
}

/// The audit index: who did what, when, to which environment.
pub struct AuditProjection;

impl Projection for AuditProjection {
    const NAME: &'static str = "audit";
    const VERSION: i32 = 1;
    const TABLES: &'static [TableDef] = &[TableDef {
        name: "audit_index",
        columns: ", position bigint GENERATED ALWAYS AS ((view->>'position')::bigint) STORED\
                  , actor text GENERATED ALWAYS AS (view->>'actor') STORED\
                  , application text GENERATED ALWAYS AS (view->>'application') STORED\
                  , environment text GENERATED ALWAYS AS (view->>'environment') STORED\
                  , action text GENERATED ALWAYS AS (view->>'action') STORED",
        indexes: &["position", "application, environment, position", "actor, position"],
    }];

    async fn apply(conn: &mut PgConnection, generation: i32, facts: &[Fact]) -> Result<(), ProjectionError> {
        let mut entries: BTreeMap<String, AuditEntry> = BTreeMap::new();
        for fact in facts {
            let run_of = match &fact.payload {
                Payload::Run { run_id, event: RunEvent::RunCancelled { .. } | RunEvent::RunRetried { .. } } => {
                    run_environment(conn, *run_id).await?
                }
                _ => None,
            };
            if let Some(entry) = audit::entry(fact, run_of) {
                entries.insert(format!("{:020}", entry.position), entry);
            }
        }
        table::upsert(conn, &physical("audit_index", generation), &entries).await
    }
}

/// The application and environment of a run, from its `RunQueued`.
async fn run_environment(conn: &mut PgConnection, run_id: Uuid) -> Result<Option<(String, String)>, ProjectionError> {
    let first = EventStore::read_stream_on(&mut *conn, &(&StreamRef::Run(run_id)).into(), 1, 1).await?;
    let Some(first) = first.first() else { return Ok(None) };
    match serde_json::from_str(&first.payload) {
        Ok(RunEvent::RunQueued { application, environment, .. }) => {
            Ok(Some((application.to_string(), environment.to_string())))
        }
        _ => {
            Err(ProjectionError::Corrupt { cursor: first.cursor, why: "a run stream must start with RunQueued".into() })
        }
    }
}
