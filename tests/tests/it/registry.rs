//! The release stage against a real registry (Debian's `docker-registry`, started
//! per test by `shiplog_tests::registry`): images pushed by the Docker engine,
//! recorded and deployed by digest, pulled back by digest; a registry that refuses
//! the push fails the run at the release stage with its message. Skips without a
//! Docker engine, like the other Docker tests.

use chrono::Utc;
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::runtime::{Image, ImageRef, PushRequest, Registry, Repository, Runtime, RuntimeError};
use shiplog_engine::store::Metadata;
use shiplog_tests::docker::cli;
use shiplog_tests::registry::TestRegistry;

use super::docker::{Collect, Fixture};
use super::lifecycle::{Backend, Example};

fn push_request(fixture: &Fixture, image: &Image, registry: &TestRegistry) -> PushRequest {
    let repository: Repository =
        format!("{}/team/{}/web", registry.host(), fixture.env.application).parse().expect("a repository");
    PushRequest { env: fixture.env.clone(), service: "web".into(), image: image.clone(), repository, tag: "c1".into() }
}

#[tokio::test]
async fn a_pushed_image_is_stored_by_digest_and_pulled_back_by_it() {
    let Some(fixture) = Fixture::new().await else { return };
    let registry = TestRegistry::start().await;
    let built = fixture.image("v1").await;
    let request = push_request(&fixture, &built, &registry);
    let logs = Collect::default();

    let pinned: ImageRef =
        fixture.runtime.push(&request, &logs).await.unwrap_or_else(|e| panic!("{e}\n{}", logs.dump()));
    assert_eq!(pinned.repository(), &request.repository);
    // The registry itself serves that digest, under the tag too.
    let path = request.repository.path();
    let (by_digest, _) = registry.manifest(path, pinned.digest().as_str()).await.expect("the manifest by digest");
    assert_eq!(by_digest, pinned.digest().as_str());
    let (by_tag, _) = registry.manifest(path, "c1").await.expect("the manifest by tag");
    assert_eq!(by_tag, pinned.digest().as_str());
    // Pushing the same image again names the same bytes.
    assert_eq!(fixture.runtime.push(&request, &Collect::default()).await.unwrap(), pinned);

    // Forget the image on this engine: the roll-out pulls it back by digest.
    cli(&["image", "rm", "-f", &built.0]).expect("removing the local image");
    assert!(cli(&["image", "inspect", &pinned.to_string()]).is_err(), "the engine still holds the image");
    fixture.runtime.ensure_infrastructure(&fixture.env, &["data".into()]).await.unwrap();
    let logs = Collect::default();
    let image = Image(pinned.to_string());
    fixture.runtime.roll_out(&fixture.web(&image), &logs).await.unwrap_or_else(|e| panic!("{e}\n{}", logs.dump()));
    assert!(logs.dump().contains(&format!("pulling {pinned}")), "{}", logs.dump());
    assert_eq!(fixture.page().await.as_deref(), Some("v1"));
    assert_eq!(fixture.observe().await.iter().map(|o| o.image.clone()).collect::<Vec<_>>(), [image]);
}

#[tokio::test]
async fn a_registry_that_refuses_the_push_fails_it_with_its_message() {
    let Some(fixture) = Fixture::new().await else { return };
    let registry = TestRegistry::read_only().await;
    let built = fixture.image("v1").await;
    let request = push_request(&fixture, &built, &registry);
    let logs = Collect::default();

    let Err(RuntimeError::Failed(message)) = fixture.runtime.push(&request, &logs).await else {
        panic!("a read-only registry took the push\n{}", logs.dump())
    };
    assert_eq!(
        message,
        format!(
            "pushing {}:c1 failed: error parsing HTTP 405 response body: invalid character 'M' looking for beginning \
             of value: \"Method not allowed\\n\"",
            request.repository
        )
    );
    assert_eq!(registry.manifest(request.repository.path(), "c1").await, None, "nothing was stored");
}

fn metadata() -> Metadata {
    Metadata { actor: Some("tests".into()), ..Metadata::default() }
}

#[tokio::test]
async fn with_a_registry_a_run_pushes_in_its_release_stage_and_deploys_by_digest() {
    let registry = TestRegistry::start().await;
    let team: Registry = format!("{}/team", registry.host()).parse().unwrap();
    let Some(ex) = Example::pushing_to(Backend::Docker, Some(team.clone())).await else { return };

    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (setup.run_id, RunStatus::Succeeded));
    let (run, _) = ex.lifecycle.run(setup.run_id).await.unwrap().unwrap();
    let release = run.stages.iter().find(|s| s.name == "release").expect("a release stage");
    assert_eq!(release.jobs[0].job.name, "push-web", "the push comes before the release commands");
    let pushed: ImageRef = run.output_of("release", "push-web").expect("the push's output").parse().unwrap();
    assert_eq!(pushed.repository().to_string(), format!("{team}/{}/web", ex.app));
    let (served, _) = registry.manifest(pushed.repository().path(), pushed.digest().as_str()).await.unwrap();
    assert_eq!(served, pushed.digest().as_str());
    // What runs is the pinned image, and the environment records it.
    let observed = ex.runtime.observe(&ex.env_ref()).await.unwrap();
    let web = observed.iter().find(|o| o.service == "web").expect("web runs");
    assert_eq!(web.image, Image(pushed.to_string()));
    let (env, _) = ex.lifecycle.environment(&ex.app, &ex.env).await.unwrap();
    assert!(env.images.contains(&("web".to_string(), pushed.to_string())), "{:?}", env.images);
    assert_eq!(ex.page().await.as_deref(), Some("<h1>hello from shiplog v1</h1>"));
}

#[tokio::test]
async fn a_refused_push_fails_the_run_at_the_release_stage_with_the_registry_message() {
    let registry = TestRegistry::read_only().await;
    let team: Registry = format!("{}/team", registry.host()).parse().unwrap();
    let Some(ex) = Example::pushing_to(Backend::Docker, Some(team.clone())).await else { return };

    let setup = ex.lifecycle.request_setup(&ex.app, &ex.env, None, "created", &metadata(), Utc::now()).await.unwrap();
    assert_eq!(ex.work().await, (setup.run_id, RunStatus::Failed));
    let (run, _) = ex.lifecycle.run(setup.run_id).await.unwrap().unwrap();
    let failed: Vec<&str> = run
        .stages
        .iter()
        .filter(|s| s.status == shiplog_engine::domain::run::StepStatus::Failed)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(failed, ["release"]);
    let commit = run.commit.as_ref().unwrap();
    assert_eq!(
        run.error.as_deref(),
        Some(
            format!(
                "pushing {team}/{}/web:{commit} failed: error parsing HTTP 405 response body: invalid character 'M' \
                 looking for beginning of value: \"Method not allowed\\n\"",
                ex.app
            )
            .as_str()
        )
    );
    assert_eq!(ex.page().await, None, "nothing was deployed");
}
