//! Which server the client commands talk to, with which token: `--url`/`--token`
//! (or `SHIPLOG_URL`/`SHIPLOG_TOKEN`) first, then the file `shiplog login` wrote.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shiplog_engine::secret::Secret;

use super::ClientError;

/// A server's address (`http://host:port`, no trailing slash) and a token for it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub url: String,
    pub token: Secret,
}

/// What `shiplog login` stores.
#[derive(Serialize, Deserialize)]
struct Saved {
    url: String,
    token: String,
}

impl Connection {
    /// The connection the flags name, completed from the saved file.
    pub fn resolve(url: Option<String>, token: Option<Secret>, file: &Path) -> Result<Connection, ClientError> {
        let saved = match (&url, &token) {
            (Some(_), Some(_)) => None,
            _ => read(file)?,
        };
        let url = url.or_else(|| saved.as_ref().map(|s| s.url.clone()));
        let token = token.or_else(|| saved.and_then(|s| Secret::new(s.token)));
        match (url, token) {
            (Some(url), Some(token)) => Ok(Connection { url: normalise(&url)?, token }),
            _ => Err(ClientError::NotConfigured),
        }
    }

    /// Stores this connection for later commands, readable by its owner only.
    pub fn save(&self, file: &Path) -> Result<(), ClientError> {
        let saved = Saved { url: self.url.clone(), token: self.token.expose_secret().to_owned() };
        let text = serde_json::to_string_pretty(&saved).expect("two strings serialise");
        let failed = |e: std::io::Error| ClientError::ConfigFile { path: file.to_owned(), reason: e.to_string() };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        // Written beside and renamed over the old file, so a failure midway leaves
        // the previous login intact; created 0600 so the token is never readable
        // by other users, even for a moment.
        let partial = file.with_extension("partial");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .map_err(failed)?;
            out.write_all(text.as_bytes()).and_then(|()| out.sync_all()).map_err(failed)?;
        }
        std::fs::rename(&partial, file).map_err(failed)
    }
}

/// Where `shiplog login` keeps its file: `$SHIPLOG_CONFIG`, else
/// `$XDG_CONFIG_HOME/shiplog/config.json`, else `~/.config/shiplog/config.json`.
pub fn default_file() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(file) = var("SHIPLOG_CONFIG") {
        return file;
    }
    let config = var("XDG_CONFIG_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    config.join("shiplog").join("config.json")
}

fn read(file: &Path) -> Result<Option<Saved>, ClientError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClientError::ConfigFile { path: file.to_owned(), reason: e.to_string() }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ClientError::ConfigFile { path: file.to_owned(), reason: e.to_string() })
}

/// The server's base address without a trailing slash; only http(s) URLs.
fn normalise(url: &str) -> Result<String, ClientError> {
    let url = url.trim().trim_end_matches('/');
    let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match host {
        Some(host) if !host.is_empty() => Ok(url.to_owned()),
        _ => Err(ClientError::BadUrl(url.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<Secret> {
        Secret::new(s.to_owned())
    }

    #[test]
    fn flags_win_over_the_saved_file_and_fill_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shiplog/config.json");
        assert_eq!(
            Connection::resolve(None, None, &file).unwrap_err().to_string(),
            "no server to talk to: run `shiplog login --url URL`, or set SHIPLOG_URL and SHIPLOG_TOKEN"
        );
        Connection { url: "http://saved:1".into(), token: secret("saved-token").unwrap() }.save(&file).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);

        let saved = Connection::resolve(None, None, &file).unwrap();
        assert_eq!((saved.url.as_str(), saved.token.expose_secret()), ("http://saved:1", "saved-token"));
        let mixed = Connection::resolve(Some("https://flag:2/".into()), None, &file).unwrap();
        assert_eq!((mixed.url.as_str(), mixed.token.expose_secret()), ("https://flag:2", "saved-token"));
        let flags = Connection::resolve(Some("http://f".into()), secret("flag-token"), &file).unwrap();
        assert_eq!(flags.token.expose_secret(), "flag-token");
    }

    #[test]
    fn a_bad_url_or_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let err = Connection::resolve(Some("localhost:8080".into()), secret("t"), &file).unwrap_err();
        assert_eq!(err.to_string(), "`localhost:8080` is not an http:// or https:// URL");
        std::fs::write(&file, "not json").unwrap();
        let err = Connection::resolve(None, None, &file).unwrap_err();
        assert_eq!(err.to_string(), format!("the login file {}: expected ident at line 1 column 2", file.display()),);
    }
}
