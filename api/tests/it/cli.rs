//! The client commands through the binary, against a real server: what a person
//! at a terminal and a deploy script see.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};
use shiplog::auth::Role;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use shiplog_tests::eventually;
use shiplog_tests::example::ExampleRepo;
use shiplog_tests::tls::TlsProxy;

use crate::app::{PATIENCE, TestApp};
use crate::graphql::{ENVIRONMENT_CREATE, example_application, head};

/// The binary as a client of `app`, with a login file of its own (not the user's)
/// and nothing from the test's environment.
struct Shiplog {
    url: String,
    config: PathBuf,
}

impl Shiplog {
    fn new(app: &TestApp) -> Shiplog {
        Shiplog { url: format!("http://{}", app.address), config: app.scratch.path().join("cli/config.json") }
    }

    fn command(&self, token: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shiplog"));
        command.args(args).env_remove("SHIPLOG_URL").env_remove("SHIPLOG_TOKEN").env("SHIPLOG_CONFIG", &self.config);
        if let Some(token) = token {
            command.env("SHIPLOG_URL", &self.url).env("SHIPLOG_TOKEN", token);
        }
        command
    }

    async fn run(&self, token: Option<&str>, args: &[&str]) -> Run {
        Run(self.command(token, args).output().await.unwrap())
    }
}

struct Run(Output);

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    fn code(&self) -> Option<i32> {
        self.0.status.code()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.0.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout()))
    }

    /// Asserts the exit status, showing everything the command printed otherwise.
    fn exits(self, code: i32) -> Run {
        assert_eq!(self.code(), Some(code), "stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
        self
    }
}

const FAILING_RELEASE: &str = "#!/bin/sh\necho \"checking $COMMIT\"\necho 'the schema is locked' >&2\nexit 3\n";

/// A server with a worker, the example application and its staging environment,
/// not set up yet; and a deployer's token.
async fn staging_not_set_up() -> (TestApp, ExampleRepo, String) {
    let app = TestApp::with_worker().await;
    let (repo, app_id) = example_application(&app).await;
    let deployer = app.token(Role::Deployer, false).await;
    let input =
        json!({ "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main", "setup": false });
    app.data(&deployer, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    (app, repo, deployer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_shows_the_stages_and_the_log_and_exits_with_the_runs_result() {
    let (app, repo, deployer) = staging_not_set_up().await;
    let shiplog = Shiplog::new(&app);
    let token = Some(deployer.as_str());

    let setup = shiplog.run(token, &["setup", "hello/staging", "--reason", "first setup", "--follow"]).await.exits(0);
    let (stdout, stderr) = (setup.stdout(), setup.stderr());
    let commit = head(&repo);
    // The release command's output, in order, under its job's header; its secret masked.
    let log: Vec<&str> = stdout.lines().collect();
    let start = log.iter().position(|l| *l == "==> release-migrate").unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        log[start + 2..start + 5],
        [format!("migrating hello/staging to {commit}").as_str(), "using API token ***", "migration done"],
        "{stdout}"
    );
    for stage in ["build", "release", "deploy"] {
        assert!(stderr.contains(&format!("stage {stage}: SUCCEEDED in ")), "{stage}: {stderr}");
    }
    assert!(stderr.lines().last().unwrap().starts_with("run SUCCEEDED in "), "{stderr}");
    assert!(!stdout.contains('\x1b') && !stderr.contains('\x1b'), "no colour when not on a terminal");

    // A failing release command: its output still shows, and the exit status is 1.
    repo.commit_release_script(FAILING_RELEASE);
    let deploy = shiplog.run(token, &["deploy", "hello/staging", "--follow"]).await.exits(1);
    let (stdout, stderr) = (deploy.stdout(), deploy.stderr());
    let new_commit = head(&repo);
    // Standard output and error are one stream in the log; which of two lines
    // written at once to each came first is not known.
    for line in [format!("checking {new_commit}"), "the schema is locked".into()] {
        assert!(stdout.lines().any(|l| l == line), "{line}: {stdout}");
    }
    assert!(stderr.contains("stage release: FAILED in "), "{stderr}");
    assert!(stderr.lines().last().unwrap().starts_with("run FAILED in "), "{stderr}");

    // Scripts read JSON: the runs, newest first (once the read model has the
    // run's end, which the follow view saw in the run's own events), and the
    // environment.
    let summary = |runs: &Value| -> Vec<(String, String, String)> {
        let field = |r: &Value, f: &str| r[f].as_str().unwrap().to_owned();
        runs.as_array().unwrap().iter().map(|r| (field(r, "kind"), field(r, "status"), field(r, "commit"))).collect()
    };
    let expected = [("PATCH", "FAILED", new_commit.as_str()), ("SETUP", "SUCCEEDED", commit.as_str())]
        .map(|(k, s, c)| (k.to_owned(), s.to_owned(), c.to_owned()));
    let runs = eventually("the runs read model has the failed patch", PATIENCE, || async {
        let runs = shiplog.run(token, &["runs", "hello/staging", "--output", "json"]).await.exits(0).json();
        let ended = summary(&runs).iter().filter(|r| r.1 != "RUNNING" && r.1 != "QUEUED").count();
        (ended == 2).then_some(runs)
    })
    .await;
    assert_eq!(summary(&runs), expected);
    let env = shiplog.run(token, &["env", "hello/staging", "-o", "json"]).await.exits(0).json();
    assert_eq!((env["status"].as_str(), env["commit"].as_str()), (Some("FAILED"), Some(commit.as_str())));

    // A finished run's log reads the same as it did live.
    let failed = runs[0]["id"].as_str().unwrap();
    let logs = shiplog.run(token, &["logs", failed]).await.exits(0);
    assert!(logs.stdout().contains(&format!("checking {new_commit}\n")), "{}", logs.stdout());
    let followed = shiplog.run(token, &["logs", failed, "--follow"]).await.exits(0);
    assert_eq!(followed.stdout(), logs.stdout());

    // A viewer may not deploy: the server's refusal is the message.
    let viewer = app.token(Role::Viewer, false).await;
    let refused = shiplog.run(Some(&viewer), &["deploy", "hello/staging"]).await.exits(1);
    assert_eq!(
        refused.stderr(),
        "error: the server refused: this token's role (viewer) may not change environments (FORBIDDEN)\n"
    );

    // People read tables.
    let table = shiplog.run(token, &["envs"]).await.exits(0).stdout();
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["ENVIRONMENT", "KIND", "STATUS", "HEALTH", "DRIFT", "COMMIT", "LAST", "RUN"]);
    assert_eq!(rows[1][..4], ["hello/staging", "STAGING", "FAILED", "HEALTHY"]);
    assert_eq!(rows[1][5..], [&commit[..12], "PATCH", "FAILED"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_saves_a_checked_token_and_bad_ones_are_refused_with_the_servers_words() {
    let app = TestApp::start().await;
    let shiplog = Shiplog::new(&app);

    // Nothing configured: a usage error that says what to do.
    let none = shiplog.run(None, &["apps"]).await.exits(2);
    assert_eq!(
        none.stderr(),
        "error: no server to talk to: run `shiplog login --url URL`, or set SHIPLOG_URL and SHIPLOG_TOKEN\n"
    );

    let bad = shiplog.run(Some("not-a-token"), &["apps"]).await.exits(1);
    assert_eq!(
        bad.stderr(),
        "error: the server refused: bad credentials: unknown or revoked token (UNAUTHENTICATED)\n"
    );

    // A refused login saves nothing.
    let refused = login(&shiplog, "not-a-token").await.exits(1);
    assert!(refused.stderr().ends_with("bad credentials: unknown or revoked token (UNAUTHENTICATED)\n"));
    assert!(!shiplog.config.exists());

    let viewer = app.token(Role::Viewer, false).await;
    let ok = login(&shiplog, &viewer).await.exits(0);
    assert_eq!(ok.stdout(), format!("logged in to {} as Viewer (VIEWER)\n", shiplog.url));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&shiplog.config).unwrap()).unwrap();
    assert_eq!(saved, json!({ "url": shiplog.url, "token": viewer }));

    // Later commands use the saved login.
    let apps = shiplog.run(None, &["apps"]).await.exits(0);
    assert_eq!(apps.stdout(), "NAME  TEMPLATE  REPOSITORY\n");
    let refused = shiplog.run(None, &["deploy", "nope/none"]).await.exits(1);
    assert_eq!(refused.stderr(), "error: environment nope/none not found\n");
    let usage = shiplog.run(None, &["deploy", "nope"]).await.exits(2);
    assert_eq!(usage.stderr(), "error: `nope` is not APPLICATION/ENVIRONMENT\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_works_over_https_trusting_the_ca_file_and_refuses_an_unknown_issuer() {
    let (app, _repo, deployer) = staging_not_set_up().await;
    let proxy = TlsProxy::start(app.address).await;
    let ca = app.scratch.path().join("ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).unwrap();
    let shiplog = Shiplog { url: proxy.url(), config: app.scratch.path().join("cli/config.json") };

    // Without the CA the server's certificate is refused, and nothing runs.
    let refused = shiplog.run(Some(&deployer), &["envs"]).await.exits(1);
    let url = proxy.url();
    assert_eq!(
        refused.stderr(),
        format!(
            "error: cannot reach {url}/graphql: error sending request for url ({url}/graphql): client error (Connect): invalid peer certificate: UnknownIssuer\n"
        )
    );

    // With it, queries go over https and the follow view's subscriptions over wss.
    let with_ca = |args: &[&str]| {
        let mut command = shiplog.command(Some(&deployer), args);
        command.env("SHIPLOG_CA_FILE", &ca);
        async move { Run(command.output().await.unwrap()) }
    };
    let setup = with_ca(&["setup", "hello/staging", "--reason", "over https", "--follow"]).await.exits(0);
    assert!(setup.stdout().lines().any(|l| l == "migration done"), "{}", setup.stdout());
    assert!(setup.stderr().lines().last().unwrap().starts_with("run SUCCEEDED in "), "{}", setup.stderr());
    let runs = with_ca(&["runs", "hello/staging", "-o", "json"]).await.exits(0).json();
    let run = runs[0]["id"].as_str().unwrap();
    let followed = with_ca(&["logs", run, "--follow"]).await.exits(0);
    assert_eq!(followed.stdout(), with_ca(&["logs", run]).await.exits(0).stdout());
    // The websocket checks the certificate itself: without the CA, `wss://` is refused.
    let refused = shiplog.run(Some(&deployer), &["logs", run, "--follow"]).await.exits(1);
    assert_eq!(
        refused.stderr(),
        format!("error: cannot reach wss://{}/graphql/ws: invalid peer certificate: UnknownIssuer\n", proxy.address)
    );

    // A CA file that holds no certificate is a usage error that names it.
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let bad = shiplog.run(Some(&deployer), &["envs", "--ca-file", ca.to_str().unwrap()]).await.exits(2);
    assert_eq!(
        bad.stderr(),
        format!("error: the CA file {}: the extra CA certificates hold no certificate\n", ca.display())
    );
}

#[tokio::test]
async fn completions_cover_the_client_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_shiplog")).args(["completions", "bash"]).output().await.unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.starts_with("_shiplog() {"), "{script}");
    for command in ["shiplog__subcmd__deploy", "shiplog__subcmd__logs", "shiplog__subcmd__serve", "--follow"] {
        assert!(script.contains(command), "{command}");
    }
}

/// `shiplog login --url …` with the token typed on standard input.
async fn login(shiplog: &Shiplog, token: &str) -> Run {
    let mut child = shiplog
        .command(None, &["login", "--url", &shiplog.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{token}\n").as_bytes()).await.unwrap();
    drop(stdin);
    Run(child.wait_with_output().await.unwrap())
}
