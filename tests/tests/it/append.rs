//! Appending: expected versions, conflicts under races, idempotency, bad input.

use std::collections::BTreeSet;

use serde_json::json;
use shiplog_engine::store::{AppendError, EventStore, ExpectedVersion, InvalidInput, NewEvent, StreamId};
use shiplog_tests::TestDb;

fn stream(name: &str) -> StreamId {
    name.parse().unwrap()
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", json!({ "n": n }))
}

async fn row_counts(db: &TestDb) -> (i64, i64) {
    let events = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.owner).await.unwrap();
    let streams = sqlx::query_scalar("SELECT count(*) FROM streams").fetch_one(&db.owner).await.unwrap();
    (events, streams)
}

#[tokio::test]
async fn appends_assign_consecutive_versions_and_chain_hashes() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = stream("environment-a");
    let first = store.append(&s, ExpectedVersion::NoStream, &[event(1), event(2)]).await.unwrap();
    assert_eq!((first.first_version, first.last_version), (1, 2));
    let second = store.append(&s, ExpectedVersion::Exact(2), &[event(3)]).await.unwrap();
    assert_eq!((second.first_version, second.last_version), (3, 3));

    let events = store.read_stream(&s, 1, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(events[0].prev_hash, [0; 32]);
    assert_eq!(events[1].prev_hash, events[0].hash);
    assert_eq!(events[2].prev_hash, events[1].hash);
    assert_eq!(events[2].payload, r#"{"n":3}"#);
    assert_eq!(store.stream_version(&s).await.unwrap(), 3);
    assert!(store.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn a_wrong_expected_version_is_a_conflict_and_writes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = stream("environment-a");
    store.append(&s, ExpectedVersion::NoStream, &[event(1)]).await.unwrap();

    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(0), ExpectedVersion::Exact(2)] {
        let err = store.append(&s, expected, &[event(9)]).await.unwrap_err();
        assert!(
            matches!(err, AppendError::Conflict { actual: 1, expected: e, .. } if e == expected),
            "{expected}: {err:?}"
        );
    }
    let err = store.append(&stream("environment-new"), ExpectedVersion::Exact(1), &[event(1)]).await.unwrap_err();
    assert!(matches!(err, AppendError::Conflict { actual: 0, .. }), "{err:?}");
    assert_eq!(row_counts(&db).await, (1, 1));
}

#[tokio::test]
async fn racing_writers_on_one_stream_get_versions_without_duplicates_and_losers_conflict() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = stream("run-race");
    store.append(&s, ExpectedVersion::NoStream, &[event(0)]).await.unwrap();

    // Each task keeps appending with the version it last saw; whoever loses a race
    // gets Conflict, re-reads the version and tries again.
    let tasks = (0..8).map(|task| {
        let (store, s) = (store.clone(), s.clone());
        tokio::spawn(async move {
            let (mut wins, mut conflicts) = (Vec::new(), 0);
            while wins.len() < 5 {
                let seen = store.stream_version(&s).await.unwrap();
                match store.append(&s, ExpectedVersion::Exact(seen), &[event(task)]).await {
                    Ok(done) => wins.push(done.first_version),
                    Err(AppendError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (wins, conflicts)
        })
    });
    let mut versions = BTreeSet::new();
    let mut conflicts = 0;
    for task in futures::future::join_all(tasks).await {
        let (wins, lost) = task.unwrap();
        for v in wins {
            assert!(versions.insert(v), "version {v} was handed out twice");
        }
        conflicts += lost;
    }
    assert_eq!(versions, (2..=41).collect::<BTreeSet<u64>>());
    assert!(conflicts > 0, "8 writers on one stream never collided; the race was not exercised");
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM events WHERE stream_id = 'run-race' ORDER BY version")
            .fetch_all(&db.owner)
            .await
            .unwrap();
    assert_eq!(stored, (1..=41).collect::<Vec<i64>>());
    assert!(store.verify().await.unwrap().is_intact());
}

#[tokio::test]
async fn racing_to_create_one_stream_lets_exactly_one_writer_win() {
    let db = TestDb::new().await;
    let store = db.store();
    let tasks = (0..8).map(|task| {
        let store = store.clone();
        tokio::spawn(async move { store.append(&stream("run-new"), ExpectedVersion::NoStream, &[event(task)]).await })
    });
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, AppendError::Conflict { actual: 1, .. }))
    );
}

#[tokio::test]
async fn writers_on_different_streams_all_succeed() {
    let db = TestDb::new().await;
    let store = db.store();
    let tasks = (0..8).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            let s = stream(&format!("run-{task}"));
            for v in 0..20 {
                store.append(&s, ExpectedVersion::Exact(v), &[event(v)]).await.unwrap();
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    assert_eq!(row_counts(&db).await, (160, 8));
}

#[tokio::test]
async fn appending_the_same_event_ids_again_returns_the_original_result() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = stream("environment-a");
    let batch = [event(1), event(2)];
    let original = store.append(&s, ExpectedVersion::NoStream, &batch).await.unwrap();
    assert!(!original.already_stored);

    // A writer whose commit acknowledgement was lost retries the same append.
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        let retried = store.append(&s, expected, &batch).await.unwrap();
        assert!(retried.already_stored);
        assert_eq!(retried.positions, original.positions);
        assert_eq!((retried.first_version, retried.last_version), (1, 2));
    }
    assert_eq!(row_counts(&db).await, (2, 1));

    // The same id in another stream is not a retry: refused, nothing written.
    let err = store.append(&stream("environment-b"), ExpectedVersion::Any, &batch[..1]).await.unwrap_err();
    assert!(
        matches!(err, AppendError::EventIdTaken { ref stored_in, stored_version: 1, .. } if stored_in == "environment-a"),
        "{err:?}"
    );
    // Half a batch stored before is not a retry either.
    let mixed = [batch[1].clone(), event(3)];
    let err = store.append(&s, ExpectedVersion::Any, &mixed).await.unwrap_err();
    assert!(matches!(err, AppendError::EventIdTaken { .. }), "{err:?}");
    assert_eq!(row_counts(&db).await, (2, 1));
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    let s = stream("environment-a");
    store.append(&s, ExpectedVersion::NoStream, &[event(1)]).await.unwrap();
    let before = row_counts(&db).await;

    let huge = NewEvent::new("Big", json!({ "blob": "x".repeat(shiplog_engine::store::MAX_PAYLOAD_BYTES) }));
    let repeated = event(5);
    let mut bad_schema = event(1);
    bad_schema.schema_version = 0;
    let cases: Vec<(Vec<NewEvent>, String)> = vec![
        (vec![], "an append needs at least one event".into()),
        ((0..1001).map(event).collect(), "an append may carry at most 1000 events, this one has 1001".into()),
        (vec![event(1), huge], "event 1: payload is 262155 bytes, the limit is 262144".into()),
        (
            vec![NewEvent::new("has space", json!({}))],
            "event 0: event type \"has space\" must be 1 to 200 letters, digits, `_` or `.`".into(),
        ),
        (vec![bad_schema], "event 0: schema version must be at least 1".into()),
        (
            vec![NewEvent::new("Big", json!({ "n": u64::MAX }))],
            "event 0: payload number 18446744073709551615 cannot be stored exactly (JSON numbers are \
             IEEE-754 doubles); send it as a string"
                .into(),
        ),
        (
            vec![repeated.clone(), repeated.clone()],
            format!("event id {} appears twice in one append", repeated.event_id),
        ),
    ];
    for (events, message) in cases {
        let err = store.append(&s, ExpectedVersion::Any, &events).await.unwrap_err();
        assert!(matches!(err, AppendError::Invalid(_)), "{err:?}");
        assert_eq!(err.to_string(), message);
    }

    let invalid_json = NewEvent::from_json("Counted", "{\"n\": 1,").unwrap_err();
    assert!(matches!(invalid_json, InvalidInput::Payload { .. }));
    assert!(invalid_json.to_string().starts_with("event 0: payload invalid JSON: EOF while parsing"), "{invalid_json}");
    assert_eq!(
        "later".parse::<ExpectedVersion>().unwrap_err().to_string(),
        "expected version \"later\" is not `any`, `no-stream` or a version number"
    );
    assert_eq!("-3".parse::<ExpectedVersion>().unwrap_err(), InvalidInput::ExpectedVersion("-3".into()));
    assert!(
        "Run-1".parse::<StreamId>().is_err()
            && "run".parse::<StreamId>().is_err()
            && "run-a b".parse::<StreamId>().is_err()
    );

    assert_eq!(row_counts(&db).await, before);
}

#[tokio::test]
async fn the_store_works_through_the_runtime_role() {
    let db = TestDb::new().await;
    let role: String = sqlx::query_scalar("SELECT current_user::text").fetch_one(&db.runtime).await.unwrap();
    assert_eq!(role, "shiplog_runtime");
    let store = EventStore::new(db.runtime.clone());
    store.append(&stream("environment-a"), ExpectedVersion::NoStream, &[event(1)]).await.unwrap();
}

/// The append chains hashes in SQL (`shiplog_append`); the encoding it must match is
/// the Rust one of `store::hash`, which the verifier and docs/audit.md use.
#[tokio::test]
async fn the_one_call_append_hashes_exactly_as_the_rust_encoding() {
    use chrono::DateTime;
    use shiplog_engine::store::Metadata;
    use shiplog_engine::store::hash::{EventFields, GENESIS, event_hash};

    let db = TestDb::new().await;
    let store = db.store();

    // docs/audit.md's worked example, hashed by the database function.
    let documented: Vec<u8> = sqlx::query_scalar(
        "SELECT shiplog_event_hash($1, 'environment-1', 1, '00000000-0000-0000-0000-000000000000', \
         'EnvironmentCreated', 1, '2023-11-14T22:13:20.123456Z', '{\"name\":\"web\"}', '{}')",
    )
    .bind(&GENESIS[..])
    .fetch_one(&db.owner)
    .await
    .unwrap();
    assert_eq!(hex::encode(&documented), "1c792eb09578b6aba49d7da6e5919d551b2100018c60063346d26a018b947671");

    // Appends of every shape (a first batch, single events, a retry, through
    // `append_in`), with multi-byte text, long payloads and full metadata; each
    // stored hash must be what the Rust encoding gives for the stored fields.
    let s = stream("run-hash_check.1");
    let metadata = Metadata {
        actor: Some("zoë ✓".into()),
        correlation_id: Some(uuid::Uuid::new_v4()),
        causation_id: Some(uuid::Uuid::new_v4()),
        request_id: Some("req-1".into()),
    };
    let mut batch: Vec<NewEvent> = (0..5)
        .map(|n| {
            NewEvent::new(
                "step.finished",
                json!({ "n": n, "text": "ünïcødé \u{1F680} \"quoted\"\n", "long": "x".repeat(n * 4000) }),
            )
            .with_metadata(metadata.clone())
        })
        .collect();
    batch[2].schema_version = 7;
    store.append(&s, ExpectedVersion::NoStream, &batch).await.unwrap();
    store.append(&s, ExpectedVersion::NoStream, &batch).await.unwrap();
    store.append(&s, ExpectedVersion::Exact(5), &[event(6)]).await.unwrap();
    let mut tx = db.owner.begin().await.unwrap();
    store.append_in(&mut tx, &s, ExpectedVersion::Any, &[event(7), event(8)]).await.unwrap();
    tx.commit().await.unwrap();

    let stored = store.read_stream(&s, 1, 100).await.unwrap();
    assert_eq!(stored.len(), 8);
    let mut prev = GENESIS;
    for e in &stored {
        let expected = event_hash(&EventFields {
            prev_hash: &prev,
            stream_id: &e.stream_id,
            version: e.version,
            event_id: e.event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            recorded_at: e.recorded_at,
            payload: &e.payload,
            metadata: &e.metadata,
        });
        assert_eq!(e.prev_hash, prev, "version {}", e.version);
        assert_eq!(hex::encode(e.hash), hex::encode(expected), "version {}", e.version);
        prev = e.hash;
    }
    let (version, last_hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT version, last_hash FROM streams WHERE stream_id = $1")
            .bind(s.as_str())
            .fetch_one(&db.owner)
            .await
            .unwrap();
    assert_eq!((version, last_hash), (8, prev.to_vec()));

    // Timestamps with trailing zeros and in other zones hash as the Rust text does.
    for at in ["2023-11-14T22:13:20.120000Z", "1999-01-02T03:04:05Z", "2024-02-29T23:59:59.000001+05:30"] {
        let parsed = DateTime::parse_from_rfc3339(at).unwrap().to_utc();
        let sql: Vec<u8> = sqlx::query_scalar(
            "SELECT shiplog_event_hash($1, 'environment-1', 3, '00000000-0000-0000-0000-000000000000', 'X', 2, $2, '{}', '{}')",
        )
        .bind(&GENESIS[..])
        .bind(parsed)
        .fetch_one(&db.owner)
        .await
        .unwrap();
        let rust = event_hash(&EventFields {
            prev_hash: &GENESIS,
            stream_id: "environment-1",
            version: 3,
            event_id: uuid::Uuid::nil(),
            event_type: "X",
            schema_version: 2,
            recorded_at: parsed,
            payload: "{}",
            metadata: "{}",
        });
        assert_eq!(hex::encode(sql), hex::encode(rust), "{at}");
    }
    assert!(store.verify().await.unwrap().is_intact());
}
