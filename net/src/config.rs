//! `[http]`: one section for every HTTP listener of a process (the agent's `agent_listen`, the
//! verifier's `verifier.listen`). Validation reads the token sources and the certificate files, so
//! `kaudit check-config` reports a missing variable or a bad certificate; [`HttpConfig::build`]
//! reads them again into [`HttpOptions`], which hold the tokens only as SHA-256 digests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kaudit_schema::ConfigIssue;
use serde::{Deserialize, Serialize};

use crate::auth::{Auth, Role, Tokens};
use crate::metrics::HttpMetrics;
use crate::tls::{CertReloader, TlsError};

/// Longest timeout accepted, ms: a day.
const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Most connections accepted for `max_connections`.
const MAX_CONNECTIONS: usize = 1_000_000;
/// Shortest token accepted, characters.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[http]`: TLS, bearer tokens and connection limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// PEM certificate chain (leaf first). With `tls_key_file`: HTTPS on every listener. Both files
    /// are re-read when they change (checked at most once a second, on a new connection) and on
    /// SIGHUP; a bad pair is logged and the previous certificate kept. Default: none (plain HTTP).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`. Default: none.
    pub tls_key_file: Option<PathBuf>,
    /// Most connections open at once. Default 1024. At the limit a new connection replaces the one
    /// idle the longest (no request in progress); when every connection is busy, new connections
    /// wait in the kernel's backlog.
    pub max_connections: usize,
    /// Request line and headers (and the TLS handshake) must arrive within this, ms, counted from
    /// the first byte of the request. Default 10000.
    pub header_timeout_ms: u64,
    /// A request body must arrive within this, ms, counted from the end of its headers; past it the
    /// answer is 408 and the connection is closed. Default 30000.
    pub body_timeout_ms: u64,
    /// Connections with no request in progress and no bytes moving for this long are closed, ms;
    /// this also bounds a new connection that sends nothing. Default 60000.
    pub idle_timeout_ms: u64,
    /// `true`: `/metrics`, `/healthz` and `/readyz` need a token (any role) too. Default false, so
    /// probes and Prometheus need no secret.
    pub protect_probes: bool,
    /// Bearer tokens (`[[http.tokens]]`), several per role for rotation. None: no authentication
    /// (a warning at start when a listener is not on loopback).
    pub tokens: Vec<TokenConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            protect_probes: false,
            tokens: Vec::new(),
        }
    }
}

/// `[[http.tokens]]`: where one bearer token is read from. Holds no secret itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `write`: `POST /v1/records`; `read`: the verifier's `/api/v1/*`; `admin`: both.
    pub role: Role,
    /// Environment variable holding the token.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the token (surrounding whitespace trimmed), e.g. a mounted secret.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Why a token could not be read. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Neither `env` nor `file`.
    #[error("set env or file")]
    NoSource,
    /// Both `env` and `file`.
    #[error("set env or file, not both")]
    TwoSources,
    /// The variable is not set.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The variable is not UTF-8.
    #[error("environment variable {0} is not valid unicode")]
    EnvNotUnicode(String),
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Shorter than [`MIN_TOKEN_LEN`] after trimming.
    #[error("the token from {0} has fewer than {MIN_TOKEN_LEN} characters")]
    TooShort(String),
    /// Characters that cannot travel in an `Authorization` header.
    #[error("the token from {0} has characters other than visible ASCII")]
    BadCharacters(String),
}

impl TokenConfig {
    /// Read the token (trimmed) from its variable or file.
    pub fn resolve(&self) -> Result<String, TokenError> {
        let (raw, from) = match (&self.env, &self.file) {
            (None, None) => return Err(TokenError::NoSource),
            (Some(_), Some(_)) => return Err(TokenError::TwoSources),
            (Some(name), None) => match std::env::var(name) {
                Ok(v) => (v, format!("${name}")),
                Err(std::env::VarError::NotPresent) => return Err(TokenError::EnvMissing(name.clone())),
                Err(std::env::VarError::NotUnicode(_)) => return Err(TokenError::EnvNotUnicode(name.clone())),
            },
            (None, Some(path)) => {
                let shown = path.display().to_string();
                let text =
                    std::fs::read_to_string(path).map_err(|source| TokenError::File { path: shown.clone(), source })?;
                (text, shown)
            }
        };
        let token = raw.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(from));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacters(from));
        }
        Ok(token.to_string())
    }

    /// The key an issue about this token's source is reported at.
    fn source_key(&self) -> &'static str {
        if self.file.is_some() && self.env.is_none() { "file" } else { "env" }
    }
}

/// Why [`HttpConfig::build`] failed (validation reports the same problems as [`ConfigIssue`]s).
#[derive(Debug, thiserror::Error)]
pub enum HttpBuildError {
    /// A bearer token could not be read.
    #[error("http.tokens[{index}]: {source}")]
    Token {
        index: usize,
        #[source]
        source: TokenError,
    },
    /// The certificate or key could not be loaded.
    #[error("http.tls_cert_file: {0}")]
    Tls(#[source] TlsError),
    /// Limits out of range or a certificate without a key; run validation for the list.
    #[error("invalid [http] section: {0}")]
    Invalid(String),
}

/// Connection limits, as durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        HttpConfig::default().limits()
    }
}

/// What [`crate::serve`] needs: checked limits, the tokens (as digests) and the TLS certificate.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    pub limits: Limits,
    pub auth: Auth,
    /// HTTPS when set.
    pub tls: Option<Arc<CertReloader>>,
    /// Connection and refusal counters; none: not counted.
    pub metrics: Option<HttpMetrics>,
}

impl HttpOptions {
    /// Add a bearer token (tests and embedders; the config file names a variable or file).
    pub fn with_token(mut self, role: Role, token: &str) -> Self {
        self.auth.tokens.add(role, token);
        self
    }

    /// Count connections and refusals into `registry` (`kaudit_http_*`).
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> prometheus::Result<Self> {
        self.metrics = Some(HttpMetrics::register(registry)?);
        Ok(self)
    }
}

impl HttpConfig {
    /// Every problem, with full keys under `prefix` (`http`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = self.validate_limits(prefix);
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => issues.push(ConfigIssue::at(prefix, "tls_key_file", "set it with tls_cert_file")),
            (None, Some(_)) => issues.push(ConfigIssue::at(prefix, "tls_cert_file", "set it with tls_key_file")),
            (Some(cert), Some(key)) => {
                if let Err(e) = CertReloader::load(cert, key) {
                    issues.push(ConfigIssue::at(prefix, "tls_cert_file", e.to_string()));
                }
            }
            (None, None) => {}
        }
        for (i, token) in self.tokens.iter().enumerate() {
            let item = format!("{prefix}.tokens[{i}]");
            match token.resolve() {
                Ok(_) => {}
                Err(e @ (TokenError::NoSource | TokenError::TwoSources)) => {
                    issues.push(ConfigIssue::new(item, e.to_string()))
                }
                Err(e) => issues.push(ConfigIssue::at(&item, token.source_key(), e.to_string())),
            }
        }
        issues
    }

    fn validate_limits(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            issues.push(ConfigIssue::at(prefix, "max_connections", format!("must be 1 to {MAX_CONNECTIONS}")));
        }
        for (key, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&ms) {
                issues.push(ConfigIssue::at(prefix, key, format!("must be 1 to {MAX_TIMEOUT_MS} (a day)")));
            }
        }
        issues
    }

    /// The limits as durations (unchecked; see [`HttpConfig::validate`]).
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }

    /// Read the tokens and the certificate into [`HttpOptions`].
    pub fn build(&self) -> Result<HttpOptions, HttpBuildError> {
        if let Some(issue) = self.validate_limits("http").into_iter().next() {
            return Err(HttpBuildError::Invalid(issue.to_string()));
        }
        let mut tokens = Tokens::default();
        for (index, token) in self.tokens.iter().enumerate() {
            let secret = token.resolve().map_err(|source| HttpBuildError::Token { index, source })?;
            tokens.add(token.role, &secret);
        }
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(CertReloader::load(cert, key).map_err(HttpBuildError::Tls)?)),
            (None, None) => None,
            _ => return Err(HttpBuildError::Invalid("set tls_cert_file and tls_key_file together".into())),
        };
        let auth = Auth { tokens, protect_probes: self.protect_probes };
        Ok(HttpOptions { limits: self.limits(), auth, tls, metrics: None })
    }
}
