//! A stand-in for a Kubernetes API server, for the kubernetes runtime's tests on
//! machines without a cluster. It is a test stand-in, not a cluster: an HTTP
//! server (axum) for exactly the endpoints shiplog calls, faithful at the wire
//! level, driven by the real `kube::Client` through a kubeconfig file.
//!
//! What it keeps like an API server:
//! - Objects as JSON in k8s-openapi's shapes: namespaces, and in a namespace
//!   deployments, services, configmaps, secrets, persistentvolumeclaims, jobs and
//!   pods; lists filtered by label selector (`k=v`, `k!=v`, `k`, `!k`).
//! - `Status` objects for errors: 404 `NotFound`, 409 `AlreadyExists` and
//!   `Conflict`, 422 `Invalid` (a name that is not a DNS label), 403 `Forbidden`
//!   (new objects in a terminating namespace).
//! - `resourceVersion` bumps on every real change and only then; `generation`
//!   bumps when anything outside `metadata` and `status` changes.
//! - Server-side apply (`PATCH` as `application/apply-patch+yaml`, with
//!   `fieldManager` and `force`): the fields a manager applied are recorded in
//!   `managedFields`; fields it applied before and no longer applies are removed;
//!   a field another manager set to another value is a 409 conflict unless
//!   forced. Lists are atomic (owned whole), a simplification of the real
//!   per-key merge. JSON merge patches (`application/merge-patch+json`) change
//!   fields as another manager would (`kubectl scale`).
//! - Defaults the real server adds (`revisionHistoryLimit`, `imagePullPolicy`,
//!   a Service's `clusterIP` and port `protocol`, a namespace's phase), so
//!   shiplog must tell them from drift.
//! - Namespace deletion: `Terminating` (with a `deletionTimestamp`) until the
//!   controller's next pass removes it with everything in it.
//!
//! A small controller: a Deployment becomes ready (`observedGeneration`, and
//! updated, ready and available replicas as asked) at its next pass. No pods run:
//! pods are listed, always none.
//!
//! [`Cluster::start`] gives the stand-in, or, with `SHIPLOG_TEST_KUBECONFIG` set,
//! the real cluster that kubeconfig names, for the same tests.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tempfile::TempDir;

/// How often the controller passes over the objects.
const CONTROLLER_PASS: Duration = Duration::from_millis(20);

/// The cluster the kubernetes tests run against.
pub struct Cluster {
    kubeconfig: PathBuf,
    /// The stand-in, when no real cluster is named.
    _stand_in: Option<StandIn>,
}

impl Cluster {
    /// The cluster `SHIPLOG_TEST_KUBECONFIG` names, else a fresh stand-in.
    pub async fn start() -> Cluster {
        match std::env::var_os("SHIPLOG_TEST_KUBECONFIG") {
            Some(path) => Cluster { kubeconfig: PathBuf::from(path), _stand_in: None },
            None => {
                let stand_in = StandIn::start().await;
                Cluster { kubeconfig: stand_in.kubeconfig.clone(), _stand_in: Some(stand_in) }
            }
        }
    }

    /// A kubeconfig file whose current context is this cluster.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

/// The stand-in API server; stops on drop.
pub struct StandIn {
    pub addr: SocketAddr,
    kubeconfig: PathBuf,
    _dir: TempDir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl StandIn {
    pub async fn start() -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the stand-in");
        let addr = listener.local_addr().expect("its address");
        let store = Arc::new(Mutex::new(Store::default()));
        let app = Router::new().fallback(handle).with_state(store.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serving the stand-in");
        });
        let controller = tokio::spawn(async move {
            loop {
                store.lock().unwrap().reconcile();
                tokio::time::sleep(CONTROLLER_PASS).await;
            }
        });
        let dir = tempfile::Builder::new().prefix("shiplog-kube").tempdir().expect("a temporary directory");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(addr)).expect("writing the kubeconfig");
        StandIn { addr, kubeconfig, _dir: dir, tasks: vec![server, controller] }
    }
}

fn kubeconfig_text(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: stand-in\nclusters:\n- name: stand-in\n  cluster:\n    \
         server: http://{addr}\ncontexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n\
         users:\n- name: stand-in\n  user: {{}}\n"
    )
}

/// A kind of object the stand-in serves.
struct Kind {
    /// The URL prefix of its API group: `/api/v1`, `/apis/apps/v1`.
    prefix: &'static str,
    resource: &'static str,
    kind: &'static str,
    api_version: &'static str,
    /// The group as `Status` details name it (`""` for the core group).
    group: &'static str,
}

const KINDS: &[Kind] = &[
    Kind { prefix: "/api/v1", resource: "namespaces", kind: "Namespace", api_version: "v1", group: "" },
    Kind { prefix: "/api/v1", resource: "configmaps", kind: "ConfigMap", api_version: "v1", group: "" },
    Kind { prefix: "/api/v1", resource: "secrets", kind: "Secret", api_version: "v1", group: "" },
    Kind { prefix: "/api/v1", resource: "services", kind: "Service", api_version: "v1", group: "" },
    Kind {
        prefix: "/api/v1",
        resource: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        api_version: "v1",
        group: "",
    },
    Kind { prefix: "/api/v1", resource: "pods", kind: "Pod", api_version: "v1", group: "" },
    Kind {
        prefix: "/apis/apps/v1",
        resource: "deployments",
        kind: "Deployment",
        api_version: "apps/v1",
        group: "apps",
    },
    Kind { prefix: "/apis/batch/v1", resource: "jobs", kind: "Job", api_version: "batch/v1", group: "batch" },
];

impl Kind {
    /// `deployments.apps`, as messages name a resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() { self.resource.to_owned() } else { format!("{}.{}", self.resource, self.group) }
    }
}

/// Where an object lives: its resource, namespace (`""` for namespaces) and name.
type Key = (&'static str, String, String);

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    /// The last resourceVersion handed out.
    version: u64,
}

/// An API error, answered as a `Status` object.
struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Failure {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Failure {
        Failure { code, reason, message: message.into() }
    }

    fn not_found(kind: &Kind, name: &str) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", kind.qualified()))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        (self.code, axum::Json(body)).into_response()
    }
}

/// What a request is about, parsed from its path.
struct Target {
    kind: &'static Kind,
    namespace: String,
    name: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let kind_of = |prefix: &str, resource: &str| KINDS.iter().find(|k| k.prefix == prefix && k.resource == resource);
    for prefix in ["/api/v1", "/apis/apps/v1", "/apis/batch/v1"] {
        let Some(rest) = path.strip_prefix(prefix) else { continue };
        let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
        return match parts.as_slice() {
            // A list over every namespace (or of the namespaces themselves).
            [resource] => Some(Target { kind: kind_of(prefix, resource)?, namespace: String::new(), name: None }),
            ["namespaces", name] => Some(Target {
                kind: kind_of(prefix, "namespaces")?,
                namespace: String::new(),
                name: Some((*name).to_owned()),
            }),
            ["namespaces", namespace, resource] => {
                Some(Target { kind: kind_of(prefix, resource)?, namespace: (*namespace).to_owned(), name: None })
            }
            ["namespaces", namespace, resource, name] => Some(Target {
                kind: kind_of(prefix, resource)?,
                namespace: (*namespace).to_owned(),
                name: Some((*name).to_owned()),
            }),
            _ => None,
        };
    }
    None
}

async fn handle(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(target) = target(uri.path()) else {
        return Failure::new(StatusCode::NOT_FOUND, "NotFound", format!("the server could not find {}", uri.path()))
            .into_response();
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut store = store.lock().unwrap();
    let answer = match (&method, &target.name) {
        (&Method::GET, None) => Ok(store.list(&target, query.get("labelSelector").map(String::as_str))),
        (&Method::GET, Some(name)) => store.get(&target, name).cloned(),
        (&Method::POST, None) => parse(&body).and_then(|object| store.create(&target, object, &query)),
        (&Method::PATCH, Some(name)) => parse(&body).and_then(|patch| match content_type {
            "application/apply-patch+yaml" => store.apply(&target, name, patch, &query),
            "application/merge-patch+json" => store.merge_patch(&target, name, patch, &query),
            other => Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the stand-in does not take {other:?} patches"),
            )),
        }),
        (&Method::DELETE, Some(name)) => store.delete(&target, name),
        _ => Err(Failure::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} {}", uri.path()))),
    };
    match answer {
        Ok(value) => axum::Json(value).into_response(),
        Err(failure) => failure.into_response(),
    }
}

/// A request body as JSON (kube sends applied objects as JSON, which is YAML).
fn parse(body: &[u8]) -> Result<Value, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "BadRequest", format!("the body is not JSON: {e}")))
}

/// A DNS label (RFC 1123), what every name the stand-in takes must be.
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `labels` satisfy a selector of `k=v`, `k==v`, `k!=v`, `k` and `!k`.
fn selected(labels: &Map<String, Value>, selector: &str) -> bool {
    selector.split(',').filter(|term| !term.is_empty()).all(|term| {
        let value = |key: &str| labels.get(key.trim()).and_then(Value::as_str).map(str::to_owned);
        if let Some((key, wanted)) = term.split_once("!=") {
            value(key).as_deref() != Some(wanted.trim())
        } else if let Some((key, wanted)) = term.split_once('=') {
            value(key.trim_end_matches('=')).as_deref() == Some(wanted.trim_start_matches('=').trim())
        } else if let Some(key) = term.strip_prefix('!') {
            value(key).is_none()
        } else {
            value(term).is_some()
        }
    })
}

impl Store {
    fn key(target: &Target, name: &str) -> Key {
        (target.kind.resource, target.namespace.clone(), name.to_owned())
    }

    fn get(&self, target: &Target, name: &str) -> Result<&Value, Failure> {
        self.objects.get(&Store::key(target, name)).ok_or_else(|| Failure::not_found(target.kind, name))
    }

    fn list(&self, target: &Target, selector: Option<&str>) -> Value {
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((resource, namespace, _), _)| {
                *resource == target.kind.resource && (target.namespace.is_empty() || *namespace == target.namespace)
            })
            .map(|(_, object)| object)
            .filter(|object| {
                let labels = object["metadata"]["labels"].as_object().cloned().unwrap_or_default();
                selector.is_none_or(|selector| selected(&labels, selector))
            })
            .cloned()
            .collect();
        json!({
            "apiVersion": target.kind.api_version, "kind": format!("{}List", target.kind.kind),
            "metadata": { "resourceVersion": self.version.to_string() }, "items": items,
        })
    }

    /// Checks the namespace a new object goes to: it exists and is not going.
    fn check_namespace(&self, target: &Target) -> Result<(), Failure> {
        if target.kind.resource == "namespaces" {
            return Ok(());
        }
        let namespace = &target.namespace;
        match self.objects.get(&("namespaces", String::new(), namespace.clone())) {
            None => {
                Err(Failure::new(StatusCode::NOT_FOUND, "NotFound", format!("namespaces \"{namespace}\" not found")))
            }
            Some(ns) if ns["metadata"]["deletionTimestamp"].is_string() => Err(Failure::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    target.kind.qualified()
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn create(&mut self, target: &Target, object: Value, query: &HashMap<String, String>) -> Result<Value, Failure> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let manager = query.get("fieldManager").map_or("unknown", String::as_str).to_owned();
        if self.objects.contains_key(&Store::key(target, &name)) {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", target.kind.qualified()),
            ));
        }
        self.write(target, &name, None, object, &manager, "Update")
    }

    fn apply(
        &mut self,
        target: &Target,
        name: &str,
        applied: Value,
        query: &HashMap<String, String>,
    ) -> Result<Value, Failure> {
        let Some(manager) = query.get("fieldManager") else {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            ));
        };
        let force = query.get("force").is_some_and(|f| f == "true");
        if applied["kind"] != target.kind.kind || applied["apiVersion"] != target.kind.api_version {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the applied object is not a {} of {}", target.kind.kind, target.kind.api_version),
            ));
        }
        let old = self.objects.get(&Store::key(target, name)).cloned();
        let fields = owned_fields(&applied);
        let mut object = old.clone().unwrap_or_else(|| json!({ "metadata": {} }));
        let mut managers = managed_fields(&object);
        // Fields this manager applied before and applies no more are removed.
        if let Some(before) = managers.get(&(manager.clone(), "Apply".to_owned())) {
            for path in before.iter().filter(|p| !fields.contains(p)) {
                remove_path(&mut object, path);
            }
        }
        let mut conflicts = Vec::new();
        for ((other, _), owned) in managers.iter_mut().filter(|((m, _), _)| m != manager) {
            for path in fields.iter().filter(|p| owned.contains(p)) {
                if value_at(&object, path) != value_at(&applied, path) {
                    conflicts.push(format!("conflict with \"{other}\": .{}", path.join(".")));
                }
            }
            if force {
                owned.retain(|p| !fields.contains(p));
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Apply failed with {} conflicts: {}", conflicts.len(), conflicts.join(", ")),
            ));
        }
        merge(&mut object, &applied);
        managers.insert((manager.clone(), "Apply".to_owned()), fields);
        set_managed_fields(&mut object, target.kind.api_version, &managers);
        self.write(target, name, old, object, manager, "Apply")
    }

    fn merge_patch(
        &mut self,
        target: &Target,
        name: &str,
        patch: Value,
        query: &HashMap<String, String>,
    ) -> Result<Value, Failure> {
        let old = self.get(target, name)?.clone();
        let manager = query.get("fieldManager").map_or("unknown", String::as_str).to_owned();
        let mut object = old.clone();
        merge_rfc7386(&mut object, &patch);
        let fields = owned_fields(&patch);
        let mut managers = managed_fields(&object);
        for owned in managers.values_mut() {
            owned.retain(|p| !fields.contains(p));
        }
        managers.entry((manager.clone(), "Update".to_owned())).or_default().extend(fields);
        set_managed_fields(&mut object, target.kind.api_version, &managers);
        self.write(target, name, Some(old), object, &manager, "Update")
    }

    /// Stores `object` as `name`: validated, defaulted, with its versions bumped
    /// only when it changed.
    fn write(
        &mut self,
        target: &Target,
        name: &str,
        old: Option<Value>,
        mut object: Value,
        manager: &str,
        operation: &str,
    ) -> Result<Value, Failure> {
        if !is_dns_label(name) || object["metadata"]["name"].as_str() != Some(name) {
            return Err(Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!(
                    "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 label must \
                     consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric \
                     character",
                    target.kind.kind
                ),
            ));
        }
        if old.is_none() {
            self.check_namespace(target)?;
        }
        object["apiVersion"] = json!(target.kind.api_version);
        object["kind"] = json!(target.kind.kind);
        if target.kind.resource != "namespaces" {
            object["metadata"]["namespace"] = json!(target.namespace);
        }
        if object["metadata"]["managedFields"].is_null() {
            let fields = owned_fields(&object);
            let managers = BTreeMap::from([((manager.to_owned(), operation.to_owned()), fields)]);
            set_managed_fields(&mut object, target.kind.api_version, &managers);
        }
        default(target.kind.resource, &mut object);
        let key = Store::key(target, name);
        match old {
            Some(old) => {
                if old == object {
                    return Ok(old);
                }
                let spec_changed = without_meta(&old) != without_meta(&object);
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                object["metadata"]["generation"] = json!(if spec_changed { generation + 1 } else { generation });
            }
            None => {
                self.version += 1;
                object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.version));
                object["metadata"]["creationTimestamp"] =
                    json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
                if target.kind.resource != "namespaces" {
                    object["metadata"]["generation"] = json!(1);
                }
            }
        }
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key, object.clone());
        Ok(object)
    }

    fn delete(&mut self, target: &Target, name: &str) -> Result<Value, Failure> {
        let key = Store::key(target, name);
        let object = self.objects.get_mut(&key).ok_or_else(|| Failure::not_found(target.kind, name))?;
        if target.kind.resource == "namespaces" {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] =
                    json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
                object["status"]["phase"] = json!("Terminating");
                self.version += 1;
                object["metadata"]["resourceVersion"] = json!(self.version.to_string());
            }
            return Ok(object.clone());
        }
        self.objects.remove(&key);
        Ok(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": { "name": name, "group": target.kind.group, "kind": target.kind.resource },
        }))
    }

    /// One pass of the controller: terminating namespaces go, with what is in
    /// them; Deployments report the replicas they ask for as ready.
    fn reconcile(&mut self) {
        let going: Vec<String> = self
            .objects
            .iter()
            .filter(|((resource, _, _), o)| *resource == "namespaces" && o["metadata"]["deletionTimestamp"].is_string())
            .map(|((_, _, name), _)| name.clone())
            .collect();
        for namespace in going {
            self.objects.retain(|(resource, ns, name), _| {
                *ns != namespace && !(*resource == "namespaces" && *name == namespace)
            });
            self.version += 1;
        }
        for ((resource, _, _), object) in self.objects.iter_mut() {
            if *resource != "deployments" {
                continue;
            }
            let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
            let mut status = json!({ "observedGeneration": object["metadata"]["generation"], "conditions": [
                { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" },
                { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" },
            ]});
            // As a real controller, counts of zero are left out.
            if replicas > 0 {
                for field in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
                    status[field] = json!(replicas);
                }
            }
            if object["status"] != status {
                object["status"] = status;
                self.version += 1;
                object["metadata"]["resourceVersion"] = json!(self.version.to_string());
            }
        }
    }
}

/// The object without `metadata` and `status`: what `generation` counts changes of.
fn without_meta(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    object
}

/// The fields the server fills in when they are not set.
fn default(resource: &str, object: &mut Value) {
    let set = |value: &mut Value, field: &str, default: Value| {
        if value.is_object() && value[field].is_null() {
            value[field] = default;
        }
    };
    match resource {
        "namespaces" => {
            let name = object["metadata"]["name"].clone();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            set(&mut object["spec"], "finalizers", json!(["kubernetes"]));
            if object["spec"].is_null() {
                object["spec"] = json!({ "finalizers": ["kubernetes"] });
            }
            if object["status"].is_null() {
                object["status"] = json!({ "phase": "Active" });
            }
        }
        "deployments" => {
            set(&mut object["spec"], "revisionHistoryLimit", json!(10));
            let pod = &mut object["spec"]["template"]["spec"];
            set(pod, "restartPolicy", json!("Always"));
            set(pod, "dnsPolicy", json!("ClusterFirst"));
            for container in pod["containers"].as_array_mut().into_iter().flatten() {
                set(container, "imagePullPolicy", json!("IfNotPresent"));
                set(container, "terminationMessagePath", json!("/dev/termination-log"));
            }
        }
        "services" => {
            set(&mut object["spec"], "type", json!("ClusterIP"));
            set(&mut object["spec"], "clusterIP", json!("10.96.0.10"));
            for port in object["spec"]["ports"].as_array_mut().into_iter().flatten() {
                set(port, "protocol", json!("TCP"));
            }
        }
        _ => {}
    }
}

/// A field's path: the keys from the object's root.
type FieldPath = Vec<String>;

/// The leaf fields `value` sets, as the paths the field manager owns: maps are
/// walked, anything else (lists included) is one field. The identity of the object
/// (`apiVersion`, `kind`, its name and namespace) is no one's.
fn owned_fields(value: &Value) -> Vec<FieldPath> {
    fn walk(value: &Value, path: &mut FieldPath, out: &mut Vec<FieldPath>) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    let identity = |p: &FieldPath| {
        matches!(p.first().map(String::as_str), Some("apiVersion" | "kind" | "status"))
            || (p.first().map(String::as_str) == Some("metadata")
                && matches!(
                    p.get(1).map(String::as_str),
                    Some(
                        "name"
                            | "namespace"
                            | "managedFields"
                            | "resourceVersion"
                            | "uid"
                            | "generation"
                            | "creationTimestamp"
                    )
                ))
    };
    out.retain(|p| !identity(p));
    out
}

/// `metadata.managedFields` as (manager, operation) → owned fields.
fn managed_fields(object: &Value) -> BTreeMap<(String, String), Vec<FieldPath>> {
    fn paths(fields: &Value, path: &mut FieldPath, out: &mut Vec<FieldPath>) {
        match fields.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.trim_start_matches("f:").to_owned());
                    paths(child, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut managers = BTreeMap::new();
    for entry in object["metadata"]["managedFields"].as_array().into_iter().flatten() {
        let mut owned = Vec::new();
        paths(&entry["fieldsV1"], &mut Vec::new(), &mut owned);
        let manager = entry["manager"].as_str().unwrap_or_default().to_owned();
        let operation = entry["operation"].as_str().unwrap_or_default().to_owned();
        managers.insert((manager, operation), owned);
    }
    managers
}

fn set_managed_fields(object: &mut Value, api_version: &str, managers: &BTreeMap<(String, String), Vec<FieldPath>>) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|(_, owned)| !owned.is_empty())
        .map(|((manager, operation), owned)| {
            let mut fields = json!({});
            for path in owned {
                let mut at = &mut fields;
                for key in path {
                    at = &mut at[format!("f:{key}")];
                    if at.is_null() {
                        *at = json!({});
                    }
                }
            }
            json!({ "manager": manager, "operation": operation, "apiVersion": api_version,
                    "fieldsType": "FieldsV1", "fieldsV1": fields })
        })
        .collect();
    object["metadata"]["managedFields"] = json!(entries);
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |at, key| at.get(key))
}

/// Removes the field at `path`, and the maps it leaves empty.
fn remove_path(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(map) = value.as_object_mut() else { return };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

/// Sets every field of `applied` in `object`: maps merged, anything else replaced.
fn merge(object: &mut Value, applied: &Value) {
    match (object.as_object_mut(), applied.as_object()) {
        (Some(target), Some(source)) => {
            for (key, value) in source {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        _ => *object = applied.clone(),
    }
}

/// A JSON merge patch (RFC 7386): `null` removes a field.
fn merge_rfc7386(object: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *object = patch.clone();
        return;
    };
    if !object.is_object() {
        *object = json!({});
    }
    let target = object.as_object_mut().expect("just made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_rfc7386(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_select_as_the_api_server_does() {
        let labels = json!({ "a": "1", "b": "2" });
        let labels = labels.as_object().unwrap();
        for (selector, expected) in [
            ("a=1", true),
            ("a==1", true),
            ("a=2", false),
            ("a!=2", true),
            ("c", false),
            ("!c", true),
            ("a=1,b=3", false),
        ] {
            assert_eq!(selected(labels, selector), expected, "{selector}");
        }
    }
}
