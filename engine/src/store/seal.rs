//! Seals: a hash chain over the global order of events, appended by a sealer.
//!
//! Per-stream chains cannot notice a stream deleted whole or events moved between
//! positions; a seal covers every event after the previous seal's cursor up to its
//! own, in cursor order, so those show up as a seal that no longer matches.

use futures::TryStreamExt;
use sqlx::Row;

use super::hash::{self, GENESIS, SealHasher};
use super::{Cursor, EventStore};

/// Only one sealer may extend the chain at a time; this key names the advisory lock.
const SEALER_LOCK: i64 = 0x5348_4950_5345_414c; // "SHIPSEAL"

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealOutcome {
    Sealed {
        seal_id: u64,
        to: Cursor,
        event_count: u64,
    },
    /// No event has become readable since the last seal.
    NothingToSeal,
}

impl EventStore {
    /// Seals the events that became readable since the last seal, at most
    /// `max_events` of them: one unit of the sealer's work.
    #[tracing::instrument(skip(self), err)]
    pub async fn seal(&self, max_events: usize) -> sqlx::Result<SealOutcome> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SEALER_LOCK).execute(&mut *tx).await?;
        let last = sqlx::query("SELECT seal_id, to_tx_id, to_position, hash FROM seals ORDER BY seal_id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (last_id, after, prev_hash) = match last {
            Some(row) => (
                row.try_get::<i64, _>("seal_id")? as u64,
                Cursor { tx_id: row.try_get("to_tx_id")?, position: row.try_get("to_position")? },
                hash::from_column(row.try_get("hash")?),
            ),
            None => (0, Cursor::START, GENESIS),
        };
        // The same horizon as `read_all`: nothing can later commit before `to`.
        let rows = sqlx::query(
            "SELECT tx_id::text::bigint AS tx_number, global_position, hash FROM events \
             WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, global_position LIMIT $3",
        )
        .bind(after.tx_id)
        .bind(after.position)
        .bind(max_events as i64)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last_row) = rows.last() else {
            return Ok(SealOutcome::NothingToSeal);
        };
        let to = Cursor { tx_id: last_row.try_get("tx_number")?, position: last_row.try_get("global_position")? };
        let seal_id = last_id + 1;
        let event_count = rows.len() as u64;
        let mut hasher = SealHasher::new(&prev_hash, seal_id, to.tx_id as u64, to.position as u64, event_count);
        for row in &rows {
            hasher.add_event(&hash::from_column(row.try_get("hash")?));
        }
        sqlx::query(
            "INSERT INTO seals (seal_id, to_tx_id, to_position, event_count, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(seal_id as i64)
        .bind(to.tx_id)
        .bind(to.position)
        .bind(event_count as i64)
        .bind(&prev_hash[..])
        .bind(&hasher.finish()[..])
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SealOutcome::Sealed { seal_id, to, event_count })
    }

    /// Seals everything readable now, in seals of at most `max_events`.
    pub async fn seal_all(&self, max_events: usize) -> sqlx::Result<u64> {
        let mut seals = 0;
        while let SealOutcome::Sealed { .. } = self.seal(max_events).await? {
            seals += 1;
        }
        Ok(seals)
    }

    /// The newest seal's id and hash: an auditor who writes these down elsewhere can
    /// later prove that nothing sealed before them was rewritten.
    pub async fn latest_seal(&self) -> sqlx::Result<Option<(u64, String)>> {
        let row = sqlx::query("SELECT seal_id, hash FROM seals ORDER BY seal_id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get::<i64, _>("seal_id")? as u64, hex::encode(r.try_get::<Vec<u8>, _>("hash")?))))
            .transpose()
    }

    /// Streams `(cursor, hash)` of every event in cursor order; used by verification.
    pub(super) fn event_hashes_in_order(&self) -> impl futures::Stream<Item = sqlx::Result<(Cursor, hash::Hash)>> + '_ {
        sqlx::query("SELECT tx_id::text::bigint AS tx_number, global_position, hash FROM events ORDER BY tx_id, global_position")
            .fetch(&self.pool)
            .map_ok(|row| {
                let cursor = Cursor { tx_id: row.get("tx_number"), position: row.get("global_position") };
                (cursor, hash::from_column(row.get("hash")))
            })
    }
}
