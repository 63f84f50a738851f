//! Links from a notification back to the verifier's API. Every sink carries, for each alert, the
//! URL of `GET /api/v1/alerts` filtered to exactly that alert: `kind`, `topic` and `tier`, the
//! parts of its dedup key (`kind/topic/tier`), under the verifier's public base URL
//! (`alerting.public_url`, default `http://<verifier.listen>`). Pure: no I/O.

use std::fmt;
use std::net::SocketAddr;

use reqwest::Url;

use crate::alert::Alert;

/// The verifier's API as people and Alertmanager reach it: an absolute `http://` or `https://`
/// URL, maybe with a path prefix (behind a reverse proxy), without query, fragment or credentials
/// (it is sent to every receiver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(Url);

impl PublicUrl {
    /// Validate `raw`; the error says why it is refused.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not an absolute URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{raw:?} must start with http:// or https://"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{raw:?} has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{raw:?} must not have a query or fragment (links add their own query)"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials: the link is sent to every alert receiver".into());
        }
        Ok(Self(url))
    }

    /// `http://<addr>` (`https://` with TLS): the address the API listens on.
    pub fn from_listen(addr: SocketAddr, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self(Url::parse(&format!("{scheme}://{addr}")).expect("a socket address makes a URL"))
    }

    /// `configured` (validated) when given, else [`PublicUrl::from_listen`].
    pub fn configured_or_listen(configured: Option<&str>, listen: SocketAddr, tls: bool) -> Result<Self, String> {
        configured.map_or_else(|| Ok(Self::from_listen(listen, tls)), Self::parse)
    }

    /// `<base>/api/v1/alerts?kind=K&topic=T&tier=U`, form-encoded (`consumer/billing` is
    /// `consumer%2Fbilling`), an empty topic or tier left out (the flood alert has neither): the
    /// API answers with exactly this alert.
    pub fn alert_link(&self, alert: &Alert) -> String {
        let mut url = self.0.clone();
        let path = format!("{}/api/v1/alerts", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("kind", alert.kind.as_str());
            for (key, value) in [("topic", &alert.topic), ("tier", &alert.tier)] {
                if !value.is_empty() {
                    query.append_pair(key, value);
                }
            }
        }
        url.into()
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertKind, AlertState};
    use crate::sinks::tests::alert;

    #[test]
    fn a_link_names_exactly_one_alert_encoded() {
        let base = PublicUrl::parse("http://verifier.example:9464").unwrap();
        let a = alert(AlertState::Firing);
        assert_eq!(
            base.alert_link(&a),
            "http://verifier.example:9464/api/v1/alerts?kind=loss&topic=orders&tier=consumer%2Fbilling"
        );
        let behind_proxy = PublicUrl::parse("https://ops.example.com/kaudit/").unwrap();
        let mut odd = a.clone();
        odd.tier = "a b&c=d".into();
        assert_eq!(
            behind_proxy.alert_link(&odd),
            "https://ops.example.com/kaudit/api/v1/alerts?kind=loss&topic=orders&tier=a+b%26c%3Dd"
        );
        let mut flood = a;
        (flood.kind, flood.topic, flood.tier) = (AlertKind::Flood, String::new(), String::new());
        assert_eq!(base.alert_link(&flood), "http://verifier.example:9464/api/v1/alerts?kind=flood");
    }

    #[test]
    fn the_default_is_the_listen_address_and_bad_urls_say_why() {
        let v4 = PublicUrl::configured_or_listen(None, "127.0.0.1:9464".parse().unwrap(), false).unwrap();
        assert_eq!(v4.to_string(), "http://127.0.0.1:9464/");
        let v6 = PublicUrl::from_listen("[::1]:9464".parse().unwrap(), true);
        assert_eq!(v6.to_string(), "https://[::1]:9464/");
        let given = PublicUrl::configured_or_listen(Some("https://k.example"), "127.0.0.1:1".parse().unwrap(), false);
        assert_eq!(given.unwrap().to_string(), "https://k.example/");
        for (bad, why) in [
            ("verifier:9464", "must start with http"),
            ("/api", "is not an absolute URL"),
            ("ftp://verifier", "must start with http"),
            ("http://verifier/?x=1", "must not have a query"),
            ("http://verifier/#top", "must not have a query or fragment"),
            ("http://user:pw@verifier", "must not carry credentials"),
            ("", "is not an absolute URL"),
        ] {
            let e = PublicUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
