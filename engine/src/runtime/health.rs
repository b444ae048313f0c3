//! Health checks shiplog runs itself: an HTTP GET from where shiplog runs.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
