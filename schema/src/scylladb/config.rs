//! Settings of the Scylla/Cassandra backend: the `[scylla]` section of the configuration file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config_issue::ConfigIssue;

/// How to reach and use the cluster. Contact points come from the store URL. `Debug` shows
/// `***` for the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaOptions {
    /// Keyspace holding kaudit's tables. Default `kaudit`.
    pub keyspace: String,
    /// Keyspace replication, applied when `kaudit migrate` creates it.
    pub replication: Replication,
    /// Consistency of reads and writes: `ONE`, `QUORUM`, `LOCAL_QUORUM` (default), `LOCAL_ONE`, `ALL`...
    pub consistency: String,
    /// Per-request timeout, ms. Default 5000.
    pub request_timeout_ms: u64,
    /// Connection set-up timeout, ms. Default 5000.
    pub connection_timeout_ms: u64,
    /// How long tallies and verdicts are kept, days (the tables' default TTL). Default 14.
    pub retention_days: u32,
    /// Wait for schema agreement after schema changes. Default true; turn off only for test
    /// servers that cannot report schema versions.
    pub await_schema_agreement: bool,
    /// Username for password authentication.
    pub username: Option<String>,
    /// Password; prefer `password_env`.
    pub password: Option<String>,
    /// Environment variable holding the password. Default `KAUDIT_SCYLLA_PASSWORD` when a
    /// username is set and `password` is not.
    pub password_env: Option<String>,
    /// TLS to the cluster; off when absent.
    pub tls: Option<TlsOptions>,
}

impl std::fmt::Debug for ScyllaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaOptions")
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("connection_timeout_ms", &self.connection_timeout_ms)
            .field("retention_days", &self.retention_days)
            .field("await_schema_agreement", &self.await_schema_agreement)
            .field("username", &self.username)
            .field("password", &crate::secret::debug_opt(&self.password))
            .field("password_env", &self.password_env)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The password variable named in `password_env`, or the default one, is not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scylla.username is set but environment variable {var} (scylla.password_env) is not")]
pub struct MissingPassword {
    pub var: String,
}

/// Keyspace replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// `SimpleStrategy` (one data center, tests) or `NetworkTopologyStrategy` (production).
    pub class: ReplicationClass,
    /// Replicas for `SimpleStrategy`. Default 1.
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// Replicas per data center for `NetworkTopologyStrategy`, e.g. `{ eu-west = 3, us-east = 3 }`.
    #[serde(default)]
    pub datacenters: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationClass {
    SimpleStrategy,
    NetworkTopologyStrategy,
}

/// TLS settings. Files are PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// CA certificates to trust; the system's when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain, for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key, for mutual TLS.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Check the node's certificate and host name. Default true.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        Self {
            keyspace: "kaudit".into(),
            replication: Replication::simple(1),
            consistency: "LOCAL_QUORUM".into(),
            request_timeout_ms: 5_000,
            connection_timeout_ms: 5_000,
            retention_days: 14,
            await_schema_agreement: true,
            username: None,
            password: None,
            password_env: None,
            tls: None,
        }
    }
}

impl Replication {
    pub fn simple(replication_factor: u32) -> Self {
        Self {
            class: ReplicationClass::SimpleStrategy,
            replication_factor: Some(replication_factor),
            datacenters: BTreeMap::new(),
        }
    }

    pub fn network_topology(datacenters: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self {
            class: ReplicationClass::NetworkTopologyStrategy,
            replication_factor: None,
            datacenters: datacenters.into_iter().collect(),
        }
    }

    /// The CQL map literal, e.g. `{'class': 'SimpleStrategy', 'replication_factor': 1}`.
    pub fn to_cql(&self) -> String {
        match self.class {
            ReplicationClass::SimpleStrategy => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {}}}", self.replication_factor.unwrap_or(1))
            }
            ReplicationClass::NetworkTopologyStrategy => {
                // Names are checked by `validate`; quoting them anyway keeps the literal whole.
                let dcs: Vec<String> =
                    self.datacenters.iter().map(|(dc, n)| format!("'{}': {n}", dc.replace('\'', "''"))).collect();
                format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
            }
        }
    }
}

/// Consistency levels by name.
pub fn parse_consistency(name: &str) -> Option<scylla::statement::Consistency> {
    use scylla::statement::Consistency::*;
    Some(match name.to_ascii_uppercase().as_str() {
        "ANY" => Any,
        "ONE" => One,
        "TWO" => Two,
        "THREE" => Three,
        "QUORUM" => Quorum,
        "ALL" => All,
        "LOCAL_QUORUM" => LocalQuorum,
        "EACH_QUORUM" => EachQuorum,
        "LOCAL_ONE" => LocalOne,
        _ => return None,
    })
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

/// A data center name as Scylla and Cassandra spell them: letters, digits, `_`, `-` and `.`
/// (`dc1`, `eu-west`, `us-east-1.aws`), at most 64.
fn valid_datacenter(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

impl ScyllaOptions {
    /// Every problem, each at its key under `prefix` (e.g. `scylla`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut bad = |key: &str, msg: String| issues.push(ConfigIssue::at(prefix, key, msg));
        if !valid_identifier(&self.keyspace) {
            bad("keyspace", format!("{:?} must be a letter then letters, digits or '_' (at most 48)", self.keyspace));
        }
        if parse_consistency(&self.consistency).is_none() {
            bad(
                "consistency",
                format!("{:?} is not a consistency level (ONE, QUORUM, LOCAL_QUORUM, ...)", self.consistency),
            );
        }
        match self.replication.class {
            ReplicationClass::SimpleStrategy => {
                if !self.replication.datacenters.is_empty() {
                    bad("replication.datacenters", "only for NetworkTopologyStrategy; use replication_factor".into());
                }
                if self.replication.replication_factor == Some(0) {
                    bad("replication.replication_factor", "must be at least 1".into());
                }
            }
            ReplicationClass::NetworkTopologyStrategy => {
                if self.replication.datacenters.is_empty() {
                    bad("replication.datacenters", "name at least one data center, e.g. { dc1 = 3 }".into());
                }
                if self.replication.replication_factor.is_some() {
                    bad("replication.replication_factor", "only for SimpleStrategy; use datacenters".into());
                }
                for (dc, n) in &self.replication.datacenters {
                    if !valid_datacenter(dc) {
                        let why = "is not a data center name: letters, digits, '_', '-' and '.' only (at most 64)";
                        bad(&format!("replication.datacenters.{dc:?}"), format!("{dc:?} {why}"));
                    } else if *n == 0 {
                        bad(&format!("replication.datacenters.{dc:?}"), "needs at least 1 replica".into());
                    }
                }
            }
        }
        if self.retention_days == 0 {
            bad("retention_days", "must be at least 1".into());
        }
        if self.request_timeout_ms == 0 || self.connection_timeout_ms == 0 {
            bad("request_timeout_ms", "timeouts must be positive".into());
        }
        if self.password.is_some() && self.username.is_none() {
            bad("password", "set username too".into());
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            bad("tls", "cert_file and key_file go together".into());
        }
        issues
    }

    /// The variable the password is read from when `password` is not set.
    pub fn password_var(&self) -> &str {
        self.password_env.as_deref().unwrap_or("KAUDIT_SCYLLA_PASSWORD")
    }

    /// The password, from `password` or the environment; `None` without a username. A username
    /// whose password variable is unset is an error, never an empty password.
    pub fn resolve_password(&self) -> Result<Option<crate::secret::Secret>, MissingPassword> {
        if self.username.is_none() {
            return Ok(None);
        }
        if let Some(p) = &self.password {
            return Ok(Some(crate::secret::Secret::new(p.as_str())));
        }
        let var = self.password_var();
        std::env::var(var).map(|p| Some(crate::secret::Secret::new(p))).map_err(|_| MissingPassword { var: var.into() })
    }

    /// Problems that depend on the environment, for a configuration whose store is Scylla: the
    /// password variable must be set when a username is.
    pub fn validate_env(&self, prefix: &str) -> Vec<ConfigIssue> {
        match self.resolve_password() {
            Err(MissingPassword { var }) => {
                vec![ConfigIssue::at(prefix, "password_env", format!("environment variable {var} is not set"))]
            }
            Ok(_) => Vec::new(),
        }
    }

    /// Table default TTL in seconds.
    pub fn ttl_seconds(&self) -> u64 {
        u64::from(self.retention_days) * 86_400
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_renders_as_cql() {
        assert_eq!(Replication::simple(1).to_cql(), "{'class': 'SimpleStrategy', 'replication_factor': 1}");
        let nts = Replication::network_topology([("eu".to_string(), 3), ("us".to_string(), 2)]);
        assert_eq!(nts.to_cql(), "{'class': 'NetworkTopologyStrategy', 'eu': 3, 'us': 2}");
    }

    #[test]
    fn validation_names_each_key() {
        let opts = ScyllaOptions {
            keyspace: "1bad-name".into(),
            consistency: "MOSTLY".into(),
            replication: Replication {
                class: ReplicationClass::NetworkTopologyStrategy,
                replication_factor: Some(3),
                datacenters: BTreeMap::new(),
            },
            password: Some("x".into()),
            ..ScyllaOptions::default()
        };
        let keys: Vec<String> = opts.validate("scylla").into_iter().map(|i| i.path).collect();
        assert_eq!(
            keys,
            [
                "scylla.keyspace",
                "scylla.consistency",
                "scylla.replication.datacenters",
                "scylla.replication.replication_factor",
                "scylla.password"
            ]
        );
        assert!(ScyllaOptions::default().validate("scylla").is_empty());
        let dcs = ScyllaOptions {
            replication: Replication::network_topology([
                ("dc1': 1, 'x".to_string(), 3),
                ("eu-west".to_string(), 3),
                ("us-east.1".to_string(), 0),
            ]),
            ..ScyllaOptions::default()
        };
        let issues = dcs.validate("scylla");
        let keys: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            keys,
            ["scylla.replication.datacenters.\"dc1': 1, 'x\"", "scylla.replication.datacenters.\"us-east.1\""]
        );
        assert!(issues[0].message.contains("not a data center name"), "{}", issues[0].message);
        assert_eq!(
            Replication::network_topology([("a'b".to_string(), 1)]).to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'a''b': 1}",
            "quotes in a name stay inside its literal"
        );
        assert_eq!(ScyllaOptions::default().ttl_seconds(), 14 * 86_400);
    }

    #[test]
    fn the_password_never_shows_and_a_missing_variable_is_an_error() {
        let opts = ScyllaOptions {
            username: Some("kaudit".into()),
            password: Some("hunter2-PLANTED".into()),
            ..ScyllaOptions::default()
        };
        assert!(!format!("{opts:?}").contains("hunter2"), "{opts:?}");
        assert_eq!(opts.resolve_password().unwrap().unwrap().expose(), "hunter2-PLANTED");
        let env = ScyllaOptions {
            username: Some("kaudit".into()),
            password_env: Some("KAUDIT_TEST_SURELY_UNSET_PASSWORD".into()),
            ..ScyllaOptions::default()
        };
        let issues = env.validate_env("scylla");
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].path, "scylla.password_env");
        assert_eq!(issues[0].message, "environment variable KAUDIT_TEST_SURELY_UNSET_PASSWORD is not set");
        assert!(ScyllaOptions::default().validate_env("scylla").is_empty(), "no username, no password needed");
    }
}
