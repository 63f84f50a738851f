//! Slack incoming webhook: a message with the summary (and the resolution, once resolved), the
//! numbers, and a link to the alert in the verifier's API when the sink knows its public URL.

use kaudit_schema::redact_url;
use serde::{Deserialize, Serialize};

use super::{HttpRequest, json_request};
use crate::alert::{Alert, AlertKind, AlertState, duration_text};

/// `Debug` shows the URL as `scheme://host:port`: a Slack webhook's path is its credential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Sink name. Default `slack`.
    #[serde(default)]
    pub name: Option<String>,
    /// The incoming webhook URL.
    pub url: String,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig").field("name", &self.name).field("url", &redact_url(&self.url)).finish()
    }
}

pub(super) fn request(url: &str, alert: &Alert, link: Option<&str>) -> HttpRequest {
    let icon = if alert.state == AlertState::Firing { ":red_circle:" } else { ":large_green_circle:" };
    let mut text = format!("{icon} {}\n{}", alert.summary(), details(alert));
    if let Some(link) = link {
        // Slack's link markup; `&` is one of the three characters Slack wants escaped in text.
        text += &format!("\n<{}|this alert in the kaudit API>", link.replace('&', "&amp;"));
    }
    let body = serde_json::json!({ "text": text });
    json_request(url.to_string(), &body, Vec::new())
}

/// The second line: where, and the numbers that matter for the kind. The summary (first line)
/// carries the resolution.
fn details(alert: &Alert) -> String {
    let n = &alert.numbers;
    let time = |ms: Option<i64>| ms.map_or("-".into(), crate::time::rfc3339);
    match alert.kind {
        AlertKind::Lag => format!(
            "topic `{}`, `{}` → `{}`\nlag {} · counted up to {}",
            alert.topic,
            alert.upstream_tier,
            alert.tier,
            duration_text(n.lag_ms.unwrap_or(0)),
            time(n.behind_since_ms),
        ),
        AlertKind::Flood => "see the verifier's `/api/v1/alerts` for each of them".into(),
        AlertKind::TierDown => {
            format!("topic `{}`, tier `{}`\nlast heartbeat {}", alert.topic, alert.tier, time(n.last_heartbeat_ms))
        }
        _ => format!(
            "topic `{}`, `{}` → `{}`, buckets {}–{}\nupstream {} · downstream {} · missing {} · extra {} · p99 {} ms{}",
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
            alert.named_text().map_or(String::new(), |t| format!("\n{t}")),
        ),
    }
}
