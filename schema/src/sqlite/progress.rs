//! Progress reports, heartbeats and verdict details in SQLite (migration 0003).
//!
//! Progress and heartbeats are written inside the flush's transaction (so a clean stop's
//! heartbeat never lands without the tallies of its batch), as upserts that keep the highest
//! version like tallies. A verdict's detail lives in `verdict_details` beside `verdicts`.

use rusqlite::types::Type;
use rusqlite::{Connection, Transaction, params};

use crate::progress::{HeartbeatRow, ProgressRow, StreamId};
use crate::records::VerdictDetail;

const UPSERT_PROGRESS: &str = "INSERT INTO progress \
     (topic, tier, stream, agent_id, watermark_ms, caught_up, reported_at_ms, version) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (topic, tier, stream) DO UPDATE SET \
     agent_id = excluded.agent_id, watermark_ms = excluded.watermark_ms, caught_up = excluded.caught_up, \
     reported_at_ms = excluded.reported_at_ms, version = excluded.version \
     WHERE excluded.version >= progress.version";

const UPSERT_HEARTBEAT: &str = "INSERT INTO heartbeats \
     (topic, tier, agent_id, started_at_ms, heartbeat_ms, open_from_ms, stopped, resumes, version) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
     ON CONFLICT (topic, tier, agent_id) DO UPDATE SET \
     started_at_ms = excluded.started_at_ms, heartbeat_ms = excluded.heartbeat_ms, \
     open_from_ms = excluded.open_from_ms, stopped = excluded.stopped, resumes = excluded.resumes, \
     version = excluded.version \
     WHERE excluded.version >= heartbeats.version";

/// Upsert `progress` and `heartbeats` in the caller's transaction.
pub(super) fn write(
    tx: &Transaction<'_>,
    progress: &[ProgressRow],
    heartbeats: &[HeartbeatRow],
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(UPSERT_PROGRESS)?;
    for p in progress {
        upsert.execute(params![
            p.topic,
            p.tier,
            p.stream.to_string(),
            p.agent_id,
            p.watermark_ms,
            p.caught_up,
            p.reported_at_ms,
            p.version as i64
        ])?;
    }
    let mut upsert = tx.prepare_cached(UPSERT_HEARTBEAT)?;
    for h in heartbeats {
        upsert.execute(params![
            h.topic,
            h.tier,
            h.agent_id,
            h.started_at_ms,
            h.heartbeat_ms,
            h.open_from_ms,
            h.stopped,
            h.resumes,
            h.version as i64
        ])?;
    }
    Ok(())
}

fn conversion(i: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))
}

/// Every progress row of `topic`, by (tier, stream).
pub(super) fn read_progress(conn: &Connection, topic: &str) -> rusqlite::Result<Vec<ProgressRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT topic, tier, stream, agent_id, watermark_ms, caught_up, reported_at_ms, version \
         FROM progress WHERE topic = ?1",
    )?;
    let rows = stmt.query_map(params![topic], |r| {
        Ok(ProgressRow {
            topic: r.get(0)?,
            tier: r.get(1)?,
            stream: r.get::<_, String>(2)?.parse::<StreamId>().map_err(|e| conversion(2, e))?,
            agent_id: r.get(3)?,
            watermark_ms: r.get(4)?,
            caught_up: r.get(5)?,
            reported_at_ms: r.get(6)?,
            version: r.get::<_, i64>(7)? as u64,
        })
    })?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    out.sort_by(|a, b| (&a.tier, &a.stream).cmp(&(&b.tier, &b.stream)));
    Ok(out)
}

/// Every heartbeat row of `topic`, by (tier, agent).
pub(super) fn read_heartbeats(conn: &Connection, topic: &str) -> rusqlite::Result<Vec<HeartbeatRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT topic, tier, agent_id, started_at_ms, heartbeat_ms, open_from_ms, stopped, resumes, version \
         FROM heartbeats WHERE topic = ?1 ORDER BY tier, agent_id",
    )?;
    let rows = stmt.query_map(params![topic], |r| {
        Ok(HeartbeatRow {
            topic: r.get(0)?,
            tier: r.get(1)?,
            agent_id: r.get(2)?,
            started_at_ms: r.get(3)?,
            heartbeat_ms: r.get(4)?,
            open_from_ms: r.get(5)?,
            stopped: r.get(6)?,
            resumes: r.get(7)?,
            version: r.get::<_, i64>(8)? as u64,
        })
    })?;
    rows.collect()
}

/// Store or clear the detail of the verdict of (topic, bucket, tier), in the caller's transaction.
pub(super) fn write_detail(
    tx: &Transaction<'_>,
    topic: &str,
    bucket_start_ms: i64,
    tier: &str,
    detail: Option<&VerdictDetail>,
) -> rusqlite::Result<()> {
    match detail {
        Some(detail) => {
            let json =
                serde_json::to_string(detail).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO verdict_details (topic, bucket_start_ms, tier, detail) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![topic, bucket_start_ms, tier, json])?;
        }
        None => {
            tx.prepare_cached("DELETE FROM verdict_details WHERE topic = ?1 AND bucket_start_ms = ?2 AND tier = ?3")?
                .execute(params![topic, bucket_start_ms, tier])?;
        }
    }
    Ok(())
}

/// A stored detail (column `i` of a verdict read), decoded; NULL when the verdict has none.
pub(super) fn detail_from_sql(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<VerdictDetail>> {
    r.get::<_, Option<String>>(i)?.map(|json| serde_json::from_str(&json).map_err(|e| conversion(i, e))).transpose()
}
