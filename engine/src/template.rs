//! Application and environment-variable templates: the YAML users write, checked and
//! turned into the plain types that events carry (the format is documented for users
//! in `docs/templates.md`).
//!
//! Parsing is two-layered. The YAML is first read into private `Raw*` types that
//! only fix the shape (known keys, maps versus lists) and keep leaf values loose
//! (`serde_norway::Value`), so that a bad port, duration or command does not stop
//! deserialisation: every rule is then checked by hand and every problem reported
//! together, with a path such as `services.web.health_check.port`. Only problems in
//! the shape itself (YAML syntax, unknown keys, a list where a map belongs) stop
//! early; they come back as a single problem with its line and column.
//!
//! Each template has a digest over its canonical JSON (RFC 8785). Defaults are filled
//! in and commands normalised before hashing, so reformatting, reordering keys or
//! spelling out a default leaves the digest alone; any change in meaning moves it.
//! A successful setup records the digests it applied; a different digest means the
//! environment needs a setup.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_norway::Value as Yaml;
use sha2::{Digest as _, Sha256};

use crate::canonical::canonicalize;
use crate::runtime::HealthCheck;

/// Timeout of a release command, job or hook when the template gives none.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a new service version may take to become healthy when the template
/// gives no `health_check.timeout` (and when it has no health check at all).
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest timeout a template may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: u32 = 20;

/// Stage names shiplog uses itself; a template's own `stages` may not reuse them.
pub const BUILTIN_STAGES: [&str; 5] = ["build", "setup", "release", "deploy", "teardown"];

// ---------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------

/// One thing wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// Where: dotted keys and `[index]`, e.g. `services.web.ports[0]`, `release[1].timeout`
    /// or, for the variables template, the variable's name. Empty when the problem is
    /// about the document as a whole (most YAML syntax errors).
    pub path: String,
    /// What is wrong and, where it helps, how to fix it. Never quotes a value of the
    /// variables template, which may be a secret.
    pub message: String,
}

/// Every problem found in a template, in a stable order (sections as documented,
/// services and variables by name, list entries in order). Never empty when
/// returned as an error. `Display` prints one `path: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateErrors(pub Vec<TemplateProblem>);

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateErrors {}

/// Collects problems while a template is checked.
#[derive(Default)]
struct Problems(Vec<TemplateProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(TemplateProblem { path: path.into(), message: message.into() });
    }

    fn into_result<T>(self, value: T) -> Result<T, TemplateErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(TemplateErrors(self.0)) }
    }
}

/// Turns a serde_norway error into a problem. serde_norway writes the path of the
/// offending node at the start of its message (`services.web: unknown field …`) but
/// does not expose it, so it is taken back out here to give shape errors the same
/// kind of path as rule errors. Paths of a valid template never contain whitespace
/// (names are checked), and serde's own messages always have a space before their
/// first colon, so a prefix with whitespace is left in the message.
fn yaml_problem(error: &serde_norway::Error) -> TemplateErrors {
    let text = error.to_string();
    let (path, mut message) = match text.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (path.to_owned(), rest.to_owned())
        }
        _ => (String::new(), text),
    };
    if let Some(location) = error.location()
        && !message.contains(" line ")
    {
        message.push_str(&format!(" at line {} column {}", location.line(), location.column()));
    }
    TemplateErrors(vec![TemplateProblem { path, message }])
}

// ---------------------------------------------------------------------------------
// The application template
// ---------------------------------------------------------------------------------

/// A checked application template: what to build and run for every environment of
/// an application. Only [`parse_application_template`] makes one from user input;
/// the serde form (defaults filled in, timeouts in milliseconds) is what events carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationTemplate {
    /// At least one; keyed by service name.
    pub services: BTreeMap<String, Service>,
    /// Release commands, run in this order after build and before traffic moves.
    pub release: Vec<Task>,
    /// The template's own stages, run in this order before the built-in `build`.
    pub stages: Vec<String>,
    /// Jobs of the template's own stages.
    pub jobs: Vec<Job>,
    pub hooks: Hooks,
    /// Preview environments created by pushes to matching branches. Left out of the
    /// stored template when absent, so templates without it keep their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previews: Option<Previews>,
}

/// Which pushed branches get a preview environment of their own, and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previews {
    /// Branch patterns, at least one; `*` stands for any run of characters, `/`
    /// included (see [`Previews::matches`]).
    pub branches: Vec<String>,
    /// Seconds a preview lives after its creation and after each deploy; `None`: until
    /// its branch is deleted or it is torn down by hand.
    pub ttl_seconds: Option<u64>,
}

impl Previews {
    /// Whether a push to `branch` (without `refs/heads/`) should have a preview: it
    /// matches one of the patterns as a whole.
    pub fn matches(&self, branch: &str) -> bool {
        self.branches.iter().any(|pattern| glob_matches(pattern, branch))
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    // Taking the leftmost match of each middle part leaves the most text for the
    // parts after it, so a match is found whenever one exists.
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

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

/// A one-off command: a release command or a hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Unique within its list.
    pub name: String,
    /// Non-empty; a string in the YAML is stored as `["sh", "-c", string]`.
    pub command: Vec<String>,
    /// 1 ms to 24 h; 30 min by default.
    pub timeout_ms: u32,
}

/// A job of one of the template's own stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique among all jobs.
    pub name: String,
    /// One of [`ApplicationTemplate::stages`].
    pub stage: String,
    pub command: Vec<String>,
    /// 1 ms to 24 h; 30 min by default.
    pub timeout_ms: u32,
}

/// Commands run at points of the lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// Run in order at the start of a teardown, before the runtime removes anything.
    pub teardown: Vec<Task>,
}

impl ApplicationTemplate {
    /// `sha256:` and the lowercase hex SHA-256 of the template's canonical JSON
    /// (RFC 8785). Equal for templates that mean the same, whatever their YAML
    /// layout; different as soon as anything that would run differently changes.
    pub fn digest(&self) -> String {
        let json = serde_json::to_value(self).expect("an application template always serialises: string keys only");
        sha256_digest(b"", &json)
    }

    /// Every volume name used by any service, sorted and without repeats: what the
    /// runtime's `ensure_infrastructure` must create.
    pub fn volume_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self.services.values().flat_map(|s| s.volumes.iter().map(|v| &v.name)).collect();
        names.into_iter().cloned().collect()
    }
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

impl Task {
    pub fn timeout(&self) -> Duration {
        millis(self.timeout_ms)
    }
}

impl Job {
    pub fn timeout(&self) -> Duration {
        millis(self.timeout_ms)
    }
}

/// Timeouts are stored as whole milliseconds: an integer is exact in canonical JSON,
/// and a `u32` holds every timeout a template may ask for (at most 24 h).
fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// Parses and checks an application template. On failure returns every problem
/// found: all rule violations together, or the single YAML syntax or shape problem
/// (with its line and column) that stopped reading.
pub fn parse_application_template(yaml: &str) -> Result<ApplicationTemplate, TemplateErrors> {
    let raw: RawTemplate = serde_norway::from_str(yaml).map_err(|e| yaml_problem(&e))?;
    let mut problems = Problems::default();

    let raw_services = raw.services.map(|s| s.0).unwrap_or_default();
    if raw_services.is_empty() {
        problems.add("services", "at least one service is required");
    }
    let mut services = BTreeMap::new();
    for (name, service) in raw_services {
        let path = format!("services.{name}");
        check_name(&mut problems, &path, &name);
        services.insert(name, check_service(&mut problems, &path, service));
    }

    let release = check_tasks(&mut problems, "release", raw.release.unwrap_or_default());

    let raw_stages = raw.stages.unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, stage) in raw_stages.iter().enumerate() {
        let path = format!("stages[{i}]");
        if BUILTIN_STAGES.contains(&stage.as_str()) {
            problems.add(path, format!("`{stage}` is a built-in stage; give your stage another name"));
        } else if !seen.insert(stage.as_str()) {
            problems.add(path, format!("`{stage}` is listed twice"));
        } else {
            check_name(&mut problems, &path, stage);
        }
    }

    let mut jobs = Vec::new();
    let mut job_names = BTreeMap::new();
    for (i, job) in raw.jobs.unwrap_or_default().into_iter().enumerate() {
        let path = format!("jobs[{i}]");
        let name = check_task_name(&mut problems, &path, &mut job_names, job.name);
        let stage = match job.stage {
            None => {
                problems.add(format!("{path}.stage"), "required: one of `stages`");
                String::new()
            }
            Some(stage) => {
                if !raw_stages.contains(&stage) {
                    let listed = if raw_stages.is_empty() {
                        "the template lists no `stages`".to_owned()
                    } else {
                        format!("listed: {}", raw_stages.join(", "))
                    };
                    problems.add(format!("{path}.stage"), format!("`{stage}` is not one of `stages` ({listed})"));
                }
                stage
            }
        };
        let command = required_command(&mut problems, &path, job.command);
        let timeout_ms = timeout(&mut problems, &path, job.timeout, DEFAULT_TASK_TIMEOUT);
        jobs.push(Job { name, stage, command, timeout_ms });
    }

    let raw_hooks = raw.hooks.unwrap_or_default();
    let hooks =
        Hooks { teardown: check_tasks(&mut problems, "hooks.teardown", raw_hooks.teardown.unwrap_or_default()) };

    let previews = raw.previews.map(|previews| check_previews(&mut problems, previews));

    problems.into_result(ApplicationTemplate { services, release, stages: raw_stages, jobs, hooks, previews })
}

/// The longest a preview may be asked to live: long enough for any review, short
/// enough that a forgotten one does not run for ever.
pub const MAX_PREVIEW_TTL: Duration = Duration::from_secs(90 * 24 * 60 * 60);

fn check_previews(problems: &mut Problems, raw: RawPreviews) -> Previews {
    let branches = raw.branches.unwrap_or_default();
    if branches.is_empty() {
        problems.add("previews.branches", "list at least one branch pattern, e.g. `feature/*`");
    }
    for (i, pattern) in branches.iter().enumerate() {
        // Git refuses these in branch names, so such a pattern could never match.
        if pattern.is_empty() || pattern.contains(|c: char| c.is_whitespace() || c.is_control()) {
            problems.add(format!("previews.branches[{i}]"), "must be a branch name or pattern such as `feature/*`");
        } else if pattern.starts_with("refs/") {
            problems.add(format!("previews.branches[{i}]"), "write the branch name without `refs/heads/`");
        }
    }
    let ttl_seconds = raw.ttl.and_then(|value| {
        let parsed = match &value {
            Yaml::String(text) => parse_duration(text),
            Yaml::Number(n) => Err(format!("`{n}` needs a unit: write e.g. `{n}h`")),
            other => Err(format!("expected a duration such as `72h`, found {}", kind(other))),
        };
        match parsed {
            Ok(ttl) if ttl < Duration::from_secs(60) => problems.add("previews.ttl", "must be at least 1m"),
            Ok(ttl) if ttl > MAX_PREVIEW_TTL => problems.add("previews.ttl", "must be at most 2160h (90 days)"),
            Ok(ttl) if ttl.subsec_millis() != 0 => problems.add("previews.ttl", "must be whole seconds"),
            Ok(ttl) => return Some(ttl.as_secs()),
            Err(message) => problems.add("previews.ttl", message),
        }
        None
    });
    Previews { branches, ttl_seconds }
}

fn check_service(problems: &mut Problems, path: &str, raw: RawService) -> Service {
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

fn check_tasks(problems: &mut Problems, list_path: &str, raw: Vec<RawTask>) -> Vec<Task> {
    let mut names = BTreeMap::new();
    let mut tasks = Vec::new();
    for (i, task) in raw.into_iter().enumerate() {
        let path = format!("{list_path}[{i}]");
        let name = check_task_name(problems, &path, &mut names, task.name);
        let command = required_command(problems, &path, task.command);
        let timeout_ms = timeout(problems, &path, task.timeout, DEFAULT_TASK_TIMEOUT);
        tasks.push(Task { name, command, timeout_ms });
    }
    tasks
}

/// Checks the name of the list entry at `path` and that no earlier entry (recorded in
/// `seen`, name to path) has it.
fn check_task_name(
    problems: &mut Problems,
    path: &str,
    seen: &mut BTreeMap<String, String>,
    name: Option<String>,
) -> String {
    let name_path = format!("{path}.name");
    let Some(name) = name else {
        problems.add(name_path, "required");
        return String::new();
    };
    if let Some(first) = seen.get(&name) {
        problems.add(name_path, format!("`{name}` is already the name of {first}"));
    } else {
        check_name(problems, &name_path, &name);
        seen.insert(name.clone(), path.to_owned());
    }
    name
}

fn required_command(problems: &mut Problems, path: &str, command: Option<Yaml>) -> Vec<String> {
    match command {
        Some(command) => check_command(problems, &format!("{path}.command"), &command),
        None => {
            problems.add(format!("{path}.command"), "required");
            Vec::new()
        }
    }
}

/// A list of arguments, or a string run by `sh -c` (what a Procfile or a CI script
/// line means).
fn check_command(problems: &mut Problems, path: &str, value: &Yaml) -> Vec<String> {
    match value {
        Yaml::String(script) => {
            if script.trim().is_empty() {
                problems.add(path, "must not be empty");
            }
            vec!["sh".to_owned(), "-c".to_owned(), script.clone()]
        }
        Yaml::Sequence(items) => {
            if items.is_empty() {
                problems.add(path, "must not be empty");
            }
            let mut command = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match scalar_text(item) {
                    Ok(arg) if i == 0 && arg.is_empty() => {
                        problems.add(format!("{path}[0]"), "the program name is empty")
                    }
                    Ok(arg) => command.push(arg),
                    Err(message) => problems.add(format!("{path}[{i}]"), message),
                }
            }
            command
        }
        other => {
            problems.add(
                path,
                format!("expected a list of arguments or a string (run with `sh -c`), found {}", kind(other)),
            );
            Vec::new()
        }
    }
}

/// The `timeout` of the entry at `path`, in milliseconds.
fn timeout(problems: &mut Problems, path: &str, value: Option<Yaml>, default: Duration) -> u32 {
    let Some(value) = value else {
        return default.as_millis() as u32;
    };
    let parsed = match &value {
        Yaml::String(text) => parse_duration(text),
        Yaml::Number(n) => Err(format!("`{n}` needs a unit: write e.g. `{n}s` or `{n}m`")),
        other => Err(format!("expected a duration such as `90s`, found {}", kind(other))),
    };
    match parsed {
        Ok(duration) if duration.is_zero() => problems.add(format!("{path}.timeout"), "must be greater than 0"),
        Ok(duration) if duration > MAX_TIMEOUT => problems.add(format!("{path}.timeout"), "must be at most 24h"),
        // At most 24 h, so the milliseconds fit in a u32.
        Ok(duration) => return duration.as_millis() as u32,
        Err(message) => problems.add(format!("{path}.timeout"), message),
    }
    0
}

/// Parses `500ms`, `90s`, `10m`, `1h` or a sum of them written together (`1h30m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration: write e.g. `500ms`, `90s`, `10m`, `1h` or `1h30m`");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let amount: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        // `ms` before `m`, or `500ms` would read as 500 minutes and a stray `s`.
        let (unit_ms, unit_len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return Err(invalid());
        };
        rest = &rest[unit_len..];
        total_ms = amount
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("`{text}` is too long"))?;
    }
    Ok(Duration::from_millis(total_ms))
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

const NAME_RULE: &str = "use 1 to 40 lowercase letters, digits and `-`, starting with a letter";

/// Service, stage, volume, release command, job and hook names: safe in paths,
/// container names, labels and DNS names.
fn is_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_name(problems: &mut Problems, path: &str, name: &str) {
    if !is_name(name) {
        problems.add(path, format!("`{name}` is not a valid name: {NAME_RULE}"));
    }
}

/// The text of a scalar used as a string. YAML turns unquoted `true` or `42` into a
/// bool or a number; those are taken in their usual text form. Decimal numbers are
/// refused because their text is lost (`1.10` reads as 1.1), which silently changes
/// values such as versions.
fn scalar_text(value: &Yaml) -> Result<String, String> {
    match value {
        Yaml::String(text) => Ok(text.clone()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Yaml::Number(_) => Err("quote decimal numbers (e.g. \"1.10\") so their exact text is kept".to_owned()),
        Yaml::Null => Err("a value is required (write \"\" for an empty string)".to_owned()),
        other => Err(format!("expected a string, found {}", kind(other))),
    }
}

fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a map",
        Yaml::Tagged(_) => "a tagged value",
    }
}

// The YAML shape. Leaves that have rules of their own stay `Yaml` so that a bad one
// becomes a problem in the list instead of stopping the whole parse; required keys
// are `Option` for the same reason.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `services`, `release`, `stages`, `jobs`, `hooks` and `previews`")]
struct RawTemplate {
    services: Option<UniqueMap<RawService>>,
    release: Option<Vec<RawTask>>,
    stages: Option<Vec<String>>,
    jobs: Option<Vec<RawJob>>,
    hooks: Option<RawHooks>,
    previews: Option<RawPreviews>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map such as `{ branches: [\"feature/*\"], ttl: 72h }`")]
struct RawPreviews {
    branches: Option<Vec<String>>,
    ttl: Option<Yaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a service: a map with `build` or `image`, `command`, `ports`, …")]
struct RawService {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `name`, `command` and `timeout`")]
struct RawTask {
    name: Option<String>,
    command: Option<Yaml>,
    timeout: Option<Yaml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `name`, `stage`, `command` and `timeout`")]
struct RawJob {
    name: Option<String>,
    stage: Option<String>,
    command: Option<Yaml>,
    timeout: Option<Yaml>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `teardown`")]
struct RawHooks {
    teardown: Option<Vec<RawTask>>,
}

/// A YAML map whose keys must be distinct. serde's own maps keep the last of two
/// equal keys without a word, and a service or variable written twice is almost
/// always a copy-paste mistake that would silently drop the first one.
struct UniqueMap<V>(BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueMapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if entries.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("`{key}` is defined twice")));
                    }
                    entries.insert(key, value);
                }
                Ok(UniqueMap(entries))
            }
        }

        deserializer.deserialize_map(UniqueMapVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------------
// The environment-variable template
// ---------------------------------------------------------------------------------

/// A secret value. Write-only: it is handed to the running services and hashed into
/// [`Variables::digest`], and nothing else reads it; `Debug` prints `Secret(***)`
/// and it has no `Display` or `Serialize`, so it cannot end up in a log line, an
/// event or an API response by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One value of the environment-variable template, as written (references unresolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableValue {
    /// May contain `${NAME}` references and `$${` escapes.
    Plain(String),
    /// Taken literally: no references are resolved inside a secret.
    Secret(Secret),
}

/// A checked environment-variable template: names to values, with no reference
/// cycles. Not serialisable on purpose (it holds secrets in clear): events carry
/// [`Variables::redacted`] and [`Variables::digest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables {
    values: BTreeMap<String, VariableValue>,
}

/// The variables template with every secret replaced by a marker: safe for events,
/// logs and API responses. Serialises as a map of name to the value as written, or to
/// `{"secret": true}` for a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedactedVariables(pub BTreeMap<String, RedactedValue>);

/// A value of [`RedactedVariables`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RedactedValue {
    Plain(String),
    Secret { secret: SecretMarker },
}

/// Stands where a secret value was; serialises as `true` and carries nothing of the
/// value, not even a hash (a short secret's hash can be brute-forced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretMarker;

impl Serialize for SecretMarker {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

impl<'de> Deserialize<'de> for SecretMarker {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if bool::deserialize(deserializer)? {
            Ok(SecretMarker)
        } else {
            Err(de::Error::custom("a secret marker is `true`"))
        }
    }
}

/// Parses and checks an environment-variable template: a YAML map of names
/// (`[A-Z_][A-Z0-9_]*`) to strings (unquoted integers and booleans are taken in their
/// text form) or `{ secret: "…" }`. An empty document is an empty template.
///
/// References between the template's own variables are checked here: a cycle is a
/// problem at its first variable. A reference to a name the template does not define
/// is taken to be a built-in and only checked by [`Variables::resolve`], because the
/// built-ins are only known when a run starts.
pub fn parse_variables(yaml: &str) -> Result<Variables, TemplateErrors> {
    let raw: Option<UniqueMap<Yaml>> = serde_norway::from_str(yaml).map_err(|e| yaml_problem(&e))?;
    let mut problems = Problems::default();
    let mut values = BTreeMap::new();
    for (name, value) in raw.map(|m| m.0).unwrap_or_default() {
        if !is_variable_name(&name) {
            problems.add(&name, variable_name_message(&name));
        }
        match variable_value(&value) {
            Ok(value) => {
                if let VariableValue::Plain(text) = &value
                    && let Err(message) = split_references(text)
                {
                    problems.add(&name, message);
                }
                values.insert(name, value);
            }
            Err(message) => problems.add(&name, message),
        }
    }

    let variables = Variables { values };
    for cycle in variables.cycles() {
        problems.add(cycle[0], format!("refers to itself: {}", cycle.join(" -> ")));
    }
    problems.into_result(variables)
}

/// The value at a variable's key. Messages never quote the value: it may be a secret.
fn variable_value(value: &Yaml) -> Result<VariableValue, String> {
    match value {
        Yaml::Mapping(map) => match (map.len(), map.get("secret")) {
            (1, Some(secret)) => match scalar_text(secret) {
                Ok(secret) if secret.is_empty() => Err("a secret must not be empty".to_owned()),
                Ok(secret) => Ok(VariableValue::Secret(Secret(secret))),
                Err(message) => Err(format!("secret: {message}")),
            },
            _ => Err("a map value must be `{ secret: \"…\" }`".to_owned()),
        },
        other => scalar_text(other).map(VariableValue::Plain),
    }
}

impl Variables {
    /// The value of `name` as written, if the template defines it.
    pub fn get(&self, name: &str) -> Option<&VariableValue> {
        self.values.get(name)
    }

    /// The variables a run's processes get: `builtins` (what shiplog provides for the
    /// run, e.g. `APPLICATION`, `ENVIRONMENT`, `COMMIT`, `PORT`) plus every template
    /// variable with its references resolved and secrets in clear. Fails with every
    /// reference to a name that is neither a template variable nor a built-in, and
    /// every template variable that redefines a built-in.
    pub fn resolve(&self, builtins: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, TemplateErrors> {
        let mut problems = Problems::default();
        for name in self.values.keys() {
            if builtins.contains_key(name) {
                problems.add(name, format!("`{name}` is provided by shiplog; choose another name"));
            }
        }
        let mut resolver = Resolver { variables: self, builtins, done: BTreeMap::new(), problems };
        for name in self.values.keys() {
            resolver.resolve(name, &mut Vec::new());
        }
        let Resolver { done, problems, .. } = resolver;
        let mut env = builtins.clone();
        env.extend(done.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))));
        problems.into_result(env)
    }

    /// Every secret value in clear, so that run logs can mask them wherever a
    /// process prints one. For that only: never store, log or return them.
    pub fn secret_values(&self) -> Vec<String> {
        self.values
            .values()
            .filter_map(|value| match value {
                VariableValue::Secret(Secret(secret)) => Some(secret.clone()),
                VariableValue::Plain(_) => None,
            })
            .collect()
    }

    /// The template with secrets replaced by [`SecretMarker`]; plain values as written.
    pub fn redacted(&self) -> RedactedVariables {
        RedactedVariables(
            self.values
                .iter()
                .map(|(name, value)| {
                    let value = match value {
                        VariableValue::Plain(text) => RedactedValue::Plain(text.clone()),
                        VariableValue::Secret(_) => RedactedValue::Secret { secret: SecretMarker },
                    };
                    (name.clone(), value)
                })
                .collect(),
        )
    }

    /// `sha256:` and the lowercase hex SHA-256 of `shiplog-variables-v1\n` followed by
    /// the canonical JSON (RFC 8785) of the template as written, secret values
    /// included (`{"NAME": "value", "KEY": {"secret": "value"}}`): changing a secret
    /// changes the digest, so the environment is set up again. Not safe to show where
    /// a weak secret could be guessed: anyone holding the digest and every other value
    /// can test guesses offline (see `docs/templates.md`).
    pub fn digest(&self) -> String {
        let json: serde_json::Map<String, serde_json::Value> = self
            .values
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    VariableValue::Plain(text) => serde_json::Value::String(text.clone()),
                    VariableValue::Secret(Secret(secret)) => {
                        serde_json::json!({ "secret": secret })
                    }
                };
                (name.clone(), value)
            })
            .collect();
        sha256_digest(b"shiplog-variables-v1\n", &serde_json::Value::Object(json))
    }

    /// Every cycle of references between template variables, each listed from its
    /// first variable in name order back to it (`A -> B -> A`).
    fn cycles(&self) -> Vec<Vec<&str>> {
        fn visit<'a>(
            variables: &'a Variables,
            name: &'a str,
            stack: &mut Vec<&'a str>,
            finished: &mut BTreeSet<&'a str>,
            cycles: &mut Vec<Vec<&'a str>>,
        ) {
            if finished.contains(name) {
                return;
            }
            if let Some(start) = stack.iter().position(|n| *n == name) {
                let mut cycle = stack[start..].to_vec();
                cycle.push(name);
                cycles.push(cycle);
                return;
            }
            stack.push(name);
            for reference in variables.references(name) {
                visit(variables, reference, stack, finished, cycles);
            }
            stack.pop();
            finished.insert(name);
        }

        let mut finished = BTreeSet::new();
        let mut cycles = Vec::new();
        for name in self.values.keys() {
            visit(self, name, &mut Vec::new(), &mut finished, &mut cycles);
        }
        cycles
    }

    /// The template variables that `name`'s value refers to (built-ins left out).
    fn references<'a>(&'a self, name: &str) -> Vec<&'a str> {
        let Some(VariableValue::Plain(text)) = self.values.get(name) else {
            return Vec::new();
        };
        split_references(text)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|piece| match piece {
                Piece::Reference(reference) => self.values.get_key_value(reference).map(|(key, _)| key.as_str()),
                Piece::Text(_) => None,
            })
            .collect()
    }
}

/// Resolves template variables depth-first, each once. A variable that cannot be
/// resolved is remembered as `None`, so a problem is reported once, at the variable
/// that has it, and not again at every variable that refers to it.
struct Resolver<'a> {
    variables: &'a Variables,
    builtins: &'a BTreeMap<String, String>,
    done: BTreeMap<&'a str, Option<String>>,
    problems: Problems,
}

impl<'a> Resolver<'a> {
    fn resolve(&mut self, name: &'a str, stack: &mut Vec<&'a str>) -> Option<String> {
        if let Some(value) = self.done.get(name) {
            return value.clone();
        }
        let (name, value) = self.variables.values.get_key_value(name)?;
        let name = name.as_str();
        if stack.contains(&name) {
            // `parse_variables` refuses cycles; kept so resolving can never recurse forever.
            self.problems.add(name, "refers to itself");
            return None;
        }
        let resolved = match value {
            VariableValue::Secret(Secret(secret)) => Some(secret.clone()),
            VariableValue::Plain(text) => {
                stack.push(name);
                let resolved = self.interpolate(name, text, stack);
                stack.pop();
                resolved
            }
        };
        self.done.insert(name, resolved.clone());
        resolved
    }

    fn interpolate(&mut self, name: &'a str, text: &'a str, stack: &mut Vec<&'a str>) -> Option<String> {
        let pieces = match split_references(text) {
            Ok(pieces) => pieces,
            Err(message) => {
                self.problems.add(name, message);
                return None;
            }
        };
        let mut out = String::new();
        let mut complete = true;
        for piece in pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Reference(reference) if self.variables.values.contains_key(reference) => {
                    match self.resolve(reference, stack) {
                        Some(value) => out.push_str(&value),
                        None => complete = false,
                    }
                }
                Piece::Reference(reference) => {
                    match self.builtins.get(reference) {
                        Some(value) => out.push_str(value),
                        None => {
                            let builtins: Vec<&str> = self.builtins.keys().map(String::as_str).collect();
                            let builtins = if builtins.is_empty() {
                                "this run has none".to_owned()
                            } else {
                                format!("this run has {}", builtins.join(", "))
                            };
                            self.problems.add(
                            name,
                            format!("`${{{reference}}}` is neither a variable of this template nor a built-in ({builtins})"),
                        );
                            complete = false;
                        }
                    }
                }
            }
        }
        complete.then_some(out)
    }
}

fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_build_arg_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn variable_name_message(name: &str) -> String {
    format!("`{name}` is not a valid variable name: use A-Z, 0-9 and `_`, not starting with a digit")
}

/// A piece of a value with references: literal text, or the name inside `${…}`.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Reference(&'a str),
}

/// Splits `text` at its `${NAME}` references. `$${` stands for a literal `${`; any
/// other `$` is literal.
fn split_references(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            pieces.push(Piece::Text(&rest[..dollar]));
            pieces.push(Piece::Text("${"));
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or("`${` is not closed by `}` (write `$${` for a literal `${`)")?;
            let name = &inner[..end];
            if !is_variable_name(name) {
                return Err(format!(
                    "`${{{name}}}`: `{name}` is not a variable name (A-Z, 0-9 and `_`; write `$${{` for a literal `${{`)"
                ));
            }
            pieces.push(Piece::Text(&rest[..dollar]));
            pieces.push(Piece::Reference(name));
            rest = &inner[end + 1..];
        } else {
            pieces.push(Piece::Text(&rest[..=dollar]));
            rest = after;
        }
    }
    pieces.push(Piece::Text(rest));
    pieces.retain(|piece| *piece != Piece::Text(""));
    Ok(pieces)
}

/// `sha256:` and the hex SHA-256 of `domain` followed by the canonical JSON of `json`.
fn sha256_digest(domain: &[u8], json: &serde_json::Value) -> String {
    // Template JSON holds strings, u16 ports and u32 counts and milliseconds only:
    // every number is below 2^53, the only thing canonical JSON refuses.
    let canonical = canonicalize(json).expect("template JSON has only exact numbers");
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(canonical.as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
services:
  web:
    build: { context: ".", dockerfile: Dockerfile }
    command: ["sh", "-c", "exec httpd -f -p $PORT"]
    ports: [8080]
    env: { GREETING: hello, WORKERS: 4 }
    health_check: { http: "/", port: 8080, timeout: 90s }
    volumes: ["data:/var/lib/data"]
  worker:
    image: busybox:latest
    command: ./work.sh --forever
    replicas: 3
    health_check: { command: ["test", "-f", "/tmp/ready"] }
    volumes: ["data:/data", "cache:/cache"]
release:
  - name: migrate
    command: ["sh", "-c", "./migrate.sh"]
    timeout: 30m
  - name: notify
    command: ./notify.sh
stages: [test]
jobs:
  - name: unit
    stage: test
    command: ["sh", "-c", "./test.sh"]
    timeout: 10m
hooks:
  teardown:
    - name: destroy
      command: ["terraform", "destroy", "-auto-approve"]
      timeout: 1h30m
"#;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn problems(errors: &TemplateErrors) -> Vec<(&str, &str)> {
        errors.0.iter().map(|p| (p.path.as_str(), p.message.as_str())).collect()
    }

    fn parse_err(yaml: &str) -> TemplateErrors {
        match parse_application_template(yaml) {
            Ok(template) => panic!("expected problems, parsed {template:?}"),
            Err(errors) => errors,
        }
    }

    fn variables_err(yaml: &str) -> TemplateErrors {
        match parse_variables(yaml) {
            Ok(variables) => panic!("expected problems, parsed {variables:?}"),
            Err(errors) => errors,
        }
    }

    #[test]
    fn the_full_example_parses_with_defaults_filled_in() {
        let template = parse_application_template(EXAMPLE).unwrap();
        let expected = ApplicationTemplate {
            services: BTreeMap::from([
                (
                    "web".to_string(),
                    Service {
                        source: Source::Build(Build {
                            context: ".".into(),
                            dockerfile: Some("Dockerfile".into()),
                            args: BTreeMap::new(),
                            target: None,
                        }),
                        command: Some(strings(&["sh", "-c", "exec httpd -f -p $PORT"])),
                        ports: vec![8080],
                        env: BTreeMap::from([
                            ("GREETING".to_string(), "hello".to_string()),
                            ("WORKERS".to_string(), "4".to_string()),
                        ]),
                        replicas: 1,
                        health_check: Some(ServiceHealthCheck {
                            probe: Probe::Http { path: "/".into(), port: 8080 },
                            timeout_ms: 90_000,
                        }),
                        volumes: vec![Volume { name: "data".into(), path: "/var/lib/data".into() }],
                    },
                ),
                (
                    "worker".to_string(),
                    Service {
                        source: Source::Image("busybox:latest".into()),
                        command: Some(strings(&["sh", "-c", "./work.sh --forever"])),
                        ports: vec![],
                        env: BTreeMap::new(),
                        replicas: 3,
                        health_check: Some(ServiceHealthCheck {
                            probe: Probe::Command(strings(&["test", "-f", "/tmp/ready"])),
                            timeout_ms: 60_000,
                        }),
                        volumes: vec![
                            Volume { name: "data".into(), path: "/data".into() },
                            Volume { name: "cache".into(), path: "/cache".into() },
                        ],
                    },
                ),
            ]),
            release: vec![
                Task {
                    name: "migrate".into(),
                    command: strings(&["sh", "-c", "./migrate.sh"]),
                    timeout_ms: 30 * 60_000,
                },
                Task { name: "notify".into(), command: strings(&["sh", "-c", "./notify.sh"]), timeout_ms: 30 * 60_000 },
            ],
            stages: strings(&["test"]),
            jobs: vec![Job {
                name: "unit".into(),
                stage: "test".into(),
                command: strings(&["sh", "-c", "./test.sh"]),
                timeout_ms: 10 * 60_000,
            }],
            hooks: Hooks {
                teardown: vec![Task {
                    name: "destroy".into(),
                    command: strings(&["terraform", "destroy", "-auto-approve"]),
                    timeout_ms: 90 * 60_000,
                }],
            },
            previews: None,
        };
        assert_eq!(template, expected);

        let web = &template.services["web"];
        assert_eq!(web.health_check(), Some(HealthCheck::Http { path: "/".into(), port: 8080 }));
        assert_eq!(web.health_timeout(), Duration::from_secs(90));
        assert_eq!(template.release[1].timeout(), DEFAULT_TASK_TIMEOUT);
        assert_eq!(template.volume_names(), strings(&["cache", "data"]));

        // What events carry reads back to the same template.
        let json = serde_json::to_value(&template).unwrap();
        assert_eq!(json["services"]["web"]["health_check"]["timeout_ms"], 90_000);
        assert_eq!(serde_json::from_value::<ApplicationTemplate>(json).unwrap(), template);
    }

    #[test]
    fn a_service_without_optional_keys_gets_the_defaults() {
        let template = parse_application_template("services: { api: { image: nginx } }").unwrap();
        let api = &template.services["api"];
        assert_eq!(api.command, None);
        assert_eq!(api.replicas, 1);
        assert_eq!(api.health_check(), None);
        assert_eq!(api.health_timeout(), DEFAULT_HEALTH_TIMEOUT);
        assert!(template.release.is_empty() && template.jobs.is_empty());
        assert!(template.hooks.teardown.is_empty());
    }

    #[test]
    fn every_rule_violation_is_reported_together() {
        let yaml = r#"
services:
  web:
    build: { context: "../elsewhere" }
    image: nginx
    ports: [8080, 0, "8081:80"]
    replicas: 50
    health_check: { http: "/", port: 9090, timeout: 60 }
    volumes: ["data", "./host:/data"]
  Worker:
    image: busybox
    command: []
    env: { lower: x, RATIO: 1.5 }
release:
  - name: migrate
    command: ./migrate.sh
    timeout: 0s
  - name: migrate
    command: ./again.sh
    timeout: 25h
stages: [test, build]
jobs:
  - name: unit
    stage: lint
    command: ["", "x"]
hooks:
  teardown:
    - command: ./destroy.sh
      timeout: soon
"#;
        let errors = parse_err(yaml);
        let expected = [
            (
                "services.Worker",
                "`Worker` is not a valid name: use 1 to 40 lowercase letters, digits and `-`, starting with a letter",
            ),
            ("services.Worker.command", "must not be empty"),
            ("services.Worker.env.RATIO", "quote decimal numbers (e.g. \"1.10\") so their exact text is kept"),
            (
                "services.Worker.env.lower",
                "`lower` is not a valid variable name: use A-Z, 0-9 and `_`, not starting with a digit",
            ),
            ("services.web", "set either `build` or `image`, not both"),
            ("services.web.ports[1]", "0 is not a port number (1 to 65535)"),
            (
                "services.web.ports[2]",
                "`8081:80`: list the port the service listens on, e.g. `8080`; host mappings are not supported",
            ),
            ("services.web.replicas", "must be a whole number from 1 to 20"),
            ("services.web.health_check.port", "9090 is not one of the service's ports (listed: 8080)"),
            ("services.web.health_check.timeout", "`60` needs a unit: write e.g. `60s` or `60m`"),
            ("services.web.volumes[0]", "`data` is not `name:/absolute/path`"),
            ("services.web.volumes[1]", "`./host`: only named volumes are supported, not host directories"),
            ("release[0].timeout", "must be greater than 0"),
            ("release[1].name", "`migrate` is already the name of release[0]"),
            ("release[1].timeout", "must be at most 24h"),
            ("stages[1]", "`build` is a built-in stage; give your stage another name"),
            ("jobs[0].stage", "`lint` is not one of `stages` (listed: test, build)"),
            ("jobs[0].command[0]", "the program name is empty"),
            ("hooks.teardown[0].name", "required"),
            (
                "hooks.teardown[0].timeout",
                "`soon` is not a duration: write e.g. `500ms`, `90s`, `10m`, `1h` or `1h30m`",
            ),
        ];
        assert_eq!(problems(&errors), expected);

        // One `path: message` line per problem.
        let text = errors.to_string();
        assert_eq!(text.lines().count(), expected.len());
        assert!(text.starts_with("services.Worker: `Worker` is not a valid name"));
        assert!(text.contains("\njobs[0].stage: `lint` is not one of `stages`"));
    }

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
    fn a_template_needs_a_service() {
        for yaml in ["", "services: {}", "release: []"] {
            assert_eq!(problems(&parse_err(yaml)), [("services", "at least one service is required")], "{yaml:?}");
        }
    }

    #[test]
    fn yaml_syntax_and_shape_errors_come_with_their_location() {
        let errors = parse_err("services:\n  web: {\n    image: nginx\n");
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].path, "");
        assert!(errors.0[0].message.contains("line 4 column 1"), "{}", errors.0[0].message);

        let errors = parse_err("services:\n  web:\n    image: nginx\n    prots: [80]\n");
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].path, "services.web");
        assert!(
            errors.0[0].message.starts_with("unknown field `prots`, expected one of `build`")
                && errors.0[0].message.ends_with("at line 4 column 5"),
            "{}",
            errors.0[0].message
        );

        let errors = parse_err("services:\n  web: { image: a }\n  web: { image: b }\n");
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].path, "services");
        assert!(errors.0[0].message.starts_with("`web` is defined twice at line"), "{}", errors.0[0].message);

        let errors = parse_err("services: { web: { image: a } }\nservices: {}\n");
        assert_eq!(problems(&errors), [("", "duplicate field `services` at line 1 column 1")]);

        let errors = parse_err("- web\n");
        assert!(
            errors.0[0].message.starts_with("invalid type: sequence, expected a map with `services`"),
            "{}",
            errors.0[0].message
        );
    }

    #[test]
    fn the_digest_ignores_layout_and_spelled_out_defaults_but_not_meaning() {
        let digest = parse_application_template(EXAMPLE).unwrap().digest();
        assert!(digest.starts_with("sha256:"));
        assert_eq!(digest.len(), "sha256:".len() + 64);
        assert!(digest[7..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

        // The same template: keys reordered, flow and block styles swapped, comments,
        // the shell-form command spelled out, defaults written explicitly.
        let reformatted = r#"
# hooks first this time
hooks: { teardown: [ { timeout: 90m, name: destroy, command: [terraform, destroy, -auto-approve] } ] }
jobs: [ { command: [sh, -c, ./test.sh], timeout: 600s, stage: test, name: unit } ]
stages:
  - test
release:
  - { name: migrate, command: "./migrate.sh", timeout: 30m }
  - name: notify
    command: [sh, -c, ./notify.sh]
    timeout: 30m
services:
  worker:
    volumes: ["data:/data", "cache:/cache"]
    health_check: { command: [test, -f, /tmp/ready], timeout: 1m }
    replicas: 3
    command: [sh, -c, "./work.sh --forever"]
    image: "busybox:latest"
  web:
    volumes:
      - data:/var/lib/data
    health_check:
      timeout: 90000ms
      port: 8080
      http: /
    env:
      WORKERS: "4"
      GREETING: "hello"
    replicas: 1
    ports:
      - 8080
    command: [sh, -c, "exec httpd -f -p $PORT"]
    build:
      dockerfile: Dockerfile
      context: .
"#;
        assert_eq!(parse_application_template(reformatted).unwrap().digest(), digest);

        for (from, to) in [
            ("replicas: 3", "replicas: 2"),
            ("timeout: 10m", "timeout: 11m"),
            ("GREETING: hello", "GREETING: hullo"),
            ("stages: [test]", "stages: [test]\n# no change above, one below"),
        ] {
            assert_eq!(EXAMPLE.matches(from).count(), 1, "{from}");
            let changed = parse_application_template(&EXAMPLE.replace(from, to)).unwrap();
            let same_meaning = from.starts_with("stages");
            assert_eq!(changed.digest() == digest, same_meaning, "{from} -> {to}");
        }

        // Release commands run in order: swapping them is a change.
        let mut swapped = parse_application_template(EXAMPLE).unwrap();
        swapped.release.swap(0, 1);
        assert_ne!(swapped.digest(), digest);
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
    fn previews_are_stored_only_when_given_and_match_whole_branch_names() {
        let plain = parse_application_template("services: { a: { image: x } }").unwrap();
        let yaml = "services: { a: { image: x } }\npreviews: { branches: [\"feature/*\", \"fix-*-now\"], ttl: 72h }";
        let with = parse_application_template(yaml).unwrap();
        let previews = with.previews.clone().unwrap();
        assert_eq!(previews.ttl_seconds, Some(72 * 3600));
        assert_ne!(with.digest(), plain.digest());
        assert_eq!(serde_json::to_value(&with).unwrap()["previews"]["ttl_seconds"], 259_200);
        assert_eq!(serde_json::from_value::<ApplicationTemplate>(serde_json::to_value(&with).unwrap()).unwrap(), with);

        for (branch, matches) in [
            ("feature/login", true),
            ("feature/a/b", true),
            ("feature/", true),
            ("feature", false),
            ("my-feature/x", false),
            ("fix-it-now", true),
            ("fix--now", true),
            ("fix-it-now-or-never", false),
            ("main", false),
        ] {
            assert_eq!(previews.matches(branch), matches, "{branch}");
        }
        let without_ttl = parse_application_template("services: { a: { image: x } }\npreviews: { branches: [main] }");
        assert_eq!(without_ttl.unwrap().previews.unwrap().ttl_seconds, None);
    }

    #[test]
    fn every_previews_problem_is_reported_with_its_path() {
        let errors = parse_err(
            "services: { a: { image: x } }\npreviews: { branches: [\"\", \"refs/heads/x\", \"a b\"], ttl: 72 }",
        );
        assert_eq!(
            problems(&errors),
            [
                ("previews.branches[0]", "must be a branch name or pattern such as `feature/*`"),
                ("previews.branches[1]", "write the branch name without `refs/heads/`"),
                ("previews.branches[2]", "must be a branch name or pattern such as `feature/*`"),
                ("previews.ttl", "`72` needs a unit: write e.g. `72h`"),
            ]
        );
        let errors = parse_err("services: { a: { image: x } }\npreviews: { branches: [], ttl: 30s }");
        assert_eq!(
            problems(&errors),
            [
                ("previews.branches", "list at least one branch pattern, e.g. `feature/*`"),
                ("previews.ttl", "must be at least 1m"),
            ]
        );
        let errors = parse_err("services: { a: { image: x } }\npreviews: { branches: [x], ttl: 2161h }");
        assert_eq!(problems(&errors), [("previews.ttl", "must be at most 2160h (90 days)")]);
        let errors = parse_err("services: { a: { image: x } }\npreviews: { branch: [x] }");
        assert_eq!(errors.0[0].path, "previews", "{errors}");
    }

    #[test]
    fn the_digest_is_sha256_over_the_canonical_json() {
        let template = parse_application_template("services: { a: { image: x } }").unwrap();
        let canonical = r#"{"hooks":{"teardown":[]},"jobs":[],"release":[],"services":{"a":{"command":null,"env":{},"health_check":null,"ports":[],"replicas":1,"source":{"image":"x"},"volumes":[]}},"stages":[]}"#;
        assert_eq!(canonicalize(&serde_json::to_value(&template).unwrap()).unwrap(), canonical);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(canonical)));
        assert_eq!(template.digest(), expected);
    }

    #[test]
    fn durations_accept_the_documented_forms_only() {
        for (text, ms) in [
            ("500ms", 500),
            ("90s", 90_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("2m15s", 135_000),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for text in ["", "10", "1d", "m", "1.5h", "-1s", "1 h", "99999999999999999999h"] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
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

    /// Every complete template in the user documentation is valid: blocks starting
    /// with `services:` are application templates, blocks starting with an uppercase
    /// name are variables templates (other blocks are fragments).
    #[test]
    fn the_examples_in_the_documentation_are_valid() {
        let docs = include_str!("../../docs/templates.md");
        let mut checked = (0, 0);
        for block in docs.split("```yaml\n").skip(1) {
            let yaml = block.split("```").next().unwrap();
            if yaml.starts_with("services:") {
                let template = parse_application_template(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
                assert_eq!(template.jobs[0].command, strings(&["sh", "-c", "./test.sh --quick"]));
                checked.0 += 1;
            } else if yaml.starts_with(|c: char| c.is_ascii_uppercase()) {
                let variables = parse_variables(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
                let resolved = variables.resolve(&builtins()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
                if let Some(note) = resolved.get("PRICE_NOTE") {
                    assert_eq!(note, "costs $5, see ${NOT_A_REFERENCE}");
                }
                checked.1 += 1;
            }
        }
        assert_eq!(checked, (1, 2));
    }

    // ---------------------------------------------------------------------------
    // Variables

    const SECRET: &str = "hunter2-very-secret";

    fn variables_yaml() -> String {
        format!(
            r#"
DATABASE_URL: "postgres://app:${{DB_PASSWORD}}@db/${{ENVIRONMENT}}"
DB_PASSWORD: {{ secret: "{SECRET}" }}
LOG_LEVEL: info
WORKERS: 4
VERBOSE: true
GREETING: "${{PREFIX}} world"
PREFIX: "${{SALUTATION}},"
SALUTATION: hello
PRICE: "costs $5, $$ and $${{NOT_A_REFERENCE}}"
"#
        )
    }

    fn builtins() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("APPLICATION".to_string(), "shop".to_string()),
            ("ENVIRONMENT".to_string(), "staging".to_string()),
            ("COMMIT".to_string(), "abc123".to_string()),
        ])
    }

    #[test]
    fn variables_resolve_chains_builtins_escapes_and_secrets() {
        let variables = parse_variables(&variables_yaml()).unwrap();
        assert_eq!(variables.get("WORKERS"), Some(&VariableValue::Plain("4".into())));
        assert_eq!(variables.get("VERBOSE"), Some(&VariableValue::Plain("true".into())));
        let env = variables.resolve(&builtins()).unwrap();
        let expected: BTreeMap<String, String> = [
            ("APPLICATION", "shop"),
            ("COMMIT", "abc123"),
            ("ENVIRONMENT", "staging"),
            ("DATABASE_URL", "postgres://app:hunter2-very-secret@db/staging"),
            ("DB_PASSWORD", SECRET),
            ("LOG_LEVEL", "info"),
            ("WORKERS", "4"),
            ("VERBOSE", "true"),
            ("GREETING", "hello, world"),
            ("PREFIX", "hello,"),
            ("SALUTATION", "hello"),
            ("PRICE", "costs $5, $$ and ${NOT_A_REFERENCE}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);
        assert_eq!(variables.secret_values(), [SECRET]);
    }

    #[test]
    fn secrets_are_taken_literally() {
        let variables = parse_variables("TOKEN: { secret: \"a${B}c$${d\" }").unwrap();
        assert_eq!(variables.resolve(&BTreeMap::new()).unwrap()["TOKEN"], "a${B}c$${d");
    }

    #[test]
    fn reference_cycles_are_rejected_at_parse_time() {
        let errors = variables_err(
            r#"
A: "${B}"
B: "x${C}"
C: "${A}y"
SELF: "${SELF}"
OUTSIDE: "${A}"
FINE: "${ENVIRONMENT}"
"#,
        );
        assert_eq!(
            problems(&errors),
            [("A", "refers to itself: A -> B -> C -> A"), ("SELF", "refers to itself: SELF -> SELF"),]
        );
    }

    #[test]
    fn unknown_references_and_redefined_builtins_are_rejected_at_resolve_time() {
        let variables = parse_variables(
            r#"
URL: "https://${HOST}/${ENVIRONMNET}"
HOST: "${REGION}.example.com"
USES_HOST: "${HOST}"
COMMIT: "mine"
"#,
        )
        .unwrap();
        let errors = variables.resolve(&builtins()).unwrap_err();
        assert_eq!(
            problems(&errors),
            [
                ("COMMIT", "`COMMIT` is provided by shiplog; choose another name"),
                (
                    "HOST",
                    "`${REGION}` is neither a variable of this template nor a built-in (this run has APPLICATION, COMMIT, ENVIRONMENT)"
                ),
                (
                    "URL",
                    "`${ENVIRONMNET}` is neither a variable of this template nor a built-in (this run has APPLICATION, COMMIT, ENVIRONMENT)"
                ),
            ]
        );
    }

    #[test]
    fn every_variables_problem_is_reported_together() {
        let errors = variables_err(
            r#"
lower_case: x
1ST: x
OPEN: "${NAME"
BAD_REF: "${lower}"
EMPTY:
RATIO: 0.5
LIST: [a]
EMPTY_SECRET: { secret: "" }
OTHER_MAP: { secret: x, note: y }
"#,
        );
        assert_eq!(
            problems(&errors),
            [
                ("1ST", "`1ST` is not a valid variable name: use A-Z, 0-9 and `_`, not starting with a digit"),
                (
                    "BAD_REF",
                    "`${lower}`: `lower` is not a variable name (A-Z, 0-9 and `_`; write `$${` for a literal `${`)"
                ),
                ("EMPTY", "a value is required (write \"\" for an empty string)"),
                ("EMPTY_SECRET", "a secret must not be empty"),
                ("LIST", "expected a string, found a list"),
                ("OPEN", "`${` is not closed by `}` (write `$${` for a literal `${`)"),
                ("OTHER_MAP", "a map value must be `{ secret: \"…\" }`"),
                ("RATIO", "quote decimal numbers (e.g. \"1.10\") so their exact text is kept"),
                (
                    "lower_case",
                    "`lower_case` is not a valid variable name: use A-Z, 0-9 and `_`, not starting with a digit"
                ),
            ]
        );

        let errors = variables_err("A: 1\nA: 2\n");
        assert_eq!(problems(&errors), [("", "`A` is defined twice at line 1 column 1")]);
        assert!(parse_variables("").unwrap().resolve(&builtins()).unwrap() == builtins());
    }

    #[test]
    fn redacted_variables_hold_no_secret() {
        let variables = parse_variables(&variables_yaml()).unwrap();
        let redacted = variables.redacted();
        let json = serde_json::to_string(&redacted).unwrap();
        assert!(!json.contains(SECRET), "{json}");
        assert!(!json.contains("hunter2"), "{json}");

        let value = serde_json::to_value(&redacted).unwrap();
        assert_eq!(value["DB_PASSWORD"], serde_json::json!({ "secret": true }));
        // Plain values stay as written, references unresolved.
        assert_eq!(value["DATABASE_URL"], "postgres://app:${DB_PASSWORD}@db/${ENVIRONMENT}");
        assert_eq!(value["WORKERS"], "4");
        assert_eq!(serde_json::from_value::<RedactedVariables>(value).unwrap(), redacted);
        assert!(serde_json::from_str::<RedactedVariables>(r#"{"A":{"secret":false}}"#).is_err());
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let variables = parse_variables(&variables_yaml()).unwrap();
        let debug = format!("{variables:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("Secret(***)"), "{debug}");
        assert!(debug.contains("LOG_LEVEL"), "{debug}");
        let pretty = format!("{variables:#?}");
        assert!(!pretty.contains(SECRET), "{pretty}");
    }

    #[test]
    fn the_variables_digest_covers_secrets_and_ignores_layout() {
        let digest = parse_variables("A: one\nK: { secret: s }\n").unwrap().digest();
        let canonical = r#"{"A":"one","K":{"secret":"s"}}"#;
        let expected = Sha256::new().chain_update(b"shiplog-variables-v1\n").chain_update(canonical).finalize();
        assert_eq!(digest, format!("sha256:{}", hex::encode(expected)));

        let same = parse_variables("# reordered\nK:\n  secret: \"s\"\nA: 'one'\n").unwrap();
        assert_eq!(same.digest(), digest);
        for changed in ["A: one\nK: { secret: t }\n", "A: one\nK: s\n", "A: two\nK: { secret: s }\n", "A: one\n"] {
            assert_ne!(parse_variables(changed).unwrap().digest(), digest, "{changed}");
        }
    }
}
