//! What the template tests share: a full example and helpers to read problems.

use std::collections::BTreeMap;

use super::{TemplateErrors, parse_application_template, parse_variables};

pub(super) const EXAMPLE: &str = r#"
services:
  web:
    build: { context: ".", dockerfile: Dockerfile }
    command: ["sh", "-c", "exec httpd -f -p $PORT"]
    ports: [8080]
    env: { GREETING: hello, WORKERS: 4 }
    health_check: { http: "/", port: 8080, timeout: 90s }
    volumes: ["data:/var/lib/data"]
  worker:
    image: busybox:latest
    command: ./work.sh --forever
    replicas: 3
    health_check: { command: ["test", "-f", "/tmp/ready"] }
    volumes: ["data:/data", "cache:/cache"]
release:
  - name: migrate
    command: ["sh", "-c", "./migrate.sh"]
    timeout: 30m
  - name: notify
    command: ./notify.sh
stages: [test]
jobs:
  - name: unit
    stage: test
    command: ["sh", "-c", "./test.sh"]
    timeout: 10m
hooks:
  teardown:
    - name: destroy
      command: ["terraform", "destroy", "-auto-approve"]
      timeout: 1h30m
"#;

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub(super) fn problems(errors: &TemplateErrors) -> Vec<(&str, &str)> {
    errors.0.iter().map(|p| (p.path.as_str(), p.message.as_str())).collect()
}

pub(super) fn parse_err(yaml: &str) -> TemplateErrors {
    match parse_application_template(yaml) {
        Ok(template) => panic!("expected problems, parsed {template:?}"),
        Err(errors) => errors,
    }
}

pub(super) fn variables_err(yaml: &str) -> TemplateErrors {
    match parse_variables(yaml) {
        Ok(variables) => panic!("expected problems, parsed {variables:?}"),
        Err(errors) => errors,
    }
}

pub(super) const SECRET: &str = "hunter2-very-secret";

pub(super) fn variables_yaml() -> String {
    format!(
        r#"
DATABASE_URL: "postgres://app:${{DB_PASSWORD}}@db/${{ENVIRONMENT}}"
DB_PASSWORD: {{ secret: "{SECRET}" }}
LOG_LEVEL: info
WORKERS: 4
VERBOSE: true
GREETING: "${{PREFIX}} world"
PREFIX: "${{SALUTATION}},"
SALUTATION: hello
PRICE: "costs $5, $$ and $${{NOT_A_REFERENCE}}"
"#
    )
}

pub(super) fn builtins() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("APPLICATION".to_string(), "shop".to_string()),
        ("ENVIRONMENT".to_string(), "staging".to_string()),
        ("COMMIT".to_string(), "abc123".to_string()),
    ])
}
