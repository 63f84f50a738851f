//! The `[agent]` section of the configuration file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kaudit_schema::{BucketWidth, ConfigIssue};
use serde::{Deserialize, Serialize};

use crate::auditor::{Auditor, AuditorOptions};
use crate::clock::Clock;
use crate::extract::{BusinessIdSource, EventTimeSource, ExtractRule};
use crate::flusher::FlusherOptions;
use crate::rules::TopicRules;

/// Agent settings. Every field has a default, so an empty `[agent]` section is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Agent name. Its id in the store is `name-<instance id>`, the instance id chosen at start,
    /// so a restarted agent never overwrites its predecessor's rows. Letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Event-time bucket width, ms. Default 60000 (60 s). Every agent and tier of a pipeline must
    /// use the same width for their tallies to be comparable.
    pub bucket_width_ms: u64,
    /// How often open tallies are written to the store, ms. Default 5000 (5 s). Store writes per
    /// second are (topics × tiers × open buckets) / flush interval, whatever the message rate.
    pub flush_interval_ms: u64,
    /// How long after a bucket's end it is kept in memory for late messages, ms. Default 600000
    /// (10 min). Later messages are still counted, in a separate late row.
    pub close_after_ms: u64,
    /// Flush batches kept in memory while the store is unreachable before spilling to the
    /// spool. Default 64.
    pub max_queued_batches: usize,
    /// Directory of the on-disk spool. Default `<data_dir>/spool/<name>`.
    pub spool_dir: Option<PathBuf>,
    /// Bound on the spool's size, bytes. Default 268435456 (256 MiB). Past it the spool compacts
    /// to the newest row per key; if that is still too big, the oldest batches are dropped,
    /// logged at ERROR and counted in `kaudit_agent_spool_dropped_rows_total`.
    pub spool_max_bytes: u64,
    /// How long shutdown keeps retrying the store before leaving the backlog in the spool, ms.
    /// Default 10000.
    pub shutdown_timeout_ms: u64,
    /// Most distinct (topic, tier) streams this agent tallies. Default 10000. Each stream stays in
    /// memory (and in the metrics) until the agent stops, so this bounds both. Past it, ingest
    /// refuses records of new streams (HTTP 422 naming the cap; UDP lines dropped), and the Kafka
    /// client wrappers count messages of new streams as malformed in the `~overflow` stream; both
    /// are counted in `kaudit_agent_refused_records_total{reason="stream_cap"}` and logged at most
    /// every 10 s. A tap is not capped: its streams are the partitions Kafka assigns it.
    pub max_streams: usize,
    /// How far ahead of this agent's clock an event time may be, ms. Default 3600000 (1 h).
    /// Later event times count as malformed, in the bucket of their arrival: a bucket in the far
    /// future would never close.
    pub max_future_ms: u64,
    /// Most event-time buckets open in memory at once, across all streams. Default 20000 (each
    /// holds a tally with a latency histogram of a few KiB). Past it, a message that would open
    /// another bucket (scattered far-past event times, say) counts as malformed in its arrival
    /// bucket, in `kaudit_agent_refused_records_total{reason="bucket_cap"}`. Normal traffic holds
    /// streams × (close_after / bucket width + 2) buckets.
    pub max_open_buckets: usize,
    /// Extraction rules by topic pattern, first match wins. Default: every topic (`*`) uses the
    /// message key and the Kafka timestamp.
    pub topics: Vec<TopicRuleConfig>,
    /// The difference sketch every tally row carries, which names lost and duplicated messages
    /// (README, "Naming lost messages").
    pub sketch: SketchConfig,
}

/// `[agent.sketch]`: the size of each row's difference sketch. Every agent of a pipeline must use
/// the same size for their rows to be compared message by message (otherwise only counts are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SketchConfig {
    /// Keep a sketch in every row. Default true. Off: rows carry counts only, and no message of
    /// theirs can be named.
    pub enabled: bool,
    /// Cells, a multiple of `hashes`, at most 4096. Default 80: every difference of up to 40
    /// messages in a bucket named 99.4 % of the time; 40 bytes a cell in every row written.
    pub cells: u16,
    /// Cells each message is added to, 3 to 8. Default 4.
    pub hashes: u8,
}

impl Default for SketchConfig {
    fn default() -> Self {
        let g = kaudit_schema::difference::DEFAULT_GEOMETRY;
        Self { enabled: true, cells: g.cells, hashes: g.hashes }
    }
}

impl SketchConfig {
    /// The geometry when enabled (validated by [`AgentConfig::validate`]).
    pub fn geometry(&self) -> Option<kaudit_schema::difference::Geometry> {
        self.enabled.then_some(kaudit_schema::difference::Geometry { cells: self.cells, hashes: self.hashes })
    }
}

/// Largest `max_future_ms` accepted: a year. Past that, far-future buckets would pile up again.
const MAX_FUTURE_LIMIT_MS: u64 = 366 * 86_400_000;

/// How to read business id and event time for the topics matching `pattern`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRuleConfig {
    /// Glob over topic names: `*`, `orders.*`, `{payments,refunds}-v2`.
    pub pattern: String,
    /// `key` (default), `header:NAME` or `json:/POINTER`.
    #[serde(default)]
    pub business_id: BusinessIdSource,
    /// `kafka_timestamp` (default), `header:NAME` or `json:/POINTER`; seconds or milliseconds
    /// since the epoch, told apart by magnitude.
    #[serde(default)]
    pub event_time: EventTimeSource,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            name: "kaudit".into(),
            bucket_width_ms: 60_000,
            flush_interval_ms: 5_000,
            close_after_ms: 600_000,
            max_queued_batches: 64,
            spool_dir: None,
            spool_max_bytes: 256 << 20,
            shutdown_timeout_ms: 10_000,
            max_streams: crate::table::DEFAULT_MAX_STREAMS,
            max_future_ms: crate::table::DEFAULT_MAX_FUTURE_MS as u64,
            max_open_buckets: crate::table::DEFAULT_MAX_OPEN_BUCKETS,
            topics: Vec::new(),
            sketch: SketchConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Every problem with these settings (not just the first), under `prefix` (e.g. `agent`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let at = |key: &str| format!("{prefix}.{key}");
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            issues.push(ConfigIssue::new(
                at("name"),
                format!("{:?} must be non-empty letters, digits, '.', '_' or '-'", self.name),
            ));
        }
        if BucketWidth::from_millis(self.bucket_width_ms).is_none() {
            issues.push(ConfigIssue::new(at("bucket_width_ms"), "must be at least 1 ms"));
        }
        if self.flush_interval_ms < 10 {
            issues.push(ConfigIssue::new(at("flush_interval_ms"), "must be at least 10 ms"));
        }
        if self.max_queued_batches == 0 {
            issues.push(ConfigIssue::new(at("max_queued_batches"), "must be at least 1"));
        }
        if self.spool_max_bytes < 64 << 10 {
            issues.push(ConfigIssue::new(at("spool_max_bytes"), "must be at least 65536 bytes"));
        }
        if self.max_open_buckets == 0 {
            issues.push(ConfigIssue::new(at("max_open_buckets"), "must be at least 1"));
        }
        if self.max_streams == 0 {
            issues.push(ConfigIssue::new(at("max_streams"), "must be at least 1"));
        }
        if self.max_future_ms > MAX_FUTURE_LIMIT_MS {
            issues.push(ConfigIssue::new(
                at("max_future_ms"),
                format!("{} is more than a year ({MAX_FUTURE_LIMIT_MS} ms)", self.max_future_ms),
            ));
        }
        let geometry = kaudit_schema::difference::Geometry { cells: self.sketch.cells, hashes: self.sketch.hashes };
        match geometry.checked() {
            Err(kaudit_schema::difference::DifferenceError::Hashes(_)) => {
                issues.push(ConfigIssue::new(at("sketch.hashes"), format!("{} is not 3 to 8", self.sketch.hashes)));
            }
            Err(_) => issues.push(ConfigIssue::new(
                at("sketch.cells"),
                format!(
                    "{} must be a multiple of sketch.hashes ({}), at least twice it and at most 4096",
                    self.sketch.cells, self.sketch.hashes
                ),
            )),
            Ok(_) => {}
        }
        for (i, rule) in self.topics.iter().enumerate() {
            if let Err(e) = globset::Glob::new(&rule.pattern) {
                issues.push(ConfigIssue::new(
                    format!("{prefix}.topics[{i}].pattern"),
                    format!("invalid glob: {}", e.kind()),
                ));
            }
        }
        issues
    }

    /// The topic rules. Call after [`AgentConfig::validate`] returned no issue.
    pub fn topic_rules(&self) -> TopicRules {
        let rules = self.topics.iter().map(|r| {
            (r.pattern.clone(), ExtractRule { business_id: r.business_id.clone(), event_time: r.event_time.clone() })
        });
        TopicRules::new(rules).expect("patterns were validated")
    }

    /// An auditor with these settings. Call after [`AgentConfig::validate`] returned no issue.
    pub fn auditor(&self, clock: Arc<dyn Clock>) -> Auditor {
        Auditor::new(AuditorOptions {
            name: self.name.clone(),
            bucket_width: BucketWidth::from_millis(self.bucket_width_ms).expect("validated"),
            close_after_ms: self.close_after_ms as i64,
            rules: self.topic_rules(),
            clock,
            instance_id: None,
            max_streams: self.max_streams,
            max_open_buckets: self.max_open_buckets,
            max_future_ms: self.max_future_ms as i64,
            sketch: self.sketch.geometry(),
        })
    }

    pub fn flusher_options(&self) -> FlusherOptions {
        FlusherOptions {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_queued_batches: self.max_queued_batches,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            ack_gate: None,
        }
    }

    /// Where this agent spools, given the data directory.
    pub fn spool_dir(&self, data_dir: &Path) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| data_dir.join("spool").join(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sketch_size_that_cannot_work_is_refused_by_key() {
        let c = AgentConfig { sketch: SketchConfig { enabled: true, cells: 81, hashes: 4 }, ..AgentConfig::default() };
        let issues = c.validate("agent");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "agent.sketch.cells");
        let c = AgentConfig { sketch: SketchConfig { enabled: true, cells: 80, hashes: 9 }, ..AgentConfig::default() };
        assert_eq!(c.validate("agent")[0].path, "agent.sketch.hashes");
        assert_eq!(AgentConfig::default().sketch.geometry(), Some(kaudit_schema::difference::DEFAULT_GEOMETRY));
        let off = SketchConfig { enabled: false, ..SketchConfig::default() };
        assert_eq!(off.geometry(), None);
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = AgentConfig::default();
        assert!(c.validate("agent").is_empty());
        assert_eq!((c.bucket_width_ms, c.flush_interval_ms), (60_000, 5_000));
        assert_eq!((c.max_streams, c.max_future_ms), (10_000, 3_600_000));
        assert_eq!(c.spool_dir(Path::new("/d")), PathBuf::from("/d/spool/kaudit"));
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let c = AgentConfig {
            name: "bad name".into(),
            bucket_width_ms: 0,
            max_queued_batches: 0,
            max_streams: 0,
            max_future_ms: u64::MAX,
            topics: vec![
                TopicRuleConfig {
                    pattern: "ok.*".into(),
                    business_id: Default::default(),
                    event_time: Default::default(),
                },
                TopicRuleConfig {
                    pattern: "[".into(),
                    business_id: Default::default(),
                    event_time: Default::default(),
                },
            ],
            ..AgentConfig::default()
        };
        let paths: Vec<String> = c.validate("agent").into_iter().map(|i| i.path).collect();
        assert_eq!(
            paths,
            [
                "agent.name",
                "agent.bucket_width_ms",
                "agent.max_queued_batches",
                "agent.max_streams",
                "agent.max_future_ms",
                "agent.topics[1].pattern"
            ]
        );
    }
}
