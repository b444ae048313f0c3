//! `merge_requests`: which pull or merge requests deploy, and where (see
//! `domain::merge_request` for the rule applied to each request).

use serde::{Deserialize, Serialize};

use super::previews::check_ttl;
use super::problems::Problems;
use super::yaml::Yaml;

/// Which requests deploy (those targeting one of `target_branches`) and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRequests {
    /// Branches a request must target to deploy, compared whole; `[main, master]`
    /// unless given.
    pub target_branches: Vec<String>,
    pub deploy: MergeRequestDeploy,
    /// For `deploy: preview`: seconds a request's preview lives after its creation
    /// and after each deploy; `None`: until the request is closed or merged.
    pub ttl_seconds: Option<u64>,
}

/// Where a ready request deploys its source branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRequestDeploy {
    /// The application's staging environment, until the request is closed or merged.
    Staging,
    /// A preview environment of the request's own (`pr-<number>`, `mr-<number>`).
    Preview,
}

pub(super) fn check_merge_requests(problems: &mut Problems, raw: RawMergeRequests) -> MergeRequests {
    let target_branches = raw.target_branches.unwrap_or_else(|| vec!["main".into(), "master".into()]);
    if target_branches.is_empty() {
        problems.add("merge_requests.target_branches", "list at least one branch, e.g. `[main]`");
    }
    for (i, branch) in target_branches.iter().enumerate() {
        if branch.is_empty() || branch.contains(|c: char| c.is_whitespace() || c.is_control() || c == '*') {
            problems.add(format!("merge_requests.target_branches[{i}]"), "must be a branch name such as `main`");
        } else if branch.starts_with("refs/") {
            problems.add(format!("merge_requests.target_branches[{i}]"), "write the branch name without `refs/heads/`");
        }
    }
    let deploy = match raw.deploy.as_ref().and_then(Yaml::as_str) {
        Some("staging") => Some(MergeRequestDeploy::Staging),
        Some("preview") => Some(MergeRequestDeploy::Preview),
        _ => {
            problems.add("merge_requests.deploy", "must be `staging` or `preview`");
            None
        }
    };
    let ttl_seconds = raw.ttl.and_then(|value| {
        if deploy == Some(MergeRequestDeploy::Staging) {
            problems.add("merge_requests.ttl", "only a preview expires: leave `ttl` out with `deploy: staging`");
            return None;
        }
        check_ttl(problems, "merge_requests.ttl", &value)
    });
    MergeRequests { target_branches, deploy: deploy.unwrap_or(MergeRequestDeploy::Preview), ttl_seconds }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map such as `{ target_branches: [main], deploy: preview, ttl: 72h }`")]
pub(super) struct RawMergeRequests {
    target_branches: Option<Vec<String>>,
    deploy: Option<Yaml>,
    ttl: Option<Yaml>,
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse_err, problems};
    use super::super::parse_application_template;
    use super::*;

    const SERVICES: &str = "services: { a: { image: x } }\n";

    #[test]
    fn merge_requests_are_stored_only_when_given() {
        let plain = parse_application_template(SERVICES).unwrap();
        assert_eq!(plain.merge_requests, None);
        let with =
            parse_application_template(&format!("{SERVICES}merge_requests: {{ deploy: preview, ttl: 72h }}")).unwrap();
        assert_eq!(
            with.merge_requests,
            Some(MergeRequests {
                target_branches: vec!["main".into(), "master".into()],
                deploy: MergeRequestDeploy::Preview,
                ttl_seconds: Some(72 * 3600),
            })
        );
        assert_ne!(with.digest(), plain.digest());
        let staging = parse_application_template(&format!(
            "{SERVICES}merge_requests: {{ target_branches: [trunk], deploy: staging }}"
        ))
        .unwrap();
        let rule = staging.merge_requests.unwrap();
        assert_eq!(
            (rule.target_branches, rule.deploy, rule.ttl_seconds),
            (vec!["trunk".to_string()], MergeRequestDeploy::Staging, None)
        );
    }

    #[test]
    fn every_merge_requests_problem_is_reported_with_its_path() {
        let errors = parse_err(&format!(
            "{SERVICES}merge_requests: {{ target_branches: [\"\", \"refs/heads/main\", \"release/*\"], deploy: production, ttl: 72 }}"
        ));
        assert_eq!(
            problems(&errors),
            [
                ("merge_requests.target_branches[0]", "must be a branch name such as `main`"),
                ("merge_requests.target_branches[1]", "write the branch name without `refs/heads/`"),
                ("merge_requests.target_branches[2]", "must be a branch name such as `main`"),
                ("merge_requests.deploy", "must be `staging` or `preview`"),
                ("merge_requests.ttl", "`72` needs a unit: write e.g. `72h`"),
            ]
        );
        let errors =
            parse_err(&format!("{SERVICES}merge_requests: {{ target_branches: [], deploy: staging, ttl: 1h }}"));
        assert_eq!(
            problems(&errors),
            [
                ("merge_requests.target_branches", "list at least one branch, e.g. `[main]`"),
                ("merge_requests.ttl", "only a preview expires: leave `ttl` out with `deploy: staging`"),
            ]
        );
        let errors = parse_err(&format!("{SERVICES}merge_requests: {{ branches: [main] }}"));
        assert_eq!(errors.0[0].path, "merge_requests", "{errors}");
    }
}
