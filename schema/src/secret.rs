//! Secrets in configuration: values that must never reach a log line, an error message or `Debug`.
//!
//! Sink URLs carry their credential in the path or query (a Slack incoming webhook *is* its
//! path; `?token=` on a generic webhook), store URLs in their userinfo. [`redact_url`] keeps only
//! `scheme://host:port`, enough to tell which receiver failed; [`Secret`] wraps a key or password
//! so that printing it, by `Display` or `Debug`, shows `***`. Code that needs the value calls
//! [`Secret::expose`], which is easy to search for.

use std::fmt;

/// What a redacted value prints as.
pub const REDACTED: &str = "***";

/// `url` with only `scheme://host[:port]` left: no userinfo, path, query or fragment. A path or
/// query that was there shows as `/***`. Anything that is not `scheme://...` prints as `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return REDACTED.into() };
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return REDACTED.into();
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let tail = if rest[end..].trim_start_matches('/').is_empty() { "" } else { "/***" };
    format!("{scheme}://{host}{tail}")
}

/// Whether `url` carries credentials in its userinfo (`scheme://user:password@host`).
pub fn has_userinfo(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(_, rest)| rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())].contains('@'))
}

/// A secret value (a routing key, an HMAC secret, a password): prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `Debug` for an optional secret: `None` or `Some(***)`, never the value.
pub fn debug_opt(value: &Option<String>) -> Option<&'static str> {
    value.as_ref().map(|_| REDACTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_scheme_host_and_port_only() {
        for (url, shown) in [
            ("https://hooks.slack.com/services/T0/B0/XyZsecret", "https://hooks.slack.com/***"),
            ("http://127.0.0.1:8080/hook?token=SECRET", "http://127.0.0.1:8080/***"),
            ("http://127.0.0.1:8080?token=SECRET", "http://127.0.0.1:8080/***"),
            ("http://user:pa55@am.example:9093/", "http://am.example:9093"),
            ("https://events.pagerduty.com", "https://events.pagerduty.com"),
            ("scylla://kaudit:hunter2@db1:9042", "scylla://db1:9042"),
            ("hooks.slack.com/services/T0/B0/XyZsecret", "***"),
            ("", "***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert!(has_userinfo("scylla://u:p@db1:9042") && has_userinfo("http://u@h/"));
        assert!(!has_userinfo("scylla://db1:9042,db2:9042") && !has_userinfo("http://h/a@b"));
    }

    #[test]
    fn secrets_print_as_stars() {
        let s = Secret::new("R0UT1NG");
        assert_eq!((format!("{s}"), format!("{s:?}"), s.expose()), ("***".into(), "***".into(), "R0UT1NG"));
        assert_eq!(debug_opt(&Some("x".into())), Some("***"));
        assert_eq!(debug_opt(&None), None);
    }
}
