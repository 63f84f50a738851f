//! CUSUM detector states in SQLite (migration 0005).
//!
//! One row per (topic, tier, signal), upserted in one transaction per write; the `WHERE` on
//! `last_bucket_ms` makes a state for an older bucket than the stored one a no-op, so a write that
//! arrives late or twice never takes a detector back.

use rusqlite::types::Type;
use rusqlite::{Connection, params};

use crate::records::CusumStateRow;
use crate::store::{StoreError, boxed};

const UPSERT_STATE: &str = "INSERT INTO cusum_states \
     (topic, tier, signal, format, state, last_bucket_ms, hits, updated_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (topic, tier, signal) DO UPDATE SET \
     format = excluded.format, state = excluded.state, last_bucket_ms = excluded.last_bucket_ms, \
     hits = excluded.hits, updated_ms = excluded.updated_ms \
     WHERE excluded.last_bucket_ms >= cusum_states.last_bucket_ms";

const SELECT_STATES: &str = "SELECT topic, tier, signal, format, state, last_bucket_ms, hits, updated_ms \
     FROM cusum_states WHERE ?1 IS NULL OR topic = ?1 ORDER BY topic, tier, signal";

/// Upsert `rows` in one transaction.
pub(super) fn write(conn: &mut Connection, rows: &[CusumStateRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT_STATE)?;
        for r in rows {
            upsert.execute(params![
                r.topic,
                r.tier,
                r.signal,
                r.format,
                r.state,
                r.last_bucket_ms,
                r.hits_text(),
                r.updated_ms
            ])?;
        }
    }
    tx.commit()
}

/// The states of `topic`, or of every topic.
pub(super) fn read(conn: &Connection, topic: Option<&str>) -> Result<Vec<CusumStateRow>, StoreError> {
    let scope = topic.map_or_else(|| "all topics".to_string(), |t| format!("topic {t}"));
    let read_err = |e| StoreError::ReadCusumStates { scope: scope.clone(), source: boxed(e) };
    let mut stmt = conn.prepare_cached(SELECT_STATES).map_err(read_err)?;
    let rows = stmt
        .query_map(params![topic], |r| {
            let topic: String = r.get(0)?;
            let text: String = r.get(6)?;
            let hits = CusumStateRow::parse_hits(&topic, &text)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, Type::Text, Box::new(e)))?;
            Ok(CusumStateRow {
                topic,
                tier: r.get(1)?,
                signal: r.get(2)?,
                format: r.get(3)?,
                state: r.get(4)?,
                last_bucket_ms: r.get(5)?,
                hits,
                updated_ms: r.get(7)?,
            })
        })
        .map_err(read_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
}
