//! Docker for tests: the engine of this machine, a base image the tests make
//! themselves (no registry is reachable), and a look at what carries an
//! environment's labels, through the `docker` CLI, independently of the runtime
//! under test.
//!
//! Docker tests call [`docker`] first: without an engine they skip with a loud
//! message, unless `SHIPLOG_REQUIRE_DOCKER=1` (CI sets it where an engine runs),
//! which makes them fail instead.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use shiplog_engine::runtime::EnvironmentRef;
use shiplog_engine::runtime::docker::DockerRuntime;

/// The base image of the tests: a root filesystem holding Debian's static busybox
/// (`sh`, `httpd`, `wget`, ...), imported into the engine.
pub const BASE_IMAGE: &str = "shiplog-test/busybox:latest";

/// The Docker runtime on this machine's engine, with [`BASE_IMAGE`] present and used
/// as the job image; `None` when no engine answers (after saying so loudly).
/// Panics instead when `SHIPLOG_REQUIRE_DOCKER=1`.
pub async fn docker() -> Option<DockerRuntime> {
    match DockerRuntime::connect().await {
        Ok(runtime) => {
            tokio::task::spawn_blocking(ensure_base_image).await.expect("importing the base image panicked");
            Some(runtime.with_job_image(BASE_IMAGE))
        }
        Err(e) if std::env::var("SHIPLOG_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("SHIPLOG_REQUIRE_DOCKER=1, but {e}")
        }
        Err(e) => {
            eprintln!(
                "\n!!!!!!!! SKIPPING A DOCKER TEST: {e}.\n\
                 !!!!!!!! Set SHIPLOG_REQUIRE_DOCKER=1 to make Docker tests fail instead of skipping.\n"
            );
            None
        }
    }
}

/// Imports [`BASE_IMAGE`] unless the engine has it: `/bin/busybox` (which must be
/// static, as Debian's `busybox-static` is) with a symlink per applet. Tests running
/// at once in other processes may import it too; the last import wins, and every
/// import is equally good.
fn ensure_base_image() {
    static IMPORTED: Mutex<bool> = Mutex::new(false);
    let mut imported = IMPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if *imported || cli(&["image", "inspect", BASE_IMAGE]).is_ok() {
        *imported = true;
        return;
    }
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "the Docker tests need a static busybox at /bin/busybox: apt-get install busybox-static");
    let root = tempfile::tempdir().expect("a temporary directory");
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    let applets = Command::new(busybox).arg("--list").output().expect("running busybox --list");
    for applet in String::from_utf8_lossy(&applets.stdout).lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tar = Command::new("tar").arg("-C").arg(root.path()).args(["-c", "."]).output().expect("running tar");
    assert!(tar.status.success(), "tar: {}", String::from_utf8_lossy(&tar.stderr));
    let mut import = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin", "-", BASE_IMAGE])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running docker import");
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    let out = import.wait_with_output().unwrap();
    assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    *imported = true;
}

/// A fresh environment reference: a unique application name, so tests running at
/// once (and leftovers of earlier runs) never meet.
pub fn unique_env(environment: &str) -> EnvironmentRef {
    let id = uuid::Uuid::new_v4().simple().to_string();
    EnvironmentRef { application: format!("t{}", &id[..10]), environment: environment.to_string() }
}

/// IDs of the containers, networks or volumes (`kind`) labelled with `env`.
pub fn labelled(kind: &str, env: &EnvironmentRef) -> Vec<String> {
    let label = format!("label=shiplog.environment={}/{}", env.application, env.environment);
    let mut args = vec![kind, "ls", "-q", "--filter", &label];
    if kind == "container" {
        args.push("--all");
    }
    cli(&args).unwrap_or_else(|e| panic!("{e}")).lines().map(str::to_owned).collect()
}

/// Removes whatever carries `env`'s labels, and the application's image tags: the
/// clean-up of a test that failed halfway (a passing test has torn down already).
pub fn remove_leftovers(env: &EnvironmentRef) {
    for (kind, remove) in [("container", &["rm", "-f"][..]), ("network", &["rm"]), ("volume", &["rm", "-f"])] {
        let ids = labelled(kind, env);
        if !ids.is_empty() {
            let args: Vec<&str> = [kind].iter().chain(remove).copied().chain(ids.iter().map(String::as_str)).collect();
            let _ = cli(&args);
        }
    }
    let reference = format!("reference=shiplog/{}/*", env.application);
    if let Ok(tags) = cli(&["image", "ls", "--filter", &reference, "--format", "{{.Repository}}:{{.Tag}}"]) {
        for tag in tags.lines() {
            let _ = cli(&["image", "rm", tag]);
        }
    }
}

/// Runs the `docker` CLI; its standard output, or an error with its standard error.
pub fn cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("running docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}
