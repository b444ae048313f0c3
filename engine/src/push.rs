//! What a push to a repository does, whichever forge reports it: the environments
//! that track the pushed branch or tag get the new commit (a patch, or a setup when
//! the domain says one is needed first), a branch the application's template asks
//! previews for gets a preview environment of its own, and a deleted branch takes its
//! preview with it.
//!
//! Forges speak of repositories by URL, applications by the address they were created
//! with; [`repository_key`] makes the two comparable. The forge-specific parts
//! (signatures, payloads, delivery ids) are the API's; this module only sees a
//! [`Push`].

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::domain::application::Application;
use crate::domain::environment::{Environment, EnvironmentKind, EnvironmentSpec, Status, Tracking};
use crate::domain::{CommitId, DomainError, Name, RunKind};
use crate::lifecycle::{Lifecycle, LifecycleError, Requested};
use crate::store::Metadata;
use crate::template::{ApplicationTemplate, Previews};

/// A push, as any forge reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Every address the forge gives for the pushed repository (clone URLs over HTTP
    /// and SSH, its web page, …); an application matches when its repository is any
    /// of them (see [`repository_key`]).
    pub repository_urls: Vec<String>,
    /// The branch or tag pushed.
    pub target: Tracking,
    /// The commit it points at now; `None` when the push deleted it.
    pub commit: Option<CommitId>,
    /// Who pushed, as the forge names them; goes into run reasons.
    pub pusher: String,
    /// Where the push was reported, e.g. `github delivery 72d3162e`; goes into run reasons.
    pub via: String,
}

/// The branch or tag a full ref names: `refs/heads/<branch>` or `refs/tags/<tag>`.
/// `None` for other refs (notes, merge-request heads, …), which nothing tracks.
pub fn pushed_ref(full: &str) -> Option<Tracking> {
    let nonempty = |name: &str| (!name.is_empty()).then(|| name.to_owned());
    if let Some(branch) = full.strip_prefix("refs/heads/") {
        return nonempty(branch).map(Tracking::Branch);
    }
    full.strip_prefix("refs/tags/").and_then(nonempty).map(Tracking::Tag)
}

/// What a push led to.
#[derive(Debug, Default)]
pub struct PushOutcome {
    /// Runs requested, by application and environment name.
    pub runs: Vec<PushRun>,
    /// Preview environments created for the pushed branch.
    pub created: Vec<(Name, Name)>,
    /// Environments whose request failed; the others went ahead regardless.
    pub failed: Vec<PushFailure>,
    /// Merge requests recorded as skipped, by application, and why.
    pub skipped: Vec<(Name, String)>,
}

/// One run a push requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRun {
    pub application: Name,
    pub environment: Name,
    pub kind: RunKind,
    pub run_id: Uuid,
}

/// An environment a push could not act on, and why.
#[derive(Debug)]
pub struct PushFailure {
    pub application: Name,
    pub environment: Name,
    pub error: LifecycleError,
}

impl Lifecycle {
    /// Acts on `push` for every application whose repository it is:
    ///
    /// - a new commit on a branch or tag: every environment tracking it that is not
    ///   torn down (nor being torn down) gets a patch to that commit, or a setup when
    ///   one is needed first, unless it is on (or queued to be on) that commit already;
    ///   an environment deploying a merge request follows the request's source branch;
    /// - a new commit on a branch that nothing tracks and that the application's
    ///   `previews` match: a `preview` environment is created for the branch, with the
    ///   template's TTL, and set up at that commit (named by [`preview_names`]);
    /// - a deleted branch: its preview environments are torn down, nothing else;
    /// - a deleted tag: nothing.
    ///
    /// Every request carries `metadata` and a reason naming the pusher and
    /// [`Push::via`]. A request that fails is reported in [`PushOutcome::failed`] and
    /// does not stop the others; `Err` only when applications or environments could
    /// not be read at all.
    #[tracing::instrument(skip_all, fields(via = %push.via, target = ?push.target), err)]
    pub async fn handle_push(
        &self,
        push: &Push,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<PushOutcome, LifecycleError> {
        let mut outcome = PushOutcome::default();
        for (app, application) in self.applications_of(&push.repository_urls).await? {
            let environments = self.environments_of(&app).await?;
            match &push.commit {
                Some(commit) => {
                    let previews = previews_for(&application, &push.target)?;
                    self.deploy_push(&app, &environments, commit, previews.as_ref(), push, metadata, now, &mut outcome)
                        .await;
                }
                None => self.tear_down_previews(&app, &environments, push, metadata, now, &mut outcome).await,
            }
        }
        Ok(outcome)
    }

    /// The commit of `push` onto every live environment of `app` that tracks what was
    /// pushed, or onto a new preview when none does and `previews` (already checked
    /// against the branch) asks for one.
    #[allow(clippy::too_many_arguments)]
    async fn deploy_push(
        &self,
        app: &Name,
        environments: &[Environment],
        commit: &CommitId,
        previews: Option<&Previews>,
        push: &Push,
        metadata: &Metadata,
        now: DateTime<Utc>,
        outcome: &mut PushOutcome,
    ) {
        let (what, name) = match &push.target {
            Tracking::Branch(name) => ("branch", name),
            Tracking::Tag(name) => ("tag", name),
        };
        let reason = format!("push to {what} {name} by {} ({})", push.pusher, push.via);
        // An environment deploying a merge request follows the request's branch.
        let tracking: Vec<&EnvironmentSpec> = environments
            .iter()
            .filter(|env| live(env) && env.follows().as_ref() == Some(&push.target))
            .filter_map(|env| env.created.as_ref())
            .collect();
        // A production environment deploys releases only: a push does not deploy it.
        for created in tracking.iter().filter(|c| c.kind != EnvironmentKind::Production) {
            let result =
                self.request_deploy(app, &created.name, Some(commit.clone()), None, &reason, metadata, now).await;
            outcome.record(app, &created.name, result);
        }
        let (Some(previews), Tracking::Branch(branch), true) = (previews, &push.target, tracking.is_empty()) else {
            return;
        };
        // Names in use stay taken after a teardown: streams are never removed.
        let taken: BTreeSet<&Name> =
            environments.iter().filter_map(|env| env.created.as_ref()).map(|c| &c.name).collect();
        let Some(name) = preview_names(branch).find(|name| !taken.contains(name)) else {
            let error = DomainError::AlreadyExists(format!("every preview name for branch {branch}"));
            let first = preview_names(branch).next().expect("there is always a first name");
            return outcome.fail(app, &first, error.into());
        };
        let spec = EnvironmentSpec {
            application: app.clone(),
            name: name.clone(),
            kind: EnvironmentKind::Preview,
            tracking: push.target.clone(),
            ttl_seconds: previews.ttl_seconds,
            drift_mode: Default::default(),
        };
        match self.create_preview(&spec, metadata, now).await {
            Ok(true) => outcome.created.push((app.clone(), name.clone())),
            Ok(false) => {}
            Err(error) => return outcome.fail(app, &name, error),
        }
        let result = self.request_deploy(app, &name, Some(commit.clone()), None, &reason, metadata, now).await;
        outcome.record(app, &name, result);
    }

    /// Creates the preview `spec` describes; `false` when another delivery for the same
    /// branch created it a moment ago. Refused when the name was taken by anything else
    /// meanwhile: a push must not deploy to someone else's environment.
    pub(crate) async fn create_preview(
        &self,
        spec: &EnvironmentSpec,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<bool, LifecycleError> {
        match self.create_environment(spec, metadata, now).await {
            Ok(()) => Ok(true),
            Err(LifecycleError::Domain(DomainError::AlreadyExists(what))) => {
                let (existing, _) = self.environment(&spec.application, &spec.name).await?;
                if existing.created.is_some_and(|c| c.kind == spec.kind && c.tracking == spec.tracking) {
                    Ok(false)
                } else {
                    Err(DomainError::AlreadyExists(what).into())
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Tears down the live preview environments of `app` that track the deleted branch.
    async fn tear_down_previews(
        &self,
        app: &Name,
        environments: &[Environment],
        push: &Push,
        metadata: &Metadata,
        now: DateTime<Utc>,
        outcome: &mut PushOutcome,
    ) {
        let Tracking::Branch(branch) = &push.target else { return };
        let reason = format!("branch {branch} deleted by {} ({})", push.pusher, push.via);
        for env in environments.iter().filter(|env| live(env)) {
            let Some(created) = env.created.as_ref() else { continue };
            if created.kind == EnvironmentKind::Preview && created.tracking == push.target {
                let result = self.request_teardown(app, &created.name, &reason, metadata, now).await;
                outcome.record(app, &created.name, result.map(Some));
            }
        }
    }
}

impl Lifecycle {
    /// The applications whose repository is one of `urls` (however written, see
    /// [`repository_key`]), in name order.
    pub(crate) async fn applications_of(&self, urls: &[String]) -> Result<Vec<(Name, Application)>, LifecycleError> {
        let keys: BTreeSet<String> = urls.iter().map(|url| repository_key(url)).filter(|key| !key.is_empty()).collect();
        let mut found = Vec::new();
        // Every application is read to compare its repository: fine for the tens of
        // applications one shiplog runs; a read model keyed by repository would replace
        // this scan if that grew.
        for app in self.application_names().await? {
            let (application, _) = self.application(&app).await?;
            if keys.contains(&repository_key(&application.repository)) {
                found.push((app, application));
            }
        }
        Ok(found)
    }
}

/// The application's current template, parsed; `None` before its first.
pub(crate) fn template_of(application: &Application) -> Result<Option<ApplicationTemplate>, LifecycleError> {
    let Some((_, _, template)) = &application.template else { return Ok(None) };
    serde_json::from_value(template.clone())
        .map(Some)
        .map_err(|e| LifecycleError::Corrupt(format!("stored application template: {e}")))
}

/// The application's `previews` when they ask for a preview of the pushed ref (a
/// branch they match).
fn previews_for(application: &Application, target: &Tracking) -> Result<Option<Previews>, LifecycleError> {
    let Tracking::Branch(branch) = target else { return Ok(None) };
    Ok(template_of(application)?.and_then(|t| t.previews).filter(|previews| previews.matches(branch)))
}

/// Neither torn down nor being torn down: a push may still deploy to it.
pub(crate) fn live(env: &Environment) -> bool {
    env.status != Some(Status::TornDown) && !env.teardown_pending()
}

impl PushOutcome {
    /// Records what a request for `env` led to: a run, nothing (the environment is
    /// on that commit already), or a failure.
    pub(crate) fn record(&mut self, app: &Name, env: &Name, result: Result<Option<Requested>, LifecycleError>) {
        match result {
            Ok(Some(requested)) => self.runs.push(PushRun {
                application: app.clone(),
                environment: env.clone(),
                kind: requested.kind,
                run_id: requested.run_id,
            }),
            Ok(None) => {}
            Err(error) => self.fail(app, env, error),
        }
    }

    pub(crate) fn fail(&mut self, app: &Name, env: &Name, error: LifecycleError) {
        tracing::warn!(application = %app, environment = %env, error = %error, "a push could not be acted on");
        self.failed.push(PushFailure { application: app.clone(), environment: env.clone(), error });
    }
}

/// The part of a repository address that names the repository, so that addresses
/// written differently compare equal: the scheme, user and port are dropped, the host
/// is lowercased, the scp-like form `git@host:owner/repo` reads as `host/owner/repo`,
/// and a trailing `/` or `.git` is removed. `https://github.com/o/r.git`,
/// `git@github.com:o/r.git`, `ssh://git@github.com:22/o/r` and
/// `https://github.com/o/r` all give `github.com/o/r`. A local path is kept as it is
/// (less a trailing `/` or `.git`), `file://` URLs included. Empty for an address that
/// names nothing, which matches nothing.
pub fn repository_key(address: &str) -> String {
    let address = address.trim();
    let (authority, path) = if let Some((_, rest)) = address.split_once("://") {
        rest.split_once('/').unwrap_or((rest, ""))
    } else {
        match address.split_once(':') {
            // `host:path` without a scheme: git's scp-like syntax. Local paths start
            // with `/` or `.`, and a `/` before the `:` means a path with a colon in it.
            Some((host, path)) if !host.is_empty() && !host.contains('/') && !address.starts_with('.') => (host, path),
            _ => return strip_repository_suffixes(address).to_owned(),
        }
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(host, |(address, _)| address),
        None => host.split(':').next().unwrap_or(host),
    };
    let key = format!("{}/{}", host.to_ascii_lowercase(), path.trim_start_matches('/'));
    strip_repository_suffixes(&key).to_owned()
}

fn strip_repository_suffixes(address: &str) -> &str {
    let address = address.trim_end_matches('/');
    address.strip_suffix(".git").unwrap_or(address).trim_end_matches('/')
}

/// The longest name an environment may have (see [`Name`]).
const NAME_LIMIT: usize = 40;
const PREVIEW_PREFIX: &str = "preview-";
/// Hex digits of the hash that tells apart previews whose names would collide.
const HASH_DIGITS: usize = 6;
/// How many hashed names are tried before giving up.
const HASHED_NAMES: u32 = 16;

/// Names for the preview environment of `branch`, best first: `preview-` and the
/// branch in lowercase with every run of other characters than `a-z0-9` as one `-`
/// (`feature/Login_page` → `preview-feature-login-page`), cut to the 40-character
/// limit; then, for when that name is taken (by a longer branch cut to the same
/// name, or by an earlier preview of this branch that was torn down), the same cut
/// shorter and followed by a 6-digit hash of the branch and the attempt. Every name
/// returned is a valid [`Name`]; the same branch always gives the same names.
pub fn preview_names(branch: &str) -> impl Iterator<Item = Name> {
    let mut slug = String::new();
    for c in branch.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    // The slug is ASCII, so cutting at any byte is cutting at a character.
    let cut = |len: usize| slug[..slug.len().min(len)].trim_end_matches('-').to_owned();
    let plain = (!slug.is_empty()).then(|| format!("{PREVIEW_PREFIX}{}", cut(NAME_LIMIT - PREVIEW_PREFIX.len())));
    let short = cut(NAME_LIMIT - PREVIEW_PREFIX.len() - 1 - HASH_DIGITS);
    let branch = branch.to_owned();
    let hashed = (0..HASHED_NAMES).map(move |attempt| {
        let hash = hex::encode(Sha256::digest(format!("{attempt}:{branch}")));
        let separator = if short.is_empty() { "" } else { "-" };
        format!("{PREVIEW_PREFIX}{short}{separator}{}", &hash[..HASH_DIGITS])
    });
    plain.into_iter().chain(hashed).filter_map(|name| name.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_one_repository_share_a_key() {
        for address in [
            "https://github.com/Octo/Hello.git",
            "https://github.com/Octo/Hello",
            "https://github.com/Octo/Hello/",
            "https://token:x@GitHub.com/Octo/Hello.git",
            "git@github.com:Octo/Hello.git",
            "ssh://git@github.com:22/Octo/Hello.git",
            "git://github.com/Octo/Hello.git",
        ] {
            assert_eq!(repository_key(address), "github.com/Octo/Hello", "{address}");
        }
        assert_eq!(repository_key("/srv/git/shop.git"), "/srv/git/shop");
        assert_eq!(repository_key("file:///srv/git/shop/"), "/srv/git/shop");
        assert_eq!(repository_key("/tmp/with:colon/repo"), "/tmp/with:colon/repo");
        assert_eq!(repository_key("./relative/repo"), "./relative/repo");
        assert_eq!(repository_key("ssh://git@[::1]:2222/o/r.git"), "::1/o/r");
        assert_eq!(repository_key(""), "");
        // Owners are different repositories; the path keeps its case.
        assert_ne!(repository_key("https://github.com/a/r"), repository_key("https://github.com/b/r"));
        assert_ne!(repository_key("https://github.com/o/R"), repository_key("https://github.com/o/r"));
    }

    #[test]
    fn refs_name_a_branch_or_a_tag() {
        assert_eq!(pushed_ref("refs/heads/feature/x"), Some(Tracking::Branch("feature/x".into())));
        assert_eq!(pushed_ref("refs/tags/v1.2"), Some(Tracking::Tag("v1.2".into())));
        for other in ["refs/heads/", "refs/notes/commits", "refs/merge-requests/1/head", "main"] {
            assert_eq!(pushed_ref(other), None, "{other}");
        }
    }

    fn names(branch: &str, n: usize) -> Vec<String> {
        preview_names(branch).take(n).map(String::from).collect()
    }

    #[test]
    fn preview_names_read_like_the_branch_and_fit_the_name_rules() {
        assert_eq!(names("feature/Login_page", 1), ["preview-feature-login-page"]);
        assert_eq!(names("--Ünïcode//x--", 1), ["preview-n-code-x"]);

        let long = "feature/a-very-long-branch-name-that-goes-on-and-on";
        let [plain, hashed, other]: [String; 3] = names(long, 3).try_into().unwrap();
        assert_eq!(plain, "preview-feature-a-very-long-branch-name");
        assert_eq!(plain.len(), 39, "cut to 40 and the trailing `-` removed");
        assert!(hashed.starts_with("preview-feature-a-very-long-branc-") && hashed.len() == 40, "{hashed}");
        assert_ne!(hashed, other);
        // Two branches cut to the same name differ in their hashed names.
        assert_eq!(names(&format!("{long}-too"), 1)[0], plain);
        assert_ne!(names(&format!("{long}-too"), 2)[1], hashed);
        assert_eq!(names(long, 3), [plain, hashed, other], "the same branch gives the same names");

        // Nothing usable in the branch: only hashed names.
        let [only]: [String; 1] = names("___", 1).try_into().unwrap();
        assert!(only.starts_with("preview-") && only.len() == 14, "{only}");
        assert_eq!(preview_names("x").count(), 1 + HASHED_NAMES as usize);
    }
}
