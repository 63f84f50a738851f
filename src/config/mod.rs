//! The kaudit configuration file (TOML): loading, validation, and errors that name file, line and key.
//!
//! Loading reports *every* problem at once. serde stops at the first error, so the loader runs it
//! in a loop: each error's span is mapped back to its key path, the key is set aside, and the
//! document is deserialised again, until it goes through; then semantic validation adds its own
//! findings. Every finding is reported against the line of the key in the original file.

mod locate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kaudit_agent::AgentConfig;
use kaudit_alerting::SinkConfig;
use kaudit_schema::{ConfigIssue, ScyllaOptions, StoreUrl};
use kaudit_verifier::VerifierConfig;
use serde::{Deserialize, Serialize};

pub use locate::KeyPath;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KauditConfig {
    /// Directory for embedded state: the SQLite database and the agents' spools.
    /// Default `kaudit-data` (relative to the working directory).
    pub data_dir: PathBuf,
    /// Where tallies are stored: `sqlite:///path/audit.db` or `scylla://host:9042[,host...]`.
    /// Default `sqlite://<data_dir>/audit.db`.
    pub store: Option<String>,
    /// The agent: naming, buckets, flushing, spool and extraction rules.
    pub agent: AgentConfig,
    /// The Kafka cluster agents tap or the demo talks to.
    pub kafka: KafkaConfig,
    /// Keyspace, replication, consistency, timeouts, auth and TLS when `store` is `scylla://`.
    pub scylla: ScyllaOptions,
    /// Pipelines, grace, lateness, thresholds, CUSUM and the API address of `kaudit verifier`.
    pub verifier: VerifierConfig,
    /// Where alerts go.
    pub alerting: AlertingConfig,
    /// Tap mode of `kaudit agent`: consume topics as a tier (`[tap]`).
    pub tap: Option<kaudit_agent::tap::TapConfig>,
    /// Ingest mode of `kaudit agent`: records from apps in other languages (`[ingest]`).
    pub ingest: Option<kaudit_agent::ingest_server::IngestConfig>,
    /// Address of `kaudit agent`'s `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:9465`.
    pub agent_listen: String,
    /// Bearer tokens, TLS and connection limits of every HTTP listener of the process (`[http]`).
    pub http: kaudit_net::HttpConfig,
}

/// Alert delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Sinks (`[[alerting.sinks]]` with `type = "webhook" | "slack" | "pagerduty" | "alertmanager"`).
    /// With none, alerts are still stored, logged and listed by the API.
    pub sinks: Vec<SinkConfig>,
    /// First retry delay after a failed delivery, ms. Default 500; doubles per attempt, jittered.
    pub retry_base_ms: u64,
    /// Longest retry delay, ms. Default 60000.
    pub retry_max_ms: u64,
    /// Flood guard: alert changes of one evaluation pass notified one by one; past it the rest are
    /// stored and listed but not sent, and one `flood` alert names them. Default 5: a few specific pages, then one summary, for one pass.
    pub max_notifications_per_pass: usize,
    /// Undelivered notifications kept per sink; past it the oldest are dropped (ERROR, and
    /// `kaudit_verifier_notifications_dropped_total`). Default 10000.
    pub max_outbox_per_sink: usize,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            max_notifications_per_pass: 5,
            max_outbox_per_sink: 10_000,
        }
    }
}

impl AlertingConfig {
    /// The dispatcher's bounds.
    pub fn limits(&self) -> kaudit_alerting::dispatch::Limits {
        kaudit_alerting::dispatch::Limits {
            max_notifications_per_pass: self.max_notifications_per_pass,
            max_outbox_per_sink: self.max_outbox_per_sink,
        }
    }
}

/// Kafka connection settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` of the cluster. No default.
    pub bootstrap_servers: Option<String>,
    /// Extra librdkafka properties passed through as they are (`"security.protocol" = "SASL_SSL"`,
    /// `"linger.ms" = 5`, `"enable.idempotence" = true`). Keys that kaudit sets from its own
    /// options (`bootstrap.servers`) are rejected.
    pub options: BTreeMap<String, KafkaOptionValue>,
}

/// A librdkafka property value: librdkafka takes strings, TOML users write numbers and booleans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KafkaOptionValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for KafkaOptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl KafkaConfig {
    /// Each pass-through option librdkafka itself refuses (an unknown or misspelt property, a value
    /// it cannot parse or a feature it was built without), with librdkafka's own message. Each is
    /// set on a fresh configuration object: no client is created, nothing connects.
    pub fn option_issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (key, value) in &self.options {
            let at =
                KeyPath(["kafka", "options", key].map(|k| locate::Segment::Key(k.to_string())).to_vec()).to_string();
            let value = value.to_string();
            let mechanism = key == "sasl.mechanisms" || key == "sasl.mechanism";
            if mechanism && value.split(',').any(|m| m.trim().eq_ignore_ascii_case("GSSAPI")) {
                issues.push(ConfigIssue::new(
                    at.clone(),
                    "GSSAPI (Kerberos) is not supported: kaudit's librdkafka is built without cyrus-sasl; \
                     use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
                ));
            }
            let mut one = rdkafka::ClientConfig::new();
            one.set(key, &value);
            if let Err(rdkafka::error::KafkaError::ClientConfig(_, description, ..)) = one.create_native_config() {
                issues.push(ConfigIssue::new(at, format!("librdkafka refuses it: {}", description.trim_end())));
            }
        }
        issues
    }
}

/// librdkafka properties that first-class options own.
const RESERVED_KAFKA_OPTIONS: &[(&str, &str)] = &[("bootstrap.servers", "kafka.bootstrap_servers")];

impl Default for KauditConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("kaudit-data"),
            store: None,
            agent: AgentConfig::default(),
            kafka: KafkaConfig::default(),
            scylla: ScyllaOptions::default(),
            verifier: VerifierConfig::default(),
            alerting: AlertingConfig::default(),
            tap: None,
            ingest: None,
            agent_listen: "127.0.0.1:9465".into(),
            http: kaudit_net::HttpConfig::default(),
        }
    }
}

impl KauditConfig {
    /// librdkafka settings: `kafka.bootstrap_servers` and the pass-through options.
    pub fn kafka_client(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        if let Some(b) = &self.kafka.bootstrap_servers {
            c.set("bootstrap.servers", b);
        }
        for (k, v) in &self.kafka.options {
            c.set(k, v.to_string());
        }
        c
    }

    /// The store URL, defaulted under the data directory.
    pub fn store_url(&self) -> Result<StoreUrl, kaudit_schema::StoreUrlError> {
        match &self.store {
            Some(url) => url.parse(),
            None => Ok(StoreUrl::Sqlite(self.data_dir.join("audit.db"))),
        }
    }

    /// Every semantic problem (types and unknown keys are caught while loading).
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = self.agent.validate("agent");
        issues.extend(self.store_issues());
        issues.extend(self.verifier.validate("verifier"));
        issues.extend(self.verifier.validate_with_flush_interval("verifier", self.agent.flush_interval_ms));
        issues.extend(self.alerting_issues());
        if let Some(tap) = &self.tap {
            issues.extend(self.tap_issues(tap));
        }
        if let Some(ingest) = &self.ingest {
            issues.extend(ingest.validate("ingest"));
            issues.extend(udp_issues(ingest));
        }
        issues.extend(self.http.validate("http"));
        if self.agent_listen.parse::<std::net::SocketAddr>().is_err() {
            issues.push(ConfigIssue::new("agent_listen", "must be an address such as 127.0.0.1:9465"));
        }
        issues.extend(self.kafka.option_issues());
        for (key, owner) in RESERVED_KAFKA_OPTIONS {
            if self.kafka.options.contains_key(*key) {
                issues.push(ConfigIssue::new(
                    format!("kafka.options.\"{key}\""),
                    format!("set it with `{owner}` instead"),
                ));
            }
        }
        issues
    }

    /// The store URL and, for Scylla, its section (and its password variable).
    fn store_issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(e) = self.store_url() {
            issues.push(ConfigIssue::new("store", e.reason));
        }
        issues.extend(self.scylla.validate("scylla"));
        if matches!(self.store_url(), Ok(StoreUrl::Scylla(_))) {
            issues.extend(self.scylla.validate_env("scylla"));
        }
        issues
    }

    /// `[alerting]`: its bounds, every sink, and sink names that clash.
    fn alerting_issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.alerting.max_notifications_per_pass == 0 || self.alerting.max_outbox_per_sink == 0 {
            let key = if self.alerting.max_outbox_per_sink == 0 {
                "max_outbox_per_sink"
            } else {
                "max_notifications_per_pass"
            };
            issues.push(ConfigIssue::at("alerting", key, "must be positive"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, sink) in self.alerting.sinks.iter().enumerate() {
            issues.extend(sink.validate(&format!("alerting.sinks[{i}]")));
            if !names.insert(sink.name()) {
                issues.push(ConfigIssue::new(
                    format!("alerting.sinks[{i}]"),
                    format!("two sinks are named {:?}; set name", sink.name()),
                ));
            }
        }
        issues
    }

    /// `[tap]`, the cluster it needs, and the librdkafka options it sets itself.
    fn tap_issues(&self, tap: &kaudit_agent::tap::TapConfig) -> Vec<ConfigIssue> {
        let mut issues = tap.validate("tap");
        if self.kafka.bootstrap_servers.is_none() {
            issues.push(ConfigIssue::new("kafka.bootstrap_servers", "the tap needs a cluster to consume from"));
        }
        for key in kaudit_agent::tap::TAP_OWNED_OPTIONS {
            if self.kafka.options.contains_key(*key) {
                issues.push(ConfigIssue::new(
                    format!("kafka.options.\"{key}\""),
                    "the tap sets this itself ([tap] group_id, start_from)",
                ));
            }
        }
        issues
    }

    /// Load and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                line: None,
                column: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::from_toml(&text, path)
    }

    /// Parse and validate `text`, naming `file` in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        locate::load_all_errors::<KauditConfig>(text, file, KauditConfig::validate)
    }
}

/// `ingest.udp_listen`: an address, on loopback unless `ingest.udp_allow_network`.
fn udp_issues(ingest: &kaudit_agent::ingest_server::IngestConfig) -> Option<ConfigIssue> {
    let udp = ingest.udp_listen.as_ref()?;
    let Ok(addr) = udp.parse::<std::net::SocketAddr>() else {
        return Some(ConfigIssue::new("ingest.udp_listen", "must be an address such as 127.0.0.1:9467"));
    };
    (!addr.ip().is_loopback() && !ingest.udp_allow_network).then(|| {
        ConfigIssue::new(
            "ingest.udp_listen",
            format!(
                "{addr} is not loopback and UDP datagrams carry no token; \
                 listen on 127.0.0.1 or set ingest.udp_allow_network = true to accept them from the network"
            ),
        )
    })
}

/// Everything wrong with one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `agent.topics[1].pattern`; empty for the file as a whole.
    pub key: String,
    /// 1-based line and column, where the key is in the file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "{}: {n} configuration error{}", self.file.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "  {}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}:{}", p.column.unwrap_or(1))?;
            }
            if p.key.is_empty() {
                writeln!(f, ": {}", p.message)?;
            } else {
                writeln!(f, ": key `{}`: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests;
