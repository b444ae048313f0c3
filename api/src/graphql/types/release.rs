//! `Release`: a CalVer-tagged version of an application and the component pins
//! it records (`docs/releases.md`). Folded from the application's events, so it
//! has no projection lag.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use shiplog_engine::domain::Name;
use shiplog_engine::domain::release::{self, Pin};
use uuid::Uuid;

use super::{Application, load_application};
use crate::graphql::ids::NodeId;
use crate::graphql::page::{self, Counted, Page};
use crate::graphql::{api, internal};

/// A release of an application: a CalVer tag `YYYY.MM.N` and one pin per component.
pub struct Release {
    pub application: Name,
    pub release: release::Release,
}

/// Whether a release may ever be deployed.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_engine::domain::release::ReleaseStatus")]
pub enum ReleaseStatus {
    /// Deployable.
    Accepted,
    /// Its tag is not CalVer: recorded, never deployed.
    Rejected,
}

/// What a component of a release is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_engine::domain::release::ComponentKind")]
pub enum ComponentKind {
    /// A service of the release's own application.
    Service,
    /// Another shiplog application.
    Application,
}

/// How a component was pinned.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum PinKind {
    /// By an accepted release of the component.
    Release,
    Tag,
    Commit,
}

/// One pinned component of a release.
#[derive(SimpleObject)]
pub struct ReleaseComponent {
    /// The service or application name.
    name: String,
    kind: ComponentKind,
    /// How it was pinned.
    pinned_by: PinKind,
    /// The release tag, git tag or commit it was pinned by.
    pin: String,
    /// The commit of the component's repository the pin names, on its production branch.
    commit: String,
    /// For a pinned release: its ID.
    release_id: Option<ID>,
}

#[Object]
impl Release {
    /// The release's opaque global ID.
    pub(super) async fn id(&self) -> ID {
        NodeId::Release(self.application.clone(), self.release.id).to_id()
    }
    /// As written; a rejected release's tag need not be CalVer.
    async fn tag(&self) -> &str {
        &self.release.tag
    }
    async fn status(&self) -> ReleaseStatus {
        self.release.status.into()
    }
    /// Why it was rejected; null when accepted.
    async fn reason(&self) -> Option<&str> {
        self.release.reason.as_deref()
    }
    /// The commit of the application's own repository it deploys.
    async fn commit(&self) -> &str {
        self.release.commit.as_str()
    }
    /// Its pinned components, in the order given.
    async fn components(&self) -> Vec<ReleaseComponent> {
        let mut components = Vec::with_capacity(self.release.components.len());
        for c in &self.release.components {
            let (pinned_by, pin) = match &c.pin {
                Pin::Release(tag) => (PinKind::Release, tag.clone()),
                Pin::Tag(tag) => (PinKind::Tag, tag.clone()),
                Pin::Commit(commit) => (PinKind::Commit, commit.to_string()),
            };
            let release_id = c.release.and_then(|id| pinned_release_id(&c.name, id));
            components.push(ReleaseComponent {
                name: c.name.clone(),
                kind: c.kind.into(),
                pinned_by,
                pin,
                commit: c.commit.to_string(),
                release_id,
            });
        }
        components
    }
    /// What the release is about, as its author wrote it.
    async fn notes(&self) -> &str {
        &self.release.notes
    }
    /// The issues it closes (`#123`), in number order.
    async fn linked_issues(&self) -> Vec<i64> {
        self.release.linked_issues.iter().map(|n| *n as i64).collect()
    }
    /// When it was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.release.created_at
    }
    /// The application it is a release of.
    async fn application(&self, ctx: &Context<'_>) -> async_graphql::Result<Application> {
        load_application(ctx, &self.application)
            .await?
            .ok_or_else(|| internal("loading a release's application", "application missing"))
    }
}

/// The ID of release `id` of the application `component` names.
fn pinned_release_id(component: &str, id: Uuid) -> Option<ID> {
    component.parse::<Name>().ok().map(|app| NodeId::Release(app, id).to_id())
}

/// Every release of `app` as its events say now, oldest first.
async fn releases_of(ctx: &Context<'_>, app: &Name) -> async_graphql::Result<Vec<release::Release>> {
    let (application, _) =
        api(ctx).lifecycle.application(app).await.map_err(|e| internal("loading an application", e))?;
    Ok(application.releases)
}

/// Release `id` of `app`; null when there is none.
pub async fn load_release(ctx: &Context<'_>, app: &Name, id: Uuid) -> async_graphql::Result<Option<Release>> {
    let found = releases_of(ctx, app).await?.into_iter().find(|r| r.id == id);
    Ok(found.map(|release| Release { application: app.clone(), release }))
}

/// The releases of `app`, newest first, keyed by their place in the application's
/// history (which never changes).
pub async fn list_releases(
    ctx: &Context<'_>,
    scope: &str,
    app: &Name,
    page: Page,
) -> async_graphql::Result<Connection<String, Release, Counted>> {
    let releases = releases_of(ctx, app).await?;
    let total = releases.len() as i64;
    let rows: Vec<(String, Release)> = releases
        .into_iter()
        .enumerate()
        .rev()
        .map(|(i, release)| (format!("{i:010}"), Release { application: app.clone(), release }))
        .collect();
    let position = |key: &Option<String>| key.as_ref().and_then(|k| rows.iter().position(|(row, _)| row == k));
    let start = position(&page.after).map_or(0, |i| i + 1);
    let end = position(&page.before).unwrap_or(rows.len()).max(start);
    let fetch = page.limit + 1;
    let window: Vec<(String, Release)> = if page.backwards {
        rows.into_iter().take(end).skip(start).rev().take(fetch).collect()
    } else {
        rows.into_iter().take(end).skip(start).take(fetch).collect()
    };
    Ok(page::connection(scope, &page, window, Counted { total_count: total }))
}
