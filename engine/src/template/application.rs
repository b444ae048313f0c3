//! The application template: what to build and run for every environment of an
//! application — services (in `service`), release commands, the
//! template's own stages and their jobs, hooks and previews — and the checks that
//! turn its YAML into these types.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::parse_duration;
use super::environments::{EnvironmentSettings, RawEnvironment, check_environments};
use super::merge_requests::{MergeRequests, RawMergeRequests, check_merge_requests};
use super::previews::{Previews, RawPreviews, check_previews};
use super::problems::{Problems, TemplateErrors, parse_yaml};
use super::service::{RawService, Service, check_service};
use super::yaml::{UniqueMap, Yaml, kind, scalar_text};
use crate::canonical::{CanonicalError, NUL_REFUSED, canonicalize};

/// Timeout of a release command, job or hook when the template gives none.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The longest timeout a template may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Stage names shiplog uses itself; a template's own `stages` may not reuse them.
pub const BUILTIN_STAGES: [&str; 5] = ["build", "setup", "release", "deploy", "teardown"];

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
    /// Which pull or merge requests deploy, and where. Left out of the stored
    /// template when absent, like `previews`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_requests: Option<MergeRequests>,
    /// The branch releases are cut from (`docs/releases.md`); `production` when
    /// absent, and left out of the stored template then, like `previews`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_branch: Option<String>,
    /// Settings of environments by name (approvals). Left out of the stored
    /// template when empty, like `previews`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, EnvironmentSettings>,
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
    /// The branch every pinned tag or commit of a release must be on.
    pub fn production_branch(&self) -> &str {
        self.production_branch.as_deref().unwrap_or(crate::domain::release::DEFAULT_PRODUCTION_BRANCH)
    }

    /// The approvals a release deployment to environment `name` waits for, if any.
    pub fn approvals(&self, name: &str) -> Option<&crate::domain::approval::ApprovalRule> {
        self.environments.get(name)?.approvals.as_ref()
    }

    /// Every volume name used by any service, sorted and without repeats: what the
    /// runtime's `ensure_infrastructure` must create.
    pub fn volume_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self.services.values().flat_map(|s| s.volumes.iter().map(|v| &v.name)).collect();
        names.into_iter().cloned().collect()
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
pub(super) fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// Parses and checks an application template. On failure returns every problem
/// found: all rule violations together, or the single YAML syntax or shape problem
/// (with its line and column) that stopped reading.
pub fn parse_application_template(yaml: &str) -> Result<ApplicationTemplate, TemplateErrors> {
    let raw: RawTemplate = parse_yaml(yaml)?;
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
    let merge_requests = raw.merge_requests.map(|rule| check_merge_requests(&mut problems, rule));
    if let Some(branch) = &raw.production_branch {
        check_branch(&mut problems, branch);
    }
    let environments = raw.environments.map(|raw| check_environments(&mut problems, raw)).unwrap_or_default();

    let template = ApplicationTemplate {
        services,
        release,
        stages: raw_stages,
        jobs,
        hooks,
        previews,
        merge_requests,
        production_branch: raw.production_branch,
        environments,
    };
    // A YAML escape (`"\0"`) writes U+0000 without the byte being in the text; no
    // event could hold the template, and its digest could not be computed.
    if serde_json::to_value(&template).is_ok_and(|json| canonicalize(&json) == Err(CanonicalError::Nul)) {
        problems.add("", NUL_REFUSED);
    }
    problems.into_result(template)
}

/// A branch name git would take: not empty, no whitespace or control characters,
/// not an option (`-…`), none of the characters or sequences refnames refuse.
fn check_branch(problems: &mut Problems, branch: &str) {
    let refused = branch.is_empty()
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("@{")
        || branch.chars().any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if refused {
        problems.add("production_branch", format!("{branch:?} is not a branch name git accepts"));
    }
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
pub(super) fn check_command(problems: &mut Problems, path: &str, value: &Yaml) -> Vec<String> {
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
pub(super) fn timeout(problems: &mut Problems, path: &str, value: Option<Yaml>, default: Duration) -> u32 {
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

pub(super) const NAME_RULE: &str = "use 1 to 40 lowercase letters, digits and `-`, starting with a letter";

/// Service, stage, volume, release command, job and hook names: safe in paths,
/// container names, labels and DNS names.
pub(super) fn is_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_name(problems: &mut Problems, path: &str, name: &str) {
    if !is_name(name) {
        problems.add(path, format!("`{name}` is not a valid name: {NAME_RULE}"));
    }
}

// The YAML shape. Leaves that have rules of their own stay `Yaml` so that a bad one
// becomes a problem in the list instead of stopping the whole parse; required keys
// are `Option` for the same reason.

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `services`, `release`, `stages`, `jobs`, `hooks`, `previews`, `merge_requests`, `production_branch` and `environments`"
)]
struct RawTemplate {
    services: Option<UniqueMap<RawService>>,
    release: Option<Vec<RawTask>>,
    stages: Option<Vec<String>>,
    jobs: Option<Vec<RawJob>>,
    hooks: Option<RawHooks>,
    previews: Option<RawPreviews>,
    merge_requests: Option<RawMergeRequests>,
    production_branch: Option<String>,
    environments: Option<UniqueMap<RawEnvironment>>,
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{EXAMPLE, parse_err, problems, strings};
    use super::super::service::{Build, DEFAULT_HEALTH_TIMEOUT, Probe, ServiceHealthCheck, Source, Volume};
    use super::*;
    use crate::runtime::HealthCheck;

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
            merge_requests: None,
            production_branch: None,
            environments: BTreeMap::new(),
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
    fn the_production_branch_defaults_to_production_and_must_be_a_branch_name() {
        let services = "services:\n  web: { image: busybox }\n";
        let template = parse_application_template(services).unwrap();
        assert_eq!((template.production_branch(), template.production_branch.clone()), ("production", None));
        let template = parse_application_template(&format!("{services}production_branch: release/stable\n")).unwrap();
        assert_eq!(template.production_branch(), "release/stable");
        for bad in ["\"\"", "\"-x\"", "\"a b\"", "a..b", "\"x~1\""] {
            let errors = parse_application_template(&format!("{services}production_branch: {bad}\n")).unwrap_err();
            let messages: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            assert_eq!(messages.len(), 1, "{bad}: {messages:?}");
            assert!(
                messages[0].starts_with("production_branch: ")
                    && messages[0].ends_with("is not a branch name git accepts"),
                "{bad}: {messages:?}"
            );
        }
    }
}
