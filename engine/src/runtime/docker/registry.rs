//! The release stage on the Docker engine: a built image tagged
//! `<registry>/<app>/<service>:<commit>` and pushed, then known by the digest the
//! registry stored; and an image pinned by digest pulled when this engine does not
//! hold it (a worker on another machine than the one that built it).
//!
//! The engine does the talking to the registry: it reaches registries on the
//! loopback network (`127.0.0.0/8`, its default `insecure-registries`) over plain
//! HTTP and all others over TLS, with the credentials of its own configuration.

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{CreateImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder};
use futures::StreamExt;

use super::{DockerRuntime, backend, is_not_found};
use crate::runtime::{ImageRef, LogSink, LogStream, PushRequest, RuntimeError};

impl DockerRuntime {
    /// Tags the built image and pushes it; returns it pinned by the digest the
    /// registry answered with. The engine skips layers the registry holds already,
    /// so pushing the same image again is cheap and gives the same digest.
    pub(super) async fn push_image(&self, req: &PushRequest, logs: &dyn LogSink) -> Result<ImageRef, RuntimeError> {
        let repository = req.repository.as_str();
        let reference = format!("{repository}:{}", req.tag);
        let options = TagImageOptionsBuilder::new().repo(repository).tag(&req.tag).build();
        match self.docker.tag_image(&req.image.0, Some(options)).await {
            Err(e) if is_not_found(&e) => {
                return Err(RuntimeError::Failed(format!(
                    "cannot push {}: no image {} on the engine (was it built on another one?)",
                    req.service, req.image.0
                )));
            }
            other => other.map_err(backend(format!("tagging {} as {reference}", req.image.0)))?,
        }
        logs.line(LogStream::System, &format!("pushing {reference}"));
        let options = PushImageOptionsBuilder::new().tag(&req.tag).build();
        let mut stream = self.docker.push_image(repository, Some(options), None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(refused(&reference, &detail, logs));
                    }
                    // Per-layer progress lines ("Preparing", "Pushing") carry an id and
                    // would flood the log; the summary lines do not.
                    if let Some(status) = info.status.filter(|_| info.progress_detail.is_none()) {
                        logs.line(LogStream::System, &status);
                    }
                }
                Err(DockerError::DockerStreamError { error }) => return Err(refused(&reference, &error, logs)),
                Err(DockerError::DockerResponseServerError { message, .. }) => {
                    return Err(refused(&reference, &message, logs));
                }
                Err(e) => return Err(backend(format!("pushing {reference}"))(e)),
            }
        }
        let image = self.pinned(&req.repository, &reference).await?;
        tracing::info!(service = %req.service, %image, "pushed image");
        logs.line(LogStream::System, &format!("pushed {reference} as {image}"));
        Ok(image)
    }

    /// The pushed image by digest: the engine records the registry's digest in the
    /// image's `RepoDigests` once a push succeeded.
    async fn pinned(&self, repository: &crate::runtime::Repository, reference: &str) -> Result<ImageRef, RuntimeError> {
        let inspect =
            self.docker.inspect_image(reference).await.map_err(backend(format!("inspecting image {reference}")))?;
        let prefix = format!("{repository}@");
        inspect
            .repo_digests
            .unwrap_or_default()
            .iter()
            .find(|d| d.starts_with(&prefix))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| RuntimeError::Failed(format!("the engine reports no digest for {reference} after its push")))
    }

    /// Makes sure the engine holds `image`: an image pinned by digest that it
    /// lacks is pulled from its registry. Anything else (an image id, a local tag)
    /// is left to the container's creation, which names what is missing.
    pub(super) async fn ensure_image(&self, image: &str, logs: &dyn LogSink) -> Result<(), RuntimeError> {
        let Ok(pinned) = image.parse::<ImageRef>() else { return Ok(()) };
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(backend(format!("inspecting image {image}"))(e)),
        }
        logs.line(LogStream::System, &format!("pulling {pinned}"));
        let options = CreateImageOptionsBuilder::new().from_image(&pinned.to_string()).build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let message = match item {
                Ok(info) => match info.error_detail.and_then(|d| d.message) {
                    Some(message) => message,
                    None => continue,
                },
                Err(DockerError::DockerStreamError { error }) => error,
                Err(DockerError::DockerResponseServerError { message, .. }) => message,
                Err(e) => return Err(backend(format!("pulling {pinned}"))(e)),
            };
            let message = message.trim();
            logs.line(LogStream::Stderr, message);
            return Err(RuntimeError::Failed(format!("pulling {pinned} failed: {message}")));
        }
        Ok(())
    }
}

/// The registry (or the engine on its behalf) refused the push: the run fails with
/// its message, which is also in the log.
fn refused(reference: &str, message: &str, logs: &dyn LogSink) -> RuntimeError {
    let message = message.trim();
    logs.line(LogStream::Stderr, message);
    RuntimeError::Failed(format!("pushing {reference} failed: {message}"))
}
