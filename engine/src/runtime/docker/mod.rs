//! The `docker` runtime: images built by a Docker engine, services and tasks as
//! containers on it, through its API (bollard). For one machine, like a careful
//! operator with `docker` on it.
//!
//! # What it creates
//!
//! Names use `_` between their parts: application, environment, service and volume
//! names only hold `a-z`, `0-9` and `-`, so no two environments share a name.
//!
//! ```text
//! image      shiplog/<app>/<service>:<commit>              built from the service's context
//! image      <registry>/<app>/<service>:<commit>           the same, pushed (release stage)
//! network    shiplog_<app>_<env>                           one bridge network per environment
//! volume     shiplog_<app>_<env>_<volume>                  named volumes
//! container  shiplog_<app>_<env>_<service>_<spec hash>     a version of a service
//! container  shiplog_<app>_<env>_task_<task>               a release command, job or hook
//! ```
//!
//! Every network, volume and container carries the labels `shiplog.environment`
//! (`<app>/<env>`) and `shiplog.application`; containers also `shiplog.service` or
//! `shiplog.task`. Teardown and `observe` find everything by these labels, so any
//! shiplog process talking to the same engine sees and controls the same objects:
//! the engine is the only state.
//!
//! # Services
//!
//! A service version is one container on the environment's network. The version
//! that **serves** is the one holding the network alias `<service>`: other
//! containers of the environment reach it as `http://<service>:<port>` (as with
//! `docker compose`), and from the Docker host it answers on its address on the
//! environment's network ([`DockerRuntime::service_address`]). A container's labels
//! cannot change, so the alias, which can, marks the serving container.
//!
//! A roll-out starts the new version beside the old one without the alias, waits
//! until it is healthy, gives it the alias, then stops and removes the old one: no
//! moment without a healthy version serving. If the new version never becomes
//! healthy it is removed and the old one serves on, untouched. The container name
//! holds a hash of everything that runs (image, command, variables, ports,
//! volumes), so rolling out what already serves changes nothing. Each roll-out
//! starts by removing the containers of the service that do not serve (what an
//! interrupted roll-out left, or versions that died), so a worker that resumes a
//! roll-out ends with exactly one container serving.
//!
//! Health checks: an HTTP check is a GET from shiplog to the container's address
//! on the environment's network; a command check runs in the container (`docker
//! exec`); without either, an image `HEALTHCHECK` is waited for, and otherwise a
//! version counts as healthy once it has run for 300 ms. Serving containers
//! restart unless stopped (`unless-stopped`); a version being rolled out does not,
//! so one that crashes fails its roll-out at once.
//!
//! Containers see the request's variables, `PORT` (the first port, unless set),
//! their volumes at their mount paths, and the Docker host as
//! `host.docker.internal` (as on Docker Desktop).
//!
//! # Registry
//!
//! With a registry configured, the release stage pushes each built image
//! (`registry.rs`) and services and tasks run from the pushed image by digest
//! (`<registry>/<app>/<service>@sha256:…`); an engine that lacks it pulls it first.
//!
//! # Tasks
//!
//! A task is a one-off container on the environment's network, from the task's
//! image, or from the job image ([`DockerRuntime::with_job_image`]) for tasks
//! without one. A task on a checkout (a job) gets it bind-mounted at `/workspace`
//! as its working directory. Output is streamed line by line; on timeout or cancel
//! the container is stopped (SIGTERM, SIGKILL after 5 s); it is removed afterwards
//! in every case, and a container of the same task left by an earlier attempt is
//! removed before the task starts.
//!
//! # Limitations
//!
//! - shiplog must run on the Docker host (or on a machine routed into its bridge
//!   networks): HTTP health checks and [`DockerRuntime::service_address`] use
//!   container addresses. No port is published on the host, because the old and
//!   new versions of a roll-out could not both bind it.
//! - One container per service: `replicas` above 1 runs one (and the roll-out's log
//!   says so); `replicas` 0 removes the service's containers.
//! - Images are shared by the environments of an application and not removed by
//!   teardown; a build is reused when the tag exists with the same context,
//!   Dockerfile, arguments and target. `.dockerignore` is not read: the context
//!   is sent whole, without `.git`.
//! - The classic builder builds (the engine's API default): no BuildKit-only
//!   Dockerfile syntax.
//! - The service's variables, secrets included, are in its container's
//!   configuration: anyone who can use the Docker socket can read them.

mod build;
mod registry;
mod rollout;
mod task;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, StopContainerOptionsBuilder,
};
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::output::Lines;
use super::policy::STOP_GRACE;
use super::{
    BuildRequest, EnvironmentRef, Image, ImageRef, LogSink, LogStream, ObservedService, PushRequest, Runtime,
    RuntimeError, ServiceHealth, ServiceRequest, TaskOutcome, TaskRequest, check_name,
};

/// The image tasks without an image of their own (jobs, hooks before any deploy)
/// run from, unless [`DockerRuntime::with_job_image`] says otherwise.
pub const DEFAULT_JOB_IMAGE: &str = "busybox:latest";

const LABEL_APPLICATION: &str = "shiplog.application";
const LABEL_ENVIRONMENT: &str = "shiplog.environment";
const LABEL_SERVICE: &str = "shiplog.service";
const LABEL_TASK: &str = "shiplog.task";
/// The image as the roll-out was asked to run it (an id or a reference).
const LABEL_IMAGE: &str = "shiplog.image";

/// The `docker` runtime. Cheap to clone; holds only the engine's connection.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    job_image: String,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime").field("job_image", &self.job_image).finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://` or `tcp://`), or to
    /// the local socket `/var/run/docker.sock`, and settles on the newest API
    /// version both sides speak (engines older than bollard's default are common).
    /// Fails with a clear error when no engine answers.
    pub async fn connect() -> Result<DockerRuntime, RuntimeError> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let unreachable = |source: DockerError| RuntimeError::Backend {
            context: format!("no Docker engine answers at {host} (is it running, and may this user use it?)"),
            source: source.into(),
        };
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        tracing::info!(%host, api = ?docker.client_version(), "connected to the Docker engine");
        Ok(DockerRuntime { docker, job_image: DEFAULT_JOB_IMAGE.to_string() })
    }

    /// Tasks without an image (jobs, and hooks of an environment where nothing was
    /// deployed) run from `image` instead of [`DEFAULT_JOB_IMAGE`].
    pub fn with_job_image(mut self, image: impl Into<String>) -> DockerRuntime {
        self.job_image = image.into();
        self
    }

    /// The address, on the environment's network, of the running container that
    /// serves `service`; `None` when none does. Reachable from the Docker host.
    pub async fn service_address(&self, env: &EnvironmentRef, service: &str) -> Result<Option<IpAddr>, RuntimeError> {
        let names = Names::of(env)?;
        let containers = self.service_containers(&names, Some(service)).await?;
        Ok(containers.iter().find(|c| c.serving && c.running).and_then(|c| c.address))
    }
}

/// The names and labels of one environment's objects.
struct Names {
    env: EnvironmentRef,
    /// `shiplog_<app>_<env>`: the network, and the prefix of every other name.
    prefix: String,
}

impl Names {
    fn of(env: &EnvironmentRef) -> Result<Names, RuntimeError> {
        check_name("application", &env.application)?;
        check_name("environment", &env.environment)?;
        Ok(Names { prefix: format!("shiplog_{}_{}", env.application, env.environment), env: env.clone() })
    }

    fn network(&self) -> &str {
        &self.prefix
    }

    fn volume(&self, volume: &str) -> String {
        format!("{}_{volume}", self.prefix)
    }

    fn environment_label(&self) -> String {
        format!("{}/{}", self.env.application, self.env.environment)
    }

    /// The labels every object of the environment carries.
    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_APPLICATION.to_string(), self.env.application.clone()),
            (LABEL_ENVIRONMENT.to_string(), self.environment_label()),
        ])
    }

    /// A list filter selecting the environment's objects that also match `also`:
    /// labels as `key` (present) or `key=value`.
    fn filter(&self, also: &[String]) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{LABEL_ENVIRONMENT}={}", self.environment_label())];
        labels.extend(also.iter().cloned());
        HashMap::from([("label".to_string(), labels)])
    }
}

/// One container of a service, as the engine reports it.
struct ServiceContainer {
    id: String,
    name: String,
    service: String,
    /// The `shiplog.image` label.
    image: Image,
    running: bool,
    /// Holds the service's alias on the environment's network.
    serving: bool,
    /// Its address on the environment's network, while it runs.
    address: Option<IpAddr>,
    health: Option<ServiceHealth>,
    created: String,
}

impl ServiceContainer {
    fn of(names: &Names, inspect: ContainerInspectResponse) -> Option<ServiceContainer> {
        let labels = inspect.config.as_ref()?.labels.clone().unwrap_or_default();
        let service = labels.get(LABEL_SERVICE)?.clone();
        let state = inspect.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let endpoint = inspect.network_settings.and_then(|s| s.networks).and_then(|mut n| n.remove(names.network()));
        let serving =
            endpoint.as_ref().and_then(|e| e.aliases.as_ref()).is_some_and(|aliases| aliases.contains(&service));
        let address = endpoint.and_then(|e| e.ip_address).and_then(|ip| ip.parse().ok()).filter(|_| running);
        let health = state.health.and_then(|h| h.status).and_then(|status| {
            use bollard::models::HealthStatusEnum as S;
            match status {
                S::STARTING => Some(ServiceHealth::Starting),
                S::HEALTHY => Some(ServiceHealth::Healthy),
                S::UNHEALTHY => Some(ServiceHealth::Unhealthy),
                S::NONE | S::EMPTY => None,
            }
        });
        Some(ServiceContainer {
            id: inspect.id.unwrap_or_default(),
            name: inspect.name.unwrap_or_default().trim_start_matches('/').to_string(),
            image: Image(labels.get(LABEL_IMAGE).cloned().unwrap_or_default()),
            service,
            running,
            serving,
            address,
            health,
            created: inspect.created.map(|c| c.to_string()).unwrap_or_default(),
        })
    }
}

impl Runtime for DockerRuntime {
    /// See [the module docs](self). The image returned is the image id
    /// (`sha256:…`), so deploys run exactly what was built.
    async fn build(&self, req: &BuildRequest, logs: &dyn LogSink) -> Result<Image, RuntimeError> {
        build::build(self, req, logs).await
    }

    /// Tags the built image `<repository>:<tag>`, pushes it through the engine and
    /// returns it by the registry's digest (see `registry.rs`).
    async fn push(&self, req: &PushRequest, logs: &dyn LogSink) -> Result<ImageRef, RuntimeError> {
        self.push_image(req, logs).await
    }

    /// Creates the environment's network and volumes if they do not exist.
    async fn ensure_infrastructure(&self, env: &EnvironmentRef, volumes: &[String]) -> Result<(), RuntimeError> {
        let names = Names::of(env)?;
        self.ensure_network(&names).await?;
        self.ensure_volumes(&names, volumes).await
    }

    async fn run_task(
        &self,
        req: &TaskRequest,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, RuntimeError> {
        task::run(self, req, logs, cancel).await
    }

    async fn roll_out(&self, req: &ServiceRequest, logs: &dyn LogSink) -> Result<(), RuntimeError> {
        rollout::roll_out(self, req, logs).await
    }

    /// Removes every container (running tasks included), network and volume
    /// labelled with the environment. Tearing down an unknown or already removed
    /// environment succeeds.
    async fn teardown(&self, env: &EnvironmentRef) -> Result<(), RuntimeError> {
        let names = Names::of(env)?;
        let filter = names.filter(&[]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filter).build();
        let containers = self.docker.list_containers(Some(options)).await.map_err(backend("listing containers"))?;
        for container in &containers {
            if let Some(id) = &container.id {
                self.remove_container(id).await?;
            }
        }
        let options = ListNetworksOptionsBuilder::new().filters(&filter).build();
        let networks = self.docker.list_networks(Some(options)).await.map_err(backend("listing networks"))?;
        for network in networks.iter().filter_map(|n| n.id.as_deref()) {
            match self.docker.remove_network(network).await {
                Err(e) if is_not_found(&e) => {}
                other => other.map_err(backend(format!("removing network {network}")))?,
            }
        }
        let options = ListVolumesOptionsBuilder::new().filters(&filter).build();
        let volumes = self.docker.list_volumes(Some(options)).await.map_err(backend("listing volumes"))?;
        for volume in volumes.volumes.unwrap_or_default() {
            match self.docker.remove_volume(&volume.name, None::<RemoveVolumeOptions>).await {
                Err(e) if is_not_found(&e) => {}
                other => other.map_err(backend(format!("removing volume {}", volume.name)))?,
            }
        }
        tracing::info!(application = %env.application, environment = %env.environment, containers = containers.len(), "torn down");
        Ok(())
    }

    /// One entry per service that has a container, sorted by service: the
    /// container that serves, or else the newest. `running` is the container's
    /// state; `health` is Docker's health status where a `HEALTHCHECK` runs. A
    /// service whose containers were removed is absent.
    async fn observe(&self, env: &EnvironmentRef) -> Result<Vec<ObservedService>, RuntimeError> {
        let names = Names::of(env)?;
        let mut by_service: BTreeMap<String, ServiceContainer> = BTreeMap::new();
        for container in self.service_containers(&names, None).await? {
            let better = match by_service.get(&container.service) {
                None => true,
                Some(seen) => (container.serving, &container.created) > (seen.serving, &seen.created),
            };
            if better {
                by_service.insert(container.service.clone(), container);
            }
        }
        Ok(by_service
            .into_values()
            .map(|c| ObservedService { service: c.service, image: c.image, running: c.running, health: c.health })
            .collect())
    }
}

impl DockerRuntime {
    async fn ensure_network(&self, names: &Names) -> Result<(), RuntimeError> {
        match self.docker.inspect_network(names.network(), None).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(backend(format!("inspecting network {}", names.network()))(e)),
        }
        let request = NetworkCreateRequest {
            name: names.network().to_string(),
            driver: Some("bridge".to_string()),
            labels: Some(names.labels()),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            // Created meanwhile by someone else: what we wanted.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            other => other.map(|_| ()).map_err(backend(format!("creating network {}", names.network()))),
        }
    }

    /// Creates the volumes with the environment's labels (creating an existing
    /// volume changes nothing). Containers must never create them implicitly: the
    /// engine would create them without labels, and teardown would miss them.
    async fn ensure_volumes(&self, names: &Names, volumes: &[String]) -> Result<(), RuntimeError> {
        for volume in volumes {
            check_name("volume", volume)?;
            let name = names.volume(volume);
            let request =
                VolumeCreateRequest { name: Some(name.clone()), labels: Some(names.labels()), ..Default::default() };
            self.docker.create_volume(request).await.map_err(backend(format!("creating volume {name}")))?;
        }
        Ok(())
    }

    /// The containers of the environment's services (of `service` only, if given),
    /// running or not.
    async fn service_containers(
        &self,
        names: &Names,
        service: Option<&str>,
    ) -> Result<Vec<ServiceContainer>, RuntimeError> {
        let filter = match service {
            Some(service) => names.filter(&[format!("{LABEL_SERVICE}={service}")]),
            None => names.filter(&[LABEL_SERVICE.to_string()]),
        };
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filter).build();
        let listed = self.docker.list_containers(Some(options)).await.map_err(backend("listing containers"))?;
        let mut containers = Vec::new();
        for id in listed.iter().filter_map(|c| c.id.as_deref()) {
            match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
                Ok(inspect) => containers.extend(ServiceContainer::of(names, inspect)),
                // Removed between the listing and now.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(backend(format!("inspecting container {id}"))(e)),
            }
        }
        Ok(containers)
    }

    /// Stops a container (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and removes it.
    async fn stop_and_remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::new().t(STOP_GRACE.as_secs() as i32).build();
        match self.docker.stop_container(id, Some(options)).await {
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped. Anything else: removing by force still ends it.
            Err(e) => tracing::debug!(container = id, error = %e, "stopping a container"),
            Ok(()) => {}
        }
        self.remove_container(id).await
    }

    /// Removes a container by force (SIGKILL if it runs); gone already is fine.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if is_not_found(&e) => Ok(()),
            // 409: removal already in progress (a concurrent teardown).
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            other => other.map_err(backend(format!("removing container {id}"))),
        }
    }
}

/// Forwards a container's output (a task's, a failed version's, a command check's)
/// line by line until it ends.
pub(super) async fn forward_output(
    mut output: impl Stream<Item = Result<LogOutput, DockerError>> + Unpin,
    logs: &dyn LogSink,
) {
    let (mut stdout, mut stderr) = (Lines::new(LogStream::Stdout), Lines::new(LogStream::Stderr));
    while let Some(chunk) = output.next().await {
        match chunk {
            Ok(LogOutput::StdErr { message }) => stderr.push(&message, logs),
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => stdout.push(&message, logs),
            Ok(LogOutput::StdIn { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a container's output");
                break;
            }
        }
    }
    stdout.finish(logs);
    stderr.finish(logs);
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// Wraps an engine error with what shiplog was doing.
fn backend(context: impl Into<String>) -> impl FnOnce(DockerError) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Backend { context, source: source.into() }
}
