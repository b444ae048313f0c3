//! What the process runtime's tests share: a runtime on a temporary root with a
//! source tree to build from, requests, a log sink that keeps every line, and
//! checks that do not go through the code under test.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::ProcessRuntime;
use super::records::{ServiceState, read_json};
use crate::runtime::{BuildRequest, EnvironmentRef, Image, LogSink, LogStream, Runtime, ServiceRequest, TaskRequest};

/// Collects log lines; cancels `trigger.1` when a line equal to `trigger.0` arrives.
#[derive(Default)]
pub(super) struct Collect {
    pub(super) lines: Mutex<Vec<(LogStream, String)>>,
    pub(super) trigger: Option<(String, CancellationToken)>,
}

impl LogSink for Collect {
    fn line(&self, stream: LogStream, line: &str) {
        self.lines.lock().unwrap().push((stream, line.to_string()));
        if let Some((text, token)) = &self.trigger
            && line == text
        {
            token.cancel();
        }
    }
}

impl Collect {
    pub(super) fn of(&self, stream: LogStream) -> Vec<String> {
        self.lines.lock().unwrap().iter().filter(|(s, _)| *s == stream).map(|(_, l)| l.clone()).collect()
    }
    pub(super) fn has(&self, stream: LogStream, needle: &str) -> bool {
        self.of(stream).iter().any(|line| line.contains(needle))
    }
    pub(super) fn dump(&self) -> String {
        format!("{:#?}", self.lines.lock().unwrap())
    }
}

pub(super) struct Fixture {
    pub(super) root: TempDir,
    pub(super) source: TempDir,
    pub(super) runtime: ProcessRuntime,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let root = TempDir::new().unwrap();
        let runtime = ProcessRuntime::new(root.path().join("process"));
        Fixture { root, source: TempDir::new().unwrap(), runtime }
    }

    pub(super) fn write_source(&self, path: &str, content: &str) {
        let path = self.source.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub(super) fn build_request(&self, commit: &str, context: &str) -> BuildRequest {
        BuildRequest {
            env: env("review-1"),
            service: "web".to_string(),
            source_dir: self.source.path().to_path_buf(),
            context: context.to_string(),
            dockerfile: None,
            args: BTreeMap::new(),
            target: None,
            commit: commit.to_string(),
        }
    }

    /// An image whose `version` file says `version`.
    pub(super) async fn image(&self, version: &str) -> Image {
        self.write_source("app/version", version);
        self.runtime.build(&self.build_request(version, "app"), &Collect::default()).await.unwrap()
    }

    pub(super) fn env_dir(&self, environment: &str) -> PathBuf {
        self.runtime.root().join("environments/shop").join(environment)
    }

    pub(super) fn state(&self, environment: &str, service: &str) -> ServiceState {
        read_json(&self.env_dir(environment).join(format!("services/{service}.json"))).unwrap().unwrap()
    }
}

impl Drop for Fixture {
    /// Whatever a failing test left running goes (http.server would run forever).
    fn drop(&mut self) {
        let Ok(envs) = fs::read_dir(self.runtime.root().join("environments/shop")) else { return };
        for name in envs.flatten().filter_map(|entry| entry.file_name().into_string().ok()) {
            let Ok(dirs) = self.runtime.env_dirs(&env(&name)) else { continue };
            for process in dirs.recorded_processes().unwrap_or_default() {
                let _ = process.signal(Signal::SIGKILL);
            }
        }
    }
}

pub(super) fn env(name: &str) -> EnvironmentRef {
    EnvironmentRef { application: "shop".to_string(), environment: name.to_string() }
}

pub(super) fn sh(script: &str) -> Vec<String> {
    vec!["sh".to_string(), "-c".to_string(), script.to_string()]
}

pub(super) fn task(command: Vec<String>, image: Option<Image>, timeout: Duration) -> TaskRequest {
    TaskRequest {
        env: env("review-1"),
        name: "release-migrate".to_string(),
        image,
        source_dir: None,
        command,
        env_vars: BTreeMap::new(),
        timeout,
        pull_secrets: Vec::new(),
    }
}

pub(super) fn service(image: &Image, command: Vec<String>) -> ServiceRequest {
    ServiceRequest {
        env: env("review-1"),
        service: "web".to_string(),
        image: image.clone(),
        command,
        env_vars: BTreeMap::new(),
        ports: Vec::new(),
        replicas: 1,
        health_check: None,
        health_timeout: Duration::from_secs(10),
        volumes: Vec::new(),
        pull_secrets: Vec::new(),
    }
}

/// Independent of the code under test: the process exists and is not a zombie.
pub(super) fn is_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat[stat.rfind(')').unwrap() + 1..].trim_start().chars().next();
    !matches!(state, Some('Z' | 'X'))
}

pub(super) async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process group the runtime did not start (as if a dead worker had).
pub(super) fn spawn_orphan() -> std::process::Child {
    std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap()
}
