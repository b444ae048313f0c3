//! Relay connections: `first`/`after` forwards, `last`/`before` backwards, at
//! most [`MAX_PAGE`] nodes, in a stable order given by a unique key per list.
//! A cursor names the list that issued it (its scope, e.g. `runs:hello/staging`),
//! so a cursor of another list is refused, not read as a key of this one.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{ObjectType, OutputType, SimpleObject};
use shiplog_projections::read::Listed;

use super::coded;
use super::ids::{decode_cursor, encode_cursor};

/// The most nodes one page may hold (GitHub's limit).
pub const MAX_PAGE: i32 = 100;
/// Nodes per page when neither `first` nor `last` is given.
pub const DEFAULT_PAGE: i32 = 50;

pub use shiplog_projections::read::Page;

/// What a connection field costs in the complexity limit: its page size (as
/// [`window`] will read it; an out-of-range size costs one page of the most, and
/// `window` then refuses it with `BAD_USER_INPUT`) times its selection's cost.
pub fn cost(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let size = first.or(last).unwrap_or(DEFAULT_PAGE).clamp(0, MAX_PAGE);
    size as usize * child_complexity
}

/// The slice of the list `scope` a client asked for, with its cursors decoded to keys.
pub fn window(
    scope: &str,
    after: Option<String>,
    before: Option<String>,
    first: Option<i32>,
    last: Option<i32>,
) -> async_graphql::Result<Page> {
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
                decode_cursor(scope, &c)
                    .ok_or_else(|| coded("BAD_USER_INPUT", format!("`{name}` is not a cursor of this list")))
            })
            .transpose()
    };
    Ok(Page { after: key("after", after)?, before: key("before", before)?, limit, backwards })
}

/// Refuses a page whose cursors' keys are not numbers, for lists keyed by one
/// (a position): the key goes to the database, which would fail on it.
pub fn numeric_keys(page: &Page) -> async_graphql::Result<()> {
    for (name, key) in [("after", &page.after), ("before", &page.before)] {
        if key.as_deref().is_some_and(|k| k.parse::<i64>().is_err()) {
            return Err(coded("BAD_USER_INPUT", format!("`{name}` is not a cursor of this list")));
        }
    }
    Ok(())
}

/// The connection of `page` of the list `scope` from rows fetched in the
/// direction of travel (the list's order forwards, reversed backwards), at most
/// [`Page::fetch`] of them.
pub fn connection<T: OutputType, F: ObjectType>(
    scope: &str,
    page: &Page,
    mut rows: Vec<(String, T)>,
    fields: F,
) -> Connection<String, T, F> {
    let more = rows.len() > page.limit;
    rows.truncate(page.limit);
    let (has_previous, has_next) = if page.backwards {
        rows.reverse();
        (more, page.before.is_some())
    } else {
        (page.after.is_some(), more)
    };
    let mut connection = Connection::with_additional_fields(has_previous, has_next, fields);
    connection.edges.extend(rows.into_iter().map(|(key, node)| Edge::new(encode_cursor(scope, &key), node)));
    connection
}

/// The connection of a list that cannot count its nodes.
pub fn plain<T: OutputType>(scope: &str, page: &Page, rows: Vec<(String, T)>) -> Connection<String, T, EmptyFields> {
    connection(scope, page, rows, EmptyFields)
}

/// The connection of a read model's list, each view wrapped in its object.
pub fn counted<V, T: OutputType>(
    scope: &str,
    page: &Page,
    listed: Listed<V>,
    wrap: impl Fn(V) -> T,
) -> Connection<String, T, Counted> {
    let rows = listed.rows.into_iter().map(|(key, view)| (key, wrap(view))).collect();
    connection(scope, page, rows, Counted { total_count: listed.total })
}

/// Connection fields for lists that can count their nodes.
#[derive(SimpleObject)]
pub struct Counted {
    /// How many nodes the whole list holds, over all pages.
    pub total_count: i64,
}
