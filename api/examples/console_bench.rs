//! The console's log benchmark (not a test): a run writes `BENCH_LINES` (200,000 by
//! default) coloured lines at full speed; in headless Chromium it measures the
//! console following the run live (time until the last line is on screen, how far
//! behind the run's end, lines per second), the console replaying the finished
//! run after a reload (time, JavaScript heap, DOM nodes, a jump to the middle),
//! and, as the raw baseline, the same lines from the same subscription appended to
//! a plain `<pre>` in the same browser.
//!
//! `cargo build -p shiplog && DATABASE_URL=postgres://… cargo run -p shiplog --example console_bench`

#[path = "../tests/it/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shiplog_tests::TestDb;
use shiplog_tests::example::{ExampleRepo, Scratch, git};

use browser::{Browser, Served};

/// `$BENCH_LINES` lines, each with a colour escape, as fast as awk writes them.
const RELEASE: &str = r#"#!/bin/sh
awk -v n="$BENCH_LINES" 'BEGIN { for (i = 1; i <= n; i++) printf "\033[32mline %d\033[0m of the benchmark, a few more words to make it a log line\n", i }'
"#;

/// Waits in the page until the view holds `n` lines and the last one is on screen.
/// True once the run's log has ended and its last line is on screen.
const LAST_SHOWN: &str = "const v = window.shiplogLog; const log = document.querySelector('#log');
    return !!v && !!log && log.dataset.complete === 'true' && v.lines.length > 0
      && !!document.querySelector(`#log .line[data-n='${v.lastNumber}']`);";

const MEASURE: &str = "window.gc && window.gc(); return [performance.memory ? performance.memory.usedJSHeapSize : null,
    document.getElementsByTagName('*').length];";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let lines: u64 = std::env::var("BENCH_LINES").ok().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-console-bench");
    let repo = ExampleRepo::create(&scratch);
    std::fs::write(repo.dir.join("release.sh"), RELEASE).unwrap();
    git(&repo.dir, &["commit", "--quiet", "-am", "a release command writing the benchmark's lines"]);
    // The binary beside this example's directory (`cargo build -p shiplog` first).
    let binary = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("shiplog");
    let served = Served::start(&binary, &db, &scratch);
    let browser = Browser::start(&scratch, "bench").await;
    let timeouts = fantoccini::wd::TimeoutConfiguration::new(
        Some(Duration::from_secs(600)),
        Some(Duration::from_secs(60)),
        Some(Duration::ZERO),
    );
    browser.client.update_timeouts(timeouts).await.unwrap();
    browser.sign_in(&served.url, &served.admin).await;

    eprintln!("signed in");
    // Live: the page is open on the run before its first line.
    let run = served.seed(&repo, &format!("BENCH_LINES: \"{lines}\"\n"), true).await.unwrap();
    let started = Instant::now();
    browser.client.goto(&format!("{}/runs/{}", served.url, urlencode(&run))).await.unwrap();
    wait(&browser).await;
    let live = started.elapsed();
    let ended = run_end(&served, &run).await;
    let behind = (chrono::Utc::now() - ended).to_std().unwrap_or_default();
    let total =
        browser.client.execute("return window.shiplogLog.lines.length;", vec![]).await.unwrap().as_u64().unwrap();
    assert!(total > lines, "{total} lines shown, {lines} written");

    eprintln!("live: {live:.2?}, {total} lines");
    // Replay: the finished run's page after a reload.
    let started = Instant::now();
    browser.client.refresh().await.unwrap();
    wait(&browser).await;
    let replay = started.elapsed();
    let [heap, nodes] = measured(&browser).await;
    let jump = browser
        .client
        .execute_async(
            "const done = arguments[0]; const log = document.querySelector('#log'); const t = performance.now();
             log.scrollTop = log.scrollHeight / 2; requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));",
            vec![],
        )
        .await
        .unwrap();

    eprintln!("replay: {replay:.2?}");
    // Baseline: the same subscription into a plain <pre>, in the same browser.
    let started = Instant::now();
    let pre = browser
        .client
        .execute_async(
            "const [id, token, done] = arguments; document.body.innerHTML = '<pre id=\"pre\"></pre>';
             const pre = document.getElementById('pre'); let count = 0;
             const ws = new WebSocket(`ws://${location.host}/graphql/ws`, 'graphql-transport-ws');
             ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: { token } }));
             ws.onclose = (e) => done(`closed ${e.code} ${e.reason}`);
             ws.onmessage = (e) => { const m = JSON.parse(e.data);
               if (m.type === 'connection_ack') ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: {
                 query: 'subscription($id: ID!) { runLogChunks(runId: $id) { number text } }', variables: { id } } }));
               else if (m.type === 'error' || (m.type === 'next' && m.payload.errors)) done(JSON.stringify(m.payload));
               else if (m.type === 'next') { for (const l of m.payload.data.runLogChunks) pre.append(l.text + '\\n'); count += m.payload.data.runLogChunks.length; }
               else if (m.type === 'complete') { window.scrollTo(0, document.body.scrollHeight); requestAnimationFrame(() => requestAnimationFrame(() => done(count))); } };",
            vec![json!(run), json!(served.admin)],
        )
        .await
        .unwrap();
    let plain = started.elapsed();
    assert_eq!(pre, json!(total), "the <pre> got every line");
    let [pre_heap, pre_nodes] = measured(&browser).await;
    let pre_jump = browser
        .client
        .execute_async(
            "const done = arguments[0]; const t = performance.now(); window.scrollTo(0, document.body.scrollHeight / 2);
             requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));",
            vec![],
        )
        .await
        .unwrap();

    let mib = |v: &Value| v.as_f64().map_or("n/a".to_owned(), |b| format!("{:.1} MiB", b / 1_048_576.0));
    println!("console log benchmark: {total} lines ({lines} written at full speed by the release command)");
    println!("| view | time to the last line on screen | JS heap after | DOM elements | jump to the middle |");
    println!("|---|---|---|---|---|");
    println!(
        "| console, live (page open before the first line) | {live:.2?} ({:.0} lines/s; {behind:.2?} after the run ended) | | | |",
        total as f64 / live.as_secs_f64()
    );
    println!(
        "| console, replay after a reload | {replay:.2?} | {} | {nodes} | {:.1} ms |",
        mib(&heap),
        jump.as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "| plain <pre>, same subscription (baseline) | {plain:.2?} | {} | {pre_nodes} | {pre_jump:.1} ms |",
        mib(&pre_heap)
    );
}

async fn wait(browser: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while browser.client.execute(LAST_SHOWN, vec![]).await.unwrap() != json!(true) {
        assert!(Instant::now() < deadline, "the console never showed the last line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measured(browser: &Browser) -> [Value; 2] {
    let v = browser.client.execute(MEASURE, vec![]).await.unwrap();
    [v[0].clone(), v[1].clone()]
}

async fn run_end(served: &Served, run: &str) -> chrono::DateTime<chrono::Utc> {
    let query = "query($id: ID!) { node(id: $id) { ... on Run { status finishedAt } } }";
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let data = served.graphql(&served.admin, query, json!({ "id": run })).await;
        if let Some(at) = data["node"]["finishedAt"].as_str() {
            assert_eq!(data["node"]["status"], json!("SUCCEEDED"), "{data}");
            return at.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the run never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
