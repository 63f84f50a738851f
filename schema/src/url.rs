//! Store URLs: `sqlite:///path/audit.db` or `scylla://host:9042[,host...]`.

use std::path::PathBuf;

/// A parsed store location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An embedded SQLite database file.
    Sqlite(PathBuf),
    /// A ScyllaDB or Cassandra cluster, by contact points (`host:port`).
    Scylla(Vec<String>),
}

/// `url` as an error may show it: without userinfo (which may hold a password).
fn shown(url: &str) -> String {
    if crate::secret::has_userinfo(url) { crate::secret::redact_url(url) } else { url.to_string() }
}

/// A store URL that cannot be used, with the reason. `url` never shows credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store url {url:?}: {reason}")]
pub struct StoreUrlError {
    pub url: String,
    pub reason: String,
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| StoreUrlError { url: shown(url), reason: reason.to_string() };
        if crate::secret::has_userinfo(url) {
            return Err(fail(
                "credentials do not belong in the store url: set scylla.username and scylla.password_env \
                 (the name of an environment variable holding the password)",
            ));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(fail("missing database path, e.g. sqlite:///var/lib/kaudit/audit.db"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some(hosts) = url.strip_prefix("scylla://") {
            let hosts: Vec<String> = hosts.trim_end_matches('/').split(',').map(str::to_string).collect();
            for h in &hosts {
                let Some((host, port)) = h.rsplit_once(':') else {
                    return Err(fail(&format!("contact point {h:?} has no port, e.g. 127.0.0.1:9042")));
                };
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(fail(&format!("contact point {h:?} is not host:port")));
                }
            }
            return Ok(StoreUrl::Scylla(hosts));
        }
        Err(fail("scheme must be sqlite:// or scylla://"))
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Scylla(h) => write!(f, "scylla://{}", h.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        assert_eq!("sqlite:///tmp/a.db".parse(), Ok(StoreUrl::Sqlite("/tmp/a.db".into())));
        assert_eq!(
            "scylla://10.0.0.1:9042,db2:9043".parse(),
            Ok(StoreUrl::Scylla(vec!["10.0.0.1:9042".into(), "db2:9043".into()]))
        );
        let url: StoreUrl = "sqlite:///x/y.db".parse().unwrap();
        assert_eq!(url.to_string(), "sqlite:///x/y.db");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("postgres://x", "scheme"),
            ("sqlite://", "missing database path"),
            ("scylla://db1", "has no port"),
            ("scylla://db1:notaport", "not host:port"),
            ("scylla://:9042", "not host:port"),
            ("scylla://kaudit:hunter2@db1:9042", "scylla.username and scylla.password_env"),
        ] {
            let err = url.parse::<StoreUrl>().unwrap_err();
            assert!(err.to_string().contains(why), "{url}: {err}");
        }
    }

    #[test]
    fn credentials_in_a_store_url_are_refused_without_being_echoed() {
        let err = "scylla://kaudit:hunter2@db1:9042".parse::<StoreUrl>().unwrap_err();
        let all = format!("{err} {err:?}");
        assert!(!all.contains("hunter2") && !all.contains("kaudit:"), "{all}");
        assert!(all.contains("scylla://db1:9042"), "{all}");
    }
}
