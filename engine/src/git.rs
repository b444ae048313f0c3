//! Fetching application source with the `git` command line: any URL git accepts,
//! local paths and `file://` included (which addresses an application may have is
//! `repository`'s rule, checked when it is created). Its messages never carry a
//! URL's password.

use std::path::Path;

use tokio::process::Command;

use crate::domain::CommitId;
use crate::repository::redact_credentials;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {action} failed: {detail}")]
    Failed { action: String, detail: String },
    #[error("{repository} has no commit {commit}")]
    NoSuchCommit { repository: String, commit: CommitId },
    #[error("running git: {0}")]
    Io(#[from] std::io::Error),
}

async fn git(args: &[&str], cwd: Option<&Path>) -> Result<String, GitError> {
    let mut command = Command::new("git");
    command.args(args).env("GIT_TERMINAL_PROMPT", "0").kill_on_drop(true);
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let out = command.output().await?;
    if !out.status.success() {
        return Err(GitError::Failed {
            action: args.first().copied().unwrap_or("").to_owned(),
            // Git repeats the address it was given, password included.
            detail: redact_credentials(String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit a branch or tag of `repository` points at now.
pub async fn resolve(repository: &str, reference: &str) -> Result<CommitId, GitError> {
    let listing = git(&["ls-remote", "--", repository, reference], None).await?;
    // Annotated tags list the tag object and, as `^{}`, the commit it points at.
    let mut lines: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    lines.sort_by_key(|(_, name)| !name.ends_with("^{}"));
    let exact = |name: &str| {
        name.trim_end_matches("^{}") == reference
            || name.trim_end_matches("^{}") == format!("refs/heads/{reference}")
            || name.trim_end_matches("^{}") == format!("refs/tags/{reference}")
    };
    let (sha, _) = lines.into_iter().find(|(_, name)| exact(name)).ok_or_else(|| GitError::Failed {
        action: "ls-remote".into(),
        detail: format!("{repository} has no branch or tag {reference:?}"),
    })?;
    sha.parse()
        .map_err(|_| GitError::Failed { action: "ls-remote".into(), detail: format!("unexpected commit id {sha:?}") })
}

/// Whether `repository` holds `commit`: `Ok(())`, or [`GitError::NoSuchCommit`]
/// when the repository answers but has no such commit (any other error: it could
/// not be asked). Fetches that one commit (without its history, and without its
/// files where the server can filter them) into a scratch repository.
pub async fn has_commit(repository: &str, commit: &CommitId) -> Result<(), GitError> {
    // Reachable at all? A failure here is the repository's, not the commit's.
    git(&["ls-remote", "--", repository, "HEAD"], None).await?;
    let scratch = std::env::temp_dir().join(format!("shiplog-commit-probe-{}", uuid::Uuid::new_v4()));
    let probe = async {
        git(&["init", "--quiet", "--bare", &scratch.to_string_lossy()], None).await?;
        let fetched = git(
            &["fetch", "--quiet", "--no-tags", "--depth=1", "--filter=tree:0", "--", repository, commit.as_str()],
            Some(&scratch),
        )
        .await;
        match fetched {
            Ok(_) => Ok(()),
            Err(GitError::Failed { .. }) => {
                Err(GitError::NoSuchCommit { repository: repository.to_owned(), commit: commit.clone() })
            }
            Err(e) => Err(e),
        }
    };
    let answer = probe.await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    answer
}

/// Checks `repository` out at `commit` into `dest` (which must not exist).
pub async fn checkout(repository: &str, commit: &CommitId, dest: &Path) -> Result<(), GitError> {
    let dest_str = dest.to_string_lossy();
    git(&["clone", "--quiet", "--no-checkout", "--", repository, &dest_str], None).await?;
    git(&["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit.as_str()], Some(dest)).await?;
    Ok(())
}

/// The head of `branch` of `repository`; `None` when it has no such branch.
pub async fn branch_head(repository: &str, branch: &str) -> Result<Option<CommitId>, GitError> {
    let full = format!("refs/heads/{branch}");
    let listing = git(&["ls-remote", "--heads", "--", repository, &full], None).await?;
    let head = listing.lines().filter_map(|l| l.split_once('\t')).find(|(_, name)| *name == full);
    head.map(|(sha, _)| {
        sha.parse().map_err(|_| GitError::Failed {
            action: "ls-remote".into(),
            detail: format!("unexpected commit id {sha:?}"),
        })
    })
    .transpose()
}

/// Whether `branch` of `repository` holds `commit` (its head or an ancestor of
/// it); `false` when the branch or the commit does not exist.
pub async fn branch_contains(repository: &str, branch: &str, commit: &CommitId) -> Result<bool, GitError> {
    if branch_head(repository, branch).await?.is_none() {
        return Ok(false);
    }
    let dest = std::env::temp_dir().join(format!("shiplog-branch-{}", uuid::Uuid::new_v4().simple()));
    let contains = clone_and_ask(repository, branch, commit, &dest).await;
    // The copy is only needed for the one question; removed however it went.
    let _ = tokio::fs::remove_dir_all(&dest).await;
    contains
}

async fn clone_and_ask(repository: &str, branch: &str, commit: &CommitId, dest: &Path) -> Result<bool, GitError> {
    let dest_str = dest.to_string_lossy();
    // The history of that one branch is all the question needs; blobs are left out
    // where the remote can filter.
    let branch_arg = format!("--branch={branch}");
    let args = ["clone", "--quiet", "--bare", "--filter=blob:none", "--single-branch", &branch_arg, "--", repository];
    git(&[&args[..], &[&dest_str]].concat(), None).await?;
    let status = Command::new("git")
        .args(["merge-base", "--is-ancestor", commit.as_str(), "HEAD"])
        .current_dir(dest)
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true)
        .output()
        .await?
        .status;
    // 0: an ancestor; 1: not one; anything else: git does not know the commit.
    Ok(status.success())
}
