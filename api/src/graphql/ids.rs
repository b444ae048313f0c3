//! Global IDs: opaque to clients, unique across types, stable forever. An ID is
//! the URL-safe base64 of `<Type>:<key>`; clients must not build or parse them
//! (GitHub's rule), and the server can turn any of them back into its object.

use async_graphql::ID;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use shiplog_engine::domain::Name;
use uuid::Uuid;

/// What a global ID points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeId {
    Application(Name),
    Environment(Name, Name),
    Run(Uuid),
    /// An event, by its global position.
    Event(i64),
    ApiToken(Uuid),
    /// A release, by its application and id.
    Release(Name, Uuid),
}

impl NodeId {
    pub fn to_id(&self) -> ID {
        let raw = match self {
            NodeId::Application(name) => format!("Application:{name}"),
            NodeId::Environment(app, env) => format!("Environment:{app}/{env}"),
            NodeId::Run(id) => format!("Run:{id}"),
            NodeId::Event(position) => format!("Event:{position}"),
            NodeId::ApiToken(id) => format!("ApiToken:{id}"),
            NodeId::Release(app, id) => format!("Release:{app}/{id}"),
        };
        ID(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The object an ID names; `None` for anything this server never issued.
    pub fn parse(id: &str) -> Option<NodeId> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
        let (kind, key) = raw.split_once(':')?;
        Some(match kind {
            "Application" => NodeId::Application(key.parse().ok()?),
            "Environment" => {
                let (app, env) = key.split_once('/')?;
                NodeId::Environment(app.parse().ok()?, env.parse().ok()?)
            }
            "Run" => NodeId::Run(key.parse().ok()?),
            "Event" => NodeId::Event(key.parse().ok().filter(|p: &i64| *p > 0)?),
            "ApiToken" => NodeId::ApiToken(key.parse().ok()?),
            "Release" => {
                let (app, id) = key.split_once('/')?;
                NodeId::Release(app.parse().ok()?, id.parse().ok()?)
            }
            _ => return None,
        })
    }
}

/// An opaque cursor around a key the server understands, marked with the list
/// (`scope`) that issued it: `applications`, `runs:hello/staging`, `logs:<run id>`.
pub fn encode_cursor(scope: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{scope}|{key}"))
}

/// The key of a cursor `scope` issued; `None` for anything else, a cursor of
/// another list included.
pub fn decode_cursor(scope: &str, cursor: &str) -> Option<String> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (issuer, key) = raw.split_once('|')?;
    (issuer == scope).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_what_was_never_issued() {
        let ids = [
            NodeId::Application("hello".parse().unwrap()),
            NodeId::Environment("hello".parse().unwrap(), "staging".parse().unwrap()),
            NodeId::Run(Uuid::new_v4()),
            NodeId::Event(42),
            NodeId::ApiToken(Uuid::new_v4()),
            NodeId::Release("hello".parse().unwrap(), Uuid::new_v4()),
        ];
        for id in ids {
            assert_eq!(NodeId::parse(&id.to_id()), Some(id));
        }
        for bad in ["", "!!!", &URL_SAFE_NO_PAD.encode("User:1"), &URL_SAFE_NO_PAD.encode("Environment:hello")] {
            assert_eq!(NodeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_cursor_is_only_read_back_by_the_list_that_issued_it() {
        let cursor = encode_cursor("logs:1", "42");
        assert_eq!(decode_cursor("logs:1", &cursor).as_deref(), Some("42"));
        assert_eq!(decode_cursor("logs:2", &cursor), None);
        assert_eq!(decode_cursor("logs", &cursor), None);
        assert_eq!(decode_cursor("logs:1", &URL_SAFE_NO_PAD.encode("42")), None);
    }

    /// Fuzz targets (see the README, "Fuzzing"): whatever a client sends as an ID or
    /// a cursor, decoding answers without panicking, and what it reads back is what
    /// was issued.
    mod fuzz {
        use proptest::prelude::*;
        use shiplog_tests::fuzz::{self, awkward_text};

        use super::*;

        fn kind() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["Application", "Environment", "Run", "Event", "ApiToken", "Release", "User", ""])
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            #[test]
            fn any_text_as_an_id(text in awkward_text()) {
                if let Some(node) = NodeId::parse(&text) {
                    prop_assert_eq!(NodeId::parse(&node.to_id()), Some(node));
                }
            }

            #[test]
            fn any_key_in_an_id(kind in kind(), separator in prop::sample::select(vec![":", "/", ""]), key in awkward_text(), rest in awkward_text()) {
                let id = URL_SAFE_NO_PAD.encode(format!("{kind}{separator}{key}/{rest}"));
                if let Some(node) = NodeId::parse(&id) {
                    prop_assert_eq!(NodeId::parse(&node.to_id()), Some(node));
                }
            }

            #[test]
            fn any_text_as_a_cursor(scope in awkward_text(), text in awkward_text()) {
                let _ = decode_cursor(&scope, &text);
            }

            #[test]
            fn any_key_in_a_cursor(key in awkward_text()) {
                let cursor = encode_cursor("runs:hello/staging", &key);
                prop_assert_eq!(decode_cursor("runs:hello/staging", &cursor), Some(key));
                prop_assert_eq!(decode_cursor("runs:hello/production", &cursor), None);
            }
        }
    }
}
