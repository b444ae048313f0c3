//! Preview environments: which pushed branches get one, and how long it lives.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::parse_duration;
use super::problems::Problems;
use super::yaml::{Yaml, kind};

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

/// The longest a preview may be asked to live: long enough for any review, short
/// enough that a forgotten one does not run for ever.
pub const MAX_PREVIEW_TTL: Duration = Duration::from_secs(90 * 24 * 60 * 60);

pub(super) fn check_previews(problems: &mut Problems, raw: RawPreviews) -> Previews {
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
    let ttl_seconds = raw.ttl.and_then(|value| check_ttl(problems, "previews.ttl", &value));
    Previews { branches, ttl_seconds }
}

/// A preview's TTL: a duration from 1m to [`MAX_PREVIEW_TTL`] in whole seconds;
/// `None` (and a problem at `path`) otherwise.
pub(super) fn check_ttl(problems: &mut Problems, path: &str, value: &Yaml) -> Option<u64> {
    let parsed = match value {
        Yaml::String(text) => parse_duration(text),
        Yaml::Number(n) => Err(format!("`{n}` needs a unit: write e.g. `{n}h`")),
        other => Err(format!("expected a duration such as `72h`, found {}", kind(other))),
    };
    match parsed {
        Ok(ttl) if ttl < Duration::from_secs(60) => problems.add(path, "must be at least 1m"),
        Ok(ttl) if ttl > MAX_PREVIEW_TTL => problems.add(path, "must be at most 2160h (90 days)"),
        Ok(ttl) if ttl.subsec_millis() != 0 => problems.add(path, "must be whole seconds"),
        Ok(ttl) => return Some(ttl.as_secs()),
        Err(message) => problems.add(path, message),
    }
    None
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map such as `{ branches: [\"feature/*\"], ttl: 72h }`")]
pub(super) struct RawPreviews {
    branches: Option<Vec<String>>,
    ttl: Option<Yaml>,
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{parse_err, problems};
    use super::super::{ApplicationTemplate, parse_application_template};

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
}
