//! Images of the process runtime: directory snapshots of a service's build
//! context, `root/images/<app>/<service>/<commit>-<context hash>/`, shared by the
//! environments of an application and never removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal;
use nix::unistd::Pid;

use super::records::io_error;
use crate::runtime::{
    BuildRequest, Image, LogSink, LogStream, RuntimeError, copy_tree, fmt_duration, name_or_digest, sha256_hex,
};

/// Builds the image (see `ProcessRuntime`'s `build`) under the runtime's `root`.
pub(super) async fn build(root: &Path, req: &BuildRequest, logs: &dyn LogSink) -> Result<Image, RuntimeError> {
    let (context, source) = req.context_dir()?;
    if let Some(dockerfile) = &req.dockerfile {
        logs.line(
            LogStream::System,
            &format!(
                "the process runtime ignores the Dockerfile `{dockerfile}`: its image is a copy of the build context"
            ),
        );
    }
    if !req.args.is_empty() || req.target.is_some() {
        logs.line(LogStream::System, "the process runtime ignores build arguments and targets");
    }
    let images = root.join("images").join(&req.env.application).join(&req.service);
    let key = format!("{}-{}", commit_component(&req.commit), &sha256_hex(&context)[..12]);
    let target = images.join(&key);
    if target.is_dir() {
        logs.line(
            LogStream::System,
            &format!("reusing image {} (commit {}, context `{context}`)", target.display(), req.commit),
        );
        return Ok(image_of(&target));
    }

    logs.line(LogStream::System, &format!("building image of {} from `{context}` at {}", req.service, req.commit));
    let started = Instant::now();
    let (root, target_for_copy) = (root.to_path_buf(), target.clone());
    let outcome = tokio::task::spawn_blocking(move || snapshot(&source, &images, &target_for_copy, &root))
        .await
        .map_err(|e| RuntimeError::Failed(format!("building the image of {} panicked: {e}", req.service)))??;
    match outcome {
        Snapshot::Copied(files) => {
            tracing::info!(service = %req.service, image = %target.display(), files, "built image");
            logs.line(
                LogStream::System,
                &format!("copied {files} files into {} in {}", target.display(), fmt_duration(started.elapsed())),
            );
        }
        Snapshot::BuiltElsewhere => logs.line(
            LogStream::System,
            &format!("reusing image {} (built concurrently by another worker)", target.display()),
        ),
    }
    Ok(image_of(&target))
}

enum Snapshot {
    Copied(u64),
    /// Another worker renamed the same image into place first.
    BuiltElsewhere,
}

/// Copies `source` to `target` through a temporary directory next to it.
fn snapshot(source: &Path, images: &Path, target: &Path, root: &Path) -> Result<Snapshot, RuntimeError> {
    fs::create_dir_all(images).map_err(io_error(format!("creating {}", images.display())))?;
    remove_abandoned_copies(images);
    let temp = images.join(format!(".tmp-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    // The root may lie inside the context (a context of `.` in shiplog's own
    // directory); copying it would copy the copy.
    let skip = fs::canonicalize(root).ok();
    let source = fs::canonicalize(source).map_err(io_error(format!("reading {}", source.display())))?;
    let copied = copy_tree(&source, &temp, skip.as_deref())
        .map_err(|e| RuntimeError::Failed(format!("copying {} into an image failed: {e}", source.display())));
    let files = match copied {
        Ok(files) => files,
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            return Err(e);
        }
    };
    match fs::rename(&temp, target) {
        Ok(()) => Ok(Snapshot::Copied(files)),
        Err(_) if target.is_dir() => {
            let _ = fs::remove_dir_all(&temp);
            Ok(Snapshot::BuiltElsewhere)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            Err(io_error(format!("moving the image into {}", target.display()))(e))
        }
    }
}

/// Removes temporary copies whose builder process no longer exists (it crashed).
fn remove_abandoned_copies(images: &Path) {
    let Ok(entries) = fs::read_dir(images) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|name| name.strip_prefix(".tmp-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|pid| pid.parse::<i32>().ok()) else {
            continue;
        };
        if pid > 0 && signal::kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            tracing::info!(path = %entry.path().display(), "removing an abandoned image copy");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The commit as a path component: itself if it is a plain revision id.
fn commit_component(commit: &str) -> String {
    let plain =
        !commit.is_empty() && commit.len() <= 64 && commit.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    name_or_digest(commit, plain)
}

fn image_of(dir: &Path) -> Image {
    Image(dir.to_string_lossy().into_owned())
}

/// The directory of an image this runtime built.
pub(super) fn image_dir(image: &Image) -> Result<PathBuf, RuntimeError> {
    let dir = PathBuf::from(&image.0);
    if dir.is_absolute() && dir.is_dir() {
        Ok(dir)
    } else {
        Err(RuntimeError::Failed(format!(
            "image `{}` is not an image of the process runtime: no such directory (build it again)",
            image.0
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::testing::*;
    use super::*;
    use crate::runtime::Runtime;

    #[tokio::test]
    async fn build_copies_the_context_without_git_and_reuses_it() {
        let fx = Fixture::new();
        fx.write_source("app/hello.txt", "v1");
        fx.write_source("app/sub/run.sh", "#!/bin/sh\necho hi\n");
        fs::set_permissions(fx.source.path().join("app/sub/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fx.write_source("app/.git/HEAD", "ref: refs/heads/main");
        fx.write_source("outside.txt", "not in the context");
        std::os::unix::fs::symlink("hello.txt", fx.source.path().join("app/link")).unwrap();

        let logs = Collect::default();
        let mut request = fx.build_request("abc123", "app");
        request.dockerfile = Some("Dockerfile".to_string());
        let image = fx.runtime.build(&request, &logs).await.unwrap();
        assert!(logs.has(LogStream::System, "ignores the Dockerfile"), "{}", logs.dump());
        assert!(!logs.has(LogStream::System, "reusing image"));

        let dir = PathBuf::from(&image.0);
        assert!(dir.is_absolute());
        assert!(dir.starts_with(fx.runtime.root().join("images/shop/web")), "{}", dir.display());
        assert_eq!(fs::read_to_string(dir.join("hello.txt")).unwrap(), "v1");
        assert_eq!(fs::read_to_string(dir.join("sub/run.sh")).unwrap(), "#!/bin/sh\necho hi\n");
        assert_eq!(fs::metadata(dir.join("sub/run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(fs::read_link(dir.join("link")).unwrap(), Path::new("hello.txt"));
        assert!(!dir.join(".git").exists());
        assert!(!dir.join("outside.txt").exists());

        // Same commit and context (spelled differently): the image is reused as it is.
        fx.write_source("app/hello.txt", "v2");
        let logs = Collect::default();
        let again = fx.runtime.build(&fx.build_request("abc123", "./app/"), &logs).await.unwrap();
        assert_eq!(again, image);
        assert!(logs.has(LogStream::System, "reusing image"), "{}", logs.dump());
        assert!(!logs.has(LogStream::System, "building image"), "a reused image is not copied again: {}", logs.dump());
        assert_eq!(fs::read_to_string(dir.join("hello.txt")).unwrap(), "v1");

        // Another commit is another image.
        let newer = fx.runtime.build(&fx.build_request("def456", "app"), &Collect::default()).await.unwrap();
        assert_ne!(newer, image);
        assert_eq!(fs::read_to_string(Path::new(&newer.0).join("hello.txt")).unwrap(), "v2");

        // No temporary copies are left beside the images.
        let names: Vec<String> = fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[tokio::test]
    async fn build_of_the_whole_repository_leaves_out_git() {
        let fx = Fixture::new();
        fx.write_source("README", "hi");
        fx.write_source(".git/config", "[core]");
        let image = fx.runtime.build(&fx.build_request("abc", "."), &Collect::default()).await.unwrap();
        let dir = PathBuf::from(&image.0);
        assert_eq!(fs::read_to_string(dir.join("README")).unwrap(), "hi");
        assert!(!dir.join(".git").exists());
    }

    #[tokio::test]
    async fn build_of_a_missing_or_escaping_context_fails() {
        let fx = Fixture::new();
        match fx.runtime.build(&fx.build_request("abc", "nope"), &Collect::default()).await {
            Err(RuntimeError::Failed(message)) => {
                assert!(message.contains("`nope`") && message.contains("does not exist"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        match fx.runtime.build(&fx.build_request("abc", "../elsewhere"), &Collect::default()).await {
            Err(RuntimeError::Failed(message)) => assert!(message.contains("inside the repository"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(!fx.runtime.root().join("images/shop/web").exists());
    }
}
