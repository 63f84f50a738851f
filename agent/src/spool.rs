//! The bounded on-disk spool: flush batches waiting for the store, one file each, replayed in order.
//!
//! A segment is written to a temporary name and renamed, so a crash leaves whole segments only; a
//! restarted agent replays what its predecessor left (its rows keep their old agent id and
//! version, so replay is harmless if they had landed after all).
//!
//! When appending would pass `max_bytes`, the spool first *compacts*: every row is cumulative, so
//! of all the spooled versions of a key only the newest matters, and the whole spool collapses to
//! one segment with one row per key. Only if that is still too big are the oldest segments dropped,
//! which loses audit data: it is logged at ERROR and counted.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kaudit_schema::progress::{HeartbeatRow, ProgressRow, StreamId};
use kaudit_schema::{FlushBatch, OffsetRow, TallyKey, TallyRow};

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory or a segment could not be read or written.
    #[error("spool i/o on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A segment exists but cannot be decoded.
    #[error("spool segment {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What an append had to give up to stay within bounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub compacted: bool,
    pub dropped_rows: usize,
}

/// Segments on disk, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: BTreeMap<u64, u64>, // sequence -> size in bytes
    next_seq: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_path_buf(), source }
}

impl Spool {
    /// Open the spool in `dir` (creating it), picking up segments left by a previous run.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".batch")).and_then(|n| n.parse().ok()) else {
                continue; // temporary files of an interrupted write, or foreign files
            };
            let len = entry.metadata().map_err(io_err(&entry.path()))?.len();
            segments.insert(seq, len);
        }
        let next_seq = segments.keys().next_back().map_or(0, |s| s + 1);
        Ok(Self { dir: dir.to_path_buf(), max_bytes, segments, next_seq })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.batch"))
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    /// Append `batch` as the newest segment, compacting or dropping the oldest to stay in bounds.
    pub fn append(&mut self, batch: &FlushBatch) -> Result<AppendOutcome, SpoolError> {
        let encoded = serde_json::to_vec(batch).expect("flush batches always serialise");
        let mut outcome = AppendOutcome::default();
        if self.bytes() + encoded.len() as u64 > self.max_bytes && !self.is_empty() {
            self.compact()?;
            outcome.compacted = true;
        }
        while self.bytes() + encoded.len() as u64 > self.max_bytes && !self.is_empty() {
            let dropped = self.pop_front()?.map_or(0, |b| b.rows.len());
            outcome.dropped_rows += dropped;
        }
        self.write_segment(&encoded)?;
        Ok(outcome)
    }

    fn write_segment(&mut self, encoded: &[u8]) -> Result<(), SpoolError> {
        let seq = self.next_seq;
        let path = self.path(seq);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, encoded).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.segments.insert(seq, encoded.len() as u64);
        self.next_seq += 1;
        Ok(())
    }

    /// The oldest batch, without removing it.
    pub fn front(&self) -> Result<Option<FlushBatch>, SpoolError> {
        let Some(seq) = self.segments.keys().next().copied() else {
            return Ok(None);
        };
        let path = self.path(seq);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|source| SpoolError::Corrupt { path, source })
    }

    /// Remove and return the oldest batch.
    pub fn pop_front(&mut self) -> Result<Option<FlushBatch>, SpoolError> {
        let batch = match self.front() {
            Ok(b) => b,
            // A corrupt segment can never be replayed: drop it rather than wedge the spool.
            Err(SpoolError::Corrupt { path, source }) => {
                tracing::error!(path = %path.display(), error = %source, "dropping corrupt spool segment");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(seq) = self.segments.keys().next().copied() {
            let path = self.path(seq);
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(&seq);
        }
        Ok(batch)
    }

    /// Collapse every segment into one holding only the newest version of each row and offset.
    pub fn compact(&mut self) -> Result<(), SpoolError> {
        let mut batches = Vec::with_capacity(self.len());
        for seq in self.segments.keys() {
            let path = self.path(*seq);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            match serde_json::from_slice::<FlushBatch>(&bytes) {
                Ok(b) => batches.push(b),
                Err(source) => {
                    tracing::error!(path = %path.display(), error = %source, "dropping corrupt spool segment")
                }
            }
        }
        let merged = compact_batches(batches);
        let encoded = serde_json::to_vec(&merged).expect("flush batches always serialise");
        let old: Vec<u64> = self.segments.keys().copied().collect();
        self.write_segment(&encoded)?;
        for seq in old {
            let path = self.path(seq);
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(&seq);
        }
        Ok(())
    }
}

/// Newest version of every row, offset, progress report and heartbeat across `batches`: the same
/// store state, fewer writes.
pub fn compact_batches(batches: impl IntoIterator<Item = FlushBatch>) -> FlushBatch {
    let mut rows: HashMap<TallyKey, TallyRow> = HashMap::new();
    let mut offsets: HashMap<(String, String, i32), OffsetRow> = HashMap::new();
    let mut progress: HashMap<(String, String, StreamId), ProgressRow> = HashMap::new();
    let mut heartbeats: HashMap<(String, String, String), HeartbeatRow> = HashMap::new();
    for batch in batches {
        for row in batch.rows {
            keep_newest(&mut rows, row.key.clone(), row, |r| r.version);
        }
        for o in batch.offsets {
            keep_newest(&mut offsets, (o.agent_id.clone(), o.topic.clone(), o.partition), o, |o| o.version);
        }
        for p in batch.progress {
            keep_newest(&mut progress, (p.topic.clone(), p.tier.clone(), p.stream.clone()), p, |p| p.version);
        }
        for h in batch.heartbeats {
            keep_newest(&mut heartbeats, (h.topic.clone(), h.tier.clone(), h.agent_id.clone()), h, |h| h.version);
        }
    }
    let mut rows: Vec<TallyRow> = rows.into_values().collect();
    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut offsets: Vec<OffsetRow> = offsets.into_values().collect();
    offsets.sort_unstable_by(|a, b| (&a.agent_id, &a.topic, a.partition).cmp(&(&b.agent_id, &b.topic, b.partition)));
    let mut progress: Vec<ProgressRow> = progress.into_values().collect();
    progress.sort_unstable_by(|a, b| (&a.topic, &a.tier, &a.stream).cmp(&(&b.topic, &b.tier, &b.stream)));
    let mut heartbeats: Vec<HeartbeatRow> = heartbeats.into_values().collect();
    heartbeats.sort_unstable_by(|a, b| (&a.topic, &a.tier, &a.agent_id).cmp(&(&b.topic, &b.tier, &b.agent_id)));
    FlushBatch { rows, offsets, progress, heartbeats }
}

/// Insert `value` under `key` unless a newer version is there; equal versions: the later wins.
fn keep_newest<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V, version: impl Fn(&V) -> u64) {
    match map.get(&key) {
        Some(old) if version(old) > version(&value) => {}
        _ => {
            map.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests;
