//! How a tally row is laid out in a store's columns: the one encoding every backend uses.
//!
//! Both tables (`sqlite/0001_create_tallies.sql`, `cql/0001_create_tallies.cql`) have the same
//! columns, in [`TALLY_COLUMNS`] order. CQL and SQLite have no unsigned integers, so every `u64`
//! is stored as the `i64` with the same bits (`count` and `bytes` never reach 2^63; the
//! fingerprint aggregates use all 64 bits and come back unchanged), and the latency sketch as its
//! serialised bytes. A backend only binds and reads [`TallyColumns`]; it never converts a field.

use scylla::{DeserializeRow, SerializeRow};

use crate::difference::DifferenceSketch;
use crate::sketch::LatencySketch;
use crate::store::{StoreError, TallyKey, TallyRow};
use crate::tally::Tally;

/// The tally columns, in table order, for statements of both backends.
macro_rules! tally_columns {
    () => {
        "topic, bucket_start_ms, tier, agent_id, bucket_width_ms, version, count, bytes, fp_xor, fp_sum, no_time, \
         malformed, latency"
    };
}
pub(crate) use tally_columns;

/// The column list as a value, for tests and error messages.
#[cfg(test)]
pub(crate) const TALLY_COLUMNS: &str = tally_columns!();

/// One tally row as stored. Its text borrows from the row being written, or from the result being read.
#[derive(Debug, Clone, PartialEq, Eq, SerializeRow, DeserializeRow)]
pub(crate) struct TallyColumns<'a> {
    pub topic: &'a str,
    pub bucket_start_ms: i64,
    pub tier: &'a str,
    pub agent_id: &'a str,
    pub bucket_width_ms: i64,
    pub version: i64,
    pub count: i64,
    pub bytes: i64,
    pub fp_xor: i64,
    pub fp_sum: i64,
    pub no_time: i64,
    pub malformed: i64,
    /// [`LatencySketch::to_bytes`].
    pub latency: Vec<u8>,
}

impl<'a> TallyColumns<'a> {
    /// The columns that store `row`.
    pub fn encode(row: &'a TallyRow) -> Self {
        let (k, t) = (&row.key, &row.tally);
        Self {
            topic: &k.topic,
            bucket_start_ms: k.bucket_start_ms,
            tier: &k.tier,
            agent_id: &k.agent_id,
            bucket_width_ms: row.bucket_width_ms,
            version: row.version as i64,
            count: t.count as i64,
            bytes: t.bytes as i64,
            fp_xor: t.fp_xor as i64,
            fp_sum: t.fp_sum as i64,
            no_time: t.no_time as i64,
            malformed: t.malformed as i64,
            latency: t.latency.to_bytes(),
        }
    }

    /// The row these columns store; [`StoreError::Corrupt`] if the sketch does not decode.
    pub fn decode(self) -> Result<TallyRow, StoreError> {
        let latency = LatencySketch::from_bytes(&self.latency)
            .map_err(|e| StoreError::Corrupt { topic: self.topic.into(), reason: e.to_string() })?;
        let key = TallyKey {
            topic: self.topic.into(),
            bucket_start_ms: self.bucket_start_ms,
            tier: self.tier.into(),
            agent_id: self.agent_id.into(),
        };
        let tally = Tally {
            count: self.count as u64,
            bytes: self.bytes as u64,
            fp_xor: self.fp_xor as u64,
            fp_sum: self.fp_sum as u64,
            no_time: self.no_time as u64,
            malformed: self.malformed as u64,
            latency,
            sketch: None,
        };
        Ok(TallyRow { key, bucket_width_ms: self.bucket_width_ms, version: self.version as u64, tally })
    }
}

/// A stored sketch column read back: `None` stays `None`; bytes that are no sketch are
/// [`StoreError::Corrupt`] naming the topic.
pub(crate) fn decode_sketch(topic: &str, bytes: Option<&[u8]>) -> Result<Option<DifferenceSketch>, StoreError> {
    bytes
        .map(DifferenceSketch::from_bytes)
        .transpose()
        .map_err(|e| StoreError::Corrupt { topic: topic.into(), reason: format!("difference sketch: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoding then decoding gives the row back, the 64-bit fingerprint aggregates included.
    #[test]
    fn round_trips_every_bit() {
        let mut tally = Tally::default();
        tally.add(u64::MAX - 3, 100);
        tally.add(5, 7);
        tally.latency.record(42);
        let key =
            TallyKey { topic: "orders".into(), bucket_start_ms: 60_000, tier: "broker".into(), agent_id: "a".into() };
        let row = TallyRow { key, bucket_width_ms: 60_000, version: u64::MAX >> 1, tally };
        assert!(TallyColumns::encode(&row).fp_sum < 0 || TallyColumns::encode(&row).fp_xor < 0);
        assert_eq!(TallyColumns::encode(&row).decode().unwrap(), row);
        assert_eq!(TALLY_COLUMNS.split(", ").count(), 13);
    }

    #[test]
    fn a_bad_sketch_is_corrupt() {
        let key = TallyKey { topic: "orders".into(), bucket_start_ms: 0, tier: "t".into(), agent_id: "a".into() };
        let row = TallyRow { key, bucket_width_ms: 1, version: 1, tally: Tally::default() };
        let mut columns = TallyColumns::encode(&row);
        columns.latency = vec![0xff; 3];
        assert!(matches!(columns.decode(), Err(StoreError::Corrupt { topic, .. }) if topic == "orders"));
    }
}
