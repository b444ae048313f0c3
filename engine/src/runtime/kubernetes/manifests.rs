//! The objects an environment is on a cluster, built from the same requests the
//! other runtimes get: pure functions, so what shiplog applies is tested without a
//! cluster. The runtime applies them by server-side apply with field manager
//! `shiplog`, so applying the same objects again changes nothing.
//!
//! Per environment: a Namespace. Per service: a Deployment, a Service (when it has
//! ports), a ConfigMap of its plain variables and a Secret of its secret values
//! (secret values are never in a ConfigMap, an event or a log). Per volume: a
//! PersistentVolumeClaim.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, ExecAction, HTTPGetAction,
    LocalObjectReference, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, Secret, SecretEnvSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::K8sName;
use crate::runtime::{EnvironmentRef, HealthCheck, ServiceRequest, service_variables, sha256_hex};

/// The field manager of every apply, and the value of `managed-by`.
pub const FIELD_MANAGER: &str = "shiplog";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const APPLICATION: &str = "shiplog.dev/application";
pub const ENVIRONMENT: &str = "shiplog.dev/environment";
pub const SERVICE: &str = "shiplog.dev/service";
/// On a Deployment: the service's name as the template writes it (its objects'
/// names are mapped to fit the cluster's rules), for `observe`.
pub const SERVICE_NAME: &str = "shiplog.dev/service-name";
/// On a pod template: a digest of the service's variables, so a change of a
/// ConfigMap or Secret value alone rolls the pods (their `envFrom` is read at start).
pub const VARIABLES_DIGEST: &str = "shiplog.dev/variables-digest";
/// The storage a volume's claim asks for when the template names no size.
pub const DEFAULT_VOLUME_SIZE: &str = "1Gi";

/// The labels every object of an environment carries: who manages it and whose it
/// is. The runtime refuses to touch a namespace whose labels name another
/// environment (two long names that map alike).
pub fn environment_labels(env: &EnvironmentRef) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned()),
        (APPLICATION.to_owned(), env.application.clone()),
        (ENVIRONMENT.to_owned(), env.environment.clone()),
    ])
}

fn metadata(name: &K8sName, namespace: Option<&K8sName>, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(K8sName::to_string),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

pub fn namespace(env: &EnvironmentRef) -> Namespace {
    Namespace { metadata: metadata(&K8sName::namespace(env), None, environment_labels(env)), ..Namespace::default() }
}

/// The names of one service's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    /// The Deployment's and the Service's.
    pub workload: K8sName,
    /// The ConfigMap's and the Secret's.
    pub variables: K8sName,
}

impl ServiceNames {
    pub fn of(service: &str) -> ServiceNames {
        let workload = K8sName::mapped(service);
        let variables = K8sName::mapped(&format!("{workload}-env"));
        ServiceNames { workload, variables }
    }
}

fn service_labels(env: &EnvironmentRef, service: &str) -> BTreeMap<String, String> {
    let mut labels = environment_labels(env);
    labels.insert(SERVICE.to_owned(), ServiceNames::of(service).workload.to_string());
    labels
}

/// A service's variables split in two: plain ones for its ConfigMap, the ones
/// named in `secrets` for its Secret.
pub fn variables(
    req: &ServiceRequest,
    secrets: &BTreeSet<String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    service_variables(&req.ports, &req.env_vars).into_iter().partition(|(name, _)| !secrets.contains(name))
}

pub fn config_map(req: &ServiceRequest, plain: BTreeMap<String, String>) -> ConfigMap {
    let names = ServiceNames::of(&req.service);
    let namespace = K8sName::namespace(&req.env);
    ConfigMap {
        metadata: metadata(&names.variables, Some(&namespace), service_labels(&req.env, &req.service)),
        data: Some(plain),
        ..ConfigMap::default()
    }
}

pub fn secret(req: &ServiceRequest, secret: BTreeMap<String, String>) -> Secret {
    let names = ServiceNames::of(&req.service);
    let namespace = K8sName::namespace(&req.env);
    Secret {
        metadata: metadata(&names.variables, Some(&namespace), service_labels(&req.env, &req.service)),
        type_: Some("Opaque".to_owned()),
        data: Some(secret.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    }
}

/// The Deployment of a service at `req.image` (a reference pinned by digest when a
/// registry is configured). A roll-out adds a pod at a time and removes an old one
/// only once the new one is ready (`maxUnavailable: 0`); the readiness probe is the
/// template's health check; the roll-out counts as failed after the health check's
/// timeout (`progressDeadlineSeconds`).
pub fn deployment(req: &ServiceRequest, variables_digest: &str) -> Deployment {
    let names = ServiceNames::of(&req.service);
    let namespace = K8sName::namespace(&req.env);
    let labels = service_labels(&req.env, &req.service);
    let selector = BTreeMap::from([(SERVICE.to_owned(), names.workload.to_string())]);
    let variables = names.variables.to_string();
    let container = Container {
        name: names.workload.to_string(),
        image: Some(req.image.0.clone()),
        // The template's command replaces the image's entrypoint, as on Docker.
        command: (!req.command.is_empty()).then(|| req.command.clone()),
        ports: (!req.ports.is_empty()).then(|| {
            req.ports
                .iter()
                .map(|&port| ContainerPort { container_port: port.into(), ..ContainerPort::default() })
                .collect()
        }),
        env_from: Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource { name: variables.clone(), optional: None }),
                ..EnvFromSource::default()
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: variables, optional: None }),
                ..EnvFromSource::default()
            },
        ]),
        readiness_probe: req.health_check.as_ref().map(probe),
        volume_mounts: (!req.volumes.is_empty()).then(|| {
            req.volumes
                .iter()
                .map(|(volume, path)| VolumeMount {
                    name: K8sName::mapped(volume).to_string(),
                    mount_path: path.clone(),
                    ..VolumeMount::default()
                })
                .collect()
        }),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        image_pull_secrets: (!req.pull_secrets.is_empty())
            .then(|| req.pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect()),
        volumes: (!req.volumes.is_empty()).then(|| {
            req.volumes
                .iter()
                .map(|(volume, _)| Volume {
                    name: K8sName::mapped(volume).to_string(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: K8sName::mapped(volume).to_string(),
                        read_only: None,
                    }),
                    ..Volume::default()
                })
                .collect()
        }),
        ..PodSpec::default()
    };
    let mut pod_labels = labels.clone();
    pod_labels.extend(selector.clone());
    let mut meta = metadata(&names.workload, Some(&namespace), labels);
    meta.annotations = Some(BTreeMap::from([(SERVICE_NAME.to_owned(), req.service.clone())]));
    Deployment {
        metadata: meta,
        spec: DeploymentSpec {
            replicas: Some(req.replicas.try_into().unwrap_or(i32::MAX)),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            progress_deadline_seconds: Some(req.health_timeout.as_secs().clamp(1, i32::MAX as u64) as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(VARIABLES_DIGEST.to_owned(), variables_digest.to_owned())])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

/// A digest of every variable a service gets, secret values included (the digest
/// reveals none of them).
pub fn variables_digest(plain: &BTreeMap<String, String>, secret: &BTreeMap<String, String>) -> String {
    let text = serde_json::to_string(&(plain, secret)).expect("maps of strings serialise");
    sha256_hex(&text)
}

fn probe(check: &HealthCheck) -> Probe {
    let (http_get, exec) = match check {
        HealthCheck::Http { path, port } => (
            Some(HTTPGetAction {
                path: Some(path.clone()),
                port: IntOrString::Int((*port).into()),
                ..HTTPGetAction::default()
            }),
            None,
        ),
        HealthCheck::Command(command) => (None, Some(ExecAction { command: Some(command.clone()) })),
    };
    Probe { http_get, exec, period_seconds: Some(2), failure_threshold: Some(3), ..Probe::default() }
}

/// The Service in front of a service's pods; `None` for a service without ports.
pub fn service(req: &ServiceRequest) -> Option<Service> {
    if req.ports.is_empty() {
        return None;
    }
    let names = ServiceNames::of(&req.service);
    let namespace = K8sName::namespace(&req.env);
    let ports = req
        .ports
        .iter()
        .map(|&port| ServicePort {
            name: Some(format!("p{port}")),
            port: port.into(),
            target_port: Some(IntOrString::Int(port.into())),
            ..ServicePort::default()
        })
        .collect();
    Some(Service {
        metadata: metadata(&names.workload, Some(&namespace), service_labels(&req.env, &req.service)),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(SERVICE.to_owned(), names.workload.to_string())])),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub fn volume_claim(env: &EnvironmentRef, volume: &str) -> PersistentVolumeClaim {
    let name = K8sName::mapped(volume);
    PersistentVolumeClaim {
        metadata: metadata(&name, Some(&K8sName::namespace(env)), environment_labels(env)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(DEFAULT_VOLUME_SIZE.to_owned()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::runtime::Image;

    fn request() -> ServiceRequest {
        ServiceRequest {
            env: EnvironmentRef { application: "hello".into(), environment: "staging".into() },
            service: "web".into(),
            image: Image("127.0.0.1:5000/team/hello/web@sha256:".to_owned() + &"ab".repeat(32)),
            command: vec!["sh".into(), "-c".into(), "exec httpd -f -p $PORT".into()],
            env_vars: BTreeMap::from([("API_TOKEN".into(), "s3cret".into()), ("MODE".into(), "demo".into())]),
            ports: vec![18080],
            replicas: 2,
            health_check: Some(HealthCheck::Http { path: "/".into(), port: 18080 }),
            health_timeout: Duration::from_secs(30),
            volumes: vec![("data".into(), "/data".into())],
            pull_secrets: vec!["registry-credentials".into()],
        }
    }

    fn json_of(value: impl serde::Serialize) -> Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn secret_values_go_to_the_secret_and_nowhere_else() {
        let req = request();
        let (plain, secret_values) = variables(&req, &BTreeSet::from(["API_TOKEN".to_owned()]));
        assert_eq!(plain, BTreeMap::from([("MODE".into(), "demo".into()), ("PORT".into(), "18080".into())]));
        let digest = variables_digest(&plain, &secret_values);
        let config = json_of(config_map(&req, plain));
        assert_eq!(config["data"], json!({ "MODE": "demo", "PORT": "18080" }));
        assert_eq!(json_of(secret(&req, secret_values))["data"], json!({ "API_TOKEN": "czNjcmV0" }));
        let deployment = json_of(deployment(&req, &digest)).to_string();
        assert!(!deployment.contains("s3cret") && !deployment.contains("czNjcmV0"), "{deployment}");
        assert!(!digest.contains("s3cret"));
    }

    #[test]
    fn the_deployment_rolls_out_one_ready_pod_at_a_time_on_the_health_check() {
        let req = request();
        let deployment = json_of(deployment(&req, "d1"));
        assert_eq!(deployment["metadata"]["namespace"], "hello-staging");
        assert_eq!(deployment["metadata"]["labels"]["shiplog.dev/application"], "hello");
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 2);
        assert_eq!(spec["strategy"]["rollingUpdate"], json!({ "maxUnavailable": 0, "maxSurge": 1 }));
        assert_eq!(spec["progressDeadlineSeconds"], 30);
        assert_eq!(spec["selector"]["matchLabels"], json!({ "shiplog.dev/service": "web" }));
        let template = &spec["template"];
        assert_eq!(template["metadata"]["annotations"]["shiplog.dev/variables-digest"], "d1");
        assert_eq!(template["metadata"]["labels"]["shiplog.dev/service"], "web");
        let pod = &template["spec"];
        assert_eq!(pod["imagePullSecrets"], json!([{ "name": "registry-credentials" }]));
        assert_eq!(pod["volumes"], json!([{ "name": "data", "persistentVolumeClaim": { "claimName": "data" } }]));
        let container = &pod["containers"][0];
        assert_eq!(container["image"], req.image.0);
        assert_eq!(container["command"], json!(["sh", "-c", "exec httpd -f -p $PORT"]));
        assert_eq!(container["ports"], json!([{ "containerPort": 18080 }]));
        assert_eq!(
            container["envFrom"],
            json!([{ "configMapRef": { "name": "web-env" } }, { "secretRef": { "name": "web-env" } }])
        );
        assert_eq!(
            container["readinessProbe"],
            json!({ "httpGet": { "path": "/", "port": 18080 }, "periodSeconds": 2, "failureThreshold": 3 })
        );
        assert_eq!(container["volumeMounts"], json!([{ "name": "data", "mountPath": "/data" }]));
    }

    #[test]
    fn services_namespaces_and_claims_carry_the_environment() {
        let req = request();
        let service = json_of(service(&req).unwrap());
        assert_eq!(service["spec"]["ports"], json!([{ "name": "p18080", "port": 18080, "targetPort": 18080 }]));
        assert_eq!(service["spec"]["selector"], json!({ "shiplog.dev/service": "web" }));
        assert!(super::service(&ServiceRequest { ports: vec![], ..request() }).is_none());

        let namespace = json_of(namespace(&req.env));
        assert_eq!(
            namespace["metadata"],
            json!({ "name": "hello-staging", "labels": {
                "app.kubernetes.io/managed-by": "shiplog",
                "shiplog.dev/application": "hello",
                "shiplog.dev/environment": "staging" } })
        );
        let claim = json_of(volume_claim(&req.env, "data"));
        assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");

        let command = probe(&HealthCheck::Command(vec!["true".into()]));
        assert_eq!(json_of(command)["exec"], json!({ "command": ["true"] }));
        assert_eq!(ServiceNames::of("Web_1").workload, K8sName::mapped("Web_1"));
    }
}
