//! Tampering by a superuser (triggers disabled) is found by `verify`, which names
//! the first position where the log stops being what was written.

use serde_json::json;
use shiplog_engine::store::{EventStore, ExpectedVersion, NewEvent, ProblemKind, Verification};
use shiplog_tests::{TestDb, wait_readable};

/// Three streams of four events each, appended round-robin so their events
/// interleave in the global order, then sealed.
async fn sealed_log(db: &TestDb) -> EventStore {
    let store = db.store();
    for v in 0..4 {
        for name in ["environment-a", "environment-b", "run-c"] {
            let s = name.parse().unwrap();
            let e = NewEvent::new("Step", json!({ "stream": name, "v": v + 1 }));
            store.append(&s, ExpectedVersion::Exact(v), &[e]).await.unwrap();
        }
    }
    wait_readable(&store, 12).await;
    assert_eq!(store.seal_all(5).await.unwrap(), 3);
    let clean = store.verify().await.unwrap();
    assert!(clean.is_intact(), "{:?}", clean.problems);
    assert_eq!((clean.events_checked, clean.streams_checked, clean.seals_checked), (12, 3, 3));
    store
}

/// Runs `sql` as superuser with triggers (and foreign keys) switched off, as an
/// attacker with database access would.
async fn tamper(db: &TestDb, sql: &str) {
    let mut tx = db.owner.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
    for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn position_of(db: &TestDb, stream: &str, version: i64) -> i64 {
    sqlx::query_scalar("SELECT global_position FROM events WHERE stream_id = $1 AND version = $2")
        .bind(stream)
        .bind(version)
        .fetch_one(&db.owner)
        .await
        .unwrap()
}

fn kinds(report: &Verification) -> Vec<&ProblemKind> {
    report.problems.iter().map(|p| &p.kind).collect()
}

#[tokio::test]
async fn an_edited_payload_is_reported_at_its_position() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    let target = position_of(&db, "environment-b", 2).await;
    tamper(
        &db,
        &format!(
            "UPDATE events SET payload = '{{\"stream\":\"environment-b\",\"v\":99}}' WHERE global_position = {target}"
        ),
    )
    .await;

    let report = store.verify().await.unwrap();
    assert_eq!(report.first_broken_position(), Some(target));
    assert_eq!(kinds(&report)[0], &ProblemKind::ContentChanged);
    assert_eq!(
        report.problems[0].to_string(),
        format!("position {target}: environment-b v2: stored content does not match its hash (edited)")
    );
    // The edit did not change any hash, so the seals still match; one problem, not a cascade.
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

#[tokio::test]
async fn an_edit_that_also_rewrites_the_hash_breaks_the_link_after_it_and_the_seal() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    let target = position_of(&db, "run-c", 2).await;
    let next = position_of(&db, "run-c", 3).await;
    tamper(&db, &format!("UPDATE events SET hash = sha256(hash) WHERE global_position = {target}")).await;

    let report = store.verify().await.unwrap();
    assert_eq!(report.first_broken_position(), Some(target));
    let at: Vec<(Option<i64>, &ProblemKind)> = report.problems.iter().map(|p| (p.position, &p.kind)).collect();
    assert_eq!(at[..2], [(Some(target), &ProblemKind::ContentChanged), (Some(next), &ProblemKind::BrokenLink)]);
    assert!(kinds(&report).iter().any(|k| matches!(k, ProblemKind::SealMismatch { .. })));
}

#[tokio::test]
async fn a_deleted_event_is_reported_where_its_stream_skips_a_version() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    let deleted = position_of(&db, "environment-a", 2).await;
    let next = position_of(&db, "environment-a", 3).await;
    tamper(&db, &format!("DELETE FROM events WHERE global_position = {deleted}")).await;

    let report = store.verify().await.unwrap();
    assert_eq!(report.first_broken_position(), Some(next));
    assert_eq!(report.problems[0].kind, ProblemKind::VersionGap { expected: 2 });
    assert_eq!(
        report.problems[0].to_string(),
        format!("position {next}: environment-a v3: version 2 is missing (deleted or moved)")
    );
    let sealed = kinds(&report).into_iter().find_map(|k| match k {
        ProblemKind::SealMismatch { sealed_events, found_events, .. } => Some((*sealed_events, *found_events)),
        _ => None,
    });
    assert_eq!(sealed, Some((5, 4)));
}

#[tokio::test]
async fn a_stream_deleted_whole_is_caught_by_the_seals() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    tamper(&db, "DELETE FROM events WHERE stream_id = 'run-c'; DELETE FROM streams WHERE stream_id = 'run-c'").await;

    let report = store.verify().await.unwrap();
    assert!(!report.is_intact());
    // Every remaining stream chain is intact: only the seals can tell.
    assert!(kinds(&report).iter().all(|k| matches!(k, ProblemKind::SealMismatch { .. })), "{:?}", report.problems);
    assert_eq!(report.problems.len(), 3);
}

#[tokio::test]
async fn the_last_event_of_a_stream_deleted_is_caught_by_the_stream_row_and_the_seal() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    tamper(&db, "DELETE FROM events WHERE stream_id = 'environment-b' AND version = 4").await;

    let report = store.verify().await.unwrap();
    let head =
        report.problems.iter().find(|p| p.stream_id.as_deref() == Some("environment-b")).expect("the stream is named");
    assert_eq!(head.kind, ProblemKind::StreamHeadMismatch { recorded_version: 4, found_version: 3 });
    assert!(kinds(&report).iter().any(|k| matches!(k, ProblemKind::SealMismatch { .. })));
}

#[tokio::test]
async fn events_swapped_between_two_streams_are_reported_at_both_positions() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    let a = position_of(&db, "environment-a", 3).await;
    let b = position_of(&db, "environment-b", 3).await;
    tamper(
        &db,
        &format!(
            "ALTER TABLE events DROP CONSTRAINT events_stream_version_key; \
             UPDATE events SET stream_id = CASE WHEN global_position = {a} THEN 'environment-b' ELSE 'environment-a' END \
             WHERE global_position IN ({a}, {b})"
        ),
    )
    .await;

    let report = store.verify().await.unwrap();
    assert_eq!(report.first_broken_position(), Some(a.min(b)));
    // Both moved events no longer hash as stored, and each stream's next event no
    // longer links to the event now before it.
    let next_a = position_of(&db, "environment-a", 4).await;
    let next_b = position_of(&db, "environment-b", 4).await;
    let at: Vec<(Option<i64>, &ProblemKind)> = report.problems.iter().map(|p| (p.position, &p.kind)).collect();
    let mut expected = vec![
        (Some(a), &ProblemKind::ContentChanged),
        (Some(b), &ProblemKind::ContentChanged),
        (Some(next_a), &ProblemKind::BrokenLink),
        (Some(next_b), &ProblemKind::BrokenLink),
    ];
    expected.sort_by_key(|(p, _)| *p);
    assert_eq!(at, expected);
}

#[tokio::test]
async fn events_reordered_in_the_global_log_are_caught_by_the_seals() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    let a = position_of(&db, "environment-a", 1).await;
    let b = position_of(&db, "environment-b", 1).await;
    // Swap the two events' places in the global order; every stream chain still holds.
    tamper(
        &db,
        &format!(
            "ALTER TABLE events DROP CONSTRAINT events_stream_version_key, DROP CONSTRAINT events_event_id_key; \
             UPDATE events e SET stream_id = o.stream_id, version = o.version, event_id = o.event_id, \
                    event_type = o.event_type, schema_version = o.schema_version, payload = o.payload, \
                    metadata = o.metadata, recorded_at = o.recorded_at, prev_hash = o.prev_hash, hash = o.hash \
             FROM events o WHERE (e.global_position, o.global_position) IN (({a}, {b}), ({b}, {a}))"
        ),
    )
    .await;

    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::SealMismatch { seal_id: 1, sealed_events: 5, found_events: 5, .. }
    ));
}

#[tokio::test]
async fn unsealed_events_are_counted_and_still_chain_checked() {
    let db = TestDb::new().await;
    let store = sealed_log(&db).await;
    let s = "environment-a".parse().unwrap();
    store.append(&s, ExpectedVersion::Exact(4), &[NewEvent::new("Later", json!({}))]).await.unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.is_intact());
    assert_eq!((report.events_checked, report.unsealed_events), (13, 1));
}
