//! Events cannot be changed or removed: not by the runtime role (no privilege), not
//! by the owner (triggers).

use serde_json::json;
use shiplog_engine::store::{EventStore, ExpectedVersion, NewEvent, StreamId};
use shiplog_tests::{TestDb, wait_readable};
use sqlx::PgPool;

async fn error_of(pool: &PgPool, sql: &'static str) -> String {
    match sqlx::query(sql).execute(pool).await {
        Ok(done) => panic!("{sql} succeeded, affecting {} rows", done.rows_affected()),
        Err(e) => e.as_database_error().expect("a database error").message().to_owned(),
    }
}

const CHANGES: [&str; 6] = [
    "UPDATE events SET payload = '{}'",
    "DELETE FROM events",
    "TRUNCATE events CASCADE",
    "UPDATE seals SET event_count = 1",
    "DELETE FROM seals",
    "TRUNCATE seals",
];

/// A database holding one event and one seal over it.
async fn one_sealed_event() -> (TestDb, EventStore) {
    let db = TestDb::new().await;
    let store = db.store();
    let s: StreamId = "environment-a".parse().unwrap();
    store.append(&s, ExpectedVersion::NoStream, &[NewEvent::new("Created", json!({ "a": 1 }))]).await.unwrap();
    wait_readable(&store, 1).await;
    assert_eq!(store.seal_all(100).await.unwrap(), 1);
    (db, store)
}

#[tokio::test]
async fn the_runtime_role_has_no_privilege_to_change_the_log() {
    let (db, store) = one_sealed_event().await;

    for sql in CHANGES {
        let message = error_of(&db.runtime, sql).await;
        assert!(message.starts_with("permission denied for table"), "{sql}: {message}");
    }
    assert!(store.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn triggers_stop_even_the_owner() {
    let (db, _store) = one_sealed_event().await;

    for sql in CHANGES {
        let message = error_of(&db.owner, sql).await;
        assert!(message.contains("is forbidden, the log is append-only"), "{sql}: {message}");
    }
    let payload: String = sqlx::query_scalar("SELECT payload FROM events").fetch_one(&db.owner).await.unwrap();
    assert_eq!(payload, r#"{"a":1}"#);
}
