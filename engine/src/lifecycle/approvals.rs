//! Deployments that wait for approval (`docs/releases.md`), and promotion: a
//! release deployed to production with the images that ran it in staging. The
//! run's own decision (`domain::approval`) says who may approve or reject; here
//! the outcome reaches the work queue and the environment.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::releases::release_of;
use super::{Ask, Change, Lifecycle, LifecycleError, Requested, append_all, decided};
use crate::domain::environment::{Environment, EnvironmentCommand, EnvironmentKind, RunOutcome, Status};
use crate::domain::release::deployable;
use crate::domain::run::{self, Run, RunCommand, RunEvent, RunStatus};
use crate::domain::{Aggregate, DomainError, Name, StreamRef};
use crate::run_queue;
use crate::store::Metadata;

/// Who approves or rejects a deployment: the actor recorded (e.g. `token:alice`)
/// and the role they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub by: String,
    pub role: String,
}

impl Lifecycle {
    /// Approves a deployment waiting for approval; once it has the approvals its
    /// environment's rule requires, workers may claim it. Returns the run after.
    pub async fn approve_deployment(
        &self,
        run_id: Uuid,
        approver: &Approver,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Run, LifecycleError> {
        self.with_retries(|| async {
            let (run, version) = self.existing_run(run_id).await?;
            let command = RunCommand::Approve { by: approver.by.clone(), role: approver.role.clone(), now };
            let events = run::decide(&run, command)?;
            let after = events.iter().fold(run.clone(), run::evolve);
            let mut tx = self.store.pool().begin().await?;
            append_all(&self.store, &mut tx, &[Change::new(&StreamRef::Run(run_id), version, &events, metadata)])
                .await?;
            if after.status == RunStatus::Queued {
                run_queue::approved(&mut tx, run_id).await?;
            }
            self.commit(tx).await?;
            Ok(after)
        })
        .await
    }

    /// Rejects a deployment waiting for approval: it ends without running, and its
    /// environment no longer queues it. Returns the run after.
    pub async fn reject_deployment(
        &self,
        run_id: Uuid,
        approver: &Approver,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Run, LifecycleError> {
        self.with_retries(|| async {
            let (run, version) = self.existing_run(run_id).await?;
            let command = RunCommand::Reject {
                by: approver.by.clone(),
                role: approver.role.clone(),
                reason: reason.to_owned(),
                now,
            };
            let events = run::decide(&run, command)?;
            self.end_waiting(run, version, &events, RunOutcome::Rejected, metadata, now).await
        })
        .await
    }

    /// Ends a run that waits for approval with `events` (its rejection or
    /// cancellation), on the run, its environment and the queue together: no
    /// worker will ever claim it to record its end.
    pub(super) async fn end_waiting(
        &self,
        run: Run,
        version: u64,
        events: &[RunEvent],
        outcome: RunOutcome,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Run, LifecycleError> {
        let env_stream = StreamRef::environment(&run.application, &run.environment);
        let (env, env_version) = self.load::<Environment>(&env_stream).await?;
        let finished = EnvironmentCommand::MarkFinished { run_id: run.run_id, outcome, images: Vec::new(), now };
        let env_events = if env.queue.iter().any(|q| q.run_id == run.run_id) { env.decide(finished)? } else { vec![] };
        let run_id = run.run_id;
        let after = events.iter().fold(run, run::evolve);
        let changes = [
            Change::new(&StreamRef::Run(run_id), version, events, metadata),
            Change::new(&env_stream, env_version, &env_events, metadata),
        ];
        let mut tx = self.store.pool().begin().await?;
        append_all(&self.store, &mut tx, &changes).await?;
        run_queue::done(&mut tx, run_id).await?;
        self.commit(tx).await?;
        Ok(after)
    }

    /// Promotes release `release_id` of `app` from environment `from`, which runs
    /// it, to the production environment `to` (the application's only one when
    /// `None`): a release deploy of the very images `from` runs, which are not
    /// built again. Refused when `from` does not run the release's commit.
    #[allow(clippy::too_many_arguments)]
    pub async fn promote_release(
        &self,
        app: &Name,
        release_id: Uuid,
        from: &Name,
        to: Option<&Name>,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Requested, LifecycleError> {
        let (application, _) = self.existing_application(app).await?;
        let release = release_of(&application, app, &release_id.to_string(), |r| r.id == release_id)?;
        let deployed = deployable(release)?;
        let refused = |environment: &Name, reason: String| DomainError::NotPromotable {
            tag: release.tag.clone(),
            environment: format!("environment {app}/{environment}"),
            reason,
        };
        let (source, _) = self.environment(app, from).await?;
        if source.created.is_none() {
            return Err(DomainError::NotFound(format!("environment {app}/{from}")).into());
        }
        let runs = match &source.commit {
            Some(commit) if *commit == release.commit => None,
            Some(commit) => {
                Some(format!("it runs commit {}, not the release's {}", commit.short(), release.commit.short()))
            }
            None => Some("it runs nothing yet".to_owned()),
        };
        if let Some(reason) = runs {
            return Err(refused(from, reason).into());
        }
        let target = self.promotion_target(app, from, to).await.map_err(|reason| refused(from, reason))?;
        let reason = format!("promotion of release {} from {app}/{from}", release.tag);
        let ask = Ask::Release { release: deployed, rollback: false, images: source.images.clone() };
        let requested = self.request(app, &target, ask, Some(release.commit.clone()), &reason, metadata, now).await;
        requested.map(decided)
    }

    /// The production environment a promotion from `from` deploys to: `to`, or the
    /// application's only one; why not otherwise.
    async fn promotion_target(&self, app: &Name, from: &Name, to: Option<&Name>) -> Result<Name, String> {
        let production = |env: &Environment| {
            env.created.as_ref().is_some_and(|c| c.kind == EnvironmentKind::Production)
                && env.status != Some(Status::TornDown)
        };
        let environments = self.environments_of(app).await.map_err(|e| e.to_string())?;
        let named = |env: &Environment| env.created.as_ref().map(|c| c.name.clone());
        let target = match to {
            Some(to) => {
                let env = environments.iter().find(|env| named(env).as_ref() == Some(to));
                match env {
                    Some(env) if production(env) => to.clone(),
                    Some(_) => return Err(format!("{app}/{to} is not a production environment")),
                    None => return Err(format!("environment {app}/{to} does not exist")),
                }
            }
            None => {
                let all: Vec<Name> = environments.iter().filter(|env| production(env)).filter_map(named).collect();
                match &all[..] {
                    [one] => one.clone(),
                    [] => return Err(format!("application {app} has no production environment to promote to")),
                    several => {
                        let names: Vec<&str> = several.iter().map(Name::as_str).collect();
                        return Err(format!(
                            "application {app} has several production environments ({}); name one",
                            names.join(", ")
                        ));
                    }
                }
            }
        };
        if &target == from {
            return Err("a release is promoted to another environment than the one it runs in".into());
        }
        Ok(target)
    }

    async fn existing_run(&self, run_id: Uuid) -> Result<(Run, u64), LifecycleError> {
        self.run(run_id).await?.ok_or_else(|| DomainError::NotFound(format!("run {run_id}")).into())
    }
}
