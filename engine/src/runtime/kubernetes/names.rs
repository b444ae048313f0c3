//! Kubernetes names: what an environment's namespace and a service's objects are
//! called on the cluster.

use std::fmt;
use std::str::FromStr;

use crate::runtime::{EnvironmentRef, sha256_hex};

/// The longest DNS label (RFC 1123), and so the longest namespace or Service name.
const MAX_LABEL: usize = 63;
/// Hex digits of the digest that ends a mapped name: 32 bits, so two different
/// long names share a mapping with odds of one in four billion, and ownership
/// labels catch even that (ARCHITECTURE.md, `runtime/kubernetes/`).
const SUFFIX: usize = 8;

/// A name valid for every object shiplog creates: a DNS label as RFC 1035 writes it
/// (what Services require, the strictest rule): 1 to 63 lowercase letters, digits
/// and `-`, starting with a letter and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct K8sName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a Kubernetes name: 1 to 63 lowercase letters, digits and `-`, starting with a letter and ending with a letter or digit"
)]
pub struct K8sNameError(pub String);

impl K8sName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `text` itself when it is a valid name; otherwise, deterministically, a
    /// valid name made of it: lowercased, other characters as `-`, cut to fit, and
    /// a digest of the whole original text after it, so two texts that read alike
    /// (`Web_1`, `web-1`) stay apart.
    pub fn mapped(text: &str) -> K8sName {
        if let Ok(name) = text.parse() {
            return name;
        }
        let mut stem: String = text
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
            .collect();
        if !stem.starts_with(|c: char| c.is_ascii_lowercase()) {
            stem.insert(0, 'x');
        }
        stem.truncate(MAX_LABEL - SUFFIX - 1);
        let stem = stem.trim_end_matches('-');
        K8sName(format!("{stem}-{}", &sha256_hex(text)[..SUFFIX]))
    }

    /// The namespace of an environment: `<application>-<environment>`, mapped when
    /// longer than a label allows.
    pub fn namespace(env: &EnvironmentRef) -> K8sName {
        K8sName::mapped(&format!("{}-{}", env.application, env.environment))
    }
}

impl FromStr for K8sName {
    type Err = K8sNameError;

    fn from_str(s: &str) -> Result<Self, K8sNameError> {
        let valid = (1..=MAX_LABEL).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid { Ok(K8sName(s.to_owned())) } else { Err(K8sNameError(s.to_owned())) }
    }
}

impl fmt::Display for K8sName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(application: &str, environment: &str) -> EnvironmentRef {
        EnvironmentRef { application: application.into(), environment: environment.into() }
    }

    #[test]
    fn names_follow_the_dns_label_rule() {
        for good in ["a", "web", "hello-staging", "pr-12", &"a".repeat(63)] {
            assert_eq!(good.parse::<K8sName>().unwrap().as_str(), good);
        }
        for bad in ["", "Web", "1web", "web-", "-web", "we_b", "we.b", &"a".repeat(64)] {
            assert_eq!(bad.parse::<K8sName>(), Err(K8sNameError(bad.to_owned())), "{bad:?}");
        }
    }

    #[test]
    fn a_namespace_is_application_dash_environment_while_it_fits() {
        assert_eq!(K8sName::namespace(&env("hello", "staging")).as_str(), "hello-staging");
        assert_eq!(K8sName::namespace(&env("shop", "pr-12")).as_str(), "shop-pr-12");
        let longest_plain = env(&"a".repeat(31), &"b".repeat(31));
        assert_eq!(K8sName::namespace(&longest_plain).as_str().len(), 63);
    }

    #[test]
    fn longer_or_invalid_names_are_mapped_deterministically_and_stay_apart() {
        let long = env(&"a".repeat(40), &"staging-for-the-summer-sale");
        let mapped = K8sName::namespace(&long);
        assert_eq!(mapped.as_str().len(), 63);
        assert!(mapped.as_str().starts_with(&format!("{}-stag", "a".repeat(40))), "{mapped}");
        assert_eq!(mapped, K8sName::namespace(&long), "the same every time");
        assert_ne!(mapped, K8sName::namespace(&env(&"a".repeat(40), "staging-for-the-summer-sale2")));
        assert_eq!(mapped.to_string().parse::<K8sName>().unwrap(), mapped);

        let (underscore, dash) = (K8sName::mapped("Web_1"), K8sName::mapped("web-1"));
        assert_eq!(dash.as_str(), "web-1");
        assert!(underscore.as_str().starts_with("web-1-") && underscore.as_str().len() == 14, "{underscore}");
        assert!(K8sName::mapped("9lives").as_str().starts_with("x9lives-"));
        assert!(K8sName::mapped("worker_").as_str().starts_with("worker-"));
        for text in ["Web_1", "9lives", "worker_", "___", &"Z".repeat(200)] {
            let name = K8sName::mapped(text);
            assert_eq!(name.as_str().parse::<K8sName>().as_ref(), Ok(&name), "{text:?} → {name}");
        }
    }
}
