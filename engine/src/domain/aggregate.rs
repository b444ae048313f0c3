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
/// or `.then_err(refusal)`. Every domain rule is stated this way.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) struct Given<A: Aggregate> {
        history: Vec<A::Event>,
    }

    pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
        Given { history: events.into_iter().collect() }
    }

    impl<A: Aggregate> Given<A> {
        /// The state the history folds to.
        pub(crate) fn state(&self) -> A {
            A::fold(&self.history)
        }

        pub(crate) fn when(self, command: A::Command) -> When<A> {
            let decided = self.state().decide(command);
            When { given: self, decided }
        }
    }

    pub(crate) struct When<A: Aggregate> {
        given: Given<A>,
        decided: Result<Vec<A::Event>, DomainError>,
    }

    impl<A: Aggregate> When<A> {
        /// Asserts the command decided exactly `expected`; returns the history with
        /// them appended, so a scenario can go on.
        #[track_caller]
        pub(crate) fn then(self, expected: impl IntoIterator<Item = A::Event>) -> Given<A> {
            let expected: Vec<A::Event> = expected.into_iter().collect();
            match self.decided {
                Ok(events) => assert_eq!(events, expected, "decided events"),
                Err(refusal) => panic!("expected {expected:?}, the command was refused: {refusal}"),
            }
            let mut given = self.given;
            given.history.extend(expected);
            given
        }

        /// Asserts the command decided events of these types, in this order, and
        /// appends them; for scenarios whose payloads another test pins.
        #[track_caller]
        pub(crate) fn then_types(self, expected: &[&str]) -> Given<A> {
            let events = match self.decided {
                Ok(events) => events,
                Err(refusal) => panic!("expected {expected:?}, the command was refused: {refusal}"),
            };
            let types: Vec<String> = events.iter().map(event_type).collect();
            assert_eq!(types, expected, "decided event types");
            let mut given = self.given;
            given.history.extend(events);
            given
        }

        /// The events decided (the command must have been accepted).
        #[track_caller]
        pub(crate) fn decided(self) -> Vec<A::Event> {
            self.decided.unwrap_or_else(|refusal| panic!("the command was refused: {refusal}"))
        }

        /// Asserts the command was refused with exactly `expected`.
        #[track_caller]
        pub(crate) fn then_err(self, expected: DomainError) {
            assert_eq!(self.decided, Err(expected));
        }
    }
}
