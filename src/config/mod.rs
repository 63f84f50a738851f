//! The kaudit configuration file (TOML): loading, validation, and errors that name file, line and key.
//!
//! Loading reports *every* problem at once. serde stops at the first error, so the loader runs it
//! in a loop: each error's span is mapped back to its key path, the key is set aside, and the
//! document is deserialised again, until it goes through; then semantic validation adds its own
//! findings. Every finding is reported against the line of the key in the original file.
//!
//! Before that, two passes rewrite the document: `KAUDIT__SECTION__KEY` environment variables set
//! keys ([`env`]), and durations written as strings (`flush_interval = "5s"`) become their `_ms`
//! keys ([`durations`]). Both record what they did, so a finding at a key the environment set
//! names the variable instead of a line, and one at a rewritten duration names the key as written.

mod durations;
pub mod env;
mod locate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kaudit_agent::AgentConfig;
use kaudit_alerting::SinkConfig;
use kaudit_schema::{ConfigIssue, ScyllaOptions, StoreUrl};
use kaudit_verifier::VerifierConfig;
use serde::{Deserialize, Serialize};

pub(crate) use durations::parse_ms as parse_duration_ms;
pub use env::Override;
pub use locate::KeyPath;

/// A configuration and the environment overrides applied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: KauditConfig,
    /// The `KAUDIT__*` variables that set keys, in the order they were applied.
    pub overrides: Vec<Override>,
}

/// What a report names as the file when there is none and the environment set every key.
pub const NO_FILE: &str = "environment";

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
    /// The verifier's API as alert receivers reach it (`https://kaudit.example.com`, a path prefix
    /// allowed): every notification links to its alert there (`/api/v1/alerts?kind=&topic=&tier=`).
    /// Default `http://<verifier.listen>` (`https://` with TLS); set it when that address is not
    /// reachable by whoever reads the alert (`0.0.0.0`, a proxy, a load balancer).
    pub public_url: Option<String>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            max_notifications_per_pass: 5,
            max_outbox_per_sink: 10_000,
            public_url: None,
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
    /// it cannot parse), with librdkafka's own message; then, when each passes alone, what it
    /// refuses of them together when a client is built from them (a SASL mechanism it has no
    /// provider for, a CA file it cannot read, a protocol it was built without). The client is
    /// built without `bootstrap.servers`, so nothing connects, and without Kerberos re-login, so
    /// no `kinit` runs.
    pub fn option_issues(&self) -> Vec<ConfigIssue> {
        let at = |key: &str| {
            KeyPath(["kafka", "options", key].map(|k| locate::Segment::Key(k.to_string())).to_vec()).to_string()
        };
        let mut issues = Vec::new();
        for (key, value) in &self.options {
            let mut one = rdkafka::ClientConfig::new();
            one.set(key, value.to_string());
            if let Err(rdkafka::error::KafkaError::ClientConfig(_, description, ..)) = one.create_native_config() {
                issues.push(ConfigIssue::new(at(key), format!("librdkafka refuses it: {}", description.trim_end())));
            }
        }
        if issues.is_empty()
            && let Some(refusal) = self.client_refusal()
        {
            let key = self.options.keys().find(|k| mentions(&refusal, k)).or_else(|| {
                let mechanism = refusal.contains("SASL mechanism");
                self.options.keys().find(|k| mechanism && k.starts_with("sasl.mechanism"))
            });
            issues.push(ConfigIssue::new(
                key.map_or_else(|| "kafka.options".to_string(), |k| at(k)),
                format!("librdkafka refuses these options together: {refusal}"),
            ));
        }
        issues
    }

    /// librdkafka's message when a client cannot be created from the options, if it cannot. Not
    /// tried with OIDC OAUTHBEARER, whose client fetches a token as it is created.
    fn client_refusal(&self) -> Option<String> {
        let oidc =
            self.options.get("sasl.oauthbearer.method").is_some_and(|m| m.to_string().eq_ignore_ascii_case("oidc"));
        if oidc {
            return None;
        }
        let mut all = rdkafka::ClientConfig::new();
        for (key, value) in &self.options {
            all.set(key, value.to_string());
        }
        all.set("sasl.kerberos.min.time.before.relogin", "0").set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg);
        match all.create::<rdkafka::producer::BaseProducer>() {
            Ok(_) => None,
            Err(error) => Some(error.to_string().trim_end().to_string()),
        }
    }
}

/// Whether librdkafka's `message` names the property `key` (as a whole word: `ssl.key` is not
/// named by a message about `ssl.key.location`).
fn mentions(message: &str, key: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    message.match_indices(key).any(|(at, _)| {
        let before = message[..at].chars().next_back();
        let mut after = message[at + key.len()..].chars();
        let continues = match after.next() {
            Some('.') => after.next().is_some_and(|c| c.is_ascii_alphanumeric()),
            Some(c) => name_char(c),
            None => false,
        };
        !before.is_some_and(name_char) && !continues
    })
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
        if self.verifier.coordination.is_some() {
            if matches!(self.store_url(), Ok(StoreUrl::Sqlite(_))) {
                issues.push(ConfigIssue::new(
                    "verifier.coordination",
                    "several verifier instances need a store they all reach: SQLite is one machine's file; \
                     use store = \"scylla://...\" or remove [verifier.coordination] to run one instance",
                ));
            }
            if self.kafka.bootstrap_servers.is_none() {
                issues.push(ConfigIssue::new(
                    "verifier.coordination",
                    "needs kafka.bootstrap_servers: the verifier group lives on the Kafka cluster",
                ));
            }
        }
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
        if let Some(Err(why)) = self.alerting.public_url.as_deref().map(kaudit_alerting::PublicUrl::parse) {
            issues.push(ConfigIssue::at("alerting", "public_url", why));
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

    /// Load and validate `path`, with this process's `KAUDIT__*` overrides applied.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(Some(path), &env::from_process()).map(|loaded| loaded.config)
    }

    /// Load and validate `path` (without one, an empty file: the defaults) with the overrides of
    /// `env`, (variable, value) pairs, applied.
    pub fn load_with(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let Some(path) = path else {
            return Self::from_toml_with("", Path::new(NO_FILE), env);
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                line: None,
                column: None,
                env: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::from_toml_with(&text, path, env)
    }

    /// Parse and validate `text`, naming `file` in errors; no environment overrides.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, file, &[]).map(|loaded| loaded.config)
    }

    /// Parse `text`, apply the overrides of `env`, and validate, naming `file` in errors.
    pub fn from_toml_with(text: &str, file: &Path, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
        let (config, overrides) = locate::load_all_errors::<KauditConfig>(text, file, env, KauditConfig::validate)?;
        Ok(Loaded { config, overrides })
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
    /// The environment variable that set the key, when one did (then there is no line).
    pub env: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "{}: {n} configuration error{}", self.file.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            match (&p.env, p.line) {
                (Some(variable), _) => write!(f, "  environment {variable}")?,
                (None, Some(line)) => write!(f, "  {}:{line}:{}", self.file.display(), p.column.unwrap_or(1))?,
                (None, None) => write!(f, "  {}", self.file.display())?,
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
