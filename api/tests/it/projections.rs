//! The auditors' and operators' commands through the binary: `projections
//! rebuild`/`status`, `audit export`, `audit replay`.

use std::process::{Command, Output};

use chrono::Utc;
use shiplog_engine::domain::environment::{EnvironmentKind, EnvironmentSpec, Tracking};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::store::Metadata;
use shiplog_tests::{TestDb, wait_readable};

fn shiplog(db: &TestDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shiplog"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("running shiplog")
}

async fn db_graphql(db: &TestDb, query: &str) -> serde_json::Value {
    crate::audit::post_graphql(db, query).await.1
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_export_and_replay_from_the_command_line() {
    let db = TestDb::new().await;
    let lifecycle = Lifecycle::new(db.store());
    let alice = Metadata { actor: Some("alice".into()), ..Metadata::default() };
    let app = "shop".parse().unwrap();
    lifecycle.create_application(&app, "https://git.example.invalid/shop.git", &alice, Utc::now()).await.unwrap();
    lifecycle.update_template(&app, "services:\n  web:\n    image: \"img\"\n", &alice, Utc::now()).await.unwrap();
    let created = EnvironmentSpec {
        application: app.clone(),
        name: "staging".parse().unwrap(),
        kind: EnvironmentKind::Staging,
        tracking: Tracking::Branch("main".into()),
        ttl_seconds: None,
        drift_mode: Default::default(),
    };
    lifecycle.create_environment(&created, &alice, Utc::now()).await.unwrap();
    wait_readable(&db.store(), 3).await;

    let rebuilt = stdout(&shiplog(&db, &["projections", "rebuild"]));
    assert!(rebuilt.contains("lifecycle: generation 1 from 3 events"), "{rebuilt}");
    assert!(rebuilt.contains("audit: generation 1 from 3 events"), "{rebuilt}");
    let status = stdout(&shiplog(&db, &["projections", "status"]));
    assert!(status.contains("runs: version 2 generation 1") && status.contains("0 behind"), "{status}");
    let staging: String = sqlx::query_scalar("SELECT status FROM read.environments WHERE key = 'shop/staging'")
        .fetch_one(&db.runtime)
        .await
        .unwrap();
    assert_eq!(staging, "pending");

    let query = "{ projections { name version generation events lagEvents } }";
    let answer = db_graphql(&db, query).await;
    assert_eq!(
        answer["data"]["projections"][0],
        serde_json::json!({ "name": "audit", "version": 1, "generation": 1, "events": "3", "lagEvents": "0" })
    );

    let unknown = shiplog(&db, &["projections", "rebuild", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown projection \"nope\""));
    let status_after = stdout(&shiplog(&db, &["projections", "status"]));
    assert!(status_after.contains("lifecycle: version 1 generation 1"), "a refused rebuild changed something");

    let exported = stdout(&shiplog(&db, &["audit", "export", "--type", "EnvironmentCreated"]));
    let lines: Vec<serde_json::Value> = exported.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{exported}");
    assert_eq!(lines[0]["stream_id"], "environment-shop.staging");
    assert_eq!(lines[0]["metadata"]["actor"], "alice");
    assert_eq!(lines[0]["hash"].as_str().unwrap().len(), 64);

    let replay = stdout(&shiplog(&db, &["audit", "replay", "--application", "shop"]));
    assert!(replay.contains("EnvironmentCreated by alice  shop/staging  status pending"), "{replay}");
}
