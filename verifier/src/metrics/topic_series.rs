//! The verifier's per-topic series, kept as plain numbers and turned into metric families only when
//! scraped.
//!
//! One `prometheus` metric object per labelled series costs about 500 bytes (its label pairs as
//! protobuf strings, its hash-map slot, its atomics); the verifier exports about 25 series per topic
//! (counts per edge, latency by stat, CUSUM statistics by signal, lag and live agents per tier), so
//! at 10,000 topics the metric objects alone held 130 MB. Here a topic costs its name and one small
//! entry per tier (about 200 bytes each). The exposition is the same: names, help, types and label
//! names as before (`kaudit_verifier_missing_messages_total{tier, topic}` and the rest).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// The latency stats exported per edge, in order.
pub const LATENCY_STATS: [&str; 4] = ["p50", "p95", "p99", "max"];
/// The CUSUM signals exported per edge, in order (`engine::core::SIGNALS`).
pub const CUSUM_SIGNALS: [&str; 3] = ["loss_ratio", "duplicate_ratio", "p99_delay_ms"];

/// One tier of one topic: the counters of the edge into it and its gauges, each `None` until set.
#[derive(Debug, Clone, Default, PartialEq)]
struct TierEntry {
    tier: Box<str>,
    upstream: Option<u64>,
    missing: Option<u64>,
    extra: Option<u64>,
    latency_ms: Option<[u64; 4]>,
    cusum: [Option<f64>; 3],
    lag_seconds: Option<f64>,
    agents_live: Option<i64>,
}

/// The families this collector exports: name, help, type, labels besides `tier` and `topic`.
const FAMILIES: [(&str, &str, MetricType, Option<&str>); 7] = [
    (
        "kaudit_verifier_missing_messages_total",
        "Messages missing downstream, at first evaluation.",
        MetricType::COUNTER,
        None,
    ),
    (
        "kaudit_verifier_extra_messages_total",
        "Extra (duplicate) messages downstream, at first evaluation.",
        MetricType::COUNTER,
        None,
    ),
    (
        "kaudit_verifier_upstream_messages_total",
        "Messages the upstream tier counted in the buckets judged on each edge, by topic and downstream tier \
         (at first evaluation; the denominator of loss and duplicate ratios).",
        MetricType::COUNTER,
        None,
    ),
    (
        "kaudit_verifier_latency_seconds",
        "Latency (arrival at the tier minus event time) of the last bucket judged on each edge, from the merged \
         sketches, by topic, tier and stat (p50, p95, p99, max).",
        MetricType::GAUGE,
        Some("stat"),
    ),
    (
        "kaudit_verifier_cusum_statistic",
        "CUSUM statistic, in sigmas, by topic, tier and signal.",
        MetricType::GAUGE,
        Some("signal"),
    ),
    (
        "kaudit_verifier_tier_lag_seconds",
        "How far a tier's progress watermark is behind its upstream tier's, by topic and tier.",
        MetricType::GAUGE,
        None,
    ),
    (
        "kaudit_verifier_agents_live",
        "Agent instances alive (heartbeating), by topic and tier.",
        MetricType::GAUGE,
        None,
    ),
];

/// The per-topic series, shared by the engine (which sets them) and the registry (which scrapes
/// them). Clones share one table.
#[derive(Clone)]
pub struct TopicSeries {
    descs: Arc<Vec<Desc>>,
    topics: Arc<Mutex<BTreeMap<Box<str>, Vec<TierEntry>>>>,
}

impl TopicSeries {
    pub fn new() -> prometheus::Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _, extra)| {
                let labels = extra.iter().map(|l| l.to_string()).chain(["tier".into(), "topic".into()]).collect();
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new())
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(Self { descs: Arc::new(descs), topics: Arc::default() })
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<Box<str>, Vec<TierEntry>>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_tier<R>(&self, topic: &str, tier: &str, f: impl FnOnce(&mut TierEntry) -> R) -> R {
        let mut table = self.table();
        let tiers = match table.get_mut(topic) {
            Some(tiers) => tiers,
            None => table.entry(topic.into()).or_default(),
        };
        let at = match tiers.iter().position(|t| &*t.tier == tier) {
            Some(at) => at,
            None => {
                tiers.push(TierEntry { tier: tier.into(), ..TierEntry::default() });
                tiers.len() - 1
            }
        };
        f(&mut tiers[at])
    }

    /// Messages the upstream tier counted in buckets judged on the edge into `tier`.
    pub fn add_upstream(&self, topic: &str, tier: &str, n: u64) {
        self.with_tier(topic, tier, |t| *t.upstream.get_or_insert(0) += n);
    }

    /// Messages missing and extra on the edge into `tier`.
    pub fn add_messages(&self, topic: &str, tier: &str, missing: u64, extra: u64) {
        self.with_tier(topic, tier, |t| {
            *t.missing.get_or_insert(0) += missing;
            *t.extra.get_or_insert(0) += extra;
        });
    }

    /// The latency of the last bucket judged on the edge into `tier`, ms, by [`LATENCY_STATS`].
    pub fn set_latency(&self, topic: &str, tier: &str, ms: [u64; 4]) {
        self.with_tier(topic, tier, |t| t.latency_ms = Some(ms));
    }

    /// A CUSUM statistic of the edge into `tier`; a signal not in [`CUSUM_SIGNALS`] is ignored.
    pub fn set_cusum(&self, topic: &str, tier: &str, signal: &str, statistic: f64) {
        if let Some(i) = CUSUM_SIGNALS.iter().position(|s| *s == signal) {
            self.with_tier(topic, tier, |t| t.cusum[i] = Some(statistic));
        }
    }

    /// A tier's live agents, and its lag behind its upstream when known (a lag already set stays
    /// when `lag_seconds` is `None`).
    pub fn set_tier(&self, topic: &str, tier: &str, lag_seconds: Option<f64>, agents_live: i64) {
        self.with_tier(topic, tier, |t| {
            t.lag_seconds = lag_seconds.or(t.lag_seconds);
            t.agents_live = Some(agents_live);
        });
    }

    /// Drop `topic`'s gauges (lag, live agents, latency, CUSUM): another instance evaluates it now.
    /// Its counters stay.
    pub fn clear_gauges(&self, topic: &str) {
        if let Some(tiers) = self.table().get_mut(topic) {
            for t in tiers {
                (t.latency_ms, t.cusum, t.lag_seconds, t.agents_live) = (None, [None; 3], None, None);
            }
        }
    }

    /// A CUSUM statistic as exported, if set.
    pub fn cusum(&self, topic: &str, tier: &str, signal: &str) -> Option<f64> {
        let i = CUSUM_SIGNALS.iter().position(|s| *s == signal)?;
        self.table().get(topic)?.iter().find(|t| &*t.tier == tier)?.cusum[i]
    }

    /// Topics with an entry.
    pub fn topics(&self) -> usize {
        self.table().len()
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn metric(labels: Vec<LabelPair>, kind: MetricType, value: f64) -> Metric {
    let mut m = Metric::from_label(labels);
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

impl Collector for TopicSeries {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let table = self.table();
        let mut families: Vec<MetricFamily> = FAMILIES
            .iter()
            .map(|(name, help, kind, _)| {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(*kind);
                f
            })
            .collect();
        for (topic, tiers) in table.iter() {
            for t in tiers {
                // Labels in name order, as the prometheus crate orders its own.
                let base = || vec![label("tier", &t.tier), label("topic", topic)];
                let with = |name: &str, value: &str| {
                    let mut labels = vec![label(name, value)];
                    labels.extend(base());
                    labels
                };
                let mut push = |family: usize, labels: Vec<LabelPair>, value: f64| {
                    let kind = FAMILIES[family].2;
                    families[family].mut_metric().push(metric(labels, kind, value));
                };
                for (family, value) in [(0, t.missing), (1, t.extra), (2, t.upstream)] {
                    if let Some(v) = value {
                        push(family, base(), v as f64);
                    }
                }
                if let Some(ms) = t.latency_ms {
                    for (stat, v) in LATENCY_STATS.iter().zip(ms) {
                        push(3, with("stat", stat), v as f64 / 1000.0);
                    }
                }
                for (signal, v) in CUSUM_SIGNALS.iter().zip(t.cusum) {
                    if let Some(v) = v {
                        push(4, with("signal", signal), v);
                    }
                }
                if let Some(lag) = t.lag_seconds {
                    push(5, base(), lag);
                }
                if let Some(live) = t.agents_live {
                    push(6, base(), live as f64);
                }
            }
        }
        families.retain(|f| !f.get_metric().is_empty());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    fn exposition(series: &TopicSeries) -> String {
        let registry = Registry::new();
        registry.register(Box::new(series.clone())).unwrap();
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn series_render_as_the_metric_vectors_did_and_gauges_clear_apart_from_counters() {
        let s = TopicSeries::new().unwrap();
        assert_eq!(exposition(&s), "", "nothing set, nothing exported");
        s.add_upstream("orders", "broker", 100);
        s.add_upstream("orders", "broker", 50);
        s.add_messages("orders", "broker", 3, 0);
        s.set_latency("orders", "broker", [10, 20, 1_500, 2_000]);
        s.set_cusum("orders", "broker", "loss_ratio", 1.5);
        s.set_cusum("orders", "broker", "no_such_signal", 9.0);
        s.set_tier("orders", "consumer/billing", Some(4.5), 2);
        s.set_tier("orders", "consumer/billing", None, 1);
        let text = exposition(&s);
        for line in [
            "# TYPE kaudit_verifier_upstream_messages_total counter",
            r#"kaudit_verifier_upstream_messages_total{tier="broker",topic="orders"} 150"#,
            r#"kaudit_verifier_missing_messages_total{tier="broker",topic="orders"} 3"#,
            r#"kaudit_verifier_extra_messages_total{tier="broker",topic="orders"} 0"#,
            "# TYPE kaudit_verifier_latency_seconds gauge",
            r#"kaudit_verifier_latency_seconds{stat="p99",tier="broker",topic="orders"} 1.5"#,
            r#"kaudit_verifier_cusum_statistic{signal="loss_ratio",tier="broker",topic="orders"} 1.5"#,
            r#"kaudit_verifier_tier_lag_seconds{tier="consumer/billing",topic="orders"} 4.5"#,
            r#"kaudit_verifier_agents_live{tier="consumer/billing",topic="orders"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("no_such_signal") && !text.contains("duplicate_ratio"), "{text}");
        assert_eq!(s.cusum("orders", "broker", "loss_ratio"), Some(1.5));

        s.clear_gauges("orders");
        let text = exposition(&s);
        assert!(text.contains(r#"kaudit_verifier_upstream_messages_total{tier="broker",topic="orders"} 150"#));
        for gone in ["latency_seconds", "cusum_statistic", "tier_lag_seconds", "agents_live"] {
            assert!(!text.contains(gone), "{gone} cleared:\n{text}");
        }
        let (ok, report) = kaudit_testkit::promtool_check(&text);
        assert!(ok && report.trim().is_empty(), "promtool: {report}\n{text}");
    }

    /// Topics with three tiers each, every series set: a topic's entry is well under a kilobyte (as
    /// metric vectors it was about 13 KB), and every series is exported.
    #[test]
    fn a_topic_costs_under_a_kilobyte() {
        let s = TopicSeries::new().unwrap();
        for i in 0..2_000 {
            let topic = format!("topic-{i:05}");
            for tier in ["broker", "consumer/billing", "consumer/analytics"] {
                s.add_upstream(&topic, tier, 1);
                s.add_messages(&topic, tier, 0, 0);
                s.set_latency(&topic, tier, [1, 2, 3, 4]);
                for signal in CUSUM_SIGNALS {
                    s.set_cusum(&topic, tier, signal, 0.5);
                }
                s.set_tier(&topic, tier, Some(0.0), 1);
            }
        }
        assert_eq!(s.topics(), 2_000);
        let per_topic = std::mem::size_of::<TierEntry>() * 3 + 64;
        assert!(per_topic < 1_000, "{per_topic} bytes a topic");
        let text = exposition(&s);
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 2_000 * 3 * 12);
    }
}
