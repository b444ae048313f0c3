//! How client commands print: aligned tables for people, JSON for scripts, colour
//! only on a terminal and never with `NO_COLOR` (no-color.org).

use std::io::IsTerminal;

use clap::ValueEnum;
use serde_json::Value;

/// `--output`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns for a person.
    #[default]
    Table,
    /// The API's own JSON, one document, for scripts.
    Json,
}

/// Whether escapes may colour what goes to a stream.
#[derive(Debug, Clone, Copy)]
pub struct Paint(bool);

impl Paint {
    /// Colour for `stream` when it is a terminal and `NO_COLOR` is unset or empty.
    pub fn for_stream(stream: &impl IsTerminal) -> Paint {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Paint(!no_color && stream.is_terminal())
    }

    pub fn enabled(self) -> bool {
        self.0
    }

    /// A status word (`SUCCEEDED`, `FAILED`, `READY`, …) in the colour of its meaning.
    pub fn status(self, status: &str) -> String {
        let colour = match status {
            "SUCCEEDED" | "READY" | "HEALTHY" | "SYNCED" | "IN_SYNC" => "32",
            "FAILED" | "DEGRADED" | "DRIFTED" | "MISSING" | "OUT_OF_SYNC" => "31",
            "RUNNING" | "QUEUED" | "PENDING" | "PROGRESSING" => "33",
            _ => return status.to_owned(),
        };
        if self.0 { format!("\x1b[{colour}m{status}\x1b[0m") } else { status.to_owned() }
    }

    pub fn bold(self, text: &str) -> String {
        if self.0 { format!("\x1b[1m{text}\x1b[0m") } else { text.to_owned() }
    }
}

/// Columns padded to their widest cell (measured without colour escapes), two
/// spaces apart, headers first; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(visible_width(cell));
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&headers).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - visible_width(cell) + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// A cell for a value that may be null: `-` then.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A commit as people read it: its first 12 characters.
pub fn short_commit(value: &Value) -> String {
    value.as_str().map(|c| c.chars().take(12).collect()).unwrap_or_else(|| "-".into())
}

/// Milliseconds (the API's `BigInt`, a string) as `1.2s`, `3m04s`.
pub fn duration(millis: &Value) -> String {
    let millis = match millis {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    match millis {
        None => "-".into(),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn visible_width(cell: &str) -> usize {
    let mut width = 0;
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An SGR escape ends with its `m`.
            chars.by_ref().find(|&c| c == 'm');
        } else {
            width += 1;
        }
    }
    width
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_align_whatever_the_colour() {
        let paint = Paint(true);
        let rows = vec![
            vec!["hello/staging".into(), paint.status("READY"), "abc".into()],
            vec!["x/pr-12".into(), paint.status("FAILED"), "-".into()],
        ];
        let text = table(&["ENVIRONMENT", "STATUS", "COMMIT"], &rows);
        let plain: Vec<String> = text.lines().map(|l| l.replace("\x1b[32m", "").replace("\x1b[31m", "")).collect();
        let plain: Vec<String> = plain.iter().map(|l| l.replace("\x1b[0m", "")).collect();
        assert_eq!(plain, ["ENVIRONMENT    STATUS  COMMIT", "hello/staging  READY   abc", "x/pr-12        FAILED  -"]);
        assert_eq!(Paint(false).status("READY"), "READY");
    }

    #[test]
    fn durations_and_commits_read_as_people_write_them() {
        assert_eq!(duration(&json!("1234")), "1.2s");
        assert_eq!(duration(&json!("184000")), "3m04s");
        assert_eq!(duration(&Value::Null), "-");
        assert_eq!(short_commit(&json!("0123456789abcdef0123")), "0123456789ab");
        assert_eq!(cell(&Value::Null), "-");
    }
}
