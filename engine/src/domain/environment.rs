//! An environment: an application deployed somewhere, with its kind, what it
//! tracks, its expiry, what its last setup applied, and the runs queued for it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CommitId, DomainError, Name, RunKind, TemplateVersions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentKind {
    Preview,
    Staging,
    Production,
}

/// What an environment follows: the head of a branch, or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracking {
    Branch(String),
    Tag(String),
}

/// How a run ended, as the environment records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// Lifecycle facts of one environment. Log lines and job details live in the
/// run's own stream; this stream stays small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EnvironmentEvent {
    EnvironmentCreated {
        application: Name,
        name: Name,
        kind: EnvironmentKind,
        tracking: Tracking,
        /// Seconds the environment lives after creation and after each deploy.
        ttl_seconds: Option<u64>,
        created_at: DateTime<Utc>,
    },
    RunRequested {
        run_id: Uuid,
        kind: RunKind,
        /// The commit to deploy; `None` for teardown.
        commit: Option<CommitId>,
        reason: String,
        /// For setup: the templates it applies.
        templates: Option<TemplateVersions>,
        requested_at: DateTime<Utc>,
    },
    /// A queued run will never start: a newer request made it pointless.
    RunSuperseded {
        run_id: Uuid,
        by: Uuid,
        reason: String,
    },
    RunStarted {
        run_id: Uuid,
        started_at: DateTime<Utc>,
    },
    RunFinished {
        run_id: Uuid,
        outcome: RunOutcome,
        /// Images by service name, for a successful setup or patch.
        images: Vec<(String, String)>,
        finished_at: DateTime<Utc>,
    },
}

impl EnvironmentEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            EnvironmentEvent::EnvironmentCreated { .. } => "EnvironmentCreated",
            EnvironmentEvent::RunRequested { .. } => "RunRequested",
            EnvironmentEvent::RunSuperseded { .. } => "RunSuperseded",
            EnvironmentEvent::RunStarted { .. } => "RunStarted",
            EnvironmentEvent::RunFinished { .. } => "RunFinished",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRun {
    pub run_id: Uuid,
    pub kind: RunKind,
    pub commit: Option<CommitId>,
    pub templates: Option<TemplateVersions>,
    pub started: bool,
}

/// Where an environment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created; no setup has succeeded yet.
    Pending,
    /// The last setup or patch succeeded.
    Ready,
    /// The last run failed; the previous version (if any) keeps serving.
    Failed,
    TornDown,
}

/// The environment folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Environment {
    pub created: Option<Created>,
    pub status: Option<Status>,
    /// The templates the last successful setup applied.
    pub applied: Option<TemplateVersions>,
    /// The commit and images now deployed.
    pub commit: Option<CommitId>,
    pub images: Vec<(String, String)>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Runs requested and not yet finished or superseded, oldest first.
    pub queue: Vec<QueuedRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub application: Name,
    pub name: Name,
    pub kind: EnvironmentKind,
    pub tracking: Tracking,
    pub ttl_seconds: Option<u64>,
}

pub enum EnvironmentCommand {
    Create {
        application: Name,
        name: Name,
        kind: EnvironmentKind,
        tracking: Tracking,
        ttl_seconds: Option<u64>,
        now: DateTime<Utc>,
    },
    /// Set up (again): infrastructure, then deploy `commit` with `templates`.
    RequestSetup {
        run_id: Uuid,
        commit: CommitId,
        templates: TemplateVersions,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Deploy `commit` onto the existing infrastructure. `current` are the
    /// application's templates now: a patch is refused while they differ from
    /// what the last setup applied.
    RequestPatch {
        run_id: Uuid,
        commit: CommitId,
        current: TemplateVersions,
        reason: String,
        now: DateTime<Utc>,
    },
    RequestTeardown {
        run_id: Uuid,
        reason: String,
        now: DateTime<Utc>,
    },
    /// A worker claimed the run.
    MarkStarted {
        run_id: Uuid,
        now: DateTime<Utc>,
    },
    MarkFinished {
        run_id: Uuid,
        outcome: RunOutcome,
        images: Vec<(String, String)>,
        now: DateTime<Utc>,
    },
    /// Tear down if the environment's time is up.
    Expire {
        run_id: Uuid,
        now: DateTime<Utc>,
    },
    /// Queue a failed run again for its retry.
    Requeue {
        run_id: Uuid,
        kind: RunKind,
        commit: Option<CommitId>,
        templates: Option<TemplateVersions>,
        reason: String,
        now: DateTime<Utc>,
    },
}

impl Environment {
    pub fn stream_id(application: &Name, environment: &Name) -> String {
        format!("environment-{application}.{environment}")
    }

    fn label(&self) -> String {
        self.created
            .as_ref()
            .map_or_else(|| "environment".into(), |c| format!("environment {}/{}", c.application, c.name))
    }

    /// Why the environment needs a setup before it can be patched, if it does.
    pub fn setup_reasons(&self, current: &TemplateVersions) -> Vec<String> {
        let Some(applied) = &self.applied else {
            return vec!["no setup has succeeded yet".into()];
        };
        let mut reasons = Vec::new();
        if applied.template_digest != current.template_digest {
            reasons.push(format!(
                "application template changed: v{} → v{}",
                applied.template_version, current.template_version
            ));
        }
        if applied.variables_digest != current.variables_digest {
            reasons.push(format!(
                "environment-variable template changed: v{} → v{}",
                applied.variables_version, current.variables_version
            ));
        }
        reasons
    }

    fn teardown_pending(&self) -> bool {
        self.queue.iter().any(|q| q.kind == RunKind::Teardown)
    }

    /// Queued runs that a new request of `kind` makes pointless: they have not
    /// started and would deploy something older.
    fn superseded_by(&self, kind: RunKind) -> Vec<Uuid> {
        self.queue
            .iter()
            .filter(|q| !q.started)
            .filter(|q| match kind {
                RunKind::Teardown => true,
                RunKind::Setup => q.kind == RunKind::Setup || q.kind == RunKind::Patch,
                RunKind::Patch => q.kind == RunKind::Patch,
            })
            .map(|q| q.run_id)
            .collect()
    }

    fn request(
        &self,
        run_id: Uuid,
        kind: RunKind,
        commit: Option<CommitId>,
        templates: Option<TemplateVersions>,
        reason: String,
        now: DateTime<Utc>,
    ) -> Vec<EnvironmentEvent> {
        let superseded = self.superseded_by(kind).into_iter().map(|old| EnvironmentEvent::RunSuperseded {
            run_id: old,
            by: run_id,
            reason: match kind {
                RunKind::Teardown => "the environment is being torn down".into(),
                _ => "outdated: a newer deploy was requested".into(),
            },
        });
        let requested = EnvironmentEvent::RunRequested { run_id, kind, commit, reason, templates, requested_at: now };
        superseded.chain(std::iter::once(requested)).collect()
    }

    fn queued(&self, run_id: Uuid) -> Result<&QueuedRun, DomainError> {
        self.queue.iter().find(|q| q.run_id == run_id).ok_or_else(|| DomainError::RunState {
            run: run_id.to_string(),
            status: "not queued".into(),
            action: "starting or finishing it",
        })
    }
}

pub fn decide(env: &Environment, command: EnvironmentCommand) -> Result<Vec<EnvironmentEvent>, DomainError> {
    use EnvironmentCommand as C;
    if let C::Create { application, name, kind, tracking, ttl_seconds, now } = command {
        if env.created.is_some() {
            return Err(DomainError::AlreadyExists(env.label()));
        }
        return Ok(vec![EnvironmentEvent::EnvironmentCreated {
            application,
            name,
            kind,
            tracking,
            ttl_seconds,
            created_at: now,
        }]);
    }
    if env.created.is_none() {
        return Err(DomainError::NotFound(env.label()));
    }
    let torn_down = env.status == Some(Status::TornDown);
    match command {
        C::Create { .. } => unreachable!("handled above"),
        C::RequestSetup { run_id, commit, templates, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() {
                return Err(DomainError::TeardownPending(env.label()));
            }
            Ok(env.request(run_id, RunKind::Setup, Some(commit), Some(templates), reason, now))
        }
        C::RequestPatch { run_id, commit, current, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() {
                return Err(DomainError::TeardownPending(env.label()));
            }
            // A setup still queued will apply the current templates first; the
            // patch may queue behind it.
            let setup_queued = env.queue.iter().any(|q| {
                q.kind == RunKind::Setup
                    && q.templates.as_ref().is_some_and(|t| {
                        t.template_digest == current.template_digest && t.variables_digest == current.variables_digest
                    })
            });
            let reasons = env.setup_reasons(&current);
            if !reasons.is_empty() && !setup_queued {
                return Err(DomainError::SetupRequired(reasons));
            }
            Ok(env.request(run_id, RunKind::Patch, Some(commit), None, reason, now))
        }
        C::RequestTeardown { run_id, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() {
                return Err(DomainError::TeardownPending(env.label()));
            }
            Ok(env.request(run_id, RunKind::Teardown, None, None, reason, now))
        }
        C::MarkStarted { run_id, now } => {
            let queued = env.queued(run_id)?;
            if queued.started {
                return Ok(vec![]);
            }
            Ok(vec![EnvironmentEvent::RunStarted { run_id, started_at: now }])
        }
        C::MarkFinished { run_id, outcome, images, now } => {
            env.queued(run_id)?;
            Ok(vec![EnvironmentEvent::RunFinished { run_id, outcome, images, finished_at: now }])
        }
        C::Requeue { run_id, kind, commit, templates, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() && kind != RunKind::Teardown {
                return Err(DomainError::TeardownPending(env.label()));
            }
            Ok(vec![EnvironmentEvent::RunRequested { run_id, kind, commit, reason, templates, requested_at: now }])
        }
        C::Expire { run_id, now } => {
            let expired = env.expires_at.is_some_and(|at| at <= now);
            if torn_down || env.teardown_pending() || !expired {
                return Ok(vec![]);
            }
            Ok(env.request(run_id, RunKind::Teardown, None, None, "expired".into(), now))
        }
    }
}

pub fn evolve(mut env: Environment, event: &EnvironmentEvent) -> Environment {
    match event {
        EnvironmentEvent::EnvironmentCreated { application, name, kind, tracking, ttl_seconds, created_at } => {
            env.created = Some(Created {
                application: application.clone(),
                name: name.clone(),
                kind: *kind,
                tracking: tracking.clone(),
                ttl_seconds: *ttl_seconds,
            });
            env.status = Some(Status::Pending);
            env.expires_at = ttl_seconds.map(|ttl| *created_at + Duration::seconds(ttl as i64));
        }
        EnvironmentEvent::RunRequested { run_id, kind, commit, templates, .. } => {
            env.queue.push(QueuedRun {
                run_id: *run_id,
                kind: *kind,
                commit: commit.clone(),
                templates: templates.clone(),
                started: false,
            });
        }
        EnvironmentEvent::RunSuperseded { run_id, .. } => env.queue.retain(|q| q.run_id != *run_id),
        EnvironmentEvent::RunStarted { run_id, .. } => {
            if let Some(q) = env.queue.iter_mut().find(|q| q.run_id == *run_id) {
                q.started = true;
            }
        }
        EnvironmentEvent::RunFinished { run_id, outcome, images, finished_at } => {
            let Some(index) = env.queue.iter().position(|q| q.run_id == *run_id) else { return env };
            let run = env.queue.remove(index);
            match (run.kind, outcome) {
                (RunKind::Teardown, RunOutcome::Succeeded) => {
                    env.status = Some(Status::TornDown);
                    env.commit = None;
                    env.images.clear();
                    env.expires_at = None;
                }
                (_, RunOutcome::Succeeded) => {
                    env.status = Some(Status::Ready);
                    if run.kind == RunKind::Setup {
                        env.applied = run.templates;
                    }
                    env.commit = run.commit;
                    env.images = images.clone();
                    // Each deploy extends the environment's life by its TTL.
                    if let Some(ttl) = env.created.as_ref().and_then(|c| c.ttl_seconds) {
                        env.expires_at = Some(*finished_at + Duration::seconds(ttl as i64));
                    }
                }
                (_, RunOutcome::Failed) => env.status = Some(Status::Failed),
                (_, RunOutcome::Cancelled) => {}
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::run::tests::commit;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn versions(template: u64, variables: u64) -> TemplateVersions {
        TemplateVersions {
            template_version: template,
            template_digest: format!("sha256:t{template}"),
            variables_version: variables,
            variables_digest: format!("sha256:v{variables}"),
        }
    }

    fn run(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn created(ttl: Option<u64>) -> EnvironmentEvent {
        EnvironmentEvent::EnvironmentCreated {
            application: "shop".parse().unwrap(),
            name: "staging".parse().unwrap(),
            kind: EnvironmentKind::Staging,
            tracking: Tracking::Branch("main".into()),
            ttl_seconds: ttl,
            created_at: t(0),
        }
    }

    fn requested(
        n: u128,
        kind: RunKind,
        c: Option<CommitId>,
        templates: Option<TemplateVersions>,
        at: i64,
    ) -> EnvironmentEvent {
        EnvironmentEvent::RunRequested {
            run_id: run(n),
            kind,
            commit: c,
            reason: "asked".into(),
            templates,
            requested_at: t(at),
        }
    }

    fn finished(n: u128, outcome: RunOutcome, at: i64) -> EnvironmentEvent {
        EnvironmentEvent::RunFinished {
            run_id: run(n),
            outcome,
            images: vec![("web".into(), format!("img-{n}"))],
            finished_at: t(at),
        }
    }

    /// given(events).when(command) → the events decided, or the refusal.
    fn given(events: &[EnvironmentEvent]) -> Environment {
        events.iter().fold(Environment::default(), evolve)
    }

    /// An environment whose setup (run 1, templates v1/v1, commit a) succeeded.
    fn set_up() -> Vec<EnvironmentEvent> {
        vec![
            created(Some(3600)),
            requested(1, RunKind::Setup, Some(commit('a')), Some(versions(1, 1)), 1),
            EnvironmentEvent::RunStarted { run_id: run(1), started_at: t(2) },
            finished(1, RunOutcome::Succeeded, 10),
        ]
    }

    fn patch(n: u128, c: char, current: TemplateVersions) -> EnvironmentCommand {
        EnvironmentCommand::RequestPatch {
            run_id: run(n),
            commit: commit(c),
            current,
            reason: "asked".into(),
            now: t(20),
        }
    }

    #[test]
    fn a_patch_is_refused_until_a_setup_has_succeeded() {
        let env = given(&[created(None)]);
        assert_eq!(
            decide(&env, patch(2, 'b', versions(1, 1))),
            Err(DomainError::SetupRequired(vec!["no setup has succeeded yet".into()]))
        );
        let failed_setup = given(&[
            created(None),
            requested(1, RunKind::Setup, Some(commit('a')), Some(versions(1, 1)), 1),
            finished(1, RunOutcome::Failed, 5),
        ]);
        assert!(matches!(decide(&failed_setup, patch(2, 'b', versions(1, 1))), Err(DomainError::SetupRequired(_))));
    }

    #[test]
    fn a_patch_after_setup_is_queued() {
        let env = given(&set_up());
        assert_eq!(
            decide(&env, patch(2, 'b', versions(1, 1))).unwrap(),
            vec![requested(2, RunKind::Patch, Some(commit('b')), None, 20)]
        );
    }

    #[test]
    fn changed_templates_require_setup_and_say_why() {
        let env = given(&set_up());
        assert_eq!(
            decide(&env, patch(2, 'b', versions(2, 3))),
            Err(DomainError::SetupRequired(vec![
                "application template changed: v1 → v2".into(),
                "environment-variable template changed: v1 → v3".into(),
            ]))
        );
        // Once a setup with the new templates is queued, a patch may queue behind it.
        let mut events = set_up();
        events.push(requested(2, RunKind::Setup, Some(commit('b')), Some(versions(2, 3)), 15));
        assert!(decide(&given(&events), patch(3, 'c', versions(2, 3))).is_ok());
    }

    #[test]
    fn a_newer_patch_supersedes_a_queued_one_but_not_a_running_one() {
        let mut events = set_up();
        events.push(requested(2, RunKind::Patch, Some(commit('b')), None, 11));
        let decided = decide(&given(&events), patch(3, 'c', versions(1, 1))).unwrap();
        assert_eq!(
            decided[0],
            EnvironmentEvent::RunSuperseded {
                run_id: run(2),
                by: run(3),
                reason: "outdated: a newer deploy was requested".into()
            }
        );
        assert_eq!(decided[1], requested(3, RunKind::Patch, Some(commit('c')), None, 20));

        events.push(EnvironmentEvent::RunStarted { run_id: run(2), started_at: t(12) });
        let decided = decide(&given(&events), patch(3, 'c', versions(1, 1))).unwrap();
        assert_eq!(decided, vec![requested(3, RunKind::Patch, Some(commit('c')), None, 20)]);
    }

    #[test]
    fn teardown_cancels_queued_runs_and_blocks_new_deploys() {
        let mut events = set_up();
        events.push(requested(2, RunKind::Patch, Some(commit('b')), None, 11));
        let env = given(&events);
        let decided =
            decide(&env, EnvironmentCommand::RequestTeardown { run_id: run(3), reason: "deleted".into(), now: t(20) })
                .unwrap();
        assert_eq!(
            decided[0],
            EnvironmentEvent::RunSuperseded {
                run_id: run(2),
                by: run(3),
                reason: "the environment is being torn down".into()
            }
        );
        events.extend(decided);
        let env = given(&events);
        assert_eq!(env.queue.iter().map(|q| q.run_id).collect::<Vec<_>>(), vec![run(3)]);
        assert!(matches!(decide(&env, patch(4, 'd', versions(1, 1))), Err(DomainError::TeardownPending(_))));

        events.push(finished(3, RunOutcome::Succeeded, 30));
        let env = given(&events);
        assert_eq!(env.status, Some(Status::TornDown));
        assert!(matches!(decide(&env, patch(4, 'd', versions(1, 1))), Err(DomainError::TornDown(_))));
    }

    #[test]
    fn an_expired_environment_is_torn_down_once() {
        let env = given(&set_up());
        // The successful setup at t=10 extended the 1h TTL to t=3610.
        assert_eq!(env.expires_at, Some(t(3610)));
        let expire = |now| EnvironmentCommand::Expire { run_id: run(9), now: t(now) };
        assert_eq!(decide(&env, expire(3609)).unwrap(), vec![]);
        let decided = decide(&env, expire(3610)).unwrap();
        assert_eq!(
            decided,
            vec![EnvironmentEvent::RunRequested {
                run_id: run(9),
                kind: RunKind::Teardown,
                commit: None,
                reason: "expired".into(),
                templates: None,
                requested_at: t(3610)
            }]
        );
        let mut events = set_up();
        events.extend(decided);
        assert_eq!(decide(&given(&events), expire(4000)).unwrap(), vec![]);
    }

    #[test]
    fn a_failed_patch_keeps_the_deployed_commit_and_images() {
        let mut events = set_up();
        events.push(requested(2, RunKind::Patch, Some(commit('b')), None, 11));
        events.push(finished(2, RunOutcome::Failed, 12));
        let env = given(&events);
        assert_eq!(env.status, Some(Status::Failed));
        assert_eq!(env.commit, Some(commit('a')));
        assert_eq!(env.images, vec![("web".to_string(), "img-1".to_string())]);
        assert_eq!(env.applied, Some(versions(1, 1)));
    }

    #[test]
    fn creating_twice_is_refused() {
        let env = given(&[created(None)]);
        let again = EnvironmentCommand::Create {
            application: "shop".parse().unwrap(),
            name: "staging".parse().unwrap(),
            kind: EnvironmentKind::Staging,
            tracking: Tracking::Branch("main".into()),
            ttl_seconds: None,
            now: t(1),
        };
        assert_eq!(decide(&env, again), Err(DomainError::AlreadyExists("environment shop/staging".into())));
    }
}
