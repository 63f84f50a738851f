//! The one place sinks do I/O: send an [`HttpRequest`] and classify the answer.

use std::time::Duration;

use kaudit_schema::error_chain;

use super::HttpRequest;

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: delivered.
    Delivered,
    /// Network error, timeout, 408, 429 or 5xx: try again later.
    Retry(String),
    /// Any other 4xx: the receiver will never take it.
    Rejected(String),
}

/// An HTTP client for sinks.
#[derive(Clone)]
pub struct HttpService {
    client: reqwest::Client,
}

impl HttpService {
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder().timeout(timeout).build().expect("http client");
        Self { client }
    }

    pub async fn send(&self, req: &HttpRequest) -> Outcome {
        let mut builder = self.client.post(&req.url).body(req.body.clone());
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        match builder.send().await {
            // reqwest's own message is generic ("error sending request"); the cause is below it.
            // `without_url`: reqwest names the URL in its errors, and a sink URL may be a secret.
            Err(e) => Outcome::Retry(error_chain(&e.without_url())),
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Outcome::Delivered;
                }
                let body = resp.text().await.unwrap_or_default();
                let reason = format!("HTTP {status}: {}", body.chars().take(200).collect::<String>());
                if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Outcome::Retry(reason)
                } else {
                    Outcome::Rejected(reason)
                }
            }
        }
    }
}
