//! Merge requests (GitHub pull requests, GitLab merge requests) as the domain sees
//! them, whichever forge reported them, and the one rule that says what a request
//! does to an application's environments ([`decide`]): a ready request targeting a
//! listed branch deploys its source branch's head to staging or to a preview of its
//! own; a draft or `WIP:` request is skipped with its reason; closing or merging it
//! hands the environment back.
//!
//! Pure: the API parses the forges' payloads into a [`MergeRequest`], the engine's
//! `merge_request` module acts on the [`Decision`].

use serde::{Deserialize, Serialize};

use super::{CommitId, Name};
use crate::template::{MergeRequestDeploy, MergeRequests};

/// The forge a request lives on; its status reports go back there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::Display, strum::EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Forge {
    #[serde(rename = "github")]
    #[strum(serialize = "github")]
    GitHub,
    #[serde(rename = "gitlab")]
    #[strum(serialize = "gitlab")]
    GitLab,
}

impl Forge {
    /// How the forge writes a request's number: `#12` on GitHub, `!12` on GitLab.
    pub fn reference(self, number: u64) -> String {
        match self {
            Forge::GitHub => format!("pull request #{number}"),
            Forge::GitLab => format!("merge request !{number}"),
        }
    }

    /// The prefix of a request's preview environment: `pr-12`, `mr-12`.
    fn preview_prefix(self) -> &'static str {
        match self {
            Forge::GitHub => "pr",
            Forge::GitLab => "mr",
        }
    }
}

/// What an environment records of the request it deploys, and what the API shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRequestInfo {
    pub forge: Forge,
    /// The project on the forge, as its API names it: `owner/repo` on GitHub, the
    /// path with namespace (`group/project`) on GitLab.
    pub project: String,
    pub number: u64,
    pub title: String,
    /// The request's page on the forge.
    pub url: String,
    /// Who opened it (on GitLab, who acted on it: its payload names the author by id only).
    pub author: String,
    pub draft: bool,
    pub source_branch: String,
}

/// What happened to the request, in the forges' common terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeRequestAction {
    /// Opened or reopened.
    Opened,
    /// New commits on the source branch.
    Pushed,
    /// Title, draft state or anything else changed; the commits did not.
    Edited,
    Closed,
    Merged,
}

/// One event of a request, as any forge reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    pub info: MergeRequestInfo,
    pub action: MergeRequestAction,
    pub target_branch: String,
    /// The head of the source branch.
    pub head: CommitId,
    /// Who did this (opened, pushed, retitled, closed, merged), for run reasons.
    pub actor: String,
}

/// Title prefixes that mark a request as not ready, compared case-insensitively.
const NOT_READY_PREFIXES: [&str; 5] = ["wip:", "draft:", "[wip]", "[draft]", "(draft)"];

/// Why a request is not ready to deploy, if it is not: it is a draft, or its title
/// starts with `WIP:`, `Draft:`, `[WIP]`, `[Draft]` or `(Draft)` in any case
/// (leading spaces ignored).
pub fn not_ready(title: &str, draft: bool) -> Option<String> {
    if draft {
        return Some("it is a draft".into());
    }
    let start = title.trim_start();
    let prefix = NOT_READY_PREFIXES
        .iter()
        .find(|prefix| start.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix)))?;
    Some(format!("its title starts with `{}`", &start[..prefix.len()]))
}

/// Where a ready request deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The application's staging environment.
    Staging,
    /// A preview environment of its own, created with this TTL if it does not exist.
    Preview { name: Name, ttl_seconds: Option<u64> },
}

/// What a request event does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Deploy the request's head to the target.
    Deploy(Target),
    /// Record that the request was skipped, and why.
    Skip { reason: String },
    /// The request is over: tear its preview down, or hand staging back to the branch
    /// it tracks.
    Release(Target),
    /// Nothing to do or record: the application has no rule for requests, or the
    /// request targets a branch the rule does not list.
    Nothing,
}

/// The name of the preview environment of request `number` on `forge`: `pr-12`, `mr-12`.
pub fn preview_name(forge: Forge, number: u64) -> Name {
    format!("{}-{number}", forge.preview_prefix()).parse().expect("a prefix and digits make a valid name")
}

/// What `request` does under the application's `rule` (its template's `merge_requests`).
pub fn decide(rule: Option<&MergeRequests>, request: &MergeRequest) -> Decision {
    let Some(rule) = rule else { return Decision::Nothing };
    if !rule.target_branches.iter().any(|branch| branch == &request.target_branch) {
        return Decision::Nothing;
    }
    let target = match rule.deploy {
        MergeRequestDeploy::Staging => Target::Staging,
        MergeRequestDeploy::Preview => Target::Preview {
            name: preview_name(request.info.forge, request.info.number),
            ttl_seconds: rule.ttl_seconds,
        },
    };
    match request.action {
        MergeRequestAction::Closed | MergeRequestAction::Merged => Decision::Release(target),
        MergeRequestAction::Opened | MergeRequestAction::Pushed | MergeRequestAction::Edited => {
            match not_ready(&request.info.title, request.info.draft) {
                Some(why) => Decision::Skip { reason: format!("not deployed: {why}") },
                None => Decision::Deploy(target),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::run::tests::commit;

    #[test]
    fn the_draft_and_wip_rule() {
        for (title, draft, expected) in [
            ("Add login", false, None),
            ("Add login", true, Some("it is a draft")),
            ("WIP: add login", false, Some("its title starts with `WIP:`")),
            ("wip: add login", false, Some("its title starts with `wip:`")),
            ("Draft: add login", false, Some("its title starts with `Draft:`")),
            ("DRAFT:add login", false, Some("its title starts with `DRAFT:`")),
            ("[WIP] add login", false, Some("its title starts with `[WIP]`")),
            ("[draft] add login", false, Some("its title starts with `[draft]`")),
            ("(Draft) add login", false, Some("its title starts with `(Draft)`")),
            ("  WIP: indented", false, Some("its title starts with `WIP:`")),
            ("Wipe the cache", false, None),
            ("WIP add login", false, None),
            ("Drafting rules: done", false, None),
            ("Fix the WIP: marker", false, None),
            ("(Draft add login", false, None),
            ("", false, None),
            ("WIP", false, None),
            ("Ünïcode: fine", false, None),
        ] {
            assert_eq!(not_ready(title, draft).as_deref(), expected, "{title:?} draft={draft}");
        }
    }

    fn rule(deploy: MergeRequestDeploy) -> MergeRequests {
        MergeRequests { target_branches: vec!["main".into(), "master".into()], deploy, ttl_seconds: Some(3600) }
    }

    fn request(action: MergeRequestAction, title: &str, draft: bool, target: &str) -> MergeRequest {
        MergeRequest {
            info: MergeRequestInfo {
                forge: Forge::GitHub,
                project: "octo/shop".into(),
                number: 12,
                title: title.into(),
                url: "https://github.com/octo/shop/pull/12".into(),
                author: "alice".into(),
                draft,
                source_branch: "feature/login".into(),
            },
            action,
            target_branch: target.into(),
            head: commit('a'),
            actor: "alice".into(),
        }
    }

    #[test]
    fn what_a_request_does() {
        use MergeRequestAction::*;
        let preview = || Target::Preview { name: "pr-12".parse().unwrap(), ttl_seconds: Some(3600) };
        let staging = rule(MergeRequestDeploy::Staging);
        let previews = rule(MergeRequestDeploy::Preview);
        for (rule, action, title, draft, target, expected) in [
            (Some(&previews), Opened, "Add login", false, "main", Decision::Deploy(preview())),
            (Some(&staging), Opened, "Add login", false, "master", Decision::Deploy(Target::Staging)),
            (Some(&previews), Pushed, "Add login", false, "main", Decision::Deploy(preview())),
            (Some(&previews), Edited, "Add login", false, "main", Decision::Deploy(preview())),
            (
                Some(&previews),
                Opened,
                "Add login",
                true,
                "main",
                Decision::Skip { reason: "not deployed: it is a draft".into() },
            ),
            (
                Some(&staging),
                Pushed,
                "[WIP] login",
                false,
                "main",
                Decision::Skip { reason: "not deployed: its title starts with `[WIP]`".into() },
            ),
            (Some(&previews), Opened, "Add login", false, "develop", Decision::Nothing),
            (Some(&previews), Closed, "Add login", false, "develop", Decision::Nothing),
            (None, Opened, "Add login", false, "main", Decision::Nothing),
            (Some(&previews), Closed, "WIP: login", true, "main", Decision::Release(preview())),
            (Some(&staging), Merged, "Add login", false, "main", Decision::Release(Target::Staging)),
        ] {
            assert_eq!(decide(rule, &request(action, title, draft, target)), expected, "{action:?} {title} {target}");
        }
        let mut gitlab = request(Opened, "x", false, "main");
        gitlab.info.forge = Forge::GitLab;
        assert_eq!(
            decide(Some(&previews), &gitlab),
            Decision::Deploy(Target::Preview { name: "mr-12".parse().unwrap(), ttl_seconds: Some(3600) })
        );
        assert_eq!(Forge::GitLab.reference(7), "merge request !7");
        assert_eq!(Forge::GitHub.reference(7), "pull request #7");
    }
}
