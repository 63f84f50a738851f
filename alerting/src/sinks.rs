//! Alert sinks. Each has a `config` (serde) and a pure request builder; one HTTP service sends
//! whatever a builder made.

mod alertmanager;
mod pagerduty;
pub mod service;
mod slack;
mod webhook;

use kaudit_schema::ConfigIssue;
use serde::{Deserialize, Serialize};

pub use self::alertmanager::AlertmanagerConfig;
pub use self::pagerduty::PagerDutyConfig;
pub use self::slack::SlackConfig;
pub use self::webhook::{WebhookConfig, signature as webhook_signature};
use crate::alert::Alert;

/// An HTTP request to make, built without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One configured sink (`[[alerting.sinks]]`), by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Any HTTP endpoint: JSON, signed with HMAC-SHA256.
    Webhook(WebhookConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// PagerDuty Events API v2.
    Pagerduty(PagerDutyConfig),
    /// Prometheus Alertmanager (API v2).
    Alertmanager(AlertmanagerConfig),
}

/// A sink ready to build requests (secrets resolved).
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    kind: SinkKind,
}

#[derive(Debug, Clone)]
enum SinkKind {
    Webhook { url: String, secret: Option<Vec<u8>> },
    Slack { url: String },
    Pagerduty { url: String, routing_key: String },
    Alertmanager { url: String, generator_url: Option<String> },
}

fn secret(value: &Option<String>, env: &Option<String>, what: &str) -> Result<Option<String>, String> {
    match (value, env) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(var)) => {
            std::env::var(var).map(Some).map_err(|_| format!("{what}: environment variable {var} is not set"))
        }
        (None, None) => Ok(None),
    }
}

impl SinkConfig {
    /// The sink's name: configured, or its type.
    pub fn name(&self) -> String {
        let (name, ty) = match self {
            Self::Webhook(c) => (&c.name, "webhook"),
            Self::Slack(c) => (&c.name, "slack"),
            Self::Pagerduty(c) => (&c.name, "pagerduty"),
            Self::Alertmanager(c) => (&c.name, "alertmanager"),
        };
        name.clone().unwrap_or_else(|| ty.to_string())
    }

    /// Problems without I/O (URLs, required keys), each at its key under `prefix`, the sink's own
    /// table (e.g. `alerting.sinks[2]`, giving `alerting.sinks[2].routing_key`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let url_ok = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        let mut issues = Vec::new();
        let url = match self {
            Self::Webhook(c) => &c.url,
            Self::Slack(c) => &c.url,
            Self::Pagerduty(c) => &c.url,
            Self::Alertmanager(c) => &c.url,
        };
        if !url_ok(url) {
            issues.push(ConfigIssue::at(prefix, "url", format!("url {url:?} must start with http:// or https://")));
        }
        if let Self::Pagerduty(c) = self
            && c.routing_key.is_none()
            && c.routing_key_env.is_none()
        {
            issues.push(ConfigIssue::at(prefix, "routing_key", "set routing_key or routing_key_env"));
        }
        issues
    }

    /// Resolve secrets from the environment.
    pub fn build(&self) -> Result<Sink, String> {
        let kind = match self {
            Self::Webhook(c) => SinkKind::Webhook {
                url: c.url.clone(),
                secret: secret(&c.secret, &c.secret_env, "webhook secret")?.map(String::into_bytes),
            },
            Self::Slack(c) => SinkKind::Slack { url: c.url.clone() },
            Self::Pagerduty(c) => SinkKind::Pagerduty {
                url: c.url.clone(),
                routing_key: secret(&c.routing_key, &c.routing_key_env, "pagerduty routing key")?
                    .ok_or("pagerduty: set routing_key or routing_key_env")?,
            },
            Self::Alertmanager(c) => {
                SinkKind::Alertmanager { url: c.url.clone(), generator_url: c.generator_url.clone() }
            }
        };
        Ok(Sink { name: self.name(), kind })
    }
}

impl Sink {
    /// The request that delivers `alert` as notification `seq`.
    pub fn request(&self, alert: &Alert, seq: i64) -> HttpRequest {
        let idempotency = format!("{}:{seq}", alert.dedup_key);
        match &self.kind {
            SinkKind::Webhook { url, secret } => webhook::request(url, secret.as_deref(), alert, seq, &idempotency),
            SinkKind::Slack { url } => slack::request(url, alert),
            SinkKind::Pagerduty { url, routing_key } => pagerduty::request(url, routing_key, alert),
            SinkKind::Alertmanager { url, generator_url } => {
                alertmanager::request(url, generator_url.as_deref(), alert)
            }
        }
    }
}

fn json_request(url: String, body: &serde_json::Value, extra: Vec<(String, String)>) -> HttpRequest {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    headers.extend(extra);
    HttpRequest { url, headers, body: serde_json::to_vec(body).expect("json values serialise") }
}

#[cfg(test)]
mod tests;
