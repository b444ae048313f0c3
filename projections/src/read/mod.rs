//! Queries of the read models: lists, filters and counts over the live `read.*`
//! views, one module per table. The API asks these; it holds no read-model SQL.
//!
//! Lists are keyset-paginated by a unique key per table: a page starts after the
//! last key a client saw, so rows added elsewhere in the list do not shift it.

pub mod applications;
pub mod environments;
pub mod runs;

use serde::de::DeserializeOwned;
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::ProjectionError;
use shiplog_engine::domain::label;

/// Which slice of a list to read, in the list's order, by its unique key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Only rows after this key (in the list's order).
    pub after: Option<String>,
    /// Only rows before this key.
    pub before: Option<String>,
    /// Rows per page.
    pub limit: usize,
    /// Take the last `limit` rows of the range instead of the first.
    pub backwards: bool,
}

impl Page {
    /// How many rows a read fetches: one more than the page, so the caller
    /// learns whether more exist.
    pub fn fetch(&self) -> i64 {
        self.limit as i64 + 1
    }
}

/// A page of a list and the size of the whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<V> {
    /// Up to [`Page::fetch`] views with their keys, in the direction of travel:
    /// the list's order forwards, reversed backwards.
    pub rows: Vec<(String, V)>,
    /// How many rows the whole list holds, over all pages.
    pub total: i64,
}

/// A list of one read model: its unique key column (a page's cursors are its
/// keys, as text), and the order the list has.
struct List {
    table: &'static str,
    key: &'static str,
    order: Order,
    descending: bool,
}

/// What a list is sorted by, ascending or descending. Text compares byte by byte
/// (`COLLATE "C"`), whatever the database's collation, so the order is the
/// documented one everywhere.
enum Order {
    /// The key itself, as this SQL type.
    Key { cast: &'static str },
    /// The `/`-separated parts of a text key, part by part; each is the text
    /// expression given (`application/name` by application, then name: a
    /// separator compared as a character would put `a-b/x` before `a/x`).
    Parts(&'static [&'static str]),
}

impl Order {
    /// The SQL sort key of a row.
    fn of_row(&self, key: &str) -> String {
        match self {
            Order::Key { cast: "text" } => format!("({key} COLLATE \"C\")"),
            Order::Key { .. } => key.to_owned(),
            Order::Parts(parts) => {
                let parts: Vec<String> = parts.iter().map(|p| format!("({p}) COLLATE \"C\"")).collect();
                format!("({})", parts.join(", "))
            }
        }
    }

    /// Appends the SQL sort key of a page's `key`, bound as a parameter.
    fn push_of_key(&self, q: &mut QueryBuilder<Postgres>, key: &str) {
        match self {
            Order::Key { cast: "text" } => {
                q.push("(").push_bind(key.to_owned()).push("::text COLLATE \"C\")");
            }
            Order::Key { cast } => {
                q.push_bind(key.to_owned()).push(format!("::{cast}"));
            }
            Order::Parts(parts) => {
                q.push("(");
                for (i, _) in parts.iter().enumerate() {
                    let part = key.split('/').nth(i).unwrap_or_default().to_owned();
                    q.push(if i == 0 { "" } else { ", " }).push_bind(part).push("::text COLLATE \"C\"");
                }
                q.push(")");
            }
        }
    }

    /// The ORDER BY terms, all in one direction.
    fn terms(&self, key: &str, direction: &str) -> String {
        match self {
            Order::Parts(parts) => {
                parts.iter().map(|p| format!("({p}) COLLATE \"C\" {direction}")).collect::<Vec<_>>().join(", ")
            }
            _ => format!("{} {direction}", self.of_row(key)),
        }
    }
}

impl List {
    /// Counts the rows the conditions `narrow` appends (each ` AND …`) select,
    /// then reads the `page` of them. Table and column names come from code,
    /// never from input.
    async fn read<V: DeserializeOwned>(
        &self,
        pool: &PgPool,
        narrow: impl Fn(&mut QueryBuilder<Postgres>),
        page: &Page,
    ) -> Result<Listed<V>, ProjectionError> {
        let List { table, key, order, descending } = self;
        let mut count = QueryBuilder::new(format!("SELECT count(*) FROM read.{table} WHERE true"));
        narrow(&mut count);
        let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

        // Aliased: an output column named like the key would be what ORDER BY
        // sorts by, as text ("6" after "46").
        let mut q = QueryBuilder::new(format!("SELECT {key}::text AS cursor_key, view FROM read.{table} WHERE true"));
        narrow(&mut q);
        let (later, earlier) = if *descending { ("<", ">") } else { (">", "<") };
        let row = order.of_row(key);
        if let Some(after) = &page.after {
            q.push(format!(" AND {row} {later} "));
            order.push_of_key(&mut q, after);
        }
        if let Some(before) = &page.before {
            q.push(format!(" AND {row} {earlier} "));
            order.push_of_key(&mut q, before);
        }
        let ascending = *descending == page.backwards;
        let direction = if ascending { "ASC" } else { "DESC" };
        q.push(format!(" ORDER BY {} LIMIT ", order.terms(key, direction))).push_bind(page.fetch());
        let rows: Vec<(String, serde_json::Value)> = q.build_query_as().fetch_all(pool).await?;
        let rows = rows
            .into_iter()
            .map(|(key, view)| {
                let view = serde_json::from_value(view).map_err(|e| ProjectionError::Corrupt {
                    cursor: Default::default(),
                    why: format!("read.{table} row {key}: {e}"),
                })?;
                Ok((key, view))
            })
            .collect::<Result<_, ProjectionError>>()?;
        Ok(Listed { rows, total })
    }
}
