//! Run logs: the output of builds, release commands, jobs and hooks, line by line.
//! Not events (they would swamp the log): rows of `run_logs`, numbered per run,
//! written in chunks by one writer task per run, and read by offset.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::runtime::{LogSink, LogStream};

/// Lines longer than this are cut, so one runaway line cannot bloat the table.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// Lines written per INSERT at most.
const CHUNK: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub seq: i64,
    pub job: String,
    pub at: DateTime<Utc>,
    pub stream: LogStream,
    pub line: String,
}

fn stream_name(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::System => "system",
    }
}

/// Reads up to `limit` lines of a run after sequence number `after` (0: from the start).
pub async fn read(pool: &PgPool, run_id: Uuid, after: i64, limit: i64) -> sqlx::Result<Vec<LogLine>> {
    let rows = sqlx::query("SELECT seq, job, at, stream, line FROM run_logs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
        .bind(run_id)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let stream = match r.try_get::<&str, _>("stream")? {
                "stdout" => LogStream::Stdout,
                "stderr" => LogStream::Stderr,
                _ => LogStream::System,
            };
            Ok(LogLine { seq: r.try_get("seq")?, job: r.try_get("job")?, at: r.try_get("at")?, stream, line: r.try_get("line")? })
        })
        .collect()
}

enum Message {
    Line { job: Arc<str>, stream: LogStream, line: String, at: DateTime<Utc> },
    Flush(oneshot::Sender<()>),
}

/// The writer of one run's log. Lines are queued without blocking and written in
/// chunks; [`RunLog::flush`] waits until every line queued so far is stored.
#[derive(Clone)]
pub struct RunLog {
    sender: mpsc::UnboundedSender<Message>,
    /// Values that must never be stored: secret variables. Replaced by `***`.
    secrets: Arc<Vec<String>>,
}

impl RunLog {
    /// Starts the writer; numbering continues after the lines already stored, so a
    /// worker resuming a run appends after its predecessor's lines.
    pub async fn open(pool: PgPool, run_id: Uuid, secrets: Vec<String>) -> sqlx::Result<RunLog> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM run_logs WHERE run_id = $1").bind(run_id).fetch_one(&pool).await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(pool, run_id, last.unwrap_or(0), receiver));
        Ok(RunLog { sender, secrets: Arc::new(secrets.into_iter().filter(|s| !s.is_empty()).collect()) })
    }

    /// A sink that labels every line with `job`.
    pub fn job(&self, job: &str) -> JobLog {
        JobLog { log: self.clone(), job: job.into() }
    }

    /// Waits until every line queued so far is stored.
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = stored.await;
        }
    }
}

/// A [`LogSink`] for one job of a run.
pub struct JobLog {
    log: RunLog,
    job: Arc<str>,
}

impl LogSink for JobLog {
    fn line(&self, stream: LogStream, line: &str) {
        let mut line = line.to_owned();
        for secret in self.log.secrets.iter() {
            if line.contains(secret.as_str()) {
                line = line.replace(secret.as_str(), "***");
            }
        }
        if line.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" …[line cut]");
        }
        let _ = self.log.sender.send(Message::Line { job: self.job.clone(), stream, line, at: Utc::now() });
    }
}

async fn write_loop(pool: PgPool, run_id: Uuid, mut seq: i64, mut receiver: mpsc::UnboundedReceiver<Message>) {
    let mut lines = Vec::new();
    let mut waiting = Vec::new();
    while let Some(first) = receiver.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line { job, stream, line, at } => lines.push((job, stream, line, at)),
                Message::Flush(done) => waiting.push(done),
            }
            if lines.len() < CHUNK {
                next = receiver.try_recv().ok();
            }
        }
        if !lines.is_empty() {
            if let Err(e) = insert(&pool, run_id, seq, &lines).await {
                // The run goes on without these lines rather than failing a deploy
                // because its log could not be stored.
                tracing::error!(%run_id, error = %e, lines = lines.len(), "could not store log lines");
            } else {
                seq += lines.len() as i64;
            }
            lines.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn insert(pool: &PgPool, run_id: Uuid, after: i64, lines: &[(Arc<str>, LogStream, String, DateTime<Utc>)]) -> sqlx::Result<()> {
    let seqs: Vec<i64> = (1..=lines.len() as i64).map(|n| after + n).collect();
    let jobs: Vec<&str> = lines.iter().map(|l| &*l.0).collect();
    let streams: Vec<&str> = lines.iter().map(|l| stream_name(l.1)).collect();
    let texts: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = lines.iter().map(|l| l.3).collect();
    sqlx::query(
        "INSERT INTO run_logs (run_id, seq, job, stream, line, at) \
         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
    )
    .bind(run_id)
    .bind(&seqs)
    .bind(&jobs)
    .bind(&streams)
    .bind(&texts)
    .bind(&ats)
    .execute(pool)
    .await?;
    Ok(())
}
