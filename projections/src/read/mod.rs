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

/// A list of one read model: its unique key column, ordered ascending (or
/// `descending`), and its SQL type, which a page's keys are cast to.
struct List {
    table: &'static str,
    key: &'static str,
    cast: &'static str,
    descending: bool,
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
        let List { table, key, cast, descending } = self;
        let mut count = QueryBuilder::new(format!("SELECT count(*) FROM read.{table} WHERE true"));
        narrow(&mut count);
        let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

        let mut q = QueryBuilder::new(format!("SELECT {key}::text, view FROM read.{table} WHERE true"));
        narrow(&mut q);
        let (later, earlier) = if *descending { ("<", ">") } else { (">", "<") };
        if let Some(after) = &page.after {
            q.push(format!(" AND {key} {later} ")).push_bind(after.clone()).push(format!("::{cast}"));
        }
        if let Some(before) = &page.before {
            q.push(format!(" AND {key} {earlier} ")).push_bind(before.clone()).push(format!("::{cast}"));
        }
        let ascending = *descending == page.backwards;
        q.push(format!(" ORDER BY {key} {} LIMIT ", if ascending { "ASC" } else { "DESC" })).push_bind(page.fetch());
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
