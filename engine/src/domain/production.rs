//! What a production environment takes (`docs/releases.md`): accepted releases
//! only, never a commit or a branch, and never a release older than the one it
//! serves or is about to. Part of the environment's decision (`environment.rs`
//! calls these); kept apart so the release rules read in one place.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::environment::{Environment, EnvironmentCommand, EnvironmentEvent, EnvironmentKind, Status};
use super::release::{CalVer, DeployedRelease};
use super::{CommitId, DomainError, RunKind, TemplateVersions};

/// Refuses a setup, patch or forge deploy of a commit or branch on a production
/// environment: it deploys releases only ([`EnvironmentCommand::DeployRelease`]).
pub(super) fn refuse_unreleased(env: &Environment, command: &EnvironmentCommand) -> Result<(), DomainError> {
    use EnvironmentCommand as C;
    let production = env.created.as_ref().is_some_and(|c| c.kind == EnvironmentKind::Production);
    let unreleased = matches!(command, C::RequestSetup { .. } | C::RequestPatch { .. } | C::RequestDeploy { .. });
    if production && unreleased { Err(DomainError::ReleaseRequired(env.label())) } else { Ok(()) }
}

/// What [`EnvironmentCommand::DeployRelease`] asks: run `run_id` deploys `release`
/// at its `commit`; `current` are the application's templates now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDeploy {
    pub run_id: Uuid,
    pub release: DeployedRelease,
    pub commit: CommitId,
    pub current: TemplateVersions,
    pub reason: String,
    pub now: DateTime<Utc>,
    /// A rollback: an earlier release than the one serving, which is held from now on.
    pub rollback: bool,
}

/// The release deploy: a patch at the release's commit, or a setup when the
/// environment needs one first; refused when a newer release serves or is queued.
pub(super) fn deploy_release(env: &Environment, deploy: ReleaseDeploy) -> Result<Vec<EnvironmentEvent>, DomainError> {
    let ReleaseDeploy { run_id, release, commit, current, reason, now, rollback } = deploy;
    if env.status == Some(Status::TornDown) {
        return Err(DomainError::TornDown(env.label()));
    }
    if env.teardown_pending() {
        return Err(DomainError::TeardownPending(env.label()));
    }
    if env.held.iter().any(|held| held.tag == release.tag) {
        return Err(DomainError::ReleaseHeld { environment: env.label(), tag: release.tag.to_string() });
    }
    let (held, reason) = match rollback {
        true => {
            let refused = |reason: String| DomainError::RollbackRefused { environment: env.label(), reason };
            let serving = env.release.clone().ok_or_else(|| refused("it serves no release".into()))?;
            if release.tag >= serving.tag {
                let why = format!("a rollback deploys an earlier release than {}, which serves", serving.tag);
                return Err(refused(why));
            }
            let reason = format!("rollback from {} to {}: {reason}", serving.tag, release.tag);
            let why = format!("rolled back to {}", release.tag);
            (vec![EnvironmentEvent::ReleaseHeld { release: serving, reason: why, held_at: now }], reason)
        }
        false => {
            let newest =
                env.queue.iter().filter_map(|q| q.release.as_ref()).chain(env.release.as_ref()).max_by_key(|r| r.tag);
            if let Some(newer) = newest.filter(|newer| newer.tag > release.tag) {
                return Err(DomainError::OutdatedRelease {
                    environment: env.label(),
                    tag: release.tag.to_string(),
                    newer: newer.tag.to_string(),
                });
            }
            (vec![], reason)
        }
    };
    // The release deploys not yet started are superseded by this one: a setup
    // among them is no reason to patch behind it, so this one sets up instead.
    let mut after_superseding = env.clone();
    after_superseding.queue.retain(|q| q.started || q.release.is_none());
    let why = after_superseding.patch_refusals(&current);
    let requested = if why.is_empty() {
        env.request(run_id, RunKind::Patch, Some(commit), None, reason, now, None)
    } else {
        let reason = format!("{reason}; a setup is needed first: {}", why.join("; "));
        env.request(run_id, RunKind::Setup, Some(commit), Some(current), reason, now, None)
    };
    Ok(held.into_iter().chain(deploying(requested, Some(release))).collect())
}

/// Whether what serves is a release held since a rollback from it (a rollback that
/// failed): nothing automatic deploys it again, drift repair included.
pub(super) fn serves_held(env: &Environment) -> bool {
    env.release.as_ref().is_some_and(|serving| env.held.iter().any(|held| held.tag == serving.tag))
}

/// Releases the hold a rollback put on release `tag`.
pub(super) fn unhold(
    env: &Environment,
    tag: CalVer,
    reason: String,
    now: DateTime<Utc>,
) -> Result<Vec<EnvironmentEvent>, DomainError> {
    let held = env.held.iter().find(|held| held.tag == tag);
    let held = held.ok_or_else(|| DomainError::NotFound(format!("a hold on release {tag} in {}", env.label())))?;
    Ok(vec![EnvironmentEvent::ReleaseUnheld { release: held.clone(), reason, unheld_at: now }])
}

/// `events` with the run they request marked as deploying `release`.
pub(super) fn deploying(mut events: Vec<EnvironmentEvent>, release: Option<DeployedRelease>) -> Vec<EnvironmentEvent> {
    for event in &mut events {
        if let EnvironmentEvent::RunRequested { release: deploys, .. } = event {
            deploys.clone_from(&release);
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::testing::given;
    use crate::domain::environment::{DriftMode, EnvironmentSpec, Observation, RunOutcome, Tracking};
    use crate::domain::run::tests::commit;

    const LABEL: &str = "environment shop/production";

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn versions(template: u64) -> TemplateVersions {
        TemplateVersions {
            template_version: template,
            template_digest: format!("sha256:t{template}"),
            variables_version: 0,
            variables_digest: String::new(),
        }
    }

    /// A release's id follows from its tag here, as one tag names one release.
    fn release(tag: &str) -> DeployedRelease {
        let tag: CalVer = tag.parse().unwrap();
        DeployedRelease { id: Uuid::from_u128(u128::from(tag.month()) * 1000 + u128::from(tag.iteration())), tag }
    }

    fn created(kind: EnvironmentKind) -> EnvironmentCommand {
        EnvironmentCommand::Create {
            created: EnvironmentSpec {
                application: "shop".parse().unwrap(),
                name: if kind == EnvironmentKind::Production { "production" } else { "staging" }.parse().unwrap(),
                kind,
                tracking: Tracking::Branch("production".into()),
                ttl_seconds: None,
                drift_mode: DriftMode::Auto,
            },
            now: t(0),
        }
    }

    fn deploy(run: u128, tag: &str, c: char) -> EnvironmentCommand {
        EnvironmentCommand::DeployRelease(ReleaseDeploy {
            run_id: Uuid::from_u128(run),
            release: release(tag),
            commit: commit(c),
            current: versions(1),
            reason: format!("release {tag}"),
            now: t(run as i64),
            rollback: false,
        })
    }

    fn requested(run: u128, kind: RunKind, tag: &str, c: char, reason: &str) -> EnvironmentEvent {
        EnvironmentEvent::RunRequested {
            run_id: Uuid::from_u128(run),
            kind,
            commit: Some(commit(c)),
            reason: reason.into(),
            templates: (kind == RunKind::Setup).then(|| versions(1)),
            requested_at: t(run as i64),
            auto_for: None,
            release: Some(release(tag)),
        }
    }

    fn finished(run: u128) -> EnvironmentEvent {
        EnvironmentEvent::RunFinished {
            run_id: Uuid::from_u128(run),
            outcome: RunOutcome::Succeeded,
            images: vec![],
            finished_at: t(run as i64),
        }
    }

    #[test]
    fn a_production_environment_refuses_commits_and_branches_and_names_why() {
        let production = given::<Environment>([]).when(created(EnvironmentKind::Production)).then_go_on();
        let refused = DomainError::ReleaseRequired(LABEL.into());
        assert_eq!(
            refused.to_string(),
            "environment shop/production is a production environment: it deploys accepted releases only, not a \
             commit or branch; deploy a release instead"
        );
        let (run_id, now, reason) = (Uuid::from_u128(9), t(5), "asked".to_owned());
        production
            .clone()
            .when(EnvironmentCommand::RequestSetup {
                run_id,
                commit: commit('a'),
                templates: versions(1),
                reason: reason.clone(),
                now,
            })
            .then_err(refused.clone())
            .when(EnvironmentCommand::RequestPatch {
                run_id,
                commit: commit('a'),
                current: versions(1),
                reason: reason.clone(),
                now,
            })
            .then_err(refused.clone())
            .when(EnvironmentCommand::RequestDeploy {
                run_id,
                commit: commit('a'),
                current: versions(1),
                merge_request: None,
                reason,
                now,
            })
            .then_err(refused);
    }

    #[test]
    fn a_release_sets_up_a_new_environment_then_patches_and_is_what_it_serves() {
        let production = given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.1", 'a'))
            .then([requested(
                1,
                RunKind::Setup,
                "2023.06.1",
                'a',
                "release 2023.06.1; a setup is needed first: no setup has succeeded yet",
            )])
            .and([finished(1)]);
        assert_eq!(production.state().release, Some(release("2023.06.1")));
        assert_eq!(production.state().commit, Some(commit('a')));
        let production = production
            .when(deploy(2, "2023.06.2", 'b'))
            .then([requested(2, RunKind::Patch, "2023.06.2", 'b', "release 2023.06.2")])
            .and([finished(2)]);
        assert_eq!(production.state().release, Some(release("2023.06.2")));
    }

    #[test]
    fn a_release_older_than_the_one_serving_or_queued_is_refused() {
        let production = given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.2", 'a'))
            .then_go_on()
            .and([finished(1)]);
        let outdated = |newer: &str| DomainError::OutdatedRelease {
            environment: LABEL.into(),
            tag: "2023.06.1".into(),
            newer: newer.into(),
        };
        let production = production.when(deploy(2, "2023.06.1", 'b')).then_err(outdated("2023.06.2"));
        // Queued, not yet serving: still newer.
        let production = production.when(deploy(3, "2023.07.1", 'c')).then_types(&["RunRequested"]);
        production.when(deploy(4, "2023.06.1", 'b')).then_err(outdated("2023.07.1"));
        assert_eq!(
            outdated("2023.06.2").to_string(),
            "release 2023.06.1 is older than release 2023.06.2, which environment shop/production serves or is \
             about to; ask for a rollback to deploy an older release"
        );
    }

    #[test]
    fn a_newer_release_supersedes_a_queued_older_one_and_staging_keeps_taking_commits() {
        given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.1", 'a'))
            .then_go_on()
            .and([finished(1)])
            .when(deploy(2, "2023.06.2", 'b'))
            .then_go_on()
            .when(deploy(3, "2023.06.3", 'c'))
            .then([
                EnvironmentEvent::RunSuperseded {
                    run_id: Uuid::from_u128(2),
                    by: Uuid::from_u128(3),
                    reason: "outdated: a newer deploy was requested".into(),
                },
                requested(3, RunKind::Patch, "2023.06.3", 'c', "release 2023.06.3"),
            ]);
        let patch = EnvironmentCommand::RequestSetup {
            run_id: Uuid::from_u128(1),
            commit: commit('a'),
            templates: versions(1),
            reason: "asked".into(),
            now: t(1),
        };
        given::<Environment>([])
            .when(created(EnvironmentKind::Staging))
            .then_go_on()
            .when(patch)
            .then_types(&["RunRequested"]);
    }

    #[test]
    fn a_newer_release_supersedes_a_queued_first_setup_and_sets_up_itself() {
        given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.1", 'a'))
            .then_go_on()
            .when(deploy(2, "2023.06.2", 'b'))
            .then([
                EnvironmentEvent::RunSuperseded {
                    run_id: Uuid::from_u128(1),
                    by: Uuid::from_u128(2),
                    reason: "outdated: a newer deploy was requested".into(),
                },
                requested(
                    2,
                    RunKind::Setup,
                    "2023.06.2",
                    'b',
                    "release 2023.06.2; a setup is needed first: no setup has succeeded yet",
                ),
            ]);
    }

    #[test]
    fn a_drift_repair_redeploys_the_release_that_serves() {
        let production = given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.1", 'a'))
            .then_go_on()
            .and([finished(1)])
            .when(EnvironmentCommand::RecordObservation {
                observation: Observation::Drifted {
                    reasons: vec!["web stopped".into()],
                    health: crate::domain::environment::Health::Missing,
                },
                now: t(3),
            })
            .then_go_on();
        let repair = production.when(EnvironmentCommand::RequestAutoSetup {
            run_id: Uuid::from_u128(2),
            commit: commit('a'),
            templates: versions(1),
            digest: "sha256:d".into(),
            now: t(4),
        });
        let requested = repair.decided();
        assert!(
            matches!(&requested[..], [EnvironmentEvent::RunRequested { release: Some(r), .. }] if *r == release("2023.06.1")),
            "{requested:?}"
        );
    }

    fn rollback(run: u128, tag: &str, c: char) -> EnvironmentCommand {
        let EnvironmentCommand::DeployRelease(deploy) = deploy(run, tag, c) else { unreachable!() };
        EnvironmentCommand::DeployRelease(ReleaseDeploy { rollback: true, reason: "broken".into(), ..deploy })
    }

    #[test]
    fn a_rollback_redeploys_an_earlier_release_and_holds_the_one_it_rolls_back_from() {
        let serving_second = given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.1", 'a'))
            .then_go_on()
            .and([finished(1)])
            .when(deploy(2, "2023.06.2", 'b'))
            .then_go_on()
            .and([finished(2)]);
        let refused = |reason: &str| DomainError::RollbackRefused { environment: LABEL.into(), reason: reason.into() };
        let rolled_back = serving_second
            .when(rollback(3, "2023.06.2", 'b'))
            .then_err(refused("a rollback deploys an earlier release than 2023.06.2, which serves"))
            .when(rollback(3, "2023.06.1", 'a'))
            .then([
                EnvironmentEvent::ReleaseHeld {
                    release: release("2023.06.2"),
                    reason: "rolled back to 2023.06.1".into(),
                    held_at: t(3),
                },
                requested(3, RunKind::Patch, "2023.06.1", 'a', "rollback from 2023.06.2 to 2023.06.1: broken"),
            ])
            .and([finished(3)]);
        assert_eq!(rolled_back.state().release, Some(release("2023.06.1")));
        // The held release is refused, even as the newer one, until unheld.
        let held = DomainError::ReleaseHeld { environment: LABEL.into(), tag: "2023.06.2".into() };
        assert_eq!(
            held.to_string(),
            "release 2023.06.2 is held in environment shop/production: it was rolled back from; release the hold \
             before deploying it again"
        );
        let unhold =
            |tag: &str| EnvironmentCommand::Unhold { tag: tag.parse().unwrap(), reason: "fixed".into(), now: t(9) };
        rolled_back
            .when(deploy(4, "2023.06.2", 'b'))
            .then_err(held)
            .when(unhold("2023.06.1"))
            .then_err(DomainError::NotFound("a hold on release 2023.06.1 in environment shop/production".into()))
            .when(unhold("2023.06.2"))
            .then([EnvironmentEvent::ReleaseUnheld {
                release: release("2023.06.2"),
                reason: "fixed".into(),
                unheld_at: t(9),
            }])
            .when(deploy(4, "2023.06.2", 'b'))
            .then_types(&["RunRequested"]);
        // Nothing serving: nothing to roll back from.
        given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(rollback(1, "2023.06.1", 'a'))
            .then_err(refused("it serves no release"));
    }

    #[test]
    fn drift_repair_does_not_redeploy_a_held_release_that_still_serves() {
        // The rollback's run failed: the held release still serves.
        let failed = EnvironmentEvent::RunFinished {
            run_id: Uuid::from_u128(3),
            outcome: RunOutcome::Failed,
            images: vec![],
            finished_at: t(3),
        };
        let production = given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.1", 'a'))
            .then_go_on()
            .and([finished(1)])
            .when(deploy(2, "2023.06.2", 'b'))
            .then_go_on()
            .and([finished(2)]);
        let production = production
            .when(rollback(3, "2023.06.1", 'a'))
            .then_go_on()
            .and([failed])
            .when(EnvironmentCommand::RecordObservation {
                observation: Observation::Drifted {
                    reasons: vec!["web stopped".into()],
                    health: crate::domain::environment::Health::Missing,
                },
                now: t(4),
            })
            .then_go_on();
        assert!(serves_held(&production.state()));
        production
            .when(EnvironmentCommand::RequestAutoSetup {
                run_id: Uuid::from_u128(5),
                commit: commit('b'),
                templates: versions(1),
                digest: "sha256:d".into(),
                now: t(5),
            })
            .then([]);
    }

    #[test]
    fn a_retried_release_run_deploys_the_same_release() {
        let failed = EnvironmentEvent::RunFinished {
            run_id: Uuid::from_u128(1),
            outcome: RunOutcome::Failed,
            images: vec![],
            finished_at: t(2),
        };
        let production = given::<Environment>([])
            .when(created(EnvironmentKind::Production))
            .then_go_on()
            .when(deploy(1, "2023.06.1", 'a'))
            .then_go_on()
            .and([failed]);
        let requeue = EnvironmentCommand::Requeue {
            run_id: Uuid::from_u128(1),
            kind: RunKind::Setup,
            commit: Some(commit('a')),
            templates: Some(versions(1)),
            reason: "retry, attempt 2".into(),
            now: t(1),
        };
        let retried = production
            .when(requeue)
            .then([requested(1, RunKind::Setup, "2023.06.1", 'a', "retry, attempt 2")])
            .and([EnvironmentEvent::RunFinished {
                run_id: Uuid::from_u128(1),
                outcome: RunOutcome::Succeeded,
                images: vec![],
                finished_at: t(4),
            }]);
        assert_eq!(retried.state().release, Some(release("2023.06.1")));
        assert!(retried.state().failed_releases.is_empty());
    }
}
