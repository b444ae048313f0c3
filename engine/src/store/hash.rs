//! The byte encodings behind the hash chains. `docs/audit.md` documents them for
//! auditors; a change here is a change of the audit format and needs a new version.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub type Hash = [u8; 32];

/// The `prev_hash` of every stream's first event and of the first seal.
pub const GENESIS: Hash = [0; 32];

/// The fields of one event that its hash covers, as stored.
pub struct EventFields<'a> {
    pub prev_hash: &'a Hash,
    pub stream_id: &'a str,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub recorded_at: DateTime<Utc>,
    pub payload: &'a str,
    pub metadata: &'a str,
}

/// `recorded_at` as hashed: RFC 3339 in UTC with exactly six fractional digits,
/// which is PostgreSQL's `timestamptz` precision, so the stored value re-encodes
/// to the same bytes.
pub fn timestamp_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn event_hash(e: &EventFields<'_>) -> Hash {
    let mut h = Sha256::new();
    h.update(e.prev_hash);
    put_text(&mut h, e.stream_id);
    h.update(e.version.to_be_bytes());
    h.update(e.event_id.as_bytes());
    put_text(&mut h, e.event_type);
    h.update(e.schema_version.to_be_bytes());
    put_text(&mut h, &timestamp_text(e.recorded_at));
    put_text(&mut h, e.payload);
    put_text(&mut h, e.metadata);
    h.finalize().into()
}

/// Every variable-length field is prefixed by its byte length (u32, big-endian),
/// so no two different events can produce the same byte sequence.
fn put_text(h: &mut Sha256, text: &str) {
    let len = u32::try_from(text.len()).expect("event fields are limited far below 4 GiB");
    h.update(len.to_be_bytes());
    h.update(text.as_bytes());
}

/// Hashes one seal: its header, then the hash of every event it covers in cursor order.
pub struct SealHasher(Sha256);

impl SealHasher {
    pub fn new(prev_hash: &Hash, seal_id: u64, to_tx_id: u64, to_position: u64, event_count: u64) -> Self {
        let mut h = Sha256::new();
        h.update(prev_hash);
        h.update(seal_id.to_be_bytes());
        h.update(to_tx_id.to_be_bytes());
        h.update(to_position.to_be_bytes());
        h.update(event_count.to_be_bytes());
        SealHasher(h)
    }

    pub fn add_event(&mut self, event_hash: &Hash) {
        self.0.update(event_hash);
    }

    pub fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

/// Reads a 32-byte hash from a database column.
pub fn from_column(bytes: &[u8]) -> Hash {
    bytes.try_into().unwrap_or([0xff; 32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(prev: &'a Hash, payload: &'a str) -> EventFields<'a> {
        EventFields {
            prev_hash: prev,
            stream_id: "environment-1",
            version: 1,
            event_id: Uuid::nil(),
            event_type: "EnvironmentCreated",
            schema_version: 1,
            recorded_at: DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap(),
            payload,
            metadata: "{}",
        }
    }

    #[test]
    fn timestamps_have_microsecond_precision_in_utc() {
        let at = DateTime::from_timestamp(1_700_000_000, 120_000_000).unwrap();
        assert_eq!(timestamp_text(at), "2023-11-14T22:13:20.120000Z");
    }

    #[test]
    fn the_hash_is_the_documented_encoding() {
        // docs/audit.md walks through this exact example; its Python snippet prints the same.
        let hash = event_hash(&fields(&GENESIS, "{\"name\":\"web\"}"));
        assert_eq!(hex::encode(hash), "1c792eb09578b6aba49d7da6e5919d551b2100018c60063346d26a018b947671");
    }

    #[test]
    fn every_covered_field_changes_the_hash() {
        let base = event_hash(&fields(&GENESIS, "{}"));
        assert_ne!(base, event_hash(&fields(&[1; 32], "{}")));
        assert_ne!(base, event_hash(&fields(&GENESIS, "{ }")));
        let mut other = fields(&GENESIS, "{}");
        other.version = 2;
        assert_ne!(base, event_hash(&other));
    }
}
