//! Which repository addresses an application may have: the one rule, checked
//! when an application is created (`Lifecycle::create_application`).
//!
//! Remote addresses (`https://`, `http://`, `ssh://`, `git://`, scp-like
//! `git@host:path`) are allowed. A local address (a path, or a `file://` URL)
//! lets whoever creates applications make the server read any repository on
//! its disk, so it is allowed only under a root an admin configured
//! (`--repository-root`), after resolving symbolic links and `..`, and never
//! when it reaches the server's own files (its data directory, its work
//! directories), whatever the roots. Without a root, no local address is
//! allowed. An address that carries a password (`https://user:token@host/…`)
//! is refused: it would be stored in the application's event and shown by the
//! API; git's credential helpers are the place for it. `docs/security.md`
//! documents the rules.

use std::path::{Component, Path, PathBuf};

/// Why a repository address was refused; each message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryRefused {
    #[error(
        "local repositories are not allowed on this server: give a remote URL (https, ssh), or ask an admin to \
         allow a directory with `--repository-root`"
    )]
    LocalNotAllowed,
    #[error("the local repository {0} is outside the allowed repository roots ({1})")]
    OutsideRoots(String, String),
    #[error("the local repository {0} is inside the server's own files: it may not be a repository")]
    ServerFiles(String),
    #[error("the repository address may not carry a password or token: use git's credential helper instead")]
    Credentials,
    #[error("the repository address uses the `{0}` transport: use https, http, ssh, git or a local path")]
    Transport(String),
    #[error("the local repository {0} cannot be resolved: {1}")]
    Unresolvable(String, String),
}

/// The roots local repositories may live under and the server's own
/// directories they may not reach. Paths are kept canonical.
#[derive(Debug, Clone, Default)]
pub struct RepositoryPolicy {
    roots: Vec<PathBuf>,
    forbidden: Vec<PathBuf>,
}

impl RepositoryPolicy {
    /// No local repository at all: the default.
    pub fn remote_only() -> Self {
        Self::default()
    }

    /// Local repositories under `roots` (each resolved now; one that does not
    /// exist is an error, so a typo fails at start rather than refusing later).
    pub fn with_roots(roots: &[PathBuf]) -> std::io::Result<Self> {
        let roots = roots.iter().map(|root| std::fs::canonicalize(root)).collect::<Result<_, _>>()?;
        Ok(RepositoryPolicy { roots, forbidden: Vec::new() })
    }

    /// The server's own directories, refused even under a root. One that does
    /// not exist yet is resolved as far as it exists.
    pub fn forbidding(mut self, own: impl IntoIterator<Item = PathBuf>) -> Self {
        self.forbidden.extend(own.into_iter().filter_map(|dir| resolve(&dir).ok()));
        self
    }

    /// Whether an application may have `address` as its repository.
    pub fn check(&self, address: &str) -> Result<(), RepositoryRefused> {
        let path = match Address::parse(address) {
            Address::Remote { credentials: true } => return Err(RepositoryRefused::Credentials),
            Address::Remote { credentials: false } => return Ok(()),
            Address::Unsupported(transport) => return Err(RepositoryRefused::Transport(transport)),
            Address::Local(path) => path,
        };
        if self.roots.is_empty() {
            return Err(RepositoryRefused::LocalNotAllowed);
        }
        let resolved =
            resolve(&path).map_err(|e| RepositoryRefused::Unresolvable(path.display().to_string(), e.to_string()))?;
        let shown = resolved.display().to_string();
        // Either way round: a repository inside the data directory, or one that
        // holds it (a clone of the whole disk would read it too).
        if self.forbidden.iter().any(|own| resolved.starts_with(own) || own.starts_with(&resolved)) {
            return Err(RepositoryRefused::ServerFiles(shown));
        }
        if !self.roots.iter().any(|root| resolved.starts_with(root)) {
            let roots = self.roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(RepositoryRefused::OutsideRoots(shown, roots));
        }
        Ok(())
    }
}

/// What git would make of an address.
#[derive(Debug, PartialEq, Eq)]
enum Address {
    Remote { credentials: bool },
    Local(PathBuf),
    Unsupported(String),
}

/// Transports that reach another machine.
const REMOTE_SCHEMES: &[&str] = &["https", "http", "ssh", "git", "git+ssh", "ssh+git"];

impl Address {
    /// Git's own reading: `scheme://…` is a URL; `<transport>::…` a remote
    /// helper; `host:path` with the colon before any slash is scp-like ssh;
    /// anything else a path.
    fn parse(address: &str) -> Address {
        if let Some((scheme, rest)) = address.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if scheme == "file" {
                // `file:///srv/x` and `file://localhost/srv/x` name the same path.
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                return Address::Local(PathBuf::from(path));
            }
            if !REMOTE_SCHEMES.contains(&scheme.as_str()) {
                return Address::Unsupported(scheme);
            }
            let authority = rest.split('/').next().unwrap_or("");
            let credentials = authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':'));
            return Address::Remote { credentials };
        }
        if let Some((transport, _)) = address.split_once("::") {
            return Address::Unsupported(transport.to_owned());
        }
        match (address.find(':'), address.find('/')) {
            (Some(colon), slash) if colon > 0 && slash.is_none_or(|slash| colon < slash) => {
                Address::Remote { credentials: false }
            }
            _ => Address::Local(PathBuf::from(address)),
        }
    }
}

/// `path` made absolute with every symbolic link and `..` resolved. A part that
/// does not exist (yet) is taken as written: it cannot be a link, so a `..` after
/// it only goes back up.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let mut resolved = PathBuf::from("/");
    for component in std::path::absolute(path)?.components() {
        match component {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            // What is resolved so far holds no link, so its parent is the real one.
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                resolved.push(name);
                match std::fs::canonicalize(&resolved) {
                    Ok(real) => resolved = real,
                    // A dangling link could be pointed anywhere later: unresolvable.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && std::fs::symlink_metadata(&resolved).is_err() => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(resolved)
}

/// `text` with the password of every URL in it (`scheme://user:password@host`)
/// replaced by `***`: for git's messages, which repeat the address they were given.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        let authority_end = after.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"');
        let authority = &after[..authority_end.unwrap_or(after.len())];
        match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_git_reads_them() {
        let remote = Address::Remote { credentials: false };
        assert_eq!(Address::parse("https://github.com/o/r.git"), remote);
        assert_eq!(Address::parse("git@github.com:o/r"), remote);
        assert_eq!(Address::parse("ssh://git@host:22/o/r"), remote);
        assert_eq!(Address::parse("https://alice:tok@host/o/r"), Address::Remote { credentials: true });
        assert_eq!(Address::parse("https://alice@host/o/r"), remote);
        assert_eq!(Address::parse("file:///srv/r"), Address::Local("/srv/r".into()));
        assert_eq!(Address::parse("file://localhost/srv/r"), Address::Local("/srv/r".into()));
        assert_eq!(Address::parse("/srv/r"), Address::Local("/srv/r".into()));
        assert_eq!(Address::parse("./a:b"), Address::Local("./a:b".into()));
        assert_eq!(Address::parse("ext::sh -c touch% /tmp/x"), Address::Unsupported("ext".into()));
        assert_eq!(Address::parse("fd::3"), Address::Unsupported("fd".into()));
    }

    #[test]
    fn without_a_root_no_local_repository_is_allowed() {
        let policy = RepositoryPolicy::remote_only();
        assert_eq!(policy.check("/srv/r"), Err(RepositoryRefused::LocalNotAllowed));
        assert_eq!(policy.check("file:///srv/r"), Err(RepositoryRefused::LocalNotAllowed));
        assert_eq!(policy.check("https://github.com/o/r"), Ok(()));
        assert_eq!(policy.check("https://a:b@github.com/o/r"), Err(RepositoryRefused::Credentials));
    }

    #[test]
    fn a_local_repository_is_judged_where_it_really_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repos");
        let data = dir.path().join("repos/data");
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), root.join("link")).unwrap();
        let policy = RepositoryPolicy::with_roots(std::slice::from_ref(&root)).unwrap().forbidding([data.clone()]);
        let canonical = |p: &Path| resolve(p).unwrap().display().to_string();
        assert_eq!(policy.check(root.join("app").to_str().unwrap()), Ok(()));
        assert_eq!(policy.check(&format!("file://{}", root.join("app").display())), Ok(()));
        let roots = canonical(&root);
        let escaped = canonical(&dir.path().join("elsewhere"));
        assert_eq!(
            policy.check(root.join("app/../../elsewhere").to_str().unwrap()),
            Err(RepositoryRefused::OutsideRoots(escaped.clone(), roots.clone()))
        );
        assert_eq!(
            policy.check(root.join("link").to_str().unwrap()),
            Err(RepositoryRefused::OutsideRoots(escaped, roots))
        );
        assert_eq!(
            policy.check(data.join("pg").to_str().unwrap()),
            Err(RepositoryRefused::ServerFiles(canonical(&data.join("pg"))))
        );
        // A repository that holds the server's files reads them too.
        assert_eq!(policy.check(root.to_str().unwrap()), Err(RepositoryRefused::ServerFiles(canonical(&root))));
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_credentials("fatal: repository 'https://alice:s3cret@host/o/r.git/' not found"),
            "fatal: repository 'https://alice:***@host/o/r.git/' not found"
        );
        assert_eq!(redact_credentials("ssh://git@host/o/r and /srv/x"), "ssh://git@host/o/r and /srv/x");
        assert_eq!(redact_credentials("a https://u:p@h b http://x:y@z"), "a https://u:***@h b http://x:***@z");
    }
}
