//! The binary as a newcomer runs it: `shiplog serve` with no DATABASE_URL starts a
//! private PostgreSQL, serves, and on SIGTERM stops everything cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shiplog_tests::example::Scratch;

fn shiplog(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shiplog"));
    command.env_remove("DATABASE_URL").env("SHIPLOG_DATA_DIR", data_dir).env("RUST_LOG", "warn");
    command
}

fn http(address: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "shiplog did not exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_runs_a_private_postgres_and_stops_it_on_sigterm() {
    let scratch = Scratch::new("shiplog-serve");
    let data_dir = scratch.path().join("pg");
    let mut server = shiplog(&data_dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--seal-interval", "50ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    let address = first_line
        .trim()
        .strip_prefix("shiplog listening on http://")
        .unwrap_or_else(|| panic!("{first_line:?}"))
        .to_owned();
    // An empty database gets an admin token, printed once.
    let mut second_line = String::new();
    stdout.read_line(&mut second_line).unwrap();
    let token = second_line
        .trim()
        .strip_prefix("bootstrap admin token (shown once, store it now): ")
        .unwrap_or_else(|| panic!("{second_line:?}"))
        .to_owned();

    assert!(
        http(&address, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 200")
    );
    let ready = http(&address, "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(ready.starts_with("HTTP/1.1 200") && ready.contains("\"ready\""), "{ready}");
    let body = r#"{"query":"{ auditVerification { intact eventsChecked } }"}"#;
    let answer = http(
        &address,
        &format!(
            "POST /graphql HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.contains(r#"{"data":{"auditVerification":{"intact":true,"eventsChecked":"0"}}}"#), "{answer}");

    // An open websocket does not keep the server from stopping.
    let mut socket = TcpStream::connect(&address).unwrap();
    socket
        .write_all(
            b"GET /graphql/ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
        )
        .unwrap();
    let mut upgraded = [0u8; 12];
    socket.read_exact(&mut upgraded).unwrap();
    assert_eq!(&upgraded, b"HTTP/1.1 101");

    let postmaster_pid: i32 =
        std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_for_exit(&mut server, Duration::from_secs(30)).success());
    // PostgreSQL shut down cleanly: its lock file is gone and its process with it.
    assert!(!data_dir.join("postmaster.pid").exists());
    assert!(kill(Pid::from_raw(postmaster_pid), None).is_err(), "postgres still runs");

    // The data survives: the audit tool starts the cluster again from the same directory.
    let verify = shiplog(&data_dir).args(["audit", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{stdout}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(stdout.contains("intact"), "{stdout}");
    assert!(!data_dir.join("postmaster.pid").exists());
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(["audit", "verify"])
        .env("DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: DATABASE_URL is not a PostgreSQL URL"), "{stderr}");
}
