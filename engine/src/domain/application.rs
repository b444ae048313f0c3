//! An application: a repository and the versioned templates every environment of
//! it is set up from. Templates arrive parsed and validated (see `template`); the
//! domain versions them and ignores updates that change nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::collections::BTreeMap;

use super::merge_request::MergeRequestInfo;
use super::release::{self, CalVer, Component, NewRelease, Release};
use super::{Aggregate, CommitId, DomainError, Name, TemplateVersions};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ApplicationEvent {
    ApplicationCreated {
        name: Name,
        repository: String,
        created_at: DateTime<Utc>,
    },
    ApplicationTemplateUpdated {
        version: u64,
        digest: String,
        template: serde_json::Value,
        updated_at: DateTime<Utc>,
    },
    /// Secret values are not in the event: `variables` is the redacted form.
    EnvironmentVariablesUpdated {
        version: u64,
        digest: String,
        variables: serde_json::Value,
        updated_at: DateTime<Utc>,
    },
    /// A merge request's event deployed nothing, and why (a draft, a `WIP:` title).
    MergeRequestSkipped {
        request: MergeRequestInfo,
        commit: CommitId,
        reason: String,
        skipped_at: DateTime<Utc>,
    },
    /// An accepted release: deployable (`docs/releases.md`).
    ReleaseCreated {
        release_id: Uuid,
        tag: CalVer,
        /// The commit of the application's repository it deploys.
        commit: CommitId,
        components: Vec<Component>,
        notes: String,
        linked_issues: Vec<u64>,
        created_at: DateTime<Utc>,
    },
    /// A release whose tag is not CalVer, and why: recorded, never deployed.
    ReleaseRejected {
        release_id: Uuid,
        tag: String,
        reason: String,
        commit: CommitId,
        components: Vec<Component>,
        notes: String,
        linked_issues: Vec<u64>,
        rejected_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Application {
    pub name: Option<Name>,
    pub repository: String,
    pub template: Option<(u64, String, serde_json::Value)>,
    /// Version and digest; the values live outside the log (secrets).
    pub variables: Option<(u64, String)>,
    /// The last skip recorded per request number, so that the same skip (a draft
    /// whose description was edited) is recorded once.
    #[serde(default)]
    pub skipped_requests: BTreeMap<u64, (MergeRequestInfo, CommitId, String)>,
    /// Every release, accepted or rejected, oldest first.
    #[serde(default)]
    pub releases: Vec<Release>,
}

pub enum ApplicationCommand {
    Create {
        name: Name,
        repository: String,
        now: DateTime<Utc>,
    },
    UpdateTemplate {
        digest: String,
        template: serde_json::Value,
        now: DateTime<Utc>,
    },
    UpdateVariables {
        digest: String,
        redacted: serde_json::Value,
        now: DateTime<Utc>,
    },
    /// Record that a request's event at `commit` deployed nothing, and why; nothing
    /// when that is what was recorded last for the request.
    SkipMergeRequest {
        request: MergeRequestInfo,
        commit: CommitId,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Record a release (accepted, or rejected for its tag) or refuse it.
    CreateRelease(NewRelease),
}

impl Application {
    /// The templates an environment would be set up with now. An application
    /// without variables has the empty variable set, version 0.
    pub fn current(&self) -> Result<TemplateVersions, DomainError> {
        let (template_version, template_digest, _) = self.template.as_ref().ok_or(DomainError::NoTemplate)?;
        let (variables_version, variables_digest) = self.variables.clone().unwrap_or((0, String::new()));
        Ok(TemplateVersions {
            template_version: *template_version,
            template_digest: template_digest.clone(),
            variables_version,
            variables_digest,
        })
    }
}

pub fn decide(app: &Application, command: ApplicationCommand) -> Result<Vec<ApplicationEvent>, DomainError> {
    match command {
        ApplicationCommand::Create { name, repository, now } => match &app.name {
            Some(existing) => Err(DomainError::AlreadyExists(format!("application {existing}"))),
            None => Ok(vec![ApplicationEvent::ApplicationCreated { name, repository, created_at: now }]),
        },
        _ if app.name.is_none() => Err(DomainError::NotFound("application".into())),
        ApplicationCommand::UpdateTemplate { digest, template, now } => {
            let (version, current) = app.template.as_ref().map_or((0, ""), |(v, d, _)| (*v, d.as_str()));
            if current == digest {
                return Ok(vec![]);
            }
            Ok(vec![ApplicationEvent::ApplicationTemplateUpdated {
                version: version + 1,
                digest,
                template,
                updated_at: now,
            }])
        }
        ApplicationCommand::UpdateVariables { digest, redacted, now } => {
            let (version, current) = app.variables.as_ref().map_or((0, ""), |(v, d)| (*v, d.as_str()));
            if current == digest {
                return Ok(vec![]);
            }
            Ok(vec![ApplicationEvent::EnvironmentVariablesUpdated {
                version: version + 1,
                digest,
                variables: redacted,
                updated_at: now,
            }])
        }
        ApplicationCommand::SkipMergeRequest { request, commit, reason, now } => {
            let last = app.skipped_requests.get(&request.number);
            if last.is_some_and(|(r, c, why)| r == &request && c == &commit && why == &reason) {
                return Ok(vec![]);
            }
            Ok(vec![ApplicationEvent::MergeRequestSkipped { request, commit, reason, skipped_at: now }])
        }
        ApplicationCommand::CreateRelease(new) => {
            let name = app.name.as_ref().map(Name::as_str).unwrap_or_default();
            Ok(vec![release::decide(name, &app.releases, new)?])
        }
    }
}

impl Aggregate for Application {
    type Event = ApplicationEvent;
    type Command = ApplicationCommand;

    fn initial() -> Self {
        Application::default()
    }

    fn decide(&self, command: ApplicationCommand) -> Result<Vec<ApplicationEvent>, DomainError> {
        decide(self, command)
    }

    fn evolve(self, event: &ApplicationEvent) -> Self {
        evolve(self, event)
    }
}

pub fn evolve(mut app: Application, event: &ApplicationEvent) -> Application {
    match event {
        ApplicationEvent::ApplicationCreated { name, repository, .. } => {
            app.name = Some(name.clone());
            app.repository = repository.clone();
        }
        ApplicationEvent::ApplicationTemplateUpdated { version, digest, template, .. } => {
            app.template = Some((*version, digest.clone(), template.clone()));
        }
        ApplicationEvent::EnvironmentVariablesUpdated { version, digest, .. } => {
            app.variables = Some((*version, digest.clone()));
        }
        ApplicationEvent::MergeRequestSkipped { request, commit, reason, .. } => {
            app.skipped_requests.insert(request.number, (request.clone(), commit.clone(), reason.clone()));
        }
        ApplicationEvent::ReleaseCreated { .. } | ApplicationEvent::ReleaseRejected { .. } => {
            release::evolve(&mut app.releases, event);
        }
    }
    app
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::testing::given;
    use serde_json::json;

    fn t() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn created() -> ApplicationEvent {
        ApplicationEvent::ApplicationCreated {
            name: "shop".parse().unwrap(),
            repository: "/srv/shop.git".into(),
            created_at: t(),
        }
    }

    #[test]
    fn template_updates_are_versioned_and_repeats_change_nothing() {
        let update =
            |d: &str| ApplicationCommand::UpdateTemplate { digest: d.into(), template: json!({ "d": d }), now: t() };
        let updated = |version, d: &str| ApplicationEvent::ApplicationTemplateUpdated {
            version,
            digest: d.into(),
            template: json!({ "d": d }),
            updated_at: t(),
        };
        let app = given::<Application>([created()])
            .when(update("sha256:a"))
            .then([updated(1, "sha256:a")])
            .when(update("sha256:a"))
            .then([])
            .when(update("sha256:b"))
            .then([updated(2, "sha256:b")]);
        assert_eq!(app.state().current().unwrap().template_version, 2);
    }

    #[test]
    fn an_application_needs_a_template_before_environments_can_use_it() {
        assert_eq!(given::<Application>([created()]).state().current(), Err(DomainError::NoTemplate));
    }

    #[test]
    fn creating_twice_or_updating_nothing_is_refused() {
        let create = ApplicationCommand::Create { name: "shop".parse().unwrap(), repository: "x".into(), now: t() };
        given::<Application>([created()]).when(create).then_err(DomainError::AlreadyExists("application shop".into()));
        let update = ApplicationCommand::UpdateVariables { digest: "d".into(), redacted: json!({}), now: t() };
        given::<Application>([]).when(update).then_err(DomainError::NotFound("application".into()));
    }
}
