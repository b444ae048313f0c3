//! Audit verification over GraphQL, through the real router.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use shiplog::config::ApiConfig;
use shiplog::http::{AppState, app};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::store::{ExpectedVersion, NewEvent};
use shiplog_tests::{TestDb, wait_readable};
use tower::ServiceExt;

/// Posts `query` with an auditor's token through the real router.
pub async fn post_graphql(db: &TestDb, query: &str) -> (StatusCode, Value) {
    let state = AppState::new(Lifecycle::new(db.store()), ApiConfig::default(), Default::default()).await.unwrap();
    let role = shiplog::auth::Role::Auditor;
    let token = shiplog::auth::create(&db.runtime, "auditor", role, false, "test").await.unwrap().1;
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", token.expose_secret()))
        .body(Body::from(json!({ "query": query }).to_string()))
        .unwrap();
    let response = app(state).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

const QUERY: &str = "{ auditVerification { intact eventsChecked sealsChecked firstBrokenPosition \
                     problems { position streamId version kind message } } }";

#[tokio::test]
async fn verification_reports_an_intact_log_then_the_exact_tampered_position() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = "environment-web".parse().unwrap();
    let events: Vec<NewEvent> = (1..=3).map(|n| NewEvent::new("Step", json!({ "n": n }))).collect();
    let appended = store.append(&s, ExpectedVersion::NoStream, &events).await.unwrap();
    wait_readable(&store, 3).await;
    store.seal_all(100).await.unwrap();

    let (status, body) = post_graphql(&db, QUERY).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["auditVerification"],
        json!({ "intact": true, "eventsChecked": "3", "sealsChecked": "1", "firstBrokenPosition": null, "problems": [] })
    );

    let target = appended.positions[1];
    let mut tx = db.owner.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
    sqlx::query("UPDATE events SET payload = '{\"n\":20}' WHERE global_position = $1")
        .bind(target)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let (_, body) = post_graphql(&db, QUERY).await;
    let report = &body["data"]["auditVerification"];
    assert_eq!(report["intact"], false);
    assert_eq!(report["firstBrokenPosition"], target.to_string());
    assert_eq!(
        report["problems"][0],
        json!({
            "position": target.to_string(), "streamId": "environment-web", "version": "2", "kind": "CONTENT_CHANGED",
            "message": format!("position {target}: environment-web v2: stored content does not match its hash (edited)")
        })
    );
}

#[tokio::test]
async fn a_query_error_has_the_documented_json_shape() {
    let db = TestDb::new().await;
    let (status, body) = post_graphql(&db, "{ auditVerification { intact bogus } }").await;
    assert_eq!(status, StatusCode::OK);
    insta::assert_json_snapshot!(body);
}
