//! Waiting for a new version to become healthy, as every runtime does it: check,
//! wait [`HEALTH_POLL`], check again until the health timeout; and the HTTP probe
//! shiplog runs itself (a GET from where shiplog runs). What one check is (a GET,
//! a command in the image or container, Docker's own `HEALTHCHECK`) is the
//! runtime's.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::policy::{HEALTH_POLL, HTTP_PROBE_TIMEOUT, MIN_COMMAND_PROBE};
use super::{LogSink, LogStream, deadline_after, fmt_duration};

/// What one look at a starting version found.
pub(crate) enum Verdict {
    Healthy,
    /// Not healthy yet: why (the check's error).
    NotYet(String),
    /// It has ended: how (`exited with code 1`).
    Exited(String),
}

/// Why a version did not become healthy.
pub(crate) enum Unhealthy {
    /// The health timeout passed; the last check says why it failed.
    TimedOut { last_check: String },
    /// It ended first: how (`exited with code 1`).
    Exited(String),
}

impl Unhealthy {
    /// What the roll-out of `service` fails with. A timeout also writes the last
    /// check's error to the roll-out's log.
    pub(crate) fn failure(&self, service: &str, timeout: Duration, logs: &dyn LogSink) -> String {
        match self {
            Unhealthy::TimedOut { last_check } => {
                logs.line(LogStream::System, &format!("last health check of {service}: {last_check}"));
                format!("{service} did not become healthy within {}", fmt_duration(timeout))
            }
            Unhealthy::Exited(how) => format!("{service} {how} before becoming healthy"),
        }
    }
}

/// Runs `check` (given the time left) every [`HEALTH_POLL`] until it finds the
/// version healthy or ended, or `timeout` passes.
pub(crate) async fn poll<F: Future<Output = Verdict>>(
    timeout: Duration,
    mut check: impl FnMut(Duration) -> F,
) -> Result<(), Unhealthy> {
    let deadline = deadline_after(timeout);
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last_check = match check(remaining).await {
            Verdict::Healthy => return Ok(()),
            Verdict::Exited(how) => return Err(Unhealthy::Exited(how)),
            Verdict::NotYet(why) => why,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Unhealthy::TimedOut { last_check });
        }
        tokio::time::sleep_until((now + HEALTH_POLL).min(deadline)).await;
    }
}

/// How long one HTTP check may take with `remaining` of the wait left.
pub(crate) fn http_probe_timeout(remaining: Duration) -> Duration {
    remaining.min(HTTP_PROBE_TIMEOUT)
}

/// How long one command check may take with `remaining` of the wait left.
pub(crate) fn command_probe_timeout(remaining: Duration) -> Duration {
    remaining.max(MIN_COMMAND_PROBE)
}

/// A failed command check: "`program` exited with code 1: its last line".
pub(crate) fn command_failure(program: &str, how: &str, last_line: Option<String>) -> String {
    match last_line {
        Some(line) => format!("`{program}` {how}: {line}"),
        None => format!("`{program}` {how}"),
    }
}

/// An HTTP/1.0 GET on `ip`:`port``path` that must answer 2xx or 3xx within `timeout`.
/// The error says what was tried and what came back.
pub(crate) async fn http_probe(ip: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    let address = SocketAddr::new(ip, port);
    let url = format!("http://{address}{path}");
    let timeout = timeout.max(Duration::from_millis(100));
    let probe_url = url.clone();
    // std's TcpStream with timeouts on a blocking thread: the probe is rare and small.
    let probe = tokio::task::spawn_blocking(move || -> Result<u16, String> {
        let deadline = Instant::now() + timeout;
        let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        stream.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: shiplog\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') && head.len() < 1024 {
            stream.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        match (parts.next(), parts.next().and_then(|code| code.parse::<u16>().ok())) {
            (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
            _ => Err(format!("not an HTTP response: {:?}", status_line.chars().take(80).collect::<String>())),
        }
    });
    match probe.await {
        Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
        Ok(Ok(code)) => Err(format!("GET {probe_url} answered {code}")),
        Ok(Err(e)) => Err(format!("GET {url}: {e}")),
        Err(e) => Err(format!("GET {url}: the probe panicked: {e}")),
    }
}
