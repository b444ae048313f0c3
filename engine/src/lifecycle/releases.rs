//! Releases (`docs/releases.md`): what the repositories and the other applications
//! say about each pin is found here (git and other streams: IO), then the
//! application's own `CreateRelease` decides; and an accepted release is deployed
//! through the one run-request path.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Ask, Lifecycle, LifecycleError, Requested, decided};
use crate::domain::application::{Application, ApplicationCommand};
use crate::domain::environment::{Environment, EnvironmentCommand};
use crate::domain::release::{
    self, CalVer, ComponentFinding, ComponentKind, Finding, NewRelease, Pin, Release, deployable,
};
use crate::domain::{Aggregate, DomainError, Name, StreamRef};
use crate::git::{self, GitError};
use crate::store::Metadata;
use crate::template::ApplicationTemplate;

/// What `releaseCreate` asks for: a tag, one pin per component, notes and the
/// issues it closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    pub tag: String,
    /// Component name (a service of the application, or another application) and pin.
    pub components: Vec<(String, Pin)>,
    pub notes: String,
    pub linked_issues: Vec<u64>,
}

impl Lifecycle {
    /// Records a release of `app`: accepted, or rejected (and recorded) when its
    /// tag is not CalVer. Refused, with nothing recorded, when the tag is taken or
    /// a pin is not acceptable (the component is named).
    pub async fn create_release(
        &self,
        app: &Name,
        asked: &ReleaseRequest,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Release, LifecycleError> {
        let release_id = Uuid::new_v4();
        let stream = StreamRef::Application(app.clone());
        self.with_retries(|| async {
            let (application, version) = self.existing_application(app).await?;
            let template = template_of(&application)?;
            let mut components = Vec::with_capacity(asked.components.len());
            for (name, pin) in &asked.components {
                components.push(self.find(app, &application, &template, name, pin).await?);
            }
            let production_branch = template.production_branch().to_owned();
            let pins_a_service = components.iter().any(|c| c.kind == Some(ComponentKind::Service));
            let head = match pins_a_service {
                true => None,
                false => git::branch_head(&application.repository, &production_branch).await?,
            };
            let new = NewRelease {
                id: release_id,
                tag: asked.tag.clone(),
                components,
                production_branch,
                head,
                notes: asked.notes.clone(),
                linked_issues: asked.linked_issues.clone(),
                now,
            };
            let events = application.decide(ApplicationCommand::CreateRelease(new))?;
            let (application, _) = self.append(&stream, application, version, &events, metadata).await?;
            Ok(application.releases.into_iter().find(|r| r.id == release_id).expect("the release just recorded"))
        })
        .await
    }

    /// The tag `releaseNext` suggests for `app` in the month of `now`.
    pub async fn next_release_tag(&self, app: &Name, now: DateTime<Utc>) -> Result<CalVer, LifecycleError> {
        let (application, _) = self.existing_application(app).await?;
        Ok(release::next_tag(&application.releases, now))
    }

    /// Deploys the accepted release `tag` of `app` to environment `env` (a patch at
    /// its commit, or a setup when one is needed first). Refused for a rejected,
    /// unknown or held release, and, unless `rollback`, for one older than what the
    /// environment serves or is about to. A rollback deploys an earlier release and
    /// holds the one it rolls back from.
    #[allow(clippy::too_many_arguments)]
    pub async fn request_release(
        &self,
        app: &Name,
        env: &Name,
        tag: &str,
        rollback: bool,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Requested, LifecycleError> {
        let (application, _) = self.existing_application(app).await?;
        let release = release_of(&application, app, &format!("{tag:?}"), |r| r.tag == tag)?;
        let deployed = deployable(release)?;
        let ask = Ask::Release { release: deployed, rollback, images: Vec::new() };
        self.request(app, env, ask, Some(release.commit.clone()), reason, metadata, now).await.map(decided)
    }

    /// Releases the hold a rollback put on release `tag` in environment `env`.
    pub async fn unhold_release(
        &self,
        app: &Name,
        env: &Name,
        tag: &str,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        let parsed: CalVer = tag
            .parse()
            .map_err(|_| DomainError::NotFound(format!("a hold on release {tag:?} in environment {app}/{env}")))?;
        let command = || EnvironmentCommand::Unhold { tag: parsed, reason: reason.to_owned(), now };
        self.execute::<Environment>(&StreamRef::environment(app, env), command, metadata).await.map(drop)
    }

    pub(super) async fn existing_application(&self, app: &Name) -> Result<(Application, u64), LifecycleError> {
        let (application, version) = self.application(app).await?;
        if application.name.is_none() {
            return Err(DomainError::NotFound(format!("application {app}")).into());
        }
        Ok((application, version))
    }

    /// What the pin of component `name` names: a service of `app` first, else
    /// another application of that name.
    async fn find(
        &self,
        app: &Name,
        application: &Application,
        template: &ApplicationTemplate,
        name: &str,
        pin: &Pin,
    ) -> Result<ComponentFinding, LifecycleError> {
        let other = match name.parse::<Name>() {
            Ok(other) if &other != app && !template.services.contains_key(name) => {
                Some(self.application(&other).await?.0).filter(|o| o.name.is_some())
            }
            _ => None,
        };
        let (kind, repository, production_branch) = match &other {
            _ if template.services.contains_key(name) => {
                (ComponentKind::Service, application.repository.clone(), template.production_branch().to_owned())
            }
            Some(other) => {
                let branch = match template_of(other) {
                    Ok(t) => t.production_branch().to_owned(),
                    Err(_) => release::DEFAULT_PRODUCTION_BRANCH.to_owned(),
                };
                (ComponentKind::Application, other.repository.clone(), branch)
            }
            None => {
                // Neither: the domain refuses it by name and looks no further.
                let finding = Finding::Release(None);
                let (name, pin) = (name.to_owned(), pin.clone());
                return Ok(ComponentFinding { name, kind: None, pin, production_branch: String::new(), finding });
            }
        };
        let finding = match pin {
            Pin::Release(tag) => Finding::Release(other.and_then(|o| o.releases.into_iter().find(|r| &r.tag == tag))),
            Pin::Tag(tag) => match git::resolve(&repository, &format!("refs/tags/{tag}")).await {
                Ok(commit) => {
                    let on_production_branch = git::branch_contains(&repository, &production_branch, &commit).await?;
                    Finding::Commit { commit, on_production_branch }
                }
                Err(GitError::Failed { .. }) => Finding::NoSuchTag,
                Err(e) => return Err(e.into()),
            },
            Pin::Commit(commit) => Finding::Commit {
                on_production_branch: git::branch_contains(&repository, &production_branch, commit).await?,
                commit: commit.clone(),
            },
        };
        Ok(ComponentFinding { name: name.to_owned(), kind: Some(kind), pin: pin.clone(), production_branch, finding })
    }
}

/// The application's current template, parsed from its event.
fn template_of(application: &Application) -> Result<ApplicationTemplate, LifecycleError> {
    let (_, _, template) = application.template.as_ref().ok_or(DomainError::NoTemplate)?;
    serde_json::from_value(template.clone()).map_err(|e| LifecycleError::Corrupt(e.to_string()))
}

/// The release of `application` that `matches` picks (`what` names it in the
/// error), or NOT_FOUND.
pub(super) fn release_of<'a>(
    application: &'a Application,
    app: &Name,
    what: &str,
    matches: impl Fn(&Release) -> bool,
) -> Result<&'a Release, DomainError> {
    application
        .releases
        .iter()
        .find(|r| matches(r))
        .ok_or_else(|| DomainError::NotFound(format!("release {what} of application {app}")))
}
