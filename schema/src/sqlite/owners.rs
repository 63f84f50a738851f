//! Verdict owners in SQLite (migration 0006).
//!
//! One row per (topic, bucket, epoch, owner), upserted in one transaction per write; a write of a
//! stored row keeps the later `written_ms`, so writing a row twice, or late, is harmless.

use rusqlite::{Connection, params};

use crate::records::VerdictOwnerRow;
use crate::store::{StoreError, boxed};

const UPSERT_OWNER: &str = "INSERT INTO verdict_owners (topic, bucket_start_ms, epoch, owner, written_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (topic, bucket_start_ms, epoch, owner) DO UPDATE SET written_ms = excluded.written_ms \
     WHERE excluded.written_ms > verdict_owners.written_ms";

const SELECT_OWNERS: &str = "SELECT topic, bucket_start_ms, epoch, owner, written_ms FROM verdict_owners \
     WHERE ?1 IS NULL OR topic = ?1 ORDER BY topic, bucket_start_ms, epoch, owner";

/// Upsert `rows` in one transaction.
pub(super) fn write(conn: &mut Connection, rows: &[VerdictOwnerRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT_OWNER)?;
        for r in rows {
            upsert.execute(params![r.topic, r.bucket_start_ms, r.epoch, r.owner, r.written_ms])?;
        }
    }
    tx.commit()
}

/// The owner rows of `topic`, or of every topic.
pub(super) fn read(conn: &Connection, topic: Option<&str>) -> Result<Vec<VerdictOwnerRow>, StoreError> {
    let scope = topic.map_or_else(|| "all topics".to_string(), |t| format!("topic {t}"));
    let read_err = |e| StoreError::ReadVerdictOwners { scope: scope.clone(), source: boxed(e) };
    let mut stmt = conn.prepare_cached(SELECT_OWNERS).map_err(read_err)?;
    let rows = stmt
        .query_map(params![topic], |r| {
            Ok(VerdictOwnerRow {
                topic: r.get(0)?,
                bucket_start_ms: r.get(1)?,
                epoch: r.get(2)?,
                owner: r.get(3)?,
                written_ms: r.get(4)?,
            })
        })
        .map_err(read_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
}
