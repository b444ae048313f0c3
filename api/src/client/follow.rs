//! Following a run to its end, as `gh run watch` and `kubectl rollout status` do:
//! its stages as progress on stderr, its log on stdout, and its result as the
//! command's exit status.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::ClientError;
use super::graphql::{Client, Received};
use super::output::{self, Format, Paint};

pub const RUN_FIELDS: &str = "id kind status commit reason triggeredBy attempt error queuedAt startedAt
  finishedAt durationMs stages { name status durationMs jobs { name status durationMs exitCode error } }";

const RUN_UPDATED: &str = "subscription($runId: ID!) { runUpdated(runId: $runId) { ...run } }";
const RUN_LOG_CHUNKS: &str = "subscription($runId: ID!, $after: String) { runLogChunks(runId: $runId, after: $after) { cursor number job stream text } }";

/// Follows run `run_id` until it has ended and its whole log was printed; returns
/// its last state.
pub async fn run(client: &Client, run_id: &str, format: Format) -> Result<Value, ClientError> {
    let mut socket = client.subscriptions().await?;
    let updated = format!("{RUN_UPDATED} fragment run on Run {{ {RUN_FIELDS} }}");
    socket.subscribe("run", &updated, json!({ "runId": run_id })).await?;
    socket.subscribe("logs", RUN_LOG_CHUNKS, json!({ "runId": run_id })).await?;
    let mut progress = Progress::new(format);
    let mut log = LogPrinter::new(format);
    let (mut run_done, mut logs_done) = (false, false);
    let mut last = Value::Null;
    while !(run_done && logs_done) {
        let received = socket.receive().await?;
        match received {
            Some(Received::Next { id, data }) if id == "run" => {
                last = data["runUpdated"].clone();
                progress.show(&last);
            }
            Some(Received::Next { data, .. }) => {
                let lines = data["runLogChunks"].as_array().cloned().unwrap_or_default();
                progress.suspend(|| log.print(&lines));
            }
            Some(Received::Complete { id }) if id == "run" => run_done = true,
            Some(Received::Complete { .. }) => logs_done = true,
            Some(Received::Ack) => {}
            None => return Err(ClientError::Unexpected("the server closed the websocket before the run ended".into())),
        }
    }
    progress.finish(&last);
    Ok(last)
}

/// Follows a run's log only (`shiplog logs RUN --follow`).
pub async fn logs(client: &Client, run_id: &str, format: Format) -> Result<(), ClientError> {
    let mut socket = client.subscriptions().await?;
    socket.subscribe("logs", RUN_LOG_CHUNKS, json!({ "runId": run_id })).await?;
    let mut log = LogPrinter::new(format);
    loop {
        match socket.receive().await? {
            Some(Received::Next { data, .. }) => log.print(data["runLogChunks"].as_array().unwrap_or(&Vec::new())),
            Some(Received::Complete { .. }) => return Ok(()),
            Some(Received::Ack) => {}
            None => return Err(ClientError::Unexpected("the server closed the websocket before the log ended".into())),
        }
    }
}

/// Prints log lines to stdout: as written, with a header where the job changes
/// (a person's view), or one JSON object per line (JSON Lines, for scripts).
pub struct LogPrinter {
    format: Format,
    paint: Paint,
    job: Option<String>,
}

impl LogPrinter {
    pub fn new(format: Format) -> LogPrinter {
        LogPrinter { format, paint: Paint::for_stream(&std::io::stdout()), job: None }
    }

    pub fn print(&mut self, lines: &[Value]) {
        let mut out = std::io::stdout().lock();
        for line in lines {
            // A closed stdout (`| head`) ends the output, not the command.
            let _ = match self.format {
                Format::Json => writeln!(out, "{line}"),
                Format::Table => {
                    let job = line["job"].as_str().unwrap_or_default();
                    if self.job.as_deref() != Some(job) {
                        let _ = writeln!(out, "{}", self.paint.bold(&format!("==> {job}")));
                        self.job = Some(job.to_owned());
                    }
                    writeln!(out, "{}", line["text"].as_str().unwrap_or_default())
                }
            };
        }
        let _ = out.flush();
    }
}

/// The run's stages as they change: a spinner per stage on a terminal, one line
/// per change otherwise (a CI log, a pipe), nothing with `--output json`.
struct Progress {
    format: Format,
    paint: Paint,
    bars: Option<MultiProgress>,
    stages: HashMap<String, (String, Option<ProgressBar>)>,
}

impl Progress {
    fn new(format: Format) -> Progress {
        let stderr = std::io::stderr();
        let paint = Paint::for_stream(&stderr);
        let bars = (format == Format::Table && std::io::IsTerminal::is_terminal(&stderr))
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { format, paint, bars, stages: HashMap::new() }
    }

    fn show(&mut self, run: &Value) {
        if self.format == Format::Json {
            return;
        }
        for stage in run["stages"].as_array().into_iter().flatten() {
            let name = stage["name"].as_str().unwrap_or_default().to_owned();
            let status = stage["status"].as_str().unwrap_or_default().to_owned();
            let line = self.stage_line(stage);
            let known = self.stages.get(&name).map(|(status, _)| status.clone());
            if known.as_deref() == Some(status.as_str()) {
                continue;
            }
            match &self.bars {
                Some(bars) => {
                    let entry = self.stages.entry(name).or_insert_with(|| {
                        let bar = bars.add(ProgressBar::new_spinner());
                        let template = if self.paint.enabled() { "{spinner:.cyan} {msg}" } else { "{spinner} {msg}" };
                        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
                        bar.enable_steady_tick(Duration::from_millis(100));
                        (String::new(), Some(bar))
                    });
                    entry.0 = status.clone();
                    let bar = entry.1.as_ref().expect("bars on a terminal");
                    if matches!(status.as_str(), "PENDING" | "RUNNING") {
                        bar.set_message(line);
                    } else {
                        bar.finish_with_message(line);
                    }
                }
                None => {
                    eprintln!("{line}");
                    self.stages.insert(name, (status, None));
                }
            }
        }
    }

    fn stage_line(&self, stage: &Value) -> String {
        let status = stage["status"].as_str().unwrap_or_default();
        let mut line = format!("stage {}: {}", stage["name"].as_str().unwrap_or_default(), self.paint.status(status));
        if !matches!(status, "PENDING" | "RUNNING") {
            line.push_str(&format!(" in {}", output::duration(&stage["durationMs"])));
        }
        let jobs: Vec<String> = stage["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|job| {
                format!("{} {}", job["name"].as_str().unwrap_or_default(), job["status"].as_str().unwrap_or_default())
            })
            .collect();
        if !jobs.is_empty() {
            line.push_str(&format!(" ({})", jobs.join(", ")));
        }
        line
    }

    fn suspend(&self, print: impl FnOnce()) {
        match &self.bars {
            Some(bars) => bars.suspend(print),
            None => print(),
        }
    }

    fn finish(&self, run: &Value) {
        if self.format == Format::Json {
            return;
        }
        let status = run["status"].as_str().unwrap_or_default();
        let mut line = format!("run {} in {}", self.paint.status(status), output::duration(&run["durationMs"]));
        if let Some(error) = run["error"].as_str() {
            line.push_str(&format!(": {error}"));
        }
        self.suspend(|| eprintln!("{line}"));
    }
}
