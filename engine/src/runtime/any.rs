//! [`AnyRuntime`]: the runtime chosen at run time (`shiplog serve --runtime docker`).
//! [`Runtime`] returns `impl Future`, so it cannot be a trait object; this enum
//! delegates each call to the runtime it holds instead.

use tokio_util::sync::CancellationToken;

use super::docker::DockerRuntime;
use super::kubernetes::KubernetesRuntime;
use super::process::ProcessRuntime;
use super::{
    BuildRequest, EnvironmentRef, Image, ImageRef, LogSink, ObservedService, PushRequest, Runtime, RuntimeError,
    ServiceRequest, TaskOutcome, TaskRequest,
};

/// One of shiplog's runtimes.
#[derive(Debug, Clone)]
pub enum AnyRuntime {
    Process(ProcessRuntime),
    Docker(DockerRuntime),
    Kubernetes(KubernetesRuntime),
}

impl Runtime for AnyRuntime {
    async fn build(&self, req: &BuildRequest, logs: &dyn LogSink) -> Result<Image, RuntimeError> {
        match self {
            AnyRuntime::Process(runtime) => runtime.build(req, logs).await,
            AnyRuntime::Docker(runtime) => runtime.build(req, logs).await,
            AnyRuntime::Kubernetes(runtime) => runtime.build(req, logs).await,
        }
    }

    async fn push(&self, req: &PushRequest, logs: &dyn LogSink) -> Result<ImageRef, RuntimeError> {
        match self {
            AnyRuntime::Process(runtime) => runtime.push(req, logs).await,
            AnyRuntime::Docker(runtime) => runtime.push(req, logs).await,
            AnyRuntime::Kubernetes(runtime) => runtime.push(req, logs).await,
        }
    }

    async fn ensure_infrastructure(&self, env: &EnvironmentRef, volumes: &[String]) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Process(runtime) => runtime.ensure_infrastructure(env, volumes).await,
            AnyRuntime::Docker(runtime) => runtime.ensure_infrastructure(env, volumes).await,
            AnyRuntime::Kubernetes(runtime) => runtime.ensure_infrastructure(env, volumes).await,
        }
    }

    async fn run_task(
        &self,
        req: &TaskRequest,
        logs: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, RuntimeError> {
        match self {
            AnyRuntime::Process(runtime) => runtime.run_task(req, logs, cancel).await,
            AnyRuntime::Docker(runtime) => runtime.run_task(req, logs, cancel).await,
            AnyRuntime::Kubernetes(runtime) => runtime.run_task(req, logs, cancel).await,
        }
    }

    async fn roll_out(&self, req: &ServiceRequest, logs: &dyn LogSink) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Process(runtime) => runtime.roll_out(req, logs).await,
            AnyRuntime::Docker(runtime) => runtime.roll_out(req, logs).await,
            AnyRuntime::Kubernetes(runtime) => runtime.roll_out(req, logs).await,
        }
    }

    async fn teardown(&self, env: &EnvironmentRef) -> Result<(), RuntimeError> {
        match self {
            AnyRuntime::Process(runtime) => runtime.teardown(env).await,
            AnyRuntime::Docker(runtime) => runtime.teardown(env).await,
            AnyRuntime::Kubernetes(runtime) => runtime.teardown(env).await,
        }
    }

    async fn observe(&self, env: &EnvironmentRef) -> Result<Vec<ObservedService>, RuntimeError> {
        match self {
            AnyRuntime::Process(runtime) => runtime.observe(env).await,
            AnyRuntime::Docker(runtime) => runtime.observe(env).await,
            AnyRuntime::Kubernetes(runtime) => runtime.observe(env).await,
        }
    }
}
