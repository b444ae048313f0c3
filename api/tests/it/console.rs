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

/// Waits until the run page shows the run's status as `status`.
async fn run_shown(browser: &Browser, status: &str) {
    let script = format!("return document.querySelector('#run-status')?.innerText.trim() === {};", json!(status));
    browser.until(&format!("the run shown {status}"), &script).await;
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
    run_shown(&browser, "running").await;
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
    run_shown(&browser, "succeeded").await;
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
    run_shown(&browser, "succeeded").await;
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
    // Read in one script: the page redraws as the environment's events arrive.
    browser.client.wait().at_most(WAIT).for_element(Locator::Css("#deploy")).await.unwrap();
    let buttons = browser
        .js("return ['#deploy', '#setup', '#teardown'].map((b) => [document.querySelector(b).disabled, document.querySelector(b).title]);")
        .await;
    let reason = "your role (viewer) may not deploy, set up, tear down, retry or cancel";
    assert_eq!(buttons, json!([[true, reason], [true, reason], [true, reason]]));
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

/// Types `text` into the field `css` finds, replacing what it held.
async fn fill(browser: &Browser, css: &str, text: &str) {
    let field = browser.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// The trimmed text of the element `css` finds, once it has some.
async fn text_of(browser: &Browser, what: &str, css: &str) -> serde_json::Value {
    let script = format!("return document.querySelector({})?.innerText.trim() || null;", json!(css));
    browser.until(what, &script).await
}

/// Moves the history's time-travel slider to event `index`, as a drag would.
async fn slide_to(browser: &Browser, index: usize) {
    let script = format!(
        "const s = document.querySelector('#time-travel'); s.value = {index}; s.dispatchEvent(new Event('input')); return true;"
    );
    browser.js(&script).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_page_travels_its_history_shows_drift_and_refusals_beside_their_fields() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console-environment");
    let repo = ExampleRepo::create(&scratch);
    let served = Served::observing_drift(Path::new(env!("CARGO_BIN_EXE_shiplog")), &db, &scratch, "1s");
    served.seed(&repo, "", true).await;
    served.ready().await;
    let browser = Browser::start(&scratch, "environment").await;
    browser.sign_in(&served.url, &served.admin).await;
    browser.click("tr[data-environment=\"hello/staging\"] a").await;
    browser
        .until("the environment page", "return document.querySelector('#env-status')?.innerText.trim() === 'ready';")
        .await;

    // The slider at the first event shows the environment as it was then: just
    // created, nothing deployed; the page's present stays as it is.
    let history = served
        .graphql(
            &served.admin,
            r#"{ environment(application: "hello", name: "staging") { commit events(first: 100) { nodes { type } } } }"#,
            json!({}),
        )
        .await;
    let types: Vec<String> = serde_json::from_value(history["environment"]["events"]["nodes"].clone())
        .map(|nodes: Vec<serde_json::Value>| nodes.iter().map(|n| n["type"].as_str().unwrap().to_owned()).collect())
        .unwrap();
    let commit = history["environment"]["commit"].as_str().unwrap();
    browser
        .until(
            "every event on the slider",
            &format!("return document.querySelector('#time-travel')?.max === '{}';", types.len() - 1),
        )
        .await;
    slide_to(&browser, 0).await;
    browser
        .until(
            "the state after the first event",
            "return document.querySelector('#state-at')?.innerText.includes('pending');",
        )
        .await;
    let then = browser
        .js("return [document.querySelector('.events li.current code').innerText,
                     document.querySelector('#state-at .badge').innerText,
                     document.querySelector('#state-at').innerText.includes('commit —'),
                     document.querySelector('#env-status').innerText.trim()];")
        .await;
    assert_eq!(then, json!([types[0], "pending", true, "ready"]));
    browser.screenshot("time-travel-start").await;
    slide_to(&browser, types.len() - 1).await;
    browser
        .until(
            "the state after the last event",
            "return document.querySelector('#state-at .badge')?.innerText === 'ready';",
        )
        .await;
    let now = browser.js("return document.querySelector('#state-at code[title]')?.title;").await;
    assert_eq!(now, json!(commit));

    // A commit the repository lacks is refused beside the commit field.
    let missing = "1111111111111111111111111111111111111111";
    browser.click("#deploy").await;
    fill(&browser, "#field-commit", missing).await;
    browser.click("#confirm-ok").await;
    let refused = text_of(&browser, "the refusal beside the commit", "#error-commit").await;
    assert_eq!(refused, json!(format!("the repository has no commit {missing}: push it first, or deploy another")));
    assert_eq!(browser.js("return document.querySelector('#error-form').innerText;").await, json!(""));
    browser.screenshot("deploy-refused").await;
    browser.click("#confirm-cancel").await;
    // A setup needs a reason: its absence is refused beside the reason field.
    browser.click("#setup").await;
    browser.click("#confirm-ok").await;
    let refused = text_of(&browser, "the refusal beside the reason", "#error-reason").await;
    assert_eq!(refused, json!("say why a setup is needed"));
    browser.click("#confirm-cancel").await;

    // The web service dies: the page shows the drift with its reason, and
    // "Run setup" asks for a setup with that reason.
    let state = scratch.path().join("process/environments/hello/staging/services/web.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let group = nix::unistd::Pid::from_raw(state["process"]["pgid"].as_i64().unwrap() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    let reasons = text_of(&browser, "the drift's reasons", "#drift ul").await;
    assert_eq!(reasons, json!("service web is not running"));
    browser.screenshot("drift").await;
    browser.click("#drift-setup").await;
    let preset = browser.js("return document.querySelector('#field-reason').value;").await;
    assert_eq!(preset, json!("drift: service web is not running"));
    browser.click("#confirm-ok").await;
    browser.until("the setup's page", "return location.pathname.startsWith('/runs/');").await;
    let setup = served
        .graphql(
            &served.admin,
            "query($id: ID!) { node(id: $id) { ... on Run { kind reason } } }",
            json!({ "id": browser.run_id().await }),
        )
        .await;
    assert_eq!(setup["node"], json!({ "kind": "SETUP", "reason": "drift: service web is not running" }));
    run_shown(&browser, "succeeded").await;
    browser.click(".crumbs a[href^='/environments/']").await;
    browser
        .until(
            "the drift repaired",
            "return !document.querySelector('#drift') && document.querySelector('.facts')?.innerText.includes('in sync');",
        )
        .await;
    browser.screenshot("repaired").await;
}

/// A release command that prints 200 numbered lines, then fails while
/// `$MARKS/fail` exists and waits while `$MARKS/hold` exists.
const NUMBERED: &str = r#"#!/bin/sh
i=1
while [ $i -le 200 ]; do echo "line $i of the release"; i=$((i + 1)); done
if [ -e "$MARKS/fail" ]; then echo "failing on purpose"; exit 3; fi
if [ -e "$MARKS/hold" ]; then
  echo "holding"
  while [ -e "$MARKS/hold" ]; do sleep 0.05; done
fi
echo "release done"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_page_searches_links_lines_retries_a_failed_run_and_cancels_a_running_one() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console-run");
    let repo = ExampleRepo::create(&scratch);
    repo.commit_release_script(NUMBERED);
    let marks = scratch.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let served = Served::start(Path::new(env!("CARGO_BIN_EXE_shiplog")), &db, &scratch);
    let setup = served.seed(&repo, &format!("MARKS: \"{}\"\n", marks.display()), true).await.unwrap();
    served.ready().await;
    let browser = Browser::start(&scratch, "run").await;
    browser.sign_in(&served.url, &served.admin).await;

    // A line link opens the log scrolled to that line, marked.
    browser.client.goto(&format!("{}/runs/{}#L120", served.url, setup)).await.unwrap();
    browser.until("the whole log", "return document.querySelector('#log')?.dataset.complete === 'true';").await;
    let target = browser
        .until(
            "line 120 marked and on screen",
            "const t = document.querySelector('#log .line.target'); if (!t) return null;
             const l = document.querySelector('#log').getBoundingClientRect(), r = t.getBoundingClientRect();
             return r.top >= l.top && r.bottom <= l.bottom && [t.dataset.n, t.querySelector('.tx').textContent];",
        )
        .await;
    let log = browser.log().await;
    assert_eq!(target, json!(["120", log[119].1]));
    assert_eq!(browser.js("return document.querySelector('#log').dataset.follow;").await, json!("false"));
    browser.screenshot("line-link").await;

    // Search finds the line, scrolls to it and marks the match.
    fill(&browser, "#log-search", "LINE 150 of").await;
    assert_eq!(text_of(&browser, "the match count", "#log-matches").await, json!("1 of 1"));
    let found = browser
        .until(
            "the match on screen",
            "const m = document.querySelector('#log .line.current-match'); if (!m) return null;
             const l = document.querySelector('#log').getBoundingClientRect(), r = m.getBoundingClientRect();
             return r.top >= l.top && r.bottom <= l.bottom && [m.querySelector('.tx').textContent, m.querySelector('mark').textContent];",
        )
        .await;
    assert_eq!(found, json!(["line 150 of the release", "line 150 of"]));
    browser.screenshot("search").await;

    // A failed deploy: Cancel is disabled with the reason; Retry, confirmed, runs
    // it again as a second attempt, which succeeds.
    std::fs::write(marks.join("fail"), "").unwrap();
    browser.client.goto(&format!("{}/environments/hello/staging", served.url)).await.unwrap();
    browser.click("#deploy").await;
    browser.click("#confirm-ok").await;
    line_shown(&browser, "failing on purpose").await;
    run_shown(&browser, "failed").await;
    let cancel = browser.js("const b = document.querySelector('#cancel'); return [b.disabled, b.title];").await;
    assert_eq!(cancel, json!([true, "the run has ended"]));
    browser.screenshot("failed").await;
    std::fs::remove_file(marks.join("fail")).unwrap();
    browser.click("#retry").await;
    assert_eq!(
        text_of(&browser, "the confirmation", "#confirm h2").await,
        json!("Retry this run from its failed stage?")
    );
    browser.click("#confirm-ok").await;
    browser
        .until("the second attempt", "return document.querySelector('#run-attempt')?.innerText === 'attempt 2';")
        .await;
    run_shown(&browser, "succeeded").await;
    let retried = browser.run_id().await;
    assert_eq!(served.run_status(&retried).await, "SUCCEEDED");
    browser.screenshot("retried").await;

    // A running deploy, cancelled from its page with a reason.
    std::fs::write(marks.join("hold"), "").unwrap();
    browser.click(".crumbs a[href^='/environments/']").await;
    browser.click("#deploy").await;
    browser.click("#confirm-ok").await;
    line_shown(&browser, "holding").await;
    run_shown(&browser, "running").await;
    browser.click("#cancel").await;
    fill(&browser, "#field-reason", "wrong branch").await;
    browser.click("#confirm-ok").await;
    run_shown(&browser, "cancelled").await;
    assert_eq!(served.run_status(&browser.run_id().await).await, "CANCELLED");
    let retry = browser.js("const b = document.querySelector('#retry'); return [b.disabled, b.title];").await;
    assert_eq!(retry, json!([true, "only a failed run can be retried"]));
    browser.screenshot("cancelled").await;
    std::fs::remove_file(marks.join("hold")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_filters_updates_live_and_pages_through_every_environment() {
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console-list");
    let repo = ExampleRepo::create(&scratch);
    let served = Served::start(Path::new(env!("CARGO_BIN_EXE_shiplog")), &db, &scratch);
    served.seed(&repo, "", false).await;
    let app = served.graphql(&served.admin, r#"{ application(name: "hello") { id } }"#, json!({})).await;
    let app = app["application"]["id"].as_str().unwrap();
    for n in 1..=104 {
        let input = json!({ "applicationId": app, "name": format!("pr-{n:03}"), "kind": "PREVIEW", "branch": "main", "setup": false });
        let created = served
            .graphql(
                &served.admin,
                "mutation($input: EnvironmentCreateInput!) { environmentCreate(input: $input) { userErrors { message } } }",
                json!({ "input": input }),
            )
            .await;
        assert_eq!(created["environmentCreate"]["userErrors"], json!([]));
    }
    let browser = Browser::start(&scratch, "list").await;
    browser.sign_in(&served.url, &served.admin).await;
    let rows = "return [...document.querySelectorAll('tr.environment')].map((r) => r.dataset.environment);";

    // The first page holds 100; the next one the other 5; and back.
    browser
        .until(
            "every environment listed",
            "return document.querySelector('#environments-count')?.innerText === '100 of 105 environment(s)';",
        )
        .await;
    let first: Vec<String> = serde_json::from_value(browser.js(rows).await).unwrap();
    assert_eq!(first, (1..=100).map(|n| format!("hello/pr-{n:03}")).collect::<Vec<_>>());
    assert_eq!(browser.js("return document.querySelector('#page-previous');").await, serde_json::Value::Null);
    browser.click("#page-next").await;
    browser
        .until(
            "the second page",
            "return document.querySelector('#environments-count')?.innerText === '5 of 105 environment(s)';",
        )
        .await;
    let second: Vec<String> = serde_json::from_value(browser.js(rows).await).unwrap();
    assert_eq!(second, ["hello/pr-101", "hello/pr-102", "hello/pr-103", "hello/pr-104", "hello/staging"]);
    assert_eq!(browser.js("return document.querySelector('#page-next');").await, serde_json::Value::Null);
    browser.screenshot("second-page").await;
    browser.click("#page-previous").await;
    browser
        .until(
            "the first page again",
            "return document.querySelector('#environments-count')?.innerText === '100 of 105 environment(s)';",
        )
        .await;
    assert_eq!(serde_json::from_value::<Vec<String>>(browser.js(rows).await).unwrap(), first);

    // A filter narrows the list and is kept in the address.
    let kind = browser.client.find(Locator::Css("#filters select[name=kind]")).await.unwrap();
    kind.select_by_value("STAGING").await.unwrap();
    browser
        .until(
            "only staging",
            "return document.querySelector('#environments-count')?.innerText === '1 of 1 environment(s)';",
        )
        .await;
    assert_eq!(browser.js(rows).await, json!(["hello/staging"]));
    assert_eq!(browser.js("return location.search;").await, json!("?kind=STAGING"));
    let status = browser.client.find(Locator::Css("#filters select[name=status]")).await.unwrap();
    status.select_by_value("READY").await.unwrap();
    browser.until("nothing ready yet", "return document.querySelector('#environments .empty')?.innerText === 'No environments match these filters.';").await;
    assert_eq!(browser.js("return location.search;").await, json!("?kind=STAGING&status=READY"));
    browser.screenshot("filtered-empty").await;
    let status = browser.client.find(Locator::Css("#filters select[name=status]")).await.unwrap();
    status.select_by_value("").await.unwrap();
    browser.until("staging pending", "return document.querySelector('tr[data-environment=\"hello/staging\"] .status')?.innerText.trim() === 'pending';").await;

    // The page updates as the environment changes, without a reload.
    browser.js("window.shiplogSamePage = true;").await;
    let env = served
        .graphql(&served.admin, r#"{ environment(application: "hello", name: "staging") { id } }"#, json!({}))
        .await;
    let setup = served
        .graphql(
            &served.admin,
            "mutation($id: ID!) { environmentSetup(input: { environmentId: $id, reason: \"first\" }) { userErrors { message } } }",
            json!({ "id": env["environment"]["id"] }),
        )
        .await;
    assert_eq!(setup["environmentSetup"]["userErrors"], json!([]));
    browser.until("staging shown ready", "return document.querySelector('tr[data-environment=\"hello/staging\"] .status')?.innerText.trim() === 'ready';").await;
    assert_eq!(browser.js("return window.shiplogSamePage;").await, json!(true));
    browser.screenshot("filtered-live").await;
}
