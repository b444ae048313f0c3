//! Read-model tables, all of one shape: `key text PRIMARY KEY, view jsonb` plus
//! columns PostgreSQL generates from the view for filtering and ordering. Each
//! projection writes generation-suffixed tables (`read.environments_g2`); a view
//! without the suffix serves the live generation.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::ProjectionError;

/// One read-model table of a projection.
pub struct TableDef {
    pub name: &'static str,
    /// Generated columns, each `, name type GENERATED ALWAYS AS (expr) STORED`.
    pub columns: &'static str,
    /// Column lists to index, e.g. `application, status`.
    pub indexes: &'static [&'static str],
}

/// The physical table of `table` in `generation`. Names come from code, never
/// from input, so formatting them into SQL is safe.
pub fn physical(table: &str, generation: i32) -> String {
    format!("read.{table}_g{generation}")
}

pub async fn create(conn: &mut PgConnection, def: &TableDef, generation: i32) -> Result<(), ProjectionError> {
    let table = physical(def.name, generation);
    let ddl = format!("CREATE TABLE {table} (key text PRIMARY KEY, view jsonb NOT NULL{})", def.columns);
    sqlx::query(AssertSqlSafe(ddl)).execute(&mut *conn).await?;
    for (i, columns) in def.indexes.iter().enumerate() {
        let ddl = format!("CREATE INDEX {}_g{generation}_{i} ON {table} ({columns})", def.name);
        sqlx::query(AssertSqlSafe(ddl)).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Points the view `read.<name>` at `generation`.
pub async fn serve(conn: &mut PgConnection, def: &TableDef, generation: i32) -> Result<(), ProjectionError> {
    let name = def.name;
    sqlx::query(AssertSqlSafe(format!("DROP VIEW IF EXISTS read.{name}"))).execute(&mut *conn).await?;
    let ddl = format!("CREATE VIEW read.{name} AS SELECT * FROM {}", physical(name, generation));
    sqlx::query(AssertSqlSafe(ddl)).execute(&mut *conn).await?;
    Ok(())
}

pub async fn drop(conn: &mut PgConnection, def: &TableDef, generation: i32) -> Result<(), ProjectionError> {
    let ddl = format!("DROP TABLE IF EXISTS {}", physical(def.name, generation));
    sqlx::query(AssertSqlSafe(ddl)).execute(&mut *conn).await?;
    Ok(())
}

/// The views stored under `keys`, and under any key whose generated `column`
/// is one of `also`.
pub async fn load<V: DeserializeOwned>(
    conn: &mut PgConnection,
    table: &str,
    keys: &[String],
    also: Option<(&str, &[String])>,
) -> Result<BTreeMap<String, V>, ProjectionError> {
    let (column, values) = also.unwrap_or(("key", &[]));
    let sql = format!("SELECT key, view::text AS view FROM {table} WHERE key = ANY($1) OR {column} = ANY($2)");
    let rows = sqlx::query(AssertSqlSafe(sql)).bind(keys).bind(values).fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            let (key, view): (String, String) = (row.try_get("key")?, row.try_get("view")?);
            let view = serde_json::from_str(&view).map_err(|e| ProjectionError::Corrupt {
                cursor: Default::default(),
                why: format!("{table} row {key}: {e}"),
            })?;
            Ok((key, view))
        })
        .collect()
}

/// Inserts or replaces the views, in one statement.
pub async fn upsert<'a, V: Serialize + 'a>(
    conn: &mut PgConnection,
    table: &str,
    rows: impl IntoIterator<Item = (&'a String, &'a V)>,
) -> Result<(), ProjectionError> {
    let (keys, views): (Vec<&String>, Vec<String>) =
        rows.into_iter().map(|(k, v)| (k, serde_json::to_string(v).expect("views serialise"))).unzip();
    if keys.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {table} (key, view) SELECT k, v::jsonb FROM unnest($1::text[], $2::text[]) AS u(k, v) \
         ON CONFLICT (key) DO UPDATE SET view = excluded.view"
    );
    sqlx::query(AssertSqlSafe(sql)).bind(keys).bind(views).execute(&mut *conn).await?;
    Ok(())
}
