//! The embedded SQLite backend: one database file in WAL mode.
//!
//! Blocking SQLite calls run on tokio's blocking pool, one connection behind a mutex (SQLite
//! serialises writers anyway). A batch is one transaction, so rows and offsets land together.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::bucket::EpochMillis;
use crate::sketch::LatencySketch;
use crate::store::{FlushBatch, OffsetRow, Store, StoreError, TallyKey, TallyRow, boxed};
use crate::tally::Tally;

/// Numbered migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(u32, &str, &str)] = &[(
    1,
    "create_tallies",
    include_str!("../sqlite/0001_create_tallies.sql"),
)];

const UPSERT_TALLY: &str = "INSERT INTO tallies (topic, bucket_start_ms, tier, agent_id, bucket_width_ms, version, \
     count, bytes, fp_xor, fp_sum, no_time, malformed, latency) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
     ON CONFLICT (topic, bucket_start_ms, tier, agent_id) DO UPDATE SET \
     bucket_width_ms = excluded.bucket_width_ms, version = excluded.version, count = excluded.count, \
     bytes = excluded.bytes, fp_xor = excluded.fp_xor, fp_sum = excluded.fp_sum, \
     no_time = excluded.no_time, malformed = excluded.malformed, latency = excluded.latency \
     WHERE excluded.version >= tallies.version";

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
        Self {
            busy_timeout: Duration::from_secs(5),
        }
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
        conn.busy_timeout(options.busy_timeout)
            .map_err(|e| open_err(boxed(e)))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_err(boxed(e)))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_err(boxed(e)))?;
        migrate(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest migration applied.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let conn = self.conn.lock().expect("sqlite mutex poisoned");
        current_version(&conn).map_err(|e| StoreError::Read {
            what: "schema version",
            source: boxed(e),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> T {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("sqlite mutex poisoned")))
            .await
            .expect("sqlite task panicked")
    }
}

fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let fail = |version, e| StoreError::Migrate {
        version,
        source: boxed(e),
    };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    )
    .map_err(|e| fail(0, e))?;
    let have = current_version(conn).map_err(|e| fail(0, e))?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > have) {
        let tx = conn
            .unchecked_transaction()
            .map_err(|e| fail(*version, e))?;
        tx.execute_batch(sql).map_err(|e| fail(*version, e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            params![version, name],
        )
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
            let (k, t) = (&row.key, &row.tally);
            upsert.execute(params![
                k.topic,
                k.bucket_start_ms,
                k.tier,
                k.agent_id,
                row.bucket_width_ms,
                row.version as i64,
                t.count as i64,
                t.bytes as i64,
                t.fp_xor as i64,
                t.fp_sum as i64,
                t.no_time as i64,
                t.malformed as i64,
                t.latency.to_bytes(),
            ])?;
            if last_topic != Some(k.topic.as_str()) {
                topic.execute(params![k.topic])?;
                last_topic = Some(&k.topic);
            }
        }
        let mut offset = tx.prepare_cached(UPSERT_OFFSET)?;
        for o in &batch.offsets {
            offset.execute(params![
                o.agent_id,
                o.topic,
                o.partition,
                o.next_offset,
                o.version as i64
            ])?;
        }
    }
    tx.commit()
}

fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<(TallyRow, Vec<u8>)> {
    let key = TallyKey {
        topic: r.get(0)?,
        bucket_start_ms: r.get(1)?,
        tier: r.get(2)?,
        agent_id: r.get(3)?,
    };
    let tally = Tally {
        count: r.get::<_, i64>(6)? as u64,
        bytes: r.get::<_, i64>(7)? as u64,
        fp_xor: r.get::<_, i64>(8)? as u64,
        fp_sum: r.get::<_, i64>(9)? as u64,
        no_time: r.get::<_, i64>(10)? as u64,
        malformed: r.get::<_, i64>(11)? as u64,
        latency: LatencySketch::default(),
    };
    let row = TallyRow {
        key,
        bucket_width_ms: r.get(4)?,
        version: r.get::<_, i64>(5)? as u64,
        tally,
    };
    Ok((row, r.get(12)?))
}

fn read_range(
    conn: &Connection,
    topic: &str,
    from_ms: EpochMillis,
    to_ms: EpochMillis,
) -> Result<Vec<TallyRow>, StoreError> {
    let read_err = |e| StoreError::Read {
        what: "tallies",
        source: boxed(e),
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT topic, bucket_start_ms, tier, agent_id, bucket_width_ms, version, count, bytes, \
             fp_xor, fp_sum, no_time, malformed, latency FROM tallies \
             WHERE topic = ?1 AND bucket_start_ms >= ?2 AND bucket_start_ms < ?3 \
             ORDER BY bucket_start_ms, tier, agent_id",
        )
        .map_err(read_err)?;
    let rows = stmt
        .query_map(params![topic, from_ms, to_ms], row_from_sql)
        .map_err(read_err)?;
    rows.map(|r| {
        let (mut row, sketch) = r.map_err(read_err)?;
        row.tally.latency =
            LatencySketch::from_bytes(&sketch).map_err(|e| StoreError::Corrupt {
                topic: row.key.topic.clone(),
                reason: e.to_string(),
            })?;
        Ok(row)
    })
    .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn write(&self, batch: &FlushBatch) -> Result<(), StoreError> {
        let batch = batch.clone();
        self.blocking(move |conn| {
            write_batch(conn, &batch).map_err(|e| StoreError::Write {
                rows: batch.rows.len(),
                source: boxed(e),
            })
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
        self.blocking(move |conn| read_range(conn, &topic, from_ms, to_ms))
            .await
    }

    async fn list_topics(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|conn| {
            let read_err = |e| StoreError::Read {
                what: "topics",
                source: boxed(e),
            };
            let mut stmt = conn
                .prepare_cached("SELECT topic FROM topics ORDER BY topic")
                .map_err(read_err)?;
            let topics = stmt.query_map([], |r| r.get(0)).map_err(read_err)?;
            topics.collect::<Result<Vec<String>, _>>().map_err(read_err)
        })
        .await
    }

    async fn load_offsets(&self, agent_id: &str) -> Result<Vec<OffsetRow>, StoreError> {
        let agent_id = agent_id.to_string();
        self.blocking(move |conn| {
            let read_err = |e| StoreError::Read {
                what: "tap offsets",
                source: boxed(e),
            };
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
}

impl SqliteStore {
    /// Whether the migration table records `version` (used by tests and `kaudit migrate`).
    pub fn has_migration(&self, version: u32) -> Result<bool, StoreError> {
        let conn = self.conn.lock().expect("sqlite mutex poisoned");
        conn.query_row(
            "SELECT 1 FROM schema_migrations WHERE version = ?1",
            params![version],
            |_| Ok(()),
        )
        .optional()
        .map(|o| o.is_some())
        .map_err(|e| StoreError::Read {
            what: "schema version",
            source: boxed(e),
        })
    }
}

#[cfg(test)]
mod tests;
