//! Image references a registry and a cluster understand: the registry shiplog
//! pushes to, a repository in it, a content digest, and an image pinned by digest
//! (`127.0.0.1:5000/team/hello/web@sha256:…`). Each is parsed once from text and
//! cannot hold a bad value, so what reaches the Docker engine or a pod spec is a
//! reference they accept.
//!
//! The grammar is the distribution reference grammar the Docker engine and
//! Kubernetes use: a host (`name.tld`, `localhost` or an IPv4 address, with an
//! optional port), then path components of lowercase letters and digits joined by
//! `.`, `_`, `__` or dashes. A registry must name its host explicitly (a `.`, a
//! port or `localhost`), so that no engine mistakes it for a Docker Hub namespace.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a text is not a registry, repository, digest or pinned image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {what}: {why}")]
pub struct ImageRefError {
    text: String,
    what: &'static str,
    why: String,
}

fn refuse(text: &str, what: &'static str, why: impl Into<String>) -> ImageRefError {
    ImageRefError { text: text.to_owned(), what, why: why.into() }
}

/// Where built images are pushed: a registry host and an optional namespace path,
/// e.g. `127.0.0.1:5000/team`. Images go to `<registry>/<app>/<service>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Registry {
    host: String,
    /// Path components after the host, each valid on its own.
    path: Vec<String>,
}

impl Registry {
    /// `host[:port]`, as the engine's `insecure-registries` and credentials name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the host is on the loopback network (`localhost`, `127.0.0.0/8`),
    /// which the Docker engine reaches over plain HTTP unless told otherwise.
    pub fn is_loopback(&self) -> bool {
        let name = self.host.rsplit_once(':').map_or(self.host.as_str(), |(name, _)| name);
        name == "localhost" || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl FromStr for Registry {
    type Err = ImageRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "a registry (`host[:port][/namespace]`)";
        let text = text.strip_suffix('/').unwrap_or(text);
        let (host, rest) = text.split_once('/').map_or((text, None), |(h, r)| (h, Some(r)));
        check_host(host).map_err(|why| refuse(text, WHAT, why))?;
        let has_port = host.contains(':');
        if !(has_port || host.contains('.') || host == "localhost") {
            return Err(refuse(
                text,
                WHAT,
                "the host needs a `.`, a port or to be `localhost` (otherwise it reads as a Docker Hub namespace)",
            ));
        }
        let path = match rest {
            None => Vec::new(),
            Some(rest) => rest
                .split('/')
                .map(|c| check_path_component(c).map(|()| c.to_owned()))
                .collect::<Result<_, _>>()
                .map_err(|why| refuse(text, WHAT, why))?,
        };
        Ok(Registry { host: host.to_owned(), path })
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        self.path.iter().try_for_each(|c| write!(f, "/{c}"))
    }
}

impl From<Registry> for String {
    fn from(registry: Registry) -> String {
        registry.to_string()
    }
}

impl TryFrom<String> for Registry {
    type Error = ImageRefError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// A repository in a registry, host included: `127.0.0.1:5000/team/hello/web`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Repository(String);

impl Repository {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The registry's host (`host[:port]`).
    pub fn host(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(host, _)| host)
    }

    /// The path inside the registry, as its `/v2/<path>/…` API names it.
    pub fn path(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, path)| path)
    }
}

impl FromStr for Repository {
    type Err = ImageRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "a repository (`host[:port]/path`)";
        let registry: Registry = text.parse().map_err(|e: ImageRefError| refuse(text, WHAT, e.why))?;
        if registry.path.is_empty() {
            return Err(refuse(text, WHAT, "it names a registry but no repository in it"));
        }
        if text.len() > 255 {
            return Err(refuse(text, WHAT, "longer than 255 characters"));
        }
        Ok(Repository(registry.to_string()))
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Repository> for String {
    fn from(repository: Repository) -> String {
        repository.0
    }
}

impl TryFrom<String> for Repository {
    type Error = ImageRefError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// An image's content digest as registries report it: `sha256:` and 64 lowercase
/// hex digits (the digest of the image's manifest).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageDigest(String);

impl ImageDigest {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImageDigest {
    type Err = ImageRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| refuse(text, "an image digest", "it must start with `sha256:`"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(refuse(text, "an image digest", "`sha256:` must be followed by 64 lowercase hex digits"));
        }
        Ok(ImageDigest(text.to_owned()))
    }
}

impl fmt::Display for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ImageDigest> for String {
    fn from(digest: ImageDigest) -> String {
        digest.0
    }
}

impl TryFrom<String> for ImageDigest {
    type Error = ImageRefError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// An image pinned by digest, `<repository>@sha256:…`: what the release stage
/// records and what services and tasks are deployed from once a registry is
/// configured. The same text in a pod spec or `docker pull` names exactly these
/// bytes, whatever the tag points at later.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    repository: Repository,
    digest: ImageDigest,
}

impl ImageRef {
    pub fn new(repository: Repository, digest: ImageDigest) -> ImageRef {
        ImageRef { repository, digest }
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn digest(&self) -> &ImageDigest {
        &self.digest
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    /// Reads `<repository>@<digest>`; a tag before the digest
    /// (`repo:tag@sha256:…`, as `docker` prints it) is accepted and dropped: the
    /// digest alone names the image.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "an image pinned by digest (`host/path@sha256:…`)";
        let (name, digest) = text.split_once('@').ok_or_else(|| refuse(text, WHAT, "it has no `@sha256:…` digest"))?;
        let digest: ImageDigest = digest.parse().map_err(|e: ImageRefError| refuse(text, WHAT, e.why))?;
        let name = match name.rsplit_once(':') {
            // A `:` after the last `/` starts a tag; one before it is the port.
            Some((repository, tag)) if !tag.contains('/') => {
                check_tag(tag).map_err(|why| refuse(text, WHAT, why))?;
                repository
            }
            _ => name,
        };
        let repository: Repository = name.parse().map_err(|e: ImageRefError| refuse(text, WHAT, e.why))?;
        Ok(ImageRef { repository, digest })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repository, self.digest)
    }
}

impl From<ImageRef> for String {
    fn from(image: ImageRef) -> String {
        image.to_string()
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ImageRefError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// Checks a tag: letters, digits, `_`, `.` and `-`, not starting with `.` or `-`,
/// at most 128 characters.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid { Ok(()) } else { Err(format!("the tag `{tag}` is not a valid tag")) }
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = host.rsplit_once(':').map_or((host, None), |(name, port)| (name, Some(port)));
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("the port `{port}` is not a port number"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(format!("the host `{name}` is not a host name or IPv4 address"));
    }
    Ok(())
}

fn check_path_component(component: &str) -> Result<(), String> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut valid = bytes.first().is_some_and(|&b| alnum(b)) && bytes.last().is_some_and(|&b| alnum(b));
    // Separators are `.`, `_`, `__` or any number of `-`, always between alphanumerics.
    let mut i = 0;
    while valid && i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
    }
    if valid {
        Ok(())
    } else {
        Err(format!(
            "the path component `{component}` must be lowercase letters and digits, joined by `.`, `_`, `__` or `-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_registry_names_its_host_and_namespace() {
        let registry: Registry = "127.0.0.1:5000/team".parse().unwrap();
        assert_eq!((registry.host(), registry.is_loopback()), ("127.0.0.1:5000", true));
        assert_eq!(registry.to_string(), "127.0.0.1:5000/team");
        assert!(!"registry.example.com/a".parse::<Registry>().unwrap().is_loopback());
        assert!("localhost:5000".parse::<Registry>().unwrap().is_loopback());
        assert_eq!("ghcr.io/acme/".parse::<Registry>().unwrap().to_string(), "ghcr.io/acme");
    }

    #[test]
    fn bad_registries_are_refused_with_the_reason() {
        let err = |text: &str| text.parse::<Registry>().unwrap_err().to_string();
        assert_eq!(
            err("team/images"),
            "`team/images` is not a registry (`host[:port][/namespace]`): the host needs a `.`, a port or to be \
             `localhost` (otherwise it reads as a Docker Hub namespace)"
        );
        assert_eq!(
            err("127.0.0.1:99999/x"),
            "`127.0.0.1:99999/x` is not a registry (`host[:port][/namespace]`): the port `99999` is not a port number"
        );
        assert_eq!(
            err("ghcr.io/Team"),
            "`ghcr.io/Team` is not a registry (`host[:port][/namespace]`): the path component `Team` must be \
             lowercase letters and digits, joined by `.`, `_`, `__` or `-`"
        );
        assert!(err("ghcr.io/a..b").ends_with(
            "the path component `a..b` must be lowercase letters and digits, joined by `.`, `_`, `__` or `-`"
        ));
        assert!("ghcr.io/a__b/c--d/e.f".parse::<Registry>().is_ok());
    }

    #[test]
    fn a_pinned_image_reads_and_prints_the_same() {
        let text = format!("127.0.0.1:5000/team/hello/web@sha256:{HEX}");
        let image: ImageRef = text.parse().unwrap();
        assert_eq!(image.to_string(), text);
        assert_eq!(image.repository().path(), "team/hello/web");
        assert_eq!(image.repository().host(), "127.0.0.1:5000");
        assert_eq!(image.digest().as_str(), format!("sha256:{HEX}"));
        let tagged: ImageRef = format!("127.0.0.1:5000/team/hello/web:abc@sha256:{HEX}").parse().unwrap();
        assert_eq!(tagged, image, "a tag beside the digest is dropped");
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), image);
    }

    #[test]
    fn unpinned_or_malformed_images_are_refused() {
        let err = |text: &str| text.parse::<ImageRef>().unwrap_err().to_string();
        assert_eq!(
            err("127.0.0.1:5000/team/web:latest"),
            "`127.0.0.1:5000/team/web:latest` is not an image pinned by digest (`host/path@sha256:…`): it has no \
             `@sha256:…` digest"
        );
        assert_eq!(
            err("127.0.0.1:5000/team/web@sha256:abc"),
            "`127.0.0.1:5000/team/web@sha256:abc` is not an image pinned by digest (`host/path@sha256:…`): \
             `sha256:` must be followed by 64 lowercase hex digits"
        );
        assert_eq!(
            err(&format!("127.0.0.1:5000@sha256:{HEX}")),
            format!(
                "`127.0.0.1:5000@sha256:{HEX}` is not an image pinned by digest (`host/path@sha256:…`): it names a \
                 registry but no repository in it"
            )
        );
        assert!(serde_json::from_str::<ImageDigest>("\"md5:00\"").is_err());
    }
}
