//! `MergeRequest`: the GitHub pull request or GitLab merge request an environment
//! deploys, converted from the engine's `MergeRequestInfo`.

use async_graphql::{Enum, SimpleObject};
use shiplog_engine::domain::merge_request::{self, MergeRequestInfo};

/// The forge a merge request lives on.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "merge_request::Forge")]
pub enum Forge {
    #[graphql(name = "GITHUB")]
    GitHub,
    #[graphql(name = "GITLAB")]
    GitLab,
}

/// A pull request (GitHub) or merge request (GitLab) an environment deploys.
#[derive(SimpleObject)]
pub struct MergeRequest {
    /// Where it lives.
    forge: Forge,
    /// The project on the forge: `owner/repo`, or GitLab's path with namespace.
    project: String,
    /// Its number (`#12` on GitHub, `!12` on GitLab).
    number: u64,
    title: String,
    /// Its page on the forge.
    url: String,
    /// Who opened it (on GitLab, who last acted on it: GitLab's events name the
    /// author by id only).
    author: String,
    /// Whether it is a draft.
    draft: bool,
    /// The branch it deploys.
    source_branch: String,
}

impl From<&MergeRequestInfo> for MergeRequest {
    fn from(info: &MergeRequestInfo) -> Self {
        MergeRequest {
            forge: info.forge.into(),
            project: info.project.clone(),
            number: info.number,
            title: info.title.clone(),
            url: info.url.clone(),
            author: info.author.clone(),
            draft: info.draft,
            source_branch: info.source_branch.clone(),
        }
    }
}
