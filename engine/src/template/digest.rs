//! Template digests: what a setup records as applied, so that a different digest
//! tells that an environment needs a setup (see the module documentation of
//! [`super`] for what moves a digest and what does not).

use sha2::{Digest as _, Sha256};

use super::application::ApplicationTemplate;
use super::variables::{VariableValue, Variables};
use crate::canonical::canonicalize;

impl ApplicationTemplate {
    /// `sha256:` and the lowercase hex SHA-256 of the template's canonical JSON
    /// (RFC 8785). Equal for templates that mean the same, whatever their YAML
    /// layout; different as soon as anything that would run differently changes.
    pub fn digest(&self) -> String {
        let json = serde_json::to_value(self).expect("an application template always serialises: string keys only");
        sha256_digest(b"", &json)
    }
}

impl Variables {
    /// `sha256:` and the lowercase hex SHA-256 of `shiplog-variables-v1\n` followed by
    /// the canonical JSON (RFC 8785) of the template as written, secret values
    /// included (`{"NAME": "value", "KEY": {"secret": "value"}}`): changing a secret
    /// changes the digest, so the environment is set up again. Not safe to show where
    /// a weak secret could be guessed: anyone holding the digest and every other value
    /// can test guesses offline (see `docs/templates.md`).
    pub fn digest(&self) -> String {
        let json: serde_json::Map<String, serde_json::Value> = self
            .values
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    VariableValue::Plain(text) => serde_json::Value::String(text.clone()),
                    VariableValue::Secret(secret) => serde_json::json!({ "secret": secret.expose_secret() }),
                };
                (name.clone(), value)
            })
            .collect();
        sha256_digest(b"shiplog-variables-v1\n", &serde_json::Value::Object(json))
    }
}

/// `sha256:` and the hex SHA-256 of `domain` followed by the canonical JSON of `json`.
fn sha256_digest(domain: &[u8], json: &serde_json::Value) -> String {
    // Template JSON holds strings, u16 ports and u32 counts and milliseconds only:
    // every number is below 2^53, the only thing canonical JSON refuses.
    let canonical = canonicalize(json).expect("template JSON has only exact numbers");
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(canonical.as_bytes());
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::EXAMPLE;
    use super::super::{parse_application_template, parse_variables};
    use super::*;

    #[test]
    fn the_digest_ignores_layout_and_spelled_out_defaults_but_not_meaning() {
        let digest = parse_application_template(EXAMPLE).unwrap().digest();
        assert!(digest.starts_with("sha256:"));
        assert_eq!(digest.len(), "sha256:".len() + 64);
        assert!(digest[7..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

        // The same template: keys reordered, flow and block styles swapped, comments,
        // the shell-form command spelled out, defaults written explicitly.
        let reformatted = r#"
# hooks first this time
hooks: { teardown: [ { timeout: 90m, name: destroy, command: [terraform, destroy, -auto-approve] } ] }
jobs: [ { command: [sh, -c, ./test.sh], timeout: 600s, stage: test, name: unit } ]
stages:
  - test
release:
  - { name: migrate, command: "./migrate.sh", timeout: 30m }
  - name: notify
    command: [sh, -c, ./notify.sh]
    timeout: 30m
services:
  worker:
    volumes: ["data:/data", "cache:/cache"]
    health_check: { command: [test, -f, /tmp/ready], timeout: 1m }
    replicas: 3
    command: [sh, -c, "./work.sh --forever"]
    image: "busybox:latest"
  web:
    volumes:
      - data:/var/lib/data
    health_check:
      timeout: 90000ms
      port: 8080
      http: /
    env:
      WORKERS: "4"
      GREETING: "hello"
    replicas: 1
    ports:
      - 8080
    command: [sh, -c, "exec httpd -f -p $PORT"]
    build:
      dockerfile: Dockerfile
      context: .
"#;
        assert_eq!(parse_application_template(reformatted).unwrap().digest(), digest);

        for (from, to) in [
            ("replicas: 3", "replicas: 2"),
            ("timeout: 10m", "timeout: 11m"),
            ("GREETING: hello", "GREETING: hullo"),
            ("stages: [test]", "stages: [test]\n# no change above, one below"),
        ] {
            assert_eq!(EXAMPLE.matches(from).count(), 1, "{from}");
            let changed = parse_application_template(&EXAMPLE.replace(from, to)).unwrap();
            let same_meaning = from.starts_with("stages");
            assert_eq!(changed.digest() == digest, same_meaning, "{from} -> {to}");
        }

        // Release commands run in order: swapping them is a change.
        let mut swapped = parse_application_template(EXAMPLE).unwrap();
        swapped.release.swap(0, 1);
        assert_ne!(swapped.digest(), digest);
    }

    #[test]
    fn the_digest_is_sha256_over_the_canonical_json() {
        let template = parse_application_template("services: { a: { image: x } }").unwrap();
        let canonical = r#"{"hooks":{"teardown":[]},"jobs":[],"release":[],"services":{"a":{"command":null,"env":{},"health_check":null,"ports":[],"replicas":1,"source":{"image":"x"},"volumes":[]}},"stages":[]}"#;
        assert_eq!(canonicalize(&serde_json::to_value(&template).unwrap()).unwrap(), canonical);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(canonical)));
        assert_eq!(template.digest(), expected);
    }

    #[test]
    fn the_variables_digest_covers_secrets_and_ignores_layout() {
        let digest = parse_variables("A: one\nK: { secret: s }\n").unwrap().digest();
        let canonical = r#"{"A":"one","K":{"secret":"s"}}"#;
        let expected = Sha256::new().chain_update(b"shiplog-variables-v1\n").chain_update(canonical).finalize();
        assert_eq!(digest, format!("sha256:{}", hex::encode(expected)));

        let same = parse_variables("# reordered\nK:\n  secret: \"s\"\nA: 'one'\n").unwrap();
        assert_eq!(same.digest(), digest);
        for changed in ["A: one\nK: { secret: t }\n", "A: one\nK: s\n", "A: two\nK: { secret: s }\n", "A: one\n"] {
            assert_ne!(parse_variables(changed).unwrap().digest(), digest, "{changed}");
        }
    }
}
