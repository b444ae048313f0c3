//! A service of the application template: where its image comes from, how it runs
//! (command, ports, env, replicas, volumes) and how to tell it is healthy.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::application::{NAME_RULE, check_command, is_name, millis, timeout};
use super::interpolation::{Piece, is_variable_name, split_references, variable_name_message};
use super::problems::{Problems, TemplateErrors};
use super::yaml::{UniqueMap, Yaml, kind, scalar_text};
use crate::runtime::HealthCheck;

/// How long a new service version may take to become healthy when the template
/// gives no `health_check.timeout` (and when it has no health check at all).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = 20;

/// One long-running service of the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub source: Source,
    /// `None`: the image's own command.
    pub command: Option<Vec<String>>,
    /// Container ports the service listens on, distinct.
    pub ports: Vec<u16>,
    /// Variables for this service only, on top of the environment's variables; values
    /// may contain `${NAME}` references, resolved by [`Service::env_vars`].
    pub env: BTreeMap<String, String>,
    /// 1 to [`MAX_REPLICAS`].
    pub replicas: u32,
    pub health_check: Option<ServiceHealthCheck>,
    /// Named volumes, each mounted at a distinct absolute path.
    pub volumes: Vec<Volume>,
}

/// Where a service's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Built from the repository at the run's commit.
    Build(Build),
    /// A prebuilt image reference, used as is.
    Image(String),
}

/// How to build a service's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// Relative to the repository root, without `..`; `.` by default.
    pub context: String,
    /// Relative to the context, without `..`; `None` leaves the runtime's default
    /// (`Dockerfile`).
    pub dockerfile: Option<String>,
    /// Build arguments (the Dockerfile's `ARG`s), taken literally. Left out of the
    /// stored template when empty, so templates written before it keep their digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The Dockerfile stage to build; the last one when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// How to tell that a new version of a service is ready, and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealthCheck {
    pub probe: Probe,
    /// 1 ms to 24 h; 60 s by default.
    pub timeout_ms: u32,
}

/// What a health check tries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// An HTTP GET of `path` (starting with `/`) on `port`, one of the service's ports.
    Http { path: String, port: u16 },
    /// A command that exits 0 when the service is ready.
    Command(Vec<String>),
}

/// A named volume mounted into a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Same rules as service names; services that name the same volume share it.
    pub name: String,
    /// Absolute path inside the service.
    pub path: String,
}

impl Service {
    /// The health check in the runtime's terms; `None` when the service has none.
    pub fn health_check(&self) -> Option<HealthCheck> {
        self.health_check.as_ref().map(ServiceHealthCheck::to_runtime)
    }

    /// How long a new version may take to become healthy.
    pub fn health_timeout(&self) -> Duration {
        self.health_check.as_ref().map_or(DEFAULT_HEALTH_TIMEOUT, |check| check.timeout())
    }

    /// The variables the service runs with: `variables` (the environment's resolved
    /// variables, built-ins included, see [`Variables::resolve`]) overlaid with the
    /// service's own `env`, whose `${NAME}` references are resolved against
    /// `variables`. `service` is the service's name, used in problem paths. Fails
    /// with every reference to a name `variables` does not have.
    pub fn env_vars(
        &self,
        service: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TemplateErrors> {
        let mut problems = Problems::default();
        let mut out = variables.clone();
        for (name, text) in &self.env {
            let path = format!("services.{service}.env.{name}");
            let mut value = String::new();
            match split_references(text) {
                Err(message) => problems.add(path, message),
                Ok(pieces) => {
                    for piece in pieces {
                        match piece {
                            Piece::Text(text) => value.push_str(text),
                            Piece::Reference(reference) => match variables.get(reference) {
                                Some(resolved) => value.push_str(resolved),
                                None => problems
                                    .add(&path, format!("`${{{reference}}}` is not a variable of this environment")),
                            },
                        }
                    }
                }
            }
            out.insert(name.clone(), value);
        }
        problems.into_result(out)
    }
}

impl ServiceHealthCheck {
    pub fn timeout(&self) -> Duration {
        millis(self.timeout_ms)
    }

    /// The probe in the runtime's terms (the timeout goes to
    /// [`crate::runtime::ServiceRequest::health_timeout`]).
    pub fn to_runtime(&self) -> HealthCheck {
        match &self.probe {
            Probe::Http { path, port } => HealthCheck::Http { path: path.clone(), port: *port },
            Probe::Command(command) => HealthCheck::Command(command.clone()),
        }
    }
}

pub(super) fn check_service(problems: &mut Problems, path: &str, raw: RawService) -> Service {
    let source = match (raw.build, raw.image) {
        (Some(_), Some(image)) => {
            problems.add(path, "set either `build` or `image`, not both");
            Source::Image(image)
        }
        (None, None) => {
            problems.add(path, "set `build` (build from the repository) or `image` (a prebuilt image)");
            Source::Image(String::new())
        }
        (None, Some(image)) => {
            if image.is_empty() || image.contains(char::is_whitespace) {
                problems.add(format!("{path}.image"), "must be an image reference such as `busybox:latest`");
            }
            Source::Image(image)
        }
        (Some(build), None) => {
            let context = build.context.unwrap_or_else(|| ".".to_owned());
            if let Some(message) = relative_path_problem(&context, "the repository") {
                problems.add(format!("{path}.build.context"), message);
            }
            if let Some(dockerfile) = &build.dockerfile
                && let Some(message) = relative_path_problem(dockerfile, "the build context")
            {
                problems.add(format!("{path}.build.dockerfile"), message);
            }
            let mut args = BTreeMap::new();
            for (name, value) in build.args.map(|a| a.0).unwrap_or_default() {
                let arg_path = format!("{path}.build.args.{name}");
                if !is_build_arg_name(&name) {
                    problems.add(&arg_path, format!("`{name}` is not a valid build argument name: use letters, digits and `_`, not starting with a digit"));
                }
                match scalar_text(&value) {
                    Ok(text) => {
                        args.insert(name, text);
                    }
                    Err(message) => problems.add(arg_path, message),
                }
            }
            if let Some(target) = &build.target
                && (target.is_empty() || target.contains(char::is_whitespace))
            {
                problems.add(format!("{path}.build.target"), "must be the name of a stage of the Dockerfile");
            }
            Source::Build(Build { context, dockerfile: build.dockerfile, args, target: build.target })
        }
    };

    let command = raw.command.map(|command| check_command(problems, &format!("{path}.command"), &command));

    let mut ports = Vec::new();
    for (i, value) in raw.ports.unwrap_or_default().iter().enumerate() {
        let port_path = format!("{path}.ports[{i}]");
        match port(value) {
            Ok(port) if ports.contains(&port) => problems.add(port_path, format!("{port} is listed twice")),
            Ok(port) => ports.push(port),
            Err(message) => problems.add(port_path, message),
        }
    }

    let mut env = BTreeMap::new();
    for (name, value) in raw.env.map(|e| e.0).unwrap_or_default() {
        let var_path = format!("{path}.env.{name}");
        if !is_variable_name(&name) {
            problems.add(&var_path, variable_name_message(&name));
        }
        match scalar_text(&value) {
            Ok(text) => {
                if let Err(message) = split_references(&text) {
                    problems.add(&var_path, message);
                }
                env.insert(name, text);
            }
            Err(message) => problems.add(var_path, message),
        }
    }

    let replicas = match raw.replicas {
        None => 1,
        Some(value) => match value.as_u64() {
            Some(n) if (1..=u64::from(MAX_REPLICAS)).contains(&n) => n as u32,
            _ => {
                problems.add(format!("{path}.replicas"), format!("must be a whole number from 1 to {MAX_REPLICAS}"));
                1
            }
        },
    };

    let health_check =
        raw.health_check.map(|check| check_health(problems, &format!("{path}.health_check"), check, &ports));

    let mut volumes: Vec<Volume> = Vec::new();
    for (i, spec) in raw.volumes.unwrap_or_default().iter().enumerate() {
        let volume_path = format!("{path}.volumes[{i}]");
        match volume(spec) {
            Ok(v) if volumes.iter().any(|other| other.path == v.path) => {
                problems.add(volume_path, format!("another volume is already mounted at `{}`", v.path))
            }
            Ok(v) => volumes.push(v),
            Err(message) => problems.add(volume_path, message),
        }
    }

    Service { source, command, ports, env, replicas, health_check, volumes }
}

fn check_health(problems: &mut Problems, path: &str, raw: RawHealthCheck, ports: &[u16]) -> ServiceHealthCheck {
    let probe = match (raw.http, raw.command) {
        (Some(_), Some(_)) => {
            problems.add(path, "set either `http` or `command`, not both");
            Probe::Command(Vec::new())
        }
        (None, None) => {
            problems.add(path, "set `http` (a path to GET) or `command`");
            Probe::Command(Vec::new())
        }
        (None, Some(command)) => {
            if raw.port.is_some() {
                problems.add(format!("{path}.port"), "only used with `http`");
            }
            Probe::Command(check_command(problems, &format!("{path}.command"), &command))
        }
        (Some(http), None) => {
            if !http.starts_with('/') || http.contains(char::is_whitespace) {
                problems.add(format!("{path}.http"), "must be a URL path starting with `/`, e.g. `/healthz`");
            }
            let port = match raw.port {
                None => {
                    problems.add(path, "`http` needs `port`, one of the service's ports");
                    0
                }
                Some(value) => match port(&value) {
                    Err(message) => {
                        problems.add(format!("{path}.port"), message);
                        0
                    }
                    Ok(port) => {
                        if !ports.contains(&port) {
                            let listed = if ports.is_empty() {
                                "the service lists no `ports`".to_owned()
                            } else {
                                let listed: Vec<String> = ports.iter().map(u16::to_string).collect();
                                format!("listed: {}", listed.join(", "))
                            };
                            problems.add(
                                format!("{path}.port"),
                                format!("{port} is not one of the service's ports ({listed})"),
                            );
                        }
                        port
                    }
                },
            };
            Probe::Http { path: http, port }
        }
    };
    let timeout_ms = timeout(problems, path, raw.timeout, DEFAULT_HEALTH_TIMEOUT);
    ServiceHealthCheck { probe, timeout_ms }
}

fn port(value: &Yaml) -> Result<u16, String> {
    match value {
        Yaml::Number(n) => match n.as_u64() {
            Some(port @ 1..=65535) => Ok(port as u16),
            _ => Err(format!("{n} is not a port number (1 to 65535)")),
        },
        Yaml::String(text) if text.contains(':') => {
            Err(format!("`{text}`: list the port the service listens on, e.g. `8080`; host mappings are not supported"))
        }
        other => Err(format!("expected a port number (1 to 65535), found {}", kind(other))),
    }
}

/// Parses `name:/absolute/path`.
fn volume(spec: &str) -> Result<Volume, String> {
    let Some((name, path)) = spec.split_once(':') else {
        return Err(format!("`{spec}` is not `name:/absolute/path`"));
    };
    if name.starts_with(['.', '/', '~']) {
        return Err(format!("`{name}`: only named volumes are supported, not host directories"));
    }
    if !is_name(name) {
        return Err(format!("`{name}` is not a valid volume name: {NAME_RULE}"));
    }
    if path.contains(':') {
        return Err(format!("`{spec}`: volume options are not supported, write `name:/absolute/path`"));
    }
    if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(format!("`{path}` must be an absolute path without `..`"));
    }
    Ok(Volume { name: name.to_owned(), path: path.to_owned() })
}

/// Why `path` is not a safe path relative to `base`, if it is not: an absolute path or
/// a `..` would let a build read outside the checked-out repository.
fn relative_path_problem(path: &str, base: &str) -> Option<String> {
    if path.is_empty() {
        Some("must not be empty".to_owned())
    } else if path.starts_with('/') {
        Some(format!("must be relative to {base}"))
    } else if path.split('/').any(|part| part == "..") {
        Some(format!("must not contain `..`: it would leave {base}"))
    } else {
        None
    }
}

fn is_build_arg_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a service: a map with `build` or `image`, `command`, `ports`, …")]
pub(super) struct RawService {
    build: Option<RawBuild>,
    image: Option<String>,
    command: Option<Yaml>,
    ports: Option<Vec<Yaml>>,
    env: Option<UniqueMap<Yaml>>,
    replicas: Option<Yaml>,
    health_check: Option<RawHealthCheck>,
    volumes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map such as `{ context: \".\", dockerfile: Dockerfile }`")]
struct RawBuild {
    context: Option<String>,
    dockerfile: Option<String>,
    args: Option<UniqueMap<Yaml>>,
    target: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map such as `{ http: /, port: 8080, timeout: 60s }`")]
struct RawHealthCheck {
    http: Option<String>,
    port: Option<Yaml>,
    command: Option<Yaml>,
    timeout: Option<Yaml>,
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse_err, problems};
    use super::super::parse_application_template;
    use super::*;

    #[test]
    fn health_checks_need_exactly_one_probe_and_http_needs_a_port() {
        let errors = parse_err(
            r#"
services:
  a: { image: x, ports: [80], health_check: { http: "/", command: ["true"] } }
  b: { image: x, health_check: { timeout: 5s } }
  c: { image: x, ports: [80], health_check: { http: "health" } }
  d: { image: x, ports: [80], health_check: { command: "true", port: 80 } }
  e: { build: { dockerfile: "/etc/Dockerfile" } }
"#,
        );
        assert_eq!(
            problems(&errors),
            [
                ("services.a.health_check", "set either `http` or `command`, not both"),
                ("services.b.health_check", "set `http` (a path to GET) or `command`"),
                ("services.c.health_check.http", "must be a URL path starting with `/`, e.g. `/healthz`"),
                ("services.c.health_check", "`http` needs `port`, one of the service's ports"),
                ("services.d.health_check.port", "only used with `http`"),
                ("services.e.build.dockerfile", "must be relative to the build context"),
            ]
        );
    }

    #[test]
    fn build_arguments_and_target_are_stored_only_when_given() {
        let plain = parse_application_template("services: { a: { build: { context: . } } }").unwrap();
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(json["services"]["a"]["source"]["build"], serde_json::json!({"context": ".", "dockerfile": null}));

        let yaml = "services: { a: { build: { args: { BASE: \"busybox:1.36\", N: 3 }, target: runtime } } }";
        let Source::Build(build) = &parse_application_template(yaml).unwrap().services["a"].source else {
            panic!("not a build")
        };
        assert_eq!(build.args, BTreeMap::from([("BASE".into(), "busybox:1.36".into()), ("N".into(), "3".into())]));
        assert_eq!(build.target.as_deref(), Some("runtime"));
        assert_ne!(parse_application_template(yaml).unwrap().digest(), plain.digest());

        let errors =
            parse_application_template("services: { a: { build: { args: { 9X: a }, target: \"\" } } }").unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["services.a.build.args.9X", "services.a.build.target"], "{errors}");
    }

    #[test]
    fn service_env_is_interpolated_over_the_environment_variables() {
        let template = parse_application_template(
            r#"
services:
  web:
    image: x
    env: { URL: "http://${HOST}:80/$${literal}", HOST: "web-${ENVIRONMENT}", MISSING: "${NOPE}" }
"#,
        )
        .unwrap();
        let web = &template.services["web"];
        let variables =
            BTreeMap::from([("ENVIRONMENT".to_string(), "pr-7".to_string()), ("HOST".to_string(), "db".to_string())]);
        let errors = web.env_vars("web", &variables).unwrap_err();
        assert_eq!(
            problems(&errors),
            [("services.web.env.MISSING", "`${NOPE}` is not a variable of this environment")]
        );

        let mut fixed = web.clone();
        fixed.env.remove("MISSING");
        let env = fixed.env_vars("web", &variables).unwrap();
        // References see the environment's variables, not the service's own `env`.
        assert_eq!(env["URL"], "http://db:80/${literal}");
        assert_eq!(env["HOST"], "web-pr-7");
        assert_eq!(env["ENVIRONMENT"], "pr-7");

        let errors = parse_err("services: { web: { image: x, env: { A: \"${oops\" } } }");
        assert_eq!(
            problems(&errors),
            [("services.web.env.A", "`${` is not closed by `}` (write `$${` for a literal `${`)")]
        );
    }
}
