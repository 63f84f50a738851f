//! Topic patterns mapped to extraction rules; the first pattern that matches a topic wins.

use std::collections::HashMap;
use std::sync::RwLock;

use globset::{Glob, GlobMatcher};

use crate::extract::ExtractRule;

/// Most deployments see few topics; past this many cached look-ups the cache starts over, so a
/// tap on thousands of short-lived topics cannot grow memory without bound.
const CACHE_LIMIT: usize = 4096;

/// Extraction rules by topic glob (`*`, `orders.*`, `{a,b}-events`).
#[derive(Debug)]
pub struct TopicRules {
    rules: Vec<(GlobMatcher, ExtractRule)>,
    fallback: ExtractRule,
    /// Whether the first rule matches every topic, so no look-up is needed.
    first_matches_all: bool,
    cache: RwLock<HashMap<Box<str>, usize>>,
}

/// A topic pattern that is not a valid glob.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid topic pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl TopicRules {
    /// Rules in priority order; topics no pattern matches use [`ExtractRule::default`].
    pub fn new(rules: impl IntoIterator<Item = (String, ExtractRule)>) -> Result<Self, PatternError> {
        let rules = rules
            .into_iter()
            .map(|(pattern, rule)| {
                let glob = Glob::new(&pattern)
                    .map_err(|e| PatternError { pattern: pattern.clone(), reason: e.kind().to_string() })?;
                Ok((glob.compile_matcher(), rule))
            })
            .collect::<Result<Vec<_>, PatternError>>()?;
        let first_matches_all = rules.first().is_some_and(|(m, _)| m.glob().glob() == "*" || m.glob().glob() == "**");
        Ok(Self { rules, fallback: ExtractRule::default(), first_matches_all, cache: RwLock::default() })
    }

    /// The rule for `topic`.
    #[inline]
    pub fn rule_for(&self, topic: &str) -> &ExtractRule {
        if self.rules.is_empty() {
            return &self.fallback;
        }
        if self.first_matches_all {
            return &self.rules[0].1;
        }
        let hit = self.cache.read().expect("rule cache poisoned").get(topic).copied();
        let index = hit.unwrap_or_else(|| {
            let index = self.rules.iter().position(|(m, _)| m.is_match(topic)).unwrap_or(usize::MAX);
            let mut cache = self.cache.write().expect("rule cache poisoned");
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(topic.into(), index);
            index
        });
        self.rules.get(index).map_or(&self.fallback, |(_, r)| r)
    }
}

impl Default for TopicRules {
    fn default() -> Self {
        Self::new([]).expect("no patterns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{BusinessIdSource, EventTimeSource};

    fn rule(id: &str) -> ExtractRule {
        ExtractRule { business_id: id.parse().unwrap(), event_time: EventTimeSource::KafkaTimestamp }
    }

    #[test]
    fn first_matching_pattern_wins_and_unmatched_use_defaults() {
        let rules = TopicRules::new([
            ("orders.*".to_string(), rule("json:/id")),
            ("orders.eu".to_string(), rule("header:x")),
            ("{pay,bill}-*".to_string(), rule("header:id")),
        ])
        .unwrap();
        for _ in 0..2 {
            assert_eq!(rules.rule_for("orders.eu").business_id, BusinessIdSource::JsonPointer("/id".into()));
            assert_eq!(rules.rule_for("bill-2").business_id, BusinessIdSource::Header("id".into()));
            assert_eq!(rules.rule_for("clicks"), &ExtractRule::default());
        }
    }

    #[test]
    fn catch_all_and_bad_patterns() {
        let all = TopicRules::new([("*".to_string(), rule("header:k"))]).unwrap();
        assert_eq!(all.rule_for("anything").business_id, BusinessIdSource::Header("k".into()));
        let err = TopicRules::new([("orders.[".to_string(), rule("key"))]).unwrap_err();
        assert_eq!(err.pattern, "orders.[");
        assert!(!err.reason.is_empty());
    }
}
