//! `[tap]` and the librdkafka settings the tap owns.

use kaudit_schema::ConfigIssue;
use kaudit_schema::names::{check_tier, check_topic};
use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

/// `[tap]`: what to consume and as which tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapConfig {
    /// The tier these messages are counted as, e.g. `broker` or `mirror`.
    pub tier: String,
    /// Topic names, or regular expressions starting with `^` (librdkafka subscription patterns).
    pub topics: Vec<String>,
    /// The tap's consumer group. Default `kaudit-tap-<tier>`. Partitions' tallies and next offsets
    /// are stored under it, so every tap of one group continues the others' counts: give taps
    /// that should share the work one group, and taps that count independently different groups.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Where a partition without a stored offset starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start_from: StartFrom,
}

/// Where a partition without a stored offset starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest message the cluster still holds.
    #[default]
    Earliest,
    /// The next message produced after the partition is assigned.
    Latest,
}

impl TapConfig {
    pub fn group_id(&self) -> String {
        self.group_id.clone().unwrap_or_else(|| format!("kaudit-tap-{}", self.tier))
    }

    /// Every problem, each at its key under `prefix` (e.g. `tap`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.tier.is_empty() {
            issues.push(ConfigIssue::at(prefix, "tier", "name the tier, e.g. \"broker\""));
        } else if let Err(reason) = check_tier(&self.tier) {
            // The ingest API refuses such a tier, and no pipeline could name it.
            issues.push(ConfigIssue::at(prefix, "tier", reason));
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            issues.push(ConfigIssue::at(prefix, "topics", "name at least one topic or ^regex"));
        }
        for (i, topic) in self.topics.iter().enumerate().filter(|(_, t)| !t.is_empty() && !t.starts_with('^')) {
            if let Err(reason) = check_topic(topic) {
                issues.push(ConfigIssue::at(prefix, &format!("topics[{i}]"), format!("{reason}, or a ^regex")));
            }
        }
        for (i, topic) in self.topics.iter().enumerate().filter(|(_, t)| t.starts_with('^')) {
            // librdkafka compiles `^` subscriptions itself, at subscribe time; its syntax (POSIX
            // extended) and the regex crate's agree on what makes a pattern unbalanced.
            if let Err(e) = regex::Regex::new(topic) {
                let text = e.to_string();
                let reason = text.lines().last().unwrap_or_default().trim().trim_start_matches("error: ");
                issues.push(ConfigIssue::at(
                    prefix,
                    &format!("topics[{i}]"),
                    format!("{topic:?} is not a regex: {reason}"),
                ));
            }
        }
        issues
    }

    /// Set the options in [`TAP_OWNED_OPTIONS`]: this tap's group, no commits to Kafka (the
    /// offsets live in the store, beside the tallies), where a partition without one starts, and
    /// partition EOF events (how the tap knows a partition is caught up).
    pub(super) fn set_owned_options(&self, client: &mut ClientConfig) {
        client
            .set("group.id", self.group_id())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", if self.start_from == StartFrom::Latest { "latest" } else { "earliest" })
            .set("enable.partition.eof", "true");
    }
}

/// The librdkafka settings the tap owns; a `kafka.options` entry for one of them is rejected.
pub const TAP_OWNED_OPTIONS: &[&str] =
    &["group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset", "enable.partition.eof"];

#[cfg(test)]
mod tests {
    use super::*;

    /// The list the configuration check rejects is exactly the list the tap sets.
    #[test]
    fn owned_options_are_the_options_the_tap_sets() {
        let config = TapConfig {
            tier: "broker".into(),
            topics: vec!["t".into()],
            group_id: None,
            start_from: StartFrom::Latest,
        };
        let mut client = ClientConfig::new();
        config.set_owned_options(&mut client);
        let mut set: Vec<&str> = client.config_map().keys().copied().collect();
        let mut owned = TAP_OWNED_OPTIONS.to_vec();
        set.sort_unstable();
        owned.sort_unstable();
        assert_eq!(set, owned);
        assert_eq!(client.get("group.id"), Some("kaudit-tap-broker"));
        assert_eq!(client.get("auto.offset.reset"), Some("latest"));
        assert_eq!(client.get("enable.partition.eof"), Some("true"));
    }

    #[test]
    fn a_regex_subscription_is_compiled_at_validation() {
        let config = TapConfig {
            tier: "broker".into(),
            topics: vec!["plain".into(), "^([".into(), "^orders\\..*".into()],
            group_id: None,
            start_from: StartFrom::Earliest,
        };
        let issues = config.validate("tap");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "tap.topics[1]");
        assert!(issues[0].message.starts_with("\"^([\" is not a regex: "), "{}", issues[0].message);
        assert!(issues[0].message.contains("unclosed"), "{}", issues[0].message);
    }
}
