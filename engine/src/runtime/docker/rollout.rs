//! Rolling a service out: start the new version beside the old, wait until it is
//! healthy, move the service's network alias to it, remove the old one.

use std::time::{Duration, Instant};

use bollard::exec::StartExecResults;
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, EndpointSettings, ExecConfig, HealthStatusEnum, HostConfig,
    NetworkConnectRequest, NetworkDisconnectRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder};

use super::task::HOST_GATEWAY;
use super::{DockerRuntime, LABEL_IMAGE, LABEL_SERVICE, Names, ServiceContainer, backend, forward_output};
use crate::runtime::health::{
    self, Unhealthy, Verdict, command_failure, command_probe_timeout, http_probe, http_probe_timeout,
};
use crate::runtime::output::LastLine;
use crate::runtime::policy::{FAILED_OUTPUT_LINES, SETTLE};
use crate::runtime::{
    HealthCheck, LogSink, LogStream, RuntimeError, ServiceRequest, check_name, fmt_duration, service_variables,
    sha256_hex,
};

/// See the module docs of `docker`.
pub(super) async fn roll_out(
    runtime: &DockerRuntime,
    req: &ServiceRequest,
    logs: &dyn LogSink,
) -> Result<(), RuntimeError> {
    let names = Names::of(&req.env)?;
    let service = req.service.as_str();
    check_name("service", service)?;
    runtime.ensure_network(&names).await?;
    let volumes: Vec<String> = req.volumes.iter().map(|(volume, _)| volume.clone()).collect();
    runtime.ensure_volumes(&names, &volumes).await?;

    // What an interrupted roll-out left (a new version not switched to yet) and
    // versions that died do not serve: they go first.
    let mut serving = Vec::new();
    for container in runtime.service_containers(&names, Some(service)).await? {
        if container.serving && container.running {
            serving.push(container);
        } else {
            let why = if container.running { "left by an interrupted roll-out" } else { "not running" };
            logs.line(LogStream::System, &format!("removing {} ({}): {why}", container.name, container.image.0));
            runtime.remove_container(&container.id).await?;
        }
    }

    if req.replicas == 0 {
        for old in &serving {
            logs.line(LogStream::System, &format!("stopping {} ({}): 0 replicas requested", old.name, old.image.0));
            runtime.stop_and_remove(&old.id).await?;
        }
        return Ok(());
    }
    req.note_one_replica("docker", "container", logs);

    let name = format!("{}_{service}_{}", names.prefix, spec_hash(req));
    if serving.iter().any(|c| c.name == name) {
        // It serves already; a roll-out interrupted after the switch may have left
        // the old version beside it.
        let old: Vec<_> = serving.iter().filter(|c| c.name != name).collect();
        if old.is_empty() {
            logs.line(LogStream::System, &format!("{service} already runs {} ({name}); nothing to do", req.image.0));
        }
        for old in old {
            logs.line(LogStream::System, &format!("stopping {} ({})", old.name, old.image.0));
            runtime.stop_and_remove(&old.id).await?;
        }
        return Ok(());
    }

    let id = runtime.create_version(&names, req, &name, logs).await?;
    logs.line(LogStream::System, &format!("started {name} from {}", req.image.0));
    if let Err(unhealthy) = wait_healthy(runtime, &names, req, &id).await {
        let failure = unhealthy.failure(service, req.health_timeout, logs);
        show_output(runtime, &id, logs).await;
        logs.line(LogStream::System, &format!("removing {name}: {failure}"));
        runtime.remove_container(&id).await?;
        return Err(RuntimeError::Failed(if serving.is_empty() {
            failure
        } else {
            format!("{failure}; the previous version keeps serving")
        }));
    }

    logs.line(LogStream::System, &format!("{service} is healthy; switching {service} to {name}"));
    runtime.switch_to(&names, service, &id).await?;
    for old in &serving {
        logs.line(LogStream::System, &format!("stopping {} ({})", old.name, old.image.0));
        runtime.stop_and_remove(&old.id).await?;
    }
    tracing::info!(service, image = %req.image.0, container = %name, "rolled out");
    logs.line(LogStream::System, &format!("{service} now runs {}", req.image.0));
    Ok(())
}

impl DockerRuntime {
    /// Creates and starts a version of the service on the environment's network,
    /// without the service's alias and without a restart policy. Returns its id.
    async fn create_version(
        &self,
        names: &Names,
        req: &ServiceRequest,
        name: &str,
        logs: &dyn LogSink,
    ) -> Result<String, RuntimeError> {
        self.ensure_image(&req.image.0, logs).await?;
        let mut labels = names.labels();
        labels.insert(LABEL_SERVICE.to_string(), req.service.clone());
        labels.insert(LABEL_IMAGE.to_string(), req.image.0.clone());
        let config = ContainerCreateBody {
            image: Some(req.image.0.clone()),
            cmd: (!req.command.is_empty()).then(|| req.command.clone()),
            env: Some(
                service_variables(&req.ports, &req.env_vars).into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            ),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(names.network().to_string()),
                binds: Some(
                    req.volumes.iter().map(|(volume, path)| format!("{}:{path}", names.volume(volume))).collect(),
                ),
                extra_hosts: Some(vec![HOST_GATEWAY.to_string()]),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let id = match self.docker.create_container(Some(options), config).await {
            Ok(created) => created.id,
            Err(e) if super::is_not_found(&e) => {
                return Err(RuntimeError::Failed(format!(
                    "cannot start {}: no image {} on the engine",
                    req.service, req.image.0
                )));
            }
            Err(e) => return Err(backend(format!("creating container {name}"))(e)),
        };
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove_container(&id).await;
            return Err(RuntimeError::Failed(format!("{} could not start: {e}", req.service)));
        }
        Ok(id)
    }

    /// Gives the container the service's alias (reconnecting it: aliases are set
    /// when a container joins a network) and a restart policy: it serves now.
    async fn switch_to(&self, names: &Names, service: &str, id: &str) -> Result<(), RuntimeError> {
        let network = names.network();
        let disconnect = NetworkDisconnectRequest { container: id.to_string(), force: Some(false) };
        self.docker.disconnect_network(network, disconnect).await.map_err(backend(format!("disconnecting {id}")))?;
        let connect = NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(EndpointSettings { aliases: Some(vec![service.to_string()]), ..Default::default() }),
        };
        self.docker.connect_network(network, connect).await.map_err(backend(format!("connecting {id}")))?;
        let restart = RestartPolicy { name: Some(RestartPolicyNameEnum::UNLESS_STOPPED), maximum_retry_count: None };
        let update = ContainerUpdateBody { restart_policy: Some(restart), ..Default::default() };
        self.docker.update_container(id, update).await.map_err(backend(format!("updating {id}")))
    }
}

/// A digest of everything that runs: equal requests run the same container.
fn spec_hash(req: &ServiceRequest) -> String {
    let spec = serde_json::json!([req.image.0, req.command, req.env_vars, req.ports, req.volumes]);
    sha256_hex(&spec.to_string())[..12].to_string()
}

/// Waits until the version passes its health check (see the module docs of
/// `docker`), exits, or the health timeout passes.
async fn wait_healthy(runtime: &DockerRuntime, names: &Names, req: &ServiceRequest, id: &str) -> Result<(), Unhealthy> {
    let started = Instant::now();
    health::poll(req.health_timeout, |remaining| async move {
        let inspect = match runtime.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(inspect) => inspect,
            Err(e) => return Verdict::NotYet(format!("inspecting the container: {e}")),
        };
        let state = inspect.state.clone().unwrap_or_default();
        if !state.running.unwrap_or(false) && !state.restarting.unwrap_or(false) {
            return Verdict::Exited(format!("exited with code {}", state.exit_code.unwrap_or(-1)));
        }
        let docker_health = state.health.and_then(|h| h.status);
        let check = match (&req.health_check, ServiceContainer::of(names, inspect)) {
            (Some(HealthCheck::Http { path, port }), Some(container)) => match container.address {
                Some(ip) => http_probe(ip, *port, path, http_probe_timeout(remaining)).await,
                None => Err(format!("{} has no address on {}", container.name, names.network())),
            },
            (Some(HealthCheck::Command(command)), _) => {
                exec_probe(runtime, id, command, command_probe_timeout(remaining)).await
            }
            (Some(HealthCheck::Http { .. }), None) => Err("the container is not a service".to_string()),
            (None, _) => match docker_health {
                Some(HealthStatusEnum::HEALTHY) => Ok(()),
                Some(status @ (HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY)) => {
                    Err(format!("the image's HEALTHCHECK reports {status}"))
                }
                _ if started.elapsed() >= SETTLE => Ok(()),
                _ => Err("starting".to_string()),
            },
        };
        match check {
            Ok(()) => Verdict::Healthy,
            Err(why) => Verdict::NotYet(why),
        }
    })
    .await
}

/// Runs a command health check in the container (with the container's
/// environment); it must exit 0 within `timeout`.
async fn exec_probe(runtime: &DockerRuntime, id: &str, command: &[String], timeout: Duration) -> Result<(), String> {
    let program = command.first().cloned().unwrap_or_default();
    let exec = ExecConfig {
        cmd: Some(command.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let last_line = LastLine::default();
    let probe = async {
        let created = runtime.docker.create_exec(id, exec).await.map_err(|e| e.to_string())?;
        if let StartExecResults::Attached { output, .. } =
            runtime.docker.start_exec(&created.id, None).await.map_err(|e| e.to_string())?
        {
            forward_output(output, &last_line).await;
        }
        let inspect = runtime.docker.inspect_exec(&created.id).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(inspect.exit_code)
    };
    match tokio::time::timeout(timeout, probe).await {
        Err(_) => Err(format!("`{program}` did not finish within {}", fmt_duration(timeout))),
        Ok(Err(e)) => Err(format!("`{program}` could not run: {e}")),
        Ok(Ok(Some(0))) => Ok(()),
        Ok(Ok(code)) => {
            let how = code.map_or("did not report an exit code".to_string(), |code| format!("exited with code {code}"));
            Err(command_failure(&program, &how, last_line.get()))
        }
    }
}

/// Writes the last lines of a failed version's output into the roll-out's log.
async fn show_output(runtime: &DockerRuntime, id: &str, logs: &dyn LogSink) {
    let tail = FAILED_OUTPUT_LINES.to_string();
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&tail).build();
    forward_output(runtime.docker.logs(id, Some(options)), logs).await;
}
