//! [`KubernetesRuntime`]: the objects of `manifests` applied to a cluster with
//! `kube`, by server-side apply with field manager `shiplog` (applying the same
//! objects again changes nothing, not even a `resourceVersion`).
//!
//! - Setup ([`Runtime::ensure_infrastructure`]): the environment's namespace,
//!   labelled with the application and environment, and a claim per volume. A
//!   namespace whose labels name another environment is never touched.
//! - Roll-out: the service's ConfigMap, Secret and Service, then its Deployment;
//!   then the roll-out is waited for (`rollout::state`) until the health check's
//!   deadline. A roll-out that fails (the cluster gives up, or a new pod says it
//!   will not come up, e.g. `ImagePullBackOff`) or times out puts the previous pod
//!   template back (the old pods served throughout, `maxUnavailable: 0`) and fails
//!   with the reason; a first roll-out that fails removes its Deployment.
//! - Teardown: the namespace deleted, and waited for until it is gone.
//! - `observe`: the namespace's Deployments managed by shiplog.
//!
//! Which of a service's variables are secret is not in the request yet, so every
//! variable goes to the service's Secret and none to its ConfigMap: a secret value
//! is never in a ConfigMap.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::K8sName;
use super::manifests::{self, FIELD_MANAGER, MANAGED_BY, SERVICE, SERVICE_NAME, ServiceNames};
use super::rollout::{self, Rollout};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::policy::HEALTH_POLL;
use crate::runtime::{
    BuildRequest, EnvironmentRef, Image, ImageRef, LogSink, LogStream, ObservedService, PushRequest, Runtime,
    RuntimeError, ServiceRequest, TaskOutcome, TaskRequest, deadline_after, fmt_duration, service_variables,
};

/// How long a namespace may take to go once deleted (its pods' grace periods and
/// the cluster's finalizers).
const NAMESPACE_GONE: Duration = Duration::from_secs(120);

/// The kubernetes runtime. Cheap to clone: a client of the cluster, and the
/// Docker engine that builds and pushes images.
#[derive(Clone)]
pub struct KubernetesRuntime {
    client: Client,
    images: DockerRuntime,
}

impl Debug for KubernetesRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime").field("images", &self.images).finish_non_exhaustive()
    }
}

impl KubernetesRuntime {
    /// The cluster of `context` in the kubeconfig (`KUBECONFIG`, else
    /// `~/.kube/config`); without a context, the kubeconfig's current one, or the
    /// in-cluster service account when shiplog runs in a pod.
    pub async fn connect(context: Option<&str>, images: DockerRuntime) -> Result<KubernetesRuntime, RuntimeError> {
        let config = match context {
            Some(context) => {
                let options = KubeConfigOptions { context: Some(context.to_owned()), ..KubeConfigOptions::default() };
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(backend(format!("reading the kubeconfig context {context}")))?
            }
            None => Config::infer().await.map_err(backend("finding the cluster (kubeconfig or in-cluster)"))?,
        };
        KubernetesRuntime::with_config(config, images)
    }

    /// The cluster of `context` (else the current one) in the kubeconfig at `path`.
    pub async fn from_kubeconfig(
        path: &Path,
        context: Option<&str>,
        images: DockerRuntime,
    ) -> Result<KubernetesRuntime, RuntimeError> {
        let reading = format!("reading the kubeconfig {}", path.display());
        let kubeconfig = Kubeconfig::read_from(path).map_err(backend(reading.clone()))?;
        let options = KubeConfigOptions { context: context.map(str::to_owned), ..KubeConfigOptions::default() };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(backend(reading))?;
        KubernetesRuntime::with_config(config, images)
    }

    fn with_config(config: Config, images: DockerRuntime) -> Result<KubernetesRuntime, RuntimeError> {
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(backend(format!("a client for the cluster at {server}")))?;
        Ok(KubernetesRuntime { client, images })
    }

    fn namespaced<K>(&self, env: &EnvironmentRef) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), K8sName::namespace(env).as_str())
    }

    /// The environment's namespace as the cluster has it; a namespace of that name
    /// labelled for another environment is an error.
    async fn own_namespace(&self, env: &EnvironmentRef) -> Result<Option<Namespace>, RuntimeError> {
        let name = K8sName::namespace(env);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let found = api.get_opt(name.as_str()).await.map_err(backend(format!("reading namespace {name}")))?;
        if let Some(namespace) = &found {
            let labels = namespace.metadata.labels.clone().unwrap_or_default();
            let ours = manifests::environment_labels(env);
            if ours.iter().any(|(k, v)| labels.get(k) != Some(v)) {
                return Err(RuntimeError::Failed(format!(
                    "namespace {name} exists but is not {}/{}'s (its labels: {labels:?}); shiplog leaves it alone",
                    env.application, env.environment
                )));
            }
        }
        Ok(found)
    }

    /// Waits for the roll-out of `deployment` until `deadline`: `Ok` once complete,
    /// else the reason it failed.
    async fn wait_rolled_out(
        &self,
        req: &ServiceRequest,
        workload: &K8sName,
        logs: &dyn LogSink,
    ) -> Result<(), String> {
        let deployments: Api<Deployment> = self.namespaced(&req.env);
        let pods: Api<Pod> = self.namespaced(&req.env);
        let selector = ListParams::default().labels(&format!("{SERVICE}={workload}"));
        let deadline = deadline_after(req.health_timeout);
        let mut said = String::new();
        loop {
            let deployment =
                deployments.get(workload.as_str()).await.map_err(|e| format!("reading Deployment {workload}: {e}"))?;
            let waiting = match rollout::state(&deployment) {
                Rollout::Complete => return Ok(()),
                Rollout::Failed(reason) => return Err(reason),
                Rollout::Waiting(what) => what,
            };
            let listed = pods.list(&selector).await.map_err(|e| format!("listing the pods of {workload}: {e}"))?;
            let problem = rollout::pod_problem(&listed.items);
            if let Some((reason, true)) = &problem {
                return Err(reason.clone());
            }
            if waiting != said {
                logs.line(LogStream::System, &format!("roll-out of {}: {waiting}", req.service));
                said = waiting.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                let why = problem.map_or(waiting, |(reason, _)| reason);
                return Err(format!("not rolled out within {}: {why}", fmt_duration(req.health_timeout)));
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }
}

/// Server-side apply of `object` with field manager `shiplog`, taking over fields
/// someone else changed behind shiplog's back (`force`).
async fn apply<K>(api: &Api<K>, object: &K) -> Result<K, RuntimeError>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    <K as Resource>::DynamicType: Default,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(backend(format!("applying {} {name}", K::kind(&K::DynamicType::default()))))
}

impl Runtime for KubernetesRuntime {
    /// Built by the Docker engine, as on `docker`; the release stage pushes it.
    async fn build(&self, req: &BuildRequest, logs: &dyn LogSink) -> Result<Image, RuntimeError> {
        self.images.build(req, logs).await
    }

    async fn push(&self, req: &PushRequest, logs: &dyn LogSink) -> Result<ImageRef, RuntimeError> {
        self.images.push(req, logs).await
    }

    async fn ensure_infrastructure(&self, env: &EnvironmentRef, volumes: &[String]) -> Result<(), RuntimeError> {
        if let Some(namespace) = self.own_namespace(env).await?
            && namespace.metadata.deletion_timestamp.is_some()
        {
            return Err(RuntimeError::Failed(format!(
                "namespace {} is being deleted (a teardown); set up again once it is gone",
                K8sName::namespace(env)
            )));
        }
        apply(&Api::all(self.client.clone()), &manifests::namespace(env)).await?;
        let claims: Api<PersistentVolumeClaim> = self.namespaced(env);
        for volume in volumes {
            apply(&claims, &manifests::volume_claim(env, volume)).await?;
        }
        Ok(())
    }

    async fn run_task(
        &self,
        req: &TaskRequest,
        _logs: &dyn LogSink,
        _cancel: &CancellationToken,
    ) -> Result<TaskOutcome, RuntimeError> {
        Err(RuntimeError::Failed(format!(
            "{} cannot run: release commands, jobs and hooks do not run on the kubernetes runtime yet",
            req.name
        )))
    }

    async fn roll_out(&self, req: &ServiceRequest, logs: &dyn LogSink) -> Result<(), RuntimeError> {
        let names = ServiceNames::of(&req.service);
        let everything: BTreeSet<String> = service_variables(&req.ports, &req.env_vars).into_keys().collect();
        let (plain, secret) = manifests::variables(req, &everything);
        let digest = manifests::variables_digest(&plain, &secret);
        apply(&self.namespaced(&req.env), &manifests::config_map(req, plain)).await?;
        apply::<Secret>(&self.namespaced(&req.env), &manifests::secret(req, secret)).await?;
        if let Some(service) = manifests::service(req) {
            apply::<Service>(&self.namespaced(&req.env), &service).await?;
        }
        let deployments: Api<Deployment> = self.namespaced(&req.env);
        let workload = names.workload.as_str();
        let previous =
            deployments.get_opt(workload).await.map_err(backend(format!("reading Deployment {workload}")))?;
        let wanted = manifests::deployment(req, &digest);
        apply(&deployments, &wanted).await?;
        let Err(reason) = self.wait_rolled_out(req, &names.workload, logs).await else {
            logs.line(LogStream::System, &format!("{} rolled out to {}", req.service, req.image.0));
            return Ok(());
        };
        logs.line(LogStream::System, &format!("roll-out of {} failed: {reason}", req.service));
        match previous.map(|p| p.spec.template) {
            Some(template) => {
                let mut restored = wanted;
                restored.spec.template = template;
                apply(&deployments, &restored).await?;
                logs.line(LogStream::System, &format!("{} is back at its previous pod template", req.service));
            }
            None => match deployments.delete(workload, &DeleteParams::foreground()).await {
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                other => {
                    other.map_err(backend(format!("removing Deployment {workload}")))?;
                }
            },
        }
        Err(RuntimeError::Failed(format!("the roll-out of {} failed: {reason}", req.service)))
    }

    /// Deletes the namespace and waits until it is gone; an environment without
    /// one succeeds at once.
    async fn teardown(&self, env: &EnvironmentRef) -> Result<(), RuntimeError> {
        let name = K8sName::namespace(env);
        if self.own_namespace(env).await?.is_none() {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.delete(name.as_str(), &DeleteParams::background()).await {
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
            other => {
                other.map_err(backend(format!("deleting namespace {name}")))?;
            }
        }
        let deadline = deadline_after(NAMESPACE_GONE);
        while api.get_opt(name.as_str()).await.map_err(backend(format!("reading namespace {name}")))?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Failed(format!(
                    "namespace {name} is still there {} after it was deleted",
                    fmt_duration(NAMESPACE_GONE)
                )));
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
        tracing::info!(application = %env.application, environment = %env.environment, %name, "torn down");
        Ok(())
    }

    /// One entry per Deployment shiplog manages in the namespace, sorted by
    /// service: its container's image as applied, and running while it asks for
    /// replicas and one of them is available. Only those fields are read, so what
    /// the API server defaults is never drift.
    async fn observe(&self, env: &EnvironmentRef) -> Result<Vec<ObservedService>, RuntimeError> {
        if self.own_namespace(env).await?.is_none() {
            return Ok(Vec::new());
        }
        let deployments: Api<Deployment> = self.namespaced(env);
        let params = ListParams::default().labels(&format!("{MANAGED_BY}={FIELD_MANAGER}"));
        let listed = deployments.list(&params).await.map_err(backend("listing Deployments"))?;
        let mut observed: Vec<ObservedService> = listed
            .items
            .into_iter()
            .filter_map(|deployment| {
                let service = deployment.metadata.annotations.as_ref()?.get(SERVICE_NAME)?.clone();
                let spec = deployment.spec;
                let image = spec.template.spec?.containers.first()?.image.clone().unwrap_or_default();
                let available = deployment.status.and_then(|s| s.available_replicas).unwrap_or(0);
                let running = spec.replicas.unwrap_or(1) > 0 && available > 0;
                Some(ObservedService { service, image: Image(image), running, health: None })
            })
            .collect();
        observed.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(observed)
    }
}

/// Wraps a client error with what shiplog was doing.
fn backend<E: std::error::Error + Send + Sync + 'static>(context: impl Into<String>) -> impl FnOnce(E) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Backend { context, source: source.into() }
}
