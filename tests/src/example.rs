//! The example application (`examples/hello`) as tests use it: a git repository of
//! its own in a scratch directory, on a free port, with helpers to commit new
//! versions and read the page it serves.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A scratch directory every user can enter (tempfile's are 0700, which the
/// unprivileged PostgreSQL user and service processes could not use); removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The repository rule that allows local repositories in this directory
    /// (and nowhere else): what an admin's `--repository-root` gives.
    pub fn repositories(&self) -> shiplog_engine::repository::RepositoryPolicy {
        shiplog_engine::repository::RepositoryPolicy::with_roots(std::slice::from_ref(&self.0))
            .expect("the scratch directory exists")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example application checked into a fresh repository.
pub struct ExampleRepo {
    pub dir: PathBuf,
    /// The port its web service listens on (the template's 18080, replaced).
    pub port: u16,
}

impl ExampleRepo {
    /// Application `name` of this repository with `template` and, if given,
    /// `variables`, and its environment `staging` tracking `main`, not yet set up.
    pub async fn create_staging(
        &self,
        lifecycle: &shiplog_engine::lifecycle::Lifecycle,
        name: &str,
        template: &str,
        variables: Option<&str>,
    ) -> (shiplog_engine::domain::Name, shiplog_engine::domain::Name) {
        use shiplog_engine::domain::environment::{EnvironmentKind, EnvironmentSpec, Tracking};
        let meta = shiplog_engine::store::Metadata::default();
        let now = chrono::Utc::now();
        let (app, env): (shiplog_engine::domain::Name, shiplog_engine::domain::Name) =
            (name.parse().unwrap(), "staging".parse().unwrap());
        lifecycle.create_application(&app, self.dir.to_str().unwrap(), &meta, now).await.unwrap();
        lifecycle.update_template(&app, template, &meta, now).await.unwrap();
        if let Some(variables) = variables {
            lifecycle.update_variables(&app, variables, &meta, now).await.unwrap();
        }
        let spec = EnvironmentSpec {
            application: app.clone(),
            name: env.clone(),
            kind: EnvironmentKind::Staging,
            tracking: Tracking::Branch("main".into()),
            ttl_seconds: None,
            drift_mode: Default::default(),
        };
        lifecycle.create_environment(&spec, &meta, now).await.unwrap();
        (app, env)
    }

    /// Copies `examples/hello` into `scratch/repo` and commits it as v1 on `main`.
    pub fn create(scratch: &Scratch) -> ExampleRepo {
        let dir = scratch.path().join("repo");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello"), &dir);
        git(&dir, &["init", "--quiet", "--initial-branch=main"]);
        git(&dir, &["add", "."]);
        git(&dir, &["commit", "--quiet", "-m", "v1"]);
        ExampleRepo { dir, port: free_port() }
    }

    /// The application template, listening on this repository's port.
    pub fn template(&self) -> String {
        std::fs::read_to_string(self.dir.join("shiplog.yaml"))
            .expect("reading shiplog.yaml")
            .replace("18080", &self.port.to_string())
    }

    /// The application template for the docker runtime: the image is built `FROM`
    /// the tests' base image ([`crate::docker::BASE_IMAGE`]).
    pub fn docker_template(&self) -> String {
        let template = self.template();
        let build = "build: { context: \".\" }";
        assert!(template.contains(build), "{template}");
        let from_base = format!("build: {{ context: \".\", args: {{ BASE: \"{}\" }} }}", crate::docker::BASE_IMAGE);
        template.replace(build, &from_base)
    }

    /// Commits a new version of the page.
    pub fn commit_version(&self, version: u32) {
        std::fs::write(self.dir.join("public/index.html"), format!("<h1>hello from shiplog v{version}</h1>\n"))
            .unwrap();
        git(&self.dir, &["commit", "--quiet", "-am", &format!("v{version}")]);
    }

    /// Replaces the release command's script and commits it.
    pub fn commit_release_script(&self, script: &str) {
        std::fs::write(self.dir.join("release.sh"), script).unwrap();
        git(&self.dir, &["commit", "--quiet", "-am", "new release script"]);
    }

    /// The page the environment serves on 127.0.0.1 (the process runtime), or
    /// `None` when nothing answers.
    pub async fn page(&self) -> Option<String> {
        self.page_at(IpAddr::from([127, 0, 0, 1])).await
    }

    /// The page served on `ip` (a container's address), or `None` when nothing answers.
    pub async fn page_at(&self, ip: IpAddr) -> Option<String> {
        http_get(SocketAddr::new(ip, self.port)).await
    }
}

/// The example's release gate: `release.sh` refuses to migrate while the gate at
/// `$RELEASE_GATE` (`host:port`) says `closed`. A TCP server on every address of this
/// machine that writes `open` or `closed` to each connection, so a release command
/// reaches it as a local process (127.0.0.1) and from a container
/// (`host.docker.internal`). Open until closed; stops when dropped.
pub struct Gate {
    pub port: u16,
    closed: Arc<AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

impl Gate {
    pub async fn start() -> Gate {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("binding the gate");
        let port = listener.local_addr().unwrap().port();
        let closed = Arc::new(AtomicBool::new(false));
        let state = closed.clone();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer: &[u8] = if state.load(Ordering::SeqCst) { b"closed\n" } else { b"open\n" };
                let _ = stream.write_all(answer).await;
            }
        });
        Gate { port, closed, server }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }

    /// The gate's address for a release command that reaches this machine as `host`.
    pub fn address(&self, host: &str) -> String {
        format!("{host}:{}", self.port)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The trimmed body of `GET /` on `address` (whatever the status), or `None`
/// when nothing answers within 5 seconds.
pub async fn http_get(address: SocketAddr) -> Option<String> {
    let client = shiplog_engine::tls::client_builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let response = client.get(format!("http://{address}/")).send().await.ok()?;
    Some(response.text().await.ok()?.trim().to_owned())
}

pub fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=shiplog tests", "-c", "user.email=tests@shiplog.invalid"])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `program` is on PATH.
pub fn installed(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}
