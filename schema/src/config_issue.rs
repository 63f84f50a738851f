//! One problem found in a configuration, at the full key it concerns.
//!
//! Every validator in the workspace (`AgentConfig`, `ScyllaOptions`, the tap, the verifier's
//! pipelines, each alert sink) returns a list of these, never the first problem only, and never
//! without a key: the binary maps each key back to its file and line.

use std::fmt;

/// One problem at a dotted key path such as `agent.topics[1].pattern` or `alerting.sinks[0].url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The key as written in the file, `.` between tables, `[i]` for array items, and `"..."`
    /// around keys that contain a dot (`kafka.options."bootstrap.servers"`).
    pub path: String,
    /// What is wrong and how to fix it, lowercase, without a trailing period.
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }

    /// An issue at `key` under `prefix`: `at("scylla", "keyspace", ..)` is at `scylla.keyspace`.
    pub fn at(prefix: &str, key: &str, message: impl Into<String>) -> Self {
        Self::new(format!("{prefix}.{key}"), message)
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_prefix_and_key() {
        let issue = ConfigIssue::at("alerting.sinks[2]", "routing_key", "set routing_key or routing_key_env");
        assert_eq!(issue.path, "alerting.sinks[2].routing_key");
        assert_eq!(issue.to_string(), "alerting.sinks[2].routing_key: set routing_key or routing_key_env");
    }
}
