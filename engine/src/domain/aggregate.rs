//! What every aggregate is: a state folded from its stream's events, and the pure
//! decision of what a command adds to it. The lifecycle service loads, decides and
//! appends any aggregate through this one shape (`lifecycle.rs`), and the domain's
//! tests state every rule as given/when/then against it (`testing`).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::DomainError;

pub trait Aggregate: Clone + Send + Sync + 'static {
    /// Internally tagged with `type`: the tag is the type the store records.
    type Event: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync;
    type Command;

    /// The state before the stream's first event.
    fn initial() -> Self;

    /// What `command` adds to the stream, or why it is refused. Pure: no IO, no
    /// clock, no randomness (they come in the command).
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, DomainError>;

    /// The state after `event`. Total: an event the state cannot use changes nothing.
    fn evolve(self, event: &Self::Event) -> Self;

    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        events.into_iter().fold(Self::initial(), Self::evolve)
    }
}

/// An event as the store records it: its type, taken from its serde tag, and its
/// payload (the tag included, so a payload alone says what it is).
pub fn encode<E: Serialize>(event: &E) -> (String, Value) {
    let payload = serde_json::to_value(event).expect("domain events serialise");
    let event_type = payload
        .get("type")
        .and_then(Value::as_str)
        .expect("domain events are internally tagged with `type`")
        .to_owned();
    (event_type, payload)
}

/// The name of an event type, from its serde tag: `event_type(&RunEvent::RunCancelled {..})`.
pub fn event_type<E: Serialize>(event: &E) -> String {
    encode(event).0
}

/// given/when/then for any aggregate: `given(events).when(command).then(events)`
/// or `.then_err(refusal)`. Every domain rule is stated this way. Each `then`
/// returns the history (extended by what was decided), so a scenario goes on; a
/// failed `then` says which fields of which event differ.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeSet;

    use super::*;

    #[derive(Clone)]
    pub(crate) struct Given<A: Aggregate> {
        history: Vec<A::Event>,
    }

    pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
        Given { history: events.into_iter().collect() }
    }

    impl<A: Aggregate> Given<A> {
        /// The history with `events` appended as facts, for what no command of
        /// this aggregate decides here (a worker's report, a reconciler's finding).
        pub(crate) fn and(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
            self.history.extend(events);
            self
        }

        /// The state the history folds to.
        pub(crate) fn state(&self) -> A {
            A::fold(&self.history)
        }

        pub(crate) fn when(self, command: A::Command) -> When<A> {
            let decided = self.state().decide(command);
            When { given: self, decided }
        }

        /// The history's event types, to say in a failure what the command met.
        fn types(&self) -> String {
            let types: Vec<String> = self.history.iter().map(event_type).collect();
            format!("given [{}]", types.join(", "))
        }
    }

    pub(crate) struct When<A: Aggregate> {
        given: Given<A>,
        decided: Result<Vec<A::Event>, DomainError>,
    }

    impl<A: Aggregate> When<A> {
        /// Asserts the command decided exactly `expected`; returns the history with
        /// them appended.
        #[track_caller]
        pub(crate) fn then(self, expected: impl IntoIterator<Item = A::Event>) -> Given<A> {
            let expected: Vec<A::Event> = expected.into_iter().collect();
            let decided = self.accepted(&format!("events:{}", lines(&expected)));
            if decided != expected {
                panic!(
                    "{}: the command decided other events than expected:\n{}\nexpected:{}\ndecided:{}",
                    self.given.types(),
                    differences(&expected, &decided),
                    lines(&expected),
                    lines(&decided),
                );
            }
            self.given.and(expected)
        }

        /// Asserts the command decided events of these types, in this order, and
        /// appends them; for scenarios whose payloads another test pins.
        #[track_caller]
        pub(crate) fn then_types(self, expected: &[&str]) -> Given<A> {
            let decided = self.accepted(&format!("events of types {expected:?}"));
            let types: Vec<String> = decided.iter().map(event_type).collect();
            if types != expected {
                panic!(
                    "{}: the command decided events of other types than expected:\nexpected {expected:?}\ndecided  {types:?}",
                    self.given.types()
                );
            }
            self.given.and(decided)
        }

        /// Appends what the command decided, whatever it was (it must have been
        /// accepted): a step of a scenario that another assertion pins.
        #[track_caller]
        pub(crate) fn then_go_on(self) -> Given<A> {
            let decided = self.accepted("it to be accepted");
            self.given.and(decided)
        }

        /// The events decided (the command must have been accepted).
        #[track_caller]
        pub(crate) fn decided(self) -> Vec<A::Event> {
            self.accepted("it to be accepted")
        }

        /// Asserts the command was refused with exactly `expected`; returns the
        /// history unchanged, so a scenario goes on after a refusal.
        #[track_caller]
        pub(crate) fn then_err(self, expected: DomainError) -> Given<A> {
            match &self.decided {
                Err(refusal) if *refusal == expected => {}
                Err(refusal) => panic!(
                    "{}: the command was refused with another error than expected:\nexpected {expected:?} ({expected})\nrefused  {refusal:?} ({refusal})",
                    self.given.types()
                ),
                Ok(events) => panic!(
                    "{}: expected the refusal {expected:?} ({expected}), the command was accepted and decided:{}",
                    self.given.types(),
                    lines(events)
                ),
            }
            self.given
        }

        #[track_caller]
        fn accepted(&self, expected: &str) -> Vec<A::Event> {
            match &self.decided {
                Ok(events) => events.clone(),
                Err(refusal) => panic!(
                    "{}: the command was refused with {refusal:?} ({refusal}); expected {expected}",
                    self.given.types()
                ),
            }
        }
    }

    /// One event a line, or ` nothing`.
    fn lines<E: std::fmt::Debug>(events: &[E]) -> String {
        if events.is_empty() {
            return " nothing".into();
        }
        events.iter().enumerate().map(|(i, event)| format!("\n  {i}: {event:?}")).collect()
    }

    /// Where two event lists differ, field by field as the store records them:
    /// `event 1 (RunRequested).reason: expected "deleted", decided "asked"`.
    fn differences<E: Serialize>(expected: &[E], decided: &[E]) -> String {
        let mut found = Vec::new();
        for i in 0..expected.len().max(decided.len()) {
            let expected = expected.get(i).map(encode);
            let decided = decided.get(i).map(encode);
            match (&expected, &decided) {
                (Some((expected_type, expected)), Some((decided_type, decided))) if expected_type == decided_type => {
                    compare(format!("event {i} ({expected_type})"), Some(expected), Some(decided), &mut found)
                }
                _ => compare(
                    format!("event {i}"),
                    expected.as_ref().map(|e| &e.1),
                    decided.as_ref().map(|e| &e.1),
                    &mut found,
                ),
            }
        }
        if found.is_empty() {
            found.push("  (none in their payloads: they differ only in what serialisation leaves out)".into());
        }
        found.join("\n")
    }

    fn compare(path: String, expected: Option<&Value>, decided: Option<&Value>, found: &mut Vec<String>) {
        match (expected, decided) {
            (Some(Value::Object(expected)), Some(Value::Object(decided))) => {
                let keys: BTreeSet<&String> = expected.keys().chain(decided.keys()).collect();
                for key in keys {
                    compare(format!("{path}.{key}"), expected.get(key), decided.get(key), found);
                }
            }
            (Some(Value::Array(expected)), Some(Value::Array(decided))) => {
                for i in 0..expected.len().max(decided.len()) {
                    compare(format!("{path}[{i}]"), expected.get(i), decided.get(i), found);
                }
            }
            (expected, decided) if expected != decided => {
                let show = |value: Option<&Value>| value.map_or_else(|| "nothing".into(), Value::to_string);
                found.push(format!("  {path}: expected {}, decided {}", show(expected), show(decided)));
            }
            _ => {}
        }
    }

    /// The harness fails, and says why, whenever a rule is not what a test states.
    mod tests {
        use chrono::{DateTime, Utc};

        use super::*;
        use crate::domain::application::{Application, ApplicationCommand, ApplicationEvent};

        fn t() -> DateTime<Utc> {
            DateTime::from_timestamp(1_700_000_000, 0).unwrap()
        }

        fn create(repository: &str) -> ApplicationCommand {
            ApplicationCommand::Create { name: "shop".parse().unwrap(), repository: repository.into(), now: t() }
        }

        fn update_variables(digest: &str) -> ApplicationCommand {
            ApplicationCommand::UpdateVariables { digest: digest.into(), redacted: serde_json::json!({}), now: t() }
        }

        fn created(repository: &str) -> ApplicationEvent {
            ApplicationEvent::ApplicationCreated {
                name: "shop".parse().unwrap(),
                repository: repository.into(),
                created_at: t(),
            }
        }

        #[test]
        fn a_scenario_goes_on_from_what_was_decided() {
            let app = given::<Application>([]).when(create("/srv/shop.git")).then([created("/srv/shop.git")]);
            assert_eq!(app.state().repository, "/srv/shop.git");
            let app = app
                .when(create("x"))
                .then_err(DomainError::AlreadyExists("application shop".into()))
                .when(update_variables("sha256:v1"))
                .then_types(&["EnvironmentVariablesUpdated"]);
            assert_eq!(app.state().variables, Some((1, "sha256:v1".into())));
            assert_eq!(app.when(update_variables("sha256:v1")).decided(), vec![], "the same variables again");
        }

        #[test]
        #[should_panic(
            expected = "event 0 (ApplicationCreated).repository: expected \"/srv/other.git\", decided \"/srv/shop.git\""
        )]
        fn other_events_fail_with_the_fields_that_differ() {
            given::<Application>([]).when(create("/srv/shop.git")).then([created("/srv/other.git")]);
        }

        #[test]
        #[should_panic(expected = "event 1: expected {\"created_at\"")]
        fn a_missing_event_fails() {
            given::<Application>([]).when(create("/srv/shop.git")).then([created("/srv/shop.git"), created("x")]);
        }

        #[test]
        #[should_panic(
            expected = "expected the refusal NotFound(\"application\") (application does not exist), the command was accepted"
        )]
        fn an_accepted_command_fails_then_err() {
            given::<Application>([])
                .when(create("/srv/shop.git"))
                .then_err(DomainError::NotFound("application".into()));
        }

        #[test]
        #[should_panic(expected = "refused  AlreadyExists(\"application shop\")")]
        fn another_refusal_fails_then_err() {
            given::<Application>([created("x")]).when(create("y")).then_err(DomainError::NoTemplate);
        }

        #[test]
        #[should_panic(expected = "given [ApplicationCreated]: the command was refused with AlreadyExists")]
        fn a_refused_command_fails_then() {
            given::<Application>([created("x")]).when(create("y")).then([]);
        }
    }
}
