//! Fuzz targets of the webhook payload readers (see the README, "Fuzzing"): each
//! forge's documented payload, broken in every way [`mutated`] and
//! [`mutated_text`] know, sent as an authentic delivery. The reader never panics:
//! it reads a push or a merge request, ignores the event, or refuses it as a bad
//! request (never as unauthentic: the signature and token are right). What it read
//! then goes through the pure parts of what the engine does with it.

use axum::http::{HeaderMap, HeaderValue};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use shiplog_engine::domain::environment::Tracking;
use shiplog_engine::domain::merge_request::not_ready;
use shiplog_engine::push::{preview_names, repository_key};
use shiplog_tests::fuzz::{self, mutated, mutated_text};

use super::{Received, Secret, WebhookError, github, gitlab};

const GITHUB_PUSH: &str = include_str!("../../tests/it/fixtures/github-push.json");
const GITHUB_PULL_REQUEST: &str = include_str!("../../tests/it/fixtures/github-pull-request.json");
const GITLAB_PUSH: &str = include_str!("../../tests/it/fixtures/gitlab-push.json");
const GITLAB_MERGE_REQUEST: &str = include_str!("../../tests/it/fixtures/gitlab-merge-request.json");

const SECRET: &str = "fuzzing secret";

fn secret() -> Secret {
    SECRET.parse().unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("a fixture is JSON")
}

fn github(event: &'static str, body: &[u8]) -> Result<Received, WebhookError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let mut headers = HeaderMap::new();
    headers.insert("X-Hub-Signature-256", HeaderValue::from_str(&signature).unwrap());
    headers.insert("X-GitHub-Event", HeaderValue::from_static(event));
    headers.insert("X-GitHub-Delivery", HeaderValue::from_static("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
    headers.insert("Content-Type", HeaderValue::from_static("application/json"));
    github::receive(&secret(), &headers, body)
}

fn gitlab(event: &'static str, body: &[u8]) -> Result<Received, WebhookError> {
    let mut headers = HeaderMap::new();
    headers.insert("X-Gitlab-Token", HeaderValue::from_static(SECRET));
    headers.insert("X-Gitlab-Event", HeaderValue::from_static(event));
    headers.insert("X-Gitlab-Event-UUID", HeaderValue::from_static("13792a34-cac6-4fda-95a8-c58e00a3954e"));
    gitlab::receive(&secret(), &headers, body)
}

/// What an authentic delivery may come to, and what the engine reads of it.
fn check(received: Result<Received, WebhookError>) -> Result<(), TestCaseError> {
    match received {
        Ok(Received::Push { push, .. }) => {
            push.repository_urls.iter().for_each(|url| drop(repository_key(url)));
            if let Tracking::Branch(branch) = &push.target {
                prop_assert!(preview_names(branch).all(|name| name.as_str().starts_with("preview-")));
            }
        }
        Ok(Received::MergeRequest { event, .. }) => {
            event.repository_urls.iter().for_each(|url| drop(repository_key(url)));
            let info = &event.request.info;
            let _ = not_ready(&info.title, info.draft);
            prop_assert!(preview_names(&info.source_branch).all(|name| name.as_str().starts_with("preview-")));
        }
        Ok(Received::Ping | Received::Ignored(_)) => {}
        Err(WebhookError::BadRequest(why)) => prop_assert!(!why.is_empty()),
        Err(other) => prop_assert!(false, "an authentic delivery refused with {other:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn github_pushes(payload in mutated(json(GITHUB_PUSH))) {
        check(github("push", &serde_json::to_vec(&payload).unwrap()))?;
    }

    #[test]
    fn github_push_text(text in mutated_text(GITHUB_PUSH.to_owned())) {
        check(github("push", text.as_bytes()))?;
    }

    #[test]
    fn github_pull_requests(payload in mutated(json(GITHUB_PULL_REQUEST))) {
        check(github("pull_request", &serde_json::to_vec(&payload).unwrap()))?;
    }

    #[test]
    fn github_pull_request_text(text in mutated_text(GITHUB_PULL_REQUEST.to_owned())) {
        check(github("pull_request", text.as_bytes()))?;
    }

    #[test]
    fn gitlab_pushes(payload in mutated(json(GITLAB_PUSH))) {
        check(gitlab("Push Hook", &serde_json::to_vec(&payload).unwrap()))?;
    }

    #[test]
    fn gitlab_push_text(text in mutated_text(GITLAB_PUSH.to_owned())) {
        check(gitlab("Tag Push Hook", text.as_bytes()))?;
    }

    #[test]
    fn gitlab_merge_requests(payload in mutated(json(GITLAB_MERGE_REQUEST))) {
        check(gitlab("Merge Request Hook", &serde_json::to_vec(&payload).unwrap()))?;
    }

    #[test]
    fn gitlab_merge_request_text(text in mutated_text(GITLAB_MERGE_REQUEST.to_owned())) {
        check(gitlab("Merge Request Hook", text.as_bytes()))?;
    }
}
