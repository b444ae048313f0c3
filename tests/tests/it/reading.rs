//! Gap-free reading: a tailing reader sees every committed event exactly once, in
//! cursor order, however writers interleave, roll back or hold transactions open.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use shiplog_engine::store::{Cursor, EventStore, ExpectedVersion, NewEvent, StreamId};
use shiplog_tests::{TestDb, wait_readable};
use uuid::Uuid;

const WRITERS: u64 = 8;
const APPENDS_PER_WRITER: u64 = 40;

/// What one writer did: the event ids it committed and those it rolled back.
#[derive(Default)]
struct Written {
    committed: Vec<Uuid>,
    rolled_back: Vec<Uuid>,
}

/// Appends in explicit transactions: every 5th rolls back, every 7th stays open
/// until other writers have committed more events after it.
async fn writer(store: EventStore, id: u64, commits: Arc<AtomicU64>) -> Written {
    let mut written = Written::default();
    let stream: StreamId = format!("run-writer{id}").parse().unwrap();
    for n in 0..APPENDS_PER_WRITER {
        let events =
            [NewEvent::new("Step", json!({ "writer": id, "n": n })), NewEvent::new("Step", json!({ "more": n }))];
        let ids = events.iter().map(|e| e.event_id);
        let mut tx = store.pool().begin().await.unwrap();
        store.append_in(&mut tx, &stream, ExpectedVersion::Any, &events).await.unwrap();
        if n % 5 == 4 {
            tx.rollback().await.unwrap();
            written.rolled_back.extend(ids);
            continue;
        }
        if n % 7 == 3 {
            // A long transaction: it holds an early position while later ones commit.
            let seen = commits.load(Ordering::SeqCst);
            let others_done = seen + 3;
            for _ in 0..2000 {
                if commits.load(Ordering::SeqCst) >= others_done {
                    break;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tx.commit().await.unwrap();
        commits.fetch_add(1, Ordering::SeqCst);
        written.committed.extend(ids);
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_committed_event_once_in_order() {
    let db = TestDb::new().await;
    let store = db.store();
    let commits = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));

    let reader = {
        let (store, writing) = (store.clone(), writing.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = Cursor::START;
            let mut caught_up_after_writers = false;
            while !caught_up_after_writers {
                let done = !writing.load(Ordering::SeqCst);
                let page = store.read_all(cursor, 7).await.unwrap();
                for e in &page {
                    assert!(e.cursor > cursor, "cursor went backwards: {} after {cursor}", e.cursor);
                    cursor = e.cursor;
                    seen.push(e.event_id);
                }
                caught_up_after_writers = done && page.is_empty();
                if page.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
            seen
        })
    };

    let writers: Vec<_> = (0..WRITERS).map(|id| tokio::spawn(writer(store.clone(), id, commits.clone()))).collect();
    let mut written = Written::default();
    for w in futures::future::join_all(writers).await {
        let w = w.unwrap();
        written.committed.extend(w.committed);
        written.rolled_back.extend(w.rolled_back);
    }
    writing.store(false, Ordering::SeqCst);
    let seen = tokio::time::timeout(Duration::from_secs(60), reader).await.expect("reader caught up").unwrap();

    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    let committed: HashSet<Uuid> = written.committed.iter().copied().collect();
    let missed = committed.difference(&unique).count();
    let extra = unique.difference(&committed).count();
    assert_eq!((missed, extra), (0, 0), "the reader missed {missed} committed events and saw {extra} others");
    assert!(written.rolled_back.iter().all(|id| !unique.contains(id)));
    assert_eq!(committed.len() as u64, WRITERS * 2 * (APPENDS_PER_WRITER - APPENDS_PER_WRITER / 5));
}

#[tokio::test]
async fn an_open_transaction_holds_back_readers_until_it_ends() {
    let db = TestDb::new().await;
    let store = db.store();
    let early: StreamId = "run-early".parse().unwrap();
    let late: StreamId = "run-late".parse().unwrap();

    let mut open = store.pool().begin().await.unwrap();
    store.append_in(&mut open, &early, ExpectedVersion::NoStream, &[NewEvent::new("Early", json!({}))]).await.unwrap();
    store.append(&late, ExpectedVersion::NoStream, &[NewEvent::new("Late", json!({}))]).await.unwrap();

    // "Late" is committed, but "Early" could still commit before it in cursor order,
    // so a reader must not pass it yet: reading "Late" now would skip "Early" forever.
    assert!(store.read_all(Cursor::START, 10).await.unwrap().is_empty());
    open.commit().await.unwrap();
    wait_readable(&store, 2).await;
    let types: Vec<String> =
        store.read_all(Cursor::START, 10).await.unwrap().into_iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["Early", "Late"]);
}

#[tokio::test]
async fn cursors_print_and_parse_back() {
    let cursor = Cursor { tx_id: 812, position: 40 };
    assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
    assert!("812".parse::<Cursor>().is_err() && "a:1".parse::<Cursor>().is_err() && "-1:2".parse::<Cursor>().is_err());
}
