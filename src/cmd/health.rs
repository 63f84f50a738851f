//! `kaudit health URL`: one GET for container HEALTHCHECKs and probes. Exit 0 on a 2xx answer;
//! otherwise exit 1 (whatever the failure: Docker reserves 2) with one line on stderr saying why:
//! the status and the first line of the body, or the connect, TLS or timeout error.

use std::time::Duration;

use clap::Args;
use reqwest::StatusCode;

use crate::exit::Exit;

/// Most of the body read for the reason line.
const BODY_PREVIEW_BYTES: usize = 512;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The URL to GET, http:// or https://, e.g. http://127.0.0.1:9464/readyz.
    pub url: String,
    /// How long the whole check may take (connect, TLS, answer): 250ms, 5s, 1m.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// An environment variable holding a bearer token: when it is set, the request carries
    /// `Authorization: Bearer <value>` (for listeners with `http.protect_probes`).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::support::duration::parse_ms(s).map(|ms| Duration::from_millis(ms as u64))
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Not an http:// or https:// URL.
    #[error("{0:?} is not an http:// or https:// URL")]
    Url(String),
    /// The client could not be set up (TLS backend).
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The server answered, with a status other than 2xx.
    #[error("{status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { status: StatusCode, body: String },
    /// No answer within the timeout.
    #[error("no answer within {}", crate::support::duration::human_ms(.0.as_millis() as i64))]
    Timeout(Duration),
    /// The request failed: name resolution, connection, TLS.
    #[error("request failed")]
    Request(#[source] reqwest::Error),
}

pub async fn run(args: HealthArgs) -> Result<(), Exit> {
    let token = args.token_env.as_deref().and_then(|var| std::env::var(var).ok()).filter(|t| !t.is_empty());
    check(&args.url, args.timeout, token.as_deref()).await.map_err(Exit::failure)
}

/// GET `url` within `timeout`, with `token` as a bearer token; `Ok` on a 2xx answer.
pub async fn check(url: &str, timeout: Duration, token: Option<&str>) -> Result<(), HealthError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| HealthError::Url(url.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(HealthError::Url(url.to_string()));
    }
    // A probe talks to the service directly, not through a proxy from the environment.
    let client = reqwest::Client::builder().timeout(timeout).no_proxy().build().map_err(HealthError::Client)?;
    let mut request = client.get(parsed);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let failed = |e: reqwest::Error| {
        if e.is_timeout() { HealthError::Timeout(timeout) } else { HealthError::Request(e.without_url()) }
    };
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = Vec::new();
    while body.len() < BODY_PREVIEW_BYTES && !body.contains(&b'\n') {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_PREVIEW_BYTES)]).into_owned();
    let first = text.lines().next().unwrap_or("").trim().to_string();
    Err(HealthError::Status { status, body: first })
}
