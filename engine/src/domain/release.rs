//! Releases of an application (`docs/releases.md`): the CalVer tag that names one,
//! the components it pins, and the decision whether it is accepted.
//!
//! A tag is `YYYY.MM.N`: a four-digit year, a two-digit month 01–12 and an
//! iteration ≥ 1 without a leading zero, with nothing before or after it. [`CalVer`]
//! can only hold such a tag; [`CalVerError`] says which rule a string broke, so a
//! release whose tag does not conform can be recorded as rejected with its reason.
//!
//! A release lives on its application's stream (`ReleaseCreated`,
//! `ReleaseRejected`), so that the uniqueness of its tag is decided against the one
//! folded state it belongs to. What the repositories say about each pinned
//! component (IO) is found by the lifecycle and handed to [`decide`] as
//! [`ComponentFinding`]s; every rule is decided here.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::application::ApplicationEvent;
use super::{CommitId, DomainError};

/// A conforming release tag. Tags order by year, then month, then iteration, so
/// `2023.06.10` is newer than `2023.06.9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CalVer {
    year: u16,
    month: u8,
    iteration: u32,
}

impl CalVer {
    /// The first iteration of a month.
    ///
    /// # Panics
    /// If `year` is not four digits or `month` is not 1–12: callers pass a date.
    pub fn first_of(year: u16, month: u8) -> CalVer {
        assert!((1000..=9999).contains(&year) && (1..=12).contains(&month), "{year}-{month} is not a date");
        CalVer { year, month, iteration: 1 }
    }

    /// The tag after this one in the same month.
    pub fn next(self) -> CalVer {
        CalVer { iteration: self.iteration + 1, ..self }
    }

    /// The next free tag of a month, given the tags already taken (of any month).
    pub fn next_free(year: u16, month: u8, taken: impl IntoIterator<Item = CalVer>) -> CalVer {
        let first = CalVer::first_of(year, month);
        taken.into_iter().filter(|t| (t.year, t.month) == (year, month)).max().map_or(first, CalVer::next)
    }

    pub fn year(self) -> u16 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    pub fn iteration(self) -> u32 {
        self.iteration
    }
}

/// Why a string is not a release tag. The messages are for the person who chose it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalVerError {
    #[error("the tag is empty; use YYYY.MM.N, e.g. 2023.06.2")]
    Empty,
    #[error("the tag has whitespace or other characters around it; use exactly YYYY.MM.N")]
    Surrounded,
    #[error("the tag must be three parts separated by dots, YYYY.MM.N")]
    Parts,
    #[error("the year must be four digits, found {0:?}")]
    Year(String),
    #[error("the month must be two digits, 01 to 12, found {0:?}")]
    Month(String),
    #[error("the iteration must be a number with nothing after it, found {0:?}")]
    Iteration(String),
    #[error("the iteration must not have a leading zero, found {0:?}")]
    LeadingZero(String),
    #[error("the iteration starts at 1, found 0")]
    ZeroIteration,
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for CalVer {
    type Err = CalVerError;

    fn from_str(s: &str) -> Result<Self, CalVerError> {
        if s.is_empty() {
            return Err(CalVerError::Empty);
        }
        if s.trim() != s {
            return Err(CalVerError::Surrounded);
        }
        let parts: Vec<&str> = s.split('.').collect();
        let [year, month, iteration] = parts[..] else {
            return Err(CalVerError::Parts);
        };
        if year.len() != 4 || !digits(year) {
            return Err(CalVerError::Year(year.to_owned()));
        }
        let month_number = if month.len() == 2 && digits(month) { month.parse::<u8>().ok() } else { None };
        let Some(month_number @ 1..=12) = month_number else {
            return Err(CalVerError::Month(month.to_owned()));
        };
        if !digits(iteration) {
            return Err(CalVerError::Iteration(iteration.to_owned()));
        }
        if iteration == "0" {
            return Err(CalVerError::ZeroIteration);
        }
        if iteration.starts_with('0') {
            return Err(CalVerError::LeadingZero(iteration.to_owned()));
        }
        let iteration = iteration.parse().map_err(|_| CalVerError::Iteration(iteration.to_owned()))?;
        Ok(CalVer { year: year.parse().expect("four digits"), month: month_number, iteration })
    }
}

impl TryFrom<String> for CalVer {
    type Error = CalVerError;
    fn try_from(s: String) -> Result<Self, CalVerError> {
        s.parse()
    }
}

impl From<CalVer> for String {
    fn from(tag: CalVer) -> String {
        tag.to_string()
    }
}

impl fmt::Display for CalVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}.{:02}.{}", self.year, self.month, self.iteration)
    }
}

/// What a component pin names, as the person asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// An accepted release of the component (another application), by its tag.
    Release(String),
    /// A git tag of the component's repository.
    Tag(String),
    /// A commit of the component's repository.
    Commit(CommitId),
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Release(tag) => write!(f, "release {tag}"),
            Pin::Tag(tag) => write!(f, "tag {tag}"),
            Pin::Commit(commit) => write!(f, "commit {}", commit.short()),
        }
    }
}

/// What a component is: a service of the release's own application, or another
/// shiplog application (a stack pins its backend and frontend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Service,
    Application,
}

/// One pinned component of a release, as recorded: the pin asked for and the
/// commit of the component's repository it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub kind: ComponentKind,
    pub pin: Pin,
    /// On the component's production branch.
    pub commit: CommitId,
    /// For a pinned release: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Uuid>,
}

/// What the lifecycle found about one pin in the applications and repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The commit a tag or commit pin names, and whether the component's
    /// production branch holds it (`false` too when the branch or commit is missing).
    Commit { commit: CommitId, on_production_branch: bool },
    /// The tag does not exist in the component's repository.
    NoSuchTag,
    /// The pinned release as the other application records it; `None` when it has
    /// no release with that tag (or the component is a service, which has none).
    Release(Option<Release>),
}

/// One pin of a release being created, with what was found about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFinding {
    pub name: String,
    /// `None`: neither a service of the application nor an application.
    pub kind: Option<ComponentKind>,
    pub pin: Pin,
    /// The component's production branch (`production_branch` of its template).
    pub production_branch: String,
    pub finding: Finding,
}

/// Whether a release may ever be deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    Accepted,
    /// Its tag does not conform: recorded, never deployed.
    Rejected,
}

/// A release as its application's events say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: Uuid,
    /// As written: a rejected release's tag need not be CalVer.
    pub tag: String,
    pub status: ReleaseStatus,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// The commit of the application's own repository it deploys.
    pub commit: CommitId,
    pub components: Vec<Component>,
    pub notes: String,
    pub linked_issues: Vec<u64>,
    pub created_at: DateTime<Utc>,
}

impl Release {
    /// The tag of an accepted release; `None` for a rejected one.
    pub fn accepted_tag(&self) -> Option<CalVer> {
        (self.status == ReleaseStatus::Accepted).then(|| self.tag.parse().ok()).flatten()
    }
}

/// The release an environment deploys: its id and tag (the tag orders releases).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedRelease {
    pub id: Uuid,
    pub tag: CalVer,
}

/// What `releaseCreate` asks for, with what the lifecycle found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelease {
    pub id: Uuid,
    pub tag: String,
    pub components: Vec<ComponentFinding>,
    /// The application's production branch, and its head (`None` when the branch
    /// does not exist): what the release deploys when it pins no service of the
    /// application itself.
    pub production_branch: String,
    pub head: Option<CommitId>,
    pub notes: String,
    pub linked_issues: Vec<u64>,
    pub now: DateTime<Utc>,
}

/// The branch releases are cut from when a template names none.
pub const DEFAULT_PRODUCTION_BRANCH: &str = "production";

/// Decides a new release of `application`, which has `releases` already: refused
/// (nothing recorded) when its tag is taken or a component pin is not acceptable;
/// otherwise `ReleaseCreated`, or `ReleaseRejected` with the reason when its tag is
/// not CalVer.
pub fn decide(application: &str, releases: &[Release], new: NewRelease) -> Result<ApplicationEvent, DomainError> {
    if releases.iter().any(|r| r.tag == new.tag) {
        return Err(DomainError::AlreadyExists(format!("release {:?} of application {application}", new.tag)));
    }
    let mut components = Vec::with_capacity(new.components.len());
    for (i, pin) in new.components.iter().enumerate() {
        if new.components[..i].iter().any(|earlier| earlier.name == pin.name) {
            return Err(refused(&pin.name, "it is pinned twice; pin each component once".into()));
        }
        components.push(component(application, pin)?);
    }
    let commit = own_commit(application, &components, &new)?;
    let NewRelease { id: release_id, tag, notes, mut linked_issues, now, .. } = new;
    linked_issues.sort_unstable();
    linked_issues.dedup();
    Ok(match tag.parse::<CalVer>() {
        Ok(tag) => ApplicationEvent::ReleaseCreated {
            release_id,
            tag,
            commit,
            components,
            notes,
            linked_issues,
            created_at: now,
        },
        Err(why) => ApplicationEvent::ReleaseRejected {
            release_id,
            tag,
            reason: why.to_string(),
            commit,
            components,
            notes,
            linked_issues,
            rejected_at: now,
        },
    })
}

fn refused(component: &str, reason: String) -> DomainError {
    DomainError::ReleaseComponent { component: component.to_owned(), reason }
}

/// The component a pin makes, or why it cannot be pinned.
fn component(application: &str, found: &ComponentFinding) -> Result<Component, DomainError> {
    let ComponentFinding { name, kind, pin, production_branch, finding } = found;
    let Some(kind) = *kind else {
        return Err(refused(name, format!("it is neither a service of {application} nor a shiplog application")));
    };
    let (commit, release) = match (kind, pin, finding) {
        (ComponentKind::Service, Pin::Release(_), _) => {
            let reason = format!("a service of {application} has no releases of its own; pin a tag or commit");
            return Err(refused(name, reason));
        }
        (_, Pin::Release(tag), Finding::Release(None)) => {
            return Err(refused(name, format!("{name} has no release {tag:?}")));
        }
        (_, Pin::Release(tag), Finding::Release(Some(release))) => {
            if let Some(reason) = &release.reason {
                let reason = format!("release {tag} of {name} was rejected ({reason}); pin an accepted release");
                return Err(refused(name, reason));
            }
            (release.commit.clone(), Some(release.id))
        }
        (_, Pin::Tag(tag), Finding::NoSuchTag) => return Err(refused(name, format!("it has no tag {tag:?}"))),
        (_, pin, Finding::Commit { on_production_branch: false, .. }) => {
            let reason = format!("{pin} is not on its production branch `{production_branch}`");
            return Err(refused(name, reason));
        }
        (_, _, Finding::Commit { commit, on_production_branch: true }) => (commit.clone(), None),
        (_, pin, finding) => unreachable!("the lifecycle finds {finding:?} for no {pin:?}"),
    };
    Ok(Component { name: name.clone(), kind, pin: pin.clone(), commit, release })
}

/// The commit of the application's own repository the release deploys: the one
/// its pinned services share (a run builds every service from one commit), or else
/// the head of its production branch.
fn own_commit(application: &str, components: &[Component], new: &NewRelease) -> Result<CommitId, DomainError> {
    let mut services = components.iter().filter(|c| c.kind == ComponentKind::Service);
    match services.next() {
        Some(first) => match services.find(|other| other.commit != first.commit) {
            Some(other) => Err(refused(
                &other.name,
                format!(
                    "the services of {application} deploy from one commit: {} is at {}, {} at {}",
                    first.name,
                    first.commit.short(),
                    other.name,
                    other.commit.short()
                ),
            )),
            None => Ok(first.commit.clone()),
        },
        None => new.head.clone().ok_or_else(|| {
            let reason = format!("its production branch `{}` does not exist", new.production_branch);
            refused(application, reason)
        }),
    }
}

/// The releases after `event` (an event that is no release's changes nothing).
pub fn evolve(releases: &mut Vec<Release>, event: &ApplicationEvent) {
    let release = match event {
        ApplicationEvent::ReleaseCreated { release_id, tag, commit, components, notes, linked_issues, created_at } => {
            Release {
                id: *release_id,
                tag: tag.to_string(),
                status: ReleaseStatus::Accepted,
                reason: None,
                commit: commit.clone(),
                components: components.clone(),
                notes: notes.clone(),
                linked_issues: linked_issues.clone(),
                created_at: *created_at,
            }
        }
        ApplicationEvent::ReleaseRejected {
            release_id,
            tag,
            reason,
            commit,
            components,
            notes,
            linked_issues,
            rejected_at,
        } => Release {
            id: *release_id,
            tag: tag.clone(),
            status: ReleaseStatus::Rejected,
            reason: Some(reason.clone()),
            commit: commit.clone(),
            components: components.clone(),
            notes: notes.clone(),
            linked_issues: linked_issues.clone(),
            created_at: *rejected_at,
        },
        _ => return,
    };
    releases.push(release);
}

/// What an environment deploys of `release`, or why it is never deployed.
pub fn deployable(release: &Release) -> Result<DeployedRelease, DomainError> {
    match (release.accepted_tag(), &release.reason) {
        (Some(tag), _) => Ok(DeployedRelease { id: release.id, tag }),
        (None, reason) => {
            Err(DomainError::ReleaseRejected { tag: release.tag.clone(), reason: reason.clone().unwrap_or_default() })
        }
    }
}

/// The tag `releaseNext` suggests for the month of `now`: after the newest accepted
/// tag of that month.
pub fn next_tag(releases: &[Release], now: DateTime<Utc>) -> CalVer {
    use chrono::Datelike;
    let (year, month) = (now.year() as u16, now.month() as u8);
    CalVer::next_free(year, month, releases.iter().filter_map(Release::accepted_tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use CalVerError::*;

    #[test]
    fn tags_follow_the_calver_rules_with_a_reason_for_each_refusal() {
        let table: &[(&str, Result<(u16, u8, u32), CalVerError>)] = &[
            ("2023.06.2", Ok((2023, 6, 2))),
            ("2023.12.1", Ok((2023, 12, 1))),
            ("2024.01.117", Ok((2024, 1, 117))),
            ("2023.6.2", Err(Month("6".into()))),
            ("2023.13.1", Err(Month("13".into()))),
            ("2023.00.1", Err(Month("00".into()))),
            ("2023.06.0", Err(ZeroIteration)),
            ("2023.06.02", Err(LeadingZero("02".into()))),
            ("v2023.06.1", Err(Year("v2023".into()))),
            ("2023.06.1-rc1", Err(Iteration("1-rc1".into()))),
            ("02023.06.1", Err(Year("02023".into()))),
            (" 2023.06.1", Err(Surrounded)),
            ("2023.06.1\n", Err(Surrounded)),
            ("", Err(Empty)),
            ("2023.06", Err(Parts)),
            ("2023.06.1.1", Err(Parts)),
            ("2023.+6.1", Err(Month("+6".into()))),
            ("2023.06.99999999999", Err(Iteration("99999999999".into()))),
        ];
        for (tag, expected) in table {
            let parsed = tag.parse::<CalVer>().map(|t| (t.year(), t.month(), t.iteration()));
            assert_eq!(&parsed, expected, "{tag:?}");
        }
    }

    #[test]
    fn a_tag_prints_as_it_was_written_and_round_trips_through_serde() {
        let tag: CalVer = "2023.06.2".parse().unwrap();
        assert_eq!(tag.to_string(), "2023.06.2");
        assert_eq!(serde_json::to_string(&tag).unwrap(), "\"2023.06.2\"");
        assert_eq!(serde_json::from_str::<CalVer>("\"2023.06.2\"").unwrap(), tag);
        let err = serde_json::from_str::<CalVer>("\"2023.6.2\"").unwrap_err();
        assert!(err.to_string().starts_with("the month must be two digits, 01 to 12, found \"6\""), "{err}");
    }

    #[test]
    fn tags_order_numerically_and_the_next_free_one_is_after_the_month_s_newest() {
        let tag = |s: &str| s.parse::<CalVer>().unwrap();
        assert!(tag("2023.06.10") > tag("2023.06.9"));
        assert!(tag("2024.01.1") > tag("2023.12.30"));
        let taken = [tag("2023.06.1"), tag("2023.06.3"), tag("2023.07.8"), tag("2023.05.9")];
        assert_eq!(CalVer::next_free(2023, 6, taken), tag("2023.06.4"));
        assert_eq!(CalVer::next_free(2023, 8, taken), tag("2023.08.1"));
        assert_eq!(CalVer::next_free(2023, 8, []), tag("2023.08.1"));
    }

    mod create {
        use super::super::*;
        use crate::domain::aggregate::testing::given;
        use crate::domain::application::{Application, ApplicationCommand, ApplicationEvent};
        use crate::domain::run::tests::commit;

        fn t() -> DateTime<Utc> {
            DateTime::from_timestamp(1_686_000_000, 0).unwrap()
        }

        fn shop() -> ApplicationEvent {
            ApplicationEvent::ApplicationCreated {
                name: "stack".parse().unwrap(),
                repository: "/srv/stack.git".into(),
                created_at: t(),
            }
        }

        fn on_branch(name: &str, kind: ComponentKind, pin: Pin, c: char, on: bool) -> ComponentFinding {
            ComponentFinding {
                name: name.into(),
                kind: Some(kind),
                pin,
                production_branch: "production".into(),
                finding: Finding::Commit { commit: commit(c), on_production_branch: on },
            }
        }

        fn new(id: u128, tag: &str, components: Vec<ComponentFinding>) -> ApplicationCommand {
            ApplicationCommand::CreateRelease(NewRelease {
                id: Uuid::from_u128(id),
                tag: tag.into(),
                components,
                production_branch: "production".into(),
                head: Some(commit('f')),
                notes: "notes".into(),
                linked_issues: vec![12, 3, 12],
                now: t(),
            })
        }

        fn accepted(id: u128, tag: &str, c: char, components: Vec<Component>) -> ApplicationEvent {
            ApplicationEvent::ReleaseCreated {
                release_id: Uuid::from_u128(id),
                tag: tag.parse().unwrap(),
                commit: commit(c),
                components,
                notes: "notes".into(),
                linked_issues: vec![3, 12],
                created_at: t(),
            }
        }

        fn pinned(name: &str, kind: ComponentKind, pin: Pin, c: char, release: Option<u128>) -> Component {
            Component { name: name.into(), kind, pin, commit: commit(c), release: release.map(Uuid::from_u128) }
        }

        fn backend_release(tag: &str, status: ReleaseStatus) -> Release {
            Release {
                id: Uuid::from_u128(77),
                tag: tag.into(),
                status,
                reason: (status == ReleaseStatus::Rejected).then(|| "the tag is bad".into()),
                commit: commit('b'),
                components: vec![],
                notes: String::new(),
                linked_issues: vec![],
                created_at: t(),
            }
        }

        fn release_pin(name: &str, tag: &str, found: Option<Release>) -> ComponentFinding {
            ComponentFinding {
                name: name.into(),
                kind: Some(ComponentKind::Application),
                pin: Pin::Release(tag.into()),
                production_branch: "production".into(),
                finding: Finding::Release(found),
            }
        }

        fn refused(component: &str, reason: &str) -> DomainError {
            DomainError::ReleaseComponent { component: component.into(), reason: reason.into() }
        }

        #[test]
        fn a_stack_release_pins_other_applications_releases_and_the_head_of_its_production_branch() {
            let backend =
                release_pin("backend", "2023.05.1", Some(backend_release("2023.05.1", ReleaseStatus::Accepted)));
            let frontend = on_branch("frontend", ComponentKind::Application, Pin::Tag("v4".into()), 'c', true);
            let stack =
                given::<Application>([shop()]).when(new(1, "2023.06.1", vec![backend, frontend])).then([accepted(
                    1,
                    "2023.06.1",
                    'f',
                    vec![
                        pinned("backend", ComponentKind::Application, Pin::Release("2023.05.1".into()), 'b', Some(77)),
                        pinned("frontend", ComponentKind::Application, Pin::Tag("v4".into()), 'c', None),
                    ],
                )]);
            let state = stack.state();
            assert_eq!(state.releases.len(), 1);
            assert_eq!(
                (state.releases[0].status, state.releases[0].accepted_tag()),
                (ReleaseStatus::Accepted, Some("2023.06.1".parse().unwrap()))
            );
            assert_eq!(deployable(&state.releases[0]).unwrap().id, Uuid::from_u128(1));
        }

        #[test]
        fn a_release_of_services_deploys_the_commit_they_share_and_they_must_share_one() {
            let web = on_branch("web", ComponentKind::Service, Pin::Commit(commit('a')), 'a', true);
            let worker = on_branch("worker", ComponentKind::Service, Pin::Tag("v1".into()), 'a', true);
            given::<Application>([shop()]).when(new(1, "2023.06.1", vec![web.clone(), worker])).then([accepted(
                1,
                "2023.06.1",
                'a',
                vec![
                    pinned("web", ComponentKind::Service, Pin::Commit(commit('a')), 'a', None),
                    pinned("worker", ComponentKind::Service, Pin::Tag("v1".into()), 'a', None),
                ],
            )]);
            let apart = on_branch("worker", ComponentKind::Service, Pin::Tag("v2".into()), 'b', true);
            given::<Application>([shop()]).when(new(1, "2023.06.1", vec![web, apart])).then_err(refused(
                "worker",
                "the services of stack deploy from one commit: web is at aaaaaaaaaaaa, worker at bbbbbbbbbbbb",
            ));
        }

        #[test]
        fn a_tag_that_is_not_calver_is_recorded_as_rejected_with_its_reason_and_is_never_deployable() {
            let stack = given::<Application>([shop()]).when(new(1, "v2023.06.1", vec![])).then([
                ApplicationEvent::ReleaseRejected {
                    release_id: Uuid::from_u128(1),
                    tag: "v2023.06.1".into(),
                    reason: "the year must be four digits, found \"v2023\"".into(),
                    commit: commit('f'),
                    components: vec![],
                    notes: "notes".into(),
                    linked_issues: vec![3, 12],
                    rejected_at: t(),
                },
            ]);
            let rejected = &stack.state().releases[0];
            assert_eq!((rejected.status, rejected.accepted_tag()), (ReleaseStatus::Rejected, None));
            let refusal = deployable(rejected).unwrap_err();
            assert_eq!(
                refusal,
                DomainError::ReleaseRejected {
                    tag: "v2023.06.1".into(),
                    reason: "the year must be four digits, found \"v2023\"".into()
                }
            );
            assert_eq!(
                refusal.to_string(),
                "release \"v2023.06.1\" was rejected (the year must be four digits, found \"v2023\"); a rejected \
                 release is never deployed"
            );
            // Its tag is taken all the same.
            stack
                .when(new(2, "v2023.06.1", vec![]))
                .then_err(DomainError::AlreadyExists("release \"v2023.06.1\" of application stack".into()));
        }

        #[test]
        fn tags_are_unique_per_application_and_a_duplicate_records_nothing() {
            given::<Application>([shop()])
                .when(new(1, "2023.06.1", vec![]))
                .then_types(&["ReleaseCreated"])
                .when(new(2, "2023.06.1", vec![]))
                .then_err(DomainError::AlreadyExists("release \"2023.06.1\" of application stack".into()));
        }

        #[test]
        fn every_pin_that_is_not_acceptable_is_refused_naming_its_component() {
            let app = given::<Application>([shop()]);
            let cases = [
                (
                    ComponentFinding { kind: None, ..release_pin("nope", "2023.05.1", None) },
                    refused("nope", "it is neither a service of stack nor a shiplog application"),
                ),
                (release_pin("backend", "2023.05.9", None), refused("backend", "backend has no release \"2023.05.9\"")),
                (
                    release_pin("backend", "v1", Some(backend_release("v1", ReleaseStatus::Rejected))),
                    refused("backend", "release v1 of backend was rejected (the tag is bad); pin an accepted release"),
                ),
                (
                    ComponentFinding { kind: Some(ComponentKind::Service), ..release_pin("web", "2023.05.1", None) },
                    refused("web", "a service of stack has no releases of its own; pin a tag or commit"),
                ),
                (
                    ComponentFinding {
                        finding: Finding::NoSuchTag,
                        ..on_branch("frontend", ComponentKind::Application, Pin::Tag("v9".into()), 'c', true)
                    },
                    refused("frontend", "it has no tag \"v9\""),
                ),
                (
                    on_branch("frontend", ComponentKind::Application, Pin::Tag("v5".into()), 'c', false),
                    refused("frontend", "tag v5 is not on its production branch `production`"),
                ),
                (
                    on_branch("web", ComponentKind::Service, Pin::Commit(commit('d')), 'd', false),
                    refused("web", "commit dddddddddddd is not on its production branch `production`"),
                ),
            ];
            for (pin, refusal) in cases {
                app.clone().when(new(1, "2023.06.1", vec![pin])).then_err(refusal);
            }
            let twice = on_branch("web", ComponentKind::Service, Pin::Commit(commit('a')), 'a', true);
            app.clone()
                .when(new(1, "2023.06.1", vec![twice.clone(), twice]))
                .then_err(refused("web", "it is pinned twice; pin each component once"));
            assert_eq!(
                refused("web", "it is pinned twice; pin each component once").to_string(),
                "component web: it is pinned twice; pin each component once"
            );
        }

        #[test]
        fn without_a_production_branch_a_release_pinning_no_service_is_refused() {
            let ApplicationCommand::CreateRelease(release) = new(1, "2023.06.1", vec![]) else { unreachable!() };
            let command = ApplicationCommand::CreateRelease(NewRelease { head: None, ..release });
            given::<Application>([shop()])
                .when(command)
                .then_err(refused("stack", "its production branch `production` does not exist"));
        }

        #[test]
        fn the_next_tag_follows_the_newest_accepted_tag_of_the_current_month() {
            let stack = given::<Application>([shop()])
                .when(new(1, "2023.06.1", vec![]))
                .then_go_on()
                .when(new(2, "2023.06.3", vec![]))
                .then_go_on()
                .when(new(3, "2023.06.04", vec![]))
                .then_types(&["ReleaseRejected"]);
            let releases = stack.state().releases;
            let june = DateTime::parse_from_rfc3339("2023-06-30T23:59:59Z").unwrap().to_utc();
            let july = DateTime::parse_from_rfc3339("2023-07-01T00:00:00Z").unwrap().to_utc();
            assert_eq!(next_tag(&releases, june).to_string(), "2023.06.4");
            assert_eq!(next_tag(&releases, july).to_string(), "2023.07.1");
        }
    }
}
