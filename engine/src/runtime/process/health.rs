//! Health checks of local services: an HTTP GET on 127.0.0.1, or a command run like
//! a task from the service's image with the service's environment; a version that
//! exits while it is checked has failed at once.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::groups::{base_command, signal_name};
use super::images::image_dir;
use super::records::{EnvDirs, ServiceSpec};
use super::services::{Launch, service_env};
use super::tasks::run_to_completion;
use crate::runtime::health::{self, Unhealthy, Verdict, command_failure, command_probe_timeout, http_probe_timeout};
use crate::runtime::output::LastLine;
use crate::runtime::policy::SETTLE;
use crate::runtime::{HealthCheck, TaskOutcome, fmt_duration};

/// Where health checks find local services.
pub(super) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Waits until the service passes its health check (or, without one, has run for
/// a moment), it exits (`exit` says how, from the process's reaper), or the health
/// timeout passes.
pub(super) async fn wait_healthy(
    launch: &Launch<'_>,
    dirs: &EnvDirs,
    exit: &mut watch::Receiver<Option<String>>,
) -> Result<(), Unhealthy> {
    let Some(check) = launch.health_check else {
        return match tokio::time::timeout(SETTLE, exited(exit)).await {
            Ok(how) => Err(Unhealthy::Exited(how)),
            Err(_settled) => Ok(()),
        };
    };
    let checks = health::poll(launch.health_timeout, |remaining| async move {
        let probe = match check {
            HealthCheck::Http { path, port } => {
                health::http_probe(LOCALHOST, *port, path, http_probe_timeout(remaining)).await
            }
            HealthCheck::Command(command) => {
                command_probe(command, launch.spec, dirs, command_probe_timeout(remaining)).await
            }
        };
        match probe {
            Ok(()) => Verdict::Healthy,
            Err(why) => Verdict::NotYet(why),
        }
    });
    tokio::select! {
        how = exited(exit) => Err(Unhealthy::Exited(how)),
        result = checks => result,
    }
}

/// Resolves with how the process ended once its reaper reports it.
async fn exited(exit: &mut watch::Receiver<Option<String>>) -> String {
    let how = exit.wait_for(Option::is_some).await.map(|how| how.clone().unwrap_or_default());
    match how {
        Ok(how) => how,
        // The reaper is gone without a word (the tokio runtime is shutting down).
        Err(_) => std::future::pending().await,
    }
}

/// Runs a command health check like a task: from the service's image, with the
/// service's environment; it must exit 0.
async fn command_probe(
    command: &[String],
    spec: &ServiceSpec,
    dirs: &EnvDirs,
    timeout: Duration,
) -> Result<(), String> {
    let Some(program) = command.first() else {
        return Err("the health check command is empty".to_string());
    };
    let cwd = image_dir(&spec.image).map_err(|e| e.to_string())?;
    let output = LastLine::default();
    let never = CancellationToken::new();
    let command_line = base_command(command, &cwd, &service_env(spec, dirs));
    match run_to_completion(command_line, program, &output, timeout, &never, None).await {
        Ok(TaskOutcome::Exited(0)) => Ok(()),
        Ok(outcome) => {
            let how = match outcome {
                TaskOutcome::Exited(code) => format!("exited with code {code}"),
                TaskOutcome::Signalled(signal) => format!("was killed by {}", signal_name(signal)),
                TaskOutcome::TimedOut => format!("did not finish within {}", fmt_duration(timeout)),
                TaskOutcome::Cancelled => "was cancelled".to_string(),
            };
            Err(command_failure(program, &how, output.get()))
        }
        Err(e) => Err(e.to_string()),
    }
}
