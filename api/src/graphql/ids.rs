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

/// An opaque pagination cursor around a key the server understands.
pub fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()
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
}
