//! The embedded SQLite backend: one database file in WAL mode.
//!
//! Blocking SQLite calls run on tokio's blocking pool, one connection behind a mutex (SQLite
//! serialises writers anyway). A batch is one transaction, so rows, offsets, progress and
//! heartbeats land together.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{Connection, params};

use crate::bucket::EpochMillis;
use crate::clock::Clock;
use crate::columns::{TallyColumns, tally_columns};
use crate::difference::DifferenceSketch;
use crate::progress::{HeartbeatRow, ProgressRow};
use crate::records::{AlertRecord, CusumStateRow, OutboxEntry, VerdictOwnerRow, VerdictRow};
use crate::store::{Changes, FlushBatch, OffsetRow, Store, StoreError, TallyRow, TopicChanges, TopicReports, boxed};

mod cusum;
mod owners;
mod progress;

/// Numbered migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "create_tallies", include_str!("../sqlite/0001_create_tallies.sql")),
    (2, "create_verdicts_and_alerts", include_str!("../sqlite/0002_create_verdicts_and_alerts.sql")),
    (3, "create_progress_and_heartbeats", include_str!("../sqlite/0003_create_progress_and_heartbeats.sql")),
    (4, "create_changes", include_str!("../sqlite/0004_create_changes.sql")),
    (5, "create_cusum_states", include_str!("../sqlite/0005_create_cusum_states.sql")),
    (6, "create_verdict_owners", include_str!("../sqlite/0006_create_verdict_owners.sql")),
    (7, "add_tally_sketches", include_str!("../sqlite/0007_add_tally_sketches.sql")),
];

const UPSERT_TALLY: &str = concat!(
    "INSERT INTO tallies (",
    tally_columns!(),
    ", sketch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
     ON CONFLICT (topic, bucket_start_ms, tier, agent_id) DO UPDATE SET \
     bucket_width_ms = excluded.bucket_width_ms, version = excluded.version, count = excluded.count, \
     bytes = excluded.bytes, fp_xor = excluded.fp_xor, fp_sum = excluded.fp_sum, \
     no_time = excluded.no_time, malformed = excluded.malformed, latency = excluded.latency, \
     sketch = excluded.sketch \
     WHERE excluded.version >= tallies.version"
);

const UPSERT_OFFSET: &str = "INSERT INTO tap_offsets (agent_id, topic, partition, next_offset, version) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (agent_id, topic, partition) DO UPDATE SET \
     next_offset = excluded.next_offset, version = excluded.version \
     WHERE excluded.version >= tap_offsets.version";

/// Options for [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a write waits for a lock held by another connection before failing (and being
    /// retried by the agent's flusher).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { busy_timeout: Duration::from_secs(5) }
    }
}

/// Tallies in an SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, in WAL mode, and migrate it.
    pub fn open(path: &Path, options: &SqliteOptions) -> Result<Self, StoreError> {
        let open_err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            target: format!("sqlite://{}", path.display()),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(boxed(e)))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(boxed(e)))?;
        conn.busy_timeout(options.busy_timeout).map_err(|e| open_err(boxed(e)))?;
        wal_mode(&conn, options.busy_timeout).map_err(|e| open_err(boxed(e)))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(|e| open_err(boxed(e)))?;
        migrate(&conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path: path.to_path_buf() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest migration applied.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let conn = self.conn.lock().expect("sqlite mutex poisoned");
        current_version(&conn).map_err(|e| StoreError::ReadSchemaVersion { source: boxed(e) })
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> T + Send + 'static) -> T {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("sqlite mutex poisoned")))
            .await
            .expect("sqlite task panicked")
    }
}

/// Switch to WAL. Switching needs the file to itself and SQLite does not wait for that (no busy
/// handler), so a process opening the file while another one migrates it retries here, for up to
/// `timeout`.
fn wal_mode(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0))
}

/// Apply every migration not yet recorded. Safe when several processes open a new file at once
/// (a compose stack starting its services): each migration runs in a `BEGIN IMMEDIATE`
/// transaction, which takes the write lock up front, and re-reads the version inside it, so the
/// processes that lose the race wait (up to the busy timeout) and then find it applied.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let fail = |version, e| StoreError::Migrate { version, source: boxed(e) };
    for (version, name, sql) in MIGRATIONS {
        let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| fail(*version, e))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        )
        .map_err(|e| fail(*version, e))?;
        if current_version(&tx).map_err(|e| fail(*version, e))? >= *version {
            continue; // applied, by us earlier or by a process that won the race; dropping rolls back
        }
        tx.execute_batch(sql).map_err(|e| fail(*version, e))?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)", params![version, name])
            .map_err(|e| fail(*version, e))?;
        tx.commit().map_err(|e| fail(*version, e))?;
        tracing::info!(version, name, "applied sqlite migration");
    }
    Ok(())
}

fn write_batch(conn: &mut Connection, batch: &FlushBatch) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT_TALLY)?;
        let mut topic = tx.prepare_cached("INSERT OR IGNORE INTO topics (topic) VALUES (?1)")?;
        let mut last_topic: Option<&str> = None;
        for row in &batch.rows {
            let c = TallyColumns::encode(row);
            upsert.execute(params![
                c.topic,
                c.bucket_start_ms,
                c.tier,
                c.agent_id,
                c.bucket_width_ms,
                c.version,
                c.count,
                c.bytes,
                c.fp_xor,
                c.fp_sum,
                c.no_time,
                c.malformed,
                c.latency,
                row.tally.sketch.as_ref().map(DifferenceSketch::to_bytes),
            ])?;
            let name = row.key.topic.as_str();
            if last_topic != Some(name) {
                topic.execute(params![name])?;
                last_topic = Some(name);
            }
        }
        let keys = batch.change_keys();
        if !keys.is_empty() {
            let now = wall_ms();
            let mut change = tx.prepare_cached(
                "INSERT OR IGNORE INTO changes (written_ms, topic, bucket_start_ms, tier, agent_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (topic, bucket, tier, agent) in keys {
                change.execute(params![now, topic, bucket, tier, agent])?;
            }
            tx.prepare_cached("DELETE FROM changes WHERE written_ms < ?1")?
                .execute(params![now - crate::store::CHANGE_RETENTION_MS])?;
        }
        let mut offset = tx.prepare_cached(UPSERT_OFFSET)?;
        for o in &batch.offsets {
            offset.execute(params![o.agent_id, o.topic, o.partition, o.next_offset, o.version as i64])?;
        }
    }
    progress::write(&tx, &batch.progress, &batch.heartbeats)?;
    tx.commit()
}

/// This host's wall clock, ms: the change index's time.
fn wall_ms() -> EpochMillis {
    crate::clock::SystemClock.now_ms()
}

fn read_changes(conn: &Connection, since_ms: EpochMillis) -> rusqlite::Result<Changes> {
    let until_ms = wall_ms();
    let mut stmt = conn.prepare_cached(
        "SELECT topic, bucket_start_ms, MAX(written_ms) FROM changes WHERE written_ms >= ?1 \
         GROUP BY topic, bucket_start_ms ORDER BY topic, bucket_start_ms",
    )?;
    let mut rows = stmt.query(params![since_ms])?;
    let mut topics: Vec<TopicChanges> = Vec::new();
    while let Some(r) = rows.next()? {
        let topic =
            r.get_ref(0)?.as_str().map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Text, e.into()))?;
        if topics.last().is_none_or(|t| t.topic != topic) {
            topics.push(TopicChanges { topic: topic.to_string(), buckets: Vec::new() });
        }
        topics.last_mut().expect("pushed").buckets.push((r.get(1)?, r.get(2)?));
    }
    Ok(Changes { topics, until_ms })
}

/// A `SELECT` of [`tally_columns!`] then `sketch`, in order, decoded.
fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<TallyRow, StoreError>> {
    let text =
        |i| r.get_ref(i)?.as_str().map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, e.into()));
    let columns = TallyColumns {
        topic: text(0)?,
        bucket_start_ms: r.get(1)?,
        tier: text(2)?,
        agent_id: text(3)?,
        bucket_width_ms: r.get(4)?,
        version: r.get(5)?,
        count: r.get(6)?,
        bytes: r.get(7)?,
        fp_xor: r.get(8)?,
        fp_sum: r.get(9)?,
        no_time: r.get(10)?,
        malformed: r.get(11)?,
        latency: r.get(12)?,
    };
    let sketch: Option<Vec<u8>> = r.get(13)?;
    Ok(columns.decode().and_then(|mut row| {
        row.tally.sketch = crate::columns::decode_sketch(&row.key.topic, sketch.as_deref())?;
        Ok(row)
    }))
}

fn read_range(
    conn: &Connection,
    topic: &str,
    from_ms: EpochMillis,
    to_ms: EpochMillis,
) -> Result<Vec<TallyRow>, StoreError> {
    let read_err = |e| StoreError::ReadTallies { topic: topic.into(), source: boxed(e) };
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            tally_columns!(),
            ", sketch FROM tallies WHERE topic = ?1 AND bucket_start_ms >= ?2 AND bucket_start_ms < ?3 \
             ORDER BY bucket_start_ms, tier, agent_id"
        ))
        .map_err(read_err)?;
    let rows = stmt.query_map(params![topic, from_ms, to_ms], row_from_sql).map_err(read_err)?;
    rows.map(|r| r.map_err(read_err)?).collect()
}

/// One agent's rows of (topic, tier) in `[from_ms, to_ms)` (see [`Store::read_agent_range`]).
fn read_agent_range(
    conn: &Connection,
    (topic, tier, agent_id): (&str, &str, &str),
    from_ms: EpochMillis,
    to_ms: EpochMillis,
) -> Result<Vec<TallyRow>, StoreError> {
    let read_err = |e| StoreError::ReadTallies { topic: topic.into(), source: boxed(e) };
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            tally_columns!(),
            ", sketch FROM tallies WHERE topic = ?1 AND bucket_start_ms >= ?2 AND bucket_start_ms < ?3 \
             AND tier = ?4 AND agent_id = ?5 ORDER BY bucket_start_ms"
        ))
        .map_err(read_err)?;
    let rows = stmt.query_map(params![topic, from_ms, to_ms, tier, agent_id], row_from_sql).map_err(read_err)?;
    rows.map(|r| r.map_err(read_err)?).collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn write(&self, batch: &FlushBatch) -> Result<(), StoreError> {
        let batch = batch.clone();
        self.blocking(move |conn| {
            write_batch(conn, &batch).map_err(|e| StoreError::WriteTallies { rows: batch.rows.len(), source: boxed(e) })
        })
        .await
    }

    async fn read_range(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError> {
        let topic = topic.to_string();
        self.blocking(move |conn| read_range(conn, &topic, from_ms, to_ms)).await
    }

    async fn read_agent_range(
        &self,
        topic: &str,
        tier: &str,
        agent_id: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<TallyRow>, StoreError> {
        let (topic, tier, agent_id) = (topic.to_string(), tier.to_string(), agent_id.to_string());
        self.blocking(move |conn| read_agent_range(conn, (&topic, &tier, &agent_id), from_ms, to_ms)).await
    }

    async fn list_topics(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|conn| {
            let read_err = |e| StoreError::ReadTopics { source: boxed(e) };
            let mut stmt = conn.prepare_cached("SELECT topic FROM topics ORDER BY topic").map_err(read_err)?;
            let topics = stmt.query_map([], |r| r.get(0)).map_err(read_err)?;
            topics.collect::<Result<Vec<String>, _>>().map_err(read_err)
        })
        .await
    }

    async fn read_progress(&self, topic: &str) -> Result<Vec<ProgressRow>, StoreError> {
        let topic = topic.to_string();
        self.blocking(move |conn| {
            progress::read_progress(conn, &topic)
                .map_err(|e| StoreError::ReadProgress { topic: topic.clone(), source: boxed(e) })
        })
        .await
    }

    async fn read_changes(&self, since_ms: EpochMillis) -> Result<Changes, StoreError> {
        self.blocking(move |conn| {
            read_changes(conn, since_ms).map_err(|e| StoreError::ReadChanges { since_ms, source: boxed(e) })
        })
        .await
    }

    /// All topics on the store's one connection in one blocking call: no thread hop per topic.
    async fn read_reports(&self, topics: &[String]) -> Result<Vec<TopicReports>, StoreError> {
        let topics = topics.to_vec();
        self.blocking(move |conn| {
            let mut out = Vec::with_capacity(topics.len());
            for topic in topics {
                let progress = progress::read_progress(conn, &topic)
                    .map_err(|e| StoreError::ReadProgress { topic: topic.clone(), source: boxed(e) })?;
                let heartbeats = progress::read_heartbeats(conn, &topic)
                    .map_err(|e| StoreError::ReadHeartbeats { topic: topic.clone(), source: boxed(e) })?;
                out.push(TopicReports { topic, progress, heartbeats });
            }
            Ok(out)
        })
        .await
    }

    async fn read_heartbeats(&self, topic: &str) -> Result<Vec<HeartbeatRow>, StoreError> {
        let topic = topic.to_string();
        self.blocking(move |conn| {
            progress::read_heartbeats(conn, &topic)
                .map_err(|e| StoreError::ReadHeartbeats { topic: topic.clone(), source: boxed(e) })
        })
        .await
    }

    async fn load_offsets(&self, agent_id: &str) -> Result<Vec<OffsetRow>, StoreError> {
        let agent_id = agent_id.to_string();
        self.blocking(move |conn| {
            let read_err = |e| StoreError::ReadOffsets { agent_id: agent_id.clone(), source: boxed(e) };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT agent_id, topic, partition, next_offset, version FROM tap_offsets \
                     WHERE agent_id = ?1 ORDER BY topic, partition",
                )
                .map_err(read_err)?;
            let rows = stmt
                .query_map(params![agent_id], |r| {
                    Ok(OffsetRow {
                        agent_id: r.get(0)?,
                        topic: r.get(1)?,
                        partition: r.get(2)?,
                        next_offset: r.get(3)?,
                        version: r.get::<_, i64>(4)? as u64,
                    })
                })
                .map_err(read_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
        })
        .await
    }

    async fn write_verdicts(&self, rows: &[VerdictRow]) -> Result<(), StoreError> {
        let rows = rows.to_vec();
        self.blocking(move |conn| {
            write_verdicts(conn, &rows).map_err(|e| StoreError::WriteVerdicts { rows: rows.len(), source: boxed(e) })
        })
        .await
    }

    async fn read_verdicts(
        &self,
        topic: &str,
        from_ms: EpochMillis,
        to_ms: EpochMillis,
    ) -> Result<Vec<VerdictRow>, StoreError> {
        let topic = topic.to_string();
        self.blocking(move |conn| {
            read_verdicts(conn, &topic, from_ms, to_ms)
                .map_err(|e| StoreError::ReadVerdicts { topic: topic.clone(), source: boxed(e) })
        })
        .await
    }

    async fn record_alert(&self, alert: &AlertRecord, notifications: &[OutboxEntry]) -> Result<(), StoreError> {
        let (alert, notifications) = (alert.clone(), notifications.to_vec());
        self.blocking(move |conn| {
            record_alert(conn, &alert, &notifications).map_err(|e| StoreError::WriteAlert {
                dedup_key: alert.dedup_key.clone(),
                notifications: notifications.len(),
                source: boxed(e),
            })
        })
        .await
    }

    async fn trim_outbox(&self, sink: &str, max: usize) -> Result<usize, StoreError> {
        let sink = sink.to_string();
        self.blocking(move |conn| {
            trim_outbox(conn, &sink, max).map_err(|e| StoreError::TrimOutbox { sink: sink.clone(), source: boxed(e) })
        })
        .await
    }

    async fn list_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.blocking(|conn| {
            let read_err = |e| StoreError::ReadAlerts { source: boxed(e) };
            let mut stmt = conn
                .prepare_cached("SELECT dedup_key, state, body, updated_at_ms FROM alerts ORDER BY dedup_key")
                .map_err(read_err)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(AlertRecord {
                        dedup_key: r.get(0)?,
                        state: r.get(1)?,
                        body: r.get(2)?,
                        updated_at_ms: r.get(3)?,
                    })
                })
                .map_err(read_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
        })
        .await
    }

    async fn outbox(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let sink = sink.to_string();
        self.blocking(move |conn| {
            outbox(conn, &sink, limit).map_err(|e| StoreError::ReadOutbox { sink: sink.clone(), source: boxed(e) })
        })
        .await
    }

    async fn ack_notification(&self, sink: &str, seq: i64) -> Result<(), StoreError> {
        let sink = sink.to_string();
        self.blocking(move |conn| {
            conn.execute("DELETE FROM alert_outbox WHERE sink = ?1 AND seq = ?2", params![sink, seq])
                .map(|_| ())
                .map_err(|e| StoreError::AckNotification { sink: sink.clone(), seq, source: boxed(e) })
        })
        .await
    }

    async fn record_attempt(&self, entry: &OutboxEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.blocking(move |conn| {
            conn.execute(
                "UPDATE alert_outbox SET attempts = ?3 WHERE sink = ?1 AND seq = ?2",
                params![entry.sink, entry.seq, entry.attempts],
            )
            .map(|_| ())
            .map_err(|e| StoreError::RecordAttempt {
                sink: entry.sink.clone(),
                seq: entry.seq,
                source: boxed(e),
            })
        })
        .await
    }

    async fn write_cusum_states(&self, rows: &[CusumStateRow]) -> Result<(), StoreError> {
        let rows = rows.to_vec();
        self.blocking(move |conn| {
            cusum::write(conn, &rows).map_err(|e| StoreError::WriteCusumStates { rows: rows.len(), source: boxed(e) })
        })
        .await
    }

    async fn read_cusum_states(&self, topic: Option<&str>) -> Result<Vec<CusumStateRow>, StoreError> {
        let topic = topic.map(str::to_string);
        self.blocking(move |conn| cusum::read(conn, topic.as_deref())).await
    }

    async fn write_verdict_owners(&self, rows: &[VerdictOwnerRow]) -> Result<(), StoreError> {
        let rows = rows.to_vec();
        self.blocking(move |conn| {
            owners::write(conn, &rows)
                .map_err(|e| StoreError::WriteVerdictOwners { rows: rows.len(), source: boxed(e) })
        })
        .await
    }

    async fn read_verdict_owners(&self, topic: Option<&str>) -> Result<Vec<VerdictOwnerRow>, StoreError> {
        let topic = topic.map(str::to_string);
        self.blocking(move |conn| owners::read(conn, topic.as_deref())).await
    }
}

fn write_verdicts(conn: &mut Connection, rows: &[VerdictRow]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO verdicts (topic, bucket_start_ms, tier, upstream_tier, kind, upstream_count, \
             count, lost_fingerprint, p99_ms, evaluated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for v in rows {
            stmt.execute(params![
                v.topic,
                v.bucket_start_ms,
                v.tier,
                v.upstream_tier,
                v.kind.to_string(),
                v.upstream_count as i64,
                v.count as i64,
                v.lost_fingerprint.map(|f| f as i64),
                v.p99_ms.map(|p| p as i64),
                v.evaluated_at_ms
            ])?;
        }
    }
    for v in rows {
        progress::write_detail(&tx, &v.topic, v.bucket_start_ms, &v.tier, v.detail.as_ref())?;
    }
    tx.commit()
}

fn read_verdicts(
    conn: &Connection,
    topic: &str,
    from: EpochMillis,
    to: EpochMillis,
) -> rusqlite::Result<Vec<VerdictRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT v.topic, v.bucket_start_ms, v.tier, v.upstream_tier, v.kind, v.upstream_count, v.count, \
         v.lost_fingerprint, v.p99_ms, v.evaluated_at_ms, d.detail FROM verdicts v LEFT JOIN verdict_details d \
         ON d.topic = v.topic AND d.bucket_start_ms = v.bucket_start_ms AND d.tier = v.tier \
         WHERE v.topic = ?1 AND v.bucket_start_ms >= ?2 AND v.bucket_start_ms < ?3 \
         ORDER BY v.bucket_start_ms, v.tier",
    )?;
    let rows = stmt.query_map(params![topic, from, to], |r| {
        Ok(VerdictRow {
            topic: r.get(0)?,
            bucket_start_ms: r.get(1)?,
            tier: r.get(2)?,
            upstream_tier: r.get(3)?,
            kind: r
                .get::<_, String>(4)?
                .parse()
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?,
            upstream_count: r.get::<_, i64>(5)? as u64,
            count: r.get::<_, i64>(6)? as u64,
            lost_fingerprint: r.get::<_, Option<i64>>(7)?.map(|f| f as u64),
            p99_ms: r.get::<_, Option<i64>>(8)?.map(|p| p as u64),
            evaluated_at_ms: r.get(9)?,
            detail: progress::detail_from_sql(r, 10)?,
        })
    })?;
    rows.collect()
}

fn record_alert(conn: &mut Connection, alert: &AlertRecord, notifications: &[OutboxEntry]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO alerts (dedup_key, state, body, updated_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![alert.dedup_key, alert.state, alert.body, alert.updated_at_ms],
    )?;
    for n in notifications {
        tx.execute("DELETE FROM alert_outbox WHERE sink = ?1 AND dedup_key = ?2", params![n.sink, n.dedup_key])?;
        tx.execute(
            "INSERT OR REPLACE INTO alert_outbox (sink, seq, dedup_key, payload, attempts) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![n.sink, n.seq, n.dedup_key, n.payload, n.attempts],
        )?;
    }
    tx.commit()
}

fn trim_outbox(conn: &Connection, sink: &str, max: usize) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM alert_outbox WHERE sink = ?1 AND seq NOT IN \
         (SELECT seq FROM alert_outbox WHERE sink = ?1 ORDER BY seq DESC LIMIT ?2)",
        params![sink, max as i64],
    )
}

fn outbox(conn: &Connection, sink: &str, limit: usize) -> rusqlite::Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT sink, seq, dedup_key, payload, attempts FROM alert_outbox WHERE sink = ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![sink, limit as i64], |r| {
        Ok(OutboxEntry {
            sink: r.get(0)?,
            seq: r.get(1)?,
            dedup_key: r.get(2)?,
            payload: r.get(3)?,
            attempts: r.get(4)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests;
