//! A real image registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry) serving on a free 127.0.0.1 port, its storage in a
//! temporary directory, stopped and removed on drop. The Docker engine reaches it
//! over plain HTTP: `127.0.0.0/8` is in the engine's default `insecure-registries`.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::eventually;

/// Where Debian installs the registry (package `docker-registry`).
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// A running registry; stopped on drop.
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl TestRegistry {
    /// Starts a registry that accepts pushes.
    pub async fn start() -> TestRegistry {
        TestRegistry::spawn(false).await
    }

    /// Starts a registry in read-only maintenance mode: it answers reads and
    /// refuses every push.
    pub async fn read_only() -> TestRegistry {
        TestRegistry::spawn(true).await
    }

    async fn spawn(read_only: bool) -> TestRegistry {
        let dir = tempfile::Builder::new().prefix("shiplog-registry").tempdir().expect("a temporary directory");
        // The port is free now; the registry binds it a moment later. Another
        // process taking it in between makes the wait below fail loudly.
        let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  \
             maintenance:\n    readonly:\n      enabled: {read_only}\nhttp:\n  addr: {addr}\n",
            root = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing the registry's configuration");
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {REGISTRY_BINARY} (apt-get install docker-registry): {e}"));
        let mut registry = TestRegistry { child, addr, _dir: dir };
        registry.wait_ready().await;
        registry
    }

    async fn wait_ready(&mut self) {
        let client = shiplog_engine::tls::client_builder().build().unwrap();
        let url = format!("http://{}/v2/", self.addr);
        let child = &mut self.child;
        eventually("the registry to answer /v2/", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{REGISTRY_BINARY} exited before it answered: {status}");
            }
            let request = client.get(&url).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(drop) }
        })
        .await;
    }

    /// `127.0.0.1:<port>`: the registry's host as image references name it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The manifest the registry serves for `reference` (a tag or a digest) of
    /// `path`, with the digest it names it by (`Docker-Content-Digest`); `None`
    /// when it has none.
    pub async fn manifest(&self, path: &str, reference: &str) -> Option<(String, serde_json::Value)> {
        let url = format!("http://{}/v2/{path}/manifests/{reference}", self.addr);
        let response = shiplog_engine::tls::client_builder()
            .build()
            .unwrap()
            .get(url)
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
            )
            .send()
            .await
            .expect("the registry answers");
        if !response.status().is_success() {
            return None;
        }
        let digest = response.headers().get("docker-content-digest")?.to_str().ok()?.to_owned();
        Some((digest, response.json().await.expect("a manifest is JSON")))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
