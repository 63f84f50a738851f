//! The settings the demo gives its agents, its verifier and its alert sinks, from the user's
//! configuration and the demo's arguments.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kaudit_agent::tap::{StartFrom, TapConfig};
use kaudit_agent::{AgentConfig, TopicRuleConfig};
use kaudit_alerting::dispatch::Backoff;
use kaudit_alerting::sinks::WebhookConfig;
use kaudit_alerting::{PublicUrl, Sink, SinkConfig};
use kaudit_schema::BucketWidth;
use kaudit_verifier::{PipelineConfig, VerifierConfig};

use super::args::DemoArgs;
use super::faults::{ANALYTICS, BILLING, BROKER, PRODUCER, TOPIC};
use crate::config::{KafkaConfig, KafkaOptionValue, KauditConfig};

/// How often the demo's verifier evaluates, ms.
pub const EVALUATE_INTERVAL_MS: u64 = 1_000;

/// The agent settings every demo agent shares: the demo's bucket width, short flushes, and the
/// rule that reads id and event time from the JSON payload first (librdkafka's mock cluster
/// acknowledges every produce with a fake LogAppendTime, so the demo carries event time in the
/// payload, as many real pipelines do).
pub fn agent(config: &KauditConfig, width: BucketWidth) -> AgentConfig {
    let mut agent = config.agent.clone();
    agent.bucket_width_ms = width.as_millis() as u64;
    agent.flush_interval_ms = agent.flush_interval_ms.min(1_000);
    let demo_rule = TopicRuleConfig {
        pattern: TOPIC.into(),
        business_id: "json:/order_id".parse().expect("valid"),
        event_time: "json:/created_at".parse().expect("valid"),
    };
    agent.topics.insert(0, demo_rule);
    agent
}

/// The configuration a `kaudit agent` tapping the mock cluster as tier `broker` would have: the
/// demo's agent settings under `name`, its data directory, and only the demo's Kafka settings (a
/// user's `[kafka]` section is for a real cluster).
pub fn tap(
    config: &KauditConfig,
    agent: &AgentConfig,
    name: &str,
    bootstrap: &str,
    data_dir: &Path,
) -> (KauditConfig, TapConfig) {
    let mut tap_config = config.clone();
    tap_config.data_dir = data_dir.to_path_buf();
    tap_config.agent = AgentConfig { name: name.into(), ..agent.clone() };
    tap_config.kafka = KafkaConfig {
        bootstrap_servers: Some(bootstrap.into()),
        options: [("fetch.wait.max.ms".to_string(), KafkaOptionValue::Integer(50))].into(),
    };
    let tap =
        TapConfig { tier: BROKER.into(), topics: vec![TOPIC.into()], group_id: None, start_from: StartFrom::Earliest };
    (tap_config, tap)
}

/// The verifier's settings for the demo: its pipeline, zero-tolerance loss and duplicate
/// thresholds (the default 0.01 % would sit right at the demo's loss rate), evaluation every
/// second, and a grace that covers analytics' delay plus two flushes.
///
/// With `--pause-consumer`, lag is alerted at half the pause, so the pause surely raises it while a
/// consumer that merely keeps up never does.
pub fn verifier(config: &KauditConfig, agent: &AgentConfig, args: &DemoArgs) -> VerifierConfig {
    let (delay_ms, listen) = (args.delay_ms, args.listen.as_str());
    let mut v = config.verifier.clone();
    v.pipelines = vec![PipelineConfig {
        topics: vec![TOPIC.into()],
        tiers: vec![PRODUCER.into(), BROKER.into()],
        consumers: vec![BILLING.into(), ANALYTICS.into()],
    }];
    v.grace_ms = Some(delay_ms + 2 * agent.flush_interval_ms + 2_000);
    v.evaluate_interval_ms = EVALUATE_INTERVAL_MS;
    // Thresholds only: the CUSUM needs 64 buckets of history, and over a long demo latency jitter
    // alone could move it; the demo checks exact counts, which the thresholds carry.
    v.baseline_min_samples = usize::MAX;
    v.thresholds.loss_ratio = 0.0;
    v.thresholds.duplicate_ratio = 0.0;
    v.listen = listen.into();
    if !args.pause_consumer.is_zero() {
        v.thresholds.max_lag_ms = args.pause_consumer.as_millis() as u64 / 2;
    }
    v
}

/// The configured sinks, plus `--webhook` as a generic webhook; each notification links to its
/// alert under `alerting.public_url`, or else the demo's API on `api`.
pub fn sinks(config: &KauditConfig, webhook: Option<&str>, api: SocketAddr) -> anyhow::Result<Vec<Sink>> {
    let public_url = PublicUrl::configured_or_listen(config.alerting.public_url.as_deref(), api, false)
        .map_err(|e| anyhow::anyhow!("alerting.public_url: {e}"))?;
    let mut sink_configs = config.alerting.sinks.clone();
    if let Some(url) = webhook {
        sink_configs.push(SinkConfig::Webhook(WebhookConfig {
            name: Some("demo-webhook".into()),
            url: url.to_string(),
            secret: None,
            secret_env: None,
        }));
    }
    let build = |s: &SinkConfig| s.build().map(|sink| sink.with_public_url(public_url.clone()));
    sink_configs.iter().map(build).collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::msg)
}

/// Retries quick enough for a demo of a minute or two.
pub fn backoff(config: &KauditConfig) -> Backoff {
    Backoff {
        base: Duration::from_millis(config.alerting.retry_base_ms.min(500)),
        max: Duration::from_millis(config.alerting.retry_max_ms.min(5_000)),
        poll: Duration::from_millis(250),
    }
}
