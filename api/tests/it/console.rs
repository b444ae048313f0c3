//! The web console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver against a real `shiplog serve`. Each
//! page visited is saved as a screenshot under `target/screenshots/`, and a blank
//! page or an error page fails the test.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shiplog_tests::example::{ExampleRepo, Scratch, git};
use shiplog_tests::{TestDb, eventually};

const WAIT: Duration = Duration::from_secs(120);

/// A release command that prints a coloured line and a progress line redrawn
/// with `\r`, then, while `$MARKS/hold` exists, waits for each go-ahead file the
/// test writes: a run the test keeps running while it watches the page.
const RELEASE: &str = r#"#!/bin/sh
printf '\033[1;32mmigrations ok\033[0m for %s\n' "$ENVIRONMENT"
printf 'progress 10%%\rprogress 50%%\rprogress 100%%\n'
if [ -e "$MARKS/hold" ]; then
  echo "waiting for the test"
  while [ ! -e "$MARKS/go1" ]; do sleep 0.05; done
  echo "after the page opened"
  while [ ! -e "$MARKS/go2" ]; do sleep 0.05; done
  echo "after the connection dropped"
  while [ ! -e "$MARKS/go3" ]; do sleep 0.05; done
  rm "$MARKS/hold"
fi
echo "release done"
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `shiplog serve` on a fresh database, stopped with SIGTERM when dropped.
struct Served {
    child: Child,
    url: String,
    admin: String,
    http: reqwest::Client,
}

impl Served {
    fn start(db: &TestDb, scratch: &Scratch) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shiplog"))
            .args(["serve", "--listen", "127.0.0.1:0", "--drift-interval", "1h"])
            .env("DATABASE_URL", db.url())
            .env("SHIPLOG_PROCESS_ROOT", scratch.path().join("process"))
            .env("SHIPLOG_WORK_DIR", scratch.path().join("work"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("shiplog listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        let admin = line
            .trim()
            .strip_prefix("bootstrap admin token (shown once, store it now): ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_owned();
        // Whatever else it prints must not fill the pipe and block it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Served { child, url, admin, http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    /// A GraphQL request as `token`; its `data`, or a panic with the errors.
    async fn graphql(&self, token: &str, query: &str, variables: Value) -> Value {
        let body: Value = self
            .http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// The example application and its staging environment, created as an admin
    /// would; with `setup`, once its first setup has succeeded.
    async fn seed(&self, repo: &ExampleRepo, marks: &Path, setup: bool) -> String {
        let data = self
            .graphql(
                &self.admin,
                "mutation($n: String!, $r: String!) { applicationCreate(input: { name: $n, repository: $r }) { application { id } userErrors { message } } }",
                json!({ "n": "hello", "r": repo.dir.to_str().unwrap() }),
            )
            .await;
        let app = data["applicationCreate"]["application"]["id"].as_str().unwrap().to_owned();
        let data = self
            .graphql(
                &self.admin,
                "mutation($a: ID!, $t: String!) { applicationTemplateUpdate(input: { applicationId: $a, template: $t }) { userErrors { message } } }",
                json!({ "a": app, "t": repo.template() }),
            )
            .await;
        assert_eq!(data["applicationTemplateUpdate"]["userErrors"], json!([]));
        let variables = format!("MARKS: \"{}\"\n", marks.display());
        let data = self
            .graphql(
                &self.admin,
                "mutation($a: ID!, $v: String!) { environmentVariablesUpdate(input: { applicationId: $a, variables: $v }) { userErrors { message } } }",
                json!({ "a": app, "v": variables }),
            )
            .await;
        assert_eq!(data["environmentVariablesUpdate"]["userErrors"], json!([]));
        let data = self
            .graphql(
                &self.admin,
                "mutation($a: ID!, $s: Boolean!) { environmentCreate(input: { applicationId: $a, name: \"staging\", kind: STAGING, branch: \"main\", setup: $s }) { environment { id } userErrors { message } } }",
                json!({ "a": app, "s": setup }),
            )
            .await;
        assert_eq!(data["environmentCreate"]["userErrors"], json!([]));
        if setup {
            eventually("the first setup to succeed", WAIT, || async {
                let data = self.graphql(&self.admin, STATUS, json!({})).await;
                let status = data["environment"]["status"].as_str().unwrap().to_owned();
                assert_ne!(status, "FAILED", "{data}");
                (status == "READY").then_some(())
            })
            .await;
        }
        app
    }
}

impl Served {
    /// A run's status as the server folds it from its events.
    async fn run_status(&self, id: &str) -> String {
        let data = self
            .graphql(&self.admin, "query($id: ID!) { node(id: $id) { ... on Run { status } } }", json!({ "id": id }))
            .await;
        data["node"]["status"].as_str().unwrap().to_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

const STATUS: &str = r#"{ environment(application: "hello", name: "staging") { status lastRun { id status } } }"#;

/// chromedriver and the headless Chromium session it drives; both end when dropped.
struct Browser {
    driver: Child,
    client: Client,
    name: &'static str,
}

impl Browser {
    async fn start(scratch: &Scratch, name: &'static str) -> Browser {
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) is installed");
        let profile = scratch.path().join("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
            }
        });
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = eventually("chromedriver to start a session", Duration::from_secs(30), || async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.as_object().unwrap().clone())
                .connect(&webdriver)
                .await
                .ok()
        })
        .await;
        Browser { driver, client, name }
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns something other than null or false.
    /// On a timeout the failure shows the page's text and the log it holds.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let value = self.js(script).await;
            if !value.is_null() && value != json!(false) {
                return value;
            }
            if std::time::Instant::now() > deadline {
                let page = self
                    .js("return [document.body.innerText, window.shiplogLog && window.shiplogLog.lines.map((l) => [l.n, l.spans.map((s) => s.text).join('')])];")
                    .await;
                panic!("timed out after {WAIT:?} waiting for {what}; the page: {page:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot of the page as `target/screenshots/<test>-<page>.png`,
    /// after checking the page shows something and is not an error page.
    async fn screenshot(&self, page: &str) {
        let shown = self
            .until(
                &format!("the {page} page to show something"),
                "const m = document.querySelector('main'); return m && m.innerText.trim().length > 0 && !m.querySelector('[aria-busy]');",
            )
            .await;
        assert_eq!(shown, json!(true));
        let error = self.js("const e = document.querySelector('.error-page'); return e && e.innerText;").await;
        assert_eq!(error, Value::Null, "the {page} page is an error page");
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}-{page}.png", self.name)), png).unwrap();
    }

    async fn sign_in(&self, url: &str, token: &str) {
        self.client.goto(url).await.unwrap();
        let field = self.client.wait().at_most(WAIT).for_element(Locator::Css("#token")).await.unwrap();
        self.screenshot("sign-in").await;
        field.send_keys(token).await.unwrap();
        self.client.find(Locator::Css("#sign-in button[type=submit]")).await.unwrap().click().await.unwrap();
        self.client.wait().at_most(WAIT).for_element(Locator::Css("#viewer-role")).await.unwrap();
    }

    /// Clicks the element `css` finds. Live pages redraw as events arrive, so an
    /// element found a moment ago may have been replaced: then it is found again.
    async fn click(&self, css: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let element = self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap();
            match element.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                        && std::time::Instant::now() < deadline => {}
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    /// The log lines the page holds, as (number, text shown).
    async fn log(&self) -> Vec<(u64, String)> {
        let lines =
            self.js("return window.shiplogLog.lines.map((l) => [l.n, l.spans.map((s) => s.text).join('')]);").await;
        serde_json::from_value(lines).unwrap()
    }

    /// The ID of the run the page shows (its path is `/runs/ID`).
    async fn run_id(&self) -> String {
        let path = self.js("return decodeURIComponent(location.pathname.slice('/runs/'.length));").await;
        path.as_str().unwrap().to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

/// Waits until the page shows a log line with exactly `text`.
async fn line_shown(browser: &Browser, text: &str) {
    let script = format!(
        "return [...document.querySelectorAll('#log .line .tx')].some((l) => l.textContent === {});",
        json!(text)
    );
    browser.until(&format!("the log line {text:?} on screen"), &script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_deploys_follows_the_log_live_and_tears_down_from_the_console() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console");
    let repo = ExampleRepo::create(&scratch);
    std::fs::write(repo.dir.join("release.sh"), RELEASE).unwrap();
    git(&repo.dir, &["commit", "--quiet", "-am", "a release command the test holds"]);
    let marks = scratch.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let served = Served::start(&db, &scratch);
    served.seed(&repo, &marks, true).await;
    let browser = Browser::start(&scratch, "deployer").await;

    // Sign in; the list shows the environment with its status.
    browser.sign_in(&served.url, &served.admin).await;
    let row = browser
        .until("hello/staging listed as ready", "const r = document.querySelector('tr[data-environment=\"hello/staging\"] .status'); return r && r.innerText.trim();")
        .await;
    assert_eq!(row, json!("ready"));
    assert_eq!(browser.js("return document.querySelector('#viewer-role').innerText").await, json!("admin"));
    browser.screenshot("environments").await;

    // The environment's page, then a deploy with its confirmation.
    browser.click("tr[data-environment=\"hello/staging\"] a").await;
    browser
        .until("the environment page", "return document.querySelector('#env-status')?.innerText.trim() === 'ready';")
        .await;
    browser.until("the setup among its runs", "return document.querySelectorAll('#runs tr.run').length === 1;").await;
    browser.screenshot("environment").await;
    std::fs::write(marks.join("hold"), "").unwrap();
    browser.click("#deploy").await;
    browser.click("#confirm-ok").await;

    // The run page follows the log while the run runs.
    line_shown(&browser, "waiting for the test").await;
    browser
        .until("the run shown running", "return document.querySelector('#run-status')?.innerText.trim() === 'running';")
        .await;
    // ANSI colours and bold arrive as styled text, and `\r` redraws in place.
    let styled = browser
        .js("const s = [...document.querySelectorAll('#log .line .tx span')].find((e) => e.textContent === 'migrations ok');
             if (!s) return null; const c = getComputedStyle(s); return [s.className, c.color, c.fontWeight];")
        .await;
    assert_eq!(styled, json!(["fg2 b", "rgb(13, 188, 121)", "700"]));
    line_shown(&browser, "progress 100%").await;

    // A line written after the page opened appears while the run still runs.
    std::fs::write(marks.join("go1"), "").unwrap();
    line_shown(&browser, "after the page opened").await;
    // The run cannot end before the test writes `go3`; the server says so too.
    assert_eq!(served.run_status(&browser.run_id().await).await, "RUNNING");
    browser.screenshot("run").await;

    // A dropped connection resumes from the last cursor.
    browser.js("window.shiplogConsole.api.dropConnection();").await;
    std::fs::write(marks.join("go2"), "").unwrap();
    line_shown(&browser, "after the connection dropped").await;
    assert_eq!(served.run_status(&browser.run_id().await).await, "RUNNING");

    // A reload mid-run shows the log again, each line once, and follows it on.
    browser.client.refresh().await.unwrap();
    line_shown(&browser, "after the connection dropped").await;
    std::fs::write(marks.join("go3"), "").unwrap();
    line_shown(&browser, "release done").await;
    browser
        .until("the run to succeed", "return document.querySelector('#run-status')?.innerText.trim() === 'succeeded';")
        .await;
    let log = browser.log().await;
    let numbers: Vec<u64> = log.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (1..=log.len() as u64).collect::<Vec<_>>(), "{log:?}");
    for text in ["waiting for the test", "after the page opened", "after the connection dropped", "release done"] {
        assert_eq!(log.iter().filter(|(_, t)| t == text).count(), 1, "{text:?} in {log:?}");
    }
    let run = served.graphql(&served.admin, STATUS, json!({})).await;
    let id = run["environment"]["lastRun"]["id"].as_str().unwrap();
    let logs = served
        .graphql(
            &served.admin,
            "query($id: ID!) { node(id: $id) { ... on Run { logs(first: 100) { nodes { number } } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(logs["node"]["logs"]["nodes"].as_array().unwrap().len(), log.len());

    // A line link scrolls to its line and marks it.
    browser.click("#log .line[data-n='2'] a.ln").await;
    browser.until("line 2 marked", "return document.querySelector('#log .line.target')?.dataset.n === '2';").await;
    assert!(browser.client.current_url().await.unwrap().as_str().ends_with("#L2"));

    // Teardown from the environment's page.
    browser.click(".crumbs a[href^='/environments/']").await;
    browser.click("#teardown").await;
    browser.click("#confirm-ok").await;
    browser
        .until(
            "the teardown to succeed",
            "return document.querySelector('#run-status')?.innerText.trim() === 'succeeded';",
        )
        .await;
    browser.click(".crumbs a[href^='/environments/']").await;
    browser
        .until(
            "the environment torn down",
            "return document.querySelector('#env-status')?.innerText.trim() === 'torn down';",
        )
        .await;
    let deploy = browser.client.find(Locator::Css("#deploy")).await.unwrap();
    assert!(!deploy.is_enabled().await.unwrap());
    browser.screenshot("torn-down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_who_it_is_and_deploy_disabled_with_the_reason() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console-viewer");
    let repo = ExampleRepo::create(&scratch);
    let served = Served::start(&db, &scratch);
    served.seed(&repo, scratch.path(), false).await;
    let created = served
        .graphql(
            &served.admin,
            "mutation { apiTokenCreate(input: { name: \"vera\", role: VIEWER }) { token } }",
            json!({}),
        )
        .await;
    let token = created["apiTokenCreate"]["token"].as_str().unwrap().to_owned();
    let browser = Browser::start(&scratch, "viewer").await;

    // A wrong token is refused beside the field, with the server's reason.
    browser.client.goto(&served.url).await.unwrap();
    browser
        .client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-a-token")
        .await
        .unwrap();
    browser.click("#sign-in button[type=submit]").await;
    let refused =
        browser.until("the refusal", "return document.querySelector('#token-error')?.innerText.trim() || null;").await;
    assert_eq!(refused, json!("bad credentials: unknown or revoked token"));

    browser.sign_in(&served.url, &token).await;
    assert_eq!(browser.js("return document.querySelector('#viewer-name').innerText").await, json!("vera"));
    assert_eq!(browser.js("return document.querySelector('#viewer-role').innerText").await, json!("viewer"));
    browser.click("tr[data-environment=\"hello/staging\"] a").await;
    let deploy = browser.client.wait().at_most(WAIT).for_element(Locator::Css("#deploy")).await.unwrap();
    assert!(!deploy.is_enabled().await.unwrap());
    assert_eq!(
        deploy.attr("title").await.unwrap().as_deref(),
        Some("your role (viewer) may not deploy, set up, tear down, retry or cancel")
    );
    for other in ["#setup", "#teardown"] {
        assert!(!browser.client.find(Locator::Css(other)).await.unwrap().is_enabled().await.unwrap(), "{other}");
    }
    // The token lasts for the browser session: a reload keeps it.
    browser.client.refresh().await.unwrap();
    browser.client.wait().at_most(WAIT).for_element(Locator::Css("#deploy")).await.unwrap();
    assert_eq!(browser.js("return document.querySelector('#viewer-role').innerText").await, json!("viewer"));
    browser.screenshot("environment").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_module_draws_lines_as_a_terminal_does() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console-terminal");
    let served = Served::start(&db, &scratch);
    let browser = Browser::start(&scratch, "terminal").await;
    browser.client.goto(&served.url).await.unwrap();
    let script = r#"
        const done = arguments[arguments.length - 1];
        import("/console/terminal.js").then((t) => {
          const draw = (text, style) => t.renderLine(text, style).spans.map((s) => [s.text, t.styleOf(s.style).cls, t.styleOf(s.style).css]);
          const red = t.renderLine("\x1b[31mred");
          done({
            sgr: draw("\x1b[1;31merror:\x1b[0m plain \x1b[38;5;196mx\x1b[38;2;1;2;3my\x1b[7mz"),
            carried: draw("still red\x1b[39m default", red.style),
            progress: draw("10%\r50%\r100%"),
            overwrite: draw("abcdef\rXY"),
            erase: draw("abcdef\rXY\x1b[K"),
            controls: draw("\x1b]0;title\x07a\x1b[2Ab\tc\x07"),
          });
        });"#;
    let result = browser.client.execute_async(script, vec![]).await.unwrap();
    assert_eq!(
        result,
        json!({
            "sgr": [["error:", "fg1 b", ""], [" plain ", "", ""], ["x", "", "color:rgb(255,0,0);"], ["y", "", "color:rgb(1,2,3);"], ["z", "fg-default-bg", "background-color:rgb(1,2,3);"]],
            "carried": [["still red", "fg1", ""], [" default", "", ""]],
            "progress": [["100%", "", ""]],
            "overwrite": [["XYcdef", "", ""]],
            "erase": [["XY", "", ""]],
            "controls": [["ab      c", "", ""]],
        })
    );
}
