//! PagerDuty Events API v2: `trigger` while firing, `resolve` when resolved, one `dedup_key`; the
//! alert in the verifier's API in `links` when the sink knows its public URL.

use kaudit_schema::redact_url;
use kaudit_schema::secret::debug_opt;
use serde::{Deserialize, Serialize};

use super::{HttpRequest, json_request};
use crate::alert::{Alert, AlertState, Severity};

fn default_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

/// `Debug` shows the routing key as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// Sink name. Default `pagerduty`.
    #[serde(default)]
    pub name: Option<String>,
    /// Events API endpoint. Default `https://events.pagerduty.com/v2/enqueue`.
    #[serde(default = "default_url")]
    pub url: String,
    /// Integration (routing) key; prefer `routing_key_env`.
    #[serde(default)]
    pub routing_key: Option<String>,
    #[serde(default)]
    pub routing_key_env: Option<String>,
}

impl std::fmt::Debug for PagerDutyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("routing_key", &debug_opt(&self.routing_key))
            .field("routing_key_env", &self.routing_key_env)
            .finish()
    }
}

pub(super) fn request(url: &str, routing_key: &str, alert: &Alert, link: Option<&str>) -> HttpRequest {
    let action = if alert.state == AlertState::Firing { "trigger" } else { "resolve" };
    let severity = if alert.severity == Severity::Critical { "critical" } else { "warning" };
    let mut body = serde_json::json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert.dedup_key,
        "payload": {
            "summary": alert.summary(),
            "source": "kaudit",
            "severity": severity,
            "component": alert.tier,
            "group": alert.topic,
            "class": alert.kind.as_str(),
            "timestamp": crate::time::rfc3339(alert.starts_at_ms),
            "custom_details": alert,
        },
    });
    if let Some(link) = link {
        body["links"] = serde_json::json!([{ "href": link, "text": "this alert in the kaudit API" }]);
    }
    json_request(url.to_string(), &body, Vec::new())
}
