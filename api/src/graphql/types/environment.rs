//! `Environment`: an application deployed somewhere, with its status, sync
//! status, health and drift, and the enums that describe them.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use shiplog_engine::domain::Name;
use shiplog_engine::domain::environment::Tracking;
use shiplog_engine::store::StreamId;
use shiplog_projections::lifecycle::EnvironmentView;
use shiplog_projections::read::{self, environments};
use shiplog_projections::time_travel::{self, AsOf};

use super::merge_request::MergeRequest;
use super::{Application, Event, Run, load_application_at, load_run_at, name, parse_event_cursor};
use crate::graphql::ids::NodeId;
use crate::graphql::page::{self, Counted, Page};
use crate::graphql::{api, coded, internal};

/// An environment: an application deployed somewhere, as it is now or, under
/// `stateAt`, as it was then (`.1`): everything reached from it is then as of
/// the same point, or refused where that history is not kept.
pub struct Environment(pub EnvironmentView, pub AsOf);

impl Environment {
    /// The environment as it is now.
    pub fn now(view: EnvironmentView) -> Environment {
        Environment(view, AsOf::Latest)
    }

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
    pub(super) async fn id(&self) -> ID {
        NodeId::Environment(self.application_name(), self.env_name()).to_id()
    }
    /// Name, unique within its application.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The application it deploys.
    async fn application(&self, ctx: &Context<'_>) -> async_graphql::Result<Application> {
        load_application_at(ctx, &self.application_name(), self.1)
            .await?
            .ok_or_else(|| internal("loading an environment's application", "application missing"))
    }
    /// Preview, staging or production.
    async fn kind(&self) -> EnvironmentKind {
        self.0.kind.into()
    }
    /// Where the environment is in its life.
    async fn status(&self) -> EnvironmentStatus {
        self.0.status.into()
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
    /// The tag of the release deployed now, when what runs is a release.
    async fn release(&self) -> Option<String> {
        self.0.state.release.as_ref().map(|r| r.tag.to_string())
    }
    /// Releases held since the environment was rolled back from them: nothing
    /// deploys them here until the hold is released.
    async fn held_releases(&self) -> Vec<String> {
        self.0.state.held.iter().map(|r| r.tag.to_string()).collect()
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
        self.0.sync_status.into()
    }
    /// Why it needs a setup, e.g. "application template changed: v1 → v2".
    async fn sync_reasons(&self) -> &[String] {
        &self.0.sync_reasons
    }
    /// How its services are, as last observed.
    async fn health(&self) -> Health {
        self.0.health.into()
    }
    /// Runtime drift as last recorded by the reconciler.
    async fn drift(&self) -> Drift {
        let d = &self.0.drift;
        Drift { verdict: d.verdict.into(), reasons: d.reasons.clone(), since: d.since }
    }
    /// The pull or merge request it deploys, while it deploys one.
    async fn merge_request(&self) -> Option<MergeRequest> {
        self.0.state.merge_request.as_ref().map(MergeRequest::from)
    }
    /// Version of the application template the last successful setup applied.
    async fn applied_template_version(&self) -> Option<i32> {
        self.0.state.applied.as_ref().map(|a| a.template_version as i32)
    }
    /// The most recent run (under `stateAt`, the run as it was then).
    async fn last_run(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Run>> {
        match &self.0.last_run {
            Some(last) => load_run_at(ctx, last.run_id, self.1).await,
            None => Ok(None),
        }
    }
    /// Its runs, newest first. Not offered under `stateAt` (the list is kept as
    /// it is now): a `BAD_USER_INPUT` error there; `lastRun` is as of then.
    #[graphql(complexity = "page::cost(first, last, child_complexity)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Run, Counted>> {
        not_in_the_past(self.1, "runs")?;
        let scope = format!("runs:{}/{}", self.0.application, self.0.name);
        let page = page::window(&scope, after, before, first, last)?;
        page::numeric_keys(&page)?;
        let listed = read::runs::of_environment(api(ctx).store().pool(), &self.0.application, &self.0.name, &page)
            .await
            .map_err(|e| internal("listing runs", e))?;
        Ok(page::counted(&scope, &page, listed, Run::now))
    }
    /// Its events (lifecycle facts, not log lines), oldest first; under
    /// `stateAt`, those up to that point.
    #[graphql(complexity = "page::cost(first, None, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Event, EmptyFields>> {
        let stream =
            StreamId::from(&shiplog_engine::domain::StreamRef::environment(&self.application_name(), &self.env_name()));
        let scope = format!("events:{stream}");
        let page = page::window(&scope, after, None, first, None)?;
        let after = match &page.after {
            Some(key) => {
                key.parse::<u64>().map_err(|_| coded("BAD_USER_INPUT", "`after` is not a cursor of this list"))?
            }
            None => 0,
        };
        // By version within the stream: every committed event, in order, at once.
        let events = api(ctx)
            .store()
            .read_stream(&stream, after + 1, page.fetch() as usize)
            .await
            .map_err(|e| internal("reading events", e))?;
        let as_of = self.1;
        let events = events.into_iter().take_while(|e| as_of.includes(e.cursor, e.recorded_at));
        Ok(page::plain(&scope, &page, events.map(|e| (e.version.to_string(), Event(e))).collect()))
    }
    /// The environment as it was right after the event at `cursor` (an event's
    /// `cursor`), or at `time`; null if it did not exist yet. Give exactly one.
    /// Everything under it is as of that point (`lastRun`, `application`, a
    /// run's `environment`, `events` up to there), or refused with
    /// `BAD_USER_INPUT` where only the present is kept (`runs`, a run's `logs`).
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
        Ok(view.map(|view| Environment(view, as_of)))
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

/// An environment as its events say now.
pub async fn load_environment(ctx: &Context<'_>, app: &Name, env: &Name) -> async_graphql::Result<Option<Environment>> {
    load_environment_at(ctx, app, env, AsOf::Latest).await
}

/// An environment as its events say at `as_of`.
pub async fn load_environment_at(
    ctx: &Context<'_>,
    app: &Name,
    env: &Name,
    as_of: AsOf,
) -> async_graphql::Result<Option<Environment>> {
    let view = time_travel::environment_at(api(ctx).store(), app, env, as_of)
        .await
        .map_err(|e| internal("loading an environment", e))?;
    Ok(view.map(|view| Environment(view, as_of)))
}

/// Refuses `field` under `stateAt`: it only knows the present.
pub fn not_in_the_past(as_of: AsOf, field: &str) -> async_graphql::Result<()> {
    match as_of {
        AsOf::Latest => Ok(()),
        _ => Err(coded(
            "BAD_USER_INPUT",
            format!("`{field}` is not offered under `stateAt`: only its present is kept; ask outside `stateAt`"),
        )),
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

impl From<EnvironmentFilter> for environments::Filter {
    fn from(f: EnvironmentFilter) -> Self {
        environments::Filter {
            application: f.application,
            kind: f.kind.map(Into::into),
            status: f.status.map(Into::into),
            drift: f.drift.map(Into::into),
        }
    }
}

/// Environments from the read model, ordered by application and name.
pub async fn list_environments(
    ctx: &Context<'_>,
    scope: &str,
    filter: &environments::Filter,
    page: Page,
) -> async_graphql::Result<Connection<String, Environment, Counted>> {
    let listed = read::environments::list(api(ctx).store().pool(), filter, &page)
        .await
        .map_err(|e| internal("listing environments", e))?;
    Ok(page::counted(scope, &page, listed, Environment::now))
}

/// The kind of an environment.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_engine::domain::environment::EnvironmentKind")]
pub enum EnvironmentKind {
    /// Short-lived, usually one per branch or merge request.
    Preview,
    /// Tracks a branch and deploys its latest commit.
    Staging,
    /// Deploys accepted releases; changing it needs production rights.
    Production,
}

/// Where an environment is in its life.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_engine::domain::environment::Status")]
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

/// Whether an environment runs the templates its application has now.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_projections::lifecycle::SyncStatus")]
pub enum SyncStatus {
    Synced,
    /// A template changed since the last setup (see `syncReasons`): it needs a setup.
    OutOfSync,
    /// Torn down: nothing to compare.
    Unknown,
}

/// How the environment's services are, as last observed.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_projections::lifecycle::HealthView")]
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
#[graphql(remote = "shiplog_projections::lifecycle::DriftVerdictView")]
pub enum DriftVerdict {
    InSync,
    Drifted,
    /// The runtime could not be observed; never taken for in sync.
    Unknown,
}

/// What the reconciler does when it finds the environment drifted.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_engine::domain::environment::DriftMode")]
pub enum DriftMode {
    /// Record the drift; a person repairs it with `environmentSetup`.
    Warn,
    /// Request one setup per desired state automatically.
    Auto,
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
    pub(super) service: String,
    /// The image reference or id.
    pub(super) image: String,
}
