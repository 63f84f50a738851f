//! Alert sinks. Each has a `config` (serde) and a pure request builder; one HTTP service sends
//! whatever a builder made.

mod alertmanager;
mod pagerduty;
pub mod service;
mod slack;
mod webhook;

use kaudit_schema::{ConfigIssue, Secret, redact_url};
use serde::{Deserialize, Serialize};

pub use self::alertmanager::AlertmanagerConfig;
pub use self::pagerduty::PagerDutyConfig;
pub use self::slack::SlackConfig;
pub use self::webhook::{WebhookConfig, signature as webhook_signature};
use crate::alert::Alert;
use crate::link::PublicUrl;

/// An HTTP request to make, built without I/O. Its URL and body may hold credentials (a Slack
/// path, a PagerDuty routing key): `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("url", &redact_url(&self.url))
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
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

/// A sink ready to build requests (secrets resolved). `Debug` shows its name, type and
/// `scheme://host:port`, never a path, query or key.
#[derive(Clone)]
pub struct Sink {
    pub name: String,
    kind: SinkKind,
    /// The verifier's API, for each notification's link to its alert ([`Sink::with_public_url`]).
    public_url: Option<PublicUrl>,
}

#[derive(Clone)]
enum SinkKind {
    Webhook { url: String, secret: Option<Secret> },
    Slack { url: String },
    Pagerduty { url: String, routing_key: Secret },
    Alertmanager { url: String, generator_url: Option<String>, repost_ms: u64 },
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ty, url) = match &self.kind {
            SinkKind::Webhook { url, .. } => ("webhook", url),
            SinkKind::Slack { url } => ("slack", url),
            SinkKind::Pagerduty { url, .. } => ("pagerduty", url),
            SinkKind::Alertmanager { url, .. } => ("alertmanager", url),
        };
        f.debug_struct("Sink").field("name", &self.name).field("type", &ty).field("url", &redact_url(url)).finish()
    }
}

fn secret(value: &Option<String>, env: &Option<String>, what: &str) -> Result<Option<Secret>, String> {
    match (value, env) {
        (Some(v), _) => Ok(Some(Secret::new(v.as_str()))),
        (None, Some(var)) => std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| format!("{what}: environment variable {var} is not set")),
        (None, None) => Ok(None),
    }
}

/// An issue at `prefix.key` when the variable `var` names is not set (and no value is given).
fn missing_env(prefix: &str, key: &str, value: &Option<String>, var: &Option<String>) -> Option<ConfigIssue> {
    let var = var.as_deref().filter(|_| value.is_none())?;
    std::env::var_os(var)
        .is_none()
        .then(|| ConfigIssue::at(prefix, key, format!("environment variable {var} is not set")))
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
            // Not echoed: a sink URL may be its credential. The key and line say which one.
            issues.push(ConfigIssue::at(prefix, "url", "must start with http:// or https://"));
        }
        if let Self::Alertmanager(c) = self
            && c.repost_interval_ms == 0
        {
            issues.push(ConfigIssue::at(prefix, "repost_interval_ms", "must be positive"));
        }
        if let Self::Pagerduty(c) = self
            && c.routing_key.is_none()
            && c.routing_key_env.is_none()
        {
            issues.push(ConfigIssue::at(prefix, "routing_key", "set routing_key or routing_key_env"));
        }
        issues.extend(match self {
            Self::Webhook(c) => missing_env(prefix, "secret_env", &c.secret, &c.secret_env),
            Self::Pagerduty(c) => missing_env(prefix, "routing_key_env", &c.routing_key, &c.routing_key_env),
            Self::Slack(_) | Self::Alertmanager(_) => None,
        });
        issues
    }

    /// Resolve secrets from the environment.
    pub fn build(&self) -> Result<Sink, String> {
        let kind = match self {
            Self::Webhook(c) => {
                SinkKind::Webhook { url: c.url.clone(), secret: secret(&c.secret, &c.secret_env, "webhook secret")? }
            }
            Self::Slack(c) => SinkKind::Slack { url: c.url.clone() },
            Self::Pagerduty(c) => SinkKind::Pagerduty {
                url: c.url.clone(),
                routing_key: secret(&c.routing_key, &c.routing_key_env, "pagerduty routing key")?
                    .ok_or("pagerduty: set routing_key or routing_key_env")?,
            },
            Self::Alertmanager(c) => SinkKind::Alertmanager {
                url: c.url.clone(),
                generator_url: c.generator_url.clone(),
                repost_ms: c.repost_interval_ms,
            },
        };
        Ok(Sink { name: self.name(), kind, public_url: None })
    }
}

impl Sink {
    /// Link every notification to its alert in the verifier's API at `url`: Alertmanager's
    /// `generatorURL` (unless the sink sets a fixed `generator_url`), a line in Slack's text,
    /// PagerDuty's `links`, the webhook's `url`.
    pub fn with_public_url(mut self, url: PublicUrl) -> Self {
        self.public_url = Some(url);
        self
    }

    /// The request that delivers `alert` as notification `seq`, now (wall clock).
    pub fn request(&self, alert: &Alert, seq: i64) -> HttpRequest {
        self.request_at(alert, seq, crate::time::now_ms())
    }

    /// How often this sink wants every firing alert posted again: Alertmanager's, which forgets
    /// an alert it has not heard of for a while. `None` for sinks that page once per transition.
    pub fn repost_interval(&self) -> Option<std::time::Duration> {
        match &self.kind {
            SinkKind::Alertmanager { repost_ms, .. } => Some(std::time::Duration::from_millis(*repost_ms)),
            _ => None,
        }
    }

    /// The request that delivers `alert` as notification `seq` at `now_ms` (Alertmanager's
    /// `endsAt` of a firing alert is counted from it).
    pub fn request_at(&self, alert: &Alert, seq: i64, now_ms: i64) -> HttpRequest {
        let idempotency = format!("{}:{seq}", alert.dedup_key);
        let link = self.public_url.as_ref().map(|base| base.alert_link(alert));
        let link = link.as_deref();
        match &self.kind {
            SinkKind::Webhook { url, secret } => {
                let secret = secret.as_ref().map(|s| s.expose().as_bytes());
                webhook::request(url, secret, alert, seq, &idempotency, link)
            }
            SinkKind::Slack { url } => slack::request(url, alert, link),
            SinkKind::Pagerduty { url, routing_key } => pagerduty::request(url, routing_key.expose(), alert, link),
            SinkKind::Alertmanager { url, generator_url, repost_ms } => {
                // A fixed `generator_url` (configurations from before per-alert links) wins.
                alertmanager::request(url, generator_url.as_deref().or(link), alert, now_ms, *repost_ms)
            }
        }
    }
}

impl Sink {
    /// `text` (a receiver's answer, an error) with this sink's credentials cut out: its URL, the
    /// URL's path and query, and its key or secret each show as `***`. A receiver that echoes the
    /// request line back must not put a token in our logs.
    pub fn scrub(&self, text: &str) -> String {
        let (url, key) = match &self.kind {
            SinkKind::Webhook { url, secret } => (url, secret.as_ref()),
            SinkKind::Slack { url } => (url, None),
            SinkKind::Pagerduty { url, routing_key } => (url, Some(routing_key)),
            SinkKind::Alertmanager { url, .. } => (url, None),
        };
        let after_host = url.split_once("://").and_then(|(_, rest)| rest.find(['/', '?']).map(|i| &rest[i..]));
        let mut out = text.to_string();
        for secret in [Some(url.as_str()), after_host, key.map(Secret::expose)].into_iter().flatten() {
            if secret.trim_matches('/').len() >= 4 {
                out = out.replace(secret, kaudit_schema::secret::REDACTED);
            }
        }
        out
    }
}

fn json_request(url: String, body: &serde_json::Value, extra: Vec<(String, String)>) -> HttpRequest {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    headers.extend(extra);
    HttpRequest { url, headers, body: serde_json::to_vec(body).expect("json values serialise") }
}

#[cfg(test)]
pub(crate) mod tests;
