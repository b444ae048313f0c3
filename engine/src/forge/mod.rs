//! Deployment status back to the forge: GitHub deployments and deployment statuses,
//! GitLab commit statuses, for the runs of environments that deploy a merge request
//! (see `domain::merge_request`), when the forge's token is configured.
//!
//! The reporter follows the event log from its own checkpoint, like a projection:
//! a `MergeRequestAttached` links the environment to its forge project, each
//! `RunQueued` of a linked environment (setups and patches) becomes a deployment;
//! a `MergeRequestDetached` (closed or merged) releases the link, whose next run
//! (the deploy back to the branch the environment tracks) is the last reported,
//! and the run's start and end add its reports (`queued`, `in_progress`,
//! `success`, `failure`; `cancelled` for a run cancelled or superseded). What it
//! learns is written in the same transaction as the checkpoint
//! (`outbox`), so nothing is reported twice or lost when shiplog stops. A sender
//! then posts each run's reports in order; a failure is logged and retried with
//! exponential backoff. Reporting never touches a run: a forge that is down
//! delays its reports, nothing else.

mod client;
mod outbox;

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::environment::{EnvironmentEvent, EnvironmentKind};
use crate::domain::merge_request::Forge;
use crate::domain::run::RunEvent;
use crate::domain::{RunKind, StreamRef};
use crate::lifecycle::Lifecycle;
use crate::secret::Secret;
use crate::store::{EventStore, RecordedEvent};

pub use client::{ClientError, ForgeRequest, certificates};
pub use outbox::ReportState;

/// Where the forges' APIs are and the tokens that let shiplog post to them; a
/// forge without a token gets no reports.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    pub github_token: Option<Secret>,
    /// `https://api.github.com`, or a GitHub Enterprise server's `/api/v3`.
    pub github_api_url: String,
    pub gitlab_token: Option<Secret>,
    /// The GitLab instance, e.g. `https://gitlab.com` (its API is under `/api/v4`).
    pub gitlab_url: String,
    /// Where shiplog is served, for links to a run's log: `<public_url>/runs/<id>`.
    pub public_url: Option<String>,
    /// The address of a deployed environment, with `{application}` and
    /// `{environment}` replaced; without it, the environment's page on `public_url`.
    pub environment_url: Option<String>,
    /// CA certificates (PEM) trusted besides the system's, for forges behind a
    /// private CA.
    pub extra_ca_pem: Option<String>,
    /// The first retry's delay; each further one doubles it, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for ForgeConfig {
    fn default() -> Self {
        ForgeConfig {
            github_token: None,
            github_api_url: "https://api.github.com".into(),
            gitlab_token: None,
            gitlab_url: "https://gitlab.com".into(),
            public_url: None,
            environment_url: None,
            extra_ca_pem: None,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl ForgeConfig {
    /// Whether any forge has a token, i.e. whether there is anything to report.
    pub fn enabled(&self) -> bool {
        self.github_token.is_some() || self.gitlab_token.is_some()
    }

    fn token(&self, forge: Forge) -> Option<&Secret> {
        match forge {
            Forge::GitHub => self.github_token.as_ref(),
            Forge::GitLab => self.gitlab_token.as_ref(),
        }
    }

    fn log_url(&self, run_id: Uuid) -> Option<String> {
        self.public_url.as_ref().map(|base| format!("{}/runs/{run_id}", base.trim_end_matches('/')))
    }

    fn environment_url(&self, application: &str, environment: &str) -> Option<String> {
        match (&self.environment_url, &self.public_url) {
            (Some(template), _) => {
                Some(template.replace("{application}", application).replace("{environment}", environment))
            }
            (None, Some(base)) => {
                Some(format!("{}/applications/{application}/environments/{environment}", base.trim_end_matches('/')))
            }
            (None, None) => None,
        }
    }

    /// The delay before attempt `attempts + 1`, after `attempts` failed ones.
    fn backoff(&self, attempts: u32) -> Duration {
        self.retry_base.saturating_mul(1 << attempts.min(16)).min(self.retry_max)
    }
}

/// What one [`Reporter::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Events of the log read.
    pub followed: usize,
    /// Reports the forges accepted.
    pub delivered: usize,
    /// Attempts that failed (retried later).
    pub failed: usize,
}

/// Follows the log and posts reports; one per process.
#[derive(Clone)]
pub struct Reporter {
    lifecycle: Lifecycle,
    store: EventStore,
    config: ForgeConfig,
    client: client::Client,
}

/// Events read per transaction while following the log.
const BATCH: usize = 500;
/// Reports posted per [`Reporter::tick`] at most.
const SENDS_PER_TICK: usize = 100;

impl Reporter {
    /// Refused when the extra CA certificates are not PEM certificates.
    pub fn new(lifecycle: Lifecycle, config: ForgeConfig) -> Result<Reporter, ClientError> {
        let client = client::Client::new(config.extra_ca_pem.as_deref())?;
        Ok(Reporter { store: lifecycle.store().clone(), lifecycle, client, config })
    }

    /// Follows the log to its head, then posts every report that is due.
    pub async fn tick(&self) -> Result<Reported, sqlx::Error> {
        let mut reported = Reported::default();
        loop {
            let followed = self.follow().await?;
            reported.followed += followed;
            if followed < BATCH {
                break;
            }
        }
        for _ in 0..SENDS_PER_TICK {
            match self.send_next().await? {
                None => break,
                Some(true) => reported.delivered += 1,
                Some(false) => reported.failed += 1,
            }
        }
        Ok(reported)
    }

    /// Ticks every `poll` until `shutdown`.
    pub async fn run(&self, poll: Duration, shutdown: CancellationToken) {
        loop {
            match self.tick().await {
                Ok(Reported { followed: 0, delivered: 0, failed: 0 }) => {}
                Ok(reported) => tracing::debug!(?reported, "forge reports"),
                Err(e) => tracing::warn!(error = %e, "forge reporting failed; will retry"),
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One batch of the log, folded into the outbox with the checkpoint.
    async fn follow(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        let cursor = match outbox::checkpoint(&mut tx).await? {
            Some(cursor) => cursor,
            // The first start reports what happens from now on, not the past.
            None => self.store.head().await?,
        };
        let events = self.store.read_all(cursor, BATCH).await?;
        for event in &events {
            self.learn(&mut tx, event).await?;
        }
        let last = events.last().map_or(cursor, |e| e.cursor);
        outbox::save_checkpoint(&mut tx, last).await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// What `event` means for the forges, written to the outbox.
    async fn learn(&self, tx: &mut sqlx::PgConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let Ok(stream) = event.stream_id.parse::<StreamRef>() else { return Ok(()) };
        match stream {
            StreamRef::Environment { .. } => match serde_json::from_str::<EnvironmentEvent>(&event.payload) {
                Ok(EnvironmentEvent::MergeRequestAttached { request, .. })
                    if self.config.token(request.forge).is_some() =>
                {
                    outbox::link(tx, &event.stream_id, request.forge, &request.project).await
                }
                Ok(EnvironmentEvent::MergeRequestDetached { .. }) => outbox::release(tx, &event.stream_id).await,
                _ => Ok(()),
            },
            StreamRef::Run(run_id) => {
                let Ok(run_event) = serde_json::from_str::<RunEvent>(&event.payload) else { return Ok(()) };
                let state = match run_event {
                    RunEvent::RunQueued { application, environment, kind, commit, .. } => {
                        let (Some(commit), false) = (commit, kind == RunKind::Teardown) else { return Ok(()) };
                        let env_stream = StreamRef::environment(&application, &environment).to_string();
                        if !outbox::linked(tx, &env_stream).await? {
                            return Ok(());
                        }
                        // An environment's kind never changes: its state now says it.
                        let kind = self.lifecycle.environment(&application, &environment).await.ok();
                        let kind = kind.and_then(|(env, _)| env.created.map(|c| c.kind));
                        let deployment = outbox::NewDeployment {
                            run_id,
                            application: application.as_str(),
                            environment: environment.as_str(),
                            commit: commit.as_str(),
                            transient: kind == Some(EnvironmentKind::Preview),
                            production: kind == Some(EnvironmentKind::Production),
                        };
                        let added = outbox::add_deployment(tx, &env_stream, &deployment).await?;
                        outbox::forget_released(tx, &env_stream).await?;
                        if !added {
                            return Ok(());
                        }
                        ReportState::Queued
                    }
                    RunEvent::RunStarted { .. } => ReportState::InProgress,
                    RunEvent::RunSucceeded { .. } => ReportState::Success,
                    RunEvent::RunFailed { .. } => ReportState::Failure,
                    RunEvent::RunCancelled { .. }
                    | RunEvent::RunSkipped { .. }
                    | RunEvent::DeploymentRejected { .. } => ReportState::Cancelled,
                    _ => return Ok(()),
                };
                outbox::add_report(tx, run_id, state).await
            }
            StreamRef::Application(_) => Ok(()),
        }
    }

    /// Posts the next due report; `None` when none is due, else whether it was delivered.
    async fn send_next(&self) -> Result<Option<bool>, sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        let Some(due) = outbox::next_due(&mut tx).await? else { return Ok(None) };
        let Some(token) = self.config.token(due.forge) else {
            // The token was removed since: nothing can be posted.
            outbox::abandon(&mut tx, due.id, "no token configured for this forge").await?;
            tx.commit().await?;
            return Ok(Some(false));
        };
        let request = ForgeRequest {
            forge: due.forge,
            project: &due.project,
            commit: &due.commit,
            context: format!("shiplog/{}/{}", due.application, due.environment),
            environment: format!("{}/{}", due.application, due.environment),
            transient: due.transient,
            production: due.production,
            state: due.state,
            description: due.state.description(),
            log_url: self.config.log_url(due.run_id),
            environment_url: self.config.environment_url(&due.application, &due.environment),
            deployment_id: due.deployment_id,
        };
        let base = match due.forge {
            Forge::GitHub => &self.config.github_api_url,
            Forge::GitLab => &self.config.gitlab_url,
        };
        let delivered = match self.client.post(base, token, &request).await {
            Ok(deployment_id) => {
                outbox::delivered(&mut tx, due.id, due.run_id, deployment_id).await?;
                true
            }
            Err(client::PostError { error, deployment_id }) => {
                let delay = self.config.backoff(due.attempts as u32);
                tracing::warn!(
                    forge = %due.forge, project = %due.project, run_id = %due.run_id, state = ?due.state,
                    attempt = due.attempts + 1, retry_in = ?delay, error = %error,
                    "posting a deployment status failed; will retry"
                );
                let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                outbox::failed(&mut tx, due.id, due.run_id, &error, next, deployment_id).await?;
                false
            }
        };
        tx.commit().await?;
        Ok(Some(delivered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_maximum() {
        let config = ForgeConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            ..ForgeConfig::default()
        };
        let delays: Vec<u128> = (0..6).map(|n| config.backoff(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn links_point_at_the_run_and_the_environment() {
        let run = Uuid::from_u128(1);
        let config = ForgeConfig { public_url: Some("https://ship.example.com/".into()), ..ForgeConfig::default() };
        assert_eq!(config.log_url(run).unwrap(), format!("https://ship.example.com/runs/{run}"));
        assert_eq!(
            config.environment_url("shop", "pr-7").unwrap(),
            "https://ship.example.com/applications/shop/environments/pr-7"
        );
        let templated =
            ForgeConfig { environment_url: Some("https://{environment}.{application}.example.com".into()), ..config };
        assert_eq!(templated.environment_url("shop", "pr-7").unwrap(), "https://pr-7.shop.example.com");
        assert_eq!(ForgeConfig::default().log_url(run), None);
        assert!(!ForgeConfig::default().enabled());
    }
}
