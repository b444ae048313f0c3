//! One-off containers: release commands, jobs and teardown hooks.

use std::pin::pin;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{DockerRuntime, LABEL_TASK, Names, backend, forward_output, is_not_found};
use crate::runtime::policy::OUTPUT_DRAIN;
use crate::runtime::{LogSink, LogStream, RuntimeError, TaskOutcome, TaskRequest, task_component};

/// Where a task on a checkout finds it, and its working directory.
const WORKSPACE: &str = "/workspace";
/// Containers reach the Docker host under this name, as on Docker Desktop.
pub(super) const HOST_GATEWAY: &str = "host.docker.internal:host-gateway";

/// Runs the task in a container of its own and removes the container afterwards,
/// however the task ends (see the module docs of `docker`).
pub(super) async fn run(
    runtime: &DockerRuntime,
    req: &TaskRequest,
    logs: &dyn LogSink,
    cancel: &CancellationToken,
) -> Result<TaskOutcome, RuntimeError> {
    let names = Names::of(&req.env)?;
    if req.command.is_empty() {
        return Err(RuntimeError::Failed(format!("task `{}` has no command", req.name)));
    }
    runtime.ensure_network(&names).await?;
    let name = format!("{}_task_{}", names.prefix, task_component(&req.name));
    match runtime.docker.inspect_container(&name, None::<InspectContainerOptions>).await {
        Ok(_) => {
            logs.line(LogStream::System, &format!("removing {name}, left by an earlier attempt"));
            runtime.remove_container(&name).await?;
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(backend(format!("inspecting container {name}"))(e)),
    }

    let image = req.image.as_ref().map_or_else(|| runtime.job_image.clone(), |image| image.0.clone());
    runtime.ensure_image(&image, logs).await?;
    let mut labels = names.labels();
    labels.insert(LABEL_TASK.to_string(), req.name.clone());
    let mounts = req.source_dir.as_ref().map(|source| {
        vec![Mount {
            target: Some(WORKSPACE.to_string()),
            source: Some(source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            ..Default::default()
        }]
    });
    let config = ContainerCreateBody {
        image: Some(image.clone()),
        cmd: Some(req.command.clone()),
        env: Some(req.env_vars.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: req.source_dir.as_ref().map(|_| WORKSPACE.to_string()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(names.network().to_string()),
            extra_hosts: Some(vec![HOST_GATEWAY.to_string()]),
            // An init process forwards signals to the command and reaps what it leaves.
            init: Some(true),
            mounts,
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let id = match runtime.docker.create_container(Some(options), config).await {
        Ok(created) => created.id,
        Err(e) if is_not_found(&e) => {
            return Err(RuntimeError::Failed(format!(
                "cannot run task `{}`: no image {image} on the engine",
                req.name
            )));
        }
        Err(e) => return Err(backend(format!("creating container {name}"))(e)),
    };
    let guard = RemoveOnDrop(Some((runtime.clone(), id.clone())));

    // Attached before the start, so no output is missed, whatever the log driver.
    let attach = AttachContainerOptionsBuilder::new().stream(true).stdout(true).stderr(true).build();
    let attached =
        runtime.docker.attach_container(&id, Some(attach)).await.map_err(backend(format!("attaching to {name}")))?;
    runtime.docker.start_container(&id, None).await.map_err(backend(format!("starting container {name}")))?;
    tracing::debug!(task = %req.name, container = %name, "task started");

    let mut forwarding = pin!(forward_output(attached.output, logs));
    let mut ended = pin!(async {
        let outcome = tokio::select! {
            code = exit_code(runtime, &id) => return code.map(|code| TaskOutcome::Exited(code as i32)),
            () = tokio::time::sleep(req.timeout) => TaskOutcome::TimedOut,
            () = cancel.cancelled() => TaskOutcome::Cancelled,
        };
        logs.line(LogStream::System, &format!("stopping {name}: {}", describe(outcome)));
        runtime.stop_and_remove(&id).await.map(|()| outcome)
    });
    let mut forwarded = false;
    let outcome = tokio::select! {
        outcome = &mut ended => outcome,
        () = &mut forwarding => {
            forwarded = true;
            ended.await
        }
    };
    if !forwarded {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, forwarding).await;
    }
    runtime.remove_container(&id).await?;
    drop(guard.disarm());
    outcome
}

/// The container's exit code, once it has exited.
async fn exit_code(runtime: &DockerRuntime, id: &str) -> Result<i64, RuntimeError> {
    match runtime.docker.wait_container(id, None).next().await {
        Some(Ok(exit)) => Ok(exit.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) if is_not_found(&e) => {
            Err(RuntimeError::Failed(format!("the task's container {id} was removed while it ran")))
        }
        Some(Err(e)) => Err(backend(format!("waiting for container {id}"))(e)),
        None => Err(RuntimeError::Failed(format!("the engine stopped reporting on container {id}"))),
    }
}

fn describe(outcome: TaskOutcome) -> &'static str {
    match outcome {
        TaskOutcome::TimedOut => "timed out",
        TaskOutcome::Cancelled => "cancelled",
        TaskOutcome::Exited(_) | TaskOutcome::Signalled(_) => "ended",
    }
}

/// Removes the task's container if the task's future is dropped (its worker lost
/// the run): nothing else would stop it.
struct RemoveOnDrop(Option<(DockerRuntime, String)>);

impl RemoveOnDrop {
    fn disarm(mut self) -> Self {
        self.0 = None;
        self
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some((runtime, id)) = self.0.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(async move { runtime.remove_container(&id).await });
        }
    }
}
