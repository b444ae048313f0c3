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
//!
//! One concept per module: `yaml` reads the loose leaves, `problems` collects what is
//! wrong with its path, `application`, `service`, `previews`, `merge_requests` and `environments` check
//! the application template, `variables` and `interpolation` (`${NAME}`) the variables template,
//! `digest` hashes both, and `duration` is the one grammar of durations, which the
//! command line shares ([`parse_duration`]). Everything public is re-exported here.

mod application;
mod digest;
mod duration;
mod environments;
mod interpolation;
mod merge_requests;
mod previews;
mod problems;
mod service;
mod variables;
mod yaml;

#[cfg(test)]
mod fixtures;

pub use application::{
    ApplicationTemplate, BUILTIN_STAGES, DEFAULT_TASK_TIMEOUT, Hooks, Job, MAX_TIMEOUT, Task,
    parse_application_template,
};
pub use duration::parse_duration;
pub use environments::{APPROVER_ROLES, EnvironmentSettings, MAX_APPROVALS};
pub use merge_requests::{MergeRequestDeploy, MergeRequests};
pub use previews::{MAX_PREVIEW_TTL, Previews};
pub use problems::{TemplateErrors, TemplateProblem};
pub use service::{Build, DEFAULT_HEALTH_TIMEOUT, MAX_REPLICAS, Probe, Service, ServiceHealthCheck, Source, Volume};
pub use variables::{RedactedValue, RedactedVariables, SecretMarker, VariableValue, Variables, parse_variables};

/// Template secrets are the crate's one secret type.
pub use crate::secret::Secret;

#[cfg(test)]
mod tests {
    use super::fixtures::{builtins, strings};
    use super::*;

    /// Every complete template in the user documentation is valid: blocks starting
    /// with `services:` are application templates, blocks starting with an uppercase
    /// name are variables templates (other blocks are fragments).
    #[test]
    fn the_examples_in_the_documentation_are_valid() {
        let docs = include_str!("../../../docs/templates.md");
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
}
