//! Run logs: the output of builds, release commands, jobs and hooks, line by line.
//! Not events (they would swamp the log): rows of `run_logs`, numbered per run,
//! written in chunks by one writer task per run, read by offset, and followed live
//! through a [`LogHub`]: one `LISTEN` per process, fanned out in memory, so any
//! process can serve any run's log wherever the run executes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use sqlx::{PgPool, Row};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::domain::StreamRef;
use crate::domain::run::RunEvent;
use crate::notices::{self, Notice, Notices};
use crate::runtime::{LogSink, LogStream};
use crate::store::EventStore;

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

/// Reads up to `limit` lines of a run after sequence number `after` (0: from the start).
pub async fn read(pool: &PgPool, run_id: Uuid, after: i64, limit: i64) -> sqlx::Result<Vec<LogLine>> {
    let rows = sqlx::query(
        "SELECT seq, job, at, stream, line FROM run_logs WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(run_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            // The table's check constraint admits only the three labels.
            let stream = r.try_get::<&str, _>("stream")?.parse().unwrap_or(LogStream::System);
            Ok(LogLine {
                seq: r.try_get("seq")?,
                job: r.try_get("job")?,
                at: r.try_get("at")?,
                stream,
                line: r.try_get("line")?,
            })
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
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(seq) FROM run_logs WHERE run_id = $1").bind(run_id).fetch_one(&pool).await?;
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(pool, run_id, last.unwrap_or(0), receiver));
        Ok(RunLog { sender, secrets: Arc::new(secrets.into_iter().filter(|s| !s.is_empty()).collect()) })
    }

    /// `text` with every secret value of the run replaced by `***`: for each log
    /// line, and for a failed job's message (which may quote the job's output)
    /// before it goes into an event.
    pub fn mask(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
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
        let mut line = self.log.mask(line);
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

async fn insert(
    pool: &PgPool,
    run_id: Uuid,
    after: i64,
    lines: &[(Arc<str>, LogStream, String, DateTime<Utc>)],
) -> sqlx::Result<()> {
    let seqs: Vec<i64> = (1..=lines.len() as i64).map(|n| after + n).collect();
    let jobs: Vec<&str> = lines.iter().map(|l| &*l.0).collect();
    let streams: Vec<&str> = lines.iter().map(|l| l.1.as_ref()).collect();
    let texts: Vec<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = lines.iter().map(|l| l.3).collect();
    // Followers in any shiplog process hear of new lines through NOTIFY, delivered
    // when this statement commits. Log lines are not the source of truth, so their
    // commit does not wait for the disk (`synchronous_commit` off for this one
    // transaction): a crash may lose the last lines, never an event.
    sqlx::query(
        "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)), \
         stored AS ( \
           INSERT INTO run_logs (run_id, seq, job, stream, line, at) \
           SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
         ) SELECT pg_notify('shiplog_run_logs', $1::text) FROM relaxed",
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

/// How long a follower waits for a notification before reading again anyway (a
/// notification can be missed while the listening connection reconnects).
const FOLLOW_FALLBACK: Duration = Duration::from_secs(1);
const FOLLOW_PAGE: i64 = 500;

/// Tells followers in this process that a run has new log lines. Cheap to clone.
///
/// However many followers a run has in this process, one tail reads its new lines
/// once per notification and hands the same batch to all of them: 500 browsers
/// watching a build cost one query per chunk written, not 500.
#[derive(Clone)]
pub struct LogHub {
    pool: PgPool,
    /// Runs with new lines, from any process.
    news: Notices<Uuid>,
    tails: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Batch>>>>,
}

/// What a run's tail hands its followers.
#[derive(Clone)]
enum Batch {
    /// Lines just read, in order, numbered consecutively.
    Lines(Arc<[LogLine]>),
    /// The run has ended; every line is stored.
    End,
}

/// Batches a tail keeps for followers that are slow to take them; a follower
/// further behind reads what it missed from the database instead.
const TAIL_BACKLOG: usize = 256;

impl LogHub {
    /// Starts listening for new log lines of every run.
    pub async fn start(pool: PgPool) -> sqlx::Result<LogHub> {
        let news = Notices::listen(&pool, "shiplog_run_logs", 1024).await?;
        Ok(LogHub { pool, news, tails: Arc::default() })
    }

    /// The run's log lines after sequence number `after`: first those stored, then
    /// each new one as it is written, without gaps or repeats. Ends once the run has
    /// ended and every line is delivered. A slow follower reads what it missed from
    /// the database, so it never loses lines.
    pub fn follow(&self, run_id: Uuid, after: i64) -> impl Stream<Item = sqlx::Result<LogLine>> + Send + 'static {
        futures::stream::try_unfold(self.follower(run_id, after), |mut f| async move {
            let line = f.next_line().await?;
            Ok(line.map(|line| (line, f)))
        })
    }

    /// Like [`follow`](Self::follow), the same lines in the same order, but in
    /// chunks: each item holds every line available when it is taken (never
    /// empty), so a follower pays per chunk, not per line.
    pub fn follow_chunks(
        &self,
        run_id: Uuid,
        after: i64,
    ) -> impl Stream<Item = sqlx::Result<Vec<LogLine>>> + Send + 'static {
        futures::stream::try_unfold(self.follower(run_id, after), |mut f| async move {
            let chunk = f.next_chunk().await?;
            Ok(chunk.map(|chunk| (chunk, f)))
        })
    }

    fn follower(&self, run_id: Uuid, after: i64) -> Follow {
        Follow {
            hub: self.clone(),
            batches: self.tail(run_id, after),
            run_id,
            queued: after,
            pending: VecDeque::new(),
            caught_up: false,
            ended: false,
        }
    }

    /// A receiver of the run's tail, starting the tail if the run has none here.
    /// A new tail reads from `after`, the position of the follower that starts it:
    /// were it to start from the lines stored when its task first runs, a line
    /// stored between the follower's own read and that moment would reach neither.
    fn tail(&self, run_id: Uuid, after: i64) -> broadcast::Receiver<Batch> {
        let mut tails = self.tails.lock().expect("not poisoned");
        if let Some(tail) = tails.get(&run_id) {
            return tail.subscribe();
        }
        let (sender, receiver) = broadcast::channel(TAIL_BACKLOG);
        tails.insert(run_id, sender.clone());
        let tail = Tail {
            pool: self.pool.clone(),
            store: EventStore::new(self.pool.clone()),
            news: self.news.subscribe(),
            tails: self.tails.clone(),
            run_id,
            sender,
        };
        tokio::spawn(tail.run(after));
        receiver
    }
}

/// The one reader of a run's new lines in this process.
struct Tail {
    pool: PgPool,
    /// Asked whether the run has ended when no line is new.
    store: EventStore,
    news: notices::Receiver<Uuid>,
    tails: Arc<Mutex<HashMap<Uuid, broadcast::Sender<Batch>>>>,
    run_id: Uuid,
    sender: broadcast::Sender<Batch>,
}

impl Tail {
    async fn run(mut self, mut cursor: i64) {
        loop {
            if self.unfollowed() {
                return;
            }
            match read(&self.pool, self.run_id, cursor, FOLLOW_PAGE).await {
                Ok(lines) if !lines.is_empty() => {
                    cursor = lines.last().map_or(cursor, |l| l.seq);
                    let _ = self.sender.send(Batch::Lines(lines.into()));
                    continue;
                }
                Ok(_) => match run_ended(&self.store, self.run_id).await {
                    Ok(true) => {
                        let _ = self.sender.send(Batch::End);
                        return self.close();
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(run_id = %self.run_id, error = %e, "checking a run's end failed"),
                },
                Err(e) => tracing::warn!(run_id = %self.run_id, error = %e, "reading log lines failed; retrying"),
            }
            let _ = tokio::time::timeout(FOLLOW_FALLBACK, wait_for_news(&mut self.news, self.run_id)).await;
        }
    }

    /// True (and the tail forgotten) when no follower is left.
    fn unfollowed(&self) -> bool {
        let mut tails = self.tails.lock().expect("not poisoned");
        if self.sender.receiver_count() > 0 {
            return false;
        }
        tails.remove(&self.run_id);
        true
    }

    fn close(self) {
        self.tails.lock().expect("not poisoned").remove(&self.run_id);
    }
}

/// Returns when `run_id` may have new lines.
async fn wait_for_news(news: &mut notices::Receiver<Uuid>, run_id: Uuid) {
    loop {
        match news.recv().await {
            Some(Notice::Payload(id)) if id == run_id => return,
            Some(Notice::Payload(_)) => {}
            // Missed some notifications: read anyway.
            Some(Notice::Missed) => return,
            // The fallback read on its interval is all there is.
            None => std::future::pending::<()>().await,
        }
    }
}

/// Where one follower is in a run's log.
struct Follow {
    hub: LogHub,
    batches: broadcast::Receiver<Batch>,
    run_id: Uuid,
    /// The sequence number of the last line handed out or queued in `pending`.
    queued: i64,
    /// Lines read and not yet handed out.
    pending: VecDeque<LogLine>,
    /// Every line stored when the database was last read is queued; from here on
    /// the tail's batches continue where that read ended.
    caught_up: bool,
    /// The run has ended and every line is in `pending`.
    ended: bool,
}

impl Follow {
    async fn next_line(&mut self) -> sqlx::Result<Option<LogLine>> {
        Ok(if self.wait().await? { self.pending.pop_front() } else { None })
    }

    /// Every line available now (at least one), in order; `None` once the run has
    /// ended and every line was handed out. Batches the tail has already sent are
    /// taken too, so a follower that fell behind catches up in one chunk.
    async fn next_chunk(&mut self) -> sqlx::Result<Option<Vec<LogLine>>> {
        if !self.wait().await? {
            return Ok(None);
        }
        while self.caught_up && !self.ended {
            match self.batches.try_recv() {
                Ok(batch) => self.take(Ok(batch)).await?,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.take(Err(broadcast::error::RecvError::Lagged(n))).await?
                }
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => break,
            }
        }
        Ok(Some(self.pending.drain(..).collect()))
    }

    /// Waits until a line is pending; false once the run has ended and every line
    /// was handed out.
    async fn wait(&mut self) -> sqlx::Result<bool> {
        loop {
            if !self.pending.is_empty() {
                return Ok(true);
            }
            if self.ended {
                return Ok(false);
            }
            if !self.caught_up {
                // The follower joined the tail before reading, so nothing written
                // after this read is missed.
                self.read_from_database(FOLLOW_PAGE).await?;
                continue;
            }
            let received = self.batches.recv().await;
            self.take(received).await?;
        }
    }

    /// Queues what the tail sent, or falls back to the database when the batch
    /// does not continue where this follower is.
    async fn take(&mut self, received: Result<Batch, broadcast::error::RecvError>) -> sqlx::Result<()> {
        match received {
            Ok(Batch::Lines(lines)) => {
                let Some(first) = lines.iter().find(|l| l.seq > self.queued).map(|l| l.seq) else { return Ok(()) };
                if first > self.queued + 1 {
                    // Lines in between were read by the tail before this follower
                    // caught up: they are in the database.
                    self.caught_up = false;
                    return Ok(());
                }
                self.pending.extend(lines.iter().filter(|l| l.seq > self.queued).cloned());
                self.queued = self.pending.back().map_or(self.queued, |l| l.seq);
            }
            // Every line is stored before the event that ends the run.
            Ok(Batch::End) => {
                self.read_from_database(i64::MAX).await?;
                self.ended = true;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => self.caught_up = false,
            // The tail stopped without seeing the end (it could not start):
            // join a new one, then read what it may not have.
            Err(broadcast::error::RecvError::Closed) => {
                tokio::time::sleep(FOLLOW_FALLBACK).await;
                self.batches = self.hub.tail(self.run_id, self.queued);
                self.caught_up = false;
            }
        }
        Ok(())
    }

    async fn read_from_database(&mut self, limit: i64) -> sqlx::Result<()> {
        let lines = read(&self.hub.pool, self.run_id, self.queued, limit).await?;
        self.caught_up = (lines.len() as i64) < limit;
        self.queued = lines.last().map_or(self.queued, |l| l.seq);
        self.pending.extend(lines);
        Ok(())
    }
}

/// Whether the run's last event ends it.
async fn run_ended(store: &EventStore, run_id: Uuid) -> sqlx::Result<bool> {
    let Some(last) = store.last_event(&(&StreamRef::Run(run_id)).into()).await? else { return Ok(false) };
    // An event that does not decode as a run's is not one that ends it.
    Ok(serde_json::from_str::<RunEvent>(&last.payload).is_ok_and(|e| e.ends_run()))
}
