//! The `kubernetes` runtime against the API server stand-in
//! (`shiplog_tests::kube`), or against a real cluster when
//! `SHIPLOG_TEST_KUBECONFIG` names one: setup, ensure semantics, drift, teardown,
//! an unreachable cluster. What the cluster holds is read back with `kube`
//! itself, not through the runtime. Each test works in an application of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::json;
use shiplog_engine::runtime::kubernetes::KubernetesRuntime;
use shiplog_engine::runtime::{
    EnvironmentRef, HealthCheck, Image, ObservedService, Runtime, RuntimeError, ServiceRequest,
};
use shiplog_tests::kube::Cluster;
use shiplog_tests::{docker, eventually};

use crate::docker::Collect;

/// A cluster, shiplog's runtime on it, and a client to look at it independently.
struct Fixture {
    runtime: KubernetesRuntime,
    client: Client,
    env: EnvironmentRef,
    _cluster: Cluster,
}

impl Fixture {
    async fn new() -> Option<Fixture> {
        let images = docker::docker().await?;
        let cluster = Cluster::start().await;
        let runtime = KubernetesRuntime::from_kubeconfig(cluster.kubeconfig(), None, images).await.unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig()).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = Client::try_from(config).unwrap();
        Some(Fixture { runtime, client, env: docker::unique_env("review-1"), _cluster: cluster })
    }

    fn namespace(&self) -> String {
        format!("{}-{}", self.env.application, self.env.environment)
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace())
    }

    fn web(&self, image: &str) -> ServiceRequest {
        ServiceRequest {
            env: self.env.clone(),
            service: "web".into(),
            image: Image(image.into()),
            command: vec!["sh".into(), "-c".into(), "exec httpd -f -p $PORT".into()],
            env_vars: BTreeMap::from([("MODE".into(), "demo".into())]),
            ports: vec![18080],
            replicas: 2,
            health_check: Some(HealthCheck::Http { path: "/".into(), port: 18080 }),
            health_timeout: Duration::from_secs(30),
            volumes: vec![("data".into(), "/data".into())],
            pull_secrets: vec![],
        }
    }

    async fn set_up(&self, image: &str) {
        let logs = Collect::default();
        self.runtime.ensure_infrastructure(&self.env, &["data".to_owned()]).await.unwrap();
        self.runtime.roll_out(&self.web(image), &logs).await.unwrap_or_else(|e| panic!("{e}\n{}", logs.dump()));
    }

    /// The resourceVersion of every object of the environment.
    async fn versions(&self) -> BTreeMap<String, String> {
        let rv = |kind: &str, meta: &kube::api::ObjectMeta| {
            (format!("{kind}/{}", meta.name.clone().unwrap()), meta.resource_version.clone().unwrap())
        };
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut versions =
            BTreeMap::from([rv("namespace", &namespaces.get(&self.namespace()).await.unwrap().metadata)]);
        versions.extend([
            rv("deployment", &self.api::<Deployment>().get("web").await.unwrap().metadata),
            rv("service", &self.api::<Service>().get("web").await.unwrap().metadata),
            rv("configmap", &self.api::<ConfigMap>().get("web-env").await.unwrap().metadata),
            rv("secret", &self.api::<Secret>().get("web-env").await.unwrap().metadata),
            rv("claim", &self.api::<PersistentVolumeClaim>().get("data").await.unwrap().metadata),
        ]);
        versions
    }
}

const IMAGE: &str =
    "127.0.0.1:5000/team/hello/web@sha256:abababababababababababababababababababababababababababababababab";
const OTHER_IMAGE: &str =
    "127.0.0.1:5000/team/hello/web@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

#[tokio::test]
async fn setup_applies_the_environment_as_a_namespace_and_applying_it_again_changes_nothing() {
    let Some(fx) = Fixture::new().await else { return };
    fx.set_up(IMAGE).await;

    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    let labels = namespaces.get(&fx.namespace()).await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels["shiplog.dev/application"], fx.env.application);
    assert_eq!(labels["shiplog.dev/environment"], "review-1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "shiplog");

    let deployment = fx.api::<Deployment>().get("web").await.unwrap();
    let managers: Vec<_> =
        deployment.metadata.managed_fields.iter().flatten().map(|m| (m.manager.clone(), m.operation.clone())).collect();
    assert_eq!(managers, [(Some("shiplog".to_owned()), Some("Apply".to_owned()))]);
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some(IMAGE));
    let status = deployment.status.unwrap();
    assert_eq!((status.observed_generation, status.available_replicas), (Some(1), Some(2)));

    let service = fx.api::<Service>().get("web").await.unwrap().spec.unwrap();
    assert_eq!(service.ports.unwrap()[0].port, 18080);
    let secret = fx.api::<Secret>().get("web-env").await.unwrap();
    let mut keys: Vec<_> = secret.data.unwrap().into_keys().collect();
    keys.sort();
    assert_eq!(keys, ["MODE", "PORT"]);
    let plain = fx.api::<ConfigMap>().get("web-env").await.unwrap().data.unwrap_or_default();
    assert!(plain.is_empty(), "no variable in the ConfigMap: {plain:?}");
    assert!(fx.api::<PersistentVolumeClaim>().get_opt("data").await.unwrap().is_some());

    let before = fx.versions().await;
    fx.set_up(IMAGE).await;
    assert_eq!(fx.versions().await, before, "the second apply changed an object");

    fx.runtime.teardown(&fx.env).await.unwrap();
}

#[tokio::test]
async fn a_deployment_scaled_to_zero_or_deleted_behind_shiplogs_back_is_observed_and_setup_repairs_it() {
    let Some(fx) = Fixture::new().await else { return };
    fx.set_up(IMAGE).await;
    let serving = |image: &str| ObservedService {
        service: "web".into(),
        image: Image(image.into()),
        running: true,
        health: None,
    };
    assert_eq!(fx.runtime.observe(&fx.env).await.unwrap(), [serving(IMAGE)]);

    let deployments = fx.api::<Deployment>();
    let scale = PatchParams { field_manager: Some("kubectl".into()), ..PatchParams::default() };
    deployments.patch("web", &scale, &Patch::Merge(json!({ "spec": { "replicas": 0 } }))).await.unwrap();
    let stopped = ObservedService { running: false, ..serving(IMAGE) };
    eventually("the scaled-down Deployment observed", Duration::from_secs(30), || async {
        (fx.runtime.observe(&fx.env).await.unwrap() == [stopped.clone()]).then_some(())
    })
    .await;

    fx.set_up(IMAGE).await;
    assert_eq!(fx.runtime.observe(&fx.env).await.unwrap(), [serving(IMAGE)]);
    assert_eq!(deployments.get("web").await.unwrap().spec.replicas, Some(2));

    let image = PatchParams { field_manager: Some("kubectl".into()), ..PatchParams::default() };
    let patch =
        json!({ "spec": { "template": { "spec": { "containers": [{ "name": "web", "image": OTHER_IMAGE }] } } } });
    deployments.patch("web", &image, &Patch::Merge(patch)).await.unwrap();
    assert_eq!(fx.runtime.observe(&fx.env).await.unwrap()[0].image, Image(OTHER_IMAGE.into()));

    deployments.delete("web", &Default::default()).await.unwrap();
    assert_eq!(fx.runtime.observe(&fx.env).await.unwrap(), []);
    fx.set_up(IMAGE).await;
    assert_eq!(fx.runtime.observe(&fx.env).await.unwrap(), [serving(IMAGE)]);

    fx.runtime.teardown(&fx.env).await.unwrap();
}

#[tokio::test]
async fn teardown_deletes_the_namespace_and_leaves_nothing_labelled() {
    let Some(fx) = Fixture::new().await else { return };
    fx.set_up(IMAGE).await;
    fx.runtime.teardown(&fx.env).await.unwrap();

    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    assert!(namespaces.get_opt(&fx.namespace()).await.unwrap().is_none());
    let labelled = ListParams::default().labels(&format!("shiplog.dev/application={}", fx.env.application));
    assert!(namespaces.list(&labelled).await.unwrap().items.is_empty());
    let deployments: Api<Deployment> = Api::all(fx.client.clone());
    assert!(deployments.list(&labelled).await.unwrap().items.is_empty());
    assert_eq!(fx.runtime.observe(&fx.env).await.unwrap(), []);
    fx.runtime.teardown(&fx.env).await.expect("tearing down again succeeds");
}

#[tokio::test]
async fn a_namespace_of_the_same_name_that_is_not_the_environments_is_left_alone() {
    let Some(fx) = Fixture::new().await else { return };
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    let foreign: Namespace = serde_json::from_value(json!({ "metadata": { "name": fx.namespace() } })).unwrap();
    namespaces.create(&PostParams::default(), &foreign).await.unwrap();

    let refused = fx.runtime.ensure_infrastructure(&fx.env, &[]).await.unwrap_err();
    let RuntimeError::Failed(message) = refused else { panic!("{refused:?}") };
    assert!(
        message.starts_with(&format!(
            "namespace {} exists but is not {}/review-1's",
            fx.namespace(),
            fx.env.application
        )),
        "{message}"
    );
    let refused = fx.runtime.teardown(&fx.env).await.unwrap_err();
    assert_eq!(refused.to_string(), message);
    assert!(namespaces.get_opt(&fx.namespace()).await.unwrap().is_some(), "teardown left it alone");
    namespaces.delete(&fx.namespace(), &Default::default()).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_cluster_is_an_error_naming_what_shiplog_was_doing() {
    let Some(images) = docker::docker().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: gone\nclusters:\n- name: gone\n  cluster:\n    server: \
             http://127.0.0.1:{port}\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: gone\nusers:\n\
             - name: gone\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let runtime = KubernetesRuntime::from_kubeconfig(&kubeconfig, None, images).await.unwrap();
    let env = docker::unique_env("review-1");
    let failed = runtime.observe(&env).await.unwrap_err();
    let RuntimeError::Backend { context, .. } = &failed else { panic!("{failed:?}") };
    assert_eq!(context, &format!("reading namespace {}-review-1", env.application));
}

#[tokio::test]
async fn the_stand_in_answers_errors_as_status_objects() {
    if std::env::var_os("SHIPLOG_TEST_KUBECONFIG").is_some() {
        // This one is about the stand-in itself.
        return;
    }
    let Some(fx) = Fixture::new().await else { return };
    let namespaces: Api<Namespace> = Api::all(fx.client.clone());
    let status = |e: kube::Error| match e {
        kube::Error::Api(status) => (status.code, status.reason, status.message),
        other => panic!("{other:?}"),
    };
    let missing = namespaces.get("nowhere").await.unwrap_err();
    assert_eq!(status(missing), (404, "NotFound".into(), "namespaces \"nowhere\" not found".into()));
    let made: Namespace = serde_json::from_value(json!({ "metadata": { "name": fx.namespace() } })).unwrap();
    namespaces.create(&PostParams::default(), &made).await.unwrap();
    let again = namespaces.create(&PostParams::default(), &made).await.unwrap_err();
    assert_eq!(
        status(again),
        (409, "AlreadyExists".into(), format!("namespaces \"{}\" already exists", fx.namespace()))
    );
    let bad: Namespace = serde_json::from_value(json!({ "metadata": { "name": "Not_A_Label" } })).unwrap();
    let (code, reason, _) = status(namespaces.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (422, "Invalid"));

    // Another manager's field is a conflict for an apply that does not force it.
    let deployments = fx.api::<Deployment>();
    fx.runtime.ensure_infrastructure(&fx.env, &[]).await.unwrap_err();
    namespaces.delete(&fx.namespace(), &Default::default()).await.unwrap();
    eventually("the namespace gone", Duration::from_secs(10), || async {
        namespaces.get_opt(&fx.namespace()).await.unwrap().is_none().then_some(())
    })
    .await;
    fx.set_up(IMAGE).await;
    let by_kubectl = PatchParams { field_manager: Some("kubectl".into()), ..PatchParams::default() };
    deployments.patch("web", &by_kubectl, &Patch::Merge(json!({ "spec": { "replicas": 0 } }))).await.unwrap();
    let unforced = PatchParams::apply("shiplog");
    let apply = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" },
        "spec": { "replicas": 2 } });
    let (code, reason, message) = status(deployments.patch("web", &unforced, &Patch::Apply(apply)).await.unwrap_err());
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (409, "Conflict", "Apply failed with 1 conflicts: conflict with \"kubectl\": .spec.replicas")
    );
    fx.runtime.teardown(&fx.env).await.unwrap();
}
