//! Relay connections: `first`/`after` forwards, `last`/`before` backwards, at
//! most [`MAX_PAGE`] nodes, in a stable order given by a unique key per list.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{ObjectType, OutputType, SimpleObject};

use super::coded;
use super::ids::{decode_cursor, encode_cursor};

/// The most nodes one page may hold (GitHub's limit).
pub const MAX_PAGE: i32 = 100;
/// Nodes per page when neither `first` nor `last` is given.
pub const DEFAULT_PAGE: i32 = 50;

/// Which slice of a list a client asked for, with its cursors decoded to keys.
#[derive(Debug, Clone)]
pub struct Window {
    /// Only nodes after this key (in the list's order).
    pub after: Option<String>,
    /// Only nodes before this key.
    pub before: Option<String>,
    pub limit: usize,
    /// `last` was given: take the last `limit` nodes of the range.
    pub backwards: bool,
}

impl Window {
    pub fn new(
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Window> {
        let check = |name: &str, n: i32| {
            if (0..=MAX_PAGE).contains(&n) {
                Ok(n as usize)
            } else {
                Err(coded("BAD_USER_INPUT", format!("`{name}` must be between 0 and {MAX_PAGE}, not {n}")))
            }
        };
        let (limit, backwards) = match (first, last) {
            (Some(_), Some(_)) => {
                return Err(coded("BAD_USER_INPUT", "pass `first` or `last`, not both"));
            }
            (Some(n), None) => (check("first", n)?, false),
            (None, Some(n)) => (check("last", n)?, true),
            (None, None) => (DEFAULT_PAGE as usize, false),
        };
        let key = |name: &str, cursor: Option<String>| {
            cursor
                .map(|c| {
                    decode_cursor(&c)
                        .ok_or_else(|| coded("BAD_USER_INPUT", format!("`{name}` is not a cursor of this list")))
                })
                .transpose()
        };
        Ok(Window { after: key("after", after)?, before: key("before", before)?, limit, backwards })
    }

    /// How many rows to fetch: one more than the page, to learn whether more exist.
    pub fn fetch(&self) -> i64 {
        self.limit as i64 + 1
    }

    /// The page from rows fetched in the direction of travel (the list's order
    /// forwards, reversed backwards), at most [`fetch`](Self::fetch) of them.
    pub fn connection<T: OutputType, F: ObjectType>(
        &self,
        mut rows: Vec<(String, T)>,
        fields: F,
    ) -> Connection<String, T, F> {
        let more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let (has_previous, has_next) = if self.backwards {
            rows.reverse();
            (more, self.before.is_some())
        } else {
            (self.after.is_some(), more)
        };
        let mut connection = Connection::with_additional_fields(has_previous, has_next, fields);
        connection.edges.extend(rows.into_iter().map(|(key, node)| Edge::new(encode_cursor(&key), node)));
        connection
    }

    pub fn plain<T: OutputType>(&self, rows: Vec<(String, T)>) -> Connection<String, T, EmptyFields> {
        self.connection(rows, EmptyFields)
    }
}

/// Connection fields for lists that can count their nodes.
#[derive(SimpleObject)]
pub struct Counted {
    /// How many nodes the whole list holds, over all pages.
    pub total_count: i64,
}
