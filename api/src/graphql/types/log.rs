//! `LogLine`: one line of a run's log.

use async_graphql::{Enum, Object};
use chrono::{DateTime, Utc};
use shiplog_engine::logs::LogLine as EngineLogLine;
use uuid::Uuid;

use super::BigInt;
use crate::graphql::ids::encode_cursor;

/// Which output a log line came from.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_engine::runtime::LogStream")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by shiplog itself (e.g. "pulling image").
    System,
}

/// One line of a run's log.
/// A line of the run `run`'s log.
pub struct LogLine {
    pub run: Uuid,
    pub line: EngineLogLine,
}

/// The scope of the cursors of run `run`'s log lines: no other run's log takes them.
pub fn log_scope(run: Uuid) -> String {
    format!("logs:{run}")
}

#[Object]
impl LogLine {
    /// Resume after this line with `logs(after:)` or `runLogs(after:)`.
    async fn cursor(&self) -> String {
        encode_cursor(&log_scope(self.run), &self.line.seq.to_string())
    }
    /// Its number in the run's log, from 1.
    async fn number(&self) -> BigInt {
        BigInt(self.line.seq)
    }
    /// The job that wrote it.
    async fn job(&self) -> &str {
        &self.line.job
    }
    /// When it was written.
    async fn at(&self) -> DateTime<Utc> {
        self.line.at
    }
    /// Which output it came from.
    async fn stream(&self) -> LogStream {
        self.line.stream.into()
    }
    /// The text, without its line ending.
    async fn text(&self) -> &str {
        &self.line.line
    }
}
