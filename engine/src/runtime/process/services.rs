//! Services: detached process groups that outlive the shiplog process that
//! started them, recorded in `services/` (the version that serves) and
//! `candidates/` (a version being rolled out), and the roll-out that replaces one
//! version by another.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::groups::{ProcRef, base_command, describe_exit, spawn_error, stop_all};
use super::health::wait_healthy;
use super::images::image_dir;
use super::records::{
    AnyRecord, EnvDirs, ServiceSpec, ServiceState, read_json, remove_file_if_exists, write_private_json,
};
use crate::runtime::policy::{FAILED_OUTPUT_BYTES, FAILED_OUTPUT_LINES};
use crate::runtime::{
    HealthCheck, LogSink, LogStream, RuntimeError, ServiceRequest, check_name, fmt_duration, service_variables,
};

/// Rolls the service out in the environment `dirs` (see `ProcessRuntime`'s
/// `roll_out`).
pub(super) async fn roll_out(dirs: &EnvDirs, req: &ServiceRequest, logs: &dyn LogSink) -> Result<(), RuntimeError> {
    let service = req.service.as_str();
    check_name("service", service)?;
    for (volume, _) in &req.volumes {
        check_name("volume", volume)?;
    }
    if req.command.is_empty() {
        return Err(RuntimeError::Failed(format!(
            "{service} has no command; the process runtime needs one to start a service"
        )));
    }
    if let Some(HealthCheck::Http { path, .. }) = &req.health_check
        && path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(RuntimeError::Failed(format!(
            "the health check path of {service} is not a valid URL path: {path:?}"
        )));
    }
    image_dir(&req.image)?;
    dirs.ensure(&req.volumes.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())?;

    let current = read_json::<ServiceState>(&dirs.state(service))?;
    clear_candidate(dirs, service, current.as_ref(), logs).await?;

    if req.replicas == 0 {
        if let Some(current) = &current {
            logs.line(LogStream::System, &format!("stopping {service}: 0 replicas requested"));
            stop_all(&[current.process]).await?;
            remove_file_if_exists(&dirs.state(service))?;
        }
        return Ok(());
    }
    req.note_one_replica("process", "process", logs);

    let spec = ServiceSpec::of(req);
    if let Some(current) = &current
        && current.spec == spec
        && current.process.alive()
    {
        logs.line(
            LogStream::System,
            &format!("{service} already runs {} (pid {}); nothing to do", spec.image.0, current.process.pid),
        );
        return Ok(());
    }

    // Local processes cannot share a port: the old version goes first.
    if let Some(current) = &current {
        if current.process.group_alive() {
            logs.line(
                LogStream::System,
                &format!("stopping {service} {} (pid {})", current.spec.image.0, current.process.pid),
            );
        }
        stop_all(&[current.process]).await?;
    }

    let launch = Launch { service, spec: &spec, health_check: &req.health_check, health_timeout: req.health_timeout };
    match start_healthy(dirs, &launch, Record::Candidate, logs).await {
        Ok(state) => {
            // The state file is replaced before the candidate record goes: a crash
            // in between leaves a candidate equal to the state, which is kept.
            write_private_json(&dirs.state(service), &state)?;
            remove_file_if_exists(&dirs.candidate(service))?;
            tracing::info!(service, image = %spec.image.0, pid = state.process.pid, "rolled out");
            logs.line(LogStream::System, &format!("{service} now runs {}", spec.image.0));
            Ok(())
        }
        Err(failure) => {
            let previous = current.filter(|current| current.spec != spec);
            let Some(previous) = previous else {
                return Err(RuntimeError::Failed(failure));
            };
            logs.line(
                LogStream::System,
                &format!("restarting the previous version of {service} ({})", previous.spec.image.0),
            );
            let health_timeout = Duration::from_millis(previous.health_timeout_ms);
            let launch = Launch { service, spec: &previous.spec, health_check: &previous.health_check, health_timeout };
            match start_healthy(dirs, &launch, Record::State, logs).await {
                Ok(restored) => {
                    tracing::warn!(service, image = %restored.spec.image.0, "roll-out failed; previous version restored");
                    logs.line(
                        LogStream::System,
                        &format!("the previous version of {service} serves again (pid {})", restored.process.pid),
                    );
                    Err(RuntimeError::Failed(format!("{failure}; the previous version keeps serving")))
                }
                Err(restore_failure) => Err(RuntimeError::Failed(format!(
                    "{failure}; restarting the previous version failed too: {restore_failure}"
                ))),
            }
        }
    }
}

/// One version of a service to start.
pub(super) struct Launch<'a> {
    pub(super) service: &'a str,
    pub(super) spec: &'a ServiceSpec,
    pub(super) health_check: &'a Option<HealthCheck>,
    pub(super) health_timeout: Duration,
}

/// Where a started version is recorded until it is known to be healthy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    /// In `candidates/`: a new version, committed to the state file only once healthy.
    Candidate,
    /// Straight in the state file: the previous version being put back.
    State,
}

/// Stops a candidate left by a roll-out whose worker died before it finished.
async fn clear_candidate(
    dirs: &EnvDirs,
    service: &str,
    current: Option<&ServiceState>,
    logs: &dyn LogSink,
) -> Result<(), RuntimeError> {
    let path = dirs.candidate(service);
    let Some(candidate) = read_json::<AnyRecord>(&path)? else {
        return Ok(());
    };
    // Equal to the state: the roll-out committed it and died before removing the record.
    if current.is_none_or(|current| current.process != candidate.process) && candidate.process.group_alive() {
        logs.line(
            LogStream::System,
            &format!("stopping a version of {service} left by an interrupted roll-out (pid {})", candidate.process.pid),
        );
        stop_all(&[candidate.process]).await?;
    }
    remove_file_if_exists(&path)
}

/// Starts one version of a service, records it, and waits until it is healthy.
/// On failure the process is stopped and the error says what happened.
async fn start_healthy(
    dirs: &EnvDirs,
    launch: &Launch<'_>,
    record: Record,
    logs: &dyn LogSink,
) -> Result<ServiceState, String> {
    let service = launch.service;
    let log_path = dirs.log(service);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;

    let cwd = image_dir(&launch.spec.image).map_err(|e| e.to_string())?;
    let mut command = base_command(&launch.spec.command, &cwd, &service_env(launch.spec, dirs));
    command.stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
    let mut child =
        command.spawn().map_err(|e| format!("cannot start {service}: {}", spawn_error(&launch.spec.command[0], &e)))?;
    let Some(pid) = child.id() else {
        return Err(format!("{service} exited as soon as it started"));
    };
    let process = ProcRef::spawned(pid);

    // The service outlives this call (and this process): nobody keeps the Child,
    // but while this process lives a task reaps it, so no zombie is left, and
    // reports how it ended to the health wait.
    let (exit_tx, mut exit_rx) = watch::channel(None::<String>);
    let reaper_service = service.to_string();
    tokio::spawn(async move {
        let how = match child.wait().await {
            Ok(status) => describe_exit(status),
            Err(e) => format!("could not be waited for: {e}"),
        };
        tracing::info!(service = %reaper_service, pid, "service process {how}");
        exit_tx.send_replace(Some(how));
    });

    let state = ServiceState {
        service: service.to_string(),
        spec: launch.spec.clone(),
        health_check: launch.health_check.clone(),
        health_timeout_ms: u64::try_from(launch.health_timeout.as_millis()).unwrap_or(u64::MAX),
        process,
        started_at: chrono::Utc::now(),
    };
    let record_path = match record {
        Record::Candidate => dirs.candidate(service),
        Record::State => dirs.state(service),
    };
    if let Err(e) = write_private_json(&record_path, &state) {
        // Unrecorded, nobody could ever stop it: stop it now.
        let _ = stop_all(&[process]).await;
        return Err(format!("cannot record {service}: {e}"));
    }
    tracing::info!(service, pid, image = %launch.spec.image.0, "started service");
    logs.line(
        LogStream::System,
        &format!("started {service} {} (pid {pid}); its output goes to {}", launch.spec.image.0, log_path.display()),
    );

    let started = Instant::now();
    let unhealthy = match wait_healthy(launch, dirs, &mut exit_rx).await {
        Ok(()) => {
            logs.line(LogStream::System, &format!("{service} is healthy after {}", fmt_duration(started.elapsed())));
            return Ok(state);
        }
        Err(unhealthy) => unhealthy,
    };

    let failure = unhealthy.failure(service, launch.health_timeout, logs);
    logs.line(LogStream::System, &format!("{failure}; stopping it"));
    let output = output_since(&log_path, log_offset);
    if !output.is_empty() {
        logs.line(LogStream::System, &format!("its last output ({}):", log_path.display()));
        for line in &output {
            logs.line(LogStream::Stdout, line);
        }
    }
    tracing::warn!(service, pid, "{failure}");
    if let Err(e) = stop_all(&[process]).await {
        // The record stays, so a later roll-out or teardown stops it.
        return Err(format!("{failure}, and stopping it failed: {e}"));
    }
    if record == Record::Candidate {
        remove_file_if_exists(&record_path).map_err(|e| e.to_string())?;
    }
    Err(failure)
}

/// The variables a service version gets (besides `PATH` and `HOME`): the request's
/// (see [`service_variables`]) and one per volume.
pub(super) fn service_env(spec: &ServiceSpec, dirs: &EnvDirs) -> BTreeMap<String, String> {
    let mut vars = service_variables(&spec.ports, &spec.env_vars);
    for (volume, _mount_path) in &spec.volumes {
        // What the request sets explicitly wins.
        vars.entry(volume_variable(volume)).or_insert_with(|| dirs.volume(volume).to_string_lossy().into_owned());
    }
    vars
}

/// `SHIPLOG_VOLUME_<NAME>`: the variable holding a volume's directory.
pub fn volume_variable(volume: &str) -> String {
    format!("SHIPLOG_VOLUME_{}", volume.to_ascii_uppercase().replace('-', "_"))
}

/// The last lines a service wrote to its log since `offset`.
fn output_since(log: &Path, offset: u64) -> Vec<String> {
    let read = || -> io::Result<Vec<String>> {
        let mut file = File::open(log)?;
        let len = file.metadata()?.len();
        let start = offset.max(len.saturating_sub(FAILED_OUTPUT_BYTES));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(len - start.min(len)).read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let skip = lines.len().saturating_sub(FAILED_OUTPUT_LINES);
        Ok(lines.into_iter().skip(skip).collect())
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;

    use nix::sys::signal::{self, Signal};
    use nix::unistd::Pid;

    use super::super::health::LOCALHOST;
    use super::super::records::json_files;
    use super::super::testing::*;
    use super::*;
    use crate::runtime::health::http_probe;
    use crate::runtime::{ObservedService, Runtime};

    #[tokio::test]
    async fn roll_out_starts_a_service_that_observe_reports_running() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let environment = env("review-1");
        fx.runtime.ensure_infrastructure(&environment, &["data".to_string()]).await.unwrap();
        fx.runtime.ensure_infrastructure(&environment, &["data".to_string()]).await.unwrap();

        let mut request = service(
            &image,
            sh(r#"echo "$PORT $GREETING $(cat version)" > "$SHIPLOG_VOLUME_DATA/seen"; echo started; exec sleep 30"#),
        );
        request.ports = vec![18080, 18081];
        request.volumes = vec![("data".to_string(), "/var/lib/data".to_string())];
        request.env_vars.insert("GREETING".to_string(), "s3cret".to_string());
        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "web now runs"), "{}", logs.dump());

        let observed = fx.runtime.observe(&environment).await.unwrap();
        assert_eq!(
            observed,
            [ObservedService { service: "web".to_string(), image: image.clone(), running: true, health: None }]
        );

        let seen = fx.env_dir("review-1").join("volumes/data/seen");
        eventually("the service wrote to its volume", Duration::from_secs(5), || seen.exists()).await;
        eventually("the service wrote its line", Duration::from_secs(5), || {
            fs::read_to_string(&seen).is_ok_and(|s| s.ends_with('\n'))
        })
        .await;
        assert_eq!(fs::read_to_string(&seen).unwrap(), "18080 s3cret v1\n");
        let log = fx.env_dir("review-1").join("logs/web.log");
        eventually("the output reaches the log", Duration::from_secs(5), || {
            fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))
        })
        .await;

        // Detached: its own process group; its state file (which holds the secret) is private.
        let state = fx.state("review-1", "web");
        assert_eq!(state.process.pgid, state.process.pid);
        assert_ne!(Pid::from_raw(state.process.pgid), nix::unistd::getpgrp());
        assert!(is_running(state.process.pid));
        let state_file = fx.env_dir("review-1").join("services/web.json");
        assert_eq!(fs::metadata(&state_file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(state_file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);

        // Rolling out the same thing again changes nothing.
        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "nothing to do"), "{}", logs.dump());
        assert_eq!(fx.state("review-1", "web").process, state.process);

        fx.runtime.teardown(&environment).await.unwrap();
    }

    #[tokio::test]
    async fn roll_out_of_a_new_image_replaces_the_old_version() {
        let fx = Fixture::new();
        let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
        fx.runtime.roll_out(&service(&v1, sh("exec sleep 30")), &Collect::default()).await.unwrap();
        let old = fx.state("review-1", "web").process;

        let logs = Collect::default();
        fx.runtime.roll_out(&service(&v2, sh("exec sleep 30")), &logs).await.unwrap();
        let new = fx.state("review-1", "web").process;
        assert_ne!(new.pid, old.pid);
        assert!(!is_running(old.pid), "the old version still runs");
        assert!(is_running(new.pid));
        let observed = fx.runtime.observe(&env("review-1")).await.unwrap();
        assert_eq!(observed, [ObservedService { service: "web".to_string(), image: v2, running: true, health: None }]);
        assert!(logs.has(LogStream::System, "stopping web"), "{}", logs.dump());

        // A new environment variable is a new version too, even with the same image.
        let mut request = service(&fx.state("review-1", "web").spec.image, sh("exec sleep 30"));
        request.env_vars.insert("FEATURE".to_string(), "on".to_string());
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        assert_ne!(fx.state("review-1", "web").process, new);
        assert!(!is_running(new.pid));

        fx.runtime.teardown(&env("review-1")).await.unwrap();
    }

    #[tokio::test]
    async fn a_version_that_never_becomes_healthy_is_replaced_by_the_old_one() {
        let fx = Fixture::new();
        let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
        let port = free_port();
        let health = HealthCheck::Http { path: "/version".to_string(), port };
        let port_arg = port.to_string();
        let server = ["python3", "-m", "http.server", &port_arg, "--bind", "127.0.0.1"];
        let mut request = service(&v1, server.iter().map(|s| s.to_string()).collect());
        request.health_check = Some(health.clone());
        request.health_timeout = Duration::from_secs(20);
        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "web is healthy"), "{}", logs.dump());
        http_probe(LOCALHOST, port, "/version", Duration::from_secs(2)).await.unwrap();
        let first = fx.state("review-1", "web").process;

        // v2 does not serve HTTP.
        let mut broken = service(&v2, sh("echo v2 starting; exec sleep 30"));
        broken.health_check = Some(health);
        broken.health_timeout = Duration::from_secs(1);
        let logs = Collect::default();
        match fx.runtime.roll_out(&broken, &logs).await {
            Err(RuntimeError::Failed(message)) => {
                assert_eq!(message, "web did not become healthy within 1s; the previous version keeps serving")
            }
            other => panic!("{other:?}\n{}", logs.dump()),
        }
        assert!(logs.has(LogStream::System, "last health check of web: GET http://127.0.0.1:"), "{}", logs.dump());
        assert!(logs.has(LogStream::Stdout, "v2 starting"), "the failed version's output is shown: {}", logs.dump());

        // v1 runs (again) and serves; nothing of v2 is left.
        assert!(!is_running(first.pid));
        let observed = fx.runtime.observe(&env("review-1")).await.unwrap();
        assert_eq!(
            observed,
            [ObservedService { service: "web".to_string(), image: v1.clone(), running: true, health: None }]
        );
        http_probe(LOCALHOST, port, "/version", Duration::from_secs(2)).await.unwrap();
        let state = fx.state("review-1", "web");
        assert_eq!(state.spec, ServiceSpec::of(&request));
        assert!(json_files(&fx.env_dir("review-1").join("candidates")).unwrap().is_empty());

        fx.runtime.teardown(&env("review-1")).await.unwrap();
        assert!(http_probe(LOCALHOST, port, "/", Duration::from_secs(1)).await.is_err());
    }

    #[tokio::test]
    async fn a_version_that_exits_is_replaced_by_the_old_one() {
        let fx = Fixture::new();
        let (v1, v2) = (fx.image("v1").await, fx.image("v2").await);
        fx.runtime.roll_out(&service(&v1, sh("exec sleep 30")), &Collect::default()).await.unwrap();

        let logs = Collect::default();
        let started = Instant::now();
        match fx.runtime.roll_out(&service(&v2, sh("echo boom >&2; exit 1")), &logs).await {
            Err(RuntimeError::Failed(message)) => assert_eq!(
                message,
                "web exited with code 1 before becoming healthy; the previous version keeps serving"
            ),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(logs.has(LogStream::Stdout, "boom"), "{}", logs.dump());
        let observed = fx.runtime.observe(&env("review-1")).await.unwrap();
        assert_eq!(observed, [ObservedService { service: "web".to_string(), image: v1, running: true, health: None }]);
        fx.runtime.teardown(&env("review-1")).await.unwrap();
    }

    #[tokio::test]
    async fn command_health_checks_run_with_the_services_environment() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let mut request = service(
            &image,
            sh(r#"echo $$ > "$SHIPLOG_VOLUME_DATA/pid"; sleep 0.5; touch "$SHIPLOG_VOLUME_DATA/ready"; exec sleep 30"#),
        );
        request.volumes = vec![("data".to_string(), "/data".to_string())];
        request.health_check = Some(HealthCheck::Command(sh(r#"test -f "$SHIPLOG_VOLUME_DATA/ready""#)));
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        assert!(fx.env_dir("review-1").join("volumes/data/ready").exists());
        fx.runtime.teardown(&env("review-1")).await.unwrap();

        // A first version that never passes: an error, and nothing left running.
        request.health_check = Some(HealthCheck::Command(sh("echo not ready >&2; false")));
        request.health_timeout = Duration::from_secs(1);
        let logs = Collect::default();
        match fx.runtime.roll_out(&request, &logs).await {
            Err(RuntimeError::Failed(message)) => assert_eq!(message, "web did not become healthy within 1s"),
            other => panic!("{other:?}"),
        }
        assert!(logs.has(LogStream::System, "`sh` exited with code 1: not ready"), "{}", logs.dump());
        let pid: i32 =
            fs::read_to_string(fx.env_dir("review-1").join("volumes/data/pid")).unwrap().trim().parse().unwrap();
        assert!(!is_running(pid));
        assert!(fx.runtime.observe(&env("review-1")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_service_killed_behind_shiplogs_back_is_reported_and_restarted() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let request = service(&image, sh("exec sleep 30"));
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        let process = fx.state("review-1", "web").process;
        signal::killpg(Pid::from_raw(process.pgid), Signal::SIGKILL).unwrap();

        let environment = env("review-1");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let observed = fx.runtime.observe(&environment).await.unwrap();
            assert_eq!(observed.len(), 1);
            assert_eq!(observed[0].image, image);
            if !observed[0].running {
                break;
            }
            assert!(Instant::now() < deadline, "observe still reports the killed service running");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Rolling out the same version starts it again.
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        let restarted = fx.state("review-1", "web").process;
        assert_ne!(restarted.pid, process.pid);
        assert!(fx.runtime.observe(&environment).await.unwrap()[0].running);
        fx.runtime.teardown(&environment).await.unwrap();
    }

    #[tokio::test]
    async fn a_roll_out_stops_a_version_left_by_an_interrupted_one() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let mut orphan = spawn_orphan();
        let dirs = fx.runtime.env_dirs(&env("review-1")).unwrap();
        dirs.ensure(&[]).unwrap();
        let request = service(&image, sh("exec sleep 30"));
        let candidate = ServiceState {
            service: "web".to_string(),
            spec: ServiceSpec::of(&request),
            health_check: None,
            health_timeout_ms: 1000,
            process: ProcRef::spawned(orphan.id()),
            started_at: chrono::Utc::now(),
        };
        write_private_json(&dirs.candidate("web"), &candidate).unwrap();

        let logs = Collect::default();
        fx.runtime.roll_out(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "left by an interrupted roll-out"), "{}", logs.dump());
        assert_eq!(orphan.wait().unwrap().signal(), Some(Signal::SIGTERM as i32));
        assert!(!dirs.candidate("web").exists());
        assert!(fx.runtime.observe(&env("review-1")).await.unwrap()[0].running);
        fx.runtime.teardown(&env("review-1")).await.unwrap();
    }

    #[tokio::test]
    async fn zero_replicas_stop_the_service() {
        let fx = Fixture::new();
        let image = fx.image("v1").await;
        let mut request = service(&image, sh("exec sleep 30"));
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        let process = fx.state("review-1", "web").process;
        request.replicas = 0;
        fx.runtime.roll_out(&request, &Collect::default()).await.unwrap();
        assert!(!is_running(process.pid));
        assert!(fx.runtime.observe(&env("review-1")).await.unwrap().is_empty());
    }

    #[test]
    fn volumes_become_variables() {
        assert_eq!(volume_variable("pg-data"), "SHIPLOG_VOLUME_PG_DATA");
    }
}
