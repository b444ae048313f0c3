//! `bench api`: the GraphQL API as clients see it, through a real `shiplog serve`
//! process on the bench database. See [`super::Command::Api`].

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shiplog_engine::domain::environment::EnvironmentKind;
use shiplog_engine::domain::{CommitId, Name};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::logs::RunLog;
use shiplog_engine::runtime::{LogSink, LogStream};
use shiplog_engine::store::{EventStore, Metadata};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::ApiArgs;
use crate::engine::environment;
use crate::report::{Figure, Pair, Report};
use crate::server::BenchDb;

/// Lines sent one by one, spaced out, to time delivery.
const LATENCY_LINES: usize = 300;
const LATENCY_SPACING: Duration = Duration::from_millis(5);

/// A `shiplog serve` child process on the bench database.
struct ShiplogServer {
    child: tokio::process::Child,
    address: SocketAddr,
    token: String,
    _dir: tempfile::TempDir,
}

impl ShiplogServer {
    async fn start(database_url: &str) -> anyhow::Result<ShiplogServer> {
        let binary = std::env::current_exe()?.with_file_name("shiplog");
        if !binary.exists() {
            bail!("{} is missing: build it first (cargo build --release -p shiplog)", binary.display());
        }
        let dir = tempfile::tempdir()?;
        let mut child = tokio::process::Command::new(&binary)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("SHIPLOG_PROCESS_ROOT", dir.path().join("process"))
            .env("SHIPLOG_WORK_DIR", dir.path().join("work"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let first = lines.next_line().await?.context("shiplog exited")?;
        let address = first.strip_prefix("shiplog listening on http://").context("no address")?.parse()?;
        let second = lines.next_line().await?.context("shiplog exited")?;
        let token = second.rsplit(' ').next().context("no token")?.to_owned();
        Ok(ShiplogServer { child, address, token, _dir: dir })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = self.child.wait().await;
    }
}

/// A `DATABASE_URL` for the bench database, for the child process.
fn database_url(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("postgres");
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        return match query {
            Some(q) => format!("{server}/{database}?{q}"),
            None => format!("{server}/{database}"),
        };
    }
    let socket = options.get_socket().map(|s| s.display().to_string()).unwrap_or_default();
    format!("postgres://{}@localhost/{database}?host={socket}", options.get_username())
}

/// An application, one environment per name in `environments`, and a setup run
/// queued for each but kept away from workers (its queue row is marked done), so
/// its log stays open for as long as the bench writes to it.
async fn runs(db: &BenchDb, environments: &[&str]) -> anyhow::Result<Vec<Uuid>> {
    let lifecycle = Lifecycle::new(EventStore::new(db.runtime.clone()));
    let (meta, app): (Metadata, Name) = (Metadata::default(), "bench".parse()?);
    lifecycle.create_application(&app, "https://git.example.invalid/bench.git", &meta, Utc::now()).await?;
    lifecycle.update_template(&app, "services:\n  web:\n    image: \"img\"\n", &meta, Utc::now()).await?;
    let commit: CommitId = "0123456789abcdef0123456789abcdef01234567".parse()?;
    let mut ids = Vec::new();
    for name in environments {
        let env: Name = name.parse()?;
        let created = environment(&app, &env, EnvironmentKind::Staging, "main");
        lifecycle.create_environment(&created, &meta, Utc::now()).await?;
        let run = lifecycle.request_setup(&app, &env, Some(commit.clone()), "bench", &meta, Utc::now()).await?;
        ids.push(run.run_id);
    }
    sqlx::query("UPDATE run_queue SET state = 'done'").execute(&db.owner).await?;
    Ok(ids)
}

fn run_node_id(run_id: Uuid) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Run:{run_id}"))
}

/// What a subscriber saw: per line, the microseconds from its writing to its arrival.
type Arrivals = mpsc::UnboundedSender<(usize, u64, Instant)>;

/// Opens `count` websockets subscribed to the run's log; each reports every line
/// it receives (subscriber, line number, when) on `arrivals`.
async fn subscribers(
    server: &ShiplogServer,
    run_id: Uuid,
    count: usize,
    arrivals: Arrivals,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let query = "subscription($id: ID!) { runLogs(runId: $id) { number text } }";
    for n in 0..count {
        let mut request = format!("ws://{}/graphql/ws", server.address).into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        let init = json!({ "type": "connection_init", "payload": { "token": server.token } });
        socket.send(Message::text(init.to_string())).await?;
        let start = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": { "id": run_node_id(run_id) } } });
        socket.send(Message::text(start.to_string())).await?;
        let arrivals = arrivals.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                let Message::Text(text) = message else { continue };
                let at = Instant::now();
                let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(number) = message["payload"]["data"]["runLogs"]["number"].as_str() {
                    let _ = arrivals.send((n, number.parse().unwrap_or(0), at));
                }
            }
        }));
    }
    Ok(tasks)
}

/// Waits until every one of `count` subscribers has received line `number`.
async fn all_received(
    arrivals: &mut mpsc::UnboundedReceiver<(usize, u64, Instant)>,
    count: usize,
    number: u64,
    mut each: impl FnMut(u64, Instant),
) -> anyhow::Result<Instant> {
    let mut done = vec![false; count];
    let mut remaining = count;
    let mut last = Instant::now();
    while remaining > 0 {
        let (n, line, at) = tokio::time::timeout(Duration::from_secs(120), arrivals.recv())
            .await
            .context("subscribers stopped receiving")?
            .context("subscribers gone")?;
        each(line, at);
        if line >= number && !done[n] {
            done[n] = true;
            remaining -= 1;
            last = at;
        }
    }
    Ok(last)
}

/// `bench api`; see [`super::Command::Api`].
pub async fn api_benchmark(options: PgConnectOptions, args: &ApiArgs) -> anyhow::Result<Report> {
    let db = BenchDb::open(options.clone(), 20).await?;
    let names: Vec<String> = args.subscribers.iter().map(|n| format!("subs-{n}")).collect();
    let run_ids = runs(&db, &names.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    eprintln!("starting shiplog serve");
    let server = ShiplogServer::start(&database_url(&options)).await?;
    eprintln!("shiplog serve at {}", server.address);
    let mut figures = Vec::new();
    let raw_latency = raw_notify_latencies(&db).await?;
    let raw_rate = raw_insert_rate(&db.owner, args.lines).await?;
    for (count, run_id) in args.subscribers.iter().zip(&run_ids) {
        eprintln!("live logs with {count} subscriber(s)");
        let (latencies, rate) = deliveries(&db.runtime, &server, *run_id, *count, args.lines).await?;
        figures.push(Figure::latency(
            &format!("log line to {count} subscriber(s) vs INSERT+NOTIFY to 1 listener"),
            &latencies,
            &raw_latency,
        ));
        figures.push(Figure::plain(
            format!("{} lines to each of {count} subscriber(s) vs raw INSERT", args.lines),
            "lines/s",
            Pair::new(rate, raw_rate),
        ));
    }
    figures.extend(list_benchmark(&db, &server, args.environments).await?);
    server.stop().await;
    db.close().await;
    let header = vec![
        "bench api: a `shiplog serve` process on the bench database; clients over HTTP and graphql-transport-ws"
            .to_owned(),
        "targets (printed, not asserted): delivery p99 <= 100 ms; >= 20,000 lines/s into one run's subscribers"
            .to_owned(),
    ];
    Ok((header, figures))
}

/// Latencies of spaced-out lines and the rate of a burst, to `count` subscribers.
async fn deliveries(
    pool: &PgPool,
    server: &ShiplogServer,
    run_id: Uuid,
    count: usize,
    burst: usize,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let (sender, mut arrivals) = mpsc::unbounded_channel();
    let sockets = subscribers(server, run_id, count, sender).await?;
    let log = RunLog::open(pool.clone(), run_id, vec![]).await?;
    let job = log.job("bench");
    // Warm-up: every subscriber is live once each has line 1.
    job.line(LogStream::Stdout, "warm-up");
    all_received(&mut arrivals, count, 1, |_, _| {}).await?;

    let mut sent = Vec::with_capacity(LATENCY_LINES);
    let mut latencies = Vec::with_capacity(LATENCY_LINES * count);
    for i in 0..LATENCY_LINES {
        sent.push(Instant::now());
        job.line(LogStream::Stdout, &format!("latency line {i}"));
        tokio::time::sleep(LATENCY_SPACING).await;
    }
    let last = 1 + LATENCY_LINES as u64;
    all_received(&mut arrivals, count, last, |line, at| {
        if (2..=last).contains(&line) {
            latencies.push(at - sent[(line - 2) as usize]);
        }
    })
    .await?;

    let started = Instant::now();
    for i in 0..burst {
        job.line(LogStream::Stdout, &format!("burst line {i} with some text a build would print"));
    }
    let done = all_received(&mut arrivals, count, last + burst as u64, |_, _| {}).await?;
    log.flush().await;
    for socket in sockets {
        socket.abort();
    }
    Ok((latencies, burst as f64 / (done - started).as_secs_f64()))
}

/// The floor of any database-backed live log: a row inserted with a NOTIFY in
/// its transaction, heard by a listener on another connection.
async fn raw_notify_latencies(db: &BenchDb) -> anyhow::Result<Vec<Duration>> {
    sqlx::query("CREATE TABLE raw_log (n bigint PRIMARY KEY, line text NOT NULL)").execute(&db.owner).await?;
    let mut listener = PgListener::connect_with(&db.owner).await?;
    listener.listen("raw_log").await?;
    let mut latencies = Vec::with_capacity(LATENCY_LINES);
    for n in 0..LATENCY_LINES as i64 {
        let sent = Instant::now();
        sqlx::query("WITH stored AS (INSERT INTO raw_log VALUES ($1, $2)) SELECT pg_notify('raw_log', $1::text)")
            .bind(n)
            .bind(format!("latency line {n}"))
            .execute(&db.owner)
            .await?;
        listener.recv().await?;
        latencies.push(sent.elapsed());
        tokio::time::sleep(LATENCY_SPACING).await;
    }
    Ok(latencies)
}

/// Lines/s of plain multi-row INSERTs of the same lines, 500 per statement.
async fn raw_insert_rate(owner: &PgPool, lines: usize) -> anyhow::Result<f64> {
    sqlx::query("CREATE TABLE raw_burst (n bigint PRIMARY KEY, line text NOT NULL)").execute(owner).await?;
    let started = Instant::now();
    for chunk in (0..lines as i64).collect::<Vec<_>>().chunks(500) {
        let texts: Vec<String> =
            chunk.iter().map(|i| format!("burst line {i} with some text a build would print")).collect();
        sqlx::query("INSERT INTO raw_burst SELECT * FROM UNNEST($1::bigint[], $2::text[])")
            .bind(chunk)
            .bind(&texts)
            .execute(owner)
            .await?;
    }
    Ok(lines as f64 / started.elapsed().as_secs_f64())
}

/// `environments(first: 50)` over HTTP among `environments` environments, with
/// 8 clients asking at once, beside the read model's SQL asked the same way.
async fn list_benchmark(db: &BenchDb, server: &ShiplogServer, environments: usize) -> anyhow::Result<Vec<Figure>> {
    eprintln!("creating {environments} environments");
    let lifecycle = Lifecycle::new(EventStore::new(db.runtime.clone()));
    let (meta, app): (Metadata, Name) = (Metadata::default(), "many".parse()?);
    lifecycle.create_application(&app, "https://git.example.invalid/bench.git", &meta, Utc::now()).await?;
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (lifecycle, app, meta, created) = (lifecycle.clone(), app.clone(), meta.clone(), created.clone());
        writers.push(tokio::spawn(async move {
            for i in (w..environments).step_by(8) {
                let kind = if i % 10 == 0 { EnvironmentKind::Production } else { EnvironmentKind::Preview };
                let spec = environment(&app, &format!("env-{i:05}").parse()?, kind, &format!("feature-{i}"));
                lifecycle.create_environment(&spec, &meta, Utc::now()).await?;
                created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    // Wait for the server's projections to fold every environment.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM read.environments WHERE application = 'many'")
            .fetch_one(&db.owner)
            .await
            .unwrap_or(0);
        if count as usize >= environments {
            break;
        }
        if Instant::now() > deadline {
            bail!("the read model did not catch up: {count} of {environments}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let query = json!({ "query": "{ environments(first: 50, filter: { application: \"many\" }) { totalCount pageInfo { endCursor } nodes { id name kind status health syncStatus drift { verdict } } } }" }).to_string();
    // One client, its connections kept alive, as the SQL baseline keeps its pool's.
    let client = shiplog_engine::tls::client_builder().no_proxy().build()?;
    let shiplog = concurrently(8, 50, || {
        let (client, address, token, query) = (client.clone(), server.address, server.token.clone(), query.clone());
        async move {
            let body = post(&client, address, &token, query).await?;
            anyhow::ensure!(body.contains("\"totalCount\""), "unexpected answer: {body}");
            Ok(())
        }
    })
    .await?;
    let raw = concurrently(8, 50, || {
        let pool = db.owner.clone();
        async move {
            let _total: i64 = sqlx::query_scalar("SELECT count(*) FROM read.environments WHERE application = 'many'")
                .fetch_one(&pool)
                .await?;
            let rows: Vec<(String, Value)> = sqlx::query_as(
                "SELECT key, view FROM read.environments WHERE application = 'many' ORDER BY key LIMIT 51",
            )
            .fetch_all(&pool)
            .await?;
            anyhow::ensure!(rows.len() == 51);
            Ok(())
        }
    })
    .await?;
    Ok(vec![Figure::latency(
        &format!("environments(first: 50) of {environments}, 8 clients, vs its SQL"),
        &shiplog,
        &raw,
    )])
}

/// Runs `make()` `per_client` times on each of `clients` concurrent clients;
/// returns every call's latency.
async fn concurrently<F, Fut>(clients: usize, per_client: usize, make: F) -> anyhow::Result<Vec<Duration>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let calls: Vec<Fut> = (0..per_client).map(|_| make()).collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for call in calls {
                let started = Instant::now();
                call.await?;
                latencies.push(started.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// POSTs a GraphQL request; returns the body.
async fn post(client: &reqwest::Client, address: SocketAddr, token: &str, body: String) -> anyhow::Result<String> {
    let request = client.post(format!("http://{address}/graphql")).bearer_auth(token);
    let response = request.header("Content-Type", "application/json").body(body).send().await?;
    Ok(response.error_for_status()?.text().await?)
}
