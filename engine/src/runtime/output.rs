//! Output as log lines: a process's pipes and the Docker engine deliver chunks that
//! need not end at a line break, so each stream keeps its unfinished line until the
//! rest arrives.

use std::sync::Mutex;

use super::policy::MAX_LINE;
use super::{LogSink, LogStream};

/// Splits chunks of one stream into lines for a [`LogSink`].
pub(crate) struct Lines {
    stream: LogStream,
    partial: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(stream: LogStream) -> Lines {
        Lines { stream, partial: Vec::new() }
    }

    /// Forwards every line `chunk` completes; keeps the rest. A `\r` before the
    /// line break is dropped; invalid UTF-8 and NUL bytes (which no log line, event
    /// or read model can store: `canonical::storable`) are replaced with U+FFFD; lines longer than
    /// [`MAX_LINE`] come in pieces.
    pub(crate) fn push(&mut self, chunk: &[u8], logs: &dyn LogSink) {
        for &byte in chunk {
            if byte == b'\n' {
                self.emit(logs);
            } else {
                self.partial.push(byte);
                if self.partial.len() >= MAX_LINE {
                    self.emit(logs);
                }
            }
        }
    }

    /// Forwards the unfinished last line, if any.
    pub(crate) fn finish(&mut self, logs: &dyn LogSink) {
        if !self.partial.is_empty() {
            self.emit(logs);
        }
    }

    fn emit(&mut self, logs: &dyn LogSink) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let line = String::from_utf8_lossy(&self.partial);
        match line.contains('\0') {
            true => logs.line(self.stream, &line.replace('\0', "\u{FFFD}")),
            false => logs.line(self.stream, &line),
        }
        self.partial.clear();
    }
}

/// Keeps the last non-blank line of output (a failing health check's reason,
/// usually).
#[derive(Default)]
pub(crate) struct LastLine(Mutex<Option<String>>);

impl LastLine {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl LogSink for LastLine {
    fn line(&self, stream: LogStream, line: &str) {
        if stream != LogStream::System && !line.trim().is_empty() {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl LogSink for Collect {
        fn line(&self, _stream: LogStream, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    #[test]
    fn lines_are_joined_across_chunks_and_the_last_one_is_flushed() {
        let logs = Collect::default();
        let mut lines = Lines::new(LogStream::Stdout);
        lines.push(b"Step 1/3 : FROM", &logs);
        lines.push(b" base\r\nStep 2/3\n\nlast", &logs);
        assert_eq!(*logs.0.lock().unwrap(), ["Step 1/3 : FROM base", "Step 2/3", ""]);
        lines.finish(&logs);
        lines.finish(&logs);
        assert_eq!(logs.0.lock().unwrap().last().map(String::as_str), Some("last"));
        assert_eq!(logs.0.lock().unwrap().len(), 4);
    }

    #[test]
    fn nul_bytes_are_replaced_as_invalid_utf8_is() {
        let logs = Collect::default();
        let mut lines = Lines::new(LogStream::Stdout);
        lines.push(b"nul \0 byte, bad \xff byte\n", &logs);
        assert_eq!(*logs.0.lock().unwrap(), ["nul \u{FFFD} byte, bad \u{FFFD} byte"]);
    }

    #[test]
    fn overlong_lines_come_in_pieces() {
        let logs = Collect::default();
        let mut lines = Lines::new(LogStream::Stderr);
        lines.push(&vec![b'x'; MAX_LINE + 10], &logs);
        lines.finish(&logs);
        let got = logs.0.lock().unwrap();
        assert_eq!(got.iter().map(String::len).collect::<Vec<_>>(), [MAX_LINE, 10]);
    }

    #[test]
    fn the_last_line_is_the_last_one_with_text() {
        let last = LastLine::default();
        assert_eq!(last.get(), None);
        last.line(LogStream::Stderr, "not ready");
        last.line(LogStream::Stdout, "  ");
        last.line(LogStream::System, "a note of shiplog's");
        assert_eq!(last.get().as_deref(), Some("not ready"));
    }
}
