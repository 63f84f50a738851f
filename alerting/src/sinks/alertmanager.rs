//! Prometheus Alertmanager, API v2: `POST /api/v2/alerts` with labels, annotations, start and end.
//! `alertname` is `Kaudit` + the kind in camel case (`KauditLoss`, `KauditLag`, `KauditTierDown`);
//! a resolved alert's summary and `resolution` annotation say what resolved it.

use kaudit_schema::redact_url;
use serde::{Deserialize, Serialize};

use super::{HttpRequest, json_request};
use crate::alert::{Alert, Severity};

/// `Debug` shows the URL as `scheme://host:port` (basic-auth userinfo would be a credential).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Sink name. Default `alertmanager`.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// Link shown with the alert (e.g. the verifier's API).
    #[serde(default)]
    pub generator_url: Option<String>,
}

impl std::fmt::Debug for AlertmanagerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("generator_url", &self.generator_url)
            .finish()
    }
}

pub(super) fn request(base: &str, generator_url: Option<&str>, alert: &Alert) -> HttpRequest {
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
            "description": serde_json::to_string(&alert.numbers).expect("numbers serialise"),
        },
        "startsAt": crate::time::rfc3339(alert.starts_at_ms),
    });
    if let Some(why) = &alert.resolution {
        entry["annotations"]["resolution"] = why.as_str().into();
    }
    if let Some(end) = alert.ends_at_ms {
        entry["endsAt"] = crate::time::rfc3339(end).into();
    }
    if let Some(url) = generator_url {
        entry["generatorURL"] = url.into();
    }
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    json_request(url, &serde_json::json!([entry]), Vec::new())
}

fn camel(snake: &str) -> String {
    snake.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect()
}
