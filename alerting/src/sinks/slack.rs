//! Slack incoming webhook: a message with the summary and the numbers.

use serde::{Deserialize, Serialize};

use super::{HttpRequest, json_request};
use crate::alert::{Alert, AlertState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Sink name. Default `slack`.
    #[serde(default)]
    pub name: Option<String>,
    /// The incoming webhook URL.
    pub url: String,
}

pub(super) fn request(url: &str, alert: &Alert) -> HttpRequest {
    let icon = if alert.state == AlertState::Firing { ":red_circle:" } else { ":large_green_circle:" };
    let n = &alert.numbers;
    let details = format!(
        "topic `{}`, `{}` → `{}`, buckets {}–{}\nupstream {} · downstream {} · missing {} · extra {} · p99 {} ms",
        alert.topic,
        alert.upstream_tier,
        alert.tier,
        crate::time::rfc3339(alert.first_bucket_ms),
        crate::time::rfc3339(alert.last_bucket_ms),
        n.upstream_count,
        n.count,
        n.missing,
        n.extra,
        n.p99_ms.map_or("-".into(), |p| p.to_string()),
    );
    let body = serde_json::json!({ "text": format!("{icon} {}\n{details}", alert.summary()) });
    json_request(url.to_string(), &body, Vec::new())
}
