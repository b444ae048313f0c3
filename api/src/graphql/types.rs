//! The objects of the schema, each converted from a projection's view or an
//! engine type, and the `Node` interface they share.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, Interface, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use shiplog_engine::domain::environment::{self as domain, Tracking};
use shiplog_engine::domain::run::{self as run, JobState, StageState};
use shiplog_engine::domain::{Name, RunKind as DomainRunKind};
use shiplog_engine::logs::LogLine as EngineLogLine;
use shiplog_engine::runtime::LogStream as EngineLogStream;
use shiplog_engine::store::{Cursor, EventFilter, RecordedEvent, StreamId};
use shiplog_projections::lifecycle::{
    ApplicationView, DriftVerdictView, EnvironmentView, HealthView, SyncStatus as Sync,
};
use shiplog_projections::runs::{RunView, duration_ms};
use shiplog_projections::time_travel::{self, AsOf};
use sqlx::QueryBuilder;

use super::audit::BigInt;
use super::ids::{NodeId, decode_cursor};
use super::page::{Counted, Window};
use super::{api, coded, internal};
use crate::auth;

/// An object with a global ID, fetchable with `node(id:)`.
// A node lives for one response; boxing the large views would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "The object's opaque global ID."))]
pub enum Node {
    Application(Application),
    Environment(Environment),
    Run(Run),
    Event(Event),
    ApiToken(ApiToken),
}

/// An application: a repository and the templates its environments are set up from.
pub struct Application(pub ApplicationView);

#[Object]
impl Application {
    /// The application's opaque global ID.
    async fn id(&self) -> ID {
        NodeId::Application(name(&self.0.name)).to_id()
    }
    /// Unique name: lowercase letters, digits and `-`.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The git repository its services are built from.
    async fn repository(&self) -> &str {
        &self.0.repository
    }
    /// Version of the current application template; null before the first one.
    async fn template_version(&self) -> Option<i32> {
        self.0.template_version.map(|v| v as i32)
    }
    /// Content digest of the current application template.
    async fn template_digest(&self) -> Option<&str> {
        self.0.template_digest.as_deref()
    }
    /// Version of the current environment-variable template; 0 before the first one.
    async fn variables_version(&self) -> i32 {
        self.0.variables_version as i32
    }
    /// When the application was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the application or one of its templates last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The application's environments, by name.
    #[graphql(complexity = "first.or(last).unwrap_or(super::page::DEFAULT_PAGE) as usize * child_complexity")]
    async fn environments(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Environment, Counted>> {
        let filter = EnvironmentFilter { application: Some(self.0.name.clone()), ..EnvironmentFilter::default() };
        list_environments(ctx, &filter, Window::new(after, before, first, last)?).await
    }
}

/// Which environments a list shows; every field given narrows it.
#[derive(async_graphql::InputObject, Default)]
pub struct EnvironmentFilter {
    /// Only environments of the application with this name.
    pub application: Option<String>,
    /// Only environments of this kind.
    pub kind: Option<EnvironmentKind>,
    /// Only environments with this status.
    pub status: Option<EnvironmentStatus>,
    /// Only environments with this drift verdict.
    pub drift: Option<DriftVerdict>,
}

/// Environments from the read model, ordered by application and name.
pub async fn list_environments(
    ctx: &Context<'_>,
    filter: &EnvironmentFilter,
    window: Window,
) -> async_graphql::Result<Connection<String, Environment, Counted>> {
    let pool = api(ctx).store().pool();
    let narrow = |q: &mut QueryBuilder<sqlx::Postgres>| {
        if let Some(app) = &filter.application {
            q.push(" AND application = ").push_bind(app.clone());
        }
        if let Some(kind) = filter.kind {
            q.push(" AND kind = ").push_bind(kind.label());
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.label());
        }
        if let Some(drift) = filter.drift {
            q.push(" AND drift = ").push_bind(drift.label());
        }
    };
    let mut count = QueryBuilder::new("SELECT count(*) FROM read.environments WHERE true");
    narrow(&mut count);
    let total: i64 =
        count.build_query_scalar().fetch_one(pool).await.map_err(|e| internal("counting environments", e))?;
    let mut q = QueryBuilder::new("SELECT key, view FROM read.environments WHERE true");
    narrow(&mut q);
    let rows = keyset(q, "key", "text", false, &window)
        .build_query_as::<(String, serde_json::Value)>()
        .fetch_all(pool)
        .await
        .map_err(|e| internal("listing environments", e))?;
    let rows = decode_rows(rows, Environment)?;
    Ok(window.connection(rows, Counted { total_count: total }))
}

/// Appends the keyset condition, order and limit of `window` to `q`, over the
/// unique `key` column of type `cast`, in ascending (or `descending`) list order.
pub fn keyset(
    mut q: QueryBuilder<sqlx::Postgres>,
    key: &str,
    cast: &str,
    descending: bool,
    window: &Window,
) -> QueryBuilder<sqlx::Postgres> {
    let (later, earlier) = if descending { ("<", ">") } else { (">", "<") };
    if let Some(after) = &window.after {
        q.push(format!(" AND {key} {later} ")).push_bind(after.clone()).push(format!("::{cast}"));
    }
    if let Some(before) = &window.before {
        q.push(format!(" AND {key} {earlier} ")).push_bind(before.clone()).push(format!("::{cast}"));
    }
    let ascending = descending == window.backwards;
    q.push(format!(" ORDER BY {key} {} LIMIT ", if ascending { "ASC" } else { "DESC" })).push_bind(window.fetch());
    q
}

/// Decodes `(key, view)` rows of a read model.
pub fn decode_rows<V: serde::de::DeserializeOwned, T>(
    rows: Vec<(String, serde_json::Value)>,
    wrap: impl Fn(V) -> T,
) -> async_graphql::Result<Vec<(String, T)>> {
    rows.into_iter()
        .map(|(key, view)| {
            let view = serde_json::from_value(view).map_err(|e| internal("decoding a read model row", e))?;
            Ok((key, wrap(view)))
        })
        .collect()
}

fn name(s: &str) -> Name {
    s.parse().expect("names in read models were parsed when they were written")
}

/// The kind of an environment.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentKind {
    /// Short-lived, usually one per branch or merge request.
    Preview,
    /// Tracks a branch and deploys its latest commit.
    Staging,
    /// Deploys accepted releases; changing it needs production rights.
    Production,
}

impl EnvironmentKind {
    fn label(self) -> &'static str {
        match self {
            EnvironmentKind::Preview => "preview",
            EnvironmentKind::Staging => "staging",
            EnvironmentKind::Production => "production",
        }
    }
}

impl From<domain::EnvironmentKind> for EnvironmentKind {
    fn from(k: domain::EnvironmentKind) -> Self {
        match k {
            domain::EnvironmentKind::Preview => EnvironmentKind::Preview,
            domain::EnvironmentKind::Staging => EnvironmentKind::Staging,
            domain::EnvironmentKind::Production => EnvironmentKind::Production,
        }
    }
}

impl From<EnvironmentKind> for domain::EnvironmentKind {
    fn from(k: EnvironmentKind) -> Self {
        match k {
            EnvironmentKind::Preview => domain::EnvironmentKind::Preview,
            EnvironmentKind::Staging => domain::EnvironmentKind::Staging,
            EnvironmentKind::Production => domain::EnvironmentKind::Production,
        }
    }
}

/// Where an environment is in its life.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentStatus {
    /// Created; no setup has succeeded yet.
    Pending,
    /// The last setup or patch succeeded.
    Ready,
    /// The last run failed; the previous version, if any, keeps serving.
    Failed,
    /// Torn down: nothing runs.
    TornDown,
}

impl EnvironmentStatus {
    fn label(self) -> &'static str {
        match self {
            EnvironmentStatus::Pending => "pending",
            EnvironmentStatus::Ready => "ready",
            EnvironmentStatus::Failed => "failed",
            EnvironmentStatus::TornDown => "torn_down",
        }
    }
}

/// Whether an environment runs the templates its application has now.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    Synced,
    /// A template changed since the last setup (see `syncReasons`): it needs a setup.
    OutOfSync,
    /// Torn down: nothing to compare.
    Unknown,
}

/// How the environment's services are, as last observed.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// A run is changing the environment.
    Progressing,
    Degraded,
    Missing,
    /// The runtime could not be observed.
    Unknown,
}

/// The drift reconciler's verdict.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum DriftVerdict {
    InSync,
    Drifted,
    /// The runtime could not be observed; never taken for in sync.
    Unknown,
}

impl DriftVerdict {
    fn label(self) -> &'static str {
        match self {
            DriftVerdict::InSync => "in_sync",
            DriftVerdict::Drifted => "drifted",
            DriftVerdict::Unknown => "unknown",
        }
    }
}

/// What the reconciler does when it finds the environment drifted.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum DriftMode {
    /// Record the drift; a person repairs it with `environmentSetup`.
    Warn,
    /// Request one setup per desired state automatically.
    Auto,
}

impl From<domain::DriftMode> for DriftMode {
    fn from(m: domain::DriftMode) -> Self {
        match m {
            domain::DriftMode::Warn => DriftMode::Warn,
            domain::DriftMode::Auto => DriftMode::Auto,
        }
    }
}

impl From<DriftMode> for domain::DriftMode {
    fn from(m: DriftMode) -> Self {
        match m {
            DriftMode::Warn => domain::DriftMode::Warn,
            DriftMode::Auto => domain::DriftMode::Auto,
        }
    }
}

/// Drift as last recorded.
#[derive(SimpleObject)]
pub struct Drift {
    /// The verdict.
    verdict: DriftVerdict,
    /// What differs, e.g. "service web: not running".
    reasons: Vec<String>,
    /// Since when the verdict holds; null while in sync.
    since: Option<DateTime<Utc>>,
}

/// The image a service runs.
#[derive(SimpleObject)]
pub struct ServiceImage {
    /// The service's name in the application template.
    service: String,
    /// The image reference or id.
    image: String,
}

/// An environment: an application deployed somewhere.
pub struct Environment(pub EnvironmentView);

impl Environment {
    pub fn application_name(&self) -> Name {
        name(&self.0.application)
    }

    pub fn env_name(&self) -> Name {
        name(&self.0.name)
    }
}

#[Object]
impl Environment {
    /// The environment's opaque global ID.
    async fn id(&self) -> ID {
        NodeId::Environment(self.application_name(), self.env_name()).to_id()
    }
    /// Name, unique within its application.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The application it deploys.
    async fn application(&self, ctx: &Context<'_>) -> async_graphql::Result<Application> {
        load_application(ctx, &self.application_name())
            .await?
            .ok_or_else(|| internal("loading an environment's application", "application missing"))
    }
    /// Preview, staging or production.
    async fn kind(&self) -> EnvironmentKind {
        self.0.kind.into()
    }
    /// Where the environment is in its life.
    async fn status(&self) -> EnvironmentStatus {
        match self.0.status {
            domain::Status::Pending => EnvironmentStatus::Pending,
            domain::Status::Ready => EnvironmentStatus::Ready,
            domain::Status::Failed => EnvironmentStatus::Failed,
            domain::Status::TornDown => EnvironmentStatus::TornDown,
        }
    }
    /// The branch whose head it deploys, if it tracks a branch.
    async fn tracking_branch(&self) -> Option<&str> {
        match self.0.state.created.as_ref().map(|c| &c.tracking) {
            Some(Tracking::Branch(b)) => Some(b),
            _ => None,
        }
    }
    /// The tag it deploys, if it tracks a tag.
    async fn tracking_tag(&self) -> Option<&str> {
        match self.0.state.created.as_ref().map(|c| &c.tracking) {
            Some(Tracking::Tag(t)) => Some(t),
            _ => None,
        }
    }
    /// The commit deployed now; null before the first successful setup.
    async fn commit(&self) -> Option<&str> {
        self.0.state.commit.as_ref().map(|c| c.as_str())
    }
    /// The image each service runs now.
    async fn images(&self) -> Vec<ServiceImage> {
        let images = &self.0.state.images;
        images.iter().map(|(service, image)| ServiceImage { service: service.clone(), image: image.clone() }).collect()
    }
    /// When the environment expires and is torn down; null for no expiry.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.state.expires_at
    }
    /// What the reconciler does about drift.
    async fn drift_mode(&self) -> DriftMode {
        self.0.state.created.as_ref().map(|c| c.drift_mode).unwrap_or_default().into()
    }
    /// Whether it runs the application's current templates.
    async fn sync_status(&self) -> SyncStatus {
        match self.0.sync_status {
            Sync::Synced => SyncStatus::Synced,
            Sync::OutOfSync => SyncStatus::OutOfSync,
            Sync::Unknown => SyncStatus::Unknown,
        }
    }
    /// Why it needs a setup, e.g. "application template changed: v1 → v2".
    async fn sync_reasons(&self) -> &[String] {
        &self.0.sync_reasons
    }
    /// How its services are, as last observed.
    async fn health(&self) -> Health {
        match self.0.health {
            HealthView::Healthy => Health::Healthy,
            HealthView::Progressing => Health::Progressing,
            HealthView::Degraded => Health::Degraded,
            HealthView::Missing => Health::Missing,
            HealthView::Unknown => Health::Unknown,
        }
    }
    /// Runtime drift as last recorded by the reconciler.
    async fn drift(&self) -> Drift {
        let d = &self.0.drift;
        let verdict = match d.verdict {
            DriftVerdictView::InSync => DriftVerdict::InSync,
            DriftVerdictView::Drifted => DriftVerdict::Drifted,
            DriftVerdictView::Unknown => DriftVerdict::Unknown,
        };
        Drift { verdict, reasons: d.reasons.clone(), since: d.since }
    }
    /// Version of the application template the last successful setup applied.
    async fn applied_template_version(&self) -> Option<i32> {
        self.0.state.applied.as_ref().map(|a| a.template_version as i32)
    }
    /// The most recent run.
    async fn last_run(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Run>> {
        match &self.0.last_run {
            Some(last) => load_run(ctx, last.run_id).await,
            None => Ok(None),
        }
    }
    /// Its runs, newest first.
    #[graphql(complexity = "first.or(last).unwrap_or(super::page::DEFAULT_PAGE) as usize * child_complexity")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Run, Counted>> {
        let window = Window::new(after, before, first, last)?;
        let pool = api(ctx).store().pool();
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM read.runs WHERE application = $1 AND environment = $2")
                .bind(&self.0.application)
                .bind(&self.0.name)
                .fetch_one(pool)
                .await
                .map_err(|e| internal("counting runs", e))?;
        let mut q = QueryBuilder::new("SELECT position::text, view FROM read.runs WHERE application = ");
        q.push_bind(self.0.application.clone()).push(" AND environment = ").push_bind(self.0.name.clone());
        let rows = keyset(q, "position", "bigint", true, &window)
            .build_query_as::<(String, serde_json::Value)>()
            .fetch_all(pool)
            .await
            .map_err(|e| internal("listing runs", e))?;
        Ok(window.connection(decode_rows(rows, Run)?, Counted { total_count: total }))
    }
    /// Its events (lifecycle facts, not log lines), oldest first.
    #[graphql(complexity = "first.unwrap_or(super::page::DEFAULT_PAGE) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Event, EmptyFields>> {
        let window = Window::new(after, None, first, None)?;
        let after = match &window.after {
            Some(key) => {
                key.parse::<u64>().map_err(|_| coded("BAD_USER_INPUT", "`after` is not a cursor of this list"))?
            }
            None => 0,
        };
        let stream =
            shiplog_engine::domain::environment::Environment::stream_id(&self.application_name(), &self.env_name());
        let stream: StreamId = stream.parse().map_err(|e| internal("naming a stream", e))?;
        // By version within the stream: every committed event, in order, at once.
        let events = api(ctx)
            .store()
            .read_stream(&stream, after + 1, window.fetch() as usize)
            .await
            .map_err(|e| internal("reading events", e))?;
        Ok(window.plain(events.into_iter().map(|e| (e.version.to_string(), Event(e))).collect()))
    }
    /// The environment as it was right after the event at `cursor` (an event's
    /// `cursor`), or at `time`; null if it did not exist yet. Give exactly one.
    async fn state_at(
        &self,
        ctx: &Context<'_>,
        cursor: Option<String>,
        time: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Option<Environment>> {
        let as_of = match (cursor, time) {
            (Some(cursor), None) => AsOf::Cursor(parse_event_cursor(&cursor)?),
            (None, Some(time)) => AsOf::Time(time),
            _ => return Err(coded("BAD_USER_INPUT", "give exactly one of `cursor` and `time`")),
        };
        let view = time_travel::environment_at(api(ctx).store(), &self.application_name(), &self.env_name(), as_of)
            .await
            .map_err(|e| internal("time travel", e))?;
        Ok(view.map(Environment))
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When its state last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// An application as its events say now.
pub async fn load_application(ctx: &Context<'_>, app: &Name) -> async_graphql::Result<Option<Application>> {
    let view = time_travel::application_at(api(ctx).store(), app, AsOf::Latest)
        .await
        .map_err(|e| internal("loading an application", e))?;
    Ok(view.map(Application))
}

/// An environment as its events say now.
pub async fn load_environment(ctx: &Context<'_>, app: &Name, env: &Name) -> async_graphql::Result<Option<Environment>> {
    let view = time_travel::environment_at(api(ctx).store(), app, env, AsOf::Latest)
        .await
        .map_err(|e| internal("loading an environment", e))?;
    Ok(view.map(Environment))
}

/// A run as its stream says now.
pub async fn load_run(ctx: &Context<'_>, run_id: uuid::Uuid) -> async_graphql::Result<Option<Run>> {
    let view =
        shiplog_projections::runs::load(api(ctx).store(), run_id).await.map_err(|e| internal("loading a run", e))?;
    Ok(view.map(Run))
}

/// What a run does.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Creates the infrastructure, then deploys.
    Setup,
    /// Deploys new code onto the existing infrastructure.
    Patch,
    /// Runs teardown hooks and removes everything.
    Teardown,
}

/// Where a run is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Never started: a newer request made it pointless.
    Skipped,
}

impl From<run::RunStatus> for RunStatus {
    fn from(s: run::RunStatus) -> Self {
        match s {
            run::RunStatus::Queued => RunStatus::Queued,
            run::RunStatus::Running => RunStatus::Running,
            run::RunStatus::Succeeded => RunStatus::Succeeded,
            run::RunStatus::Failed => RunStatus::Failed,
            run::RunStatus::Cancelled => RunStatus::Cancelled,
            run::RunStatus::Skipped => RunStatus::Skipped,
        }
    }
}

/// Where a stage or job is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Never reached: the run ended before it.
    Skipped,
}

impl StepStatus {
    /// A step's status as shown: one still pending when its run ended was skipped.
    fn of(status: run::StepStatus, run: run::RunStatus) -> Self {
        match status {
            run::StepStatus::Pending if run.is_final() => StepStatus::Skipped,
            run::StepStatus::Pending => StepStatus::Pending,
            run::StepStatus::Running => StepStatus::Running,
            run::StepStatus::Succeeded => StepStatus::Succeeded,
            run::StepStatus::Failed => StepStatus::Failed,
        }
    }
}

/// One execution of setup, patch or teardown for one environment.
pub struct Run(pub RunView);

impl Run {
    pub fn is_final(&self) -> bool {
        self.0.state.status.is_final()
    }
}

#[Object]
impl Run {
    /// The run's opaque global ID.
    async fn id(&self) -> ID {
        NodeId::Run(self.0.state.run_id).to_id()
    }
    /// Setup, patch or teardown.
    async fn kind(&self) -> RunKind {
        match self.0.state.kind {
            DomainRunKind::Setup => RunKind::Setup,
            DomainRunKind::Patch => RunKind::Patch,
            DomainRunKind::Teardown => RunKind::Teardown,
        }
    }
    /// Where the run is.
    async fn status(&self) -> RunStatus {
        self.0.state.status.into()
    }
    /// The environment it runs for.
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Environment> {
        load_environment(ctx, &self.0.state.application, &self.0.state.environment)
            .await?
            .ok_or_else(|| internal("loading a run's environment", "environment missing"))
    }
    /// The commit it deploys; null for a teardown.
    async fn commit(&self) -> Option<&str> {
        self.0.state.commit.as_ref().map(|c| c.as_str())
    }
    /// Why it was requested.
    async fn reason(&self) -> &str {
        &self.0.state.reason
    }
    /// Who requested it (e.g. `token:ci`, `github:alice`, `shiplog:drift`).
    async fn triggered_by(&self) -> Option<&str> {
        self.0.triggered_by(1)
    }
    /// The attempt: 1, then one more per retry.
    async fn attempt(&self) -> i32 {
        self.0.state.attempt as i32
    }
    /// Why it failed, if it did.
    async fn error(&self) -> Option<&str> {
        self.0.state.error.as_deref()
    }
    /// Its stages, in order, with their jobs.
    async fn stages(&self) -> Vec<Stage> {
        let run = self.0.state.status;
        self.0.state.stages.iter().map(|stage| Stage { stage: stage.clone(), run }).collect()
    }
    /// When it was queued.
    async fn queued_at(&self) -> DateTime<Utc> {
        self.0.state.queued_at
    }
    /// When a worker started it.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.state.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.state.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        self.0.duration_ms().map(BigInt)
    }
    /// Its log lines, in order. `after` is a line's cursor.
    #[graphql(complexity = "first.unwrap_or(super::page::DEFAULT_PAGE) as usize * child_complexity")]
    async fn logs(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> async_graphql::Result<Connection<String, LogLine, EmptyFields>> {
        let window = Window::new(after, None, first, None)?;
        let after = match &window.after {
            Some(key) => key.parse::<i64>().map_err(|_| coded("BAD_USER_INPUT", "`after` is not a log cursor"))?,
            None => 0,
        };
        let lines = shiplog_engine::logs::read(api(ctx).store().pool(), self.0.state.run_id, after, window.fetch())
            .await
            .map_err(|e| internal("reading logs", e))?;
        Ok(window.plain(lines.into_iter().map(|l| (l.seq.to_string(), LogLine(l))).collect()))
    }
}

/// A stage of a run: its jobs run after the previous stage succeeded.
pub struct Stage {
    stage: StageState,
    /// The run's status, which says whether a pending stage was skipped.
    run: run::RunStatus,
}

#[Object]
impl Stage {
    /// e.g. `build`, `release`, `deploy`, or a template's own stage.
    async fn name(&self) -> &str {
        &self.stage.name
    }
    /// Where the stage is.
    async fn status(&self) -> StepStatus {
        StepStatus::of(self.stage.status, self.run)
    }
    /// The attempt that last ran it.
    async fn attempt(&self) -> i32 {
        self.stage.attempt as i32
    }
    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.stage.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.stage.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        duration_ms(self.stage.started_at, self.stage.finished_at).map(BigInt)
    }
    /// Its jobs.
    async fn jobs(&self) -> Vec<Job> {
        self.stage.jobs.iter().map(|job| Job { job: job.clone(), run: self.run }).collect()
    }
}

/// One job of a stage: a build, a release command, a roll-out, a hook.
pub struct Job {
    job: JobState,
    /// The run's status, which says whether a pending job was skipped.
    run: run::RunStatus,
}

#[Object]
impl Job {
    /// e.g. `build-web`, `release-migrate`, `deploy-web`.
    async fn name(&self) -> &str {
        &self.job.job.name
    }
    /// Where the job is.
    async fn status(&self) -> StepStatus {
        StepStatus::of(self.job.status, self.run)
    }
    /// The attempt that last ran it.
    async fn attempt(&self) -> i32 {
        self.job.attempt as i32
    }
    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.job.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.job.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        duration_ms(self.job.started_at, self.job.finished_at).map(BigInt)
    }
    /// The exit code of its command, when it ran one and failed.
    async fn exit_code(&self) -> Option<i32> {
        self.job.exit_code
    }
    /// Why it failed.
    async fn error(&self) -> Option<&str> {
        self.job.error.as_deref()
    }
    /// What it produced (a build's image).
    async fn output(&self) -> Option<&str> {
        self.job.output.as_deref()
    }
}

/// Which output a log line came from.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by shiplog itself (e.g. "pulling image").
    System,
}

/// One line of a run's log.
pub struct LogLine(pub EngineLogLine);

#[Object]
impl LogLine {
    /// Resume after this line with `logs(after:)` or `runLogs(after:)`.
    async fn cursor(&self) -> String {
        super::ids::encode_cursor(&self.0.seq.to_string())
    }
    /// Its number in the run's log, from 1.
    async fn number(&self) -> BigInt {
        BigInt(self.0.seq)
    }
    /// The job that wrote it.
    async fn job(&self) -> &str {
        &self.0.job
    }
    /// When it was written.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// Which output it came from.
    async fn stream(&self) -> LogStream {
        match self.0.stream {
            EngineLogStream::Stdout => LogStream::Stdout,
            EngineLogStream::Stderr => LogStream::Stderr,
            EngineLogStream::System => LogStream::System,
        }
    }
    /// The text, without its line ending.
    async fn text(&self) -> &str {
        &self.0.line
    }
}

/// An immutable fact of the event log, exactly as stored and hashed.
pub struct Event(pub RecordedEvent);

#[Object]
impl Event {
    /// The event's opaque global ID.
    async fn id(&self) -> ID {
        NodeId::Event(self.0.cursor.position).to_id()
    }
    /// Resume after this event with `events(after:)` or an events subscription.
    async fn cursor(&self) -> String {
        super::ids::encode_cursor(&self.0.cursor.to_string())
    }
    /// Its position in the global order.
    async fn position(&self) -> BigInt {
        BigInt(self.0.cursor.position)
    }
    /// The stream it belongs to, e.g. `environment-hello.staging`.
    async fn stream_id(&self) -> &str {
        &self.0.stream_id
    }
    /// Its version within the stream, from 1.
    async fn version(&self) -> BigInt {
        BigInt(self.0.version as i64)
    }
    /// Its type, e.g. `RunRequested`.
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// When it was recorded (database clock, UTC).
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }
    /// Who caused it, from the metadata.
    async fn actor(&self) -> Option<String> {
        serde_json::from_str::<shiplog_engine::store::Metadata>(&self.0.metadata).ok().and_then(|m| m.actor)
    }
    /// The payload as JSON.
    async fn payload(&self) -> async_graphql::Result<Json<serde_json::Value>> {
        Ok(Json(serde_json::from_str(&self.0.payload).map_err(|e| internal("decoding an event payload", e))?))
    }
    /// The metadata as JSON (actor, request id, correlation and causation ids).
    async fn metadata(&self) -> async_graphql::Result<Json<serde_json::Value>> {
        Ok(Json(serde_json::from_str(&self.0.metadata).map_err(|e| internal("decoding event metadata", e))?))
    }
    /// The payload exactly as hashed (canonical JSON text).
    async fn payload_text(&self) -> &str {
        &self.0.payload
    }
    /// SHA-256 of the previous event of its stream, lowercase hex.
    async fn prev_hash(&self) -> String {
        hex::encode(self.0.prev_hash)
    }
    /// SHA-256 over this event and `prevHash` (see docs/audit.md), lowercase hex.
    async fn hash(&self) -> String {
        hex::encode(self.0.hash)
    }
}

/// Parses an event cursor from `Event.cursor`.
pub fn parse_event_cursor(cursor: &str) -> async_graphql::Result<Cursor> {
    decode_cursor(cursor)
        .and_then(|key| key.parse().ok())
        .ok_or_else(|| coded("BAD_USER_INPUT", "not an event cursor; use an event's `cursor` field"))
}

/// Which events a list or subscription selects.
#[derive(async_graphql::InputObject, Default, Clone)]
#[graphql(name = "EventFilter")]
pub struct EventSelection {
    /// Only these streams, e.g. `environment-hello.staging`.
    pub streams: Option<Vec<String>>,
    /// Only these event types, e.g. `RunRequested`.
    pub types: Option<Vec<String>>,
    /// Only events recorded at or after this moment.
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this moment.
    pub until: Option<DateTime<Utc>>,
}

/// Events in the global order from the log itself (gap-free).
pub async fn list_events(
    ctx: &Context<'_>,
    filter: &EventFilter,
    window: Window,
) -> async_graphql::Result<Connection<String, Event, EmptyFields>> {
    let after = match &window.after {
        Some(key) => key.parse().map_err(|_| coded("BAD_USER_INPUT", "`after` is not an event cursor"))?,
        None => Cursor::START,
    };
    let events = api(ctx)
        .store()
        .read_filtered(after, filter, window.fetch() as usize)
        .await
        .map_err(|e| internal("reading events", e))?;
    Ok(window.plain(events.into_iter().map(|e| (e.cursor.to_string(), Event(e))).collect()))
}

/// Checks stream ids given by a client.
pub fn stream_ids(streams: Vec<String>) -> async_graphql::Result<Vec<String>> {
    for s in &streams {
        s.parse::<StreamId>().map_err(|e| coded("BAD_USER_INPUT", e.to_string()))?;
    }
    Ok(streams)
}

/// A bearer token of the API; its secret is never shown again after creation.
pub struct ApiToken(pub auth::ApiToken);

/// What a token's holder may do.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read applications, environments, runs and logs.
    Viewer,
    /// Read, and deploy, set up, tear down, retry and cancel (production only with `production`).
    Deployer,
    /// Everything.
    Admin,
    /// Read, and the whole event history and its verification.
    Auditor,
}

impl From<auth::Role> for Role {
    fn from(r: auth::Role) -> Self {
        match r {
            auth::Role::Viewer => Role::Viewer,
            auth::Role::Deployer => Role::Deployer,
            auth::Role::Admin => Role::Admin,
            auth::Role::Auditor => Role::Auditor,
        }
    }
}

impl From<Role> for auth::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Viewer => auth::Role::Viewer,
            Role::Deployer => auth::Role::Deployer,
            Role::Admin => auth::Role::Admin,
            Role::Auditor => auth::Role::Auditor,
        }
    }
}

#[Object]
impl ApiToken {
    /// The token's opaque global ID.
    async fn id(&self) -> ID {
        NodeId::ApiToken(self.0.id).to_id()
    }
    /// A name saying who or what uses it.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// What its holder may do.
    async fn role(&self) -> Role {
        self.0.role.into()
    }
    /// Whether it may change production environments.
    async fn production(&self) -> bool {
        self.0.production
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Who created it.
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    /// When it was revoked; null while it works.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}
