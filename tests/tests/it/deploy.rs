//! The `deploy/` manifests as `kubectl kustomize` renders them (offline): shiplog
//! serving with several replicas against one PostgreSQL whose URL is a Secret's,
//! probes on `/readyz` and `/healthz`, and RBAC granting exactly what the
//! kubernetes runtime does.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

fn rendered() -> Vec<Value> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&deploy)
        .output()
        .expect("kubectl runs (apt-get install kubernetes-client)");
    assert!(out.status.success(), "kubectl kustomize failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8 manifests");
    serde_norway::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("a YAML document"))
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut of_kind = objects.iter().filter(|o| o["kind"] == kind);
    let found = of_kind.next().unwrap_or_else(|| panic!("no {kind} is rendered"));
    assert!(of_kind.next().is_none(), "more than one {kind}");
    found
}

#[test]
fn the_manifests_run_several_replicas_on_one_database_from_a_secret_with_probes() {
    let objects = rendered();
    let kinds: BTreeSet<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ])
    );
    let deployment = object(&objects, "Deployment");
    assert_eq!(deployment["metadata"]["namespace"], "shiplog");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2, "one replica is no high availability");
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "shiplog");
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(["serve"]));
    let env = container["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(
        var("DATABASE_URL"),
        &json!({"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "shiplog-database", "key": "DATABASE_URL"}}}),
        "the database URL (with its password) comes from a Secret, never a literal"
    );
    assert_eq!(var("SHIPLOG_LISTEN")["value"], "0.0.0.0:8080");
    assert_eq!(var("SHIPLOG_RUNTIME")["value"], "kubernetes");
    assert_eq!(var("SHIPLOG_WORKER_ID")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(container["ports"], json!([{"name": "http", "containerPort": 8080}]));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(container["image"], "127.0.0.1:5000/shiplog/shiplog:latest", "the kustomization's image");

    // The Service and the budget select exactly the Deployment's pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&object(&objects, "Service")["spec"]["selector"], labels);
    assert_eq!(&object(&objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(object(&objects, "Service")["spec"]["ports"][0]["targetPort"], "http");
}

#[test]
fn rbac_grants_exactly_the_verbs_the_kubernetes_runtime_uses() {
    let objects = rendered();
    let granted: BTreeSet<(String, String, String)> = object(&objects, "ClusterRole")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| {
            assert_eq!(rule.get("resourceNames"), None);
            let each = |key: &str| rule[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned());
            let (groups, resources, verbs): (Vec<_>, Vec<_>, Vec<_>) =
                (each("apiGroups").collect(), each("resources").collect(), each("verbs").collect());
            groups.into_iter().flat_map(move |g| {
                let verbs = verbs.clone();
                resources.clone().into_iter().flat_map(move |r| {
                    let g = g.clone();
                    verbs.clone().into_iter().map(move |v| (g.clone(), r.clone(), v))
                })
            })
        })
        .collect();
    let expected = |group: &str, resources: &[&str], verbs: &[&str]| {
        resources
            .iter()
            .flat_map(|r| verbs.iter().map(move |v| (group.to_owned(), r.to_string(), v.to_string())))
            .collect::<Vec<_>>()
    };
    let wanted: BTreeSet<(String, String, String)> = [
        expected("", &["namespaces"], &["get", "list", "create", "patch", "delete"]),
        expected("apps", &["deployments"], &["get", "list", "create", "patch", "delete"]),
        expected(
            "",
            &["services", "configmaps", "secrets", "persistentvolumeclaims"],
            &["get", "list", "create", "patch"],
        ),
        expected("batch", &["jobs"], &["get", "list", "create", "delete"]),
        expected("", &["pods"], &["get", "list"]),
        expected("", &["pods/log"], &["get"]),
    ]
    .concat()
    .into_iter()
    .collect();
    assert_eq!(granted, wanted, "no wildcard, no verb shiplog does not use");
    let binding = object(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "shiplog"})
    );
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "shiplog", "namespace": "shiplog"}]));
}
