//! Drift (`docs/operations.md`, "Read models and drift"): what the events say
//! should run, compared with what the runtime really runs, and with the templates
//! the application has now.
//!
//! The [`Reconciler`] observes every set-up environment on an interval (with
//! jitter, so several `shiplog` processes do not observe in lockstep) and on demand,
//! judges it with [`judge`], and records the verdict through the domain, which
//! appends `DriftDetected`/`DriftResolved` only when the verdict or its reasons
//! change. In `auto` mode a drifted environment gets one setup per desired state.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::domain::environment::{Environment, EnvironmentEvent, Health, Observation, Status};
use crate::domain::{Name, TemplateVersions};
use crate::lifecycle::{Lifecycle, LifecycleError, Requested};
use crate::runtime::{self, EnvironmentRef, ObservedService, Runtime, RuntimeError};
use crate::store::Metadata;

/// Judges one observation of `env`. `None` when there is nothing to judge: no
/// setup has succeeded, the environment is torn down, or a run is changing it now
/// (a roll-out in progress is not drift).
pub fn judge(
    env: &Environment,
    current: &TemplateVersions,
    observed: Result<&[ObservedService], &RuntimeError>,
) -> Option<Observation> {
    if env.applied.is_none() || env.status == Some(Status::TornDown) || env.queue.iter().any(|q| q.started) {
        return None;
    }
    let observed = match observed {
        Ok(observed) => observed,
        Err(e) => return Some(Observation::Unknown(format!("the runtime could not be observed: {e}"))),
    };
    let mut reasons = env.setup_reasons(current);
    let config_reasons = reasons.len();
    for (service, image) in &env.images {
        match observed.iter().find(|o| &o.service == service) {
            None => reasons.push(format!("service {service} is missing")),
            Some(o) if !o.running => reasons.push(format!("service {service} is not running")),
            Some(o) if o.health == Some(runtime::ServiceHealth::Unhealthy) => {
                reasons.push(format!("service {service} fails its health check"))
            }
            Some(o) if &o.image.0 != image => {
                reasons.push(format!("service {service} runs image {}, expected {image}", o.image.0))
            }
            Some(_) => {}
        }
    }
    for o in observed.iter().filter(|o| !env.images.iter().any(|(s, _)| s == &o.service)) {
        reasons.push(format!("service {} runs but is not deployed", o.service));
    }
    let serving =
        env.images.iter().filter(|(s, i)| observed.iter().any(|o| &o.service == s && o.running && &o.image.0 == i));
    let health = match serving.count() {
        _ if reasons.len() == config_reasons => Health::Healthy,
        0 => Health::Missing,
        _ => Health::Degraded,
    };
    Some(if reasons.is_empty() { Observation::InSync } else { Observation::Drifted { reasons, health } })
}

/// The digest of what a setup would make the environment run: the templates now
/// and the deployed commit. `auto` mode repairs towards each digest once.
pub fn desired_digest(env: &Environment, current: &TemplateVersions) -> String {
    let commit = env.commit.as_ref().map_or("", |c| c.as_str());
    let digest = Sha256::digest(format!("{}\n{}\n{commit}", current.template_digest, current.variables_digest));
    format!("sha256:{}", hex::encode(digest))
}

/// What one check of one environment found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub application: Name,
    pub environment: Name,
    /// `None` when there was nothing to judge.
    pub observation: Option<Observation>,
    /// Drift events appended (none when the verdict did not change).
    pub recorded: Vec<EnvironmentEvent>,
    /// The setup requested in `auto` mode.
    pub auto_setup: Option<Requested>,
}

/// Observes environments through a runtime and records drift verdicts.
pub struct Reconciler<R> {
    lifecycle: Lifecycle,
    runtime: Arc<R>,
    metadata: Metadata,
}

impl<R: Runtime> Reconciler<R> {
    pub fn new(lifecycle: Lifecycle, runtime: Arc<R>) -> Self {
        Reconciler {
            lifecycle,
            runtime,
            metadata: Metadata { actor: Some("reconciler".into()), ..Metadata::default() },
        }
    }

    /// Observes one environment now and records the verdict (on demand).
    #[tracing::instrument(skip_all, fields(app = %app, env = %env), err)]
    pub async fn check(&self, app: &Name, env: &Name, now: DateTime<Utc>) -> Result<Checked, LifecycleError> {
        let mut checked = Checked {
            application: app.clone(),
            environment: env.clone(),
            observation: None,
            recorded: vec![],
            auto_setup: None,
        };
        let (application, _) = self.lifecycle.application(app).await?;
        let (state, _) = self.lifecycle.environment(app, env).await?;
        let Ok(current) = application.current() else { return Ok(checked) };
        let env_ref = EnvironmentRef { application: app.to_string(), environment: env.to_string() };
        let observed = self.runtime.observe(&env_ref).await;
        let Some(observation) = judge(&state, &current, observed.as_deref()) else { return Ok(checked) };
        checked.recorded =
            self.lifecycle.record_observation(app, env, observation.clone(), &self.metadata, now).await?;
        if matches!(observation, Observation::Drifted { .. }) {
            let digest = desired_digest(&state, &current);
            checked.auto_setup = self.lifecycle.request_auto_setup(app, env, &digest, &self.metadata, now).await?;
        }
        checked.observation = Some(observation);
        Ok(checked)
    }

    /// Checks every environment once; one environment's failure does not stop
    /// the others (it is logged).
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Vec<Checked>, LifecycleError> {
        let mut all = Vec::new();
        for (app, env) in self.lifecycle.environment_names().await? {
            match self.check(&app, &env, now).await {
                Ok(checked) => all.push(checked),
                Err(e) => tracing::warn!(%app, %env, error = %e, "drift check failed"),
            }
        }
        Ok(all)
    }

    /// Checks every environment every `interval` (±10% jitter) and whenever
    /// `wake` is notified, until `shutdown`.
    pub async fn run(&self, interval: Duration, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.tick(Utc::now()).await {
                tracing::warn!(error = %e, "drift reconciliation failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(jittered(interval)) => {}
            }
        }
    }
}

/// `interval` scaled by a random factor in [0.9, 1.1).
fn jittered(interval: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u16;
    interval.mul_f64(0.9 + 0.2 * f64::from(random) / f64::from(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::environment::QueuedRun;
    use crate::domain::{CommitId, RunKind};
    use crate::runtime::Image;

    fn versions(t: u64) -> TemplateVersions {
        TemplateVersions {
            template_version: t,
            template_digest: format!("sha256:t{t}"),
            variables_version: 1,
            variables_digest: "sha256:v1".into(),
        }
    }

    fn deployed() -> Environment {
        Environment {
            status: Some(Status::Ready),
            applied: Some(versions(3)),
            commit: Some("a".repeat(40).parse::<CommitId>().unwrap()),
            images: vec![("api".into(), "img-api".into()), ("web".into(), "img-web".into())],
            ..Environment::default()
        }
    }

    fn running(service: &str, image: &str) -> ObservedService {
        ObservedService { service: service.into(), image: Image(image.into()), running: true, health: None }
    }

    #[test]
    fn what_runs_as_deployed_is_in_sync() {
        let observed = [running("api", "img-api"), running("web", "img-web")];
        assert_eq!(judge(&deployed(), &versions(3), Ok(&observed)), Some(Observation::InSync));
    }

    #[test]
    fn every_difference_is_a_reason() {
        let mut stopped = running("web", "img-web");
        stopped.running = false;
        let observed = [stopped, running("worker", "img-x")];
        assert_eq!(
            judge(&deployed(), &versions(4), Ok(&observed)),
            Some(Observation::Drifted {
                reasons: vec![
                    "application template changed: v3 → v4".into(),
                    "service api is missing".into(),
                    "service web is not running".into(),
                    "service worker runs but is not deployed".into(),
                ],
                health: Health::Missing,
            })
        );
        let mut failing = running("web", "img-web");
        failing.health = Some(runtime::ServiceHealth::Unhealthy);
        assert_eq!(
            judge(&deployed(), &versions(3), Ok(&[running("api", "img-api"), failing])),
            Some(Observation::Drifted {
                reasons: vec!["service web fails its health check".into()],
                health: Health::Degraded,
            })
        );
        let other = [running("api", "img-old"), running("web", "img-web")];
        assert_eq!(
            judge(&deployed(), &versions(3), Ok(&other)),
            Some(Observation::Drifted {
                reasons: vec!["service api runs image img-old, expected img-api".into()],
                health: Health::Degraded,
            })
        );
        let running_as_deployed = [running("api", "img-api"), running("web", "img-web")];
        assert_eq!(
            judge(&deployed(), &versions(4), Ok(&running_as_deployed)),
            Some(Observation::Drifted {
                reasons: vec!["application template changed: v3 → v4".into()],
                health: Health::Healthy,
            })
        );
    }

    #[test]
    fn a_failed_observation_is_unknown_never_in_sync() {
        let failed = RuntimeError::Failed("no engine answers".into());
        assert_eq!(
            judge(&deployed(), &versions(3), Err(&failed)),
            Some(Observation::Unknown("the runtime could not be observed: no engine answers".into()))
        );
    }

    #[test]
    fn nothing_is_judged_before_setup_or_during_a_run() {
        assert_eq!(judge(&Environment::default(), &versions(1), Ok(&[])), None);
        let mut busy = deployed();
        busy.queue.push(QueuedRun {
            run_id: uuid::Uuid::nil(),
            kind: RunKind::Patch,
            commit: None,
            templates: None,
            started: true,
            release: None,
        });
        assert_eq!(judge(&busy, &versions(3), Ok(&[])), None);
    }

    #[test]
    fn the_desired_digest_changes_with_templates_and_commit() {
        let env = deployed();
        assert_eq!(desired_digest(&env, &versions(3)), desired_digest(&env, &versions(3)));
        assert_ne!(desired_digest(&env, &versions(3)), desired_digest(&env, &versions(4)));
        let mut moved = env.clone();
        moved.commit = Some("b".repeat(40).parse().unwrap());
        assert_ne!(desired_digest(&env, &versions(3)), desired_digest(&moved, &versions(3)));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11), "{d:?}");
        }
    }
}
