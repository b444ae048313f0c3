//! Building a service's image: the build context as a tar archive, sent to the
//! engine's builder; its output streamed into the run's log.

use std::collections::HashMap;
use std::path::Path;

use bollard::body_full;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;

use super::{DockerRuntime, LABEL_APPLICATION, LABEL_SERVICE, backend, is_not_found};
use crate::runtime::output::Lines;
use crate::runtime::{BuildRequest, Image, LogSink, LogStream, RuntimeError, name_or_digest, sha256_hex};

/// On the image: a digest of what else than the commit decides its content (the
/// context, Dockerfile, arguments and target), so a tag is only reused for the same.
const LABEL_BUILD: &str = "shiplog.build";

/// Builds `shiplog/<app>/<service>:<commit>` from `source_dir/context`, or reuses
/// the image with that tag when it was built from the same context, Dockerfile,
/// arguments and target. Returns the image id.
pub(super) async fn build(
    runtime: &DockerRuntime,
    req: &BuildRequest,
    logs: &dyn LogSink,
) -> Result<Image, RuntimeError> {
    let (context, source) = req.context_dir()?;
    let dockerfile = req.dockerfile.clone().unwrap_or_else(|| "Dockerfile".to_string());
    let tag = format!("shiplog/{}/{}:{}", req.env.application, req.service, tag_of(&req.commit));
    let key = build_key(&context, &dockerfile, req);

    match runtime.docker.inspect_image(&tag).await {
        Ok(image) => {
            let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
            if let (Some(id), Some(true)) = (image.id, labels.get(LABEL_BUILD).map(|built| *built == key)) {
                logs.line(LogStream::System, &format!("reusing image {tag} ({id})"));
                return Ok(Image(id));
            }
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(backend(format!("inspecting image {tag}"))(e)),
    }

    logs.line(LogStream::System, &format!("building {tag} from `{context}` with {dockerfile}"));
    let archive = tokio::task::spawn_blocking(move || context_archive(&source))
        .await
        .map_err(|e| RuntimeError::Failed(format!("archiving the build context panicked: {e}")))?
        .map_err(|source| RuntimeError::Io { context: "archiving the build context".to_string(), source })?;

    let labels = HashMap::from([
        (LABEL_BUILD.to_string(), key),
        (LABEL_APPLICATION.to_string(), req.env.application.clone()),
        (LABEL_SERVICE.to_string(), req.service.clone()),
    ]);
    let args: HashMap<String, String> = req.args.clone().into_iter().collect();
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(&dockerfile)
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .buildargs(&args);
    if let Some(target) = &req.target {
        options = options.target(target);
    }
    let mut output = Lines::new(LogStream::Stdout);
    let mut stream = runtime.docker.build_image(options.build(), None, Some(body_full(archive.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    output.push(text.as_bytes(), logs);
                }
                if let Some(status) = info.status {
                    logs.line(LogStream::System, &status);
                }
            }
            Err(e) => {
                output.finish(logs);
                return Err(build_failure(&req.service, e, logs));
            }
        }
    }
    output.finish(logs);

    let image = runtime.docker.inspect_image(&tag).await.map_err(backend(format!("inspecting image {tag}")))?;
    let id = image.id.ok_or_else(|| RuntimeError::Failed(format!("the engine reports no id for {tag}")))?;
    tracing::info!(service = %req.service, %tag, %id, "built image");
    logs.line(LogStream::System, &format!("built {tag} ({id})"));
    Ok(Image(id))
}

/// An error the builder reports (a failing step, a missing Dockerfile, a bad
/// argument) fails the build with its message, also written to the log; losing the
/// engine is the engine's error.
fn build_failure(service: &str, e: DockerError, logs: &dyn LogSink) -> RuntimeError {
    let message = match &e {
        DockerError::DockerStreamError { error } => error.clone(),
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        _ => return backend(format!("building the image of {service}"))(e),
    };
    let message = message.trim().to_string();
    logs.line(LogStream::Stderr, &message);
    RuntimeError::Failed(format!("building the image of {service} failed: {message}"))
}

/// The commit as an image tag: itself if it is a plain revision id.
fn tag_of(commit: &str) -> String {
    let plain = !commit.is_empty() && commit.len() <= 128 && commit.bytes().all(|b| b.is_ascii_alphanumeric());
    name_or_digest(commit, plain)
}

fn build_key(context: &str, dockerfile: &str, req: &BuildRequest) -> String {
    let what = serde_json::json!([context, dockerfile, req.args, req.target]);
    sha256_hex(&what.to_string())[..16].to_string()
}

/// The directory as a tar archive, without `.git` entries at any depth, symlinks
/// kept as symlinks, special files left out.
fn context_archive(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    append_dir(&mut archive, dir, Path::new(""))?;
    archive.into_inner()
}

fn append_dir(archive: &mut tar::Builder<Vec<u8>>, dir: &Path, relative: &Path) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    // A stable order gives the same archive, and the builder's cache a chance.
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        if entry.file_name() == ".git" {
            continue;
        }
        let (path, name) = (entry.path(), relative.join(entry.file_name()));
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            archive.append_dir(&name, &path)?;
            append_dir(archive, &path, &name)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            archive.append_path_with_name(&path, &name)?;
        } else {
            tracing::debug!(path = %path.display(), "not archiving a special file");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_leaves_out_git_and_keeps_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("public/.git")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        std::fs::write(dir.path().join("public/.git/config"), "x").unwrap();
        std::fs::write(dir.path().join("public/index.html"), "<h1>hi</h1>").unwrap();
        std::os::unix::fs::symlink("public/index.html", dir.path().join("index.html")).unwrap();

        let bytes = context_archive(dir.path()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().entry_type())
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let expected = [
            ("index.html", tar::EntryType::Symlink),
            ("public", tar::EntryType::Directory),
            ("public/index.html", tar::EntryType::Regular),
        ];
        assert_eq!(entries, expected.map(|(p, t)| (p.to_string(), t)));
    }

    #[test]
    fn commits_become_tags() {
        assert_eq!(tag_of("0123abcd"), "0123abcd");
        assert_eq!(tag_of("feature/x").len(), 41);
    }
}
