//! `environments`: settings of the application's environments by name; today the
//! approvals a release deployment there waits for (`domain::approval`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::problems::Problems;
use super::yaml::{UniqueMap, Yaml, kind};
use crate::domain::Name;
use crate::domain::approval::ApprovalRule;

/// The roles that may approve: the ones that may deploy to production (with
/// production rights) at all.
pub const APPROVER_ROLES: [&str; 2] = ["admin", "deployer"];

/// The most approvals a rule may ask for.
pub const MAX_APPROVALS: u32 = 10;

/// What the template says about one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentSettings {
    /// Release deployments (deploys of a release, rollbacks, promotions) wait for
    /// these approvals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalRule>,
}

pub(super) fn check_environments(
    problems: &mut Problems,
    raw: UniqueMap<RawEnvironment>,
) -> BTreeMap<String, EnvironmentSettings> {
    let mut settings = BTreeMap::new();
    for (name, environment) in raw.0 {
        let path = format!("environments.{name}");
        if name.parse::<Name>().is_err() {
            problems.add(&path, "must be an environment name: lowercase letters, digits and `-`");
        }
        let approvals = environment.approvals.map(|raw| check_approvals(problems, &format!("{path}.approvals"), raw));
        settings.insert(name, EnvironmentSettings { approvals });
    }
    settings
}

fn check_approvals(problems: &mut Problems, path: &str, raw: RawApprovals) -> ApprovalRule {
    let required = match raw.required {
        None => 1,
        Some(Yaml::Number(n)) => match n.as_u64() {
            Some(n @ 1..) if n <= u64::from(MAX_APPROVALS) => n as u32,
            _ => {
                problems.add(format!("{path}.required"), format!("must be a whole number from 1 to {MAX_APPROVALS}"));
                1
            }
        },
        Some(other) => {
            problems.add(format!("{path}.required"), format!("expected a number, found {}", kind(&other)));
            1
        }
    };
    let mut roles = raw.roles.unwrap_or_else(|| APPROVER_ROLES.iter().map(|r| r.to_string()).collect());
    if roles.is_empty() {
        problems.add(format!("{path}.roles"), "list at least one role, e.g. `[admin]`");
    }
    for (i, role) in roles.iter().enumerate() {
        if !APPROVER_ROLES.contains(&role.as_str()) {
            let message = format!("{role:?} may not approve: use {}", APPROVER_ROLES.join(" or "));
            problems.add(format!("{path}.roles[{i}]"), message);
        }
    }
    roles.sort();
    roles.dedup();
    ApprovalRule { required, roles }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map such as `{ approvals: { required: 1, roles: [admin] } }`")]
pub(super) struct RawEnvironment {
    approvals: Option<RawApprovals>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map such as `{ required: 1, roles: [admin, deployer] }`")]
struct RawApprovals {
    required: Option<Yaml>,
    roles: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse_err, problems};
    use super::super::parse_application_template;
    use super::*;

    const SERVICES: &str = "services: { a: { image: x } }\n";

    #[test]
    fn approvals_are_read_per_environment_with_their_defaults() {
        let plain = parse_application_template(SERVICES).unwrap();
        assert!(plain.environments.is_empty());
        assert!(!serde_json::to_string(&plain).unwrap().contains("environments"), "absent: the digest stays");
        let yaml = format!(
            "{SERVICES}environments:\n  production: {{ approvals: {{ required: 2, roles: [deployer, admin, admin] }} }}\n  \
             staging: {{ approvals: {{}} }}\n"
        );
        let template = parse_application_template(&yaml).unwrap();
        let rule =
            |required, roles: &[&str]| ApprovalRule { required, roles: roles.iter().map(|r| r.to_string()).collect() };
        assert_eq!(template.approvals("production"), Some(&rule(2, &["admin", "deployer"])));
        assert_eq!(template.approvals("staging"), Some(&rule(1, &["admin", "deployer"])));
        assert_eq!(template.approvals("preview"), None);
    }

    #[test]
    fn bad_approvals_are_listed_with_their_paths() {
        let yaml = format!(
            "{SERVICES}environments:\n  Prod: {{}}\n  production: {{ approvals: {{ required: 0, roles: [viewer] }} }}\n  \
             staging: {{ approvals: {{ required: two, roles: [] }} }}\n"
        );
        assert_eq!(
            problems(&parse_err(&yaml)),
            vec![
                ("environments.Prod", "must be an environment name: lowercase letters, digits and `-`"),
                ("environments.production.approvals.required", "must be a whole number from 1 to 10"),
                ("environments.production.approvals.roles[0]", "\"viewer\" may not approve: use admin or deployer"),
                ("environments.staging.approvals.required", "expected a number, found a string"),
                ("environments.staging.approvals.roles", "list at least one role, e.g. `[admin]`"),
            ]
        );
    }
}
