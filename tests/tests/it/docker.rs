//! The `docker` runtime on this machine's Docker engine: builds, infrastructure,
//! tasks, roll-outs, drift and resumed roll-outs, checked through the runtime and
//! independently through the `docker` CLI. Each test works in an application of
//! its own and removes what it created. Without an engine they skip (loudly),
//! unless `SHIPLOG_REQUIRE_DOCKER=1`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shiplog_engine::runtime::docker::DockerRuntime;
use shiplog_engine::runtime::{
    BuildRequest, EnvironmentRef, HealthCheck, Image, LogSink, LogStream, ObservedService, Runtime, RuntimeError,
    ServiceRequest, TaskOutcome, TaskRequest,
};
use shiplog_tests::docker::{self, BASE_IMAGE, cli, labelled};
use shiplog_tests::eventually;
use shiplog_tests::example::{Scratch, http_get};
use tokio_util::sync::CancellationToken;

/// Collects log lines; fires `trigger.1` when a line containing `trigger.0` arrives.
#[derive(Default)]
pub(crate) struct Collect {
    lines: Mutex<Vec<(LogStream, String)>>,
    trigger: Option<(String, CancellationToken)>,
}

impl LogSink for Collect {
    fn line(&self, stream: LogStream, line: &str) {
        self.lines.lock().unwrap().push((stream, line.to_string()));
        if let Some((needle, token)) = &self.trigger
            && line.contains(needle.as_str())
        {
            token.cancel();
        }
    }
}

impl Collect {
    fn has(&self, stream: LogStream, needle: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|(s, l)| *s == stream && l.contains(needle))
    }

    pub(crate) fn dump(&self) -> String {
        self.lines.lock().unwrap().iter().map(|(s, l)| format!("{s:?}: {l}\n")).collect()
    }
}

/// An environment of its own on the engine, and a scratch directory for build
/// contexts; whatever carries the environment's labels is removed on drop.
pub(crate) struct Fixture {
    pub(crate) runtime: DockerRuntime,
    pub(crate) env: EnvironmentRef,
    scratch: Scratch,
}

impl Fixture {
    pub(crate) async fn new() -> Option<Fixture> {
        let runtime = docker::docker().await?;
        Some(Fixture { runtime, env: docker::unique_env("review-1"), scratch: Scratch::new("shiplog-docker") })
    }

    /// Builds `dockerfile` (with `BASE` set to the test base image) from a context
    /// of its own, at commit `commit`.
    async fn build(&self, commit: &str, dockerfile: &str, logs: &Collect) -> Result<Image, RuntimeError> {
        let source = self.scratch.path().join(commit);
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("Dockerfile"), dockerfile).unwrap();
        let request = BuildRequest {
            env: self.env.clone(),
            service: "web".to_string(),
            source_dir: source,
            context: ".".to_string(),
            dockerfile: None,
            args: BTreeMap::from([("BASE".to_string(), BASE_IMAGE.to_string())]),
            target: None,
            commit: commit.to_string(),
        };
        self.runtime.build(&request, logs).await
    }

    /// An image whose web root `/www` holds an `index.html` reading `version`.
    pub(crate) async fn image(&self, version: &str) -> Image {
        let dockerfile = format!("ARG BASE\nFROM ${{BASE}}\nRUN mkdir /www && echo {version} > /www/index.html\n");
        let logs = Collect::default();
        self.build(version, &dockerfile, &logs).await.unwrap_or_else(|e| panic!("{e}\n{}", logs.dump()))
    }

    /// The web service serving `/www` on port 8080 from `image`, with an HTTP health check.
    pub(crate) fn web(&self, image: &Image) -> ServiceRequest {
        ServiceRequest {
            env: self.env.clone(),
            service: "web".to_string(),
            image: image.clone(),
            command: vec!["httpd".into(), "-f".into(), "-p".into(), "8080".into(), "-h".into(), "/www".into()],
            env_vars: BTreeMap::new(),
            ports: vec![8080],
            replicas: 1,
            health_check: Some(HealthCheck::Http { path: "/".to_string(), port: 8080 }),
            health_timeout: Duration::from_secs(20),
            volumes: vec![("data".to_string(), "/data".to_string())],
            pull_secrets: Vec::new(),
        }
    }

    fn task(&self, name: &str, script: &str, timeout: Duration) -> TaskRequest {
        TaskRequest {
            env: self.env.clone(),
            name: name.to_string(),
            image: None,
            source_dir: None,
            command: vec!["sh".into(), "-c".into(), script.into()],
            env_vars: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            timeout,
            pull_secrets: Vec::new(),
        }
    }

    /// The page the serving web container answers with, if any.
    pub(crate) async fn page(&self) -> Option<String> {
        let ip = self.runtime.service_address(&self.env, "web").await.unwrap()?;
        http_get(SocketAddr::new(ip, 8080)).await
    }

    pub(crate) async fn observe(&self) -> Vec<ObservedService> {
        self.runtime.observe(&self.env).await.unwrap()
    }

    fn containers(&self) -> Vec<String> {
        labelled("container", &self.env)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        docker::remove_leftovers(&self.env);
    }
}

fn running(image: &Image) -> Vec<ObservedService> {
    vec![ObservedService { service: "web".to_string(), image: image.clone(), running: true, health: None }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensuring_the_infrastructure_twice_changes_nothing_and_teardown_removes_it_all() {
    let Some(fx) = Fixture::new().await else { return };
    let volumes = ["data".to_string(), "cache".to_string()];
    fx.runtime.ensure_infrastructure(&fx.env, &volumes).await.unwrap();
    let (networks, mut volume_names) = (labelled("network", &fx.env), labelled("volume", &fx.env));
    volume_names.sort();
    let prefix = format!("shiplog_{}_review-1", fx.env.application);
    assert_eq!(volume_names, [format!("{prefix}_cache"), format!("{prefix}_data")]);
    assert_eq!(networks.len(), 1);
    let v1 = fx.image("v1").await;
    fx.runtime.roll_out(&fx.web(&v1), &Collect::default()).await.unwrap();
    let containers = fx.containers();

    fx.runtime.ensure_infrastructure(&fx.env, &volumes).await.unwrap();
    assert_eq!(labelled("network", &fx.env), networks);
    assert_eq!(labelled("volume", &fx.env).len(), 2);
    assert_eq!(fx.containers(), containers);
    let logs = Collect::default();
    fx.runtime.roll_out(&fx.web(&v1), &logs).await.unwrap();
    assert!(logs.has(LogStream::System, "nothing to do"), "{}", logs.dump());
    assert_eq!(fx.containers(), containers);
    assert_eq!(fx.page().await.as_deref(), Some("v1"));

    fx.runtime.teardown(&fx.env).await.unwrap();
    for kind in ["container", "network", "volume"] {
        assert_eq!(labelled(kind, &fx.env), Vec::<String>::new(), "a {kind} is left");
    }
    fx.runtime.teardown(&fx.env).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_streams_its_output_reuses_its_tag_and_fails_with_the_builders_error() {
    let Some(fx) = Fixture::new().await else { return };
    let logs = Collect::default();
    let dockerfile = "ARG BASE\nFROM ${BASE} AS first\nARG GREETING=none\nRUN echo \"greeting $GREETING\" > /greeting\n\
                      FROM first AS second\nRUN echo second > /greeting\n";
    let built = fx.build("c1", dockerfile, &logs).await.unwrap();
    assert!(built.0.starts_with("sha256:"), "{built:?}");
    assert!(logs.has(LogStream::Stdout, "Step 1/"), "{}", logs.dump());
    let tag = format!("shiplog/{}/web:c1", fx.env.application);
    assert_eq!(cli(&["image", "inspect", "--format", "{{.Id}}", &tag]).unwrap().trim(), built.0);

    let again = Collect::default();
    assert_eq!(fx.build("c1", dockerfile, &again).await.unwrap(), built);
    assert!(again.has(LogStream::System, "reusing image"), "{}", again.dump());

    // Arguments and a target stage: the first stage, with the argument.
    let source = fx.scratch.path().join("c1");
    let request = BuildRequest {
        env: fx.env.clone(),
        service: "web".to_string(),
        source_dir: source,
        context: ".".to_string(),
        dockerfile: None,
        args: BTreeMap::from([("BASE".into(), BASE_IMAGE.into()), ("GREETING".into(), "hi".into())]),
        target: Some("first".to_string()),
        commit: "c1".to_string(),
    };
    let first = fx.runtime.build(&request, &Collect::default()).await.unwrap();
    assert_ne!(first, built, "other arguments and target reused the image");
    let mut task = fx.task("cat", "cat /greeting", Duration::from_secs(30));
    task.image = Some(first);
    let output = Collect::default();
    let outcome = fx.runtime.run_task(&task, &output, &CancellationToken::new()).await.unwrap();
    assert_eq!(outcome, TaskOutcome::Exited(0));
    assert!(output.has(LogStream::Stdout, "greeting hi"), "{}", output.dump());

    let failing = Collect::default();
    let dockerfile = "ARG BASE\nFROM ${BASE}\nRUN echo compiling; exit 7\n";
    match fx.build("c2", dockerfile, &failing).await {
        Err(RuntimeError::Failed(message)) => {
            assert!(message.starts_with("building the image of web failed: "), "{message}");
            assert!(message.contains("returned a non-zero code: 7"), "{message}");
        }
        other => panic!("{other:?}\n{}", failing.dump()),
    }
    assert!(failing.has(LogStream::Stdout, "compiling"), "{}", failing.dump());
    assert!(failing.has(LogStream::Stderr, "returned a non-zero code: 7"), "{}", failing.dump());

    let request = BuildRequest { dockerfile: Some("missing.Dockerfile".into()), commit: "c3".into(), ..request };
    let missing = Collect::default();
    let error = fx.runtime.build(&request, &missing).await.unwrap_err().to_string();
    assert!(error.contains("missing.Dockerfile"), "{error}");
    assert!(missing.has(LogStream::Stderr, "missing.Dockerfile"), "{}", missing.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_streams_its_output_and_a_timeout_or_cancel_kills_and_removes_its_container() {
    let Some(fx) = Fixture::new().await else { return };
    let never = CancellationToken::new();
    let logs = Collect::default();
    let task = fx.task("release-migrate", "echo \"$GREETING out\"; echo err >&2; exit 3", Duration::from_secs(30));
    assert_eq!(fx.runtime.run_task(&task, &logs, &never).await.unwrap(), TaskOutcome::Exited(3));
    assert!(logs.has(LogStream::Stdout, "hello out") && logs.has(LogStream::Stderr, "err"), "{}", logs.dump());
    assert_eq!(fx.containers(), Vec::<String>::new());

    // A job on a checkout: mounted as the working directory.
    let checkout = fx.scratch.path().join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    std::fs::write(checkout.join("notes.txt"), "from the checkout\n").unwrap();
    let mut job = fx.task("unit", "cat notes.txt", Duration::from_secs(30));
    job.source_dir = Some(checkout);
    let logs = Collect::default();
    assert_eq!(fx.runtime.run_task(&job, &logs, &never).await.unwrap(), TaskOutcome::Exited(0));
    assert!(logs.has(LogStream::Stdout, "from the checkout"), "{}", logs.dump());

    let started = Instant::now();
    let slow = fx.task("slow", "echo started; exec sleep 60", Duration::from_secs(1));
    let logs = Collect::default();
    assert_eq!(fx.runtime.run_task(&slow, &logs, &never).await.unwrap(), TaskOutcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(logs.has(LogStream::Stdout, "started"), "{}", logs.dump());
    assert_eq!(fx.containers(), Vec::<String>::new());

    let cancel = CancellationToken::new();
    let logs = Arc::new(Collect::default());
    let running = {
        let (runtime, logs, cancel) = (fx.runtime.clone(), logs.clone(), cancel.clone());
        let slow = TaskRequest { timeout: Duration::from_secs(600), ..slow };
        tokio::spawn(async move { runtime.run_task(&slow, &*logs, &cancel).await })
    };
    eventually("the task to start", Duration::from_secs(30), || async {
        logs.has(LogStream::Stdout, "started").then_some(())
    })
    .await;
    assert_eq!(fx.containers().len(), 1);
    cancel.cancel();
    assert_eq!(running.await.unwrap().unwrap(), TaskOutcome::Cancelled);
    assert_eq!(fx.containers(), Vec::<String>::new());
    fx.runtime.teardown(&fx.env).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_out_switches_only_to_a_healthy_version_and_the_old_one_keeps_serving() {
    let Some(fx) = Fixture::new().await else { return };
    let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
    fx.runtime.roll_out(&fx.web(&v1), &Collect::default()).await.unwrap();
    assert_eq!(fx.page().await.as_deref(), Some("v1"));
    let serving = fx.containers();

    // v2 never answers HTTP.
    let mut broken = fx.web(&v2);
    broken.command = vec!["sh".into(), "-c".into(), "echo v2 starting; exec sleep 60".into()];
    broken.health_timeout = Duration::from_secs(1);
    let logs = Collect::default();
    match fx.runtime.roll_out(&broken, &logs).await {
        Err(RuntimeError::Failed(message)) => {
            assert_eq!(message, "web did not become healthy within 1s; the previous version keeps serving")
        }
        other => panic!("{other:?}\n{}", logs.dump()),
    }
    assert!(logs.has(LogStream::System, "last health check of web: GET http://"), "{}", logs.dump());
    assert!(logs.has(LogStream::Stdout, "v2 starting"), "{}", logs.dump());
    assert_eq!(fx.containers(), serving);
    assert_eq!(fx.page().await.as_deref(), Some("v1"));
    assert_eq!(fx.observe().await, running(&v1));

    // v2 exits at once.
    let mut crashing = fx.web(&v2);
    crashing.command = vec!["sh".into(), "-c".into(), "echo boom >&2; exit 1".into()];
    let logs = Collect::default();
    match fx.runtime.roll_out(&crashing, &logs).await {
        Err(RuntimeError::Failed(message)) => {
            assert_eq!(message, "web exited with code 1 before becoming healthy; the previous version keeps serving")
        }
        other => panic!("{other:?}\n{}", logs.dump()),
    }
    assert!(logs.has(LogStream::Stderr, "boom"), "{}", logs.dump());
    assert_eq!(fx.containers(), serving);

    // A command health check runs in the container.
    let mut checked = fx.web(&v2);
    checked.health_check = Some(HealthCheck::Command(vec!["test".into(), "-f".into(), "/www/index.html".into()]));
    let logs = Collect::default();
    fx.runtime.roll_out(&checked, &logs).await.unwrap();
    assert!(logs.has(LogStream::System, "stopping "), "{}", logs.dump());
    assert_eq!(fx.page().await.as_deref(), Some("v2"));
    assert_eq!(fx.observe().await, running(&v2));
    assert_eq!(fx.containers().len(), 1);
    assert_ne!(fx.containers(), serving);
    fx.runtime.teardown(&fx.env).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_stopped_or_removed_behind_shiplogs_back_shows_in_observe_and_a_roll_out_repairs_it() {
    let Some(fx) = Fixture::new().await else { return };
    let v1 = fx.image("v1").await;
    let request = fx.web(&v1);
    fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
    assert_eq!(fx.observe().await, running(&v1));

    let container = fx.containers().remove(0);
    cli(&["stop", &container]).unwrap();
    let stopped = ObservedService { running: false, ..running(&v1).remove(0) };
    assert_eq!(fx.observe().await, [stopped]);
    assert_eq!(fx.page().await, None);
    fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
    assert_eq!(fx.observe().await, running(&v1));
    assert_eq!(fx.page().await.as_deref(), Some("v1"));

    let container = fx.containers().remove(0);
    cli(&["rm", "-f", &container]).unwrap();
    assert_eq!(fx.observe().await, []);
    fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
    assert_eq!(fx.observe().await, running(&v1));
    assert_eq!(fx.page().await.as_deref(), Some("v1"));
    fx.runtime.teardown(&fx.env).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_out_interrupted_at_any_step_and_resumed_elsewhere_leaves_one_serving_container() {
    let Some(fx) = Fixture::new().await else { return };
    let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
    // Log lines the roll-out writes just before each step: the new container has
    // started; it is healthy and the switch comes next; the switch is done and the
    // old container's removal comes next.
    for kill_at in ["started ", "is healthy; switching", "stopping "] {
        fx.runtime.roll_out(&fx.web(&v1), &Collect::default()).await.unwrap();
        assert_eq!(fx.page().await.as_deref(), Some("v1"));

        // The worker dies there: its roll-out is dropped at its next step.
        let killed = CancellationToken::new();
        let logs = Collect { trigger: Some((kill_at.to_string(), killed.clone())), ..Collect::default() };
        let request = fx.web(&v2);
        tokio::select! {
            biased;
            () = killed.cancelled() => {}
            result = fx.runtime.roll_out(&request, &logs) => panic!("not interrupted: {result:?}\n{}", logs.dump()),
        }

        // Another worker, with a runtime of its own, runs the roll-out again.
        let resumed = docker::docker().await.expect("the engine answered a moment ago");
        let logs = Collect::default();
        resumed.roll_out(&fx.web(&v2), &logs).await.unwrap_or_else(|e| panic!("{e}\n{}", logs.dump()));
        if kill_at != "stopping " {
            // The new container never got the alias: it is removed and started again.
            assert!(logs.has(LogStream::System, "left by an interrupted roll-out"), "{}", logs.dump());
        }
        assert_eq!(fx.containers().len(), 1, "after an interruption at {kill_at:?}: {}", logs.dump());
        assert_eq!(fx.observe().await, running(&v2), "after an interruption at {kill_at:?}");
        assert_eq!(fx.page().await.as_deref(), Some("v2"), "after an interruption at {kill_at:?}");
    }
    fx.runtime.teardown(&fx.env).await.unwrap();
}
