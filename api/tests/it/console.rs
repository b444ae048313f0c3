//! The web console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver against a real `shiplog serve`. Each
//! page visited is saved as a screenshot under `target/screenshots/`, and a blank
//! page or an error page fails the test.

use std::path::Path;

use serde_json::json;
use shiplog_tests::TestDb;
use shiplog_tests::example::{ExampleRepo, Scratch, git};

use fantoccini::Locator;

use crate::browser::{Browser, STATUS, Served, WAIT};

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
    let served = Served::start(Path::new(env!("CARGO_BIN_EXE_shiplog")), &db, &scratch);
    served.seed(&repo, &format!("MARKS: \"{}\"\n", marks.display()), true).await;
    served.ready().await;
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
    assert_eq!(browser.js("return document.querySelector('#deploy').disabled;").await, json!(true));
    browser.screenshot("torn-down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_who_it_is_and_deploy_disabled_with_the_reason() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console-viewer");
    let repo = ExampleRepo::create(&scratch);
    let served = Served::start(Path::new(env!("CARGO_BIN_EXE_shiplog")), &db, &scratch);
    served.seed(&repo, "", false).await;
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
    // Read in one script: the page redraws as events arrive, so an element found
    // by one WebDriver call may be gone by the next.
    let buttons = browser
        .until(
            "the environment's buttons",
            "const b = (id) => document.querySelector(id); if (!b('#deploy')) return null;
             return [b('#deploy').disabled, b('#deploy').title, b('#setup').disabled, b('#teardown').disabled];",
        )
        .await;
    assert_eq!(
        buttons,
        json!([true, "your role (viewer) may not deploy, set up, tear down, retry or cancel", true, true])
    );
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
    let served = Served::start(Path::new(env!("CARGO_BIN_EXE_shiplog")), &db, &scratch);
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
