//! The binary as a newcomer runs it: `shiplog serve` with no DATABASE_URL starts a
//! private PostgreSQL, serves, and on SIGTERM stops everything cleanly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shiplog_tests::example::Scratch;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn shiplog(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shiplog"));
    command.env_remove("DATABASE_URL").env("SHIPLOG_DATA_DIR", data_dir).env("RUST_LOG", "warn");
    command
}

/// The test is synchronous (it drives a child process), so its HTTP client blocks.
fn client() -> reqwest::blocking::Client {
    shiplog_engine::tls::install_provider();
    reqwest::blocking::Client::builder().no_proxy().build().unwrap()
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
    // The log goes to a file, as under a service manager: info lines, no colour.
    let log = scratch.path().join("serve.log");
    let mut server = shiplog(&data_dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--seal-interval", "50ms"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
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

    let client = client();
    assert_eq!(client.get(format!("http://{address}/healthz")).send().unwrap().status(), 200);
    let ready = client.get(format!("http://{address}/readyz")).send().unwrap();
    assert_eq!(ready.status(), 200);
    let ready = ready.text().unwrap();
    assert!(ready.contains("\"ready\""), "{ready}");
    let answer = client
        .post(format!("http://{address}/graphql"))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(r#"{"query":"{ auditVerification { intact eventsChecked } }"}"#)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(answer.contains(r#"{"data":{"auditVerification":{"intact":true,"eventsChecked":"0"}}}"#), "{answer}");

    // An open websocket does not keep the server from stopping.
    let mut request = format!("ws://{address}/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (_socket, upgraded) = tungstenite::connect(request).unwrap();
    assert_eq!(upgraded.status(), 101);

    let postmaster_pid: i32 =
        std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
    kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_for_exit(&mut server, Duration::from_secs(30)).success());
    // PostgreSQL shut down cleanly: its lock file is gone and its process with it.
    assert!(!data_dir.join("postmaster.pid").exists());
    assert!(kill(Pid::from_raw(postmaster_pid), None).is_err(), "postgres still runs");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(" INFO ") && log.contains("private PostgreSQL started"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI escape codes in a log written to a file:\n{log:?}");

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
