//! Prometheus Alertmanager, API v2: `POST /api/v2/alerts` with labels, annotations, start and end.
//! `alertname` is `Kaudit` + the kind in camel case (`KauditLoss`, `KauditLag`, `KauditTierDown`);
//! a resolved alert's summary and `resolution` annotation say what resolved it. `generatorURL` is
//! the alert in the verifier's API ([`crate::link`]), or the sink's fixed `generator_url`.
//!
//! Alertmanager forgets an alert whose `endsAt` has passed, and one posted without `endsAt` after
//! its `resolve_timeout` (5 min by default). So a firing alert goes out with `endsAt` = now +
//! 3 × `repost_interval_ms`, and the dispatcher posts every firing alert again each interval
//! ([`crate::Dispatcher::run`]): one missed re-post does not end it, and an alert kaudit no longer
//! knows (a verifier gone for good) ends on its own within three intervals. A resolved alert goes
//! out with its real `endsAt`, through the outbox like every transition.

use kaudit_schema::redact_url;
use serde::{Deserialize, Serialize};

use super::{HttpRequest, json_request};
use crate::alert::{Alert, AlertState, Severity};

/// `Debug` shows the URL as `scheme://host:port` (basic-auth userinfo would be a credential).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Sink name. Default `alertmanager`.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// A fixed `generatorURL` for every alert. Without it (the default) each alert links to itself
    /// in the verifier's API (`alerting.public_url`); kept for configurations from before those
    /// per-alert links.
    #[serde(default)]
    pub generator_url: Option<String>,
    /// How often every firing alert is posted again, ms. Default 60000: well under Alertmanager's
    /// `resolve_timeout` (5 min); each post sets `endsAt` three intervals ahead.
    #[serde(default = "default_repost_interval_ms")]
    pub repost_interval_ms: u64,
}

/// 60 s: Alertmanager keeps a firing alert for three of these without hearing from kaudit.
pub const DEFAULT_REPOST_INTERVAL_MS: u64 = 60_000;

fn default_repost_interval_ms() -> u64 {
    DEFAULT_REPOST_INTERVAL_MS
}

impl std::fmt::Debug for AlertmanagerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("generator_url", &self.generator_url)
            .field("repost_interval_ms", &self.repost_interval_ms)
            .finish()
    }
}

/// The post of `alert` at `now_ms`: a firing alert ends `3 × repost_ms` from now unless posted
/// again, a resolved one at its own end.
pub(super) fn request(
    base: &str,
    generator_url: Option<&str>,
    alert: &Alert,
    now_ms: i64,
    repost_ms: u64,
) -> HttpRequest {
    let mut entry = serde_json::json!({
        "labels": {
            "alertname": format!("Kaudit{}", camel(alert.kind.as_str())),
            "kind": alert.kind.as_str(),
            "topic": alert.topic,
            "tier": alert.tier,
            "upstream_tier": alert.upstream_tier,
            "severity": if alert.severity == Severity::Critical { "critical" } else { "warning" },
            "dedup_key": alert.dedup_key,
        },
        "annotations": {
            "summary": alert.summary(),
            "description": description(alert),
        },
        "startsAt": crate::time::rfc3339(alert.starts_at_ms),
    });
    if let Some(why) = &alert.resolution {
        entry["annotations"]["resolution"] = why.as_str().into();
    }
    let ends_at = match (alert.state, alert.ends_at_ms) {
        (AlertState::Resolved, Some(end)) => end,
        _ => now_ms.saturating_add(3 * repost_ms as i64),
    };
    entry["endsAt"] = crate::time::rfc3339(ends_at).into();
    if let Some(url) = generator_url {
        entry["generatorURL"] = url.into();
    }
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    json_request(url, &serde_json::json!([entry]), Vec::new())
}

/// The numbers behind `alert` as sentences: `consumer/billing counted 19998 of the 20000 messages
/// broker counted in buckets 2023-11-14T22:14:00.000Z to ...: 2 missing (0.0100 %), 0 extra
/// (0.0000 %). Detected by cusum.`
pub(super) fn description(alert: &Alert) -> String {
    let n = &alert.numbers;
    let rfc = crate::time::rfc3339;
    let mut text = format!(
        "{} counted {} of the {} messages {} counted in buckets {} to {}: {} missing ({:.4} %), {} extra ({:.4} %).",
        alert.tier,
        n.count,
        n.upstream_count,
        alert.upstream_tier,
        rfc(alert.first_bucket_ms),
        rfc(alert.last_bucket_ms),
        n.missing,
        n.loss_ratio * 100.0,
        n.extra,
        n.duplicate_ratio * 100.0,
    );
    if let Some(p99) = n.p99_ms {
        text += &format!(" Worst p99 delay {p99} ms.");
    }
    if let Some(lag) = n.lag_ms {
        text += &format!(" {} behind its upstream.", crate::alert::duration_text(lag));
    }
    if let Some(beat) = n.last_heartbeat_ms {
        text += &format!(" Last heartbeat {}.", rfc(beat));
    }
    if let Some(statistic) = n.cusum_statistic {
        text += &format!(" CUSUM statistic {statistic:.2}.");
    }
    if let Some(named) = alert.named_text() {
        text += &format!(" {named}");
    } else if !n.lost_fingerprints.is_empty() {
        text += &format!(" Lost message fingerprints: {}.", n.lost_fingerprints.join(", "));
    }
    if !alert.detected_by.is_empty() {
        text += &format!(" Detected by {}.", alert.detected_by.join(" and "));
    }
    text
}

fn camel(snake: &str) -> String {
    snake.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}
