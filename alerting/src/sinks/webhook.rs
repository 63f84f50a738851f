//! Generic JSON webhook, signed with HMAC-SHA256.
//!
//! Body: `{"version": 1, "seq": N, "alert": {...}}`, and `"url"`, the alert in the verifier's API,
//! when the sink knows the API's public URL. Headers: `X-Kaudit-Signature:
//! sha256=<hex of HMAC-SHA256(secret, body)>` when a secret is configured, and
//! `Idempotency-Key: <dedup_key>:<seq>`, the same on every retry of one notification.

use hmac::{Hmac, Mac};
use kaudit_schema::redact_url;
use kaudit_schema::secret::debug_opt;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{HttpRequest, json_request};
use crate::alert::Alert;

/// `Debug` shows the URL as `scheme://host:port` and the secret as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Sink name (outbox and metrics label). Default `webhook`.
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    /// HMAC secret; prefer `secret_env`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Environment variable holding the HMAC secret.
    #[serde(default)]
    pub secret_env: Option<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("secret", &debug_opt(&self.secret))
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

/// `sha256=<hex>` of the body.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(super) fn request(
    url: &str,
    secret: Option<&[u8]>,
    alert: &Alert,
    seq: i64,
    idempotency: &str,
    link: Option<&str>,
) -> HttpRequest {
    let mut body = serde_json::json!({ "version": 1, "seq": seq, "alert": alert });
    if let Some(link) = link {
        body["url"] = link.into();
    }
    let mut req = json_request(url.to_string(), &body, vec![("idempotency-key".into(), idempotency.into())]);
    if let Some(secret) = secret {
        req.headers.push(("x-kaudit-signature".into(), signature(secret, &req.body)));
    }
    req
}
