//! When a roll-out is over, read off the Deployment's status the way `kubectl
//! rollout status` reads it, and why pods of the new version do not come up.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// Where a Deployment's roll-out stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the newest template, is ready and available, and no old
    /// pod is left.
    Complete,
    /// Still going; what it waits for.
    Waiting(String),
    /// The cluster gave up on it (the progress deadline passed).
    Failed(String),
}

/// The roll-out of `deployment` as its status tells it.
pub fn state(deployment: &Deployment) -> Rollout {
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else { return Rollout::Waiting("no status yet".into()) };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Waiting("the controller has not seen the new template yet".into());
    }
    let deadline_passed = status.conditions.iter().flatten().find(|c| {
        c.type_.as_deref() == Some("Progressing")
            && c.status.as_deref() == Some("False")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(condition) = deadline_passed {
        let message = condition.message.clone().unwrap_or_else(|| "progress deadline exceeded".into());
        return Rollout::Failed(message);
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    if updated < wanted {
        Rollout::Waiting(format!("{updated} of {wanted} new replicas updated"))
    } else if total > updated {
        Rollout::Waiting(format!("{} old replicas pending termination", total - updated))
    } else if ready < wanted || available < wanted {
        Rollout::Waiting(format!("{available} of {wanted} updated replicas available"))
    } else {
        Rollout::Complete
    }
}

/// Waiting reasons a pod does not recover from by itself: the roll-out fails on
/// them at once instead of waiting out its deadline.
const HOPELESS: &[&str] =
    &["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff"];

/// Why the new version's pods are not serving, if one of them says so: a
/// container waiting for a reason that will not pass (`ImagePullBackOff`), a
/// container that exited, or a failing readiness probe. `hopeless` is true for the
/// reasons in [`HOPELESS`].
pub fn pod_problem(pods: &[Pod]) -> Option<(String, bool)> {
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or("a pod");
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        for container in statuses.into_iter().flatten() {
            let state = container.state.as_ref();
            if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
                let reason = waiting.reason.clone().unwrap_or_default();
                if HOPELESS.contains(&reason.as_str()) {
                    let message = waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                    return Some((format!("{name}: {reason}{message}"), true));
                }
            }
            if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
                let reason = terminated.reason.as_deref().unwrap_or("exited");
                return Some((format!("{name}: {reason} with exit code {}", terminated.exit_code), false));
            }
            if !container.ready && state.is_some_and(|s| s.running.is_some()) {
                return Some((format!("{name}: running but not ready (readiness probe failing)"), false));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "generation": generation },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_is_complete_only_when_every_replica_is_new_ready_and_alone() {
        let cases = [
            (
                json!({ "observedGeneration": 1 }),
                Rollout::Waiting("the controller has not seen the new template yet".into()),
            ),
            (
                json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2 }),
                Rollout::Waiting("1 of 2 new replicas updated".into()),
            ),
            (
                json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3 }),
                Rollout::Waiting("1 old replicas pending termination".into()),
            ),
            (
                json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1 }),
                Rollout::Waiting("1 of 2 updated replicas available".into()),
            ),
            (
                json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2 }),
                Rollout::Complete,
            ),
            (
                json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "conditions": [{
                    "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet \"web-7d4\" has timed out progressing." }] }),
                Rollout::Failed("ReplicaSet \"web-7d4\" has timed out progressing.".into()),
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(state(&deployment(2, status.clone())), expected, "{status}");
        }
    }

    fn pod(container_status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "web-7d4-x1" },
            "status": { "containerStatuses": [container_status] },
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_says_why_the_new_version_does_not_serve() {
        let pull = pod(json!({ "name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\"" } } }));
        assert_eq!(
            pod_problem(&[pull]),
            Some(("web-7d4-x1: ImagePullBackOff: Back-off pulling image \"x\"".into(), true))
        );
        let unready = pod(json!({ "name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "running": { "startedAt": "2026-12-03T10:00:00Z" } } }));
        assert_eq!(
            pod_problem(&[unready]),
            Some(("web-7d4-x1: running but not ready (readiness probe failing)".into(), false))
        );
        let exited = pod(json!({ "name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
            "state": { "terminated": { "exitCode": 3, "reason": "Error" } } }));
        assert_eq!(pod_problem(&[exited]), Some(("web-7d4-x1: Error with exit code 3".into(), false)));
        let creating = pod(json!({ "name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ContainerCreating" } } }));
        assert_eq!(pod_problem(&[creating]), None);
        let serving = pod(json!({ "name": "web", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "state": { "running": {} } }));
        assert_eq!(pod_problem(&[serving]), None);
    }
}
