//! The browser tests' harness, shared with the console benchmark
//! (`api/examples/console_bench.rs`): a real `shiplog serve` on a fresh database
//! and headless Chromium (Debian's `chromium` and `chromium-driver`) over WebDriver.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use shiplog_tests::example::{ExampleRepo, Scratch};
use shiplog_tests::{Spawned, TestDb, eventually};

pub const WAIT: Duration = Duration::from_secs(120);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `shiplog serve` on a fresh database, stopped with SIGTERM when dropped.
pub struct Served {
    _child: Spawned,
    pub url: String,
    pub admin: String,
    http: reqwest::Client,
}

impl Served {
    /// `binary` is the `shiplog` executable.
    pub fn start(binary: &Path, db: &TestDb, scratch: &Scratch) -> Served {
        let mut child = Spawned::start(
            Command::new(binary)
                .args(["serve", "--listen", "127.0.0.1:0", "--drift-interval", "1h"])
                .env("DATABASE_URL", db.url())
                .env("SHIPLOG_PROCESS_ROOT", scratch.path().join("process"))
                .env("SHIPLOG_WORK_DIR", scratch.path().join("work"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped()),
            "shiplog serve",
        );
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
        Served { _child: child, url, admin, http: shiplog_engine::tls::client_builder().no_proxy().build().unwrap() }
    }

    /// A GraphQL request as `token`; its `data`, or a panic with the errors.
    pub async fn graphql(&self, token: &str, query: &str, variables: Value) -> Value {
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
    /// would; with `setup`, its first setup requested (whose ID it returns).
    pub async fn seed(&self, repo: &ExampleRepo, variables: &str, setup: bool) -> Option<String> {
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
                "mutation($a: ID!, $s: Boolean!) { environmentCreate(input: { applicationId: $a, name: \"staging\", kind: STAGING, branch: \"main\", setup: $s }) { run { id } userErrors { message } } }",
                json!({ "a": app, "s": setup }),
            )
            .await;
        assert_eq!(data["environmentCreate"]["userErrors"], json!([]));
        data["environmentCreate"]["run"]["id"].as_str().map(str::to_owned)
    }

    /// Waits until the environment's first setup has succeeded.
    pub async fn ready(&self) {
        eventually("the first setup to succeed", WAIT, || async {
            let data = self.graphql(&self.admin, STATUS, json!({})).await;
            let status = data["environment"]["status"].as_str().unwrap().to_owned();
            assert_ne!(status, "FAILED", "{data}");
            (status == "READY").then_some(())
        })
        .await;
    }
}

impl Served {
    /// A run's status as the server folds it from its events.
    pub async fn run_status(&self, id: &str) -> String {
        let data = self
            .graphql(&self.admin, "query($id: ID!) { node(id: $id) { ... on Run { status } } }", json!({ "id": id }))
            .await;
        data["node"]["status"].as_str().unwrap().to_owned()
    }
}

pub const STATUS: &str = r#"{ environment(application: "hello", name: "staging") { status lastRun { id status } } }"#;

/// chromedriver and the headless Chromium session it drives; both end when dropped.
pub struct Browser {
    _driver: Spawned,
    pub client: Client,
    name: &'static str,
}

impl Browser {
    pub async fn start(scratch: &Scratch, name: &'static str) -> Browser {
        let port = free_port();
        let driver = Spawned::start(
            Command::new("/usr/bin/chromedriver").arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()),
            "chromedriver (Debian's chromium-driver)",
        );
        let profile = scratch.path().join("chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--enable-precise-memory-info", "--js-flags=--expose-gc", format!("--user-data-dir={}", profile.display())],
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
        Browser { _driver: driver, client, name }
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns something other than null or false.
    /// On a timeout the failure shows the page's text and the log it holds.
    pub async fn until(&self, what: &str, script: &str) -> Value {
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
    pub async fn screenshot(&self, page: &str) {
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

    pub async fn sign_in(&self, url: &str, token: &str) {
        self.client.goto(url).await.unwrap();
        let field = self.client.wait().at_most(WAIT).for_element(Locator::Css("#token")).await.unwrap();
        self.screenshot("sign-in").await;
        field.send_keys(token).await.unwrap();
        self.client.find(Locator::Css("#sign-in button[type=submit]")).await.unwrap().click().await.unwrap();
        self.client.wait().at_most(WAIT).for_element(Locator::Css("#viewer-role")).await.unwrap();
    }

    /// Clicks the element `css` finds. Live pages redraw as events arrive, so an
    /// element found a moment ago may have been replaced: then it is found again.
    pub async fn click(&self, css: &str) {
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
    pub async fn log(&self) -> Vec<(u64, String)> {
        let lines =
            self.js("return window.shiplogLog.lines.map((l) => [l.n, l.spans.map((s) => s.text).join('')]);").await;
        serde_json::from_value(lines).unwrap()
    }

    /// The ID of the run the page shows (its path is `/runs/ID`).
    pub async fn run_id(&self) -> String {
        let path = self.js("return decodeURIComponent(location.pathname.slice('/runs/'.length));").await;
        path.as_str().unwrap().to_owned()
    }
}

pub fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}
