//! What a merge request's event does, whichever forge reports it: the decision is
//! the domain's (`domain::merge_request::decide`, from the template's
//! `merge_requests`); this module carries it out on the environments of every
//! application whose repository the request belongs to, as `push` does for pushes.

use chrono::{DateTime, Utc};

use crate::domain::environment::{Environment, EnvironmentKind, EnvironmentSpec, Tracking};
use crate::domain::merge_request::{self, Decision, MergeRequest, MergeRequestAction, Target};
use crate::domain::{DomainError, Name};
use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::push::{PushOutcome, live, template_of};
use crate::store::Metadata;

/// A merge request's event as a forge delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequestEvent {
    pub request: MergeRequest,
    /// Every address the forge gives for the target repository (see `push::Push`).
    pub repository_urls: Vec<String>,
    /// Where the event was reported, e.g. `github delivery 72d3162e`; goes into run reasons.
    pub via: String,
}

/// How many names a request's preview may take: `pr-12`, then `pr-12-2` … when an
/// earlier preview of the request (closed, then reopened) was torn down.
const PREVIEW_NAMES: u32 = 20;

impl Lifecycle {
    /// Acts on a merge request's event for every application whose repository it
    /// targets and whose template has `merge_requests` (see
    /// `domain::merge_request::decide`):
    ///
    /// - ready, deploying to staging: the application's staging environment deploys
    ///   the request's head and follows its source branch until it is closed or
    ///   merged (a later request takes staging over);
    /// - ready, deploying previews: the request's preview (`pr-<n>`, `mr-<n>`) is
    ///   created with the rule's TTL if needed and deploys the head;
    /// - a draft or `WIP:` request: recorded as skipped, with why, on the application;
    /// - closed or merged: the preview is torn down; staging is handed back to the
    ///   branch it tracks and deploys that branch's head.
    ///
    /// Deploys are once per commit and environment (a push and a `synchronize` of the
    /// same commit make one run). Reasons name the request, its author and
    /// [`MergeRequestEvent::via`]. As for pushes, a failure on one environment is in
    /// [`PushOutcome::failed`] and does not stop the others.
    #[tracing::instrument(skip_all, fields(via = %event.via, number = event.request.info.number), err)]
    pub async fn handle_merge_request(
        &self,
        event: &MergeRequestEvent,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<PushOutcome, LifecycleError> {
        let mut outcome = PushOutcome::default();
        for (app, application) in self.applications_of(&event.repository_urls).await? {
            let rule = template_of(&application)?.and_then(|template| template.merge_requests);
            let acting = ActingOn { app: &app, event, metadata, now };
            match merge_request::decide(rule.as_ref(), &event.request) {
                Decision::Nothing => {}
                Decision::Skip { reason } => {
                    let request = &event.request;
                    self.skip_merge_request(&app, &request.info, &request.head, &reason, metadata, now).await?;
                    outcome.skipped.push((app.clone(), reason));
                }
                Decision::Deploy(target) => self.deploy_request(&acting, target, &mut outcome).await?,
                Decision::Release(target) => self.release_request(&acting, target, &mut outcome).await?,
            }
        }
        Ok(outcome)
    }

    async fn deploy_request(
        &self,
        acting: &ActingOn<'_>,
        target: Target,
        outcome: &mut PushOutcome,
    ) -> Result<(), LifecycleError> {
        let (app, request) = (acting.app, &acting.event.request);
        let environments = self.environments_of(app).await?;
        let name = match target {
            Target::Staging => match staging_of(&environments) {
                Some(name) => name,
                None => {
                    let error = DomainError::NotFound(format!("a staging environment of application {app}"));
                    outcome.fail(app, &"staging".parse().expect("a valid name"), error.into());
                    return Ok(());
                }
            },
            Target::Preview { name, ttl_seconds } => {
                let Some(name) = preview_for(&environments, &name, &request.info.source_branch) else {
                    let error = DomainError::AlreadyExists(format!("every preview name for {}", acting.reference()));
                    outcome.fail(app, &name, error.into());
                    return Ok(());
                };
                let spec = EnvironmentSpec {
                    application: app.clone(),
                    name: name.clone(),
                    kind: EnvironmentKind::Preview,
                    tracking: Tracking::Branch(request.info.source_branch.clone()),
                    ttl_seconds,
                    drift_mode: Default::default(),
                };
                match self.create_preview(&spec, acting.metadata, acting.now).await {
                    Ok(true) => outcome.created.push((app.clone(), name.clone())),
                    Ok(false) => {}
                    Err(error) => {
                        outcome.fail(app, &name, error);
                        return Ok(());
                    }
                }
                name
            }
        };
        let (commit, info) = (Some(request.head.clone()), Some(request.info.clone()));
        let result = self.request_deploy(app, &name, commit, info, &acting.reason(), acting.metadata, acting.now).await;
        outcome.record(app, &name, result);
        Ok(())
    }

    async fn release_request(
        &self,
        acting: &ActingOn<'_>,
        target: Target,
        outcome: &mut PushOutcome,
    ) -> Result<(), LifecycleError> {
        let (app, number) = (acting.app, acting.event.request.info.number);
        let environments = self.environments_of(app).await?;
        let deploying = environments
            .iter()
            .filter(|env| live(env) && env.merge_request.as_ref().is_some_and(|r| r.number == number))
            .filter_map(|env| env.created.as_ref());
        let (reason, metadata, now) = (acting.reason(), acting.metadata, acting.now);
        for created in deploying.collect::<Vec<_>>() {
            let name = &created.name;
            match (&target, created.kind) {
                (Target::Preview { .. }, EnvironmentKind::Preview) => {
                    let result = self.request_teardown(app, name, &reason, metadata, now).await;
                    outcome.record(app, name, result.map(Some));
                }
                (Target::Staging, _) => {
                    let back = match &created.tracking {
                        Tracking::Branch(branch) => format!("{reason}; back to branch {branch}"),
                        Tracking::Tag(tag) => format!("{reason}; back to tag {tag}"),
                    };
                    match self.detach_merge_request(app, name, number, &reason, metadata, now).await {
                        // The head of what it tracks, resolved now.
                        Ok(_) => {
                            let result = self.request_deploy(app, name, None, None, &back, metadata, now).await;
                            outcome.record(app, name, result);
                        }
                        Err(error) => outcome.fail(app, name, error),
                    }
                }
                // The rule changed from staging to previews meanwhile: hand staging back.
                (Target::Preview { .. }, _) => {
                    if let Err(error) = self.detach_merge_request(app, name, number, &reason, metadata, now).await {
                        outcome.fail(app, name, error);
                    }
                }
            }
        }
        Ok(())
    }
}

/// One request event acted on for one application.
struct ActingOn<'a> {
    app: &'a Name,
    event: &'a MergeRequestEvent,
    metadata: &'a Metadata,
    now: DateTime<Utc>,
}

impl ActingOn<'_> {
    fn reference(&self) -> String {
        let info = &self.event.request.info;
        info.forge.reference(info.number)
    }

    /// `pull request #12 "Add login" by alice: opened by alice (github delivery …)`.
    fn reason(&self) -> String {
        let request = &self.event.request;
        let what = match request.action {
            MergeRequestAction::Opened => "opened",
            MergeRequestAction::Pushed => "new commits pushed",
            MergeRequestAction::Edited => "edited",
            MergeRequestAction::Closed => "closed",
            MergeRequestAction::Merged => "merged",
        };
        format!(
            "{} \"{}\" by {}: {what} by {} ({})",
            self.reference(),
            request.info.title,
            request.info.author,
            request.actor,
            self.event.via
        )
    }
}

/// The application's staging environment: the live one named `staging`, else the
/// first live one of kind staging.
fn staging_of(environments: &[Environment]) -> Option<Name> {
    let staging: Vec<&EnvironmentSpec> = environments
        .iter()
        .filter(|env| live(env))
        .filter_map(|env| env.created.as_ref())
        .filter(|created| created.kind == EnvironmentKind::Staging)
        .collect();
    let named = staging.iter().find(|created| created.name.as_str() == "staging");
    named.or(staging.first()).map(|created| created.name.clone())
}

/// The request's preview name: `first` when free or already the request's live
/// preview of `branch`, else `first-2`, `first-3` … (a torn-down preview keeps its
/// name, streams are never removed).
fn preview_for(environments: &[Environment], first: &Name, branch: &str) -> Option<Name> {
    let candidates =
        std::iter::once(first.clone()).chain((2..=PREVIEW_NAMES).filter_map(|n| format!("{first}-{n}").parse().ok()));
    for name in candidates {
        let existing = environments.iter().find(|env| env.created.as_ref().is_some_and(|c| c.name == name));
        match existing {
            None => return Some(name),
            Some(env) if live(env) => {
                let ours = env.created.as_ref().is_some_and(|c| {
                    c.kind == EnvironmentKind::Preview && c.tracking == Tracking::Branch(branch.to_owned())
                });
                return ours.then_some(name);
            }
            Some(_) => continue,
        }
    }
    None
}
